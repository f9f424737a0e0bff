"""The reference checked on its own, before it judges the engine.

Tables of small cases whose expected values are worked out by hand in the
comments (from SCORING.md version 2 and docs/scoring.md), then checks that
each committed trace really walks the path it was built for, so that comparing
the engine on it means something.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from reference import (
    DEFAULT_PARAMS,
    ReferenceEngine,
    Rejected,
    merge_params,
    rate_normaliser,
    reference_replay,
    run_reference,
    valid_node_id,
    validate_feedback,
    validate_heartbeat,
)
from traces import build  # tests/traces/build.py

TRACES_DIR = Path(__file__).resolve().parent / "traces"

FAST = {"engine": {"tick_interval_ms": 1000}}  # suspect 2 ticks, dead 10
# 1 s ticks and a 1 s half-life: the error window halves exactly every tick.
HALVING = {"engine": {"tick_interval_ms": 1000}, "score": {"error_half_life_s": 1.0}}

W = DEFAULT_PARAMS["score"]["weights"]
# Goodness of the default heartbeat below (cpu 0.1, mem 0.1).
GC = 1 - 0.1 / 0.98
GM = 1 - 0.1 / 0.95


def hb(tick, node="n", cpu=0.1, mem=0.1, queue=0.0, avg_job_s=0.1, **opt):
    return {
        "tick": tick,
        "node": node,
        "cpu": cpu,
        "mem": mem,
        "queue": queue,
        "avg_job_s": avg_job_s,
        **opt,
    }


def fb(tick, node="n", **values):
    return {"tick": tick, "feedback": node, **values}


def at(records, tick, node):
    (rec,) = [r for r in records if r["tick"] == tick and r["node"] == node]
    return rec


def approx(x):
    return pytest.approx(x, abs=1e-12)


def weighted(terms):
    """core of step 6 from explicit (weight, goodness) pairs, in metric order."""
    return sum(w * g for w, g in terms) / sum(w for w, _ in terms)


def plain_core(g_succ=1.0):
    """core of the default heartbeat alone in its cluster: P_i = 0, wait 0,
    rate term 1 (its own rate is R), no io or tail."""
    return weighted([(0.2, GC), (0.15, GM), (0.25, 1.0), (0.15, 1.0), (0.15, g_succ)])


# ------------------------------------------------------------ one tick, by hand


def test_core_single_node_uses_no_pressure_of_its_own():
    # cpu 0.49 / 0.98 = 0.5 -> g_cpu 0.5; mem 0.19 / 0.95 = 0.2 -> g_mem 0.8
    # qema = queue = 10 (first tick), slots 1: load 10, wait = 10 * 0.9 / 1 = 9
    #   -> 9 / 30 = 0.3 -> g_wait 0.7
    # published P = 0.3 / 1 = 0.3, but the only live node has P_i = 0, so the
    # base weights apply: w_wait 0.25, w_rate 0.15
    # rate = 1 / 0.9 and R = the same (m = 1, the maximum) -> g_rate 1
    # no outcomes: e_ok = e_err = 0 -> g_succ = (0 + 1) / (0 + 0 + 1) = 1
    # core = (0.2*0.5 + 0.15*0.8 + 0.25*0.7 + 0.15*1 + 0.15*1) / 0.9
    #      = (0.1 + 0.12 + 0.175 + 0.15 + 0.15) / 0.9 = 0.695 / 0.9
    # B = clamp((100 - 10) / 50) = 1; raw = 1 * 1 * core; first tick s = raw
    (rec,) = reference_replay([hb(0, cpu=0.49, mem=0.19, queue=10.0, avg_job_s=0.9)])
    assert rec["wait"] == approx(9.0)
    assert rec["pressure"] == approx(0.3)
    assert rec["raw"] == approx(0.695 / 0.9)
    assert rec["score"] == approx(0.695 / 0.9)
    assert (rec["state"], rec["rank"], rec["slot"], rec["liveness"]) == ("healthy", 1, 0, 1.0)


def test_core_with_every_optional_metric():
    # g_cpu 0.5, g_mem 0.8; queue 0 -> wait 0 -> g_wait 1; io 0.2 -> g_io 0.8
    # rate 1 / 0.1 = 10 = R -> g_rate 1; throughput is shown, not scored
    # ok 8, err 1: e_ok = 8, e_err = 1 (first tick) -> g_succ = 9 / 10 = 0.9
    #   (8 + 1 = 9 < min_requests 10: no breaker)
    # p95/p50 = 20/10 = 2 -> (2 - 1) / (3 - 1) = 0.5 -> g_tail = 0.5
    # the weights sum to 1.0: core = 0.2*0.5 + 0.15*0.8 + 0.05*0.8 + 0.25*1
    #   + 0.15*1 + 0.15*0.9 + 0.05*0.5
    #   = 0.10 + 0.12 + 0.04 + 0.25 + 0.15 + 0.135 + 0.025 = 0.82
    line = hb(0, cpu=0.49, mem=0.19, io=0.2, ok=8, err=1, p50_ms=10.0, p95_ms=20.0)
    (rec,) = reference_replay([{**line, "throughput": 7.0}])
    assert rec["raw"] == approx(0.82)
    (unscored,) = reference_replay([{**line, "throughput": 1e6}])
    assert unscored["raw"] == rec["raw"]


@pytest.mark.parametrize(
    "opt, core",
    [
        # cpu 0.49 -> 0.5, mem 0 -> 1, wait 0 -> 1, avg_job_s 0: no rate term,
        # success always scored (1 with no outcomes):
        # (0.2*0.5 + 0.15*1 + 0.25*1 + 0.15*1) / (0.2 + 0.15 + 0.25 + 0.15)
        ({}, 0.65 / 0.75),
        # ok 0, err 0 reported: still e = 0 -> g_succ 1, the same core (version 1
        # gave (0 + 1) / (0 + 0 + 2) = 0.5 here)
        ({"ok": 0, "err": 0}, 0.65 / 0.75),
        # ok 3, err 4: g_succ = (3 + 1) / (3 + 4 + 1) = 0.5
        # (0.1 + 0.15 + 0.25 + 0.15*0.5) / 0.75 = 0.575 / 0.75
        ({"ok": 3, "err": 4}, 0.575 / 0.75),
    ],
)
def test_success_is_always_scored(opt, core):
    (rec,) = reference_replay([hb(0, cpu=0.49, mem=0.0, avg_job_s=0.0, **opt)])
    assert rec["raw"] == approx(core)


# ------------------------------------------------------------ load, wait, slots


@pytest.mark.parametrize(
    "queue, rif, slots, avg_job_s, load, wait",
    [
        # load = max(qema, rif - slots, 0); wait = load * avg_job_s / slots
        (2.0, 0, 1, 0.5, 2.0, 1.0),  # max(2, -1, 0) = 2;  2 * 0.5 / 1
        (2.0, 5, 1, 0.5, 4.0, 2.0),  # max(2, 4, 0) = 4;   4 * 0.5 / 1
        (2.0, 3, 1, 0.5, 2.0, 1.0),  # rif - slots = 2 = qema
        (0.0, 0, 4, 1.0, 0.0, 0.0),  # max(0, -4, 0) = 0
        (0.0, 3, 4, 1.0, 0.0, 0.0),  # rif below slots: nothing waits
        (1.0, 10, 4, 2.0, 6.0, 3.0),  # max(1, 6, 0) = 6;   6 * 2 / 4
        (8.0, 0, 4, 1.0, 8.0, 2.0),  # the queue is shared by 4 slots: 8 / 4
        (8.0, 0, 65535, 2.0, 8.0, 16.0 / 65535),
    ],
)
def test_load_and_wait(queue, rif, slots, avg_job_s, load, wait):
    lines = [hb(0, queue=queue, avg_job_s=avg_job_s, slots=slots), fb(0, rif=rif)]
    (rec,) = reference_replay(lines)
    assert rec["qema"] == queue  # replay shows qema, not load
    assert rec["wait"] == approx(wait)
    # B and the queue breaker read load: B = clamp((100 - load) / 50, 0, 1)
    b = min(max((100 - load) / 50, 0.0), 1.0)
    assert rec["raw"] == approx(
        b
        * weighted(
            [(0.2, GC), (0.15, GM), (0.25, 1 - min(wait / 30, 1.0)), (0.15, 1.0), (0.15, 1.0)]
        )
    )


@pytest.mark.parametrize(
    "rif, b, tripped",
    [
        # 1 slot: load = rif - 1; B = clamp((100 - load) / (100 - 50), 0, 1)
        (51, 1.0, False),  # load 50 = limit_critical: B = 50 / 50 = 1
        (76, 0.5, False),  # load 75: B = 25 / 50
        (100, 0.02, False),  # load 99: B = 1 / 50
        (101, 0.0, True),  # load 100 >= max_queue: the queue breaker
    ],
)
def test_rif_drives_backpressure_and_the_queue_breaker(rif, b, tripped):
    # avg_job_s 0: wait 0, no rate term; cpu 0.1, mem 0.1, success 1:
    # core = (0.2*GC + 0.15*GM + 0.25 + 0.15) / 0.75; raw = B * core
    (rec,) = reference_replay([hb(0, avg_job_s=0.0), fb(0, rif=rif)])
    core = weighted([(0.2, GC), (0.15, GM), (0.25, 1.0), (0.15, 1.0)])
    assert rec["raw"] == (0.0 if tripped else approx(b * core))
    assert rec["qema"] == 0.0


@pytest.mark.parametrize(
    "slots, wait, tripped",
    [
        # rif 62 with 1 s jobs: load = 62 - slots
        (2, 30.0, True),  # 60 * 1 / 2 = 30 >= max_wait_s
        (3, 59 / 3, False),  # 59 * 1 / 3
    ],
)
def test_rif_with_slots_and_the_wait_breaker(slots, wait, tripped):
    (rec,) = reference_replay([hb(0, avg_job_s=1.0, slots=slots), fb(0, rif=62)])
    assert rec["wait"] == approx(wait)
    assert (rec["raw"] == 0.0) == tripped


def test_slots_missing_from_a_later_row_means_one():
    # t0: 8 slots, queue 4, 0.5 s jobs: wait = 4 * 0.5 / 8 = 0.25
    # t1: no slots: the whole row is replaced, slots = 1: wait = 4 * 0.5 / 1
    #     (qema = 0.3*4 + 0.7*4 = 4)
    recs = reference_replay(
        [hb(0, queue=4.0, avg_job_s=0.5, slots=8), hb(1, queue=4.0, avg_job_s=0.5)]
    )
    assert [r["wait"] for r in recs] == [approx(0.25), approx(2.0)]


# ------------------------------------------------------------ rate normaliser


@pytest.mark.parametrize(
    "m, expected",
    [
        # rates 1..m, nearest rank: R = r_(ceil(0.9*m) - 1); the maximum below 10
        (1, 1.0),
        (5, 5.0),
        (9, 9.0),  # m < 10: the maximum
        (10, 9.0),  # ceil(9.0) - 1 = 8 -> r_8 = 9
        (11, 10.0),  # ceil(9.9) - 1 = 9 -> r_9 = 10
        (19, 18.0),  # ceil(17.1) - 1 = 17 -> 18
        (20, 18.0),  # ceil(18.0) - 1 = 17 -> 18
        (21, 19.0),  # ceil(18.9) - 1 = 18 -> 19
        (100, 90.0),  # ceil(90.0) - 1 = 89 -> 90
    ],
)
def test_rate_normaliser_nearest_rank(m, expected):
    rates = [float(r) for r in range(m, 0, -1)]  # unsorted on purpose
    assert rate_normaliser(rates) == expected


def test_rate_normaliser_none_and_absurd():
    assert rate_normaliser([]) is None
    # 10 rates with one absurd: r_8, the largest sane one
    assert rate_normaliser([1.0] * 9 + [1e12]) == 1.0
    # 9 rates: the maximum, absurd or not
    assert rate_normaliser([1.0] * 8 + [1e12]) == 1e12


def rate_cluster(n_sane, wild=True):
    """n_sane nodes with i slots of 1 s jobs (rates 1..n_sane) and one with
    avg_job_s 1e-6; cpu = mem = queue = 0, so every other term is 1."""
    lines = [
        hb(0, f"r{i:02d}", cpu=0.0, mem=0.0, avg_job_s=1.0, slots=i) for i in range(1, n_sane + 1)
    ]
    if wild:
        lines.append(hb(0, "wild", cpu=0.0, mem=0.0, avg_job_s=1e-6))
    return reference_replay(lines)


@pytest.mark.parametrize(
    "n_sane, big_r",
    [
        (10, 10.0),  # m = 11: r_9 = 10 (the absurd one is r_10)
        (9, 9.0),  # m = 10: r_8 = 9
        (8, 1 / 1e-6),  # m = 9: the maximum, the absurd rate
    ],
)
def test_rate_percentile_in_a_tick(n_sane, big_r):
    # core = (0.2 + 0.15 + 0.25 + 0.15*g_rate + 0.15) / 0.9, g_rate = min(rate / R, 1)
    recs = rate_cluster(n_sane)
    for i in range(1, n_sane + 1):
        g = min(i / big_r, 1.0)
        assert at(recs, 0, f"r{i:02d}")["raw"] == approx((0.75 + 0.15 * g) / 0.9)
    assert at(recs, 0, "wild")["raw"] == approx(1.0)  # its own rate / R >= 1


def test_rate_term_one_when_no_live_node_has_a_rate():
    # "a" dead (fast clock, t10) with avg_job_s 0.5; "b" live, avg_job_s 0:
    # m = 0 -> g_rate = 1 for "a" (only reported when avg_job_s > 0), and a's
    # raw is 0 anyway (L = 0); "b" has no rate term
    recs = reference_replay(
        [hb(0, "a", avg_job_s=0.5), hb(0, "b", avg_job_s=0.0), hb(10, "b", avg_job_s=0.0)], FAST
    )
    assert at(recs, 10, "a")["raw"] == 0.0
    assert at(recs, 10, "b")["raw"] == approx(
        weighted([(0.2, GC), (0.15, GM), (0.25, 1.0), (0.15, 1.0)])
    )


def test_dead_node_rate_ratio_overflow_is_capped():
    # "a" dead at t10 with rate 1 / 1e-300 = 1e300; R = 1 / 1e10 = 1e-10 from
    # live "b": 1e300 / 1e-10 = inf, min(inf, 1) = 1; raw = 0 * B * core = 0
    recs = reference_replay(
        [hb(0, "a", avg_job_s=1e-300), hb(0, "b", avg_job_s=1e10), hb(10, "b", avg_job_s=1e10)],
        FAST,
    )
    assert at(recs, 10, "a")["raw"] == 0.0
    assert at(recs, 10, "a")["state"] == "dead"


# ------------------------------------------------------------ leave-one-out pressure


def test_pressure_leave_one_out_two_live_nodes():
    # a: queue 9, 1 s jobs -> wait 9, p_a = 0.3; b: queue 0 -> p_b = 0
    # S = 0.3, live 2: published P = 0.3 / 2 = 0.15 on both lines
    # P_a = (0.3 - 0.3) / 1 = 0 -> base weights; P_b = (0.3 - 0) / 1 = 0.3
    # rates 1 and 1: g_rate 1 for both; cpu 0.49 -> 0.5, mem 0.19 -> 0.8
    # a: (0.1 + 0.12 + 0.25*0.7 + 0.15 + 0.15) / 0.9 = 0.695 / 0.9
    # b: w_wait = 0.25 + 0.5*0.3 = 0.40, w_rate = 0.15 + 0.3*0.3 = 0.24
    #    (0.1 + 0.12 + 0.40*1 + 0.24*1 + 0.15) / (0.2 + 0.15 + 0.40 + 0.24 + 0.15)
    #    = 1.01 / 1.14
    recs = reference_replay(
        [
            hb(0, "a", cpu=0.49, mem=0.19, queue=9.0, avg_job_s=1.0),
            hb(0, "b", cpu=0.49, mem=0.19, queue=0.0, avg_job_s=1.0),
        ]
    )
    assert [r["pressure"] for r in recs] == [approx(0.15), approx(0.15)]
    assert at(recs, 0, "a")["raw"] == approx(0.695 / 0.9)
    assert at(recs, 0, "b")["raw"] == approx(1.01 / 1.14)


def test_pressure_leave_one_out_three_live_nodes_and_a_dead_one():
    # Fast clock; "d" sent only at t0 (queue 60: p_d would be 1) and is dead at
    # t10, when a, b, c have their first tick (qema = queue, 1 s jobs):
    # p_a = 9/30 = 0.3, p_b = 15/30 = 0.5, p_c = 3/30 = 0.1; S = 0.9, live 3
    # published P = 0.9 / 3 = 0.3 (d is not counted)
    # P_a = (0.9 - 0.3) / 2 = 0.3: w_wait 0.40, w_rate 0.24, g_wait 0.7
    #   (0.1 + 0.12 + 0.40*0.7 + 0.24 + 0.15) / 1.14 = 0.89 / 1.14
    # P_b = (0.9 - 0.5) / 2 = 0.2: w_wait 0.35, w_rate 0.21, g_wait 0.5
    #   (0.1 + 0.12 + 0.35*0.5 + 0.21 + 0.15) / 1.06 = 0.755 / 1.06
    # P_c = (0.9 - 0.1) / 2 = 0.4: w_wait 0.45, w_rate 0.27, g_wait 0.9
    #   (0.1 + 0.12 + 0.45*0.9 + 0.27 + 0.15) / 1.22 = 1.045 / 1.22
    g = {"cpu": 0.49, "mem": 0.19, "avg_job_s": 1.0}
    recs = reference_replay(
        [
            hb(0, "d", queue=60.0, **g),
            hb(10, "a", queue=9.0, **g),
            hb(10, "b", queue=15.0, **g),
            hb(10, "c", queue=3.0, **g),
        ],
        FAST,
    )
    assert [r["pressure"] for r in recs if r["tick"] == 10] == [approx(0.3)] * 4
    assert at(recs, 10, "d")["state"] == "dead"
    assert at(recs, 10, "a")["raw"] == approx(0.89 / 1.14)
    assert at(recs, 10, "b")["raw"] == approx(0.755 / 1.06)
    assert at(recs, 10, "c")["raw"] == approx(1.045 / 1.22)


@pytest.mark.parametrize("others", [0, 1, 3])
def test_own_wait_never_raises_own_raw(others):
    # P_i does not contain p_i, so a longer queue can only lower g_wait (and
    # B), never raise w_wait on the node that has it.
    def raw_of(queue):
        lines = [hb(0, "i", queue=queue, avg_job_s=0.5)]
        lines += [hb(0, f"o{j}", queue=20.0, avg_job_s=0.5) for j in range(others)]
        return at(reference_replay(lines), 0, "i")["raw"]

    raws = [raw_of(q) for q in (0.0, 5.0, 20.0, 40.0, 59.0)]
    assert raws == sorted(raws, reverse=True) and raws[0] > raws[-1]


# ------------------------------------------------------------ error window


def test_default_decay_per_tick():
    # d = 0.5 ** (tick_interval_ms / 1000 / error_half_life_s) = 0.5 ** (0.05 / 10)
    assert ReferenceEngine().decay() == 0.5**0.005
    assert ReferenceEngine(HALVING).decay() == 0.5


@pytest.mark.parametrize(
    "ok, err, tripped",
    [
        (5, 5, True),  # 10 >= min_requests 10 and 5/10 >= 0.5
        (5, 4, False),  # 9 < 10
        (6, 5, False),  # 11, but 5/11 < 0.5
        (0, 10, True),
    ],
)
def test_window_breaker_boundaries_at_defaults(ok, err, tripped):
    (rec,) = reference_replay([hb(0, ok=ok, err=err)])
    assert (rec["raw"] == 0.0) == tripped


def test_window_decays_below_min_requests():
    # t0: e_err = 10 -> tripped; t1 (same row, no new heartbeat, nothing added):
    # e_err = 10 * 0.5 ** 0.005 = 9.965... < 10 -> released, s = 0.5 * raw
    # g_succ at t1 = 1 / (1 + 10 * d)
    d = 0.5**0.005
    recs = reference_replay([hb(0, ok=0, err=10), {"tick": 1}])
    assert recs[0]["raw"] == 0.0
    assert recs[1]["raw"] == approx(plain_core(1 / (1 + 10 * d)))


def test_heartbeat_outcomes_count_once_and_feedback_resets_per_tick():
    # d = 0.5. t0: heartbeat 0 ok / 4 err and feedback 2 err: e_err = 6
    # t1: no heartbeat (the row still says err 4, but it is not new) and no
    #     feedback: e_err = 6 * 0.5 = 3 -> g_succ = 1 / (1 + 3) = 0.25
    # t2: feedback 1 ok: e_ok = 1, e_err = 1.5 -> g_succ = 2 / 3.5
    recs = reference_replay([hb(0, ok=0, err=4), fb(0, err=2), {"tick": 1}, fb(2, ok=1)], HALVING)
    assert recs[0]["raw"] == approx(plain_core(1 / 7))
    assert recs[1]["raw"] == approx(plain_core(0.25))
    assert recs[2]["raw"] == approx(plain_core(2 / 3.5))


def test_only_the_latest_heartbeat_of_a_tick_counts_outcomes():
    # d = 0.5. t0: ok 50 then ok 1 / err 2 in the same tick: only the latest:
    # e = (1, 2) -> g_succ = 2 / 4. t1: err 2 then a row without outcomes:
    # nothing added: e = (0.5, 1) -> g_succ = 1.5 / 2.5
    recs = reference_replay(
        [hb(0, ok=50, err=0), hb(0, ok=1, err=2), hb(1, ok=0, err=2), hb(1)], HALVING
    )
    assert recs[0]["raw"] == approx(plain_core(0.5))
    assert recs[1]["raw"] == approx(plain_core(1.5 / 2.5))


def test_window_breaker_by_feedback_alone():
    # heartbeats carry no outcomes; feedback 4 ok + 6 err: e = (4, 6), total 10
    # >= 10 and 6/10 >= 0.5 -> tripped; next tick (d = 0.5): (2, 3), 5 < 10
    recs = reference_replay([hb(0), fb(0, ok=4, err=6), hb(1)], HALVING)
    assert recs[0]["raw"] == 0.0 and recs[0]["state"] == "overloaded"
    assert recs[1]["raw"] == approx(plain_core(3 / 6))


def test_window_decays_over_dead_ticks():
    # d = 0.5, fast clock: 8 errors at t0 (8 < 10, not tripped); silent, dead
    # at t10 and t11; back at t12: the window decayed on every tick,
    # e_err = 8 * 0.5 ** 12 = 1/512 -> g_succ = 1 / (1 + 1/512) = 512/513
    recs = reference_replay([hb(0, ok=0, err=8), hb(12)], HALVING)
    assert [at(recs, k, "n")["state"] for k in (10, 11)] == ["dead", "dead"]
    assert at(recs, 12, "n")["raw"] == approx(plain_core(512 / 513))


def test_feedback_to_a_dead_node_counts():
    # dead from t10; feedback 3 errors at t11 applies (it is registered):
    # t11 e_err = 3, t12 e_err = 1.5 at revival -> g_succ = 1 / 2.5
    recs = reference_replay([hb(0), fb(11, err=3), hb(12)], HALVING)
    assert at(recs, 12, "n")["raw"] == approx(plain_core(1 / 2.5))


# ------------------------------------------------------------ ejection


@pytest.mark.parametrize(
    "tick, err_age, tripped",
    [
        # fast clock, ejection_s 5: one error release at t0 with consec 5
        (0, 0.0, True),
        (4, 4.0, True),
        (5, 5.0, False),  # err_age == ejection_s: no longer ejected
        (6, 6.0, False),
    ],
)
def test_ejection_boundary(tick, err_age, tripped):
    # err_age = ((tick - 0) * 1000) / 1000 = tick seconds; liveness kept at 1
    recs = reference_replay(
        [hb(0), fb(0, err=1, consec=5), {"tick": 6}],
        {
            "engine": {"tick_interval_ms": 1000, "forget_after_s": 300},
            "score": {"dead_after_s": 60.0, "suspect_after_s": 60.0},
        },
    )
    assert (at(recs, tick, "n")["raw"] == 0.0) == tripped


def test_ejection_boundary_at_default_clock():
    # 50 ms ticks: err_age at t99 = (99 * 50) / 1000 = 4.95 < 5; at t100 = 5.0
    lines = [hb(0), fb(0, err=1, consec=5)] + [hb(k) for k in range(1, 101)]
    recs = reference_replay(lines)
    assert at(recs, 99, "n")["raw"] == 0.0
    assert at(recs, 100, "n")["raw"] > 0.0


@pytest.mark.parametrize(
    "lines, tripped",
    [
        ([fb(0, err=1, consec=4)], False),  # consec 4 < 5
        ([fb(0, err=1, consec=5)], True),
        ([fb(0, consec=9)], False),  # no error release: no err_age
        ([fb(0, err=1, consec=5), fb(0, ok=1, consec=0)], False),  # one ok ends the run
        ([fb(0, err=1, consec=5), fb(0, ok=1)], True),  # consec as reported: still 5
        ([fb(0, consec=5), fb(0, err=1)], True),  # lines of a tick in file order
    ],
)
def test_ejection_rules(lines, tripped):
    (rec,) = reference_replay([hb(0), *lines])
    assert (rec["raw"] == 0.0) == tripped


def test_err_age_counts_from_the_latest_error_release():
    # fast clock. err at t0 (consec 3), consec 5 at t3 without an error: err_age
    # = 3 -> ejected until t5; a new error at t4 renews it to t9.
    params = {
        "engine": {"tick_interval_ms": 1000},
        "score": {"dead_after_s": 60.0, "suspect_after_s": 60.0},
    }
    recs = reference_replay([hb(0), fb(0, err=1, consec=3), fb(3, consec=5), {"tick": 7}], params)
    assert [r["raw"] == 0.0 for r in recs] == [False, False, False, True, True, False, False, False]
    recs = reference_replay(
        [hb(0), fb(0, err=1, consec=3), fb(3, consec=5), fb(4, err=1, consec=6), {"tick": 10}],
        params,
    )
    assert [r["raw"] == 0.0 for r in recs] == [False] * 3 + [True] * 6 + [False] * 2


# ------------------------------------------------------------ feedback plumbing


def test_feedback_after_heartbeats_in_file_order():
    # a feedback line written before the node's first heartbeat of the tick
    # still applies (feedback follows the tick's heartbeats); two lines:
    # rif 7 then rif 3 -> 3 wins; errors add up: 3 + 4 = 7
    # load = max(0, 3 - 1, 0) = 2 -> wait 2 * 0.1 = 0.2
    # g_succ = (0 + 1) / (0 + 7 + 1) = 1/8 (7 < 10: no breaker)
    recs = run_reference([fb(0, rif=7, err=3), hb(0), fb(0, rif=3, err=4)])
    (rec,) = recs.records
    assert recs.ignored_feedback == 0
    assert rec["wait"] == approx(0.2)
    core = weighted([(0.2, GC), (0.15, GM), (0.25, 1 - 0.2 / 30), (0.15, 1.0), (0.15, 1 / 8)])
    assert rec["raw"] == approx(core)


def test_rif_and_consec_persist_until_changed():
    # rif 5 at t0 (load 4, wait 0.4); t1 outcome-only feedback: rif stays 5
    recs = reference_replay([hb(0), fb(0, rif=5), hb(1), fb(1, ok=1), hb(2), fb(2, rif=0)])
    assert [r["wait"] for r in recs] == [approx(0.4), approx(0.4), approx(0.0)]


def test_feedback_for_unregistered_nodes_is_ignored():
    # "ghost" never sent a heartbeat; "bad" sent only a rejected one; "x y" is
    # no valid id at all: three lines ignored, nothing else changes
    lines = [
        hb(0),
        fb(0, "ghost", rif=90, err=50, consec=9),
        {**hb(0, "bad"), "cpu": 2.0},
        fb(0, "bad", rif=90),
        fb(0, "x y", err=1),
    ]
    result = run_reference(lines)
    assert result.ignored_feedback == 3
    assert result.rejections == {"bad_field": 1}
    assert result.records == reference_replay([hb(0)])


def test_forgetting_and_slot_reuse_reset_feedback():
    # fast clock, forget after 3 s, capacity 1: "a" gets rif 30, consec 9 with
    # an error and 20 errors at t0 (tripped), is forgotten at t3; "b" takes
    # slot 0 at t3 and "a" comes back at t5 after "b" is forgotten: both start
    # from zero, exactly like a node that never had feedback.
    params = {"engine": {"tick_interval_ms": 1000, "forget_after_s": 3, "capacity": 1}}
    recs = reference_replay(
        [
            hb(0, "a"),
            fb(0, "a", rif=30, consec=9, err=20),
            hb(3, "b"),
            fb(4, "a", rif=30, err=20, consec=9),
            hb(6, "a"),
        ],
        params,
    )
    clean = reference_replay([hb(0, "c")], params)[0]
    assert at(recs, 0, "a")["raw"] == 0.0
    for tick, node in ((3, "b"), (6, "a")):
        rec = at(recs, tick, node)
        assert rec["slot"] == 0
        assert (rec["raw"], rec["wait"], rec["state"]) == (
            clean["raw"],
            clean["wait"],
            clean["state"],
        )


def test_feedback_reset_when_forgotten_and_back_in_one_tick():
    # forget after 3 s: "a" (last heartbeat t0) is forgotten at t3 before t3's
    # heartbeat registers it anew; its old rif 30 must not survive
    params = {"engine": {"tick_interval_ms": 1000, "forget_after_s": 3}}
    recs = reference_replay([hb(0, "a"), fb(0, "a", rif=30), hb(3, "a")], params)
    assert at(recs, 0, "a")["wait"] == approx(29 * 0.1)
    assert at(recs, 3, "a")["wait"] == 0.0


# ------------------------------------------------------------ liveness, smoothing, registry


@pytest.mark.parametrize(
    "age, liveness",
    [
        (2, 1.0),  # age == suspect_after_s: L = 1
        (3, 0.875),  # (10 - 3) / (10 - 2)
        (6, 0.5),  # (10 - 6) / 8
        (9, 0.125),  # (10 - 9) / 8
        (10, 0.0),  # age == dead_after_s: L = 0, DEAD
    ],
)
def test_liveness_on_the_fast_clock(age, liveness):
    # tick_interval_ms 1000: age at tick k = ((k - 0) * 1000) / 1000 = k seconds
    recs = reference_replay([hb(0), {"tick": age}], FAST)
    rec = at(recs, age, "n")
    assert rec["liveness"] == approx(liveness)
    assert (rec["state"] == "dead") == (liveness == 0.0)


def test_liveness_at_default_tick_interval():
    # 50 ms ticks: at tick 120, age = (120 * 50) / 1000 = 6.0 s -> L = 4/8 = 0.5
    recs = reference_replay([hb(0), {"tick": 120}])
    assert at(recs, 120, "n")["liveness"] == approx(0.5)


def test_queue_ema_one_step_per_tick_latest_heartbeat():
    # t0: first tick, qema = queue = 10
    # t1: qema = 0.3*20 + 0.7*10 = 6 + 7 = 13
    # t2: no heartbeat, qema stays 13
    # t3: two heartbeats (queue 0 then 30): only the latest, one step:
    #     qema = 0.3*30 + 0.7*13 = 9 + 9.1 = 18.1
    recs = reference_replay(
        [hb(0, queue=10.0), hb(1, queue=20.0), {"tick": 2}, hb(3, queue=0.0), hb(3, queue=30.0)]
    )
    assert [r["qema"] for r in recs] == [approx(10.0), approx(13.0), approx(13.0), approx(18.1)]


def test_first_tick_uses_latest_of_several_heartbeats():
    # two heartbeats before the first tick: qema = queue of the latest = 40
    (rec,) = reference_replay([hb(0, queue=10.0), hb(0, queue=40.0)])
    assert rec["qema"] == 40.0


def test_smoothing_and_backpressure():
    # cpu = mem = avg_job_s = 0 -> core = 1, wait = 0, P = 0
    # t0: qema 60, B = (100 - 60) / 50 = 0.8, raw 0.8, s = 0.8
    # t1: qema = 0.3*0 + 0.7*60 = 42 -> B = clamp(58/50) = 1, raw 1
    #     s = 0.5*1 + 0.5*0.8 = 0.9
    recs = reference_replay(
        [
            hb(0, cpu=0.0, mem=0.0, queue=60.0, avg_job_s=0.0),
            hb(1, cpu=0.0, mem=0.0, queue=0.0, avg_job_s=0.0),
        ]
    )
    assert [r["raw"] for r in recs] == [approx(0.8), approx(1.0)]
    assert [r["score"] for r in recs] == [approx(0.8), approx(0.9)]


def test_tripped_zeroes_raw_and_smoothing():
    # t0: raw = plain_core() = 0.8638 / 0.9 = 0.9598; t1: cpu 0.98 >= max_cpu -> raw 0,
    # s 0 (no smoothing), OVERLOADED; t2: untripped, s = 0.5*raw + 0.5*0
    recs = reference_replay([hb(0), hb(1, cpu=0.98), hb(2)])
    assert recs[0]["raw"] == approx(plain_core())
    assert (recs[1]["raw"], recs[1]["score"], recs[1]["state"]) == (0.0, 0.0, "overloaded")
    assert recs[2]["raw"] == approx(recs[0]["raw"])
    # 0.5 * 0.9598 = 0.4799 is in [0.30000000000000004, 0.5): O -> DEGRADED
    assert recs[2]["state"] == "degraded"
    assert recs[2]["score"] == 0.5 * recs[2]["raw"] + 0.5 * 0.0


def test_revival_is_classified_fresh_with_s_prev_zero():
    # dead at t10 (s = 0); back at t12: s = 0.5*raw + 0.5*0 = 0.4799 -> fresh:
    # not < 0.2, not < 0.4 -> HEALTHY (hysteresis from O would say DEGRADED)
    recs = reference_replay([hb(0), {"tick": 10}, hb(12)], FAST)
    assert at(recs, 10, "n")["state"] == "dead"
    rec = at(recs, 12, "n")
    assert rec["score"] == approx(0.5 * rec["raw"])
    assert rec["state"] == "healthy"


def test_forgetting_before_heartbeats_and_lowest_free_slot():
    # forget_after_s 5 on the fast clock: "a" (slot 0, last t0) is forgotten
    # at t5 before t5's heartbeats; "c" arriving at t5 takes slot 0.
    params = {"engine": {"tick_interval_ms": 1000, "forget_after_s": 5}}
    recs = reference_replay([hb(0, "a"), hb(0, "b"), hb(1, "b"), hb(5, "c"), hb(5, "b")], params)
    assert [(r["node"], r["slot"]) for r in recs if r["tick"] == 4] == [("a", 0), ("b", 1)]
    assert [(r["node"], r["slot"]) for r in recs if r["tick"] == 5] == [("c", 0), ("b", 1)]


def test_registry_full_is_counted_and_changes_nothing():
    params = {"engine": {"capacity": 1}}
    result = run_reference([hb(0, "a"), hb(0, "b")], params)
    assert [r["node"] for r in result.records] == ["a"]
    assert result.rejections == {"registry_full": 1}


def test_ticks_argument_cuts_and_extends():
    lines = [hb(0), hb(3)]
    assert [r["tick"] for r in reference_replay(lines, ticks=2)] == [0, 1]
    assert [r["tick"] for r in reference_replay(lines, ticks=6)] == [0, 1, 2, 3, 4, 5]
    assert reference_replay(lines, ticks=0) == []
    assert reference_replay([{"tick": 2}]) == []  # ticks run, but no node
    # an ignored feedback line extends the run too
    assert [r["tick"] for r in reference_replay([hb(0), fb(2, "ghost")])] == [0, 1, 2]


# ------------------------------------------------------------ configuration


def test_version_2_keys_and_defaults():
    sc = DEFAULT_PARAMS["score"]
    assert (
        sc["min_requests"],
        sc["error_half_life_s"],
        sc["max_consecutive_errors"],
        sc["ejection_s"],
    ) == (10, 10.0, 5, 5.0)
    assert sc["weights"] == {
        "cpu": 0.20,
        "mem": 0.15,
        "io": 0.05,
        "wait": 0.25,
        "rate": 0.15,
        "success": 0.15,
        "tail": 0.05,
    }
    assert merge_params({"score": {"weights": {"rate": 0.3}}})["score"]["weights"]["rate"] == 0.3


@pytest.mark.parametrize(
    "params, key",
    [
        ({"score": {"weights": {"throughput": 0.15}}}, "score.weights.throughput"),
        ({"score": {"max_throughput": 1.0}}, "score.max_throughput"),
    ],
)
def test_unknown_keys_are_refused(params, key):
    with pytest.raises(KeyError, match=key.replace(".", r"\.")):
        merge_params(params)


# ------------------------------------------------------------ validation

GOOD = {"node": "n", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1}


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"cpu": None}, "missing_field"),
        ({"node": None}, "missing_field"),
        ({"avg_job_s": None}, "missing_field"),
        ({"ok": 3}, "missing_field"),
        ({"p95_ms": 3.0}, "missing_field"),
        ({"colour": "red"}, "unknown_field"),
        ({"cpu": 1.0000001}, "bad_field"),
        ({"cpu": -0.0001}, "bad_field"),
        ({"mem": float("nan")}, "bad_field"),
        ({"queue": float("inf")}, "bad_field"),
        ({"queue": -1}, "bad_field"),
        ({"cpu": "0.5"}, "bad_field"),
        ({"cpu": True}, "bad_field"),
        ({"ok": 1, "err": True}, "bad_field"),
        ({"ok": -1, "err": 0}, "bad_field"),
        ({"ok": 2**32, "err": 0}, "bad_field"),
        ({"ok": 1.0, "err": 0}, "bad_field"),
        ({"p50_ms": 0.0, "p95_ms": 1.0}, "bad_field"),
        ({"p50_ms": 2.0, "p95_ms": 1.0}, "bad_field"),
        ({"io": 1.5}, "bad_field"),
        ({"throughput": -0.1}, "bad_field"),
        ({"ts": float("nan")}, "bad_field"),
        ({"zone": "z" * 32}, "bad_field"),
        ({"labels": {"a": 1}}, "bad_field"),
        ({"slots": 0}, "bad_field"),
        ({"slots": 65536}, "bad_field"),
        ({"slots": -1}, "bad_field"),
        ({"slots": 2.0}, "bad_field"),
        ({"slots": True}, "bad_field"),
        ({"slots": "4"}, "bad_field"),
        ({"resources": ["gpu"]}, "bad_field"),
        ({"resources": {f"r{i}": 1.0 for i in range(9)}}, "bad_field"),  # 9 names
        ({"resources": {"": 1.0}}, "bad_field"),
        ({"resources": {"g" * 16: 1.0}}, "bad_field"),
        ({"resources": {"é" * 8: 1.0}}, "bad_field"),  # 16 bytes
        ({"resources": {"gpu": -1.0}}, "bad_field"),
        ({"resources": {"gpu": float("nan")}}, "bad_field"),
        ({"resources": {"gpu": float("inf")}}, "bad_field"),
        ({"resources": {"gpu": "1"}}, "bad_field"),
        ({"resources": {"gpu": True}}, "bad_field"),
        ({"node": ""}, "bad_node_id"),
        ({"node": "x" * 64}, "bad_node_id"),
        ({"node": "é"}, "bad_node_id"),
        ({"node": "a b"}, "bad_node_id"),
        ({"node": "a\x00b"}, "bad_node_id"),
        ({"node": "a\x7fb"}, "bad_node_id"),
        ({"node": "a\tb"}, "bad_node_id"),
        ({"node": "a\n"}, "bad_node_id"),
        ({"node": "a\u200bb"}, "bad_node_id"),  # zero-width space (format)
        ({"node": "a\u00a0b"}, "bad_node_id"),  # no-break space
        ({"node": "nod\u0435"}, "bad_node_id"),  # Cyrillic e, looks like "node"
        ({"node": "\uff4e"}, "bad_node_id"),  # fullwidth n
        ({"node": "a+b"}, "bad_node_id"),
        ({"node": "a,b"}, "bad_node_id"),
        ({"node": "a\\b"}, "bad_node_id"),
        ({"node": 5}, "bad_node_id"),
    ],
)
def test_rejection_reasons(change, reason):
    msg = dict(GOOD)
    for key, value in change.items():
        if value is None:
            del msg[key]
        else:
            msg[key] = value
    with pytest.raises(Rejected, match=f"^{reason}:"):
        validate_heartbeat(msg)


@pytest.mark.parametrize(
    "change",
    [
        {"cpu": 0, "mem": 1, "queue": 3, "avg_job_s": 0},  # ints are numbers
        {"node": "x" * 63},
        {"node": "A-Z.a_z:0/9"},
        {"node": "rack-7/node_03.example:9100"},
        {"ok": 0, "err": 2**32 - 1},
        {"p50_ms": 5.0, "p95_ms": 5.0},
        {"io": 0.0, "throughput": 0.0, "ts": -3.5, "zone": "", "labels": {}},
        {"zone": "z" * 31, "labels": {"k": "v", "é": "ü"}},
        {"slots": 1},
        {"slots": 65535},
        {"resources": {}},
        {"resources": {"g" * 15: 0.0, "é" * 7: 3, **{f"r{i}": 1e300 for i in range(6)}}},
    ],
)
def test_accepted_edge_cases(change):
    row = validate_heartbeat({**GOOD, **change})
    assert isinstance(row["cpu"], float)
    assert row["slots"] == change.get("slots", 1)


def test_node_id_rule_character_by_character():
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-/")
    for code in range(0x3000):
        ch = chr(code)
        assert valid_node_id("a" + ch) == (ch in allowed), repr(ch)


def test_rejected_heartbeat_changes_nothing():
    # "n" sends nothing valid after t0; the invalid ones must not refresh
    # its age: dead at t10 exactly as without them.
    bad = [{"tick": k, **GOOD, "slots": 0} for k in range(1, 12)]
    with_bad = run_reference([hb(0), *bad], FAST)
    without = reference_replay([hb(0), {"tick": 11}], FAST)
    assert with_bad.records == without
    assert with_bad.rejections == {"bad_field": 11}


@pytest.mark.parametrize(
    "line, match",
    [
        ({"tick": 0, "feedback": "n", "cpu": 0.5}, "unknown keys"),
        ({"tick": 0, "feedback": 5}, "node id"),
        ({"tick": 0, "feedback": None}, "node id"),
        ({"tick": 0, "feedback": "n", "rif": -1}, "rif"),
        ({"tick": 0, "feedback": "n", "ok": 1.5}, "ok"),
        ({"tick": 0, "feedback": "n", "err": True}, "err"),
        ({"tick": 0, "feedback": "n", "consec": "3"}, "consec"),
    ],
)
def test_malformed_feedback_lines_make_the_trace_invalid(line, match):
    with pytest.raises(ValueError, match=match):
        validate_feedback(line)
    with pytest.raises(ValueError, match=match):
        run_reference([hb(0), line])


def test_feedback_line_defaults():
    assert validate_feedback({"tick": 3, "feedback": "n"}) == {
        "node": "n",
        "rif": None,
        "ok": 0,
        "err": 0,
        "consec": None,
    }
    assert validate_feedback(
        {"tick": 3, "feedback": "n", "rif": 0, "ok": 2, "err": 1, "consec": 0}
    ) == {"node": "n", "rif": 0, "ok": 2, "err": 1, "consec": 0}


# ------------------------------------------------------------ trace paths


def run(name):
    (trace,) = [t for t in build.all_traces() if t.name == name]
    return run_reference(trace.lines, trace.params, trace.ticks)


def path(records, node):
    """Compressed state path 'tick:S@slot ...' (X = dead), one entry per change."""
    letter = {"healthy": "H", "degraded": "D", "overloaded": "O", "quarantined": "Q", "dead": "X"}
    out, prev = [], None
    for r in records:
        if r["node"] == node:
            key = (r["slot"], r["state"])
            if key != prev:
                out.append(f"{r['tick']}:{letter[r['state']]}@{r['slot']}")
                prev = key
    return " ".join(out)


def zero_raw_ticks(records, node):
    return [r["tick"] for r in records if r["node"] == node and r["raw"] == 0.0]


def test_committed_traces_match_builders():
    expected = build.expected_files()
    on_disk = {
        p.name: p.read_text(encoding="utf-8")
        for p in TRACES_DIR.iterdir()
        if p.suffix in (".jsonl", ".toml")
    }
    assert on_disk == expected, "run: python tests/traces/build.py"


def test_no_trace_sets_a_version_1_key():
    for trace in build.all_traces():
        merge_params(trace.params)  # raises on weights.throughput and the like


def test_every_trace_node_id_is_valid_or_meant_to_be_rejected():
    for trace in build.all_traces():
        if trace.name == "rejections":
            continue
        for line in trace.lines:
            if "node" in line:
                assert valid_node_id(line["node"]), (trace.name, line["node"])


def test_hysteresis_exact_walks_every_transition():
    recs = run("hysteresis_exact").records
    states = [r["state"][0].upper() for r in recs]
    # plan in build.hysteresis_exact(): s = B = (100 - q) / 50 exactly
    assert "".join(states) == "HHDDHDOODOHOHOHHODH"
    # 1 node -> cap floor(0.5 * 1) = 0: it flapped 13 times, never quarantined
    assert all(r["state"] != "quarantined" for r in recs)


def test_hysteresis_smooth_path():
    recs = run("hysteresis_smooth").records
    assert path(recs, "g") == "0:H@0 19:D@0 30:O@0 46:D@0 65:H@0"


def test_breakers_each_condition():
    recs = run("breakers").records
    for node in ("wait", "cpu", "mem", "errs"):
        assert zero_raw_ticks(recs, node) == [4, 5, 6, 7], node
        assert all(at(recs, k, node)["state"] == "overloaded" for k in range(4, 8))
    # errs, d = 0.5 ** 0.005: t4 e = (5, 5): 10 at rate 0.5; t5..t7 one more
    # error each (rate > 0.5, total > 10); t8: 10 oks bring the rate to
    # (5d^4 + d^3 + d^2 + d) / (that + 5d^4 + 10) ~ 0.36
    d = 0.5**0.005
    e_err = 5 * d**4 + d**3 + d**2 + d
    assert e_err / (e_err + 5 * d**4 + 10) < 0.5
    assert zero_raw_ticks(recs, "errs_near") == []  # 5 / 11 < 0.5
    assert zero_raw_ticks(recs, "decay") == [0]  # 10, then 10 * d < 10
    assert zero_raw_ticks(recs, "few") == []  # 9 < min_requests
    assert zero_raw_ticks(recs, "many") == list(range(12))
    assert zero_raw_ticks(recs, "queue99") == []
    # qema = 100 exactly on the first tick: tripped, classified OVERLOADED
    assert at(recs, 4, "queue")["qema"] == 100.0
    assert at(recs, 4, "queue")["raw"] == 0.0
    # ema: 0, 0, 45, 76.5, 98.55, then 0.3*150 + 0.7*98.55 = 113.985 >= 100
    assert at(recs, 4, "ema")["raw"] > 0.0
    assert at(recs, 5, "ema")["qema"] == approx(113.985)
    assert at(recs, 5, "ema")["raw"] == 0.0


def test_liveness_registry_paths():
    result = run("liveness_registry")
    recs = result.records
    assert path(recs, "b") == ("0:H@1 10:D@1 12:X@1 14:H@1 23:D@1 25:X@1 35:H@1 43:D@1 45:X@1")
    assert path(recs, "c") == "0:H@2 9:D@2 11:X@2"
    assert path(recs, "d") == "22:H@2"  # the slot "c" left at t21
    assert path(recs, "g") == "55:H@1"  # the slot "b" left at t55
    assert "f" not in {r["node"] for r in recs}
    assert result.rejections == {"registry_full": 1}
    assert max(r["tick"] for r in recs) == 75
    # "b" was forgotten at t35 and re-registered by t35's heartbeat: fresh
    assert at(recs, 35, "b")["qema"] == 7.0


def opt_window(ticks, d):
    """e_ok, e_err of "opt" after tick ``ticks``: 50 ok / 5 err on ticks with
    k % 6 < 3 (its full rows), nothing otherwise."""
    e_ok = e_err = 0.0
    for k in range(ticks + 1):
        new = k % 6 < 3
        e_ok = e_ok * d + (50 if new else 0)
        e_err = e_err * d + (5 if new else 0)
    return e_ok, e_err


def test_optional_metrics_and_rate_normaliser():
    recs = run("optional_metrics").records
    d = 0.5 ** (1000 / 1000 / 10.0)
    w = W

    def opt_core(tick, full, g_rate):
        e_ok, e_err = opt_window(tick, d)
        g = {
            "cpu": GC,
            "mem": GM,
            "wait": 1.0,
            "rate": g_rate,
            "success": (e_ok + 1) / (e_ok + e_err + 1),
        }
        if full:
            g.update(io=1 - 0.3, tail=0.0)  # 45/10 = 4.5 -> 3.5 / 2 capped at 1
        return weighted(
            [
                (w[m], g[m])
                for m in ("cpu", "mem", "io", "wait", "rate", "success", "tail")
                if m in g
            ]
        )

    # t0: every queue is 0 (P = 0); R = 40 from "fast" (1 slot / 0.025 s):
    # opt's rate 1 / 0.1 = 10 -> g_rate = 10 / 40 = 0.25; window (50, 5)
    assert at(recs, 0, "opt")["raw"] == approx(opt_core(0, True, 0.25))
    assert opt_window(0, d) == (50.0, 5.0)
    # t4: a row without optionals (success still scored, window decayed)
    assert at(recs, 4, "opt")["raw"] == approx(opt_core(4, False, 0.25))
    # t10: "fast" is suspect (last t7: L = (6 - 3) / (6 - 2) = 0.75) and
    # still sets R = 40
    assert at(recs, 10, "fast")["liveness"] == 0.75
    assert at(recs, 12, "opt")["raw"] == approx(opt_core(12, True, 0.25))
    # "fast" is dead from t13: R = 10 (opt, opt2, zero) -> g_rate = 1
    assert at(recs, 13, "fast")["state"] == "dead"
    assert at(recs, 13, "opt")["raw"] == approx(opt_core(13, True, 1.0))
    # throughput is not scored: "zero" changes it at t22, its raw does not move
    assert at(recs, 21, "zero")["raw"] == at(recs, 22, "zero")["raw"]
    # "idle": avg_job_s 0, no rate term: (0.2 GC + 0.15 GM + 0.25 + 0.15) / 0.75
    assert at(recs, 22, "idle")["raw"] == approx(
        weighted([(0.2, GC), (0.15, GM), (0.25, 1.0), (0.15, 1.0)])
    )


def test_pressure_trace_published_and_leave_one_out():
    recs = run("pressure").records
    # t0: waits 20, 8, 45 (capped 1), 0 -> P = (20/30 + 8/30 + 1 + 0) / 4
    assert at(recs, 0, "p1")["pressure"] == approx((20 / 30 + 8 / 30 + 1 + 0) / 4)
    # p3 (last t2) is dead from t12 and drops out of the mean
    p2_wait = 4.0 * (2.0 + 12 / 10)
    s = 20 / 30 + p2_wait / 30 + 0
    assert at(recs, 12, "p1")["pressure"] == approx(s / 3)
    # p1 at t12 weighs the others: P_1 = (S - 20/30) / 2; k1 0.8, k2 0.6,
    # weights cpu 0.3, rate 0.2; R = 1 (p1, p4: 1 / 1.0; p2 slower) -> g_rate 1
    p_1 = (s - 20 / 30) / 2
    w_wait, w_rate = 0.25 + 0.8 * p_1, 0.2 + 0.6 * p_1
    core = weighted([(0.3, GC), (0.15, GM), (w_wait, 1 - 20 / 30), (w_rate, 1.0), (0.15, 1.0)])
    assert at(recs, 12, "p1")["raw"] == approx(core)


def test_quarantine_backoff_path():
    recs = run("quarantine_backoff").records
    # probation_ticks 5: first quarantine (n=1) t4..t17: a bad tick (t9) and a
    # tripped tick (t12) restart the count, 13..17 complete it.
    # second (n=2) entered t26, needs 10: t28..t37.
    assert path(recs, "q") == (
        "0:H@1 1:O@1 2:H@1 3:O@1 4:Q@1 17:H@1 23:O@1 24:H@1 25:O@1 26:Q@1 37:H@1"
    )


def test_quarantine_backoff_cap_path():
    recs = run("quarantine_backoff_cap").records
    # probation 3, max_backoff 2: n1 at t3 -> t6 (3 ticks: 4, 5, 6);
    # n2 at t15 -> t21 (6 = 3*2); n3 at t29 -> t35 (6 = 3*min(3, 2), not 9)
    assert path(recs, "q") == (
        "0:H@1 1:O@1 2:H@1 3:Q@1 6:H@1 13:O@1 14:H@1 15:Q@1 21:H@1 27:O@1 28:H@1 29:Q@1 35:H@1"
    )


def test_quarantine_memory_path():
    recs = run("quarantine_memory").records
    # probation 3, memory 6: Q t4 (n1) -> t8; 7 clean ticks reset n; Q t18 (n1)
    # -> t22 needs 3; Q t26 (n2, only 4 clean ticks) -> t33 needs 6; Q t48
    # (n reset -> n1) dies at t59 keeping n1; revived t62, Q t65 (n2) -> t75.
    assert path(recs, "q") == (
        "0:H@1 1:O@1 2:H@1 3:O@1 4:Q@1 8:H@1 15:O@1 16:H@1 "
        "17:O@1 18:Q@1 22:H@1 23:O@1 24:H@1 25:O@1 26:Q@1 "
        "33:H@1 45:O@1 46:H@1 47:O@1 48:Q@1 59:X@1 62:H@1 "
        "63:O@1 64:H@1 65:Q@1 75:H@1"
    )


def test_quarantine_cap_path():
    recs = run("quarantine_cap").records
    # 6 live -> cap 3: f0, f1, f2 admitted at t4; f3, f4 keep flapping H/O
    # until f0, f1 are released at t11 and they are admitted in their place.
    assert path(recs, "f2").startswith("0:H@3 1:O@3 2:H@3 3:O@3 4:Q@3 ")
    assert path(recs, "f3").startswith(
        "0:H@4 1:O@4 2:H@4 3:O@4 4:H@4 5:O@4 6:H@4 7:O@4 8:H@4 9:O@4 10:H@4 11:Q@4 "
    )
    for k in range(60):
        live = sum(1 for r in recs if r["tick"] == k and r["liveness"] > 0)
        q = sum(1 for r in recs if r["tick"] == k and r["state"] == "quarantined")
        assert q <= math.floor(0.5 * live)


def test_quarantine_defaults_path():
    recs = run("quarantine_defaults").records
    # entered t7; t9 and t11 tripped restart probation; t12..t41 = 30 ticks
    assert path(recs, "fl") == "0:H@2 1:O@2 2:H@2 3:O@2 4:H@2 5:O@2 6:H@2 7:Q@2 41:H@2"


def test_rejections_trace_counts():
    result = run("rejections")
    # every bad heartbeat appears on 5 of the 20 ticks ((j + k) % 4 == 0):
    # missing 4 x 5; bad_field 32 x 5 (19 of version 1, 5 slots, 8 resources);
    # unknown 1 x 5; bad_node_id 13 x 5 (6 of version 1, 7 outside the rule)
    assert result.rejections == {
        "missing_field": 20,
        "bad_field": 160,
        "unknown_field": 5,
        "bad_node_id": 65,
    }
    assert {r["node"] for r in result.records} == {
        "r",
        "keep",
        "e" * 63,
        "AZaz09._:-/" + "x" * 52,
        "edge",
        "edge2",
    }
    assert path(result.records, "r") == "0:H@0 9:D@0 11:X@0"


def test_feedback_ejection_trace():
    recs = run("feedback_ejection").records
    # err_age reaches 5.0 = (100 * 50) / 1000 exactly 100 ticks after an error
    assert zero_raw_ticks(recs, "ej") == list(range(10, 110))
    # ended by one ok (consec 0) at t30; again t50, an ok without consec at t60
    # keeps consec 6, consec 0 at t61 ends it
    assert zero_raw_ticks(recs, "ok_ends") == list(range(10, 30)) + list(range(50, 61))
    # consec 4 never ejects; consec 5 at t40 ejects until 5 s after t10's error
    assert zero_raw_ticks(recs, "near") == list(range(40, 110))
    # the error at t80 restarts the 5 s: ejected t10..t179
    assert zero_raw_ticks(recs, "renew") == list(range(10, 180))
    assert zero_raw_ticks(recs, "noerr") == []
    assert path(recs, "ej") == "0:H@0 10:O@0 110:D@0 111:H@0"
    # no window breaker hides the ejection: at most 5 + 1 errors, well below 10
    assert path(recs, "ok_ends") == "0:H@1 10:O@1 30:D@1 31:H@1 50:O@1 61:D@1 62:H@1"


def test_feedback_window_trace():
    recs = run("feedback_window").records
    assert zero_raw_ticks(recs, "fbw") == [2]  # (4, 6) by feedback alone
    # t3: (2, 3) -> g_succ = 3 / 6; raw with L = 1 and every other term as plain
    assert at(recs, 3, "fbw")["raw"] == approx(plain_core(0.5))
    assert zero_raw_ticks(recs, "sum") == [2]  # (3 + 2, 3 + 2) = 10 at 0.5
    assert zero_raw_ticks(recs, "near") == []  # 9 < 10
    assert zero_raw_ticks(recs, "rate") == []  # 5 / 11 < 0.5
    # mix: per heartbeat (2, 3); totals 5, 7.5, 8.75, 9.375 at t0..t3;
    # t4 + 2 feedback errors: e = (3.875, 5.625/2 + 5 = 7.8125) -> 11.6875
    # t5 (3.9375, 6.90625), t6 (the latest of two heartbeats counts:
    # 3.96875, 6.453125) still >= 10 at rate > 0.5; t7 the latest heartbeat
    # has no outcomes: (1.984375, 3.2265625) -> released
    assert zero_raw_ticks(recs, "mix") == [4, 5, 6]
    assert at(recs, 7, "mix")["raw"] == approx(plain_core(2.984375 / 6.2109375))
    # dead: 12 errors at t0 (tripped); dead t10..t13 (raw 0); 3 feedback
    # errors at t12 while dead; revived at t14: e_err = 12 * 0.5**14 + 3 * 0.25
    assert zero_raw_ticks(recs, "dead") == [0, 10, 11, 12, 13]
    assert at(recs, 14, "dead")["raw"] == approx(plain_core(1 / (1 + 12 * 0.5**14 + 0.75)))


def test_feedback_load_trace():
    recs = run("feedback_load").records
    # rif (1 slot, queue 2, 0.5 s jobs): wait = load * 0.5
    waits = [at(recs, k, "rif")["wait"] for k in range(12)]
    assert waits == [
        approx(w) for w in [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.5, 1.5, 1.0, 1.0, 1.0]
    ]
    assert [at(recs, k, "rif")["qema"] for k in range(12)] == [approx(2.0)] * 12
    # rifs (4 slots, queue 1, 2 s jobs): load 1 -> 0.5; rif 10 -> 6 * 2 / 4 = 3
    assert [at(recs, k, "rifs")["wait"] for k in (2, 3, 4, 5)] == [
        approx(0.5),
        approx(0.5),
        approx(0.5),
        approx(3.0),
    ]
    # rifq: load 75 at t2: B = 0.5; wait 7.5 -> g_wait 0.75; rate 10 = R
    # (rif 1/0.5 = 2, rifs 4/2 = 2, rifw 2/1 = 2): g_rate 1
    recs_t2 = [r for r in recs if r["tick"] == 2]
    p = {r["node"]: min(r["wait"] / 30, 1.0) for r in recs_t2}
    s = sum(p[n] for n in ("rif", "rifs", "rifq", "rifw"))
    assert at(recs, 2, "rifq")["pressure"] == approx(
        (1.0 / 30 + 0.5 / 30 + 7.5 / 30 + 29.5 / 30) / 4
    )
    p_q = (s - p["rifq"]) / 3
    core = weighted(
        [(0.2, GC), (0.15, GM), (0.25 + 0.5 * p_q, 0.75), (0.15 + 0.3 * p_q, 1.0), (0.15, 1.0)]
    )
    assert at(recs, 2, "rifq")["raw"] == approx(0.5 * core)
    assert zero_raw_ticks(recs, "rifq") == [5, 6, 7]  # load 100
    # rifw (2 slots, 1 s jobs): rif 61 -> 59 / 2 = 29.5; rif 62 -> 30: tripped
    assert at(recs, 2, "rifw")["wait"] == approx(29.5)
    assert zero_raw_ticks(recs, "rifw") == list(range(4, 12))


def test_feedback_registry_trace():
    result = run("feedback_registry")
    recs = result.records
    # ignored: t0 "ghost" and "bad", t6 "f1" (forgotten), t7 "f1" (registry full)
    assert result.ignored_feedback == 4
    assert result.rejections == {"bad_field": 1, "registry_full": 1}
    # t0: f1's feedback line precedes its heartbeat in the file and applies:
    # wait = (50 - 1) * 0.1, ejected (consec 9, error at t0)
    assert at(recs, 0, "f1")["wait"] == approx(4.9)
    assert zero_raw_ticks(recs, "f1") == list(range(6))
    # silent after t1: age 4 s = dead_after_s at t5 (X: DEAD)
    assert path(recs, "f1") == "0:O@1 5:X@1"
    # t6: f1 and f2 forgotten; g takes slot 1, f2 slot 2, both from zero
    assert path(recs, "g") == "6:H@1"
    assert path(recs, "f2") == "0:O@2 5:X@2 6:H@2"
    assert at(recs, 6, "g")["raw"] == approx(at(recs, 6, "keep")["raw"])
    # f2's feedback after its re-registration applies: rif 2 -> load 1
    assert at(recs, 6, "f2")["wait"] == approx(0.1)
    assert at(recs, 6, "f2")["raw"] > 0.0


def test_slots_trace():
    recs = run("slots").records
    # waits: s1 8 * 1 / 1; s4 8 * 1 / 4; smax 99 * 2 / 65535; sdrop 4 * 0.5 / 8
    assert [at(recs, 0, n)["wait"] for n in ("s1", "s4", "smax", "sdrop")] == [
        approx(8.0),
        approx(2.0),
        approx(198 / 65535),
        approx(0.25),
    ]
    # sdrop without slots from t5: 4 * 0.5 / 1
    assert at(recs, 5, "sdrop")["wait"] == approx(2.0)
    # rates 1, 4, 65535 / 2 = 32767.5, 16: R = 32767.5 (m = 4, the maximum)
    # s4 at t0: P_s4 = (8/30 + 198/65535/30 + 0.25/30) / 3; g_wait 1 - 2/30
    big_r = 65535 / 2
    p = [8 / 30, 2 / 30, 198 / 65535 / 30, 0.25 / 30]
    p_s4 = (sum(p) - p[1]) / 3
    core = weighted(
        [
            (0.2, GC),
            (0.15, GM),
            (0.25 + 0.5 * p_s4, 1 - 2 / 30),
            (0.15 + 0.3 * p_s4, 4 / big_r),
            (0.15, 1.0),
        ]
    )
    assert at(recs, 0, "s4")["raw"] == approx(core)
    # smax: load 99 (not divided by slots): B = (100 - 99) / 50 = 0.02
    p_smax = (sum(p) - p[2]) / 3
    core = weighted(
        [
            (0.2, GC),
            (0.15, GM),
            (0.25 + 0.5 * p_smax, 1 - 198 / 65535 / 30),
            (0.15 + 0.3 * p_smax, 1.0),
            (0.15, 1.0),
        ]
    )
    assert at(recs, 0, "smax")["raw"] == approx(0.02 * core)


def test_rate_percentile_trace():
    recs = run("rate_percentile").records

    def raw(tick, node, g_rate):
        # cpu = mem = queue = 0: core = (0.2 + 0.15 + 0.25 + 0.15*g + 0.15) / 0.9
        assert at(recs, tick, node)["raw"] == approx((0.75 + 0.15 * g_rate) / 0.9)

    live = {k: sum(1 for r in recs if r["tick"] == k and r["liveness"] > 0) for k in range(24)}
    assert live[0] == 11 and live[21] == 10
    raw(0, "r05", 5 / 10)  # m = 11: R = r_9 = 10
    raw(0, "r10", 1.0)
    raw(0, "wild", 1.0)
    raw(4, "r05", 5 / 9)  # m = 10 (r10 has no rate): R = r_8 = 9
    assert at(recs, 4, "r10")["raw"] == approx(1.0)  # no rate term: 0.75 / 0.75
    raw(8, "r05", 5 / (1 / 1e-6))  # m = 9: R = the maximum, the absurd rate
    raw(20, "r05", 5 / (1 / 1e-6))  # "wild" suspect (L = 0.125) still counts
    assert at(recs, 20, "wild")["liveness"] == approx(0.125)
    raw(21, "r05", 5 / 8)  # "wild" dead: m = 8, R = 8
