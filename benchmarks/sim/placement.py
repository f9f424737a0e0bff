"""Placement scenarios: where does a job go when nodes have capacity and
constraints?  Run by the simulator's CLI (``python -m benchmarks sim
--scenario placement`` / ``--scenario scope``; see `benchmarks.sim`).

Invariant: what a policy changes is only which feasible node a job gets (and
the draws of its own generator).  Nodes, jobs, background load and the
spike are drawn up front from (seed, scenario) (`build_world`), so every
policy of a seed meets the same cluster and the same jobs.  Capacity is never
over-committed: a reservation is made only on a node the ``resources``
filter passed, against the reservations of that instant; the run tracks the
highest reserved / allocatable it ever saw (``max_fill``) and what is left
reserved once every job ended (``reserved_left``, 0 when releases balance).

Cluster (`PlacementScenario`): nodes of several shapes (`SHAPES`: cpu,
mem_gb, gpu), in zones with a price each (spot nodes 40% of it); labels
``disk`` (ssd / hdd), ``arch`` (amd64 / arm64), ``data`` (one of 8 data
sets); taints ``gpu=true:NoSchedule`` (gpu shapes) and
``spot=true:NoSchedule`` (spot nodes); a few NotReady nodes.  Hidden from
reservations: node speed, and background CPU (daemons, plus noisy-neighbour
episodes on some nodes) which heartbeats show (each node every second, in
8 phase groups; the load part reads them).

Jobs: Poisson arrivals at the offered load (reserved CPU / schedulable CPU,
piecewise linear in time), requests of several shapes, selectors, required
and preferred affinity, tolerations, a home zone (required for some, else
preferred), data sets, groups with a spread limit.  A job holds its request
from placement to completion; the jobs on a node share its cores
(processor sharing): a job's rate is ``speed * min(1, cores / (reserved cpu
+ background cpu))``, so a node whose background eats cores slows every job
on it ("queueing on nodes").  A job that fits nowhere waits and is tried
again after 1, 2, 4, 8, then every 10 s; it is unschedulable when still
pending ``max_pending_s`` after arrival.  Latency = completion - arrival
(pending time + run time).

Scope scenario: short service jobs of one shape, each bound to its home zone
unless `shm_engine.core.scope.ScopePolicy` (fed every outcome's run time, per
zone, on the simulation's clock) widens its scope; a widened job's locality
prefers its whole scope.  One zone's tail spikes: while it lasts, a share of
the jobs starting there run ``factor(t)`` times longer (a zone-wide fault,
the same for every node of the zone, which no node score can avoid).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace

import numpy as np

from shm_engine.core.config import ScopeConfig
from shm_engine.core.scope import EVERY, OWN, ScopePolicy

from .place_policies import FILTERS, PLACEMENT_POLICIES, Cluster, JobSpec, filter_nodes

__all__ = [
    "PLACEMENT_SCENARIOS",
    "PlacementScenario",
    "SCOPE_VARIANTS",
    "SHAPES",
    "build_world",
    "quick",
    "run",
]

RESOURCES = ("cpu", "mem_gb", "gpu")
LABELS = {
    "disk": ("ssd", "hdd"),
    "arch": ("amd64", "arm64"),
    "data": tuple(f"ds{k}" for k in range(8)),
}
GPU_TAINT, SPOT_TAINT = 1, 2  # gpu=true:NoSchedule, spot=true:NoSchedule

# name, cpu, mem_gb, gpu, share of nodes
SHAPES = (
    ("general-8", 8, 32, 0, 0.30),
    ("general-16", 16, 64, 0, 0.25),
    ("highmem-16", 16, 128, 0, 0.15),
    ("compute-32", 32, 64, 0, 0.15),
    ("large-32", 32, 256, 0, 0.07),
    ("gpu-32", 32, 256, 4, 0.08),
)

#: The scope scenario's two variants: escalation by `ScopePolicy`, and every
#: job kept in its own zone.
SCOPE_VARIANTS = ("escalating", "own_zone")

_RAMP = ((0.0, 0.75), (0.40, 0.75), (0.50, 0.95), (0.70, 0.95), (0.80, 0.75), (1.0, 0.75))
_SPIKE = ((0.0, 1.0), (200.0, 1.0), (400.0, 3.5), (500.0, 3.5), (700.0, 1.0), (900.0, 1.0))


@dataclass(frozen=True)
class PlacementScenario:
    name: str
    description: str
    kind: str = "placement"  # "placement" | "scope"
    n_nodes: int = 240
    zones: tuple = ("z0", "z1", "z2", "z3")
    zone_price: tuple = (1.0, 1.2, 0.9, 1.1)
    neighbours: tuple = ("z0=z1,z3", "z1=z0,z2", "z2=z1,z3", "z3=z2,z0")
    duration_s: float = 1200.0  # arrivals stop here; jobs drain
    warmup_s: float = 200.0
    load: tuple = _RAMP  # (fraction of duration, offered load) breakpoints
    mean_run_s: float = 90.0  # nominal run time (speed 1, no contention)
    run_sigma: float = 0.8  # lognormal sigma of run times
    speed_sd: float = 0.2  # node speed: lognormal(0, speed_sd) clipped to [0.6, 1.6]
    gpu_nodes: bool = True  # include the gpu shape
    spot_fraction: float = 0.25
    not_ready_fraction: float = 0.03
    noisy_fraction: float = 0.20  # nodes with noisy-neighbour episodes
    noisy_on_s: float = 120.0
    noisy_off_s: float = 240.0
    hb_interval_s: float = 1.0
    retry_max_s: float = 10.0
    max_pending_s: float = 120.0
    spike_zone: int = -1  # scope: the zone whose tail spikes
    spike: tuple = ()  # scope: (seconds, factor) breakpoints
    spike_share: float = 0.2  # scope: share of jobs slowed in the spiking zone
    spike_window: tuple = (0.0, 0.0)  # scope: arrivals whose p99 the summary reports
    bin_s: float = 100.0  # scope: width of a row of the table


PLACEMENT_SCENARIOS: dict[str, PlacementScenario] = {
    s.name: s
    for s in (
        PlacementScenario(
            "placement",
            "6 node shapes in 4 zones, selectors, affinity, taints, zones and group spread; "
            "batch jobs arrive and leave at 75% offered CPU, 95% from 40% to 70% of the run; "
            "a fifth of the nodes have noisy-neighbour episodes",
        ),
        PlacementScenario(
            "scope",
            "4 zones in a ring, short service jobs at 60% load; from 200 s to 700 s a fifth of "
            "the jobs starting in zone z1 run up to 3.5x longer (ramp up, hold, ramp down)",
            kind="scope",
            n_nodes=120,
            duration_s=900.0,
            warmup_s=0.0,
            load=((0.0, 0.6), (1.0, 0.6)),
            mean_run_s=20.0,
            run_sigma=0.15,
            speed_sd=0.05,
            gpu_nodes=False,
            noisy_fraction=0.0,
            not_ready_fraction=0.0,
            spike_zone=1,
            spike=_SPIKE,
            spike_window=(200.0, 700.0),
        ),
    )
}


def quick(s: PlacementScenario) -> PlacementScenario:
    """The --quick variant: fewer nodes, and a shorter placement run (the
    scope scenario keeps its timeline)."""
    if s.kind == "scope":
        return replace(s, n_nodes=40)
    return replace(s, n_nodes=48, duration_s=600.0, warmup_s=100.0)


@dataclass
class World:
    scenario: PlacementScenario
    alloc: np.ndarray
    ready: np.ndarray
    zone: np.ndarray
    labels: dict
    taints: np.ndarray
    price: np.ndarray
    speed: np.ndarray
    bg_base: np.ndarray  # background CPU, cores
    episodes: list  # per node: [(start, end, extra cores)]
    hb_noise: np.ndarray  # [node, k]
    arr_t: np.ndarray
    jobs: list  # JobSpec per job (zones / prefer_zones from the home zone)
    home: np.ndarray
    zone_required: np.ndarray
    run_s: np.ndarray  # nominal run time
    u_scope: np.ndarray
    u_tail: np.ndarray


def _load_at(profile, frac):
    return np.interp(frac, [p[0] for p in profile], [p[1] for p in profile])


def build_world(sc: PlacementScenario, seed: int) -> World:
    if sc.n_nodes < 8 or sc.duration_s <= sc.warmup_s:
        raise ValueError(
            f"scenario {sc.name!r}: n_nodes = {sc.n_nodes!r} (need >= 8), "
            f"duration_s = {sc.duration_s!r} must exceed warmup_s = {sc.warmup_s!r}"
        )
    ss = np.random.SeedSequence([seed, sum(map(ord, sc.name)), 11])
    rn, rj, rh = (np.random.default_rng(s) for s in ss.spawn(3))
    n, nz = sc.n_nodes, len(sc.zones)
    shares = np.array([s[4] if sc.gpu_nodes or s[3] == 0 else 0.0 for s in SHAPES])
    shape = rn.choice(len(SHAPES), size=n, p=shares / shares.sum())
    present = np.flatnonzero(shares)
    shape[: present.shape[0]] = present  # every shape present
    alloc = np.array([[SHAPES[k][1], SHAPES[k][2], SHAPES[k][3]] for k in shape], float)
    zone = rn.integers(nz, size=n)
    zone[:nz] = np.arange(nz)
    if sc.kind == "scope":
        zone = np.arange(n) % nz  # equal zones: the out-of-zone share reads plainly
    gpu = alloc[:, 2] > 0
    spot = (rn.random(n) < sc.spot_fraction) & ~gpu
    taints = np.where(gpu, GPU_TAINT, 0) | np.where(spot, SPOT_TAINT, 0)
    ready = rn.random(n) >= sc.not_ready_fraction
    labels = {
        "disk": np.where(rn.random(n) < 0.6, 0, 1),
        "arch": np.where(rn.random(n) < 0.85, 0, 1),
        "data": rn.integers(len(LABELS["data"]), size=n),
    }
    price = np.asarray(sc.zone_price, float)[zone] * np.where(spot, 0.4, 1.0)
    speed = np.clip(rn.lognormal(0.0, sc.speed_sd, n), 0.6, 1.6)
    bg_base = rn.uniform(0.02, 0.10, n) * alloc[:, 0]
    episodes: list = [[] for _ in range(n)]
    for j in np.flatnonzero(rn.random(n) < sc.noisy_fraction):
        t = rn.exponential(sc.noisy_off_s)
        while t < sc.duration_s:
            on = rn.exponential(sc.noisy_on_s)
            episodes[j].append((t, t + on, rn.uniform(0.6, 1.0) * alloc[j, 0]))
            t += on + rn.exponential(sc.noisy_off_s)
    hb_noise = rh.normal(0.0, 0.02, size=(n, int(sc.duration_s * 3 / sc.hb_interval_s) + 8))

    # Jobs: shapes first, then the arrival rate that offers the load.
    if sc.kind == "scope":
        kinds = ("service",)
    else:
        kinds = ("batch",)
    cpu_total = alloc[ready, 0].sum()
    peak = max(p[1] for p in sc.load)
    mean_cpu = 1.5 if kinds[0] == "service" else 0.5 * 0.25 + 0.30 + 2 * 0.25 + 4 * 0.15 + 8 * 0.05
    rate_peak = peak * cpu_total / (mean_cpu * sc.mean_run_s)
    m_est = int(rate_peak * sc.duration_s * 1.3) + 100
    t = np.cumsum(rj.exponential(1.0 / rate_peak, size=m_est))
    t = t[t < sc.duration_s]
    keep = rj.random(t.shape[0]) * peak < _load_at(sc.load, t / sc.duration_s)
    arr_t = t[keep]
    m = arr_t.shape[0]
    mu = math.log(sc.mean_run_s) - sc.run_sigma**2 / 2
    run_s = rj.lognormal(mu, sc.run_sigma, m)
    home = rj.integers(nz, size=m)
    u = rj.random((m, 12))
    u_scope = rj.random(m)
    u_tail = rj.random(m)
    jobs = []
    zone_required = np.zeros(m, bool)
    for i in range(m):
        r = u[i]
        h = int(home[i])
        if sc.kind == "scope":
            cpu = 1.0 if r[0] < 0.5 else 2.0
            jobs.append(
                JobSpec(
                    req=np.array([cpu, 2.0 * cpu, 0.0]),
                    tolerations=SPOT_TAINT,
                    zones=(h,),
                    prefer_zones=(h,),
                )
            )
            zone_required[i] = True
            continue
        cpu = float(
            np.searchsorted(np.cumsum([0.25, 0.30, 0.25, 0.15, 0.05]), r[0] * 0.99999, "right")
        )
        cpu = (0.5, 1.0, 2.0, 4.0, 8.0)[int(cpu)]
        mem = cpu * (2.0, 4.0, 8.0)[int(r[1] * 3)]
        gpu = 0.0
        tol = SPOT_TAINT if r[2] < 0.4 else 0
        if r[3] < 0.04:
            gpu = 1.0 if r[4] < 0.6 else 2.0
            cpu, mem = max(cpu, 4.0), max(mem, 32.0)
            tol |= GPU_TAINT
        selector = (("disk", 0),) if r[5] < 0.25 else ()
        affinity = (("arch", "In", (0,)),) if r[6] < 0.15 else ()
        preferred = ((1.0, "disk", "In", (0,)),) if (not selector and r[7] < 0.3) else ()
        required = r[8] < 0.2
        zone_required[i] = required
        data = int(r[9] * len(LABELS["data"])) if r[10] < 0.3 else -1
        group = int(r[11] * 60) if r[11] < 0.5 else -1  # half the jobs in 30 groups
        jobs.append(
            JobSpec(
                req=np.array([cpu, mem, gpu]),
                selector=selector,
                affinity=affinity,
                preferred=preferred,
                tolerations=tol,
                zones=(h,) if required else None,
                prefer_zones=(h,),
                data=data,
                group=group,
                spread=2 if group >= 0 else 0,
            )
        )
    return World(
        sc, alloc, ready, zone, labels, taints, price, speed, bg_base, episodes, hb_noise,
        arr_t, jobs, home, zone_required, run_s, u_scope, u_tail,
    )  # fmt: skip


_ARRIVE, _RETRY, _DONE, _HB, _BG = range(5)
HB_GROUPS = 8


def _spike_factor(sc: PlacementScenario, t: float) -> float:
    if not sc.spike:
        return 1.0
    return float(np.interp(t, [p[0] for p in sc.spike], [p[1] for p in sc.spike]))


def run(world: World, policy: str, rng: np.random.Generator, trace: bool = False) -> dict:
    """Simulate ``world`` placed by ``policy`` (a `PLACEMENT_POLICIES` name,
    or in the scope scenario one of `SCOPE_VARIANTS`); return its metrics.
    ``trace`` adds every placement (job, node, time), every job's end time
    (``end``, NaN if never placed) and, in the scope scenario, every job's
    scope decision at its first attempt (job, time, ratio, wide, every,
    draw, level)."""
    sc = world.scenario
    if sc.kind == "scope":
        if policy not in SCOPE_VARIANTS:
            raise ValueError(
                f"scenario {sc.name!r}: policy {policy!r} is not one of {SCOPE_VARIANTS}"
            )
        chooser = PLACEMENT_POLICIES["ours"](rng)
        scope = ScopePolicy(
            ScopeConfig(neighbours=sc.neighbours, enabled=policy == "escalating"),
            clock=lambda: math.nan,  # every call passes the simulation's time
        )
    else:
        if policy not in PLACEMENT_POLICIES:
            raise ValueError(f"scenario {sc.name!r}: unknown policy {policy!r}")
        chooser = PLACEMENT_POLICIES[policy](rng)
        scope = None
    n = world.alloc.shape[0]
    zone_names = sc.zones
    c = Cluster(
        alloc=world.alloc,
        reserved=np.zeros_like(world.alloc),
        ready=world.ready,
        zone=world.zone,
        labels=world.labels,
        taints=world.taints,
        price=world.price,
        hb_cpu=np.zeros(n),
        hb_reserved_cpu=np.zeros(n),
        group_count={},
    )
    cores = world.alloc[:, 0].tolist()
    speed = world.speed.tolist()
    bg = world.bg_base.tolist()
    run_cpu = [0.0] * n
    virt = [0.0] * n  # work done per job on the node since the start (processor sharing)
    last = [0.0] * n
    rate = [speed[j] * min(1.0, cores[j] / max(bg[j], 1e-12)) for j in range(n)]
    version = [0] * n
    runq: list = [[] for _ in range(n)]  # heap of (virtual finish, job)
    hb_k = [0] * n
    arr_t = world.arr_t.tolist()
    m = len(arr_t)
    start = [math.nan] * m
    end = [math.nan] * m
    node_of = [-1] * m
    attempts = [0] * m
    unsched_reason: dict = {}
    unsched = [False] * m
    max_fill = 0.0
    lo, hi = sc.warmup_s, sc.duration_s
    res_area = np.zeros(len(RESOURCES))
    area_t = 0.0
    cap_ready = world.alloc[world.ready].sum(axis=0)
    placements: list = []
    decisions: list = []
    level_of = [-1] * m
    ratio_at = [math.nan] * m

    heap: list = []
    seq = 0
    # Heartbeats in HB_GROUPS phase groups (node j in group j % HB_GROUPS).
    groups = [list(range(g, n, HB_GROUPS)) for g in range(min(HB_GROUPS, n))]
    hb_noise = world.hb_noise
    for g in range(len(groups)):
        heap.append(((g + 0.5) / len(groups) * sc.hb_interval_s, seq, _HB, g, 0))
        seq += 1
    for j in range(n):
        for s0, s1, extra in world.episodes[j]:
            heap.append((s0, seq, _BG, j, extra))
            heap.append((s1, seq + 1, _BG, j, -extra))
            seq += 2
    heapq.heapify(heap)
    push, pop = heapq.heappush, heapq.heappop

    def accrue(t):
        nonlocal area_t
        a, b = max(area_t, lo), min(t, hi)
        if b > a:
            res_area[:] += c.reserved.sum(axis=0) * (b - a)
        area_t = t

    def settle(j, t):
        virt[j] += rate[j] * (t - last[j])
        last[j] = t

    def rerate(j, t):
        nonlocal seq
        demand = run_cpu[j] + bg[j]
        rate[j] = speed[j] * (min(1.0, cores[j] / demand) if demand > 0 else 1.0)
        version[j] += 1
        q = runq[j]
        if q:
            push(heap, (t + max(q[0][0] - virt[j], 0.0) / rate[j], seq, _DONE, j, version[j]))
            seq += 1

    def attempt(i, t):
        nonlocal seq, max_fill
        job = world.jobs[i]
        home = int(world.home[i])
        if scope is not None:
            lvl = scope.level(zone_names[home], float(world.u_scope[i]), t)
            if attempts[i] == 0:
                s = scope.shares(zone_names[home], t)
                level_of[i] = lvl
                ratio_at[i] = math.nan if s.ratio is None else s.ratio
                if trace:
                    decisions.append((i, t, s.ratio, s.wide, s.every, float(world.u_scope[i]), lvl))
            if lvl == OWN:
                zones = (home,)
            elif lvl == EVERY:
                zones = None
            else:
                names = scope.zones(zone_names[home], lvl)
                zones = tuple(zone_names.index(z) for z in names)
            if lvl == OWN:
                job = replace(job, zones=zones)
            else:  # widened: prefer the other zones of the scope, keep home as a fallback
                scope_zones = zones if zones is not None else range(len(zone_names))
                job = replace(
                    job, zones=zones, prefer_zones=tuple(z for z in scope_zones if z != home)
                )
        attempts[i] += 1
        mask = filter_nodes(c, job)
        idx = np.flatnonzero(mask)
        if idx.shape[0] == 0:
            return False
        j = chooser.choose(c, job, idx)
        accrue(t)
        c.reserved[j] += job.req
        fill = float(np.max(c.reserved[j] / np.where(c.alloc[j] > 0, c.alloc[j], np.inf)))
        if fill > max_fill:
            max_fill = fill
        if job.group >= 0:
            gc = c.group_count.get(job.group)
            if gc is None:
                gc = c.group_count[job.group] = np.zeros(n, np.int64)
            gc[j] += 1
        settle(j, t)
        run_s = float(world.run_s[i])
        if scope is not None and int(world.zone[j]) == sc.spike_zone:
            if world.u_tail[i] < sc.spike_share:
                run_s *= _spike_factor(sc, t)
        heapq.heappush(runq[j], (virt[j] + run_s, i))
        run_cpu[j] += float(job.req[0])
        rerate(j, t)
        start[i] = t
        node_of[i] = j
        if trace:
            placements.append((i, j, t))
        return True

    def give_up(i):
        job = world.jobs[i]
        counts: dict = {}
        filter_nodes(c, job, counts)
        # the filter that removed the last candidates
        left = n
        for name in FILTERS:
            left -= counts[name]
            if left == 0:
                unsched_reason[name] = unsched_reason.get(name, 0) + 1
                break
        unsched[i] = True

    i_next = 0
    next_arr = arr_t[0] if m else math.inf
    while heap or next_arr < math.inf:
        if heap and heap[0][0] < next_arr:
            t, _s, kind, j, x = pop(heap)
        else:
            t, kind, j, x = next_arr, _ARRIVE, i_next, 0
            i_next += 1
            next_arr = arr_t[i_next] if i_next < m else math.inf
        if kind == _ARRIVE or kind == _RETRY:
            i = j
            if not attempt(i, t):
                wait = min(2.0 ** (attempts[i] - 1), sc.retry_max_s)
                if t + wait - arr_t[i] > sc.max_pending_s:
                    give_up(i)
                else:
                    push(heap, (t + wait, seq, _RETRY, i, 0))
                    seq += 1
        elif kind == _DONE:
            if x != version[j]:
                continue
            settle(j, t)
            q = runq[j]
            accrue(t)
            while q and q[0][0] <= virt[j] + 1e-9:
                _vf, i = heapq.heappop(q)
                job = world.jobs[i]
                c.reserved[j] -= job.req
                run_cpu[j] -= float(job.req[0])
                if job.group >= 0:
                    c.group_count[job.group][j] -= 1
                end[i] = t
                if scope is not None:
                    scope.observe(zone_names[int(world.zone[j])], t - start[i], t)
            if not q:
                run_cpu[j] = 0.0  # no drift of the float sum once idle
            rerate(j, t)
        elif kind == _HB:
            k = hb_k[j]
            hb_k[j] = k + 1
            grp = groups[j]
            use = np.array([(run_cpu[x] + bg[x]) / cores[x] for x in grp])
            use += hb_noise[grp, k % hb_noise.shape[1]]
            c.hb_cpu[grp] = np.clip(use, 0.0, 1.0)
            c.hb_reserved_cpu[grp] = c.reserved[grp, 0]
            if t < hi + sc.max_pending_s:  # no placement after the last retry
                push(heap, (t + sc.hb_interval_s, seq, _HB, j, 0))
                seq += 1
        elif kind == _BG:
            settle(j, t)
            bg[j] += x
            rerate(j, t)
    reserved_left = float(np.abs(c.reserved).max())
    util = np.divide(
        res_area, cap_ready * (hi - lo), out=np.zeros(len(RESOURCES)), where=cap_ready > 0
    )
    out = _metrics(world, start, end, node_of, unsched, unsched_reason, util)
    out["max_fill"] = max_fill
    out["reserved_left"] = reserved_left
    if scope is not None:
        out["bins"] = _scope_bins(world, start, end, node_of, level_of, ratio_at)
        a0, a1 = sc.spike_window
        mine = (world.home == sc.spike_zone) & (world.arr_t >= a0) & (world.arr_t < a1)
        lat = (np.asarray(end) - world.arr_t)[mine]
        out["spike_zone_p99_s"] = _pct(lat[np.isfinite(lat)], 99)
    if trace:
        out["placements"] = placements
        out["end"] = end
        out["decisions"] = decisions
    return out


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else math.nan


def _metrics(world, start, end, node_of, unsched, reasons, util) -> dict:
    """Over the jobs arriving in [warmup, duration): latency = completion -
    arrival; stretch = latency / the job's run time alone on its node
    (nominal / speed); contention = run time on the node / that (1 = the
    node's cores were never oversubscribed while it ran)."""
    sc = world.scenario
    arr = world.arr_t
    meas = (arr >= sc.warmup_s) & (arr < sc.duration_s)
    st, en = np.asarray(start), np.asarray(end)
    done = meas & np.isfinite(en)
    alone = (world.run_s / world.speed[np.maximum(np.asarray(node_of), 0)])[done]
    lat = (en - arr)[done]
    pend = (st - arr)[done]
    stretch = lat / alone
    contention = (en - st)[done] / alone
    nodes = np.asarray(node_of)[done]
    jobs = [world.jobs[i] for i in np.flatnonzero(done)]
    free_zone = ~world.zone_required[done]
    at_home = world.zone[nodes] == world.home[done]
    data = np.array([jb.data for jb in jobs], int)
    has_data = data >= 0
    data_hit = world.labels["data"][nodes] == data
    cpu = np.array([jb.req[0] for jb in jobs])
    price = world.price[nodes]
    return {
        "jobs": int(meas.sum()),
        "placed": int(done.sum()),
        "unschedulable": int(np.asarray(unsched)[meas].sum()),
        "unschedulable_by": dict(sorted(reasons.items())),
        "p50_s": _pct(lat, 50),
        "p99_s": _pct(lat, 99),
        "p999_s": _pct(lat, 99.9),
        "pending_p99_s": _pct(pend, 99),
        "pending_mean_s": float(pend.mean()) if pend.size else math.nan,
        # what the locality and cost parts buy: jobs free to leave their zone
        # that stayed, jobs bound to a data set placed on it, price per core
        "zone_local_pct": float(100 * at_home[free_zone].mean()) if free_zone.any() else math.nan,
        "data_local_pct": float(100 * data_hit[has_data].mean()) if has_data.any() else math.nan,
        "price_per_core": float((price * cpu).sum() / cpu.sum()) if cpu.size else math.nan,
        "stretch_p99": _pct(stretch, 99),
        "contention_p99": _pct(contention, 99),
        "util_cpu_pct": float(100 * util[0]),
        "util_mem_pct": float(100 * util[1]),
        "util_gpu_pct": float(100 * util[2]),
    }


def _scope_bins(world, start, end, node_of, level_of, ratio_at) -> list:
    """Per ``bin_s`` of arrival time, over the jobs of the spiking zone: the
    spike factor at the bin's middle, the mean ratio the rule saw, the shares
    of jobs the rule widened (neighbours or more / every zone) and of jobs
    placed outside their zone, and their p99 latency."""
    sc = world.scenario
    arr = world.arr_t
    mine = world.home == sc.spike_zone
    lv = np.asarray(level_of)
    ra = np.asarray(ratio_at)
    nodes = np.asarray(node_of)
    placed = nodes >= 0
    out_zone = placed & (world.zone[np.where(placed, nodes, 0)] != world.home)
    lat = np.asarray(end) - arr
    rows = []
    t0 = 0.0
    while t0 < sc.duration_s - 1e-9:
        t1 = min(t0 + sc.bin_s, sc.duration_s)
        sel = mine & (arr >= t0) & (arr < t1)
        k = int(sel.sum())
        seen = ra[sel]
        seen = seen[np.isfinite(seen)]
        done = sel & np.isfinite(lat)
        rows.append(
            {
                "t0": t0,
                "t1": t1,
                "factor": _spike_factor(sc, 0.5 * (t0 + t1)),
                "jobs": k,
                "ratio": float(seen.mean()) if seen.size else math.nan,
                "widened": float((lv[sel] >= 1).mean()) if k else math.nan,
                "every": float((lv[sel] == EVERY).mean()) if k else math.nan,
                "out_of_zone": float(out_zone[sel].mean()) if k else math.nan,
                "p99_s": _pct(lat[done], 99),
            }
        )
        t0 = t1
    return rows


# ------------------------------------------------------------ many seeds --
#: Metrics aggregated over seeds (median, and every seed's value).
SCALARS = (
    "jobs",
    "placed",
    "unschedulable",
    "p50_s",
    "p99_s",
    "p999_s",
    "pending_mean_s",
    "pending_p99_s",
    "stretch_p99",
    "contention_p99",
    "zone_local_pct",
    "data_local_pct",
    "price_per_core",
    "util_cpu_pct",
    "util_mem_pct",
    "util_gpu_pct",
    "max_fill",
    "reserved_left",
)
_BIN_KEYS = ("ratio", "widened", "every", "out_of_zone", "p99_s")


def _scenario(name: str, is_quick: bool) -> PlacementScenario:
    sc = PLACEMENT_SCENARIOS[name]
    return quick(sc) if is_quick else sc


def policies_of(sc: PlacementScenario, wanted=None) -> list:
    """The policies a scenario runs: ``wanted`` among its own, all by default."""
    own = list(SCOPE_VARIANTS) if sc.kind == "scope" else list(PLACEMENT_POLICIES)
    return [p for p in own if wanted is None or p in wanted]


def _run_one(task):
    name, is_quick, seed, policy = task
    w = build_world(_scenario(name, is_quick), seed)
    rng = np.random.default_rng([seed, sum(map(ord, name)), 13])  # same for every policy
    return name, seed, policy, run(w, policy, rng)


def _median(xs):
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(np.asarray(xs, float))) if xs else math.nan


def simulate_placement(names, seeds, is_quick=False, workers=1, wanted=None) -> dict:
    """Every (scenario, seed, policy) of ``names``; per scenario and policy the
    median of each metric over seeds and every seed's value (``by_seed``);
    for the scope scenario, its table of time bins the same way."""
    seeds = [int(s) for s in seeds]
    tasks = [
        (name, is_quick, seed, pol)
        for name in names
        for seed in seeds
        for pol in policies_of(_scenario(name, is_quick), wanted)
    ]
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            done = list(pool.imap_unordered(_run_one, tasks, chunksize=1))
    else:
        done = [_run_one(t) for t in tasks]
    runs = {(name, seed, pol): m for name, seed, pol, m in done}
    out = {}
    for name in names:
        sc = _scenario(name, is_quick)
        pols = policies_of(sc, wanted)
        entry: dict = {
            "kind": sc.kind,
            "description": sc.description,
            "nodes": sc.n_nodes,
            "duration_s": sc.duration_s,
            "warmup_s": sc.warmup_s,
            "policies": {},
        }
        for pol in pols:
            ms = [runs[(name, s, pol)] for s in seeds]
            keys = SCALARS + (("spike_zone_p99_s",) if sc.kind == "scope" else ())
            agg: dict = {k: _median([m[k] for m in ms]) for k in keys}
            for k in ("jobs", "placed", "unschedulable"):
                agg[k] = int(round(agg[k]))
            agg["by_seed"] = {k: [m[k] for m in ms] for k in keys}
            reasons: dict = {}
            for m in ms:
                for r, v in m["unschedulable_by"].items():
                    reasons[r] = reasons.get(r, 0) + v
            agg["unschedulable_by_all_seeds"] = dict(sorted(reasons.items()))
            if sc.kind == "scope":
                rows = []
                for b, row in enumerate(ms[0]["bins"]):
                    r = {k: row[k] for k in ("t0", "t1", "factor")}
                    r["jobs"] = int(_median([m["bins"][b]["jobs"] for m in ms]))
                    for k in _BIN_KEYS:
                        vals = [m["bins"][b][k] for m in ms]
                        r[k] = _median(vals)
                        r[k + "_by_seed"] = vals
                    rows.append(r)
                agg["bins"] = rows
            entry["policies"][pol] = agg
        entry["jobs"] = entry["policies"][pols[0]]["jobs"] if pols else 0
        out[name] = entry
    return out
