"""Zone scope escalation: widen where a job may be placed when its zone's
tail latency grows.

Why.  A zone whose P95 drifts away from its P50 is in trouble (a slow
dependency, a noisy rack, packet loss) in a way a node's own score does not
show, because every node of the zone suffers alike.  A tail scheduler then
moves from decentralized (each zone places its own jobs) to federated (the
neighbouring zones too) to centralized (every zone), a growing share of jobs
at a time, and back when the ratio falls.

The rule (issue 11; `ScopeConfig` holds the numbers, ``[scope]``):
  * Samples, per zone, in two bounded windows of the latest ``window``:
    placement outcome durations (the time from place to release,
    `observe`) and node heartbeats' ``p50``/``p95`` (`observe_heartbeat`).
    A sample older than ``max_age_s`` is dropped at an evaluation.
  * Every ``interval_s`` (2 s) of the injected clock the ratios are
    re-evaluated; between evaluations the shares hold.  A zone's ratio is
    P95 / P50 of its outcome durations (quantiles by linear interpolation
    between order statistics, numpy's default) when it has at least
    ``min_samples`` (10) of them; otherwise the mean heartbeat P95 over the
    mean heartbeat P50 when it has that many heartbeats; otherwise unknown,
    and an unknown zone is not escalated.
  * Our reading of "soft/hard thresholds 1.5/2.5 and 1.7/2.7": two ramps on
    the same ratio.  share(r, soft, hard) = 0 for r <= soft, (r - soft) /
    (hard - soft) between, 1 for r >= hard.  ``wide = share(r, 1.5, 2.5)``
    of the zone's jobs may use the neighbouring zones (federated) and
    ``every = share(r, 1.7, 2.7)`` may use every zone (centralized).  The
    configuration keeps centralized thresholds at or above the federated
    ones, so ``every <= wide`` at every ratio (both ramps are linear and the
    federated one is concave over the centralized one's span): the shares
    are nested.  E.g. r = 2.0: wide = 0.5, every = 0.3, so 50% of jobs stay
    in their zone, 20% may use the neighbours, 30% every zone.
  * Per job a draw ``u`` in [0, 1) (a seeded generator, or `job_draw` of a
    job id, which is deterministic across processes): ``u < every`` -> every
    zone; else ``u < wide`` -> own zone and neighbours; else the own zone.
    Over many jobs the shares are the ramps' values.

A widened scope is a superset: the own zone stays in it (listed first), so a
job is never refused for want of room elsewhere.  What the placer prefers
within the scope is its own affair (the simulator's widened job prefers
the other zones of its scope, its own zone being the one in trouble;
``python -m benchmarks sim --scenario scope``).

Rules for callers: one instance per scheduler process, used from one thread
(it is plain Python state).  Hot-path calls never raise on bad samples:
`observe` and `observe_heartbeat` return False and keep nothing.
`reload` swaps the thresholds and keeps the samples.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from shm_engine.core.config import ScopeConfig

__all__ = [
    "EVERY",
    "NEIGHBOURS",
    "OWN",
    "ScopePolicy",
    "Shares",
    "escalation_share",
    "job_draw",
    "quantile",
]

#: Scope levels: the job's own zone, plus its neighbours, every zone.
OWN, NEIGHBOURS, EVERY = 0, 1, 2


class Shares(NamedTuple):
    """Shares of a zone's jobs placed in a wider scope: ``wide`` may use at
    least the neighbouring zones (``every`` included), ``every`` every zone;
    ``ratio`` is the P95/P50 ratio they come from (None: unknown)."""

    wide: float
    every: float
    ratio: float | None


_NONE = Shares(0.0, 0.0, None)


def escalation_share(ratio: float, soft: float, hard: float) -> float:
    """0 at or below ``soft``, 1 at or above ``hard``, linear between."""
    if ratio <= soft:
        return 0.0
    if ratio >= hard:
        return 1.0
    return (ratio - soft) / (hard - soft)


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of a non-empty ascending list, linear interpolation
    between order statistics at position ``q * (n - 1)`` (numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def job_draw(key: str | bytes | int) -> float:
    """A uniform draw in [0, 1) fixed by ``key`` (a job id): the same in
    every process and run, unlike ``hash()``."""
    if isinstance(key, int):
        data = key.to_bytes(16, "little", signed=True)
    elif isinstance(key, str):
        data = key.encode("utf-8")
    else:
        data = bytes(key)
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


class ScopePolicy:
    """The escalation rule over the samples of every zone (module docstring).

    ``clock`` (seconds, monotonic) is read when a call gives no ``now``.
    """

    def __init__(
        self,
        config: ScopeConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._outcomes: dict[str, deque[tuple[float, float]]] = {}
        self._beats: dict[str, deque[tuple[float, float, float]]] = {}
        self._shares: dict[str, Shares] = {}
        self._evaluated_at = -math.inf
        self.reload(config if config is not None else ScopeConfig())

    @property
    def config(self) -> ScopeConfig:
        return self._config

    def reload(self, config: ScopeConfig) -> None:
        """New thresholds, window and neighbours; kept samples stay (the
        newest ``window`` of them) and the next call re-evaluates."""
        if not isinstance(config, ScopeConfig):
            raise TypeError(f"ScopePolicy.reload: expected a ScopeConfig, got {config!r}")
        self._config = config
        self._neighbours = config.neighbour_map()
        for zone, outcomes in self._outcomes.items():
            self._outcomes[zone] = deque(outcomes, maxlen=config.window)
        for zone, beats in self._beats.items():
            self._beats[zone] = deque(beats, maxlen=config.window)
        self._evaluated_at = -math.inf

    # ---------------------------------------------------------------- samples
    def observe(self, zone: str, duration_s: float, now: float | None = None) -> bool:
        """One placement outcome of ``zone``: seconds from place to release.
        False (nothing kept) for an empty zone or a duration that is not a
        finite number > 0."""
        if not zone or not isinstance(zone, str):
            return False
        if not isinstance(duration_s, (int, float)) or not 0 < duration_s < math.inf:
            return False
        t = self._clock() if now is None else now
        w = self._outcomes.get(zone)
        if w is None:
            w = self._outcomes[zone] = deque(maxlen=self._config.window)
        w.append((t, float(duration_s)))
        return True

    def observe_heartbeat(
        self, zone: str, p50_s: float, p95_s: float, now: float | None = None
    ) -> bool:
        """One node heartbeat of ``zone`` with its interval's p50 and p95
        (any unit, the same for both).  False (nothing kept) unless
        ``0 < p50 <= p95`` and both are finite."""
        if not zone or not isinstance(zone, str):
            return False
        for v in (p50_s, p95_s):
            if not isinstance(v, (int, float)) or not 0 < v < math.inf:
                return False
        if p95_s < p50_s:
            return False
        t = self._clock() if now is None else now
        w = self._beats.get(zone)
        if w is None:
            w = self._beats[zone] = deque(maxlen=self._config.window)
        w.append((t, float(p50_s), float(p95_s)))
        return True

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, now: float) -> None:
        cfg = self._config
        if now - self._evaluated_at < cfg.interval_s:
            return
        self._evaluated_at = now
        oldest = now - cfg.max_age_s
        shares: dict[str, Shares] = {}
        for zone in self._outcomes.keys() | self._beats.keys():
            ratio = None
            w = self._outcomes.get(zone)
            if w is not None:
                while w and w[0][0] < oldest:
                    w.popleft()
                if len(w) >= cfg.min_samples:
                    ordered = sorted(d for _, d in w)
                    ratio = quantile(ordered, 0.95) / quantile(ordered, 0.50)
            b = self._beats.get(zone)
            if b is not None:
                while b and b[0][0] < oldest:
                    b.popleft()
                if ratio is None and len(b) >= cfg.min_samples:
                    ratio = sum(x[2] for x in b) / sum(x[1] for x in b)
            if ratio is None or not cfg.enabled:
                shares[zone] = Shares(0.0, 0.0, ratio)
                continue
            wide = escalation_share(ratio, cfg.federated_soft, cfg.federated_hard)
            every = escalation_share(ratio, cfg.centralized_soft, cfg.centralized_hard)
            shares[zone] = Shares(max(wide, every), every, ratio)
        self._shares = shares

    def shares(self, zone: str, now: float | None = None) -> Shares:
        """The zone's shares as of the latest evaluation (re-evaluated first
        when ``interval_s`` has passed)."""
        self._evaluate(self._clock() if now is None else now)
        return self._shares.get(zone, _NONE)

    def level(self, job_zone: str, u: float, now: float | None = None) -> int:
        """`OWN`, `NEIGHBOURS` or `EVERY` for a job of ``job_zone`` with the
        draw ``u`` in [0, 1)."""
        if not 0.0 <= u < 1.0:
            raise ValueError(f"ScopePolicy: draw u = {u!r} must be in [0, 1)")
        s = self.shares(job_zone, now)
        if u < s.every:
            return EVERY
        if u < s.wide:
            return NEIGHBOURS
        return OWN

    def zones(self, job_zone: str, level: int) -> tuple[str, ...] | None:
        """The zones of a scope level, own zone first; None is every zone."""
        if level == EVERY:
            return None
        if level == NEIGHBOURS:
            return (job_zone, *self._neighbours.get(job_zone, ()))
        return (job_zone,)

    def allowed_zones(
        self, job_zone: str | None, u: float, now: float | None = None
    ) -> tuple[str, ...] | None:
        """Where a job of ``job_zone`` may be placed: a tuple of zones (own
        first) or None for every zone (also for a job without a zone)."""
        if job_zone is None:
            return None
        return self.zones(job_zone, self.level(job_zone, u, now))
