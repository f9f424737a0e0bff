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
from kernels.ranking import published, sort_ranked
from kernels.smoothing import raw_score, smooth
from kernels.weights import core, weights_in_effect


@njit(cache=True, error_model="numpy")
def _first(inp, prev, i):
    return inp.fresh[i] != 0 or prev.state[i] == UNREGISTERED


@njit(cache=True, error_model="numpy")
def tick(params, inp, prev, nxt, out):
    """Compute one tick; returns (n_ranked, P, live count)."""
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

    # Pass 1: steps 1, 2, 4; the sums behind P and T run in slot order.
    live = 0
    p_sum = 0.0
    t_max = 0.0
    for i in range(nslots):
        if inp.active[i] == 0:
            nxt.qema[i] = 0.0
            nxt.s[i] = 0.0
            nxt.state[i] = UNREGISTERED
            nxt.flap[i] = 0.0
            nxt.n[i] = 0
            nxt.probation[i] = 0
            nxt.memory[i] = 0
            out.score[i] = 0.0
            out.raw[i] = 0.0
            out.wait[i] = 0.0
            out.liveness[i] = 0.0
            continue
        first = _first(inp, prev, i)
        qema = queue_ema(first, inp.new_hb[i] != 0, inp.queue[i], prev.qema[i], alpha_queue)
        wait = sojourn(qema, inp.avg_job_s[i])
        L = liveness(inp.age[i], suspect_after_s, dead_after_s)
        nxt.qema[i] = qema
        out.wait[i] = wait
        out.liveness[i] = L
        if L > 0.0:
            live += 1
            p_sum += pressure_term(wait, max_wait_s)
            if inp.reported[i] & HAS_THROUGHPUT and inp.throughput[i] > t_max:
                t_max = inp.throughput[i]

    # Step 5, then pass 2: steps 3, 6-11 and step 12's flap/probation/release.
    P = pressure(p_sum, live)
    weights_in_effect(params, P, out.weights)
    w = out.weights
    n_quarantined = 0
    for i in range(nslots):
        if inp.active[i] == 0:
            continue
        first = _first(inp, prev, i)
        qema = nxt.qema[i]
        wait = out.wait[i]
        L = out.liveness[i]
        rep = inp.reported[i]
        cpu = inp.cpu[i]
        mem = inp.mem[i]
        ok = inp.ok[i]
        err = inp.err[i]
        c = core(w, rep,
                 g_cpu(cpu, max_cpu), g_mem(mem, max_mem), g_io(inp.io[i]),
                 g_wait(wait, max_wait_s), g_tput(inp.throughput[i], t_max),
                 g_succ(ok, err), g_tail(inp.p50_ms[i], inp.p95_ms[i], max_tail_ratio))
        B = backpressure(qema, max_queue, limit_critical)
        trip = tripped(qema, wait, cpu, mem, rep, ok, err, max_queue, max_wait_s,
                       max_cpu, max_mem, min_requests, max_error_rate)
        raw = raw_score(trip, L, B, c)
        s = smooth(trip, L, raw, prev.s[i], first, beta)
        prev_state = prev.state[i]
        flap_prev = 0.0 if first else prev.flap[i]
        n = 0 if first else prev.n[i]
        state = next_state(prev_state, first, L, trip, s, t_degraded, t_overloaded, delta)
        flap = flap_update(flap_prev, changed(prev_state, state, first), flap_window)
        probation = 0
        if (not first) and prev_state == QUARANTINED and L > 0.0:
            probation = probation_step(prev.probation[i], trip, raw, t_degraded, delta)
            if release_due(probation, n, probation_ticks, max_backoff):
                state = HEALTHY
                flap = 0.0
                probation = 0
        if state == QUARANTINED:
            n_quarantined += 1
        out.raw[i] = raw
        nxt.s[i] = s
        nxt.state[i] = state
        nxt.flap[i] = flap
        nxt.n[i] = n
        nxt.probation[i] = probation

    # Pass 3: admissions under the cap, the n memory, step 13, candidates.
    cap = quarantine_cap(max_q_fraction, live)
    for k in range(N_STATES):
        out.counts[k] = 0
    m = 0
    for i in range(nslots):
        if inp.active[i] == 0:
            continue
        state = nxt.state[i]
        if n_quarantined < cap and is_candidate(state, nxt.flap[i], max_flaps):
            state = QUARANTINED
            nxt.state[i] = state
            nxt.n[i] += 1
            nxt.probation[i] = 0
            n_quarantined += 1
        memory_prev = 0 if _first(inp, prev, i) else prev.memory[i]
        memory, n = memory_step(state, memory_prev, nxt.n[i], quarantine_memory)
        nxt.memory[i] = memory
        nxt.n[i] = n
        score = published(state, nxt.s[i])
        out.score[i] = score
        out.counts[state] += 1
        if score > 0.0:
            out.ranked[m] = i
            m += 1
    sort_ranked(out.score, out.ranked, m)
    return m, P, live
