"""One tick of the score pipeline (SCORING.md steps 1-14) over every slot.

`tick(params, inp, prev, nxt, out) -> (n_ranked, P, live)` is a pure function
of arrays: it reads `params`, `inp` and `prev`, and writes every field of
`nxt` and `out` for every slot (neither is assumed zeroed).  `prev` and `nxt`
must be different buffers.  It allocates nothing.

Slot rules:
  * `inp.active == 0`: empty slot; nxt.state = UNREGISTERED, every other value
    0; it counts nowhere (not live, not in P, T, the cap or `counts`).
  * first tick (`inp.fresh == 1`, or the slot was UNREGISTERED last tick):
    every prev_* value of the slot is ignored (it belongs to an earlier
    occupant): qema = queue, s_prev = raw, flap = n = probation = memory = 0,
    fresh classification.

Order (SCORING.md "Order within a tick"), as three fused passes:
  1. steps 1, 2, 4 per node, accumulating P's sum, the live count and T;
  2. P, the weights in effect, then per node in slot order: steps 3, 6-11,
     the flap update, probation and release; counting QUARANTINED nodes;
  3. per node in slot order: quarantine admissions under the cap, the `n`
     memory, step 13 and the ranking candidates; then step 14's sort.

Variants that differ only in how step 14 sorts (same results bit for bit):
`tick` (introsort, no scratch), `tick_radix` (radix sort in caller-owned
scratch: the tick worker's), `tick_ranked` (insertion sort seeded by the
previous ranking; fast only when few nodes move, see `ranking.rerank`).

Results: out.score/raw/wait/liveness per slot, out.ranked[:n_ranked] the
ranking, out.weights the 7 weights in effect, out.counts nodes per state
HEALTHY..DEAD.  Every score, raw and L is in [0, 1]; P in [0, 1].

Kernels use numpy's floating-point error model: a division by zero gives
inf/nan instead of raising (the configuration rules out the parameter values
that could divide by zero; see each stage's preconditions).
Note for development: numba's on-disk cache of `tick` is not invalidated when
only a stage module changes; clear the cache directory after editing a stage.
"""

from numba import njit

from kernels.backpressure import backpressure
from kernels.breaker import tripped
from kernels.goodness import g_cpu, g_io, g_mem, g_succ, g_tail, g_tput, g_wait
from kernels.hysteresis import changed, next_state
from kernels.liveness import liveness
from kernels.params import (ALPHA_QUEUE, BETA, DEAD_AFTER_S, DELTA, FLAP_WINDOW,
                            HAS_THROUGHPUT, HEALTHY, LIMIT_CRITICAL, MAX_BACKOFF,
                            MAX_CPU, MAX_ERROR_RATE, MAX_FLAPS, MAX_MEM,
                            MAX_QUARANTINED_FRACTION, MAX_QUEUE, MAX_TAIL_RATIO,
                            MAX_WAIT_S, MIN_REQUESTS, N_STATES, PROBATION_TICKS,
                            QUARANTINE_MEMORY, QUARANTINED, SUSPECT_AFTER_S,
                            T_DEGRADED, T_OVERLOADED, UNREGISTERED)
from kernels.pressure import pressure, pressure_term
from kernels.quarantine import (flap_update, is_candidate, memory_step,
                                probation_step, quarantine_cap, release_due)
from kernels.queue import queue_ema, sojourn
from kernels.ranking import published, radix_ranked, rerank, sort_ranked
from kernels.smoothing import raw_score, smooth
from kernels.weights import core_w, weights_in_effect


@njit(cache=True, error_model="numpy")
def _score(params, inp, prev, nxt, out):
    """Steps 1-13 for every slot; leaves the step-14 candidates in slot order
    in ``out.ranked[:m]``.  Returns (m, P, live)."""
    nslots = inp.active.shape[0]
    alpha_queue = params[ALPHA_QUEUE]
    max_cpu = params[MAX_CPU]
    max_mem = params[MAX_MEM]
    max_wait_s = params[MAX_WAIT_S]
    max_tail_ratio = params[MAX_TAIL_RATIO]
    suspect_after_s = params[SUSPECT_AFTER_S]
    dead_after_s = params[DEAD_AFTER_S]
    max_queue = params[MAX_QUEUE]
    limit_critical = params[LIMIT_CRITICAL]
    min_requests = params[MIN_REQUESTS]
    max_error_rate = params[MAX_ERROR_RATE]
    beta = params[BETA]
    t_degraded = params[T_DEGRADED]
    t_overloaded = params[T_OVERLOADED]
    delta = params[DELTA]
    flap_window = params[FLAP_WINDOW]
    max_flaps = params[MAX_FLAPS]
    max_q_fraction = params[MAX_QUARANTINED_FRACTION]
    quarantine_memory = params[QUARANTINE_MEMORY]
    probation_ticks = params[PROBATION_TICKS]
    max_backoff = params[MAX_BACKOFF]

    # Columns as local arrays: inside the loops nothing but scalars is passed
    # to a stage function (an array or a tuple of arrays crossing a call costs
    # an atomic incref/decref pair per array per node).
    active = inp.active
    fresh = inp.fresh
    new_hb = inp.new_hb
    age = inp.age
    in_cpu = inp.cpu
    in_mem = inp.mem
    in_queue = inp.queue
    in_avg = inp.avg_job_s
    in_tput = inp.throughput
    in_ok = inp.ok
    in_err = inp.err
    in_io = inp.io
    in_p50 = inp.p50_ms
    in_p95 = inp.p95_ms
    in_rep = inp.reported
    prev_qema = prev.qema
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
    out_score = out.score
    out_raw = out.raw
    out_wait = out.wait
    out_liveness = out.liveness
    out_ranked = out.ranked
    counts = out.counts

    # Pass 1: steps 1, 2, 4; the sums behind P and T run in slot order.
    live = 0
    p_sum = 0.0
    t_max = 0.0
    for i in range(nslots):
        if active[i] == 0:
            nxt_qema[i] = 0.0
            nxt_s[i] = 0.0
            nxt_state[i] = UNREGISTERED
            nxt_flap[i] = 0.0
            nxt_n[i] = 0
            nxt_probation[i] = 0
            nxt_memory[i] = 0
            out_score[i] = 0.0
            out_raw[i] = 0.0
            out_wait[i] = 0.0
            out_liveness[i] = 0.0
            continue
        first = fresh[i] != 0 or prev_state[i] == UNREGISTERED
        qema = queue_ema(first, new_hb[i] != 0, in_queue[i], prev_qema[i], alpha_queue)
        wait = sojourn(qema, in_avg[i])
        L = liveness(age[i], suspect_after_s, dead_after_s)
        nxt_qema[i] = qema
        out_wait[i] = wait
        out_liveness[i] = L
        if L > 0.0:
            live += 1
            p_sum += pressure_term(wait, max_wait_s)
            if in_rep[i] & HAS_THROUGHPUT and in_tput[i] > t_max:
                t_max = in_tput[i]

    # Step 5, then pass 2: steps 3, 6-11 and step 12's flap/probation/release.
    P = pressure(p_sum, live)
    weights_in_effect(params, P, out.weights)
    w = out.weights
    w_cpu = w[0]
    w_mem = w[1]
    w_io = w[2]
    w_wait = w[3]
    w_tput = w[4]
    w_succ = w[5]
    w_tail = w[6]
    n_quarantined = 0
    for i in range(nslots):
        if active[i] == 0:
            continue
        first = fresh[i] != 0 or prev_state[i] == UNREGISTERED
        qema = nxt_qema[i]
        wait = out_wait[i]
        L = out_liveness[i]
        rep = in_rep[i]
        cpu = in_cpu[i]
        mem = in_mem[i]
        ok = in_ok[i]
        err = in_err[i]
        c = core_w(w_cpu, w_mem, w_io, w_wait, w_tput, w_succ, w_tail, rep,
                   g_cpu(cpu, max_cpu), g_mem(mem, max_mem), g_io(in_io[i]),
                   g_wait(wait, max_wait_s), g_tput(in_tput[i], t_max),
                   g_succ(ok, err), g_tail(in_p50[i], in_p95[i], max_tail_ratio))
        B = backpressure(qema, max_queue, limit_critical)
        trip = tripped(qema, wait, cpu, mem, rep, ok, err, max_queue, max_wait_s,
                       max_cpu, max_mem, min_requests, max_error_rate)
        raw = raw_score(trip, L, B, c)
        s = smooth(trip, L, raw, prev_s[i], first, beta)
        pstate = prev_state[i]
        flap_prev = 0.0 if first else prev_flap[i]
        n = 0 if first else prev_n[i]
        state = next_state(pstate, first, L, trip, s, t_degraded, t_overloaded, delta)
        flap = flap_update(flap_prev, changed(pstate, state, first), flap_window)
        probation = 0
        if (not first) and pstate == QUARANTINED and L > 0.0:
            probation = probation_step(prev_probation[i], trip, raw, t_degraded, delta)
            if release_due(probation, n, probation_ticks, max_backoff):
                state = HEALTHY
                flap = 0.0
                probation = 0
        if state == QUARANTINED:
            n_quarantined += 1
        out_raw[i] = raw
        nxt_s[i] = s
        nxt_state[i] = state
        nxt_flap[i] = flap
        nxt_n[i] = n
        nxt_probation[i] = probation

    # Pass 3: admissions under the cap, the n memory, step 13, candidates.
    cap = quarantine_cap(max_q_fraction, live)
    for k in range(N_STATES):
        counts[k] = 0
    m = 0
    for i in range(nslots):
        if active[i] == 0:
            continue
        state = nxt_state[i]
        if n_quarantined < cap and is_candidate(state, nxt_flap[i], max_flaps):
            state = QUARANTINED
            nxt_state[i] = state
            nxt_n[i] += 1
            nxt_probation[i] = 0
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
            out_ranked[m] = i
            m += 1
    return m, P, live


@njit(cache=True, error_model="numpy")
def tick(params, inp, prev, nxt, out):
    """Compute one tick; returns (n_ranked, P, live count)."""
    m, P, live = _score(params, inp, prev, nxt, out)
    sort_ranked(out.score, out.ranked, m)
    return m, P, live


@njit(cache=True, error_model="numpy")
def tick_radix(params, inp, prev, nxt, out, scratch):
    """`tick`, with step 14 done by `ranking.radix_ranked` in the caller's
    preallocated ``scratch`` (`ranking.make_rank_scratch(capacity)`): same
    results bit for bit, O(slots) whatever the previous order, and no
    allocation.  What the tick worker runs."""
    m, P, live = _score(params, inp, prev, nxt, out)
    radix_ranked(out.score, out.ranked, m, scratch)
    return m, P, live


@njit(cache=True, error_model="numpy")
def tick_ranked(params, inp, prev, nxt, out, prev_ranked, n_prev):
    """`tick`, with step 14 seeded by the previous tick's ranking
    ``prev_ranked[:n_prev]`` (the published ``ranked`` of the buffer ``prev``
    came from).  Same results as `tick` bit for bit, for any seed: the seed
    only decides how much sorting is left to do (see `ranking.rerank`)."""
    m, P, live = _score(params, inp, prev, nxt, out)
    rerank(out.score, out.ranked, m, prev_ranked, n_prev)
    return m, P, live
