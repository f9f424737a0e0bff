"""Named scenario presets and the seeded world each one builds.

A `Scenario` is a frozen description (cluster shape, job mix, arrival
profile, faults).  `build_world(scenario, seed)` turns it into a `World`: every
random quantity the run needs, drawn up front from generators seeded by
(seed, scenario), so that every policy of a scenario meets exactly the same
nodes, jobs, service noise, failures, deaths and heartbeat noise (common
random numbers: policy differences are not sampling noise).

Model (docs/routing.md has the rationale):
  * node j: ``slots[j]`` workers, FIFO; an attempt of a job of size x takes
    ``x / speed[j] * exp(sigma[j]*z - sigma[j]**2/2)`` seconds (z per job and
    attempt).  ``node_slots``, ``speed_sd`` and ``noise_sigma`` shape the
    cluster; (c,), 0 and (0, 0) give identical exponential servers (the
    M/M/c and supermarket checks in the tests).
  * sizes: Lomax (Pareto II, alpha 2.2, heavy-tailed) with mean
    ``mean_size``, bimodal (tiny / huge) for ``job_skew``, or exponential.
  * arrivals: Poisson with rate ``load(t) * capacity``, capacity =
    sum(slots * speed) / mean_size; ``load(t)`` piecewise linear.  Each job
    belongs to one of ``schedulers`` independent schedulers (uniformly).
  * faults: GC nodes (high CPU, fast), flapping nodes (CPU around max_cpu),
    fail-fast nodes (fail most jobs in milliseconds), churn (down / up times).
  * retries: a failed or lost attempt is retried on another node, up to
    ``max_retries`` times; each attempt has its own noise and failure draw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Scenario", "World", "SCENARIOS", "build_world", "quick"]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    n_nodes: int = 24
    duration_s: float = 400.0  # arrivals stop here; in-flight jobs drain
    warmup_s: float = 40.0  # jobs arriving earlier are not measured
    load: tuple = ((0.0, 0.70), (1.0, 0.70))  # (fraction of duration, load) breakpoints
    sizes: str = "lomax"  # "lomax" | "bimodal" | "exp"
    mean_size: float = 1.0  # seconds of work at speed 1
    gc_fraction: float = 0.0  # nodes with GC CPU that serve fast
    flap_fraction: float = 0.0  # nodes whose CPU hovers around max_cpu
    fail_fraction: float = 0.0  # nodes that fail most jobs quickly
    fail_prob: float = 0.9
    fail_time_s: float = 0.005
    churn_fraction: float = 0.0  # nodes that die and come back
    churn_up_s: float = 60.0  # mean up time (exponential)
    churn_down_s: float = 20.0  # mean down time (exponential)
    hb_interval_s: float = 1.0
    hb_delay_s: tuple = (0.002, 0.050)
    tick_s: float = 0.050
    queue_limit_per_slot: float = 2.0  # "over the queue limit": waiting > this * slots
    schedulers: int = 4  # independent schedulers, each routing its share of the jobs
    max_retries: int = 2  # retries of a failed or lost job, on another node
    connect_timeout_s: float = 1.0  # an attempt sent to a dead node fails after this
    loss_detect_s: float = 1.0  # a scheduler learns that a node died with its attempt after this
    hb_reports_okerr: bool = True  # heartbeats carry the node's own ok / err counts
    node_slots: tuple = (2, 4, 4, 8)  # workers per node, drawn uniformly from this tuple
    speed_sd: float = 0.45  # node speed: lognormal(0, speed_sd) clipped to [0.3, 3]
    noise_sigma: tuple = (0.1, 0.8)  # per-node service-noise sigma, uniform in this range


_SPIKE = ((0.0, 0.70), (0.30, 0.70), (0.40, 1.10), (0.60, 1.10), (0.70, 0.70), (1.0, 0.70))

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("baseline", "heterogeneous nodes, heavy-tailed jobs, 70% load, no faults"),
        Scenario(
            "gc_heavy",
            "a third of the nodes are fast but report high CPU from GC",
            gc_fraction=1 / 3,
        ),
        Scenario(
            "job_skew",
            "bimodal jobs: 1% huge (40x the mean, 40% of the work), 99% small",
            sizes="bimodal",
        ),
        Scenario(
            "threshold_flap",
            "a quarter of the nodes hover around the CPU limit",
            flap_fraction=0.25,
        ),
        Scenario(
            "churn",
            "a quarter of the nodes die (mean up 60 s, down 20 s); "
            "jobs on or sent to a dead node are lost",
            churn_fraction=0.25,
        ),
        Scenario(
            "fail_fast",
            "an eighth of the nodes fail 90% of jobs in 5 ms and look idle",
            fail_fraction=0.125,
        ),
        Scenario("spike", "load 70% -> 110% -> 70% of capacity", load=_SPIKE),
        Scenario(
            "mixed",
            "all of the above at once",
            gc_fraction=1 / 6,
            flap_fraction=1 / 8,
            fail_fraction=1 / 12,
            churn_fraction=1 / 6,
            sizes="bimodal",
            load=_SPIKE,
        ),
    )
}


def quick(s: Scenario) -> Scenario:
    """The --quick variant: a smaller cluster for a shorter time."""
    return replace(s, n_nodes=16, duration_s=90.0, warmup_s=15.0)


@dataclass
class World:
    """Everything random about one scenario run, drawn before any policy acts."""

    scenario: Scenario
    # nodes (index = node = engine slot)
    slots: list
    speed: np.ndarray
    sigma: list
    cpu_base: np.ndarray
    cpu_per_busy: np.ndarray
    gc: np.ndarray  # bool
    flap: np.ndarray  # bool
    fail_prob: list
    mem_base: np.ndarray
    hb_phase: np.ndarray
    hb_noise: np.ndarray  # [node, k, 3]: cpu noise, mem noise, delivery delay
    downtimes: list  # per node: list of (die_t, revive_t)
    capacity: float  # jobs/s at load 1
    # jobs
    arr_t: np.ndarray
    size: np.ndarray
    z: np.ndarray  # [job, attempt]: service-noise normal
    u_fail: np.ndarray  # [job, attempt]: uniform, the attempt fails if < fail_prob
    sched: np.ndarray  # the scheduler of each job


def _load_at(profile, frac):
    xs = [p[0] for p in profile]
    ys = [p[1] for p in profile]
    return np.interp(frac, xs, ys)


def build_world(sc: Scenario, seed: int) -> World:
    if sc.schedulers < 1 or sc.max_retries < 0 or sc.n_nodes < 1:
        raise ValueError(
            f"scenario {sc.name!r}: schedulers = {sc.schedulers!r}, "
            f"max_retries = {sc.max_retries!r}, n_nodes = {sc.n_nodes!r} "
            "(need >= 1, >= 0, >= 1)"
        )
    ss = np.random.SeedSequence([seed, sum(map(ord, sc.name))])
    r_nodes, r_jobs, r_hb, r_churn = (np.random.default_rng(s) for s in ss.spawn(4))
    n = sc.n_nodes

    slots = r_nodes.choice(np.asarray(sc.node_slots, np.int64), size=n)
    speed = (
        np.clip(r_nodes.lognormal(0.0, sc.speed_sd, size=n), 0.3, 3.0)
        if sc.speed_sd > 0
        else np.ones(n)
    )
    sigma = r_nodes.uniform(*sc.noise_sigma, size=n)
    cpu_base = r_nodes.uniform(0.02, 0.10, size=n)
    cpu_per_busy = r_nodes.uniform(0.75, 0.85, size=n)
    mem_base = r_nodes.uniform(0.20, 0.55, size=n)
    perm = r_nodes.permutation(n)
    k_gc = int(round(sc.gc_fraction * n))
    k_flap = int(round(sc.flap_fraction * n))
    k_fail = int(round(sc.fail_fraction * n))
    k_churn = int(round(sc.churn_fraction * n))
    gc = np.zeros(n, bool)
    flap = np.zeros(n, bool)
    fail = np.zeros(n, bool)
    gc[perm[:k_gc]] = True
    flap[perm[k_gc : k_gc + k_flap]] = True
    fail[perm[k_gc + k_flap : k_gc + k_flap + k_fail]] = True
    churners = r_churn.permutation(n)[:k_churn]  # may overlap other faults (as in life)
    # GC nodes: the fastest hardware, but GC keeps CPU at 55-75% even idle.
    speed[gc] = np.maximum(speed[gc], 1.6)
    slots[gc] = np.maximum(slots[gc], 4)
    cpu_base[gc] = r_nodes.uniform(0.55, 0.75, size=k_gc)
    cpu_per_busy[gc] = 0.20
    # Flapping nodes: a co-tenant keeps CPU near the 0.98 limit; jobs run at 0.8x.
    cpu_base[flap] = 0.90
    cpu_per_busy[flap] = 0.07
    speed[flap] *= 0.8
    fail_prob = np.where(fail, sc.fail_prob, 0.0)

    hb_phase = r_hb.uniform(0.0, sc.hb_interval_s, size=n)
    n_hb = int(sc.duration_s / sc.hb_interval_s) + 3
    hb_noise = np.empty((n, n_hb, 3))
    hb_noise[:, :, 0] = r_hb.normal(0.0, 0.02, size=(n, n_hb))
    hb_noise[:, :, 1] = r_hb.normal(0.0, 0.01, size=(n, n_hb))
    hb_noise[:, :, 2] = r_hb.uniform(*sc.hb_delay_s, size=(n, n_hb))
    hb_noise[flap, :, 0] = r_hb.normal(0.0, 0.035, size=(k_flap, n_hb))

    downtimes = [[] for _ in range(n)]
    for j in churners:
        t = r_churn.exponential(sc.churn_up_s)
        while t < sc.duration_s:
            down = r_churn.exponential(sc.churn_down_s)
            downtimes[j].append((t, t + down))
            t += down + r_churn.exponential(sc.churn_up_s)

    capacity = float(np.sum(slots * speed) / sc.mean_size)
    # Non-homogeneous Poisson arrivals by thinning at the peak rate.
    peak = max(p[1] for p in sc.load) * capacity
    m = int(peak * sc.duration_s * 1.2) + 100
    t = np.cumsum(r_jobs.exponential(1.0 / peak, size=m))
    t = t[t < sc.duration_s]
    keep = r_jobs.random(t.shape[0]) * peak < _load_at(sc.load, t / sc.duration_s) * capacity
    arr_t = t[keep]
    nj = arr_t.shape[0]
    if sc.sizes == "bimodal":
        # 1% huge jobs of mean 40x, the rest ~0.6x: two huge jobs hold more
        # work than a hundred tiny ones; huge jobs are 40% of the work.
        huge = r_jobs.random(nj) < 0.01
        huge_mean = 40.0 * sc.mean_size
        tiny_mean = (1.0 - 0.01 * 40.0) / 0.99 * sc.mean_size
        size = np.where(huge, r_jobs.exponential(huge_mean, nj), r_jobs.exponential(tiny_mean, nj))
    elif sc.sizes == "exp":
        size = r_jobs.exponential(sc.mean_size, nj)
    elif sc.sizes == "lomax":
        alpha = 2.2
        size = r_jobs.pareto(alpha, nj) * (alpha - 1) * sc.mean_size
    else:
        raise ValueError(f"scenario {sc.name!r}: sizes = {sc.sizes!r} is not lomax, bimodal or exp")
    attempts = sc.max_retries + 1
    z = r_jobs.standard_normal((nj, attempts))
    u_fail = r_jobs.random((nj, attempts))
    sched = r_jobs.integers(sc.schedulers, size=nj)
    return World(
        sc,
        [int(x) for x in slots],
        speed,
        [float(x) for x in sigma],
        cpu_base,
        cpu_per_busy,
        gc,
        flap,
        [float(x) for x in fail_prob],
        mem_base,
        hb_phase,
        hb_noise,
        downtimes,
        capacity,
        arr_t,
        size,
        z,
        u_fail,
        sched,
    )
