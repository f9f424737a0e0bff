"""SCORING.md (version 2) steps 1-14 in vectorised NumPy: the "no numba" baseline.

`numpy_tick(params, inp, prev, nxt, out) -> (n_ranked, P, live)` has the
contract of `kernels.tick` without its scratch (same column groups, same
results within 1e-9).  Each step is one or a few whole-array expressions; the
only order-dependent parts of SCORING.md are reproduced exactly:
  * S, the pressure sum, runs in slot order (`np.cumsum` is sequential,
    unlike `np.sum`'s pairwise summation), so P and every P_i are
    bit-identical to the kernel's;
  * R is the nearest-rank 90th percentile, taken by `np.partition`;
  * quarantine admissions take the first candidates in slot order;
  * an optional metric adds ``np.where(has, w*g, 0.0)`` (adding 0.0 is
    exact), so `core` is bit-identical too.
It allocates temporaries for every step: that, and not the arithmetic, is
what it costs.
"""

from __future__ import annotations

import numpy as np

from kernels import params as p

_I32_MAX = 2147483647
_H, _D, _O, _Q, _X = p.HEALTHY, p.DEGRADED, p.OVERLOADED, p.QUARANTINED, p.DEAD


def numpy_tick(params, inp, prev, nxt, out):
    """One tick over every slot; see the module docstring."""
    pr = params
    act = inp.active != 0
    first = (inp.fresh != 0) | (prev.state == p.UNREGISTERED)
    a = pr[p.ALPHA_QUEUE]
    qema = np.where(
        first,
        inp.queue,
        np.where(inp.new_hb != 0, a * inp.queue + (1.0 - a) * prev.qema, prev.qema),
    )
    slots = inp.slots
    load = np.maximum(np.maximum(qema, inp.rif - slots), 0.0)
    wait = load * inp.avg_job_s / slots
    rep = inp.reported
    d = 0.5 ** (float(pr[p.TICK_INTERVAL_MS]) / 1000.0 / float(pr[p.ERROR_HALF_LIFE_S]))
    hb_out = (inp.new_hb != 0) & ((rep & p.HAS_OKERR) != 0)
    new_ok = np.where(hb_out, inp.fb_ok + inp.ok, inp.fb_ok)
    new_err = np.where(hb_out, inp.fb_err + inp.err, inp.fb_err)
    e_ok = np.where(first, 0.0, prev.e_ok) * d + new_ok
    e_err = np.where(first, 0.0, prev.e_err) * d + new_err
    sus, dead = pr[p.SUSPECT_AFTER_S], pr[p.DEAD_AFTER_S]
    with np.errstate(divide="ignore", invalid="ignore"):
        L = np.where(
            inp.age <= sus, 1.0, np.where(inp.age >= dead, 0.0, (dead - inp.age) / (dead - sus))
        )
    live_m = act & (L > 0.0)
    live = int(np.count_nonzero(live_m))
    max_wait = pr[p.MAX_WAIT_S]
    term = np.minimum(wait / max_wait, 1.0)
    S = float(np.cumsum(term[live_m])[-1]) if live else 0.0
    P = S / live if live else 0.0
    if live > 1:
        P_i = np.where(live_m, (S - term) / (live - 1), P)
    else:
        P_i = np.where(live_m, 0.0, P)
    has_rate = inp.avg_job_s > 0.0
    with np.errstate(divide="ignore"):
        rate = np.where(has_rate, slots / np.where(has_rate, inp.avg_job_s, 1.0), 0.0)
    live_rates = rate[live_m & has_rate]
    m_r = live_rates.shape[0]
    if m_r:
        k = (9 * m_r + 9) // 10 - 1  # ceil(0.9*m) - 1, exactly
        R = float(np.partition(live_rates, k)[k])
    else:
        R = 0.0

    w = out.weights
    w[0] = pr[p.W_CPU]
    w[1] = pr[p.W_MEM]
    w[2] = pr[p.W_IO]
    w[3] = pr[p.W_WAIT] + pr[p.K1] * P
    w[4] = pr[p.W_RATE] + pr[p.K2] * P
    w[5] = pr[p.W_SUCCESS]
    w[6] = pr[p.W_TAIL]
    w_wait = pr[p.W_WAIT] + pr[p.K1] * P_i
    w_rate = pr[p.W_RATE] + pr[p.K2] * P_i

    with np.errstate(divide="ignore", invalid="ignore"):
        g_cpu = 1.0 - np.minimum(inp.cpu / pr[p.MAX_CPU], 1.0)
        g_mem = 1.0 - np.minimum(inp.mem / pr[p.MAX_MEM], 1.0)
        g_io = 1.0 - inp.io
        g_wait = 1.0 - term
        g_rate = np.where(rate >= R, 1.0, rate / R)
        g_succ = (e_ok + 1.0) / (e_ok + e_err + 1.0)
        ratio = inp.p95_ms / inp.p50_ms
        g_tail = 1.0 - np.minimum(np.maximum(ratio - 1.0, 0.0) / (pr[p.MAX_TAIL_RATIO] - 1.0), 1.0)
        has_io = (rep & p.HAS_IO) != 0
        has_tail = (rep & p.HAS_TAIL) != 0
        num = w[0] * g_cpu
        den = np.full(num.shape, w[0])
        num = num + w[1] * g_mem
        den = den + w[1]
        num = num + np.where(has_io, w[2] * g_io, 0.0)
        den = den + np.where(has_io, w[2], 0.0)
        num = num + w_wait * g_wait
        den = den + w_wait
        num = num + np.where(has_rate, w_rate * g_rate, 0.0)
        den = den + np.where(has_rate, w_rate, 0.0)
        num = num + w[5] * g_succ
        den = den + w[5]
        num = num + np.where(has_tail, w[6] * g_tail, 0.0)
        den = den + np.where(has_tail, w[6], 0.0)
        core = num / den
        mq, lc = pr[p.MAX_QUEUE], pr[p.LIMIT_CRITICAL]
        B = np.minimum(np.maximum((mq - load) / (mq - lc), 0.0), 1.0)
        total = e_ok + e_err
        err_trip = (
            (total > 0.0) & (total >= pr[p.MIN_REQUESTS]) & (e_err / total >= pr[p.MAX_ERROR_RATE])
        )
    ejected = (inp.consec >= pr[p.MAX_CONSECUTIVE_ERRORS]) & (inp.err_age < pr[p.EJECTION_S])
    trip = (
        (load >= mq)
        | (wait >= max_wait)
        | (inp.cpu >= pr[p.MAX_CPU])
        | (inp.mem >= pr[p.MAX_MEM])
        | err_trip
        | ejected
    )
    raw = np.where(trip | (L == 0.0), 0.0, L * B * core)
    beta = pr[p.BETA]
    s_prev = np.where(first, raw, prev.s)
    s = np.where(trip | (L == 0.0), 0.0, beta * raw + (1.0 - beta) * s_prev)

    t_deg, t_over, delta = pr[p.T_DEGRADED], pr[p.T_OVERLOADED], pr[p.DELTA]
    up = t_deg + delta
    fresh_cls = np.where(trip | (s < t_over), _O, np.where(s < t_deg, _D, _H))
    from_h = np.where(s < t_over, _O, np.where(s < t_deg, _D, _H))
    from_d = np.where(s < t_over, _O, np.where(s >= up, _H, _D))
    from_o = np.where(s >= up, _H, np.where(s >= t_over + delta, _D, _O))
    pst = prev.state
    state = np.select(
        [L == 0.0, first | (pst == _X), pst == _Q, trip, pst == _H, pst == _D],
        [_X, fresh_cls, _Q, _O, from_h, from_d],
        default=from_o,
    ).astype(np.int64)
    c = (~first & (pst <= _O) & (state <= _O) & (pst != state)).astype(np.float64)
    flap = np.where(first, 0.0, prev.flap) * (1.0 - 1.0 / pr[p.FLAP_WINDOW]) + c
    n = np.where(first, 0, prev.n).astype(np.int64)
    qm = ~first & (pst == _Q) & (L > 0.0)
    good = ~trip & (raw >= up)
    pc = prev.probation.astype(np.int64)
    prob_new = np.where(good, np.where(pc < _I32_MAX, pc + 1, pc), 0)
    release = qm & (
        prob_new >= pr[p.PROBATION_TICKS] * np.minimum(n.astype(np.float64), pr[p.MAX_BACKOFF])
    )
    probation = np.where(qm & ~release, prob_new, 0)
    state = np.where(release, _H, state)
    flap = np.where(release, 0.0, flap)

    n_q = int(np.count_nonzero(act & (state == _Q)))
    cap = int(np.floor(pr[p.MAX_QUARANTINED_FRACTION] * live))
    cand = np.flatnonzero(act & (state <= _O) & (flap >= pr[p.MAX_FLAPS]))
    admit = cand[: max(cap - n_q, 0)]
    state[admit] = _Q
    n[admit] += 1
    probation[admit] = 0
    mp = np.where(first, 0, prev.memory).astype(np.int64)
    keep = (state != _Q) & (state != _X)
    memory = np.where(keep, np.where(mp < _I32_MAX, mp + 1, mp), 0)
    n = np.where(keep & (memory >= pr[p.QUARANTINE_MEMORY]), 0, n)
    score = np.where(state <= _D, s, 0.0)

    inact = ~act
    nxt.qema[:] = np.where(inact, 0.0, qema)
    nxt.s[:] = np.where(inact, 0.0, s)
    nxt.state[:] = np.where(inact, p.UNREGISTERED, state)
    nxt.flap[:] = np.where(inact, 0.0, flap)
    nxt.n[:] = np.where(inact, 0, n)
    nxt.probation[:] = np.where(inact, 0, probation)
    nxt.memory[:] = np.where(inact, 0, memory)
    nxt.e_ok[:] = np.where(inact, 0.0, e_ok)
    nxt.e_err[:] = np.where(inact, 0.0, e_err)
    out.score[:] = np.where(inact, 0.0, score)
    out.raw[:] = np.where(inact, 0.0, raw)
    out.wait[:] = np.where(inact, 0.0, wait)
    out.liveness[:] = np.where(inact, 0.0, L)
    out.counts[:] = np.bincount(state[act], minlength=p.N_STATES)[: p.N_STATES]
    cand_slots = np.flatnonzero(act & (score > 0.0))
    order = cand_slots[np.lexsort((cand_slots, -score[cand_slots]))]
    m = order.shape[0]
    out.ranked[:m] = order
    return m, P, live
