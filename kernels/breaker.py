"""Step 8 of SCORING.md: the circuit breaker.

A node is tripped when it is saturated (qema >= max_queue, wait >= max_wait_s,
cpu >= max_cpu, mem >= max_mem) or when its latest heartbeat reports at least
`min_requests` jobs with an error rate >= `max_error_rate`.  A tripped node
publishes 0 in the same tick (steps 9, 10 and 13), so a node that fails fast
can never look attractive.

The error-rate test needs ok + err > 0: with `min_requests` = 0 and no jobs
the rate is undefined and does not trip (0/0 is never >= anything).
"""

from numba import njit

from kernels.params import HAS_OKERR


@njit(cache=True, error_model="numpy")
def tripped(qema, wait, cpu, mem, reported, ok, err,
            max_queue, max_wait_s, max_cpu, max_mem, min_requests, max_error_rate):
    """True when the breaker is open for this node this tick."""
    if qema >= max_queue or wait >= max_wait_s or cpu >= max_cpu or mem >= max_mem:
        return True
    if reported & HAS_OKERR:
        total = ok + err
        if total > 0.0 and total >= min_requests and err / total >= max_error_rate:
            return True
    return False
