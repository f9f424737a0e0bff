"""The reference checked on its own, before it judges the engine.

Tables of small cases whose expected values are worked out by hand in the
comments (from SCORING.md and docs/scoring-notes.md), then checks that each
committed trace really walks the path it was built for, so that comparing the
engine on it means something.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from traces import build  # tests/traces/build.py

from reference import (
    DEFAULT_PARAMS,
    Rejected,
    reference_replay,
    run_reference,
    validate_heartbeat,
)

TRACES_DIR = Path(__file__).resolve().parent / "traces"



FAST = {"engine": {"tick_interval_ms": 1000}}  # suspect 2 ticks, dead 10


def hb(tick, node="n", cpu=0.1, mem=0.1, queue=0.0, avg_job_s=0.1, **opt):
    return {"tick": tick, "node": node, "cpu": cpu, "mem": mem, "queue": queue,
            "avg_job_s": avg_job_s, **opt}


def at(records, tick, node):
    (rec,) = [r for r in records if r["tick"] == tick and r["node"] == node]
    return rec


def approx(x):
    return pytest.approx(x, abs=1e-12)


# ------------------------------------------------------------ one tick, by hand

def test_core_with_pressure_single_node():
    # cpu 0.49 / max_cpu 0.98 = 0.5        -> g_cpu  = 0.5
    # mem 0.19 / max_mem 0.95 = 0.2        -> g_mem  = 0.8
    # qema = queue = 10 (first tick); wait = 10 * 0.9 = 9; 9 / 30 = 0.3
    #                                       -> g_wait = 0.7
    # P = mean over the one live node of min(0.3, 1) = 0.3
    # w_wait = 0.25 + 0.5 * 0.3 = 0.40 (w_throughput changes too, unused)
    # core = (0.2*0.5 + 0.15*0.8 + 0.40*0.7) / (0.2 + 0.15 + 0.40)
    #      = (0.10 + 0.12 + 0.28) / 0.75 = 0.5 / 0.75 = 2/3
    # B = clamp((100 - 10) / (100 - 50), 0, 1) = clamp(1.8) = 1
    # raw = L * B * core = 2/3; first tick s = 0.5*raw + 0.5*raw = 2/3 -> HEALTHY
    (rec,) = reference_replay([hb(0, cpu=0.49, mem=0.19, queue=10.0, avg_job_s=0.9)])
    assert rec["wait"] == approx(9.0)
    assert rec["pressure"] == approx(0.3)
    assert rec["raw"] == approx(2 / 3)
    assert rec["score"] == approx(2 / 3)
    assert (rec["state"], rec["rank"], rec["slot"], rec["liveness"]) == ("healthy", 1, 0, 1.0)


def test_core_with_every_optional_metric():
    # g_cpu 0.5, g_mem 0.8 (as above); queue 0 -> wait 0 -> g_wait 1, P = 0
    # io 0.2 -> g_io 0.8; throughput 7 is the only one, T = 7 -> g_tput 1
    # ok 8, err 0 -> g_succ = 9 / 10 = 0.9
    # p95/p50 = 20/10 = 2 -> (2 - 1) / (3 - 1) = 0.5 -> g_tail = 0.5
    # weights sum to 1.0, so core = 0.2*0.5 + 0.15*0.8 + 0.05*0.8 + 0.25*1
    #   + 0.15*1 + 0.15*0.9 + 0.05*0.5
    #   = 0.10 + 0.12 + 0.04 + 0.25 + 0.15 + 0.135 + 0.025 = 0.82
    (rec,) = reference_replay([hb(0, cpu=0.49, mem=0.19, queue=0.0, io=0.2,
                                  throughput=7.0, ok=8, err=0,
                                  p50_ms=10.0, p95_ms=20.0)])
    assert rec["raw"] == approx(0.82)


def test_throughput_normalised_by_largest_live_reporter():
    # Both nodes: g_cpu 0.5, g_mem 0.8, g_wait 1, P = 0; T = max(10, 5) = 10
    # a: g_tput 1   -> core = (0.1 + 0.12 + 0.25 + 0.15*1.0) / 0.75 = 0.62 / 0.75
    # b: g_tput 0.5 -> core = (0.1 + 0.12 + 0.25 + 0.15*0.5) / 0.75 = 0.545 / 0.75
    recs = reference_replay([hb(0, "a", cpu=0.49, mem=0.19, throughput=10.0),
                             hb(0, "b", cpu=0.49, mem=0.19, throughput=5.0)])
    assert at(recs, 0, "a")["raw"] == approx(0.62 / 0.75)
    assert at(recs, 0, "b")["raw"] == approx(0.545 / 0.75)
    assert [at(recs, 0, n)["rank"] for n in "ab"] == [1, 2]


def test_throughput_all_zero_means_goodness_one():
    # T = 0 -> g_tput = 1 for every reporter: same core as "a" above
    (rec,) = reference_replay([hb(0, "z", cpu=0.49, mem=0.19, throughput=0.0)])
    assert rec["raw"] == approx(0.62 / 0.75)


def test_dead_node_raw_is_zero_even_if_throughput_ratio_overflows():
    # "a" dead at t10; T = 1e-10 from live "b"; 1e300 / 1e-10 overflows to
    # inf, capped at 1 ("each in [0, 1]"), so raw = 0 * 1 * core = 0
    g = {"cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1}
    recs = reference_replay([{"tick": 0, "node": "a", **g, "throughput": 1e300},
                             {"tick": 0, "node": "b", **g, "throughput": 1e-10},
                             {"tick": 10, "node": "b", **g, "throughput": 1e-10}], FAST)
    assert at(recs, 10, "a")["raw"] == 0.0
    assert at(recs, 10, "a")["state"] == "dead"


@pytest.mark.parametrize("age, liveness", [
    (2, 1.0),    # age == suspect_after_s: L = 1
    (3, 0.875),  # (10 - 3) / (10 - 2)
    (6, 0.5),    # (10 - 6) / 8
    (9, 0.125),  # (10 - 9) / 8
    (10, 0.0),   # age == dead_after_s: L = 0, DEAD
])
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
    recs = reference_replay([hb(0, queue=10.0), hb(1, queue=20.0), {"tick": 2},
                             hb(3, queue=0.0), hb(3, queue=30.0)])
    assert [r["qema"] for r in recs] == [approx(10.0), approx(13.0), approx(13.0),
                                         approx(18.1)]


def test_first_tick_uses_latest_of_several_heartbeats():
    # two heartbeats before the first tick: qema = queue of the latest = 40
    (rec,) = reference_replay([hb(0, queue=10.0), hb(0, queue=40.0)])
    assert rec["qema"] == 40.0


def test_smoothing_and_backpressure():
    # cpu = mem = avg_job_s = 0 -> core = 1, wait = 0, P = 0
    # t0: qema 60, B = (100 - 60) / 50 = 0.8, raw 0.8, s = 0.8
    # t1: qema = 0.3*0 + 0.7*60 = 42 -> B = clamp(58/50) = 1, raw 1
    #     s = 0.5*1 + 0.5*0.8 = 0.9
    recs = reference_replay([hb(0, cpu=0.0, mem=0.0, queue=60.0, avg_job_s=0.0),
                             hb(1, cpu=0.0, mem=0.0, queue=0.0, avg_job_s=0.0)])
    assert [r["raw"] for r in recs] == [approx(0.8), approx(1.0)]
    assert [r["score"] for r in recs] == [approx(0.8), approx(0.9)]


def test_tripped_zeroes_raw_and_smoothing():
    # t0: s 0.94...; t1: cpu 0.98 >= max_cpu -> raw 0, s 0 (no smoothing), O
    # t2: untripped, s = 0.5*raw + 0.5*0
    recs = reference_replay([hb(0), hb(1, cpu=0.98), hb(2)])
    assert (recs[1]["raw"], recs[1]["score"], recs[1]["state"]) == (0.0, 0.0, "overloaded")
    assert recs[2]["raw"] == approx(recs[0]["raw"])
    # 0.5 * 0.9397 = 0.47 is in [0.30000000000000004, 0.5): O -> DEGRADED
    assert recs[2]["state"] == "degraded"
    assert recs[2]["score"] == 0.5 * recs[2]["raw"] + 0.5 * 0.0


def test_revival_is_classified_fresh_with_s_prev_zero():
    # dead at t10 (s = 0); back at t12: s = 0.5*raw + 0.5*0 = 0.47 -> fresh:
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
    recs = reference_replay([hb(0, "a"), hb(0, "b"), hb(1, "b"), hb(5, "c"),
                             hb(5, "b")], params)
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


# ------------------------------------------------------------ validation

GOOD = {"node": "n", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1}


@pytest.mark.parametrize("change, reason", [
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
    ({"node": ""}, "bad_node_id"),
    ({"node": "x" * 64}, "bad_node_id"),
    ({"node": "é" * 32}, "bad_node_id"),      # 64 bytes of UTF-8
    ({"node": "a\x00b"}, "bad_node_id"),
    ({"node": "a\x7fb"}, "bad_node_id"),
    ({"node": 5}, "bad_node_id"),
])
def test_rejection_reasons(change, reason):
    msg = dict(GOOD)
    for key, value in change.items():
        if value is None:
            del msg[key]
        else:
            msg[key] = value
    with pytest.raises(Rejected, match=f"^{reason}:"):
        validate_heartbeat(msg)


@pytest.mark.parametrize("change", [
    {"cpu": 0, "mem": 1, "queue": 3, "avg_job_s": 0},   # ints are numbers
    {"node": "x" * 63},
    {"node": "é" * 31 + "x"},                            # 63 bytes
    {"ok": 0, "err": 2**32 - 1},
    {"p50_ms": 5.0, "p95_ms": 5.0},
    {"io": 0.0, "throughput": 0.0, "ts": -3.5, "zone": "", "labels": {}},
    {"zone": "z" * 31, "labels": {"k": "v"}},
])
def test_accepted_edge_cases(change):
    row = validate_heartbeat({**GOOD, **change})
    assert isinstance(row["cpu"], float)


def test_rejected_heartbeat_changes_nothing():
    # "n" sends nothing valid after t0; the invalid ones must not refresh
    # its age: dead at t10 exactly as without them.
    bad = [{"tick": k, **GOOD, "cpu": 2.0} for k in range(1, 12)]
    with_bad = run_reference([hb(0), *bad], FAST)
    without = reference_replay([hb(0), {"tick": 11}], FAST)
    assert with_bad.records == without
    assert with_bad.rejections == {"bad_field": 11}


# ------------------------------------------------------------ trace paths

def run(name):
    (trace,) = [t for t in build.all_traces() if t.name == name]
    return run_reference(trace.lines, trace.params, trace.ticks)


def path(records, node):
    """Compressed state path 'tick:S@slot ...' (X = dead), one entry per change."""
    letter = {"healthy": "H", "degraded": "D", "overloaded": "O",
              "quarantined": "Q", "dead": "X"}
    out, prev = [], None
    for r in records:
        if r["node"] == node:
            key = (r["slot"], r["state"])
            if key != prev:
                out.append(f"{r['tick']}:{letter[r['state']]}@{r['slot']}")
                prev = key
    return " ".join(out)


def test_committed_traces_match_builders():
    expected = build.expected_files()
    on_disk = {p.name: p.read_text(encoding="utf-8")
               for p in TRACES_DIR.iterdir() if p.suffix in (".jsonl", ".toml")}
    assert on_disk == expected, "run: python tests/traces/build.py"


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
        for k in range(12):
            rec = at(recs, k, node)
            tripped = 4 <= k < 8
            assert (rec["raw"] == 0.0) == tripped, (node, k)
            if tripped:
                assert rec["state"] == "overloaded"
    assert all(at(recs, k, "many")["raw"] == 0.0 for k in range(12))
    assert all(at(recs, k, "few")["raw"] > 0.0 for k in range(12))
    assert all(at(recs, k, "queue99")["raw"] > 0.0 for k in range(12))
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
    assert path(recs, "b") == ("0:H@1 10:D@1 12:X@1 14:H@1 23:D@1 25:X@1 35:H@1 "
                               "43:D@1 45:X@1")
    assert path(recs, "c") == "0:H@2 9:D@2 11:X@2"
    assert path(recs, "d") == "22:H@2"              # the slot "c" left at t21
    assert path(recs, "g") == "55:H@1"              # the slot "b" left at t55
    assert "f" not in {r["node"] for r in recs}
    assert result.rejections == {"registry_full": 1}
    assert max(r["tick"] for r in recs) == 75
    # "b" was forgotten at t35 and re-registered by t35's heartbeat: fresh
    assert at(recs, 35, "b")["qema"] == 7.0


def test_optional_metrics_and_throughput_normaliser():
    recs = run("optional_metrics").records
    # t0, node "opt" carries everything; P = 0 (every queue is 0):
    g = {
        "cpu": 1 - 0.1 / 0.98, "mem": 1 - 0.1 / 0.95, "io": 1 - 0.3, "wait": 1.0,
        "throughput": 10.0 / 40.0,        # T = 40 from "fast"
        "success": (50 + 1) / (50 + 5 + 2),
        "tail": 0.0,                      # 45/10 = 4.5 -> (3.5 / 2) capped at 1
    }
    w = DEFAULT_PARAMS["score"]["weights"]
    core = sum(w[m] * g[m] for m in g) / sum(w[m] for m in g)
    assert at(recs, 0, "opt")["raw"] == approx(core)
    # t4: row without optionals: core over cpu, mem, wait only
    core3 = (0.2 * g["cpu"] + 0.15 * g["mem"] + 0.25) / 0.6
    assert at(recs, 4, "opt")["raw"] == approx(core3)
    # "fast" is dead from t13 (last t7, dead_after 6), so at t13 T = 10
    # ("opt" itself): g_tput = 1
    assert at(recs, 13, "fast")["state"] == "dead"
    g13 = dict(g, throughput=1.0)
    core13 = sum(w[m] * g13[m] for m in g13) / sum(w[m] for m in g13)
    assert at(recs, 13, "opt")["raw"] == approx(core13)
    # t10: "fast" is suspect (L = 0.75) and still sets T = 40
    assert at(recs, 10, "fast")["liveness"] == 0.75
    assert at(recs, 12, "opt")["raw"] == approx(core)


def test_pressure_trace_has_pressure_shift():
    recs = run("pressure").records
    # t0: waits 20, 8, 45 (capped 1), 0 -> P = (20/30 + 8/30 + 1 + 0) / 4
    assert at(recs, 0, "p1")["pressure"] == approx((20 / 30 + 8 / 30 + 1 + 0) / 4)
    # p3 (last t2) is dead from t12 and drops out of the mean
    p2_wait = 4.0 * (2.0 + 12 / 10)
    assert at(recs, 12, "p1")["pressure"] == approx((20 / 30 + p2_wait / 30 + 0) / 3)


def test_quarantine_backoff_path():
    recs = run("quarantine_backoff").records
    # probation_ticks 5: first quarantine (n=1) t4..t17: a bad tick (t9) and a
    # tripped tick (t12) restart the count, 13..17 complete it.
    # second (n=2) entered t26, needs 10: t28..t37.
    assert path(recs, "q") == ("0:H@1 1:O@1 2:H@1 3:O@1 4:Q@1 17:H@1 23:O@1 24:H@1 "
                               "25:O@1 26:Q@1 37:H@1")


def test_quarantine_backoff_cap_path():
    recs = run("quarantine_backoff_cap").records
    # probation 3, max_backoff 2: n1 at t3 -> t6 (3 ticks: 4, 5, 6);
    # n2 at t15 -> t21 (6 = 3*2); n3 at t29 -> t35 (6 = 3*min(3, 2), not 9)
    assert path(recs, "q") == ("0:H@1 1:O@1 2:H@1 3:Q@1 6:H@1 13:O@1 14:H@1 15:Q@1 "
                               "21:H@1 27:O@1 28:H@1 29:Q@1 35:H@1")


def test_quarantine_memory_path():
    recs = run("quarantine_memory").records
    # probation 3, memory 6: Q t4 (n1) -> t8; 7 clean ticks reset n; Q t18 (n1)
    # -> t22 needs 3; Q t26 (n2, only 4 clean ticks) -> t33 needs 6; Q t48
    # (n reset -> n1) dies at t59 keeping n1; revived t62, Q t65 (n2) -> t75.
    assert path(recs, "q") == ("0:H@1 1:O@1 2:H@1 3:O@1 4:Q@1 8:H@1 15:O@1 16:H@1 "
                               "17:O@1 18:Q@1 22:H@1 23:O@1 24:H@1 25:O@1 26:Q@1 "
                               "33:H@1 45:O@1 46:H@1 47:O@1 48:Q@1 59:X@1 62:H@1 "
                               "63:O@1 64:H@1 65:Q@1 75:H@1")


def test_quarantine_cap_path():
    recs = run("quarantine_cap").records
    # 6 live -> cap 3: f0, f1, f2 admitted at t4; f3, f4 keep flapping H/O
    # until f0, f1 are released at t11 and they are admitted in their place.
    assert path(recs, "f2").startswith("0:H@3 1:O@3 2:H@3 3:O@3 4:Q@3 ")
    assert path(recs, "f3").startswith("0:H@4 1:O@4 2:H@4 3:O@4 4:H@4 5:O@4 6:H@4 "
                                       "7:O@4 8:H@4 9:O@4 10:H@4 11:Q@4 ")
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
    assert result.rejections == {"missing_field": 20, "bad_field": 95,
                                 "unknown_field": 5, "bad_node_id": 30}
    assert {r["node"] for r in result.records} == {
        "r", "keep", "e" * 63, "nœud-é" + "x" * 55, "edge", "edge2"}
    assert path(result.records, "r") == "0:H@0 9:D@0 11:X@0"
