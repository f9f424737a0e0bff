"""Step 3 of SCORING.md: the goodness of each metric, each in [0, 1].

Every function maps a metric to [0, 1], 1 being best, for inputs in their
documented ranges (the ingest layer rejects anything else).  `g_tput` needs T,
the largest throughput among *live* nodes that report one, so the pipeline
calls it only after liveness (step 4) has been computed for every node; a
non-live node may then see a value above 1, which never matters because its
raw score is 0.

Parameter preconditions (checked by the configuration, not here):
max_cpu > 0, max_mem > 0, max_wait_s > 0, max_tail_ratio > 1.
"""

from numba import njit


@njit(cache=True, error_model="numpy")
def g_cpu(cpu, max_cpu):
    """`1 - min(cpu / max_cpu, 1)`; 0 once cpu >= max_cpu."""
    return 1.0 - min(cpu / max_cpu, 1.0)


@njit(cache=True, error_model="numpy")
def g_mem(mem, max_mem):
    """`1 - min(mem / max_mem, 1)`; 0 once mem >= max_mem."""
    return 1.0 - min(mem / max_mem, 1.0)


@njit(cache=True, error_model="numpy")
def g_io(io):
    """`1 - io` for io in [0, 1]."""
    return 1.0 - io


@njit(cache=True, error_model="numpy")
def g_wait(wait, max_wait_s):
    """`1 - min(wait / max_wait_s, 1)`; 0 once wait >= max_wait_s (also for inf)."""
    return 1.0 - min(wait / max_wait_s, 1.0)


@njit(cache=True, error_model="numpy")
def g_tput(throughput, t_max):
    """`throughput / T`, and 1 when T = 0 (no live node completes anything)."""
    if t_max == 0.0:
        return 1.0
    return throughput / t_max


@njit(cache=True, error_model="numpy")
def g_succ(ok, err):
    """Laplace-smoothed success rate `(ok + 1) / (ok + err + 2)`; 0.5 with no jobs."""
    return (ok + 1.0) / (ok + err + 2.0)


@njit(cache=True, error_model="numpy")
def g_tail(p50_ms, p95_ms, max_tail_ratio):
    """`1 - min(max(p95/p50 - 1, 0) / (max_tail_ratio - 1), 1)`: 1 for a flat
    latency distribution, 0 once p95 >= max_tail_ratio * p50."""
    ratio = p95_ms / p50_ms
    return 1.0 - min(max(ratio - 1.0, 0.0) / (max_tail_ratio - 1.0), 1.0)
