"""Placement policies of the placement simulator: issue 11's filters and
weighted node score, over numpy columns of the simulated cluster.

Filters (every policy applies all of them, in this order, and a job fits a
node only if it passes each; `filter_nodes` counts per filter how many of the
remaining nodes it eliminated, as ``place(explain=True)`` does):
  1. ``ready``: the node is ready (not cordoned / NotReady).
  2. ``resources``: for every resource, request <= allocatable - reserved.
  3. ``selector``: every ``key=value`` of the job's selector is a label of
     the node.
  4. ``affinity``: every required term holds: ``In`` / ``NotIn`` a set of
     values, ``Exists`` / ``DoesNotExist`` (a node without the key is not
     ``In`` anything and is ``NotIn`` everything).
  5. ``taints``: every ``NoSchedule`` taint of the node is tolerated.
  6. ``zone``: the node is in one of the job's allowed zones (a required
     zone, or the scope of `shm_engine.core.scope`), when it has any.
  7. ``spread``: fewer than ``spread`` jobs of the job's group on the node.

Score of a feasible node (ours), each part in [0, 1], weights of issue 11:
  * fit (0.30), least-allocated: mean over cpu, mem_gb and every resource
    the job requests of (allocatable - reserved - request) / allocatable;
  * affinity (0.20): matched weight / total weight of the job's preferred
    terms (0 for a job without any);
  * load (0.20): 1 - the node's CPU use from its latest heartbeat (one per
    second) plus the CPU reserved on it since that heartbeat over its
    cores, clipped to [0, 1]: the desirability score's load signal with
    live in-flight jobs (the engine's full score is measured by the routing
    simulator; here only its CPU part stands in);
  * locality (0.20): mean of the zone part (1 when the node's zone is one the
    job prefers: its own, or the whole scope once widened) and, for a job
    bound to a data set, the data part (1 when the node's ``data`` label is
    that set);
  * cost (0.10): the cheapest price in the cluster / the node's price (per
    zone, spot nodes cheaper).

Choice rules (how a scheduler avoids herding onto one node):
  * ``ours``: uniformly among the ``TOP_K`` (4) best scores;
  * ``ours_argmax``: the best score (ties at random);
  * ``ours_near``: uniformly among the nodes within ``NEAR`` (0.02) of the
    best score (near-ties, which concurrent schedulers would otherwise all
    take the same one of).
Baselines: ``kube_like`` (kube-scheduler's default resource scoring,
NodeResourcesFit LeastAllocated: mean of the free fraction of cpu and memory
after placement, the best node with ties at random; no load awareness, no
preferences) and ``random_feasible`` (uniform among feasible nodes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FILTERS",
    "PLACEMENT_POLICIES",
    "NEAR",
    "TOP_K",
    "WEIGHTS",
    "Cluster",
    "JobSpec",
    "filter_nodes",
    "score_parts",
]

FILTERS = ("ready", "resources", "selector", "affinity", "taints", "zone", "spread")
#: fit, affinity, load, locality, cost (issue 11's defaults)
WEIGHTS = (0.30, 0.20, 0.20, 0.20, 0.10)
TOP_K = 4
NEAR = 0.02
CPU, MEM = 0, 1


@dataclass
class Cluster:
    """Node columns the policies read (index = node); ``reserved`` and
    ``group_count`` change with every placement and release."""

    alloc: np.ndarray  # [n, R] allocatable
    reserved: np.ndarray  # [n, R]
    ready: np.ndarray  # bool
    zone: np.ndarray  # int, zone index
    labels: dict  # key -> int array of value codes, -1 = no such label
    taints: np.ndarray  # int bit set of NoSchedule taints
    price: np.ndarray  # float > 0
    hb_cpu: np.ndarray  # CPU use in [0, 1] at the latest heartbeat
    hb_reserved_cpu: np.ndarray  # CPU reserved at the latest heartbeat
    group_count: dict  # group -> int array of jobs per node


@dataclass
class JobSpec:
    """One job's requests and constraints (label values as codes)."""

    req: np.ndarray  # [R]
    selector: tuple = ()  # ((key, value), ...)
    affinity: tuple = ()  # ((key, op, (values...)), ...), op In/NotIn/Exists/DoesNotExist
    preferred: tuple = ()  # ((weight, key, op, (values...)), ...)
    tolerations: int = 0  # bit set of tolerated taints
    zones: tuple | None = None  # allowed zone indices; None: any
    prefer_zones: tuple = ()  # zone indices the locality part prefers
    data: int = -1  # data-set code, -1: none
    group: int = -1
    spread: int = 0


def member(col: np.ndarray, values) -> np.ndarray:
    """``col[i] in values`` for small non-negative int codes (-1 = none is
    never a member): a lookup table, much cheaper than ``np.isin`` here."""
    vals = np.asarray(values, np.int64)
    lut = np.zeros(int(max(col.max(initial=0), vals.max(initial=0))) + 2, bool)
    lut[vals + 1] = True
    lut[0] = False
    return lut[col + 1]


def _term(labels: dict, key: str, op: str, values: tuple) -> np.ndarray:
    col = labels[key]
    if op == "In":
        return member(col, values)
    if op == "NotIn":
        return ~member(col, values)
    if op == "Exists":
        return col >= 0
    if op == "DoesNotExist":
        return col < 0
    raise ValueError(f"affinity operator {op!r} is not In, NotIn, Exists or DoesNotExist")


def filter_nodes(c: Cluster, job: JobSpec, counts: dict | None = None) -> np.ndarray:
    """The nodes ``job`` fits (bool mask).  With ``counts``, adds per filter
    the number of nodes it eliminated among those the earlier ones left."""
    stages: list = []
    m = c.ready.copy()

    def keep() -> None:
        if counts is not None:
            stages.append(m.copy())

    keep()
    free = c.alloc - c.reserved
    m &= np.all(job.req <= free + 1e-9, axis=1)
    keep()
    for key, value in job.selector:
        m &= c.labels[key] == value
    keep()
    for key, op, values in job.affinity:
        m &= _term(c.labels, key, op, values)
    keep()
    m &= (c.taints & ~job.tolerations) == 0
    keep()
    if job.zones is not None:
        m &= member(c.zone, job.zones)
    keep()
    if job.group >= 0:
        gc = c.group_count.get(job.group)
        if gc is not None:
            m &= gc < job.spread
    keep()
    if counts is not None:
        before = len(m)
        for name, s in zip(FILTERS, stages, strict=True):
            left = int(s.sum())
            counts[name] = counts.get(name, 0) + before - left
            before = left
    return m


def score_parts(c: Cluster, job: JobSpec, idx: np.ndarray) -> np.ndarray:
    """[5, len(idx)]: fit, affinity, load, locality, cost of the nodes ``idx``."""
    alloc = c.alloc[idx]
    after = alloc - c.reserved[idx] - job.req
    use = job.req > 0
    use[CPU] = use[MEM] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        fit = np.where(alloc[:, use] > 0, after[:, use] / alloc[:, use], 0.0).mean(axis=1)
    out = np.empty((5, idx.shape[0]))
    out[0] = fit
    if job.preferred:
        total = sum(t[0] for t in job.preferred)
        acc = np.zeros(idx.shape[0])
        for weight, key, op, values in job.preferred:
            acc += weight * _term(c.labels, key, op, values)[idx]
        out[1] = acc / total
    else:
        out[1] = 0.0
    cores = c.alloc[idx, CPU]
    est = c.hb_cpu[idx] + (c.reserved[idx, CPU] - c.hb_reserved_cpu[idx]) / cores
    out[2] = 1.0 - np.clip(est, 0.0, 1.0)
    zone_part = member(c.zone[idx], job.prefer_zones).astype(float)
    if job.data >= 0:
        out[3] = 0.5 * (zone_part + (c.labels["data"][idx] == job.data))
    else:
        out[3] = zone_part
    out[4] = c.price.min() / c.price[idx]
    return out


class _Policy:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def _best(self, values: np.ndarray) -> int:
        best = np.flatnonzero(values >= values.max() - 1e-12)
        return int(best[self.rng.integers(best.shape[0])]) if best.shape[0] > 1 else int(best[0])


class Ours(_Policy):
    top_k = TOP_K

    def choose(self, c: Cluster, job: JobSpec, idx: np.ndarray) -> int:
        total = np.asarray(WEIGHTS) @ score_parts(c, job, idx)
        m = idx.shape[0]
        if self.top_k <= 1 or m == 1:
            return int(idx[self._best(total)])
        k = min(self.top_k, m)
        top = np.argpartition(-total, k - 1)[:k]
        return int(idx[top[self.rng.integers(k)]])


class OursArgmax(Ours):
    top_k = 1


class OursNear(_Policy):
    def choose(self, c: Cluster, job: JobSpec, idx: np.ndarray) -> int:
        total = np.asarray(WEIGHTS) @ score_parts(c, job, idx)
        near = np.flatnonzero(total >= total.max() - NEAR)
        return int(idx[near[self.rng.integers(near.shape[0])]])


class KubeLike(_Policy):
    def choose(self, c: Cluster, job: JobSpec, idx: np.ndarray) -> int:
        alloc = c.alloc[idx][:, (CPU, MEM)]
        after = alloc - c.reserved[idx][:, (CPU, MEM)] - job.req[[CPU, MEM]]
        return int(idx[self._best((after / alloc).mean(axis=1))])


class RandomFeasible(_Policy):
    def choose(self, c: Cluster, job: JobSpec, idx: np.ndarray) -> int:
        return int(idx[self.rng.integers(idx.shape[0])])


PLACEMENT_POLICIES = {
    "ours": Ours,
    "ours_argmax": OursArgmax,
    "ours_near": OursNear,
    "kube_like": KubeLike,
    "random_feasible": RandomFeasible,
}
