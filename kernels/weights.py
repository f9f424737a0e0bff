"""Step 6 of SCORING.md: the weights in effect and the core score.

The base weights shift toward wait and throughput under global pressure P:
`w_wait = weights.wait + k1*P`, `w_throughput = weights.throughput + k2*P`.
`core = sum(w_m * g_m) / sum(w_m)` over the metrics the node reports (cpu, mem
and wait always), both sums in the order cpu, mem, io, wait, throughput,
success, tail.  With non-negative weights whose always-present part is > 0
and every g in [0, 1], core is in [0, 1].
"""

from numba import njit

from kernels.params import (HAS_IO, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT, K1, K2,
                            W_CPU, W_IO, W_MEM, W_SUCCESS, W_TAIL, W_THROUGHPUT,
                            W_WAIT)


@njit(cache=True, error_model="numpy")
def weights_in_effect(params, P, w_out):
    """Write the 7 weights in effect (order params.WEIGHT_NAMES) into `w_out`."""
    w_out[0] = params[W_CPU]
    w_out[1] = params[W_MEM]
    w_out[2] = params[W_IO]
    w_out[3] = params[W_WAIT] + params[K1] * P
    w_out[4] = params[W_THROUGHPUT] + params[K2] * P
    w_out[5] = params[W_SUCCESS]
    w_out[6] = params[W_TAIL]


@njit(cache=True, error_model="numpy")
def core(w, reported, gcpu, gmem, gio, gwait, gtput, gsucc, gtail):
    """Weighted mean of the reported goodness values; `w` as written by
    `weights_in_effect`, `reported` the HAS_* bitmask.  Unreported metrics'
    goodness arguments are ignored."""
    return core_w(w[0], w[1], w[2], w[3], w[4], w[5], w[6], reported,
                  gcpu, gmem, gio, gwait, gtput, gsucc, gtail)


@njit(cache=True, error_model="numpy")
def core_w(w_cpu, w_mem, w_io, w_wait, w_tput, w_succ, w_tail, reported,
           gcpu, gmem, gio, gwait, gtput, gsucc, gtail):
    """`core` with the weights as scalars: what the per-node loop calls, so
    that no array crosses a call inside the loop (numba would incref and
    decref it on every node)."""
    num = w_cpu * gcpu
    den = w_cpu
    num += w_mem * gmem
    den += w_mem
    if reported & HAS_IO:
        num += w_io * gio
        den += w_io
    num += w_wait * gwait
    den += w_wait
    if reported & HAS_THROUGHPUT:
        num += w_tput * gtput
        den += w_tput
    if reported & HAS_OKERR:
        num += w_succ * gsucc
        den += w_succ
    if reported & HAS_TAIL:
        num += w_tail * gtail
        den += w_tail
    return num / den
