"""Step 8 of SCORING.md: the circuit breaker.

A node is tripped when it is saturated (load >= max_queue, wait >= max_wait_s,
cpu >= max_cpu, mem >= max_mem), when its error window (step 2) holds at
least `min_requests` outcomes of which a fraction >= `max_error_rate` are
errors, or when it is ejected: at least `max_consecutive_errors` error
releases since its latest ok release, the latest less than `ejection_s` ago.
A tripped node publishes 0 in the same tick (steps 9, 10 and 13), so a node
that fails fast can never look attractive; an ejected node is tried again
`ejection_s` after its latest error (err_age is +inf when there was none).

The error-rate test needs e_ok + e_err > 0: with `min_requests` = 0 and an
empty window the rate is undefined and does not trip.

`trip_reason` says which test tripped (`kernels.reasons`: CPU, MEM, QUEUE,
WAIT, ERROR_RATE, EJECTION; NONE when closed), checking them in the order
cpu, mem, queue, wait, error rate, ejection; `tripped` is `trip_reason != NONE`.
"""

from numba import njit

from kernels.reasons import CPU, EJECTION, ERROR_RATE, MEM, NONE, QUEUE, WAIT


@njit(cache=True, error_model="numpy")
def error_rate_tripped(e_ok, e_err, min_requests, max_error_rate):
    """The window holds enough outcomes and too many of them are errors."""
    total = e_ok + e_err
    return total > 0.0 and total >= min_requests and e_err / total >= max_error_rate


@njit(cache=True, error_model="numpy")
def ejected(consec, err_age, max_consecutive_errors, ejection_s):
    """A run of errors, the latest one recent."""
    return consec >= max_consecutive_errors and err_age < ejection_s


@njit(cache=True, error_model="numpy")
def trip_reason(
    load,
    wait,
    cpu,
    mem,
    e_ok,
    e_err,
    consec,
    err_age,
    max_queue,
    max_wait_s,
    max_cpu,
    max_mem,
    min_requests,
    max_error_rate,
    max_consecutive_errors,
    ejection_s,
):
    """Which test opens the breaker for this node this tick (NONE: closed)."""
    if cpu >= max_cpu:
        return CPU
    if mem >= max_mem:
        return MEM
    if load >= max_queue:
        return QUEUE
    if wait >= max_wait_s:
        return WAIT
    if error_rate_tripped(e_ok, e_err, min_requests, max_error_rate):
        return ERROR_RATE
    if ejected(consec, err_age, max_consecutive_errors, ejection_s):
        return EJECTION
    return NONE


@njit(cache=True, error_model="numpy")
def tripped(
    load,
    wait,
    cpu,
    mem,
    e_ok,
    e_err,
    consec,
    err_age,
    max_queue,
    max_wait_s,
    max_cpu,
    max_mem,
    min_requests,
    max_error_rate,
    max_consecutive_errors,
    ejection_s,
):
    """True when the breaker is open for this node this tick."""
    return (
        trip_reason(
            load,
            wait,
            cpu,
            mem,
            e_ok,
            e_err,
            consec,
            err_age,
            max_queue,
            max_wait_s,
            max_cpu,
            max_mem,
            min_requests,
            max_error_rate,
            max_consecutive_errors,
            ejection_s,
        )
        != NONE
    )
