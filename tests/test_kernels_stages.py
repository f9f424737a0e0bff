"""Table-driven tests of each kernel stage, with the arithmetic in the comments.

Parameters are SCORING.md's defaults unless a row says otherwise.
"""

import math

import numpy as np
import pytest

from kernels import DEAD, DEGRADED, HEALTHY, OVERLOADED, QUARANTINED, UNREGISTERED
from kernels import HAS_IO, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT, default_params
from kernels.backpressure import backpressure
from kernels.breaker import tripped
from kernels.goodness import g_cpu, g_io, g_mem, g_succ, g_tail, g_tput, g_wait
from kernels.hysteresis import changed, classify_fresh, next_state
from kernels.liveness import liveness
from kernels.pressure import pressure, pressure_term
from kernels.quarantine import (flap_update, is_candidate, memory_step,
                                probation_step, quarantine_cap, release_due)
from kernels.queue import queue_ema, sojourn
from kernels.ranking import published, sort_ranked
from kernels.smoothing import raw_score, smooth
from kernels.weights import core, weights_in_effect

ALL = HAS_THROUGHPUT | HAS_OKERR | HAS_IO | HAS_TAIL


# ---- steps 1-2: queue EMA and sojourn

@pytest.mark.parametrize("first, new_hb, queue, qema_prev, expected", [
    (True, True, 8.0, 77.0, 8.0),     # first tick: qema = queue, prev ignored
    (True, False, 8.0, 77.0, 8.0),    # first tick without "new" still starts at queue
    (False, True, 10.0, 20.0, 17.0),  # 0.3*10 + 0.7*20 = 3 + 14 = 17
    (False, True, 0.0, 10.0, 7.0),    # 0.3*0 + 0.7*10 = 7
    (False, False, 10.0, 20.0, 20.0), # no heartbeat: unchanged
])
def test_queue_ema(first, new_hb, queue, qema_prev, expected):
    assert queue_ema(first, new_hb, queue, qema_prev, 0.3) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("qema, avg_job_s, expected", [
    (4.0, 2.5, 10.0),   # wait = 4 * 2.5 = 10 s
    (0.0, 9.0, 0.0),    # empty queue waits nothing
    (17.0, 0.0, 0.0),   # instant jobs wait nothing
])
def test_sojourn(qema, avg_job_s, expected):
    assert sojourn(qema, avg_job_s) == expected


# ---- step 3: goodness

@pytest.mark.parametrize("fn, args, expected", [
    (g_cpu, (0.49, 0.98), 0.5),        # 1 - 0.49/0.98 = 0.5
    (g_cpu, (0.98, 0.98), 0.0),        # at the limit
    (g_cpu, (1.0, 0.98), 0.0),         # 1 - min(1.0204, 1) = 0
    (g_mem, (0.19, 0.95), 0.8),        # 1 - 0.19/0.95 = 0.8
    (g_mem, (0.0, 0.95), 1.0),
    (g_io, (0.25,), 0.75),             # 1 - 0.25
    (g_wait, (10.0, 30.0), 2 / 3),     # wait = 4 * 2.5 = 10; 1 - 10/30 = 0.6667
    (g_wait, (45.0, 30.0), 0.0),       # 1 - min(1.5, 1) = 0
    (g_wait, (math.inf, 30.0), 0.0),   # overflowed wait saturates
    (g_tput, (50.0, 200.0), 0.25),     # 50 / T=200
    (g_tput, (0.0, 0.0), 1.0),         # T = 0: 1 by definition
    (g_succ, (8.0, 0.0), 0.9),         # (8+1)/(8+0+2) = 0.9
    (g_succ, (0.0, 0.0), 0.5),         # (0+1)/(0+0+2) = 0.5
    (g_succ, (1.0, 7.0), 0.2),         # (1+1)/(1+7+2) = 0.2
    (g_tail, (10.0, 20.0, 3.0), 0.5),  # ratio 2: 1 - (2-1)/(3-1) = 0.5
    (g_tail, (10.0, 10.0, 3.0), 1.0),  # ratio 1: 1 - 0/2 = 1
    (g_tail, (10.0, 40.0, 3.0), 0.0),  # ratio 4: 1 - min(3/2, 1) = 0
])
def test_goodness(fn, args, expected):
    assert fn(*args) == pytest.approx(expected, abs=1e-12)


# ---- step 4: liveness (suspect 2 s, dead 10 s)

@pytest.mark.parametrize("age, expected", [
    (0.0, 1.0),
    (2.0, 1.0),      # age <= suspect: 1
    (2.05, 0.99375), # (10 - 2.05) / (10 - 2) = 7.95/8
    (6.0, 0.5),      # (10 - 6) / 8
    (9.99, 0.00125), # (10 - 9.99) / 8
    (10.0, 0.0),     # age >= dead: 0
    (300.0, 0.0),
])
def test_liveness(age, expected):
    assert liveness(age, 2.0, 10.0) == pytest.approx(expected, abs=1e-12)


# ---- step 5: pressure

def test_pressure():
    # live waits 10, 45, 0 (max_wait 30): terms 1/3, min(1.5, 1) = 1, 0
    terms = [pressure_term(w, 30.0) for w in (10.0, 45.0, 0.0)]
    assert terms == pytest.approx([1 / 3, 1.0, 0.0])
    # P = (1/3 + 1 + 0) / 3 = 0.4444
    assert pressure(sum(terms), 3) == pytest.approx(4 / 9)
    assert pressure(0.0, 0) == 0.0  # no live node


# ---- step 6: weights in effect and core

def test_weights_in_effect():
    w = np.zeros(7)
    weights_in_effect(default_params(), 0.4, w)
    # wait 0.25 + 0.5*0.4 = 0.45; throughput 0.15 + 0.3*0.4 = 0.27
    assert w == pytest.approx([0.20, 0.15, 0.05, 0.45, 0.27, 0.15, 0.05])


W0 = np.array([0.20, 0.15, 0.05, 0.25, 0.15, 0.15, 0.05])


@pytest.mark.parametrize("reported, g, expected", [
    # cpu/mem/wait only: (0.2*0.5 + 0.15*0.8 + 0.25*1) / 0.6 = 0.47/0.6 = 0.78333
    (0, (0.5, 0.8, 0.0, 1.0, 0.0, 0.0, 0.0), 0.47 / 0.6),
    # + io 0.75: (0.47 + 0.05*0.75) / 0.65 = 0.5075/0.65 = 0.78077
    (HAS_IO, (0.5, 0.8, 0.75, 1.0, 0.0, 0.0, 0.0), 0.5075 / 0.65),
    # + throughput 0.25: (0.47 + 0.15*0.25) / 0.75 = 0.5075/0.75 = 0.67667
    (HAS_THROUGHPUT, (0.5, 0.8, 0.0, 1.0, 0.25, 0.0, 0.0), 0.5075 / 0.75),
    # + success 0.9: (0.47 + 0.15*0.9) / 0.75 = 0.605/0.75 = 0.80667
    (HAS_OKERR, (0.5, 0.8, 0.0, 1.0, 0.0, 0.9, 0.0), 0.605 / 0.75),
    # + tail 0.5: (0.47 + 0.05*0.5) / 0.65 = 0.495/0.65 = 0.76154
    (HAS_TAIL, (0.5, 0.8, 0.0, 1.0, 0.0, 0.0, 0.5), 0.495 / 0.65),
    # everything reported and perfect: 1.0 / 1.0
    (ALL, (1.0,) * 7, 1.0),
    # unreported values are ignored even if garbage (nan)
    (0, (0.5, 0.8, math.nan, 1.0, math.nan, math.nan, math.nan), 0.47 / 0.6),
])
def test_core(reported, g, expected):
    assert core(W0, reported, *g) == pytest.approx(expected, abs=1e-12)


# ---- step 7: backpressure (max_queue 100, limit_critical 50)

@pytest.mark.parametrize("qema, expected", [
    (0.0, 1.0),     # (100-0)/50 = 2 -> clamped to 1
    (50.0, 1.0),    # (100-50)/50 = 1
    (75.0, 0.5),    # (100-75)/50 = 0.5
    (100.0, 0.0),   # 0
    (150.0, 0.0),   # -1 -> clamped to 0
])
def test_backpressure(qema, expected):
    assert backpressure(qema, 100.0, 50.0) == expected


# ---- step 8: breaker

def _trip(qema=0.0, wait=0.0, cpu=0.0, mem=0.0, reported=0, ok=0.0, err=0.0, min_requests=20.0):
    return tripped(qema, wait, cpu, mem, reported, ok, err,
                   100.0, 30.0, 0.98, 0.95, min_requests, 0.5)


@pytest.mark.parametrize("kwargs, expected", [
    ({}, False),
    (dict(qema=99.9), False),
    (dict(qema=100.0), True),                 # qema >= max_queue
    (dict(wait=29.9), False),
    (dict(wait=30.0), True),                  # wait >= max_wait_s
    (dict(cpu=0.979), False),
    (dict(cpu=0.98), True),                   # cpu >= max_cpu
    (dict(mem=0.95), True),                   # mem >= max_mem
    (dict(reported=HAS_OKERR, ok=10.0, err=10.0), True),   # 20 >= 20 and 10/20 = 0.5 >= 0.5
    (dict(reported=HAS_OKERR, ok=10.0, err=9.0), False),   # 19 < 20 requests
    (dict(reported=HAS_OKERR, ok=11.0, err=9.0), False),   # 9/20 = 0.45 < 0.5
    (dict(reported=HAS_OKERR, ok=0.0, err=100.0), True),   # 100/100 = 1
    (dict(reported=0, ok=0.0, err=100.0), False),          # ok/err not reported
    (dict(reported=HAS_OKERR, min_requests=0.0), False),   # 0 jobs: rate undefined
])
def test_breaker(kwargs, expected):
    assert _trip(**kwargs) is expected


# ---- steps 9-10: raw and smoothing (beta 0.5)

@pytest.mark.parametrize("is_tripped, L, B, c, expected", [
    (False, 1.0, 1.0, 0.8, 0.8),
    (False, 0.5, 0.5, 0.8, 0.2),    # 0.5 * 0.5 * 0.8
    (True, 1.0, 1.0, 0.8, 0.0),     # tripped publishes 0
    (False, 0.0, 1.0, 0.8, 0.0),    # dead
])
def test_raw(is_tripped, L, B, c, expected):
    assert raw_score(is_tripped, L, B, c) == pytest.approx(expected)


@pytest.mark.parametrize("is_tripped, L, raw, s_prev, first, expected", [
    (False, 1.0, 0.8, 0.4, False, 0.6),   # 0.5*0.8 + 0.5*0.4
    (False, 1.0, 0.8, 0.4, True, 0.8),    # first tick: s_prev = raw -> 0.8
    (True, 1.0, 0.0, 0.9, False, 0.0),    # tripped bypasses smoothing
    (False, 0.0, 0.0, 0.9, False, 0.0),   # L = 0 bypasses smoothing
    (False, 0.5, 0.2, 0.0, False, 0.1),   # revival starts from s_prev = 0: 0.5*0.2
])
def test_smooth(is_tripped, L, raw, s_prev, first, expected):
    assert smooth(is_tripped, L, raw, s_prev, first, 0.5) == pytest.approx(expected)


# ---- step 11: state (t_degraded 0.4, t_overloaded 0.2, delta 0.1)

H, D, O, Q, X = HEALTHY, DEGRADED, OVERLOADED, QUARANTINED, DEAD


@pytest.mark.parametrize("prev, first, L, trip, s, expected", [
    (H, False, 0.0, False, 0.9, X),   # L = 0: DEAD, whatever else
    (Q, False, 0.0, False, 0.9, X),   # death ends quarantine
    (H, True, 1.0, False, 0.45, H),   # fresh: 0.45 >= 0.4
    (O, True, 1.0, False, 0.45, H),   # fresh ignores prev (first tick)
    (X, False, 1.0, False, 0.45, H),  # revival: fresh, where O would say D
    (X, False, 1.0, False, 0.3, D),   # fresh: 0.2 <= 0.3 < 0.4
    (X, False, 1.0, False, 0.1, O),   # fresh: 0.1 < 0.2
    (X, False, 1.0, True, 0.9, O),    # fresh and tripped
    (Q, False, 1.0, False, 0.9, Q),   # quarantined: step 12 decides
    (Q, False, 1.0, True, 0.0, Q),    # ... even when tripped
    (H, False, 1.0, True, 0.9, O),    # tripped: OVERLOADED
    (H, False, 1.0, False, 0.4, H),   # H stays while s >= 0.4
    (H, False, 1.0, False, 0.39, D),  # H -> D below 0.4
    (H, False, 1.0, False, 0.19, O),  # H -> O below 0.2
    (D, False, 1.0, False, 0.49, D),  # D needs 0.4 + 0.1 = 0.5 to go up
    (D, False, 1.0, False, 0.5, H),   # 0.5 >= 0.5
    (D, False, 1.0, False, 0.2, D),   # 0.2 is not < 0.2
    (D, False, 1.0, False, 0.19, O),
    (O, False, 1.0, False, 0.3, O),   # 0.3 < 0.2 + 0.1 = 0.30000000000000004
    (O, False, 1.0, False, 0.31, D),  # >= 0.3 band
    (O, False, 1.0, False, 0.49, D),
    (O, False, 1.0, False, 0.5, H),   # straight to HEALTHY
])
def test_next_state(prev, first, L, trip, s, expected):
    assert next_state(prev, first, L, trip, s, 0.4, 0.2, 0.1) == expected


def test_classify_fresh():
    assert classify_fresh(False, 0.4, 0.4, 0.2) == H
    assert classify_fresh(False, 0.2, 0.4, 0.2) == D
    assert classify_fresh(False, 0.19, 0.4, 0.2) == O


@pytest.mark.parametrize("prev, new, first, expected", [
    (H, D, False, 1), (D, O, False, 1), (O, H, False, 1),
    (H, H, False, 0),
    (H, D, True, 0),             # first tick
    (X, H, False, 0),            # revival
    (H, X, False, 0),            # death
    (Q, H, False, 0),            # release
    (H, Q, False, 0),
    (UNREGISTERED, H, False, 0),
])
def test_changed(prev, new, first, expected):
    assert changed(prev, new, first) == expected


# ---- step 12: quarantine pieces (flap_window 50, max_flaps 6)

def test_flap_update():
    # 2.0 * (1 - 1/50) + 1 = 2.0*0.98 + 1 = 2.96
    assert flap_update(2.0, 1, 50.0) == pytest.approx(2.96)
    # decay only: 2.0 * 0.98 = 1.96
    assert flap_update(2.0, 0, 50.0) == pytest.approx(1.96)


@pytest.mark.parametrize("count, trip, raw, expected", [
    (4, False, 0.5, 5),    # 0.5 >= 0.4 + 0.1: good tick
    (4, False, 0.49, 0),   # below 0.5: restart
    (4, True, 0.9, 0),     # tripped: restart
])
def test_probation_step(count, trip, raw, expected):
    assert probation_step(count, trip, raw, 0.4, 0.1) == expected


@pytest.mark.parametrize("count, n, expected", [
    (29, 1, False), (30, 1, True),      # 30 * min(1, 8) = 30
    (59, 2, False), (60, 2, True),      # 30 * min(2, 8) = 60
    (239, 9, False), (240, 9, True),    # 30 * min(9, 8) = 240
])
def test_release_due(count, n, expected):
    assert release_due(count, n, 30.0, 8.0) is expected


@pytest.mark.parametrize("fraction, live, expected", [
    (0.5, 0, 0), (0.5, 1, 0), (0.5, 2, 1), (0.5, 5, 2),  # floor(2.5) = 2
    (0.5, 10000, 5000), (0.0, 10, 0), (1.0, 7, 7),
])
def test_quarantine_cap(fraction, live, expected):
    assert quarantine_cap(fraction, live) == expected


@pytest.mark.parametrize("state, flap, expected", [
    (H, 6.0, True), (D, 6.5, True), (O, 7.0, True), (H, 5.99, False),
    (Q, 9.0, False), (X, 9.0, False),
])
def test_is_candidate(state, flap, expected):
    assert is_candidate(state, flap, 6.0) is expected


@pytest.mark.parametrize("state, memory_prev, n, expected", [
    (H, 0, 2, (1, 2)),
    (D, 998, 2, (999, 2)),
    (O, 999, 2, (1000, 0)),   # 1000 >= quarantine_memory: forget quarantines
    (H, 5000, 0, (5001, 0)),
    (Q, 500, 2, (0, 2)),      # quarantined: count restarts, n kept
    (X, 500, 2, (0, 2)),      # dead: likewise
])
def test_memory_step(state, memory_prev, n, expected):
    assert memory_step(state, memory_prev, n, 1000.0) == expected


# ---- steps 13-14

@pytest.mark.parametrize("state, s, expected", [
    (H, 0.7, 0.7), (D, 0.3, 0.3), (O, 0.7, 0.0), (Q, 0.7, 0.0), (X, 0.7, 0.0),
])
def test_published(state, s, expected):
    assert published(state, s) == expected


@pytest.mark.parametrize("n, levels", [(0, 1), (1, 1), (2, 2), (16, 3), (17, 3),
                                       (300, 4), (3000, 1), (3000, 3000), (20000, 50)])
def test_sort_ranked_matches_lexsort(n, levels):
    rng = np.random.default_rng(n * 7 + levels)
    score = rng.integers(1, levels + 1, n) / levels  # many ties when levels is small
    idx = rng.permutation(n).astype(np.int32)
    sort_ranked(score, idx, n)
    expected = np.lexsort((np.arange(n), -score))  # score desc, slot asc
    assert idx.tolist() == expected.tolist()


def test_sort_ranked_sorts_only_the_prefix():
    score = np.array([0.1, 0.9, 0.5, 0.7])
    idx = np.array([0, 2, 1, 3], np.int32)
    sort_ranked(score, idx, 3)
    assert idx.tolist() == [1, 2, 0, 3]


def test_heapsort_fallback_matches_lexsort():
    from kernels.ranking import _heapsort
    rng = np.random.default_rng(3)
    score = rng.integers(1, 6, 500) / 5
    idx = rng.permutation(500).astype(np.int32)
    _heapsort(score, idx, 0, 500)
    assert idx.tolist() == np.lexsort((np.arange(500), -score)).tolist()
