"""Table-driven tests of each kernel stage, with the arithmetic in the comments.

Parameters are SCORING.md's (version 2) defaults unless a row says otherwise.
"""

import math

import numpy as np
import pytest

from kernels import (
    DEAD,
    DEGRADED,
    HAS_IO,
    HAS_OKERR,
    HAS_TAIL,
    HAS_THROUGHPUT,
    HEALTHY,
    OVERLOADED,
    QUARANTINED,
    UNREGISTERED,
    default_params,
)
from kernels.backpressure import backpressure
from kernels.breaker import ejected, error_rate_tripped, tripped
from kernels.goodness import g_cpu, g_io, g_mem, g_rate, g_succ, g_tail, g_wait, rate
from kernels.hysteresis import changed, classify_fresh, next_state
from kernels.liveness import liveness
from kernels.percentile import SAMPLE_FROM, nearest_rank, rate_reference, sample_select, select
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
from kernels.ranking import published
from kernels.smoothing import raw_score, smooth
from kernels.weights import core, weights_in_effect
from kernels.window import outcomes, window_decay, window_step

ALL = HAS_THROUGHPUT | HAS_OKERR | HAS_IO | HAS_TAIL
DECAY = 0.5 ** (50 / 1000 / 10.0)  # the window's decay per 50 ms tick, half-life 10 s


# ---- steps 1-2: queue EMA and sojourn


@pytest.mark.parametrize(
    "first, new_hb, queue, qema_prev, expected",
    [
        (True, True, 8.0, 77.0, 8.0),  # first tick: qema = queue, prev ignored
        (True, False, 8.0, 77.0, 8.0),  # first tick without "new" still starts at queue
        (False, True, 10.0, 20.0, 17.0),  # 0.3*10 + 0.7*20 = 3 + 14 = 17
        (False, True, 0.0, 10.0, 7.0),  # 0.3*0 + 0.7*10 = 7
        (False, False, 10.0, 20.0, 20.0),  # no heartbeat: unchanged
    ],
)
def test_queue_ema(first, new_hb, queue, qema_prev, expected):
    assert queue_ema(first, new_hb, queue, qema_prev, 0.3) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "qema, rif, slots, expected",
    [
        (4.0, 0.0, 1.0, 4.0),  # no claims: load = qema
        (4.0, 3.0, 1.0, 4.0),  # max(4, 3 - 1, 0) = 4
        (4.0, 10.0, 2.0, 8.0),  # max(4, 10 - 2, 0) = 8: claims the heartbeat has not seen
        (0.0, 3.0, 8.0, 0.0),  # max(0, 3 - 8, 0) = 0: free slots absorb the claims
        (2.5, 2.5, 1.0, 2.5),  # max(2.5, 1.5, 0)
    ],
)
def test_load(qema, rif, slots, expected):
    assert load(qema, rif, slots) == expected


@pytest.mark.parametrize(
    "ld, avg_job_s, slots, expected",
    [
        (4.0, 2.5, 1.0, 10.0),  # wait = 4 * 2.5 / 1 = 10 s
        (8.0, 2.0, 4.0, 4.0),  # 8 * 2 / 4 = 4 s: four jobs run at once
        (0.0, 9.0, 1.0, 0.0),  # nothing waiting waits nothing
        (17.0, 0.0, 3.0, 0.0),  # instant jobs wait nothing
    ],
)
def test_sojourn(ld, avg_job_s, slots, expected):
    assert sojourn(ld, avg_job_s, slots) == expected


# ---- step 2: the error window (half-life 10 s, 50 ms ticks)


def test_window_decay():
    # d = 0.5 ** (50 / 1000 / 10) = 0.5 ** 0.005 = 0.996540...
    assert window_decay(50.0, 10.0) == DECAY
    assert DECAY == pytest.approx(0.9965403, abs=1e-7)
    # 200 ticks of 50 ms are one half-life: d**200 = 0.5
    assert window_decay(50.0, 10.0) ** 200 == pytest.approx(0.5, abs=1e-12)
    assert window_decay(1000.0, 1.0) == 0.5  # one tick = one half-life


@pytest.mark.parametrize(
    "fb, new_hb, reported, hb, expected",
    [
        (3.0, True, HAS_OKERR, 5.0, 8.0),  # feedback 3 + this tick's heartbeat 5
        (3.0, False, HAS_OKERR, 5.0, 3.0),  # no new heartbeat: its count was used already
        (3.0, True, HAS_IO, 5.0, 3.0),  # the heartbeat does not report ok/err
        (0.0, True, ALL, 7.0, 7.0),
        (0.0, False, 0, 9.0, 0.0),
    ],
)
def test_outcomes(fb, new_hb, reported, hb, expected):
    assert outcomes(fb, new_hb, reported, hb) == expected


@pytest.mark.parametrize(
    "first, e_prev, new, expected",
    [
        (False, 10.0, 2.0, 10.0 * DECAY + 2.0),  # 9.96540 + 2 = 11.96540
        (False, 10.0, 0.0, 10.0 * DECAY),  # decay only (a silent or dead node too)
        (True, 10.0, 2.0, 2.0),  # first tick: the earlier occupant's 10 is ignored
        (True, 0.0, 0.0, 0.0),
    ],
)
def test_window_step(first, e_prev, new, expected):
    assert window_step(first, e_prev, DECAY, new) == expected


# # ---- step 3: goodness


@pytest.mark.parametrize(
    "fn, args, expected",
    [
        (g_cpu, (0.49, 0.98), 0.5),  # 1 - 0.49/0.98 = 0.5
        (g_cpu, (0.98, 0.98), 0.0),  # at the limit
        (g_cpu, (1.0, 0.98), 0.0),  # 1 - min(1.0204, 1) = 0
        (g_mem, (0.19, 0.95), 0.8),  # 1 - 0.19/0.95 = 0.8
        (g_mem, (0.0, 0.95), 1.0),
        (g_io, (0.25,), 0.75),  # 1 - 0.25
        (g_wait, (10.0, 30.0), 2 / 3),  # wait = 4 * 2.5 = 10; 1 - 10/30 = 0.6667
        (g_wait, (45.0, 30.0), 0.0),  # 1 - min(1.5, 1) = 0
        (g_wait, (math.inf, 30.0), 0.0),  # overflowed wait saturates
        (rate, (4.0, 0.5), 8.0),  # 4 slots / 0.5 s = 8 jobs/s
        (rate, (1.0, 4.0), 0.25),  # 1 slot / 4 s
        (g_rate, (5.0, 10.0), 0.5),  # min(5/10, 1)
        (g_rate, (10.0, 10.0), 1.0),  # at R
        (g_rate, (20.0, 10.0), 1.0),  # min(2, 1): above the 90th percentile
        (g_rate, (math.inf, 10.0), 1.0),  # avg_job_s tiny enough to overflow the rate
        (g_rate, (3.0, math.inf), 0.0),  # 3 / inf
        (g_rate, (3.0, 0.0), 1.0),  # R = 0: no live node with avg_job_s > 0
        (g_succ, (0.0, 0.0), 1.0),  # (0+1)/(0+0+1): no outcomes, no penalty
        (g_succ, (8.0, 0.0), 1.0),  # (8+1)/(8+0+1)
        (g_succ, (1.0, 7.0), 2 / 9),  # (1+1)/(1+7+1) = 0.2222
        (g_succ, (9.0, 1.0), 10 / 11),  # (9+1)/(9+1+1) = 0.9091
        (g_succ, (2.5, 2.5), 3.5 / 6),  # decayed counts: (2.5+1)/(5+1) = 0.5833
        (g_tail, (10.0, 20.0, 3.0), 0.5),  # ratio 2: 1 - (2-1)/(3-1) = 0.5
        (g_tail, (10.0, 10.0, 3.0), 1.0),  # ratio 1: 1 - 0/2 = 1
        (g_tail, (10.0, 40.0, 3.0), 0.0),  # ratio 4: 1 - min(3/2, 1) = 0
    ],
)
def test_goodness(fn, args, expected):
    assert fn(*args) == pytest.approx(expected, abs=1e-12)


# ---- step 3: R, the nearest-rank 90th percentile of the live rates


@pytest.mark.parametrize(
    "m, expected",
    [
        (1, 0),
        (2, 1),
        (9, 8),  # ceil(0.9*m) - 1 = m - 1 below 10: the maximum
        (10, 8),  # ceil(9.0) - 1 = 8
        (11, 9),  # ceil(9.9) - 1 = 9
        (20, 17),  # ceil(18.0) - 1 = 17
        (21, 18),  # ceil(18.9) - 1 = 18
        (100, 89),
        (101, 90),  # ceil(90.0) - 1, ceil(90.9) - 1
        (1_000_000, 899_999),
    ],
)
def test_nearest_rank(m, expected):
    assert nearest_rank(m) == expected


def test_nearest_rank_equals_the_float_definition():
    # ceil(0.9*m) in float64 agrees with the integer form for every m the
    # engine can have (capacity <= 2**24 is far beyond this range's checks)
    for m in list(range(1, 5000)) + [65535, 65536, 999_999, 1_000_000, 2**24]:
        assert nearest_rank(m) == math.ceil(0.9 * m) - 1


@pytest.mark.parametrize(
    "rates, expected",
    [
        ([], 0.0),  # m = 0: no reference
        ([5.0], 5.0),  # m = 1: the maximum
        ([3.0, 1.0, 2.0], 3.0),  # m = 3 < 10: the maximum
        ([float(i) for i in range(9, 0, -1)], 9.0),  # m = 9: the maximum
        ([float(i) for i in range(1, 11)], 9.0),  # m = 10: r_8 = 9, not the max 10
        ([float(i) for i in range(1, 21)], 18.0),  # m = 20: r_17 = 18
        ([1.0] * 18 + [1e300, math.inf], 1.0),  # two absurd rates cannot move R
        ([2.0] * 30, 2.0),  # all equal
    ],
)
def test_rate_reference(rates, expected):
    arr = np.array(rates + [123.0])  # a value past m must be ignored
    assert rate_reference(arr, len(rates), np.zeros(arr.shape[0])) == expected


@pytest.mark.parametrize(
    "kind", ["uniform", "ties", "sorted", "reversed", "equal", "binades", "with_inf", "organ"]
)
@pytest.mark.parametrize(
    "m", [1, 2, 9, 10, 11, 16, 17, 100, 1000, SAMPLE_FROM - 1, SAMPLE_FROM, 50_000]
)
def test_rate_reference_equals_sorting(kind, m):
    rng = np.random.default_rng(m + len(kind))
    rates = {
        "uniform": lambda: rng.uniform(0.01, 100.0, m),
        "ties": lambda: rng.integers(1, 5, m) / 2.0,
        "sorted": lambda: np.sort(rng.uniform(0.01, 100.0, m)),
        "reversed": lambda: np.sort(rng.uniform(0.01, 100.0, m))[::-1].copy(),
        "equal": lambda: np.full(m, 3.5),
        "binades": lambda: 2.0 ** rng.uniform(-40, 40, m),
        "with_inf": lambda: np.where(rng.random(m) < 0.15, math.inf, rng.uniform(1, 2, m)),
        "organ": lambda: np.concatenate([np.arange(m // 2), np.arange(m - m // 2)[::-1]]) + 1.0,
    }[kind]()
    expected = np.sort(rates)[math.ceil(0.9 * m) - 1]
    work = rates.copy()
    assert rate_reference(work, m, np.zeros(m)) == expected
    assert sorted(work.tolist()) == sorted(rates.tolist())  # reordered, nothing lost
    k = nearest_rank(m)
    if m > 16:  # select's contract: a[:k] <= a[k] <= a[k+1:]
        work = rates.copy()
        assert select(work, m, k) == expected
        assert work[:k].max() <= work[k] <= work[k + 1 :].min()


def test_sample_select_falls_back_when_the_sample_misleads():
    # The strided sample (every 21st value for m = 10000: s = 465 = ceil(m**(2/3)),
    # step = 10000 // 465 = 21) sees only tiny values, so its brackets exclude
    # the 90th percentile; the fallback must still find it.
    m = 10_000
    rates = 1000.0 + np.arange(m, dtype=np.float64)
    rates[0 : 465 * 21 : 21] = 0.001 * np.arange(1, 466)
    expected = np.sort(rates)[nearest_rank(m)]
    assert sample_select(rates.copy(), m, nearest_rank(m), np.zeros(m)) == expected
    # and a sample that brackets it right
    rng = np.random.default_rng(5)
    rates = rng.uniform(0.1, 9.0, m)
    assert sample_select(rates.copy(), m, 4321, np.zeros(m)) == np.sort(rates)[4321]


# ---- step 4: liveness (suspect 2 s, dead 10 s)


@pytest.mark.parametrize(
    "age, expected",
    [
        (0.0, 1.0),
        (2.0, 1.0),  # age <= suspect: 1
        (2.05, 0.99375),  # (10 - 2.05) / (10 - 2) = 7.95/8
        (6.0, 0.5),  # (10 - 6) / 8
        (9.99, 0.00125),  # (10 - 9.99) / 8
        (10.0, 0.0),  # age >= dead: 0
        (300.0, 0.0),
    ],
)
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


S3 = 1 / 3 + 1.0 + 0.0  # S of the three live nodes above


@pytest.mark.parametrize(
    "term_sum, live, is_live, p_i, P, expected",
    [
        (S3, 3, True, 1 / 3, 4 / 9, 0.5),  # (4/3 - 1/3) / 2: the others' mean
        (S3, 3, True, 1.0, 4 / 9, 1 / 6),  # (4/3 - 1) / 2
        (S3, 3, True, 0.0, 4 / 9, 2 / 3),  # (4/3 - 0) / 2
        (S3, 3, False, 0.9, 4 / 9, 4 / 9),  # not live: P
        (0.7, 1, True, 0.7, 0.7, 0.0),  # the only live node: 0
        (0.0, 0, False, 0.2, 0.0, 0.0),  # nothing live
    ],
)
def test_node_pressure(term_sum, live, is_live, p_i, P, expected):
    assert node_pressure(term_sum, live, is_live, p_i, P) == pytest.approx(expected, abs=1e-15)


# ---- step 6: weights in effect and core


def test_weights_in_effect():
    w = np.zeros(7)
    weights_in_effect(default_params(), 0.4, w)
    # wait 0.25 + 0.5*0.4 = 0.45; rate 0.15 + 0.3*0.4 = 0.27
    assert w == pytest.approx([0.20, 0.15, 0.05, 0.45, 0.27, 0.15, 0.05])


W0 = np.array([0.20, 0.15, 0.05, 0.25, 0.15, 0.15, 0.05])


@pytest.mark.parametrize(
    "reported, has_rate, g, expected",
    [
        # cpu/mem/wait/success: (0.2*0.5 + 0.15*0.8 + 0.25*1 + 0.15*0.9) / 0.75 = 0.605/0.75
        (0, False, (0.5, 0.8, 0.0, 1.0, 0.0, 0.9, 0.0), 0.605 / 0.75),
        # + io 0.75: (0.605 + 0.05*0.75) / 0.80 = 0.6425/0.80 = 0.80312
        (HAS_IO, False, (0.5, 0.8, 0.75, 1.0, 0.0, 0.9, 0.0), 0.6425 / 0.80),
        # + rate 0.25 (avg_job_s > 0): (0.605 + 0.15*0.25) / 0.90 = 0.6425/0.90 = 0.71389
        (0, True, (0.5, 0.8, 0.0, 1.0, 0.25, 0.9, 0.0), 0.6425 / 0.90),
        # + tail 0.5: (0.605 + 0.05*0.5) / 0.80 = 0.63/0.80 = 0.7875
        (HAS_TAIL, False, (0.5, 0.8, 0.0, 1.0, 0.0, 0.9, 0.5), 0.63 / 0.80),
        # ok/err reported or not, success is scored the same (it reads the window)
        (HAS_OKERR, False, (0.5, 0.8, 0.0, 1.0, 0.0, 0.9, 0.0), 0.605 / 0.75),
        # throughput is shown, not scored: its bit changes nothing
        (HAS_THROUGHPUT, False, (0.5, 0.8, 0.0, 1.0, 0.0, 0.9, 0.0), 0.605 / 0.75),
        # everything present and perfect: 1.0 / 1.0
        (ALL, True, (1.0,) * 7, 1.0),
        # absent terms are ignored even if garbage (nan)
        (0, False, (0.5, 0.8, math.nan, 1.0, math.nan, 0.9, math.nan), 0.605 / 0.75),
    ],
)
def test_core(reported, has_rate, g, expected):
    assert core(W0, reported, has_rate, *g) == pytest.approx(expected, abs=1e-12)


# ---- step 7: backpressure on the load (max_queue 100, limit_critical 50)


@pytest.mark.parametrize(
    "ld, expected",
    [
        (0.0, 1.0),  # (100-0)/50 = 2 -> clamped to 1
        (50.0, 1.0),  # (100-50)/50 = 1
        (75.0, 0.5),  # (100-75)/50 = 0.5
        (100.0, 0.0),  # 0
        (150.0, 0.0),  # -1 -> clamped to 0
    ],
)
def test_backpressure(ld, expected):
    assert backpressure(ld, 100.0, 50.0) == expected


# ---- step 8: breaker (max_queue 100, max_wait 30, max_cpu 0.98, max_mem 0.95,
# min_requests 10, max_error_rate 0.5, max_consecutive_errors 5, ejection_s 5)


def _trip(
    load=0.0,
    wait=0.0,
    cpu=0.0,
    mem=0.0,
    e_ok=0.0,
    e_err=0.0,
    consec=0.0,
    err_age=math.inf,
    min_requests=10.0,
):
    return tripped(
        load,
        wait,
        cpu,
        mem,
        e_ok,
        e_err,
        consec,
        err_age,
        100.0,
        30.0,
        0.98,
        0.95,
        min_requests,
        0.5,
        5.0,
        5.0,
    )


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, False),
        (dict(load=99.9), False),
        (dict(load=100.0), True),  # load >= max_queue
        (dict(wait=29.9), False),
        (dict(wait=30.0), True),  # wait >= max_wait_s
        (dict(cpu=0.979), False),
        (dict(cpu=0.98), True),  # cpu >= max_cpu
        (dict(mem=0.95), True),  # mem >= max_mem
        (dict(e_ok=5.0, e_err=5.0), True),  # 10 >= 10 and 5/10 = 0.5 >= 0.5
        (dict(e_ok=5.0, e_err=4.99), False),  # 9.99 < 10 outcomes
        (dict(e_ok=5.01, e_err=4.99), False),  # 10 outcomes, 4.99/10 = 0.499 < 0.5
        (dict(e_ok=0.0, e_err=100.0), True),  # 100/100 = 1
        (dict(e_ok=0.0, e_err=9.9), False),  # all errors, but 9.9 < 10: too few to judge
        (dict(min_requests=0.0), False),  # empty window: rate undefined
        (dict(consec=5.0, err_age=0.0), True),  # ejected: 5 >= 5 and 0 < 5 s
        (dict(consec=5.0, err_age=4.95), True),  # 4.95 < 5
        (dict(consec=5.0, err_age=5.0), False),  # tried again ejection_s after the latest error
        (dict(consec=4.0, err_age=0.0), False),  # 4 < 5 errors in a row
        (dict(consec=9.0), False),  # no error release at all: err_age = inf
    ],
)
def test_breaker(kwargs, expected):
    assert _trip(**kwargs) is expected


def test_breaker_parts():
    assert error_rate_tripped(5.0, 5.0, 10.0, 0.5)
    assert not error_rate_tripped(0.0, 0.0, 0.0, 0.5)  # 0/0 never trips
    assert ejected(5.0, 1.0, 5.0, 5.0)
    assert not ejected(5.0, math.inf, 5.0, 5.0)


# ---- steps 9-10: raw and smoothing (beta 0.5)


@pytest.mark.parametrize(
    "is_tripped, L, B, c, expected",
    [
        (False, 1.0, 1.0, 0.8, 0.8),
        (False, 0.5, 0.5, 0.8, 0.2),  # 0.5 * 0.5 * 0.8
        (True, 1.0, 1.0, 0.8, 0.0),  # tripped publishes 0
        (False, 0.0, 1.0, 0.8, 0.0),  # dead
    ],
)
def test_raw(is_tripped, L, B, c, expected):
    assert raw_score(is_tripped, L, B, c) == pytest.approx(expected)


@pytest.mark.parametrize(
    "is_tripped, L, raw, s_prev, first, expected",
    [
        (False, 1.0, 0.8, 0.4, False, 0.6),  # 0.5*0.8 + 0.5*0.4
        (False, 1.0, 0.8, 0.4, True, 0.8),  # first tick: s_prev = raw -> 0.8
        (True, 1.0, 0.0, 0.9, False, 0.0),  # tripped bypasses smoothing
        (False, 0.0, 0.0, 0.9, False, 0.0),  # L = 0 bypasses smoothing
        (False, 0.5, 0.2, 0.0, False, 0.1),  # revival starts from s_prev = 0: 0.5*0.2
    ],
)
def test_smooth(is_tripped, L, raw, s_prev, first, expected):
    assert smooth(is_tripped, L, raw, s_prev, first, 0.5) == pytest.approx(expected)


# ---- step 11: state (t_degraded 0.4, t_overloaded 0.2, delta 0.1)

H, D, O, Q, X = HEALTHY, DEGRADED, OVERLOADED, QUARANTINED, DEAD


@pytest.mark.parametrize(
    "prev, first, L, trip, s, expected",
    [
        (H, False, 0.0, False, 0.9, X),  # L = 0: DEAD, whatever else
        (Q, False, 0.0, False, 0.9, X),  # death ends quarantine
        (H, True, 1.0, False, 0.45, H),  # fresh: 0.45 >= 0.4
        (O, True, 1.0, False, 0.45, H),  # fresh ignores prev (first tick)
        (X, False, 1.0, False, 0.45, H),  # revival: fresh, where O would say D
        (X, False, 1.0, False, 0.3, D),  # fresh: 0.2 <= 0.3 < 0.4
        (X, False, 1.0, False, 0.1, O),  # fresh: 0.1 < 0.2
        (X, False, 1.0, True, 0.9, O),  # fresh and tripped
        (Q, False, 1.0, False, 0.9, Q),  # quarantined: step 12 decides
        (Q, False, 1.0, True, 0.0, Q),  # ... even when tripped
        (H, False, 1.0, True, 0.9, O),  # tripped: OVERLOADED
        (H, False, 1.0, False, 0.4, H),  # H stays while s >= 0.4
        (H, False, 1.0, False, 0.39, D),  # H -> D below 0.4
        (H, False, 1.0, False, 0.19, O),  # H -> O below 0.2
        (D, False, 1.0, False, 0.49, D),  # D needs 0.4 + 0.1 = 0.5 to go up
        (D, False, 1.0, False, 0.5, H),  # 0.5 >= 0.5
        (D, False, 1.0, False, 0.2, D),  # 0.2 is not < 0.2
        (D, False, 1.0, False, 0.19, O),
        (O, False, 1.0, False, 0.3, O),  # 0.3 < 0.2 + 0.1 = 0.30000000000000004
        (O, False, 1.0, False, 0.31, D),  # >= 0.3 band
        (O, False, 1.0, False, 0.49, D),
        (O, False, 1.0, False, 0.5, H),  # straight to HEALTHY
    ],
)
def test_next_state(prev, first, L, trip, s, expected):
    assert next_state(prev, first, L, trip, s, 0.4, 0.2, 0.1) == expected


def test_classify_fresh():
    assert classify_fresh(False, 0.4, 0.4, 0.2) == H
    assert classify_fresh(False, 0.2, 0.4, 0.2) == D
    assert classify_fresh(False, 0.19, 0.4, 0.2) == O


@pytest.mark.parametrize(
    "prev, new, first, expected",
    [
        (H, D, False, 1),
        (D, O, False, 1),
        (O, H, False, 1),
        (H, H, False, 0),
        (H, D, True, 0),  # first tick
        (X, H, False, 0),  # revival
        (H, X, False, 0),  # death
        (Q, H, False, 0),  # release
        (H, Q, False, 0),
        (UNREGISTERED, H, False, 0),
    ],
)
def test_changed(prev, new, first, expected):
    assert changed(prev, new, first) == expected


# ---- step 12: quarantine pieces (flap_window 50, max_flaps 6)


def test_flap_update():
    # 2.0 * (1 - 1/50) + 1 = 2.0*0.98 + 1 = 2.96
    assert flap_update(2.0, 1, 50.0) == pytest.approx(2.96)
    # decay only: 2.0 * 0.98 = 1.96
    assert flap_update(2.0, 0, 50.0) == pytest.approx(1.96)


@pytest.mark.parametrize(
    "count, trip, raw, expected",
    [
        (4, False, 0.5, 5),  # 0.5 >= 0.4 + 0.1: good tick
        (4, False, 0.49, 0),  # below 0.5: restart
        (4, True, 0.9, 0),  # tripped: restart
    ],
)
def test_probation_step(count, trip, raw, expected):
    assert probation_step(count, trip, raw, 0.4, 0.1) == expected


@pytest.mark.parametrize(
    "count, n, expected",
    [
        (29, 1, False),
        (30, 1, True),  # 30 * min(1, 8) = 30
        (59, 2, False),
        (60, 2, True),  # 30 * min(2, 8) = 60
        (239, 9, False),
        (240, 9, True),  # 30 * min(9, 8) = 240
    ],
)
def test_release_due(count, n, expected):
    assert release_due(count, n, 30.0, 8.0) is expected


@pytest.mark.parametrize(
    "fraction, live, expected",
    [
        (0.5, 0, 0),
        (0.5, 1, 0),
        (0.5, 2, 1),
        (0.5, 5, 2),  # floor(2.5) = 2
        (0.5, 10000, 5000),
        (0.0, 10, 0),
        (1.0, 7, 7),
    ],
)
def test_quarantine_cap(fraction, live, expected):
    assert quarantine_cap(fraction, live) == expected


@pytest.mark.parametrize(
    "state, flap, expected",
    [
        (H, 6.0, True),
        (D, 6.5, True),
        (O, 7.0, True),
        (H, 5.99, False),
        (Q, 9.0, False),
        (X, 9.0, False),
    ],
)
def test_is_candidate(state, flap, expected):
    assert is_candidate(state, flap, 6.0) is expected


@pytest.mark.parametrize(
    "state, memory_prev, n, expected",
    [
        (H, 0, 2, (1, 2)),
        (D, 998, 2, (999, 2)),
        (O, 999, 2, (1000, 0)),  # 1000 >= quarantine_memory: forget quarantines
        (H, 5000, 0, (5001, 0)),
        (Q, 500, 2, (0, 2)),  # quarantined: count restarts, n kept
        (X, 500, 2, (0, 2)),  # dead: likewise
    ],
)
def test_memory_step(state, memory_prev, n, expected):
    assert memory_step(state, memory_prev, n, 1000.0) == expected


# ---- steps 13-14


@pytest.mark.parametrize(
    "state, s, expected",
    [
        (H, 0.7, 0.7),
        (D, 0.3, 0.3),
        (O, 0.7, 0.0),
        (Q, 0.7, 0.0),
        (X, 0.7, 0.0),
    ],
)
def test_published(state, s, expected):
    assert published(state, s) == expected
