"""One tick of the score pipeline (SCORING.md version 2, steps 1-14) over every slot.

`tick(params, inp, prev, nxt, out, scratch) -> (n_ranked, P, live)` is a pure
function of arrays: it reads `params`, `inp` and `prev`, and writes every
field of `nxt` and `out` for every slot (neither is assumed zeroed).  `prev`
and `nxt` must be different buffers.  `scratch` (`make_scratch(capacity)`,
the caller's, reused every tick) holds its work arrays: it allocates nothing.

Slot rules:
  * `inp.active == 0`: empty slot; nxt.state = UNREGISTERED, every other value
    0; it counts nowhere (not live, not in S, R, the cap or `counts`).
  * first tick (`inp.fresh == 1`, or the slot was UNREGISTERED last tick):
    every prev value of the slot is ignored (it belongs to an earlier
    occupant): qema = queue, e_ok = e_err = 0 before this tick's outcomes,
    s_prev = raw, flap = n = probation = memory = 0, fresh classification.
    The driver resets the slot's feedback inputs (see `kernels.columns`).

Order (SCORING.md "Order within a tick"; forgetting, heartbeats and
feedback are applied to `inp` by the driver before the call), as two fused
passes over the slots:
  1. steps 1, 2 (qema, load, wait, the error window) and 4 per node,
     accumulating S and the live count, and gathering the rates of the live
     nodes with avg_job_s > 0 into scratch;
  then step 5 (P) and R (`kernels.percentile`), once;
  2. per node in slot order: P_i, steps 3, 6-11, the flap update, probation
     and release, counting QUARANTINED nodes; a node that is no admission
     candidate of step 12 (HEALTHY/DEGRADED/OVERLOADED with flap >=
     max_flaps) also gets its `n` memory, step 13 and its place among the
     ranking candidates here, since no admission can change it;
  then, over the candidates only (few), in slot order: admissions under
  the cap (which counts every node's state after step 12's release, so it
  waits for the whole pass), their `n` memory and step 13, merged into the
  slot-ordered ranking candidates; then step 14's sort.

Results: out.score/raw/wait/liveness per slot, out.reason why the slot's
state changed this tick (`kernels.reasons`, written by the stage that
decided it; 0 when unchanged or empty), out.ranked[:n_ranked] the
ranking, out.weights the 7 weights at the published P, out.counts nodes per
state HEALTHY..DEAD.  Every score, raw and L is in [0, 1]; P in [0, 1].

Kernels use numpy's floating-point error model: a division by zero gives
inf/nan instead of raising (the configuration rules out the parameter values
that could divide by zero; see each stage's preconditions).
Note for development: numba's on-disk cache of `tick` is not invalidated when
only a stage module changes; clear the cache directory after editing a stage.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from kernels.backpressure import backpressure
from kernels.breaker import trip_reason
from kernels.goodness import g_cpu, g_io, g_mem, g_rate, g_succ, g_tail, g_wait, rate
from kernels.hysteresis import changed, next_state, transition_reason
from kernels.liveness import liveness
from kernels.params import (
    ALPHA_QUEUE,
    BETA,
    DEAD_AFTER_S,
    DELTA,
    EJECTION_S,
    ERROR_HALF_LIFE_S,
    FLAP_WINDOW,
    HEALTHY,
    K1,
    K2,
    LIMIT_CRITICAL,
    MAX_BACKOFF,
    MAX_CONSECUTIVE_ERRORS,
    MAX_CPU,
    MAX_ERROR_RATE,
    MAX_FLAPS,
    MAX_MEM,
    MAX_QUARANTINED_FRACTION,
    MAX_QUEUE,
    MAX_TAIL_RATIO,
    MAX_WAIT_S,
    MIN_REQUESTS,
    N_STATES,
    PROBATION_TICKS,
    QUARANTINE_MEMORY,
    QUARANTINED,
    SUSPECT_AFTER_S,
    T_DEGRADED,
    T_OVERLOADED,
    TICK_INTERVAL_MS,
    UNREGISTERED,
    W_CPU,
    W_IO,
    W_MEM,
    W_RATE,
    W_SUCCESS,
    W_TAIL,
    W_WAIT,
)
from kernels.percentile import rate_reference
from kernels.pressure import node_pressure, pressure, pressure_term
from kernels.quarantine import (
    flap_update,
    is_candidate,
    memory_step,
    probation_step,
    quarantine_cap,
    release_due,
)
from kernels.queue import load, queue_ema, sojourn
from kernels.ranking import RankScratch, make_rank_scratch, published, radix_ranked
from kernels.reasons import QUARANTINE_ENTRY, QUARANTINE_RELEASE
from kernels.smoothing import raw_score, smooth
from kernels.weights import core_w, shifted, weights_in_effect
from kernels.window import outcomes, window_decay, window_step


class TickScratch(NamedTuple):
    """Work arrays of one tick, allocated once per capacity."""

    rank: RankScratch  # step 14's radix sort
    rates: np.ndarray  # f8[capacity]: the rates R is selected from
    pterm: np.ndarray  # f8[capacity]: pressure terms, when pass 1 runs on threads
    window: np.ndarray  # f8[capacity]: the rates near R (`percentile.sample_select`)


def make_scratch(capacity: int) -> TickScratch:
    """Scratch for `tick` over `capacity` slots."""
    return TickScratch(
        make_rank_scratch(capacity),
        np.zeros(capacity, np.float64),
        np.zeros(capacity, np.float64),
        np.zeros(capacity, np.float64),
    )


@njit(cache=True, error_model="numpy")
def pass1_range(params, inp, prev, nxt, out, rates, pterm, lo, hi, live, p_sum, m_rates):
    """Pass 1 (steps 1, 2 and 4) over slots ``[lo, hi)``: each slot's qema,
    error window, wait and L, or every value of an empty slot.  ``live``,
    ``p_sum`` (S) and ``m_rates`` (the rates in ``rates``) are the totals
    over the slots before ``lo``; returns them through ``hi``, so the sums
    run in slot order over consecutive ranges.  ``pterm``: empty, or one
    per slot to receive each slot's pressure term (0 if not live), from
    which a caller that ran the ranges on several threads sums S in slot
    order.  `_score` calls it once over every slot; the tick worker once
    per range of slots, after the gather and the feedback of the range
    (`shm_engine.tick.epoch`)."""
    keep_terms = pterm.shape[0] > 0
    alpha_queue = params[ALPHA_QUEUE]
    d = window_decay(params[TICK_INTERVAL_MS], params[ERROR_HALF_LIFE_S])
    suspect_after_s = params[SUSPECT_AFTER_S]
    dead_after_s = params[DEAD_AFTER_S]
    max_wait_s = params[MAX_WAIT_S]
    # Columns as local arrays (see `pass2`).
    active = inp.active
    fresh = inp.fresh
    new_hb = inp.new_hb
    age = inp.age
    in_queue = inp.queue
    in_avg = inp.avg_job_s
    in_ok = inp.ok
    in_err = inp.err
    in_rep = inp.reported
    in_slots = inp.slots
    in_rif = inp.rif
    in_fb_ok = inp.fb_ok
    in_fb_err = inp.fb_err
    prev_qema = prev.qema
    prev_state = prev.state
    prev_e_ok = prev.e_ok
    prev_e_err = prev.e_err
    nxt_qema = nxt.qema
    nxt_s = nxt.s
    nxt_state = nxt.state
    nxt_flap = nxt.flap
    nxt_n = nxt.n
    nxt_probation = nxt.probation
    nxt_memory = nxt.memory
    nxt_e_ok = nxt.e_ok
    nxt_e_err = nxt.e_err
    out_score = out.score
    out_raw = out.raw
    out_wait = out.wait
    out_liveness = out.liveness
    out_reason = out.reason
    for i in range(lo, hi):
        if active[i] == 0:
            nxt_qema[i] = 0.0
            nxt_s[i] = 0.0
            nxt_state[i] = UNREGISTERED
            nxt_flap[i] = 0.0
            nxt_n[i] = 0
            nxt_probation[i] = 0
            nxt_memory[i] = 0
            nxt_e_ok[i] = 0.0
            nxt_e_err[i] = 0.0
            out_score[i] = 0.0
            out_raw[i] = 0.0
            out_wait[i] = 0.0
            out_liveness[i] = 0.0
            out_reason[i] = 0
            if keep_terms:
                pterm[i] = 0.0
            continue
        first = fresh[i] != 0 or prev_state[i] == UNREGISTERED
        hb = new_hb[i] != 0
        rep = in_rep[i]
        slots = in_slots[i]
        qema = queue_ema(first, hb, in_queue[i], prev_qema[i], alpha_queue)
        wait = sojourn(load(qema, in_rif[i], slots), in_avg[i], slots)
        nxt_e_ok[i] = window_step(first, prev_e_ok[i], d, outcomes(in_fb_ok[i], hb, rep, in_ok[i]))
        nxt_e_err[i] = window_step(
            first, prev_e_err[i], d, outcomes(in_fb_err[i], hb, rep, in_err[i])
        )
        L = liveness(age[i], suspect_after_s, dead_after_s)
        nxt_qema[i] = qema
        out_wait[i] = wait
        out_liveness[i] = L
        term = 0.0
        if L > 0.0:
            term = pressure_term(wait, max_wait_s)
            live += 1
            p_sum += term
            if in_avg[i] > 0.0:
                rates[m_rates] = rate(slots, in_avg[i])
                m_rates += 1
        if keep_terms:
            pterm[i] = term
    return live, p_sum, m_rates


@njit(cache=True, error_model="numpy")
def _score(params, inp, prev, nxt, out, scratch):
    """Steps 1-13 for every slot; leaves the step-14 candidates in slot order
    in ``out.ranked[:m]``.  Returns (m, P, live)."""
    live, p_sum, m_rates = pass1_range(
        params,
        inp,
        prev,
        nxt,
        out,
        scratch.rates,
        scratch.pterm[:0],
        0,
        inp.active.shape[0],
        0,
        0.0,
        0,
    )
    n = inp.active.shape[0]
    return pass2(params, inp, prev, nxt, out, scratch, live, p_sum, m_rates, n)


@njit(cache=True, error_model="numpy")
def pass2_range(
    params, inp, prev, nxt, out, P, R, p_sum, live, lo, hi, ranked, m, cands, n_cands, counts
):
    """Pass 2 (steps 3, 6-11, step 12's flap/probation/release; for a node
    that is no admission candidate also its ``n`` memory and step 13) over
    slots ``[lo, hi)``, after pass 1 over every slot and step 5 (``P``,
    ``R``, and S = ``p_sum`` over ``live`` nodes).  Appends the ranking
    candidates it decided to ``ranked`` from index ``m`` and the admission
    candidates to ``cands`` from ``n_cands``, both in slot order, and counts
    the decided nodes per state into ``counts`` (not zeroed here).  Returns
    (m, n_cands, QUARANTINED nodes) after the range.  `pass2` calls it once
    over every slot; the tick worker may split the slots between threads
    (`shm_engine.tick.epoch`)."""
    max_cpu = params[MAX_CPU]
    max_mem = params[MAX_MEM]
    max_wait_s = params[MAX_WAIT_S]
    max_tail_ratio = params[MAX_TAIL_RATIO]
    max_queue = params[MAX_QUEUE]
    limit_critical = params[LIMIT_CRITICAL]
    min_requests = params[MIN_REQUESTS]
    max_error_rate = params[MAX_ERROR_RATE]
    max_consecutive_errors = params[MAX_CONSECUTIVE_ERRORS]
    ejection_s = params[EJECTION_S]
    beta = params[BETA]
    t_degraded = params[T_DEGRADED]
    t_overloaded = params[T_OVERLOADED]
    delta = params[DELTA]
    flap_window = params[FLAP_WINDOW]
    max_flaps = params[MAX_FLAPS]
    quarantine_memory = params[QUARANTINE_MEMORY]
    probation_ticks = params[PROBATION_TICKS]
    max_backoff = params[MAX_BACKOFF]

    # Columns as local arrays: inside the loops nothing but scalars is passed
    # to a stage function (an array or a tuple of arrays crossing a call costs
    # an atomic incref/decref pair per array per node).
    active = inp.active
    fresh = inp.fresh
    in_cpu = inp.cpu
    in_mem = inp.mem
    in_avg = inp.avg_job_s
    in_io = inp.io
    in_p50 = inp.p50_ms
    in_p95 = inp.p95_ms
    in_rep = inp.reported
    in_slots = inp.slots
    in_rif = inp.rif
    in_consec = inp.consec
    in_err_age = inp.err_age
    prev_s = prev.s
    prev_state = prev.state
    prev_flap = prev.flap
    prev_n = prev.n
    prev_probation = prev.probation
    prev_memory = prev.memory
    nxt_qema = nxt.qema
    nxt_s = nxt.s
    nxt_state = nxt.state
    nxt_flap = nxt.flap
    nxt_n = nxt.n
    nxt_probation = nxt.probation
    nxt_memory = nxt.memory
    nxt_e_ok = nxt.e_ok
    nxt_e_err = nxt.e_err
    out_score = out.score
    out_raw = out.raw
    out_wait = out.wait
    out_liveness = out.liveness
    out_reason = out.reason

    w_cpu = params[W_CPU]
    w_mem = params[W_MEM]
    w_io = params[W_IO]
    w_wait_base = params[W_WAIT]
    w_rate_base = params[W_RATE]
    w_succ = params[W_SUCCESS]
    w_tail = params[W_TAIL]
    k1 = params[K1]
    k2 = params[K2]
    n_quarantined = 0
    for i in range(lo, hi):
        if active[i] == 0:
            continue
        first = fresh[i] != 0 or prev_state[i] == UNREGISTERED
        slots = in_slots[i]
        avg = in_avg[i]
        ld = load(nxt_qema[i], in_rif[i], slots)
        wait = out_wait[i]
        L = out_liveness[i]
        rep = in_rep[i]
        cpu = in_cpu[i]
        mem = in_mem[i]
        e_ok = nxt_e_ok[i]
        e_err = nxt_e_err[i]
        P_i = node_pressure(p_sum, live, L > 0.0, pressure_term(wait, max_wait_s), P)
        has_rate = avg > 0.0
        grate = g_rate(rate(slots, avg), R) if has_rate else 0.0
        c = core_w(
            w_cpu,
            w_mem,
            w_io,
            shifted(w_wait_base, k1, P_i),
            shifted(w_rate_base, k2, P_i),
            w_succ,
            w_tail,
            rep,
            has_rate,
            g_cpu(cpu, max_cpu),
            g_mem(mem, max_mem),
            g_io(in_io[i]),
            g_wait(wait, max_wait_s),
            grate,
            g_succ(e_ok, e_err),
            g_tail(in_p50[i], in_p95[i], max_tail_ratio),
        )
        B = backpressure(ld, max_queue, limit_critical)
        why = trip_reason(
            ld,
            wait,
            cpu,
            mem,
            e_ok,
            e_err,
            in_consec[i],
            in_err_age[i],
            max_queue,
            max_wait_s,
            max_cpu,
            max_mem,
            min_requests,
            max_error_rate,
            max_consecutive_errors,
            ejection_s,
        )
        trip = why != 0
        raw = raw_score(trip, L, B, c)
        s = smooth(trip, L, raw, prev_s[i], first, beta)
        pstate = prev_state[i]
        flap_prev = 0.0 if first else prev_flap[i]
        n = 0 if first else prev_n[i]
        state = next_state(pstate, first, L, trip, s, t_degraded, t_overloaded, delta)
        reason = transition_reason(pstate, state, first, why)
        flap = flap_update(flap_prev, changed(pstate, state, first), flap_window)
        probation = 0
        if (not first) and pstate == QUARANTINED and L > 0.0:
            probation = probation_step(prev_probation[i], trip, raw, t_degraded, delta)
            if release_due(probation, n, probation_ticks, max_backoff):
                state = HEALTHY
                flap = 0.0
                probation = 0
                reason = QUARANTINE_RELEASE
        if state == QUARANTINED:
            n_quarantined += 1
        out_raw[i] = raw
        out_reason[i] = reason
        nxt_s[i] = s
        nxt_state[i] = state
        nxt_flap[i] = flap
        nxt_probation[i] = probation
        if is_candidate(state, flap, max_flaps):
            # Its admission depends on every node's state: decided below.
            nxt_n[i] = n
            cands[n_cands] = i
            n_cands += 1
            continue
        memory, n = memory_step(state, 0 if first else prev_memory[i], n, quarantine_memory)
        nxt_memory[i] = memory
        nxt_n[i] = n
        score = published(state, s)
        out_score[i] = score
        counts[state] += 1
        if score > 0.0:
            ranked[m] = i
            m += 1
    return m, n_cands, n_quarantined


@njit(cache=True, error_model="numpy")
def step5(params, out, scratch, p_sum, live, m_rates):
    """Step 5 and R after pass 1: returns (P, R) and writes the weights at P
    into ``out.weights``."""
    P = pressure(p_sum, live)
    R = rate_reference(scratch.rates, m_rates, scratch.window)
    weights_in_effect(params, P, out.weights)
    return P, R


@njit(cache=True, error_model="numpy")
def admit(params, inp, prev, nxt, out, cands, m, n_cands, n_quarantined, live):
    """Step 12's admissions after pass 2 over every slot: ``out.ranked[:m]``
    and ``cands[:n_cands]`` are pass 2's ranking and admission candidates
    (slot order), ``out.counts`` its counts, ``n_quarantined`` its
    QUARANTINED nodes.  Returns the number of ranking candidates, all in
    ``out.ranked[:m]`` in slot order."""
    cap = quarantine_cap(params[MAX_QUARANTINED_FRACTION], live)
    quarantine_memory = params[QUARANTINE_MEMORY]
    fresh = inp.fresh
    prev_state = prev.state
    prev_memory = prev.memory
    nxt_s = nxt.s
    nxt_state = nxt.state
    nxt_n = nxt.n
    nxt_probation = nxt.probation
    nxt_memory = nxt.memory
    out_score = out.score
    out_ranked = out.ranked
    out_reason = out.reason
    counts = out.counts
    # Step 12's admissions under the cap in slot order, then the candidates'
    # n memory, step 13 and their place among the ranking candidates.
    n_extra = 0
    for j in range(n_cands):
        i = cands[j]
        state = nxt_state[i]
        if n_quarantined < cap:
            state = QUARANTINED
            nxt_state[i] = state
            nxt_n[i] += 1
            nxt_probation[i] = 0
            out_reason[i] = QUARANTINE_ENTRY
            n_quarantined += 1
        first = fresh[i] != 0 or prev_state[i] == UNREGISTERED
        memory_prev = 0 if first else prev_memory[i]
        memory, n = memory_step(state, memory_prev, nxt_n[i], quarantine_memory)
        nxt_memory[i] = memory
        nxt_n[i] = n
        score = published(state, nxt_s[i])
        out_score[i] = score
        counts[state] += 1
        if score > 0.0:
            cands[n_extra] = i
            n_extra += 1
    if n_extra > 0:
        # Merge the two slot-ordered lists from the back, in place.
        a = m - 1
        b = n_extra - 1
        k = m + n_extra - 1
        while b >= 0:
            if a >= 0 and out_ranked[a] > cands[b]:
                out_ranked[k] = out_ranked[a]
                a -= 1
            else:
                out_ranked[k] = cands[b]
                b -= 1
            k -= 1
        m += n_extra
    return m


@njit(cache=True, error_model="numpy")
def pass2(params, inp, prev, nxt, out, scratch, live, p_sum, m_rates, limit):
    """Everything after pass 1 (`pass1_range`'s results in), on one thread:
    step 5 and R, pass 2, the admissions, over the slots below ``limit``
    (every slot from ``limit`` on must be empty).  Returns (m, P, live)."""
    P, R = step5(params, out, scratch, p_sum, live, m_rates)
    counts = out.counts
    for k in range(N_STATES):
        counts[k] = 0
    # Step 12's admission candidates go to the ranking's scratch (free until
    # step 14).
    cands = scratch.rank.idx_tmp
    m, n_cands, n_quarantined = pass2_range(
        params,
        inp,
        prev,
        nxt,
        out,
        P,
        R,
        p_sum,
        live,
        0,
        limit,
        out.ranked,
        0,
        cands,
        0,
        counts,
    )
    m = admit(params, inp, prev, nxt, out, cands, m, n_cands, n_quarantined, live)
    return m, P, live


@njit(cache=True, error_model="numpy")
def tick(params, inp, prev, nxt, out, scratch):
    """Compute one tick; returns (n_ranked, P, live count).  See the module
    docstring for the contract."""
    m, P, live = _score(params, inp, prev, nxt, out, scratch)
    rank(out, m, scratch)
    return m, P, live


@njit(cache=True, error_model="numpy")
def rank(out, m, scratch):
    """Step 14 over the candidates `_score` left in ``out.ranked[:m]``."""
    radix_ranked(out.score, out.ranked, m, scratch.rank)
