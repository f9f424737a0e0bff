"""Placement: choose a node that can take a job, and reserve its capacity there.

    placer = Placer.attach("dfps")
    job = Job(requests={"cpu": 2, "mem_gb": 4}, selector={"disk": "ssd"},
              tolerations=["gpu=true:NoSchedule"], zone="eu-1", group="web", spread=2)
    p = placer.place(job)          # Placement: node, zone, reserved, score parts
    ...run the job on p.node...
    p.release(ok=True)

What one ``place`` does (docs/placement.md has the rules and the arithmetic):

1. The job's label, zone and taint constraints are compiled into per-node
   arrays (a filter code, the preferred-affinity, locality and cost parts)
   once per registry change and job shape, and cached: the registry's
   ``registry_epoch`` moves on every registration and every zone, label or
   taint change, so one load tells whether the cache still holds.
2. The placement kernel (`kernels.placement.place_scan`) filters and scores
   every node in one compiled pass over the columns of the latest published
   tick (read under the latch: the pass is repeated if a tick was published
   meanwhile) and keeps the ``[placement] top_k`` best.
3. One of those is drawn uniformly at random (so schedulers racing for
   similar jobs do not all hit the best node), and the job's requests are
   reserved there by compare-and-swap against the node's capacity
   (`shm_engine.core.placement.reserve`).  If another scheduler took the
   capacity first, the next of the best is tried, then the pass is repeated
   without the nodes tried.
4. The reservation is also a claim (`clients.claims`): the job is in flight
   on the node, and its outcome is counted when the placement is released.

Rules for callers:
- Release every placement exactly once (a ``with`` block releases it, as an
  error if the block raises).  A placement dropped unreleased is returned
  when it is garbage collected, with a ResourceWarning; if the process
  dies, the engine returns its reservations within a second; a job with a
  ``deadline_s`` is returned by the engine once it outlives it (its
  ``release`` then returns False).
- ``place`` raises `Unschedulable` when no node fits, naming per filter how
  many nodes it eliminated.  ``zones`` restricts a call to some zones (a
  scope decision made by the caller; it wins over the one below).
- Scope escalation (`shm_engine.core.scope`, docs/placement.md): a job with
  one ``zone`` has that zone as its *home*; the placer's `ScopePolicy`
  decides per job whether it stays there or may also use the neighbouring
  zones or every zone, from the P95/P50 ratio of the home zone's recent
  outcomes (place to release, fed by `Placement.release`) or, until there
  are ``min_samples`` of those, of its nodes' heartbeat p50/p95 (read from
  the table at most every ``interval_s``).  A widened job prefers the
  other zones of its scope (the locality part).  ``Placement.scope`` and
  ``explain`` say what was decided and why.  A job listing several zones,
  or a call with ``zones``, is not escalated.  The thresholds are the
  engine's ``[scope]`` section, followed across reloads (the engine
  records it in its header with its ``config_version``; a placer re-reads
  it when that moves), unless the placer was given its own.
- A mirror's segment is refused (`PlacementNotSupported`): a mirror has no
  capacity, labels or taints of its nodes, and reservations belong to the
  owning engine (docs/scale-out.md).
- A `Placer` belongs to one process (a forked child makes its own) and is
  used by one thread at a time (its scan buffers are its own); several
  Placers of one process share its lease and its reservation entries.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numba
import numpy as np

from clients import claims as _claims_client
from clients.claims import Claim
from clients.reader import ScoreReader
from kernels.placement import (
    C_AFFINITY,
    C_NOT_READY,
    C_RESOURCE0,
    C_SELECTOR,
    C_SPREAD,
    C_TAINT,
    C_TAINT0,
    C_ZONE,
    M_AFFINITY,
    M_SELECTOR,
    M_TAINT0,
    M_ZONE,
    MAX_TAINT_KINDS,
    N_COUNTS,
    N_PARTS,
    place_scan,
)
from shm_engine.core import claims as _c
from shm_engine.core import placement as _p
from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.config import FIT_STRATEGIES, Config, PlacementConfig, ScopeConfig
from shm_engine.core.errors import (
    ClaimAlreadyReleased,
    LayoutMismatch,
    LeaseRevoked,
    PlacementNotSupported,
    ReservationLimitReached,
    ShmEngineError,
    Unschedulable,
)
from shm_engine.core.layout import (
    N_UNSCHED_SLOTS,
    read_place_resources,
)
from shm_engine.core.paramsblock import read_scope
from shm_engine.core.registry import decode_id
from shm_engine.core.scope import EVERY, NEIGHBOURS, OWN, ScopePolicy
from shm_engine.core.segment import is_mirror
from shm_engine.wire.format import TAINT_EFFECTS, split_meta

__all__ = [
    "Affinity",
    "Explanation",
    "Job",
    "Placement",
    "Placer",
    "PART_NAMES",
    "ScopeDecision",
    "reason_names",
]

#: How an Unschedulable names the nodes that fitted but were taken by other
#: schedulers during the call (and its reason slot in the claims header).
TAKEN = "taken by other schedulers"
C_TAKEN = 6
#: The parts of the placement score, in `kernels.placement` order.
PART_NAMES = ("fit", "affinity", "load", "locality", "cost")
_OPS = ("In", "NotIn", "Exists", "DoesNotExist")
LEVEL_NAMES = {OWN: "own", NEIGHBOURS: "neighbours", EVERY: "every"}
_MAX_SPREAD = 0xFFFF


def _tuple_of_str(what: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} = {value!r} must be a string or strings")
    return tuple(value)


class Affinity(NamedTuple):
    """One node-affinity term over the node's labels.

    ``op``: ``In`` (the label is one of ``values``), ``NotIn`` (absent or
    not one of them), ``Exists``, ``DoesNotExist``.  ``weight`` 0: required
    (a filter); > 0: preferred (adds ``weight`` to the matched share of the
    affinity part)."""

    key: str
    op: str
    values: tuple[str, ...] = ()
    weight: float = 0.0

    def checked(self) -> Affinity:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"affinity key {self.key!r} must be a non-empty string")
        if self.op not in _OPS:
            raise ValueError(f"affinity op {self.op!r} must be one of {', '.join(_OPS)}")
        values = _tuple_of_str(f"affinity {self.key} values", self.values)
        if self.op in ("In", "NotIn") and not values:
            raise ValueError(f"affinity {self.key} {self.op} needs at least one value")
        if self.op in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"affinity {self.key} {self.op} takes no values")
        w = float(self.weight)
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"affinity {self.key} weight {self.weight!r} must be >= 0")
        return Affinity(self.key, self.op, tuple(sorted(values)), w)


def _toleration(t: Any) -> tuple[str, str | None, str | None]:
    """(key, value or None for any, effect or None for any) of a toleration
    written ``key=value:Effect``, ``key:Effect`` (any value), ``key=value``
    or ``key`` (any effect)."""
    if not isinstance(t, str) or not t:
        raise ValueError(f"toleration {t!r} must be a string like key=value:Effect")
    body, sep, effect = t.rpartition(":")
    if not sep:
        body, effect = t, ""
    if effect and effect not in TAINT_EFFECTS:
        raise ValueError(f"toleration {t!r}: effect {effect!r} is not one of {TAINT_EFFECTS}")
    key, eq, value = body.partition("=")
    if not key:
        raise ValueError(f"toleration {t!r} has no key")
    return key, (value if eq else None), (effect or None)


@dataclass(frozen=True)
class Job:
    """What a job needs from a node (every field optional).

    ``requests``: resource name -> amount (in the resource's own unit, e.g.
    cpu in CPUs); ``selector``: labels the node must have, exactly;
    ``affinity``: `Affinity` terms (or (key, op, values[, weight]) tuples);
    ``tolerations``: taints the job tolerates (``key=value:Effect``,
    ``key:Effect``, ``key=value``, ``key``); ``zone``: the zone, or zones,
    the node must be in; ``prefer_zones``, ``data``: locality (zones
    preferred; data sets the node should hold, as labels
    ``[placement] data_label_prefix`` + name); ``group`` with ``spread``:
    at most ``spread`` open placements of the group per node;
    ``deadline_s``: the engine returns the reservation after this long."""

    requests: Mapping[str, float] = field(default_factory=dict)
    selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Sequence[Any] = ()
    tolerations: Sequence[str] = ()
    zone: str | Sequence[str] | None = None
    prefer_zones: Sequence[str] = ()
    data: Sequence[str] = ()
    group: str | None = None
    spread: int = 0
    deadline_s: float | None = None
    _meta_key: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        req = {}
        for name, amount in dict(self.requests).items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                raise ValueError(f"request {name}={amount!r} is not a number")
            if not (math.isfinite(amount) and amount >= 0):
                raise ValueError(f"request {name}={amount!r} must be a finite number >= 0")
            req[str(name)] = float(amount)
        sel = dict(self.selector)
        for k, v in sel.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"selector {k!r}={v!r} must be str -> str")
        terms = tuple(
            (t if isinstance(t, Affinity) else Affinity(*t)).checked() for t in self.affinity
        )
        tols = tuple(sorted(_tuple_of_str("tolerations", self.tolerations)))
        for t in tols:
            _toleration(t)
        zones = None if self.zone is None else tuple(sorted(_tuple_of_str("zone", self.zone)))
        if not isinstance(self.spread, int) or not 0 <= self.spread <= _MAX_SPREAD:
            raise ValueError(f"spread = {self.spread!r} must be an integer in 0..{_MAX_SPREAD}")
        if self.spread and not self.group:
            raise ValueError("spread needs a group")
        if self.deadline_s is not None and not (
            math.isfinite(self.deadline_s) and self.deadline_s > 0
        ):
            raise ValueError(f"deadline_s = {self.deadline_s!r} must be > 0")
        set_ = object.__setattr__
        set_(self, "requests", req)
        set_(self, "selector", sel)
        set_(self, "affinity", terms)
        set_(self, "tolerations", tols)
        set_(self, "zone", zones)
        set_(self, "prefer_zones", tuple(sorted(_tuple_of_str("prefer_zones", self.prefer_zones))))
        set_(self, "data", tuple(sorted(_tuple_of_str("data", self.data))))
        # What the compiled per-node arrays depend on (the cache key).
        set_(
            self,
            "_meta_key",
            (
                tuple(sorted(sel.items())),
                terms,
                tols,
                zones,
                self.prefer_zones,
                self.data,
            ),
        )


class Candidate(NamedTuple):
    """One of the best nodes of a pass: its score parts and total."""

    node: str
    total: float
    parts: dict[str, float]


class ScopeDecision(NamedTuple):
    """The zone scope of one job with a home zone, and why.

    ``level``: ``"own"``, ``"neighbours"`` or ``"every"``; ``zones``: the
    zones allowed (home first; None: every zone); ``ratio``: the home
    zone's P95/P50 (None: unknown, too few samples), from ``basis``
    (``"outcomes"``, ``"heartbeats"`` or None) over ``samples`` samples;
    ``wide``/``every``: the shares of the zone's jobs that may use at least
    the neighbours / every zone; ``u``: this job's draw (``u < every``:
    every zone, else ``u < wide``: neighbours, else own)."""

    home: str
    level: str
    zones: tuple[str, ...] | None
    ratio: float | None
    wide: float
    every: float
    u: float
    basis: str | None
    samples: int

    def __str__(self) -> str:
        where = "every zone" if self.zones is None else ", ".join(self.zones)
        if self.ratio is None:
            why = f"{self.home} ratio unknown ({self.samples} outcomes, too few samples)"
        else:
            why = (
                f"{self.home} P95/P50 {self.ratio:.2f} of {self.samples} {self.basis}: "
                f"share wide {self.wide:.2f}, every {self.every:.2f}; draw {self.u:.3f}"
            )
        return f"scope {self.level} ({where}): {why}"


class Explanation(NamedTuple):
    """What a pass saw: ``nodes`` registered, ``feasible`` after every
    filter, ``eliminated`` per filter (first failed filter only, biggest
    first), the ``top`` candidates with their score parts; ``scope``: the
    job's `ScopeDecision` (None without a home zone)."""

    nodes: int
    feasible: int
    eliminated: dict[str, int]
    top: list[Candidate]
    scope: ScopeDecision | None = None

    def __str__(self) -> str:
        lines = [f"{self.feasible}/{self.nodes} nodes fit"]
        if self.scope is not None:
            lines.append(f"  {self.scope}")
        lines += [f"  {n:>8}  {why}" for why, n in self.eliminated.items()]
        for i, c in enumerate(self.top, 1):
            parts = " ".join(f"{k}={v:.3f}" for k, v in c.parts.items())
            lines.append(f"  #{i} {c.node} total={c.total:.4f} {parts}")
        return "\n".join(lines)


def reason_names(resources: Sequence[str], taints: Sequence[str] = ()) -> dict[int, str]:
    """``counts`` position -> how a message names it, in filter order."""
    names = {
        C_NOT_READY: "not ready",
        C_ZONE: "zone",
        C_SELECTOR: "selector",
        C_AFFINITY: "affinity",
    }
    for t, taint in enumerate(taints[:MAX_TAINT_KINDS]):
        names[C_TAINT0 + t] = f"taint {taint}"
    for k, r in enumerate(resources):
        names[C_RESOURCE0 + k] = f"insufficient {r}"
    names[C_SPREAD] = "spread"
    return names


class Placement:
    """A job placed on a node: ``node``, ``zone``, ``reserved`` (resource
    -> amount held), ``score`` and ``parts`` (its score breakdown),
    ``explain`` (an `Explanation` when asked for), ``scope`` (the
    `ScopeDecision` of a job with a home zone, else None).  Release it
    exactly once with the job's outcome; the time from place to release is
    an outcome sample of its zone for scope escalation."""

    __slots__ = (
        "node",
        "zone",
        "slot",
        "reserved",
        "score",
        "parts",
        "explain",
        "scope",
        "_placed_at",
        "_placer",
        "_entry",
        "_lease",
        "_claim",
        "_done",
    )

    def __init__(self, placer, node, zone, slot, reserved, score, parts, entry, lease, claim):
        self.node, self.zone, self.slot = node, zone, slot
        self.reserved, self.score, self.parts = reserved, score, parts
        self.explain: Explanation | None = None
        self.scope: ScopeDecision | None = None
        self._placed_at = 0.0
        self._placer, self._entry, self._lease, self._claim = placer, entry, lease, claim
        self._done = False

    @property
    def released(self) -> bool:
        return self._done

    def release(self, ok: bool = True) -> bool:
        """Return the reservation and close the claim with the job's
        outcome.  True if the reservation was still held; False if the
        engine had returned it already (deadline passed, lease revoked) or
        the node is gone.  Raises ClaimAlreadyReleased on a second call."""
        if self._done:
            raise ClaimAlreadyReleased(f"the placement on node {self.node!r} was already released")
        self._done = True
        held = self._placer._release(self._entry, self._lease)
        counted = self._claim.release(ok=ok)
        self._placer._observe(self.zone, self._placed_at)
        return held and counted

    def abandon(self) -> bool:
        """Return the reservation and close the claim without an outcome,
        for a job whose fate is unknown (e.g. a remote client that never
        released it: the node is neither credited nor blamed).  True if the
        reservation was still held.  Raises ClaimAlreadyReleased on a
        second call, or after ``release``."""
        if self._done:
            raise ClaimAlreadyReleased(f"the placement on node {self.node!r} was already released")
        self._done = True
        held = self._placer._release(self._entry, self._lease)
        self._claim.abandon()
        return held

    def __enter__(self) -> Placement:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.release(ok=exc_type is None)

    def __del__(self):
        if not getattr(self, "_done", True):
            self._done = True
            self._placer._release(self._entry, self._lease)
            warnings.warn(
                f"a placement on node {self.node!r} was never released; returned it",
                ResourceWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        state = "released" if self._done else "held"
        return f"<Placement {self.node!r} {self.reserved} score={self.score:.4f} {state}>"


class _Compiled(NamedTuple):
    code: np.ndarray  # u1: meta filter code per slot (kernels.placement M_*)
    pref: np.ndarray  # f8: affinity part
    local: np.ndarray  # f8: locality part
    taints: tuple[str, ...]  # taint t of code M_TAINT0 + t


class _Meta:
    """Every slot's zone, labels and taints, parsed, refreshed per slot when
    its registration or meta version moves; per-label columns built lazily
    per refresh (what the job compilations read)."""

    def __init__(self, reader: ScoreReader, cost_label: str):
        reg = reader._registry
        self._reg = reg
        cap = reg.slot_gen.shape[0]
        self.gen = np.zeros(cap, np.uint64)
        self.ver = np.full(cap, 1, np.uint64)  # odd: nothing read
        self.zone: list[str | None] = [None] * cap
        self.labels: list[dict] = [{} for _ in range(cap)]
        self.taints: list[tuple[str, ...]] = [() for _ in range(cap)]
        self.hwm = 0
        self._cols: dict[str, np.ndarray] = {}
        self._cost_label = cost_label
        self.cheap = np.ones(cap)
        self.version = 0  # +1 on every refresh that changed something

    def refresh(self, hwm: int) -> None:
        reg = self._reg
        gens = reg.slot_gen[:hwm].copy()
        vers = reg.meta_version[:hwm].copy()
        changed = np.flatnonzero((gens != self.gen[:hwm]) | (vers != self.ver[:hwm]))
        if hwm != self.hwm:
            self.hwm = hwm
        if not len(changed):
            return
        for s in changed.tolist():
            for _attempt in range(100):
                g, v = int(reg.slot_gen[s]), int(reg.meta_version[s])
                if g & 1 or v & 1:
                    continue
                ok = bool(reg.registered[s])
                zone = decode_id(reg.zone[s]).decode("utf-8", "replace") if ok else None
                n = int(reg.labels_len[s]) if ok else 0
                raw = bytes(reg.labels[s, :n]) if n else None
                if int(reg.slot_gen[s]) == g and int(reg.meta_version[s]) == v:
                    break
            else:
                continue  # mid-change: the next refresh reads it
            lab, taints = split_meta(raw)
            try:
                labels = json.loads(lab) if lab else {}
            except ValueError:
                labels = {}
            self.gen[s], self.ver[s] = g, v
            self.zone[s] = zone or None
            self.labels[s] = labels
            self.taints[s] = taints
        self._cols.clear()
        self.version += 1
        cost = self.column(self._cost_label)
        c = np.zeros(hwm)
        for i, x in enumerate(cost.tolist()):
            try:
                c[i] = max(float(x), 0.0) if x is not None else 0.0
            except ValueError:
                c[i] = 0.0
            if not math.isfinite(c[i]):
                c[i] = 0.0
        top = c.max() if hwm else 0.0
        self.cheap = np.ones(len(self.gen))
        if top > 0:
            self.cheap[:hwm] = 1.0 - c / top

    def column(self, key: str) -> np.ndarray:
        """Label ``key``'s value per slot (object array; None: absent)."""
        col = self._cols.get(key)
        if col is None:
            col = np.array([lab.get(key) for lab in self.labels[: self.hwm]], dtype=object)
            self._cols[key] = col
        return col

    def zones(self) -> np.ndarray:
        col = self._cols.get("\0zone")
        if col is None:
            col = np.array(self.zone[: self.hwm], dtype=object)
            self._cols["\0zone"] = col
        return col

    def taint_kinds(self) -> dict[str, np.ndarray]:
        """Each distinct taint -> which slots have it."""
        kinds: dict[str, list[int]] = {}
        for s, ts in enumerate(self.taints[: self.hwm]):
            for t in ts:
                kinds.setdefault(t, []).append(s)
        out = {}
        for t, slots in sorted(kinds.items()):
            m = np.zeros(self.hwm, bool)
            m[slots] = True
            out[t] = m
        return out


def _tolerated(taint: str, tols: Sequence[tuple[str, str | None, str | None]]) -> bool:
    body, _, effect = taint.rpartition(":")
    key, _, value = body.partition("=")
    return any(
        k == key and (v is None or v == value) and (e is None or e == effect) for k, v, e in tols
    )


def _term_mask(meta: _Meta, t: Affinity) -> np.ndarray:
    col = meta.column(t.key)
    present = col != None  # noqa: E711 (elementwise over an object array)
    if t.op == "Exists":
        return present
    if t.op == "DoesNotExist":
        return ~present
    inside = np.zeros(len(col), bool)
    for v in t.values:
        inside |= col == v
    return inside if t.op == "In" else ~inside


def compile_job(
    meta: _Meta,
    job: Job,
    zones: tuple[str, ...] | None,
    prefix: str,
    *,
    scoped: bool = False,
    away_from: str | None = None,
) -> _Compiled:
    """The per-slot arrays of ``job``'s constraints over ``meta``.

    ``zones``: the call's zones, narrowing ``job.zone``; with ``scoped``,
    the scope decided for the job's home zone instead, in place of
    ``job.zone`` (None: every zone).  ``away_from``: a widened job's home
    zone; its locality zone part is then 1 on a node of another zone and 0
    on one of the home zone or without a zone, in place of
    ``job.prefer_zones``."""
    n = len(meta.gen)
    hwm = meta.hwm
    code = np.zeros(n, np.uint8)
    c = code[:hwm]
    allowed = job.zone
    if scoped:
        allowed = zones
    elif zones is not None:
        allowed = tuple(z for z in (allowed or zones) if z in zones)
    if allowed is not None:
        zcol = meta.zones()
        ok = np.zeros(hwm, bool)
        for z in allowed:
            ok |= zcol == z
        c[(c == 0) & ~ok] = M_ZONE
    for k, v in job.selector.items():
        c[(c == 0) & (meta.column(k) != v)] = M_SELECTOR
    pref_w = np.zeros(hwm)
    pref_total = 0.0
    for t in job.affinity:
        m = _term_mask(meta, t)
        if t.weight == 0:
            c[(c == 0) & ~m] = M_AFFINITY
        else:
            pref_w += t.weight * m
            pref_total += t.weight
    tols = [_toleration(t) for t in job.tolerations]
    untolerated: list[str] = []
    soft = np.zeros(hwm)
    for taint, has in meta.taint_kinds().items():
        if _tolerated(taint, tols):
            continue
        if taint.endswith(":NoSchedule"):
            t_index = len(untolerated)
            untolerated.append(taint)
            c[(c == 0) & has] = M_TAINT0 + min(t_index, 255 - M_TAINT0)
        else:
            soft += has
    pref = np.ones(n)
    pref[:hwm] = (pref_w / pref_total if pref_total else 1.0) * 0.5**soft
    local = np.ones(n)
    parts = []
    if away_from is not None:
        zcol = meta.zones()
        parts.append(((zcol != None) & (zcol != away_from)).astype(np.float64))  # noqa: E711
    elif job.prefer_zones:
        zcol = meta.zones()
        zm = np.zeros(hwm)
        for z in job.prefer_zones:
            zm += zcol == z
        parts.append(np.minimum(zm, 1.0))
    if job.data:
        dm = np.zeros(hwm)
        for d in job.data:
            dm += meta.column(prefix + d) != None  # noqa: E711
        parts.append(dm / len(job.data))
    if parts:
        local[:hwm] = sum(parts) / len(parts)
    return _Compiled(code, pref, local, tuple(untolerated))


_ENTRIES: dict[tuple, Any] = {}
# (claims segment instance, lease, ident) -> the free entries of that lease,
# shared by every Placer of this process (list.pop/append are atomic).
_FREE_ENTRIES: dict[tuple[int, int, int], list[int]] = {}


def _entry(dispatcher, *args) -> Any:
    """The compiled entry point of ``dispatcher`` for the types of ``args``
    (calling it skips numba's type dispatch, a microsecond on a call of
    two dozen arguments); compiled or loaded from the cache once."""
    sig = tuple(numba.typeof(a) for a in args)
    key = (dispatcher, sig)
    fn = _ENTRIES.get(key)
    if fn is None:
        fn = _ENTRIES[key] = dispatcher.compile(sig)
    return fn


def engine_scope(header) -> tuple[int, ScopeConfig | None]:
    """(config version, the ``[scope]`` section the engine recorded, None
    if it recorded none or the record cannot be read now)."""
    got = read_scope(header)
    if got is None:
        return -1, None  # being written: the next call reads it
    version, data = got
    if data is None:
        return version, None
    try:
        return version, Config.from_dict({"scope": data}).scope
    except (ValueError, ShmEngineError):
        return version, None


def engine_placement(header) -> PlacementConfig:
    """The ``[placement]`` section the engine was started with (from its
    segment), or the defaults if it did not record one."""
    text = header.read_str("place_config")
    if not text:
        return Config().placement
    try:
        return Config.from_dict({"placement": json.loads(text)}).placement
    except (ValueError, ShmEngineError) as err:
        raise LayoutMismatch(f"the engine's [placement] section cannot be read: {err}") from err


class Placer:
    """Places jobs on one engine's nodes.  Build with `Placer.attach`.

    ``config``: ``[placement]`` settings for the score (fit, top_k,
    weights, labels; default: the engine's own, recorded in its segment);
    the resources and their scales are always the engine's.  ``rng``: a seeded
    ``numpy.random.Generator`` for reproducible choices (and scope draws).
    ``scope``: ``[scope]`` settings (default: the engine's, followed across
    its reloads); ``clock``: seconds, monotonic, for outcome durations and
    the scope rule's evaluations (a test injects its own)."""

    def __init__(
        self,
        reader: ScoreReader,
        config: PlacementConfig | None = None,
        rng: np.random.Generator | None = None,
        *,
        scope: ScopeConfig | None = None,
        clock: Any = time.monotonic,
    ):
        seg = reader._seg
        if is_mirror(seg):
            raise PlacementNotSupported(
                f"{seg.name!r} is a mirror: it has no capacity, labels or taints of "
                "its nodes, and reservations stay at the owning engine; place on that "
                "engine's host (read_excluded() names this mirror's stale zones)"
            )
        cfg = config if config is not None else engine_placement(seg.views.header)
        self.config = cfg
        self.reader = reader
        self.name = reader.name
        self._resources = read_place_resources(seg.views.header)
        self.resources = tuple(n for n, _ in self._resources)
        self._scale = {n: s for n, s in self._resources}
        self._table = reader._claim_table()
        self._claims: ClaimsSegment = self._table._seg
        cv = self._claims.views
        self._cv = cv
        self._slot_gen = seg.views.registry.slot_gen
        self._registered = seg.views.registry.registered
        self._alloc = seg.views.table.alloc[:, : len(self._resources)]
        self._reserved = cv.reserved[:, : len(self._resources)]
        self._reserved_all = cv.reserved
        self._place = cv.place
        self._slots = seg.views.table.slots
        self._bufs = seg.views.buffers
        # (gen, state, score) of each score buffer, for the kernel
        self._published = tuple(
            (b.views["gen"], b.views["state"], b.views["score"]) for b in self._bufs
        )
        self._hdr = seg.views.header
        self._epoch_mv = seg.views.header.registry_epoch.data
        self._meta = _Meta(reader, cfg.cost_label)
        self._meta_epoch = -1
        self._compiled: dict[Any, _Compiled] = {}
        self._units: dict[Any, np.ndarray] = {}
        self._amounts: dict[int, dict[str, float]] = {}  # units array address -> amounts
        self._weights = np.array([getattr(cfg.weights, p) for p in PART_NAMES], np.float64)
        self._fit_most = cfg.fit == FIT_STRATEGIES[1]
        k = cfg.top_k
        self._top_slot = np.zeros(k, np.int64)
        self._top_total = np.zeros(k)
        self._top_parts = np.zeros((k, N_PARTS))
        self._counts = np.zeros(N_COUNTS, np.int64)
        cap = len(self._slot_gen)
        self._skip = np.zeros(cap, np.uint8)
        self._rng = rng if rng is not None else np.random.default_rng()
        self._lease = -1
        self._ident = 0
        self._ctx_seen: np.ndarray | None = None
        self._entry_views: dict[int, list] = {}
        self._release_fn: Any = None
        self._reserve_fn: Any = None
        self._scan_fn: Any = None
        self._bump = _entry(_c.bump, self._cv.header.placements, 1)
        self._ctx_cells: Any = None
        self._free: list[int] = []
        self._n_entries = cv.layout.max_reservations
        self._pid = os.getpid()
        h = cv.header
        self._c_placements = h.placements
        self._c_conflicts = h.place_conflicts
        self._c_released = h.reservations_released
        self._c_stale = h.reservations_stale
        self._c_unsched = h.unschedulable
        self._c_reasons = h.unsched_reasons
        # scope escalation
        self._clock = clock
        self._follow = scope is None
        version, recorded = engine_scope(self._hdr) if self._follow else (-1, None)
        self._scope_version = version
        if scope is None:
            scope = recorded if recorded is not None else ScopeConfig()
        self._policy = ScopePolicy(scope, clock=clock)
        # Outcomes of releases, (zone, seconds, when), kept by the releasing
        # thread and moved into the policy by the placing one (deque append
        # and popleft are atomic; the policy is one thread's).
        self._outcomes: deque[tuple[str, float, float]] = deque()
        self._beats_at = -math.inf
        self._beat_seen = np.zeros(cap)  # recv_time of each slot's latest sample
        self._table_cols = seg.views.table

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        config: PlacementConfig | None = None,
        owner: int | str | None = None,
        rng: np.random.Generator | None = None,
        scope: ScopeConfig | None = None,
        clock: Any = time.monotonic,
    ) -> Placer:
        """A placer over engine ``name`` (attach errors as
        `ScoreReader.attach`, EngineNotRunning without a claims segment,
        PlacementNotSupported for a mirror)."""
        reader = ScoreReader.attach(name, owner=owner)
        try:
            return cls(reader, config, rng, scope=scope, clock=clock)
        except BaseException:
            reader.close()
            raise

    def close(self) -> None:
        self.reader.close()

    @property
    def scope(self) -> ScopePolicy:
        """The scope escalation rule this placer applies (its samples and
        ``config``; outcomes released since the last scoped ``place()``
        reach it at the next one)."""
        return self._policy

    def __enter__(self) -> Placer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- leases --
    def _ensure_lease(self) -> None:
        t = self._table
        ctx = t._ctx
        if ctx is self._ctx_seen and self._ctx_cells[_c.CTX_LIVE]:
            return  # the lease the free list belongs to, still held
        if not ctx[_c.CTX_LIVE] or os.getpid() != self._pid:
            if os.getpid() != self._pid:
                raise RuntimeError("a Placer belongs to the process that made it")
            t._take_lease()
            ctx = t._ctx
        base = self._cv.lease_ident.ctypes.data
        lease = (int(ctx[_c.CTX_IDENT_AT]) - base) // 8
        ident = int(ctx[_c.CTX_IDENT])
        if (lease, ident) != (self._lease, self._ident):
            # A new lease: its entries were all returned before it was freed.
            # Every Placer of this process on this engine holds the same
            # lease, so they share one list of its free entries.
            self._lease, self._ident = lease, ident
            key = (int(self._cv.header.instance[0]), lease, ident)
            self._free = _FREE_ENTRIES.setdefault(key, list(range(self._n_entries - 1, -1, -1)))
        self._ctx_seen = ctx
        self._ctx_cells = ctx.data

    def _limit(self) -> ReservationLimitReached:
        return ReservationLimitReached(
            f"engine {self.name!r}: this process holds {self._n_entries} open "
            "reservations ([placement] max_reservations); release some"
        )

    def _release(self, entry: int, held_by: tuple[int, int]) -> bool:
        if held_by != (self._lease, self._ident):
            self._bump(self._c_stale, 1)
            return False  # the lease was revoked (the engine returned it) or replaced
        lease = held_by[0]
        e = self._entry_view(lease, entry)
        if self._release_fn is None:
            self._release_fn = _entry(_p.release_entry, e, self._reserved_all, self._place)
        held = bool(self._release_fn(e, self._reserved_all, self._place))
        self._free.append(entry)
        self._bump(self._c_released if held else self._c_stale, 1)
        return held

    def _entry_view(self, lease: int, entry: int) -> np.ndarray:
        views = self._entry_views.get(lease)
        if views is None:
            views = self._entry_views[lease] = [None] * self._n_entries
        e = views[entry]
        if e is None:
            e = views[entry] = self._cv.reservations[lease, entry]
        return e

    # --------------------------------------------------------------- place --
    def _units_of(self, job: Job) -> np.ndarray:
        key = tuple(job.requests.items())
        u = self._units.get(key)
        if u is None:
            u = np.zeros(len(self._resources), np.uint64)
            for name, amount in job.requests.items():
                scale = self._scale.get(name)
                if scale is None:
                    raise ValueError(
                        f"request {name!r}: engine {self.name!r} places on "
                        f"{', '.join(self.resources) or 'no resources'} ([placement] resources)"
                    )
                x = math.floor(amount * scale + 0.5)
                if x > 0xFFFF_FFFF:
                    raise ValueError(f"request {name}={amount} is more than any node can hold")
                u[self.resources.index(name)] = x
            if len(self._units) > 4096:
                self._units.clear()
                self._amounts.clear()
            self._units[key] = u
        return u

    def _refresh_meta(self) -> None:
        epoch = self._epoch_mv[0]  # plain load: the cache is re-checked on the next call
        if epoch != self._meta_epoch:
            self.reader._refresh_index()
            self._meta.refresh(int(self._hdr.slot_hwm[0]))
            self._compiled.clear()
            self._meta_epoch = epoch

    def _compile(
        self, job: Job, zones: tuple[str, ...] | None, level: int = -1, home: str | None = None
    ) -> _Compiled:
        """``level`` >= 0: ``zones`` is the scope of that level for the
        job's ``home`` zone (`compile_job` ``scoped``)."""
        self._refresh_meta()
        key = (job._meta_key, zones, level)
        comp = self._compiled.get(key)
        if comp is None:
            comp = compile_job(
                self._meta,
                job,
                zones,
                self.config.data_label_prefix,
                scoped=level >= 0,
                away_from=home if level > OWN else None,
            )
            if len(self._compiled) > 1024:
                self._compiled.clear()
            self._compiled[key] = comp
        return comp

    # -------------------------------------------------------------- scope --
    def _follow_config(self) -> None:
        """Adopt the engine's ``[scope]`` section when its config version moved."""
        if int(self._hdr.config_version[0]) == self._scope_version:
            return
        version, cfg = engine_scope(self._hdr)
        if version < 0:
            return  # being written: the next call
        self._scope_version = version
        if cfg is not None and cfg != self._policy.config:
            self._policy.reload(cfg)

    def _refresh_beats(self, now: float) -> None:
        """One heartbeat sample per node that reported since the previous
        refresh: its latest p50/p95, into its zone's window (at most
        ``window`` per zone per refresh, evenly spread over the slots)."""
        self._beats_at = now
        hwm = self._meta.hwm
        t = self._table_cols
        v1 = t.row_version[:hwm].copy()
        p50 = t.p50_ms[:hwm].copy()
        p95 = t.p95_ms[:hwm].copy()
        recv = t.recv_time[:hwm].copy()
        # A row is copied whole only if its version did not move (the
        # ingest writes a row between two increments, odd while written).
        stable = (v1 == t.row_version[:hwm]) & (v1 % 2 == 0)
        fresh = stable & (recv != self._beat_seen[:hwm])
        self._beat_seen[:hwm] = np.where(stable, recv, self._beat_seen[:hwm])
        with np.errstate(invalid="ignore"):
            ok = (
                fresh
                & (self._registered[:hwm] != 0)
                & (self._slot_gen[:hwm] == self._meta.gen[:hwm])
                & (p50 > 0)
                & (p95 >= p50)
                & np.isfinite(p95)
            )
        if not ok.any():
            return
        zones = self._meta.zones()
        window = self._policy.config.window
        observe = self._policy.observe_heartbeat
        for zone in {z for z in zones[ok].tolist() if z}:
            idx = np.flatnonzero(ok & (zones == zone))
            if len(idx) > window:
                idx = idx[np.linspace(0, len(idx) - 1, window).astype(np.int64)]
            for s in idx.tolist():
                observe(zone, float(p50[s]), float(p95[s]), now)

    def _decide(self, job: Job, home: str) -> tuple[ScopeDecision | None, _Compiled]:
        """The scope of a job with a ``home`` zone (None while ``[scope]
        enabled`` is false: the home zone is then required)."""
        if self._follow:
            self._follow_config()
        pol = self._policy
        if not pol.config.enabled:
            return None, self._compile(job, None)
        outcomes = self._outcomes
        while outcomes:
            pol.observe(*outcomes.popleft())
        now = self._clock()
        self._refresh_meta()
        if now - self._beats_at >= pol.config.interval_s:
            self._refresh_beats(now)
        u = float(self._rng.random())
        level = pol.level(home, u, now)
        shares = pol.shares(home, now)
        basis, samples = pol.basis(home)
        zones = pol.zones(home, level)
        decision = ScopeDecision(
            home,
            LEVEL_NAMES[level],
            zones,
            shares.ratio,
            shares.wide,
            shares.every,
            u,
            basis,
            samples,
        )
        if level == OWN:
            return decision, self._compile(job, None)
        return decision, self._compile(job, zones, level, home)

    def _observe(self, zone: str | None, placed_at: float) -> None:
        if zone is not None:
            now = self._clock()
            self._outcomes.append((zone, now - placed_at, now))
            if len(self._outcomes) > self._policy.config.window * 64:
                self._outcomes.popleft()  # nobody places with a home zone: bounded

    def _scan(self, comp: _Compiled, units: np.ndarray, ghash: int, spread: int):
        hwm = self._meta.hwm
        tail = (
            self._slots,
            self._alloc,
            self._reserved,
            self._place,
            comp.code,
            self._meta.gen,
            comp.pref,
            comp.local,
            self._meta.cheap,
            units,
            ghash,
            spread,
            self._fit_most,
            self._weights,
            self._skip,
            self._counts,
            self._top_slot,
            self._top_total,
            self._top_parts,
        )
        head = (hwm, self._registered, self._slot_gen)
        published = self._published

        def run(b: int):
            args = head + published[b] + tail
            fn = self._scan_fn
            if fn is None:
                fn = self._scan_fn = _entry(place_scan, *args)
            return int(fn(*args))

        _epoch, feasible = self.reader._read(run)
        return feasible

    def _explain(
        self, comp: _Compiled, feasible: int, scope: ScopeDecision | None = None
    ) -> Explanation:
        names = reason_names(self.resources, comp.taints)
        counts = self._counts
        elim = {names[i]: int(counts[i]) for i in names if counts[i]}
        detailed = int(counts[C_TAINT0:].sum())
        if counts[C_TAINT] > detailed:
            elim["taint (other)"] = int(counts[C_TAINT]) - detailed
        # Biggest first; ties in filter order (the sort is stable).
        elim = dict(sorted(elim.items(), key=lambda kv: -kv[1]))
        nodes = feasible + int(counts[:C_TAINT0].sum())
        top = []
        for i in range(len(self._top_slot)):
            s = int(self._top_slot[i])
            if s < 0:
                break
            node = self.reader._names[s] or f"slot {s}"
            parts = dict(zip(PART_NAMES, self._top_parts[i].tolist(), strict=True))
            top.append(Candidate(node, float(self._top_total[i]), parts))
        return Explanation(nodes, feasible, elim, top, scope)

    def place(
        self, job: Job, *, explain: bool = False, zones: Iterable[str] | None = None
    ) -> Placement:
        """Place ``job`` (see the module docstring); ``zones``: only these
        zones (a scope decision of the caller, in addition to ``job.zone``;
        no scope escalation then).

        Raises Unschedulable when no node fits, ReservationLimitReached,
        SchedulerLimitReached (no lease), ValueError for a request of a
        resource the engine does not place, and what reads raise
        (NothingPublished before the first tick, EngineStopped)."""
        self._ensure_lease()
        if not self._free:
            raise self._limit()
        units = self._units_of(job)
        decision = None
        if zones is not None:
            comp = self._compile(job, tuple(sorted(_tuple_of_str("zones", zones))))
        elif job.zone is not None and len(job.zone) == 1:
            decision, comp = self._decide(job, job.zone[0])
        else:
            comp = self._compile(job, None)
        placed_at = self._clock()
        ghash = _p.group_hash(job.group) if job.group and job.spread else 0
        spread = job.spread if ghash else 0
        deadline = (
            time.monotonic_ns() + int(job.deadline_s * 1e9) if job.deadline_s is not None else 0
        )
        skip = self._skip
        tried: list[int] = []
        first: Explanation | None = None
        try:
            while True:
                feasible = self._scan(comp, units, ghash, spread)
                if feasible is None:
                    continue  # the latch lapped every attempt: scan again
                if explain and first is None:
                    first = self._explain(comp, feasible, decision)
                if feasible == 0:
                    raise self._unschedulable(comp, len(tried), decision)
                # A uniform draw among the best, then the others in turn.
                n_top = min(feasible, len(self._top_slot))
                i0 = int(self._rng.random() * n_top)
                for j in range(n_top):
                    i = (i0 + j) % n_top
                    p = self._try(i, units, ghash, spread, deadline)
                    if p is not None:
                        p.explain = first
                        p.scope = decision
                        p._placed_at = placed_at
                        return p
                    s = int(self._top_slot[i])
                    skip[s] = 1
                    tried.append(s)
        finally:
            for s in tried:
                skip[s] = 0

    def _try(self, i: int, units, ghash: int, spread: int, deadline: int) -> Placement | None:
        slot = int(self._top_slot[i])
        gen = int(self._slot_gen[slot])
        try:
            entry = self._free.pop()  # taken before use: other Placers share the list
        except IndexError:
            raise self._limit() from None
        lease = self._lease
        args = (
            self._entry_view(lease, entry),
            self._slot_gen,
            self._alloc,
            self._reserved,
            self._place,
            self._cv.lease_ident,
            lease,
            np.uint64(self._ident),  # one argument type whatever the ident's size
            slot,
            gen,
            units,
            ghash,
            spread,
            deadline,
        )
        fn = self._reserve_fn
        if fn is None:
            fn = self._reserve_fn = _entry(_p.reserve, *args)
        st = fn(*args)
        if st != _p.RESERVED:
            self._free.append(entry)  # nothing held: free again
        if st == _p.NO_LEASE:
            self._table._retire()
            raise LeaseRevoked(
                f"engine {self.name!r} revoked this process's scheduler lease "
                f"(pid {os.getpid()}); the next place() takes a new one"
            )
        if st != _p.RESERVED:
            self._bump(self._c_conflicts, 1)
            return None
        name = self.reader._names[slot]
        if name is None or self.reader._gen_list[slot] != gen:
            self.reader._index_epoch = -1
            self.reader._refresh_index()
            name = self.reader._names[slot]
        if name is None or _claims_client._claim(self._table._at, slot, gen) != _c.CLAIMED:
            self._release(entry, (lease, self._ident))
            return None
        claim = Claim(self._table, name, self._table._at, slot, gen)
        self._bump(self._c_placements, 1)
        reserved = self._amounts.get(units.ctypes.data)
        if reserved is None:
            reserved = {
                r: float(units[k]) / self._scale[r]
                for k, r in enumerate(self.resources)
                if units[k]
            }
            self._amounts[units.ctypes.data] = reserved
        parts = dict(zip(PART_NAMES, self._top_parts[i].tolist(), strict=True))
        return Placement(
            self,
            name,
            self._meta.zone[slot],
            slot,
            dict(reserved),
            float(self._top_total[i]),
            parts,
            entry,
            (lease, self._ident),
            claim,
        )

    def _unschedulable(
        self, comp: _Compiled, tried: int, scope: ScopeDecision | None
    ) -> Unschedulable:
        """The error of the last pass; ``tried``: nodes that fit in an
        earlier pass of this call but were taken by other schedulers first."""
        exp = self._explain(comp, 0, scope)
        if tried:
            elim = dict(exp.eliminated)
            elim[TAKEN] = tried
            elim = dict(sorted(elim.items(), key=lambda kv: -kv[1]))
            exp = Explanation(exp.nodes + tried, 0, elim, exp.top, scope)
        counts = self._counts
        counts[C_TAKEN] = tried
        self._bump(self._c_unsched, 1)
        for i in range(N_UNSCHED_SLOTS):
            if counts[i]:
                self._bump(self._c_reasons[i : i + 1], 1)
        why = ", ".join(f"{n} {reason}" for reason, n in exp.eliminated.items())
        msg = f"0/{exp.nodes} nodes fit" + (f": {why}" if why else "")
        if scope is not None:
            msg += f" ({scope})"
        return Unschedulable(msg, dict(exp.eliminated), exp)
