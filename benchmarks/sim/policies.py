"""Routing policies: ``cls(view, rng)`` with ``choose(now, size) -> node``.

Every policy sees the same stale information (`cluster.View`): heartbeat
fields as last received, an ``alive`` mask (heartbeat younger than
``dead_after_s``), and the latest tick's scores.  Baselines choose among alive
nodes; score policies choose among ranked nodes (score > 0) and, when nothing
is ranked, fall back to uniform random among alive nodes (counted as
``fallbacks``).  Only the oracle reads the truth.

Policy ``desirability`` is `clients.pick.pick` itself, the function shipped to
schedulers, so the shipped code is what is measured.
"""

from __future__ import annotations

import numpy as np

from clients.pick import pick

__all__ = ["POLICIES", "BASELINES", "SCORE_POLICIES"]


class _Base:
    def __init__(self, view, rng):
        self.v = view
        self.rng = rng

    def _any_alive(self):
        idx = self.v.alive_idx
        if idx.shape[0] == 0:
            return int(self.rng.integers(self.v.n))
        return int(idx[self.rng.integers(idx.shape[0])])

    def _argmin_alive(self, values):
        """Alive node with the least value; ties broken uniformly."""
        idx = self.v.alive_idx
        if idx.shape[0] == 0:
            return int(self.rng.integers(self.v.n))
        vals = values[idx]
        best = np.flatnonzero(vals == vals.min())
        if best.shape[0] == 1:
            return int(idx[best[0]])
        return int(idx[best[self.rng.integers(best.shape[0])]])

    def _weighted_alive(self, weights):
        idx = self.v.alive_idx
        if idx.shape[0] == 0:
            return int(self.rng.integers(self.v.n))
        c = np.cumsum(weights[idx] + 1e-6)
        return int(idx[min(np.searchsorted(c, self.rng.random() * c[-1], side="right"),
                           idx.shape[0] - 1)])


class Random(_Base):
    def choose(self, now, size):
        return self._any_alive()


class RoundRobin(_Base):
    def __init__(self, view, rng):
        super().__init__(view, rng)
        self.k = 0

    def choose(self, now, size):
        idx = self.v.alive_idx
        self.k += 1
        if idx.shape[0] == 0:
            return self.k % self.v.n
        return int(idx[self.k % idx.shape[0]])


class LeastCpu(_Base):
    def choose(self, now, size):
        return self._argmin_alive(self.v.cpu)


class WeightedCpu(_Base):
    def choose(self, now, size):
        return self._weighted_alive(1.0 - self.v.cpu)


class WeightedMem(_Base):
    def choose(self, now, size):
        return self._weighted_alive(1.0 - self.v.mem)


class WeightedMix(_Base):
    def choose(self, now, size):
        return self._weighted_alive(1.0 - 0.5 * (self.v.cpu + self.v.mem))


class ShortestQueue(_Base):
    def choose(self, now, size):
        return self._argmin_alive(self.v.queue)


class TwoChoicesQueue(_Base):
    def choose(self, now, size):
        idx = self.v.alive_idx
        m = idx.shape[0]
        if m < 2:
            return self._any_alive()
        a = int(self.rng.integers(m))
        b = int(self.rng.integers(m - 1))
        b += b >= a
        a, b = int(idx[a]), int(idx[b])
        q = self.v.queue
        return a if q[a] <= q[b] else b   # a is the uniformly random one: ties stay fair


class _Score(_Base):
    def _fallback(self):
        self.v.fallbacks += 1
        return self._any_alive()


class ScoreArgmax(_Score):
    def choose(self, now, size):
        v = self.v
        if v.n_ranked == 0:
            return self._fallback()
        return int(v.ranked[0])


class ScoreWeighted(_Score):
    """Weighted random, probability proportional to score ** power."""
    power = 1.0

    def choose(self, now, size):
        v = self.v
        m = v.n_ranked
        if m == 0:
            return self._fallback()
        r = v.ranked[:m]
        w = v.score[r]
        if self.power != 1.0:
            w = w ** self.power
        c = np.cumsum(w)
        return int(r[min(np.searchsorted(c, self.rng.random() * c[-1], side="right"), m - 1)])


class ScoreWeightedSq(ScoreWeighted):
    power = 4.0


class ScoreTopK(_Score):
    """Uniform random among the top quarter of the ranking (at least 2)."""

    def choose(self, now, size):
        v = self.v
        m = v.n_ranked
        if m == 0:
            return self._fallback()
        k = min(m, max(2, m // 4))
        return int(v.ranked[self.rng.integers(k)])


def _pick_policy(**kw):
    class ScorePick(_Score):
        def choose(self, now, size):
            v = self.v
            s = pick(v.score, v.ranked, v.n_ranked, self.rng, **kw)
            return s if s >= 0 else self._fallback()
    ScorePick.__name__ = "ScorePick" + "".join(f"_{k}{x}" for k, x in kw.items())
    return ScorePick


class Oracle(_Base):
    """Earliest expected completion on the true state: the earliest worker-free
    time plus the job's expected service time there; skips nodes that are down
    (free_min = inf) or fail most jobs."""

    def __init__(self, view, rng):
        super().__init__(view, rng)
        self.inv_speed = np.where(view.fail_prob > 0.5, np.inf, 1.0 / view.speed)

    def choose(self, now, size):
        v = self.v
        est = np.maximum(v.free_min, now) + size * self.inv_speed
        j = int(np.argmin(est))
        if not np.isfinite(est[j]):
            return self._any_alive()
        return j


BASELINES = {
    "random": Random,
    "round_robin": RoundRobin,
    "least_cpu": LeastCpu,
    "wrand_cpu": WeightedCpu,
    "wrand_mem": WeightedMem,
    "wrand_cpu_mem": WeightedMix,
    "jsq": ShortestQueue,
    "p2c_queue": TwoChoicesQueue,
}
SCORE_POLICIES = {
    "des_argmax": ScoreArgmax,
    "des_wrand": ScoreWeighted,
    "des_wrand_pow4": ScoreWeightedSq,
    "des_topq": ScoreTopK,
    "des_p2c": _pick_policy(d=2),
    "des_p4c": _pick_policy(d=4),
    "desirability": _pick_policy(),   # clients.pick.pick with its defaults (d=3)
}
POLICIES = {**BASELINES, **SCORE_POLICIES, "oracle": Oracle}
