"""Step 6 of SCORING.md: the weights in effect and the core score.

Under pressure the base weights shift toward wait and rate:
`w_wait = weights.wait + k1*P_i`, `w_rate = weights.rate + k2*P_i`, where
node i uses P_i, the pressure of the rest of the cluster (`kernels.pressure`);
the engine publishes the weights at the global P.
`core = sum(w_m * g_m) / sum(w_m)` over the metrics node i has: cpu, mem,
wait and success always, io and tail when reported, rate when avg_job_s > 0;
both sums in the order cpu, mem, io, wait, rate, success, tail.  With
non-negative weights whose always-present part is > 0 and every g in [0, 1],
core is in [0, 1].
"""

from numba import njit

from kernels.params import (
    HAS_IO,
    HAS_TAIL,
    K1,
    K2,
    W_CPU,
    W_IO,
    W_MEM,
    W_RATE,
    W_SUCCESS,
    W_TAIL,
    W_WAIT,
)


@njit(cache=True, error_model="numpy")
def shifted(base, k, pressure):
    """A pressure-shifted weight: `base + k * pressure`."""
    return base + k * pressure


@njit(cache=True, error_model="numpy")
def weights_in_effect(params, P, w_out):
    """Write the 7 weights at pressure P (order params.WEIGHT_NAMES) into `w_out`."""
    w_out[0] = params[W_CPU]
    w_out[1] = params[W_MEM]
    w_out[2] = params[W_IO]
    w_out[3] = shifted(params[W_WAIT], params[K1], P)
    w_out[4] = shifted(params[W_RATE], params[K2], P)
    w_out[5] = params[W_SUCCESS]
    w_out[6] = params[W_TAIL]


@njit(cache=True, error_model="numpy")
def core(w, reported, has_rate, gcpu, gmem, gio, gwait, grate, gsucc, gtail):
    """Weighted mean of the goodness values node i has; `w` as written by
    `weights_in_effect`, `reported` the HAS_* bitmask, `has_rate` whether
    avg_job_s > 0.  The goodness of a metric the node lacks is ignored."""
    return core_w(
        w[0],
        w[1],
        w[2],
        w[3],
        w[4],
        w[5],
        w[6],
        reported,
        has_rate,
        gcpu,
        gmem,
        gio,
        gwait,
        grate,
        gsucc,
        gtail,
    )


@njit(cache=True, error_model="numpy")
def core_w(
    w_cpu,
    w_mem,
    w_io,
    w_wait,
    w_rate,
    w_succ,
    w_tail,
    reported,
    has_rate,
    gcpu,
    gmem,
    gio,
    gwait,
    grate,
    gsucc,
    gtail,
):
    """`core` with the weights as scalars: what the per-node loop calls (each
    node has its own w_wait and w_rate), so that no array crosses a call
    inside the loop (numba would incref and decref it on every node)."""
    num = w_cpu * gcpu
    den = w_cpu
    num += w_mem * gmem
    den += w_mem
    if reported & HAS_IO:
        num += w_io * gio
        den += w_io
    num += w_wait * gwait
    den += w_wait
    if has_rate:
        num += w_rate * grate
        den += w_rate
    num += w_succ * gsucc
    den += w_succ
    if reported & HAS_TAIL:
        num += w_tail * gtail
        den += w_tail
    return num / den
