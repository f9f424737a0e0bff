"""Step 3 of SCORING.md: the goodness of each metric, each in [0, 1].

Every function maps a metric to [0, 1], 1 being best, for inputs in their
documented ranges (the ingest layer rejects anything else).  `g_rate` needs
R (`kernels.percentile`), a reduction over the *live* nodes, so the pipeline
calls it only after liveness (step 4) has been computed for every node.
`g_succ` reads the error window of step 2 (`kernels.window`), not the
latest heartbeat.

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
def rate(slots, avg_job_s):
    """Jobs per second the node can complete when busy, `slots / avg_job_s`;
    only defined (and only scored) when avg_job_s > 0."""
    return slots / avg_job_s


@njit(cache=True, error_model="numpy")
def g_rate(rate, R):
    """`min(rate / R, 1)`, and 1 when there is no reference (R = 0, i.e. no
    live node with avg_job_s > 0).  Written as a comparison first: for
    positive finite values it is the same number (rate >= R exactly when
    rate / R >= 1), and it stays defined for an infinite rate."""
    if rate >= R:
        return 1.0
    return rate / R


@njit(cache=True, error_model="numpy")
def g_succ(e_ok, e_err):
    """`(e_ok + 1) / (e_ok + e_err + 1)` over the error window: 1 until
    errors are seen, so a node with no jobs is not judged worse than a busy
    one."""
    return (e_ok + 1.0) / (e_ok + e_err + 1.0)


@njit(cache=True, error_model="numpy")
def g_tail(p50_ms, p95_ms, max_tail_ratio):
    """`1 - min(max(p95/p50 - 1, 0) / (max_tail_ratio - 1), 1)`: 1 for a flat
    latency distribution, 0 once p95 >= max_tail_ratio * p50."""
    ratio = p95_ms / p50_ms
    return 1.0 - min(max(ratio - 1.0, 0.0) / (max_tail_ratio - 1.0), 1.0)
