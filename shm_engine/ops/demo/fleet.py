"""The demo's simulated fleet: node kinds, their metrics, heartbeats at a time ``t``.

The fleet is made of the node kinds the score exists for (see `KINDS`): nodes
whose CPU is high from garbage collection but serve fast, nodes with a short
queue of huge jobs, nodes flapping across the CPU breaker, nodes that go
silent for longer than ``dead_after_s`` and come back, nodes that fail fast,
and healthy steady nodes.  A traffic spike in the middle of the timeline
grows queues across the fleet, so global pressure rises.

Deterministic for a seed: per-node constants are drawn once, and each round
of heartbeats draws its noise from the same generator in call order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from shm_engine import wire
from shm_engine.wire.format import NODE_SIZE

__all__ = ["Kind", "KINDS", "Fleet", "kind_counts", "HEARTBEAT_INTERVAL_S"]

HEARTBEAT_INTERVAL_S = 0.2  # every node, every 200 ms, in one binary batch


@dataclass(frozen=True)
class Kind:
    key: str
    share: float
    about: str


KINDS = (
    Kind("steady", 0.40, "healthy steady nodes"),
    Kind("gcheavy", 0.15, "CPU high from GC, short fast queue"),
    Kind("bigjobs", 0.10, "queue of 2 huge jobs (40 s each)"),
    Kind("flapping", 0.10, "CPU swings across the breaker (0.98)"),
    Kind("dying", 0.10, "silent > dead_after_s, then back"),
    Kind("failing", 0.15, "fail fast: low CPU, ~90% errors"),
)
_K = {k.key: i for i, k in enumerate(KINDS)}
_FLAGS = wire.HAS_THROUGHPUT | wire.HAS_OKERR | wire.HAS_TAIL | wire.HAS_TS


def kind_counts(n: int) -> list[int]:
    """Nodes per kind: largest remainder of ``n * share``, each kind at least
    one node when ``n >= len(KINDS)``."""
    raw = [n * k.share for k in KINDS]
    counts = [int(x) for x in raw]
    if n >= len(KINDS):
        counts = [max(c, 1) for c in counts]
    order = sorted(range(len(KINDS)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    i = 0
    while sum(counts) < n:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > n:
        j = max(range(len(counts)), key=lambda i: counts[i])
        counts[j] -= 1
    return counts


class Fleet:
    """The simulated nodes: per-node constants drawn once from ``seed``,
    heartbeats computed for a time ``t`` (seconds since the fleet started).

    ``period`` is the timeline length (the run's duration, or the cycle an
    unbounded demo repeats); ``dead_after_s`` sizes the silence of the dying
    nodes."""

    def __init__(self, n: int, seed: int, period: float, dead_after_s: float):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.period = period
        kinds, names = [], []
        for i, count in enumerate(kind_counts(n)):
            kinds += [i] * count
            names += [f"{KINDS[i].key}-{j + 1:03d}" for j in range(count)]
        self.n = n
        self.kind = np.array(kinds, np.int64)
        self.names = names
        self.node_bytes = np.array([s.encode() for s in names], f"S{NODE_SIZE}")
        u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
        is_ = self.of_kind
        # Baselines; the kinds override their own columns below.
        self.cpu = u(0.25, 0.55)
        self.mem = u(0.35, 0.60)
        self.queue = u(1.0, 4.0)
        self.job_s = u(0.5, 1.0)
        self.tput = u(6.0, 10.0)
        self.err_rate = u(0.0, 0.02)
        self.p50 = u(40.0, 80.0)
        self.tail = u(1.4, 2.0)  # p95 / p50
        self.spike_q = np.full(n, 22.0)  # queue added at the spike's peak
        g = is_("gcheavy")
        self.cpu[g] = u(0.88, 0.94)[g]
        self.mem[g] = u(0.50, 0.70)[g]
        self.queue[g] = u(0.0, 1.0)[g]
        self.job_s[g] = u(0.03, 0.06)[g]
        self.tput[g] = u(30.0, 45.0)[g]
        self.p50[g] = u(8.0, 15.0)[g]
        self.tail[g] = u(1.3, 1.6)[g]
        self.spike_q[g] = 3.0
        b = is_("bigjobs")
        self.cpu[b] = u(0.20, 0.35)[b]
        self.mem[b] = u(0.30, 0.50)[b]
        self.queue[b] = 2.0
        self.job_s[b] = 40.0
        self.tput[b] = 0.05
        self.p50[b] = 38_000.0
        self.tail[b] = 1.3
        self.spike_q[b] = 1.0
        f = is_("failing")
        self.cpu[f] = u(0.05, 0.15)[f]
        self.mem[f] = u(0.20, 0.30)[f]
        self.queue[f] = 0.0
        self.job_s[f] = u(0.01, 0.02)[f]
        self.tput[f] = u(150.0, 200.0)[f]
        self.err_rate[f] = u(0.85, 0.95)[f]
        self.p50[f] = u(1.0, 3.0)[f]
        self.tail[f] = 1.2
        self.spike_q[f] = 0.0
        # Flapping nodes cross max_cpu for 2 heartbeats, then stay clear for 2.
        self.flap_phase = rng.integers(0, 4, n)
        # Dying nodes: silent from `die_at` for `silence_s`, staggered.
        d = is_("dying")
        self.silence_s = min(dead_after_s + 2.0, 0.6 * period)
        self.die_at = np.full(n, np.inf)
        self.die_at[d] = 0.15 * period + u(0.0, min(1.0, 0.05 * period))[d]
        self.beat = 0

    def of_kind(self, key: str) -> np.ndarray:
        """Mask of the nodes of kind ``key`` (a `Kind.key`)."""
        return self.kind == _K[key]

    # The spike: queues ramp up from 40% of the timeline, hold, ramp down by 65%.
    def spike(self, t: float) -> float:
        x = (t % self.period) / self.period
        ramp = 0.05
        if x < 0.40 or x > 0.65:
            return 0.0
        return min(1.0, (x - 0.40) / ramp, (0.65 - x) / ramp)

    def in_spike(self, t: float) -> bool:
        return self.spike(t) > 0.0

    def silent(self, t: float) -> np.ndarray:
        x = t % self.period
        return (x >= self.die_at) & (x < self.die_at + self.silence_s)

    def heartbeats(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(RECORD_DTYPE batch of the nodes sending at ``t``, their cpu for
        all nodes).  Call once per heartbeat round."""
        rng, n, k = self.rng, self.n, self.kind
        sp = self.spike(t)
        noise = rng.normal(0.0, 1.0, (3, n))
        cpu = np.clip(self.cpu + 0.02 * noise[0] + 0.15 * sp * (self.spike_q > 5), 0.0, 0.97)
        flapping = k == _K["flapping"]
        over = ((self.beat + self.flap_phase) // 2) % 2 == 0
        cpu = np.where(flapping, np.where(over, 0.99, 0.55), cpu)
        mem = np.clip(self.mem + 0.01 * noise[1], 0.0, 0.94)
        queue = np.maximum(
            0.0, self.queue + 0.5 * noise[2] * (self.queue > 0.5) + self.spike_q * sp
        )
        queue[k == _K["bigjobs"]] = 2.0 + self.spike_q[k == _K["bigjobs"]] * sp
        requests = rng.poisson(self.tput * HEARTBEAT_INTERVAL_S)
        requests = np.where(k == _K["failing"], np.maximum(requests, 25), requests)
        err = rng.binomial(requests, self.err_rate)
        ok = requests - err
        send = ~self.silent(t)
        m = int(send.sum())
        rec = np.zeros(m, wire.RECORD_DTYPE)
        rec["node"] = self.node_bytes[send]
        rec["cpu"] = cpu[send]
        rec["mem"] = mem[send]
        rec["queue"] = queue[send]
        rec["avg_job_s"] = self.job_s[send]
        rec["throughput"] = self.tput[send]
        rec["ok"] = ok[send]
        rec["err"] = err[send]
        rec["p50_ms"] = self.p50[send]
        rec["p95_ms"] = (self.p50 * self.tail)[send]
        rec["ts"] = time.time()
        rec["flags"] = _FLAGS
        self.beat += 1
        return rec, np.where(send, cpu, np.nan)
