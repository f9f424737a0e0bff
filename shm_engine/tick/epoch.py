"""One epoch's computation as one compiled call: gather, feedback, kernels, ranking.

`compute_epoch` is what `Ticker.tick` runs between ``write_begin`` and the
per-tick scalars: the consistent heartbeat gather (`rows.gather_inputs`),
the scheduler feedback (`claims.feedback_range` over every slot, the body
of `claims.gather_feedback`) and the score pipeline with its ranking (the
stages of `kernels.tick`: `pass1_range`, `pass2`, `rank`, with the unused
slots left out), in that order, without returning to Python between them.
Each stage keeps its own contract; this module only chains them, so the
stages stay testable alone and replay (which fills the feedback from its
trace) runs the same kernels.

`compute_epoch_threads` (``[engine] tick_threads`` > 1) computes the same
epoch with the per-slot work split into ``threads`` ranges of slots on
numba's thread pool (``parallel=True``; ``prange``): the gather, the
feedback and pass 1 of each range (`rows.gather_range`,
`claims.feedback_range`, `kernels.pipeline.pass1_range`), then pass 2 of
each range (`kernels.pipeline.pass2_range`).  What crosses ranges runs on
the calling thread in slot order, so the result is bit-for-bit the
single-threaded one (the tests compare them): S (SCORING.md step 5) is
summed again over the pressure terms pass 1 kept per slot (floating-point
addition is not associative, and the score fixes the order); the rates R
is selected from are moved together (the selection does not depend on
their order anyway); the ranking and admission candidates of each range,
already in slot order, are concatenated in range order; the counts per
state added.  Step 5, step 12's admissions (which need every node's
state) and step 14 run on the calling thread (a radix sort split between
two threads by sampled key ranges measured no faster at 1M candidates on
the 2-core benchmark machine, and was left out).  The ranges split the
slots below ``hwm`` evenly, and the empty slots above it evenly too.

Each parallel loop costs a hand-off to the pool's threads (measured here
about 0.1 ms per loop, two loops a tick, with numba's own pool whose idle
threads sleep); at 1M nodes the threads save more than that, below about
100K nodes they cost more (README, "Performance").  The single-threaded
entry keeps the stage functions whole rather than running the ranged
driver with one range: compiled as one call, the ranged driver measured
about 0.1 ms slower at 10K nodes.

Why one call: a call from Python into compiled code unboxes every array it
is handed (about a quarter microsecond each); the three stages took about
120 arrays per tick, this entry takes each column once.

Rules for the caller (`Ticker`): ``inp``'s feedback columns are the next
buffer's published ones (``rif``, ``fb_ok``, ``fb_err``, ``consec``,
``err_age`` of that buffer), so the feedback is written once, where both
the kernels and the readers find it; ``inp``, ``held_*`` and ``scratch``
are the ticker's private arrays; ``hwm`` <= ``limit`` <= capacity;
``threads`` >= 1 (`compute_epoch` ignores it).  Both entries take the same
arguments.

Empty slots above the high-water mark: slots from ``limit`` on are not
touched at all.  The caller passes the capacity until both buffers and
both input sets have been written whole once, and afterwards the highest
``hwm`` it has ticked with: a slot at or above every ``hwm`` so far has
never held a node, so both buffers still hold its empty values (the
registry's ``slot_hwm`` only grows).  A segment sized for more nodes than
it holds (the default capacity is 16384) then costs nothing per tick for
its unused slots; writing their empty values every tick measured about
0.1 ms per tick for 6K unused slots.

Note for development: numba's on-disk cache of `compute_epoch` is not
invalidated when only a stage, the pipeline, the gather or the feedback
gather changes; clear the cache directory after editing them.
"""

import numpy as np
from numba import njit, prange

from kernels.params import EJECTION_S, MAX_CONSECUTIVE_ERRORS, N_STATES
from kernels.pipeline import admit, pass1_range, pass2, pass2_range, rank, step5
from shm_engine.core.claims import feedback_range, live_leases
from shm_engine.core.rows import gather_inputs, gather_range

__all__ = ["compute_epoch", "compute_epoch_threads"]


def _epoch_ranges(
    params,
    table,
    slot_gen,
    registered,
    prev_state,
    prev_gen,
    prev_hb_seen,
    prev_ok_seen,
    prev_err_seen,
    nxt_state,
    out,
    nxt_gen,
    nxt_hb_seen,
    nxt_ok_seen,
    nxt_err_seen,
    inp,
    scratch,
    held_gen,
    held_version,
    held_recv,
    lease_ident,
    in_flight_flat,
    row_words,
    outcomes,
    now,
    hwm,
    limit,
    threads,
):
    """`compute_epoch` over ``threads`` ranges of slots (see the module
    docstring); compiled with ``parallel=True`` as `compute_epoch_threads`."""
    max_consecutive_errors = params[MAX_CONSECUTIVE_ERRORS]
    ejection_s = params[EJECTION_S]
    leases = live_leases(lease_ident)
    out_words = outcomes.reshape(-1)
    rates = scratch.rates
    T = max(1, min(threads, max(hwm, 1)))
    # Per range: [0] torn, [1] ok, [2] err, [3] ejected, [4] live,
    # [5] end of its rates, [6] end of its ranking candidates, [7] end of
    # its admission candidates, [8] QUARANTINED; sums of rif and S.
    ints = np.zeros((T, 9), np.int64)
    floats = np.zeros((T, 2), np.float64)
    counts = np.zeros((T, N_STATES), np.int64)
    pterm = scratch.pterm if T > 1 else scratch.pterm[:0]
    for k in prange(T):
        lo = k * hwm // T
        hi = (k + 1) * hwm // T
        ints[k, 0] = gather_range(
            slot_gen,
            registered,
            table,
            prev_gen,
            prev_hb_seen,
            prev_state.state,
            inp,
            nxt_gen,
            nxt_hb_seen,
            now,
            1.0,
            1.0,
            held_gen,
            held_version,
            held_recv,
            lo,
            hi,
        )
        s_rif, d_ok, d_err, d_ej = feedback_range(
            nxt_gen,
            inp.active,
            inp.fresh,
            leases,
            in_flight_flat,
            row_words,
            out_words,
            prev_ok_seen,
            prev_err_seen,
            now,
            max_consecutive_errors,
            ejection_s,
            inp.rif,
            inp.fb_ok,
            inp.fb_err,
            inp.consec,
            inp.err_age,
            nxt_ok_seen,
            nxt_err_seen,
            lo,
            hi,
            0.0,
        )
        ints[k, 1] = d_ok
        ints[k, 2] = d_err
        ints[k, 3] = d_ej
        floats[k, 0] = s_rif
        lv, ps, r_end = pass1_range(
            params, inp, prev_state, nxt_state, out, rates, pterm, lo, hi, 0, 0.0, lo
        )
        ints[k, 4] = lv
        ints[k, 5] = r_end
        floats[k, 1] = ps
        # This range's share of the empty slots above the high-water mark.
        e_lo = hwm + k * (limit - hwm) // T
        e_hi = hwm + (k + 1) * (limit - hwm) // T
        for s in range(e_lo, e_hi):
            inp.active[s] = 0
            inp.fresh[s] = 0
            inp.new_hb[s] = 0
        pass1_range(params, inp, prev_state, nxt_state, out, rates, pterm, e_lo, e_hi, 0, 0.0, 0)
    # Across ranges, in slot order.
    torn = 0
    sum_rif = 0.0
    sum_ok = 0
    sum_err = 0
    ejected = 0
    live = 0
    m_rates = 0
    for k in range(T):
        torn += ints[k, 0]
        sum_ok += ints[k, 1]
        sum_err += ints[k, 2]
        ejected += ints[k, 3]
        live += ints[k, 4]
        sum_rif += floats[k, 0]
        lo = k * hwm // T
        for j in range(lo, ints[k, 5]):
            rates[m_rates] = rates[j]
            m_rates += 1
    p_sum = floats[0, 1]
    for s in range(hwm // T, hwm):  # nothing with one range (pterm is empty)
        p_sum += pterm[s]
    P, R = step5(params, out, scratch, p_sum, live, m_rates)
    cands = scratch.rank.idx_tmp
    for k in prange(T):
        lo = k * hwm // T
        hi = (k + 1) * hwm // T
        m_end, c_end, n_q = pass2_range(
            params,
            inp,
            prev_state,
            nxt_state,
            out,
            P,
            R,
            p_sum,
            live,
            lo,
            hi,
            out.ranked,
            lo,
            cands,
            lo,
            counts[k],
        )
        ints[k, 6] = m_end
        ints[k, 7] = c_end
        ints[k, 8] = n_q
    m = 0
    n_cands = 0
    n_quarantined = 0
    for c in range(N_STATES):
        out.counts[c] = 0
    for k in range(T):
        lo = k * hwm // T
        for j in range(lo, ints[k, 6]):
            out.ranked[m] = out.ranked[j]
            m += 1
        for j in range(lo, ints[k, 7]):
            cands[n_cands] = cands[j]
            n_cands += 1
        n_quarantined += ints[k, 8]
        for c in range(N_STATES):
            out.counts[c] += counts[k, c]
    m = admit(params, inp, prev_state, nxt_state, out, cands, m, n_cands, n_quarantined, live)
    rank(out, m, scratch)
    return m, P, live, torn, sum_rif, sum_ok, sum_err, ejected


@njit(cache=True, nogil=True)
def compute_epoch(
    params,
    table,
    slot_gen,
    registered,
    prev_state,
    prev_gen,
    prev_hb_seen,
    prev_ok_seen,
    prev_err_seen,
    nxt_state,
    out,
    nxt_gen,
    nxt_hb_seen,
    nxt_ok_seen,
    nxt_err_seen,
    inp,
    scratch,
    held_gen,
    held_version,
    held_recv,
    lease_ident,
    in_flight_flat,
    row_words,
    outcomes,
    now,
    hwm,
    limit,
    threads,
):
    """Gather, feedback, score and rank one epoch into the next buffer's
    columns (``nxt_*``, ``out``).  Returns (n_ranked, P, live, torn,
    sum of rif, ok releases, error releases, ejected), the values of
    `kernels.tick`, `rows.gather_inputs` and `claims.gather_feedback`."""
    torn = gather_inputs(
        slot_gen,
        registered,
        table,
        prev_gen,
        prev_hb_seen,
        prev_state.state,
        inp,
        nxt_gen,
        nxt_hb_seen,
        now,
        1.0,
        1.0,
        hwm,
        limit,
        held_gen,
        held_version,
        held_recv,
    )
    # The feedback straight into ``inp``'s columns, which are the published
    # ones (`gather_feedback` would copy them onto themselves).
    sum_rif, sum_ok, sum_err, ejected = feedback_range(
        nxt_gen,
        inp.active,
        inp.fresh,
        live_leases(lease_ident),
        in_flight_flat,
        row_words,
        outcomes.reshape(-1),
        prev_ok_seen,
        prev_err_seen,
        now,
        params[MAX_CONSECUTIVE_ERRORS],
        params[EJECTION_S],
        inp.rif,
        inp.fb_ok,
        inp.fb_err,
        inp.consec,
        inp.err_age,
        nxt_ok_seen,
        nxt_err_seen,
        0,
        hwm,
        0.0,
    )
    live, p_sum, m_rates = pass1_range(
        params,
        inp,
        prev_state,
        nxt_state,
        out,
        scratch.rates,
        scratch.pterm[:0],
        0,
        limit,
        0,
        0.0,
        0,
    )
    m, P, live = pass2(
        params, inp, prev_state, nxt_state, out, scratch, live, p_sum, m_rates, limit
    )
    rank(out, m, scratch)
    return m, P, live, torn, sum_rif, sum_ok, sum_err, ejected


compute_epoch_threads = njit(cache=True, nogil=True, parallel=True)(_epoch_ranges)
