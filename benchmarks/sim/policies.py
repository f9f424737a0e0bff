"""Routing policies.

Contract: ``cls.build(view, rngs)`` returns one instance per scheduler (one
generator each); ``inst.choose(now, size, tried) -> node`` routes one attempt,
``tried`` being the nodes this job already tried (empty on its first attempt:
a retry goes elsewhere when anywhere else qualifies).  Classes with
``tracks_requests`` are told ``dispatched(node, now) -> token`` and
``released(node, now, ok, token, served)`` (``served``: the node finished the
attempt, ok or failed; not lost or sent to a dead node) for every attempt
their own scheduler sends: that, and asynchronous probes for prequal, is all the state a real
instance of them has.  Classes with ``uses_scores`` read the engine's
published tick and route through its claims (see `cluster`).

Families:
  * heartbeat baselines read the latest received heartbeats and an ``alive``
    mask (heartbeat younger than 10 s, the usual heartbeat timeout).  The
    queue baselines count the jobs on a node, running and waiting (the usual
    JSQ queue length); `p2c_wait` estimates the sojourn from the same count,
    ``jobs * avg_job_s / slots``.
  * peers, each as its real implementation keeps state, among alive nodes:
    `least_request` (Envoy LEAST_REQUEST, all weights equal: best of 2 random
    by this instance's active requests), `peak_ewma` (Finagle's / Linkerd's
    P2C on peak-sensitive EWMA latency x (pending + 1)), `prequal` (Google's
    Prequal: hot-cold lexicographic choice from a pool of asynchronously
    probed RIF and latency).
  * score policies read the latest tick's scores and ranking; when nothing
    qualifies they fall back to uniform random among alive nodes (counted as
    ``fallbacks``).  ``desirability`` is `clients.pick.pick` itself, the
    function shipped to schedulers, fed the claims made since the tick.
  * the oracle reads the truth.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort

import numpy as np

from clients.pick import pick

__all__ = ["POLICIES", "BASELINES", "PEERS", "SCORE_POLICIES", "VALIDATION"]


class _Base:
    uses_scores = False
    tracks_requests = False

    def __init__(self, view, rng):
        self.v = view
        self.rng = rng

    @classmethod
    def build(cls, view, rngs):
        return [cls(view, r) for r in rngs]

    def dispatched(self, node, now):
        return None

    def released(self, node, now, ok, token, served):
        pass

    def _eligible(self, tried):
        """Alive nodes not yet tried; alive nodes if all were tried; all nodes if none is alive."""
        idx = self.v.alive_idx
        if tried:
            rest = idx[~np.isin(idx, tried)]
            if rest.shape[0]:
                return rest
        if idx.shape[0] == 0:
            return np.arange(self.v.n)
        return idx

    def _any(self, tried):
        idx = self._eligible(tried)
        return int(idx[self.rng.integers(idx.shape[0])])

    def _argmin(self, values, tried):
        """Eligible node with the least value; ties broken uniformly."""
        idx = self._eligible(tried)
        vals = values[idx]
        best = np.flatnonzero(vals == vals.min())
        if best.shape[0] == 1:
            return int(idx[best[0]])
        return int(idx[best[self.rng.integers(best.shape[0])]])

    def _weighted(self, weights, tried):
        idx = self._eligible(tried)
        c = np.cumsum(weights[idx] + 1e-6)
        return int(
            idx[min(np.searchsorted(c, self.rng.random() * c[-1], side="right"), idx.shape[0] - 1)]
        )

    def _two(self, tried):
        """Two distinct uniformly random eligible nodes (a, b); (a, -1) when only one."""
        idx = self._eligible(tried)
        m = idx.shape[0]
        if m < 2:
            return int(idx[0]), -1
        u0, u1 = self.rng.random(2).tolist()
        a = int(u0 * m)
        b = int(u1 * (m - 1))
        b += b >= a
        return int(idx[a]), int(idx[b])


# ------------------------------------------------------------- baselines --
class Random(_Base):
    def choose(self, now, size, tried):
        return self._any(tried)


class RoundRobin(_Base):
    def __init__(self, view, rng):
        super().__init__(view, rng)
        self.k = 0

    def choose(self, now, size, tried):
        idx = self._eligible(tried)
        self.k += 1
        return int(idx[self.k % idx.shape[0]])


class LeastCpu(_Base):
    def choose(self, now, size, tried):
        return self._argmin(self.v.cpu, tried)


class WeightedCpu(_Base):
    def choose(self, now, size, tried):
        return self._weighted(1.0 - self.v.cpu, tried)


class WeightedMem(_Base):
    def choose(self, now, size, tried):
        return self._weighted(1.0 - self.v.mem, tried)


class WeightedMix(_Base):
    def choose(self, now, size, tried):
        return self._weighted(1.0 - 0.5 * (self.v.cpu + self.v.mem), tried)


class ShortestQueue(_Base):
    def choose(self, now, size, tried):
        return self._argmin(self.v.jobs, tried)


class TwoChoicesQueue(_Base):
    def choose(self, now, size, tried):
        a, b = self._two(tried)
        if b < 0:
            return a
        q = self.v.jobs
        return a if q[a] <= q[b] else b  # a is the uniformly random one: ties stay fair


class TwoChoicesWait(_Base):
    """Best of 2 by the heartbeat's sojourn estimate jobs x avg_job_s / slots."""

    def choose(self, now, size, tried):
        a, b = self._two(tried)
        if b < 0:
            return a
        v = self.v
        wa = v.jobs[a] * v.avg_job_s[a] / v.slots[a]
        wb = v.jobs[b] * v.avg_job_s[b] / v.slots[b]
        return a if wa <= wb else b


def _distinct(rng, m: int, k: int) -> list:
    """min(k, m) distinct uniform positions in range(m) (Floyd's algorithm)."""
    k = min(k, m)
    u = rng.random(k).tolist()
    out = []
    for q, j in enumerate(range(m - k, m)):
        t = int(u[q] * (j + 1))
        out.append(j if t in out else t)
    return out


# ----------------------------------------------------------------- peers --
class LeastRequest(_Base):
    """Envoy LEAST_REQUEST with equal weights: ``choice_count`` (2) hosts drawn
    at random, the one with fewer active requests *of this Envoy* wins (the
    first drawn on a tie).  Hosts: the alive set (the heartbeat timeout
    standing in for service discovery and health checks); no outlier
    detection (not configured by default)."""

    tracks_requests = True

    def __init__(self, view, rng):
        super().__init__(view, rng)
        self.active = [0] * view.n

    def choose(self, now, size, tried):
        a, b = self._two(tried)
        if b < 0:
            return a
        act = self.active
        return b if act[b] < act[a] else a

    def dispatched(self, node, now):
        self.active[node] += 1

    def released(self, node, now, ok, token, served):
        self.active[node] -= 1


class PeakEwma(_Base):
    """Finagle's ``Balancers.p2cPeakEwma`` (Linkerd's default): P2C on
    ``cost x (pending + 1)``, where ``cost`` is a peak-sensitive EWMA of this
    client's round-trip times to the node.  On each observation ``rtt`` after
    ``td`` seconds, ``w = exp(-td / tau)``; a peak (``rtt > cost``) replaces
    the cost outright, otherwise ``cost = cost*w + rtt*(1-w)``.  Reading the
    load first observes 0, so the cost decays towards 0 with time constant
    ``tau`` (10 s, Finagle's ``decayTime``) while no response arrives.  A node
    with requests pending but no history costs ``PENALTY + pending``.  An
    attempt that fails (fast failure, connect timeout, loss) is a response
    like any other: its round-trip time is observed."""

    tracks_requests = True
    TAU_S = 10.0
    PENALTY = float((2**63 - 1) >> 16) * 1e-9  # Finagle's Long.MaxValue >> 16 ns, in seconds

    def __init__(self, view, rng):
        super().__init__(view, rng)
        n = view.n
        self.cost = [0.0] * n
        self.stamp = [0.0] * n
        self.pending = [0] * n

    def _observe(self, j, rtt, now):
        td = now - self.stamp[j]
        w = math.exp(-(td if td > 0 else 0.0) / self.TAU_S)
        c = self.cost[j]
        self.cost[j] = rtt if rtt > c else c * w + rtt * (1.0 - w)
        self.stamp[j] = now

    def _load(self, j, now):
        self._observe(j, 0.0, now)
        c, p = self.cost[j], self.pending[j]
        if c == 0.0 and p != 0:
            return self.PENALTY + p
        return c * (p + 1)

    def choose(self, now, size, tried):
        a, b = self._two(tried)
        if b < 0:
            return a
        return a if self._load(a, now) <= self._load(b, now) else b

    def dispatched(self, node, now):
        self.pending[node] += 1
        return now

    def released(self, node, now, ok, token, served):
        self.pending[node] -= 1
        self._observe(node, now - token, now)


class _PrequalServers:
    """Server side of Prequal, shared by every client: each node's latency
    estimate for a query arriving now, the paper's rule: the median latency of
    recently completed queries whose RIF at arrival was within 1 of the
    current RIF (the last ``PER_RIF`` of each RIF value; 0 when there is
    none).  Estimates are cached per (node, RIF) until a sample lands in a
    bucket they read."""

    PER_RIF = 16
    MAX_RIF = 63

    def __init__(self, n):
        self.samples = [[[] for _ in range(self.MAX_RIF + 1)] for _ in range(n)]
        self.cache = [dict() for _ in range(n)]

    def record(self, j, rif_at_arrival, latency):
        r = min(rif_at_arrival, self.MAX_RIF)
        b = self.samples[j][r]
        b.append(latency)
        if len(b) > self.PER_RIF:
            del b[0]
        c = self.cache[j]
        for q in (r - 1, r, r + 1):
            c.pop(q, None)

    def estimate(self, j, rif):
        r = min(rif, self.MAX_RIF)
        c = self.cache[j]
        est = c.get(r)
        if est is None:
            s = self.samples[j]
            lat = s[r] + (s[r - 1] if r > 0 else []) + (s[r + 1] if r < self.MAX_RIF else [])
            if lat:
                lat.sort()
                est = lat[len(lat) // 2]
            else:
                est = 0.0
            c[r] = est
        return est


class Prequal(_Base):
    """Prequal (Wydrowski, Kleinberg, Rumble, Shah; NSDI 2024), client side.

    Probing: each query triggers ``R_PROBE`` (3) probes to distinct members
    drawn uniformly; a probe returns the node's RIF (every client's requests
    in flight) and its latency estimate (`_PrequalServers`) and joins this
    client's pool ``PROBE_RTT_S`` later (asynchronous: it serves later
    queries, never the one that sent it).  A dead node never answers.
    Pool: at most ``POOL`` (16) probes, one per node (a newer probe replaces
    an older one of the same node; over capacity the oldest goes); probes
    older than ``MAX_AGE_S`` are dropped; each probe serves at most ``b_reuse
    = max(1, 1 + delta / ((1 - m/n) r_probe - r_remove))`` queries (delta =
    1; randomly rounded; ``MAX_REUSE`` when the denominator is not positive,
    as in clusters of fewer than ~3x the pool's size); after each query
    ``R_REMOVE`` (1) probe is removed, alternately the oldest and the worst
    (the hottest by RIF if any is hot, else the slowest).  Using a probe adds
    1 to its RIF, so the pool counts this client's own queries until the next
    probe of that node.

    Selection, the hot-cold lexicographic rule: a probe is hot when its RIF
    exceeds the ``Q_RIF`` (0.84) quantile of the RIFs of this client's recent
    probes (the last ``RIF_HISTORY``).  If every usable probe is hot, the one
    with the lowest RIF wins; otherwise the cold probe with the lowest
    latency (ties by RIF).  With fewer than 2 usable probes, a uniformly
    random member.  Probes of nodes the job already tried are not usable for
    it.  No error handling beyond that: the rule has none (a node that fails
    fast looks fast)."""

    tracks_requests = True
    R_PROBE = 3
    POOL = 16
    R_REMOVE = 1
    DELTA = 1.0
    MAX_REUSE = 16
    Q_RIF = 0.84
    RIF_HISTORY = 64
    MAX_AGE_S = 1.0
    PROBE_RTT_S = 0.002

    @classmethod
    def build(cls, view, rngs):
        servers = _PrequalServers(view.n)
        return [cls(view, r, servers) for r in rngs]

    def __init__(self, view, rng, servers):
        super().__init__(view, rng)
        self.servers = servers
        self.pending = []  # probes in flight: (ready_t, node, rif, latency)
        self.pool = {}  # node -> [recv_t, rif, latency, uses_left]
        self.hist = []  # recent probe RIFs, oldest first
        self.hist_sorted = []  # the same, sorted
        self.remove_oldest = True
        den = (1.0 - self.POOL / view.n) * self.R_PROBE - self.R_REMOVE
        b = 1.0 + self.DELTA / den if den > 0 else float(self.MAX_REUSE)
        self.budget = min(max(b, 1.0), float(self.MAX_REUSE))

    def _uses(self):
        b = self.budget
        whole = math.floor(b)
        if b == whole:
            return int(whole)
        return int(whole) + (1 if self.rng.random() < b - whole else 0)

    def choose(self, now, size, tried):
        v = self.v
        pool = self.pool
        hist = self.hist
        # Probes that have come back join the pool.
        if self.pending:
            keep = []
            for p in self.pending:
                if p[0] <= now:
                    t_recv, j, rif, lat = p
                    hist.append(rif)
                    insort(self.hist_sorted, rif)
                    if len(hist) > self.RIF_HISTORY:
                        hs = self.hist_sorted
                        del hs[bisect_left(hs, hist.pop(0))]
                    pool.pop(j, None)
                    pool[j] = [t_recv, rif, lat, self._uses()]
                    if len(pool) > self.POOL:
                        del pool[next(iter(pool))]  # insertion order = age
                else:
                    keep.append(p)
            self.pending = keep
        # This query's probes, to distinct members; dead ones never answer.
        members = self._eligible(())
        servers = self.servers
        ready = now + self.PROBE_RTT_S
        for q in _distinct(self.rng, members.shape[0], self.R_PROBE):
            j = int(members[q])
            if v.free_min[j] != math.inf:
                rif = v.n_out[j]
                self.pending.append((ready, j, rif, servers.estimate(j, rif)))
        # Drop stale probes (the dict is in arrival order: oldest first).
        old = now - self.MAX_AGE_S
        while pool:
            j0 = next(iter(pool))
            if pool[j0][0] >= old:
                break
            del pool[j0]
        if hist:
            h = self.hist_sorted
            thr = h[int((len(h) - 1) * self.Q_RIF)]
        else:
            thr = math.inf
        # Hot-cold lexicographic choice among usable probes.
        best_cold = best_any = None
        n_usable = 0
        for j, p in pool.items():
            if tried and j in tried:
                continue
            n_usable += 1
            rif, lat = p[1], p[2]
            if rif <= thr and (best_cold is None or (lat, rif) < best_cold[0]):
                best_cold = ((lat, rif), j)
            if best_any is None or (rif, lat) < best_any[0]:
                best_any = ((rif, lat), j)
        if n_usable >= 2:
            j = best_cold[1] if best_cold is not None else best_any[1]
            p = pool[j]
            p[1] += 1
            p[3] -= 1
            if p[3] <= 0:
                del pool[j]
        else:
            j = self._any(tried)
        # r_remove removals per query, alternating oldest and worst.
        if pool:
            if self.remove_oldest:
                del pool[next(iter(pool))]
            else:
                worst_hot = worst_lat = None
                for q, p in pool.items():
                    if p[1] > thr and (worst_hot is None or p[1] > worst_hot[0]):
                        worst_hot = (p[1], q)
                    if worst_lat is None or p[2] > worst_lat[0]:
                        worst_lat = (p[2], q)
                del pool[(worst_hot or worst_lat)[1]]
            self.remove_oldest = not self.remove_oldest
        return j

    def dispatched(self, node, now):
        return now, self.v.n_out[node] + 1  # the server counts the query itself

    def released(self, node, now, ok, token, served):
        if served:  # the server saw it finish (not lost, not dead)
            t0, rif0 = token
            self.servers.record(node, rif0, now - t0)


# ----------------------------------------------------------------- score --
class _Score(_Base):
    uses_scores = True

    def _fallback(self, tried):
        self.v.fallbacks += 1
        return self._any(tried)


class ScoreArgmax(_Score):
    def choose(self, now, size, tried):
        v = self.v
        for j in v.ranked[: v.n_ranked].tolist():
            if j not in tried:
                return j
        return self._fallback(tried)


class ScoreWeighted(_Score):
    """Weighted random, probability proportional to score ** power."""

    power = 1.0

    def choose(self, now, size, tried):
        v = self.v
        m = v.n_ranked
        r = v.ranked[:m]
        if tried and m:
            r = r[~np.isin(r, tried)]
            m = r.shape[0]
        if m == 0:
            return self._fallback(tried)
        w = v.score[r]
        if self.power != 1.0:
            w = w**self.power
        c = np.cumsum(w)
        return int(r[min(np.searchsorted(c, self.rng.random() * c[-1], side="right"), m - 1)])


class ScoreWeightedSq(ScoreWeighted):
    power = 4.0


class ScoreTopK(_Score):
    """Uniform random among the top quarter of the ranking (at least 2)."""

    def choose(self, now, size, tried):
        v = self.v
        m = v.n_ranked
        r = v.ranked[:m]
        if tried and m:
            r = r[~np.isin(r, tried)]
            m = r.shape[0]
        if m == 0:
            return self._fallback(tried)
        k = min(m, max(2, m // 4))
        return int(r[self.rng.integers(k)])


def _pick_policy(name, use_claims=True, **kw):
    class ScorePick(_Score):
        def choose(self, now, size, tried):
            v = self.v
            if use_claims:
                s = pick(
                    v.score,
                    v.ranked,
                    v.n_ranked,
                    self.rng,
                    tried,
                    claims=v.claims,
                    slots=v.slots,
                    **kw,
                )
            else:
                s = pick(v.score, v.ranked, v.n_ranked, self.rng, tried, **kw)
            return s if s >= 0 else self._fallback(tried)

    ScorePick.__name__ = ScorePick.__qualname__ = name
    return ScorePick


class Oracle(_Base):
    """Earliest expected completion on the true state: the earliest worker-free
    time plus the job's expected service time there; skips nodes that are down
    (free_min = inf), fail most jobs, or were tried."""

    def __init__(self, view, rng):
        super().__init__(view, rng)
        self.inv_speed = np.where(view.fail_prob > 0.5, np.inf, 1.0 / view.speed)

    def choose(self, now, size, tried):
        v = self.v
        est = np.maximum(v.free_min, now) + size * self.inv_speed
        if tried:
            est[list(tried)] = np.inf
        j = int(np.argmin(est))
        if not np.isfinite(est[j]):
            return self._any(tried)
        return j


class TrueTwoChoices(_Base):
    """Validation only (the supermarket model): best of 2 uniformly random
    nodes by the true number of jobs on them, no staleness."""

    def choose(self, now, size, tried):
        n = self.v.n
        u0, u1 = self.rng.random(2).tolist()
        a = int(u0 * n)
        b = int(u1 * (n - 1))
        b += b >= a
        q = self.v.n_out
        return a if q[a] <= q[b] else b


BASELINES = {
    "random": Random,
    "round_robin": RoundRobin,
    "least_cpu": LeastCpu,
    "wrand_cpu": WeightedCpu,
    "wrand_mem": WeightedMem,
    "wrand_cpu_mem": WeightedMix,
    "jsq": ShortestQueue,
    "p2c_queue": TwoChoicesQueue,
    "p2c_wait": TwoChoicesWait,
}
PEERS = {
    "least_request": LeastRequest,
    "peak_ewma": PeakEwma,
    "prequal": Prequal,
}
SCORE_POLICIES = {
    "des_argmax": ScoreArgmax,
    "des_wrand": ScoreWeighted,
    "des_wrand_pow4": ScoreWeightedSq,
    "des_topq": ScoreTopK,
    "des_p2c": _pick_policy("des_p2c", d=2),
    "des_p3c": _pick_policy("des_p3c", d=3),
    "des_p6c": _pick_policy("des_p6c", d=6),
    "des_noclaims": _pick_policy("des_noclaims", use_claims=False),
    "desirability": _pick_policy("desirability"),  # clients.pick.pick with its defaults (d = 4)
}
POLICIES = {**BASELINES, **PEERS, **SCORE_POLICIES, "oracle": Oracle}
VALIDATION = {"true_p2c": TrueTwoChoices}
