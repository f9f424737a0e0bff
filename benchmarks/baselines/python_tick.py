"""SCORING.md (version 2) steps 1-14 per node in plain Python: the "obvious" baseline.

A dict ``{node_id: Node}`` in registration order (which plays the role of
slot order for the quarantine admissions and the ranking tiebreak), one
object per node holding its latest heartbeat and its carried state, and a
loop over them per pass (R by sorting the rates).  This is what a scheduler
author would write first; the harness times it against the kernels.
Checked against `kernels.tick` in tests/test_baselines.py.
"""

from __future__ import annotations

import math

from kernels import params as p

_I32_MAX = 2147483647
_H, _D, _O, _Q, _X = p.HEALTHY, p.DEGRADED, p.OVERLOADED, p.QUARANTINED, p.DEAD


class Node:
    """Latest heartbeat (set by the caller) and the state carried across ticks."""

    __slots__ = (
        "cpu",
        "mem",
        "queue",
        "avg_job_s",
        "throughput",
        "ok",
        "err",
        "io",
        "p50_ms",
        "p95_ms",
        "reported",
        "slots",
        "rif",
        "fb_ok",
        "fb_err",
        "consec",
        "err_age",
        "age",
        "new_hb",
        "first",
        "qema",
        "s",
        "state",
        "flap",
        "n",
        "probation",
        "memory",
        "e_ok",
        "e_err",
        "wait",
        "load",
        "L",
        "raw",
        "score",
        "_trip",
    )

    def __init__(self):
        self.cpu = self.mem = self.queue = self.avg_job_s = 0.0
        self.throughput = self.ok = self.err = self.io = 0.0
        self.p50_ms = self.p95_ms = 0.0
        self.reported = 0
        self.slots = 1.0
        self.rif = self.fb_ok = self.fb_err = self.consec = 0.0
        self.err_age = math.inf
        self.age = 0.0
        self.new_hb = True
        self.first = True
        self.qema = self.s = self.flap = self.e_ok = self.e_err = 0.0
        self.state = -1
        self.n = self.probation = self.memory = 0
        self.wait = self.load = self.L = self.raw = self.score = 0.0
        self._trip = False


def python_tick(nodes: dict, params) -> tuple[list, float, int]:
    """One tick over ``nodes`` (id -> Node, in slot order).  Updates each node
    in place and clears its ``first``/``new_hb``; returns (ranking as node ids,
    P, live count)."""
    pr = [float(x) for x in params]
    a = pr[p.ALPHA_QUEUE]
    sus, dead = pr[p.SUSPECT_AFTER_S], pr[p.DEAD_AFTER_S]
    max_wait, max_cpu, max_mem = pr[p.MAX_WAIT_S], pr[p.MAX_CPU], pr[p.MAX_MEM]
    d = 0.5 ** (pr[p.TICK_INTERVAL_MS] / 1000 / pr[p.ERROR_HALF_LIFE_S])
    live = 0
    p_sum = 0.0
    rates = []
    for nd in nodes.values():
        if nd.first:
            nd.qema = nd.queue
            nd.e_ok = nd.e_err = 0.0
        elif nd.new_hb:
            nd.qema = a * nd.queue + (1.0 - a) * nd.qema
        nd.load = max(nd.qema, nd.rif - nd.slots, 0.0)
        nd.wait = nd.load * nd.avg_job_s / nd.slots
        new_ok, new_err = nd.fb_ok, nd.fb_err
        if nd.new_hb and nd.reported & p.HAS_OKERR:
            new_ok += nd.ok
            new_err += nd.err
        nd.e_ok = nd.e_ok * d + new_ok
        nd.e_err = nd.e_err * d + new_err
        age = nd.age
        nd.L = 1.0 if age <= sus else 0.0 if age >= dead else (dead - age) / (dead - sus)
        if nd.L > 0.0:
            live += 1
            p_sum += min(nd.wait / max_wait, 1.0)
            if nd.avg_job_s > 0.0:
                rates.append(nd.slots / nd.avg_job_s)
    P = p_sum / live if live else 0.0
    R = sorted(rates)[math.ceil(0.9 * len(rates)) - 1] if rates else 0.0
    base = (
        pr[p.W_CPU],
        pr[p.W_MEM],
        pr[p.W_IO],
        pr[p.W_WAIT],
        pr[p.W_RATE],
        pr[p.W_SUCCESS],
        pr[p.W_TAIL],
    )
    k1, k2 = pr[p.K1], pr[p.K2]
    w = (base[0], base[1], base[2], base[3] + k1 * P, base[4] + k2 * P, base[5], base[6])
    mq, lc = pr[p.MAX_QUEUE], pr[p.LIMIT_CRITICAL]
    t_deg, t_over, delta = pr[p.T_DEGRADED], pr[p.T_OVERLOADED], pr[p.DELTA]
    beta = pr[p.BETA]
    decay = 1.0 - 1.0 / pr[p.FLAP_WINDOW]
    n_q = 0
    for nd in nodes.values():
        rep = nd.reported
        p_i = min(nd.wait / max_wait, 1.0)
        if nd.L == 0.0:
            P_i = P
        else:
            P_i = (p_sum - p_i) / (live - 1) if live > 1 else 0.0
        num = w[0] * (1.0 - min(nd.cpu / max_cpu, 1.0))
        den = w[0]
        num += w[1] * (1.0 - min(nd.mem / max_mem, 1.0))
        den += w[1]
        if rep & p.HAS_IO:
            num += w[2] * (1.0 - nd.io)
            den += w[2]
        w_wait = base[3] + k1 * P_i
        num += w_wait * (1.0 - p_i)
        den += w_wait
        if nd.avg_job_s > 0.0:
            w_rate = base[4] + k2 * P_i
            rate = nd.slots / nd.avg_job_s
            num += w_rate * (1.0 if rate >= R else rate / R)
            den += w_rate
        num += w[5] * ((nd.e_ok + 1.0) / (nd.e_ok + nd.e_err + 1.0))
        den += w[5]
        if rep & p.HAS_TAIL:
            r = nd.p95_ms / nd.p50_ms
            num += w[6] * (1.0 - min(max(r - 1.0, 0.0) / (pr[p.MAX_TAIL_RATIO] - 1.0), 1.0))
            den += w[6]
        core = num / den
        load = nd.load
        B = min(max((mq - load) / (mq - lc), 0.0), 1.0)
        trip = load >= mq or nd.wait >= max_wait or nd.cpu >= max_cpu or nd.mem >= max_mem
        total = nd.e_ok + nd.e_err
        if not trip:
            trip = (
                total > 0.0
                and total >= pr[p.MIN_REQUESTS]
                and nd.e_err / total >= pr[p.MAX_ERROR_RATE]
            )
        if not trip:
            trip = nd.consec >= pr[p.MAX_CONSECUTIVE_ERRORS] and nd.err_age < pr[p.EJECTION_S]
        L = nd.L
        raw = 0.0 if (trip or L == 0.0) else L * B * core
        first = nd.first
        if trip or L == 0.0:
            s = 0.0
        else:
            s = beta * raw + (1.0 - beta) * (raw if first else nd.s)
        pst = nd.state
        if L == 0.0:
            st = _X
        elif first or pst == _X:
            st = _O if (trip or s < t_over) else _D if s < t_deg else _H
        elif pst == _Q:
            st = _Q
        elif trip:
            st = _O
        elif pst == _H:
            st = _O if s < t_over else _D if s < t_deg else _H
        elif pst == _D:
            st = _O if s < t_over else _H if s >= t_deg + delta else _D
        else:
            st = _H if s >= t_deg + delta else _D if s >= t_over + delta else _O
        c = 0 if (first or pst > _O or st > _O or pst == st) else 1
        n = 0 if first else nd.n
        flap = (0.0 if first else nd.flap) * decay + c
        prob = 0
        if not first and pst == _Q and L > 0.0:
            if not trip and raw >= t_deg + delta:
                prob = nd.probation + 1 if nd.probation < _I32_MAX else nd.probation
            if prob >= pr[p.PROBATION_TICKS] * min(float(n), pr[p.MAX_BACKOFF]):
                st, flap, prob = _H, 0.0, 0
        if st == _Q:
            n_q += 1
        nd.raw, nd.s, nd.state, nd.flap, nd.n, nd.probation = raw, s, st, flap, n, prob
        nd._trip = trip
    cap = int(math.floor(pr[p.MAX_QUARANTINED_FRACTION] * live))
    ranked = []
    for key, nd in nodes.items():
        st = nd.state
        if n_q < cap and st <= _O and nd.flap >= pr[p.MAX_FLAPS]:
            st = nd.state = _Q
            nd.n += 1
            nd.probation = 0
            n_q += 1
        mprev = 0 if nd.first else nd.memory
        if st == _Q or st == _X:
            nd.memory = 0
        else:
            nd.memory = mprev + 1 if mprev < _I32_MAX else mprev
            if nd.memory >= pr[p.QUARANTINE_MEMORY]:
                nd.n = 0
        nd.score = nd.s if st <= _D else 0.0
        nd.first = False
        nd.new_hb = False
        if nd.score > 0.0:
            ranked.append((-nd.score, len(ranked), key))
    ranked.sort()  # index as tiebreak keeps registration (slot) order
    return [k for _s, _i, k in ranked], P, live
