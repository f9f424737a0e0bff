"""Smoke test of the routing simulator (`python -m benchmarks sim --quick`).

Asserts the harness works, not the routing goals: every scenario x policy
produces sane metrics, goals are computed per seed and judged on the worst,
the RESULTS.md section is written between its markers only, retries behave as
configured, and seeds give the same numbers twice.  (Queueing-theory checks:
test_sim_validation.py.)
"""

import json
import math

import pytest

from benchmarks.sim import POLICIES, SCENARIOS, main, simulate
from benchmarks.sim.report import BEGIN, END, PEER_NAMES, SHIPPED, goal, write_section


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    md = d / "RESULTS.md"
    md.write_text("# Benchmark results\n\nsomeone else's section\n")
    js = d / "sim.json"
    assert main(["--quick", "--json", str(js), "--md", str(md)]) == 0
    return json.loads(js.read_text()), md.read_text()


def test_every_scenario_and_policy_has_metrics(quick_run):
    doc, _ = quick_run
    assert doc["meta"]["seeds"] == [1] and doc["meta"]["quick"]
    assert set(doc["scenarios"]) == set(SCENARIOS)
    for name, res in doc["scenarios"].items():
        assert res["schedulers"] == 4 and res["max_retries"] == 2
        assert set(res["policies"]) == set(POLICIES), name
        for pol, m in res["policies"].items():
            where = f"{name}/{pol}"
            assert m["jobs"] > 1000, where
            for k in ("mean_s", "p50_s", "p99_s", "p999_s"):
                assert math.isfinite(m[k]) and m[k] > 0, where
            assert m["p50_s"] <= m["p99_s"] <= m["p999_s"], where
            assert 0 <= m["mean_wait_s"] < m["mean_s"], where
            assert m["failed"] < m["jobs"] // 10, where
            assert 0 <= m["sent_to_dead"] <= m["lost"], where
            # every failed or lost attempt was retried, except each failed job's last
            assert m["retries"] == m["attempt_errors"] + m["lost"] - m["failed"], where
            assert 0.0 <= m["over_limit_pct"] <= 100.0, where
            assert m["jobs_per_s"] > 0, where
            shares = m["tail_service_share"] + m["tail_wait_share"] + m["tail_retry_share"]
            assert shares == pytest.approx(1.0), where
            assert m["by_seed"]["p99_s"] == [m["p99_s"]], where
    assert set(doc["goal"]) == set(SCENARIOS)
    for g in doc["goal"].values():
        assert g["policy"] == SHIPPED
        assert {f"p99_vs_{p}" for p in PEER_NAMES} | {"p99_vs_p2c_queue"} <= set(g["checks"])
        assert g["met"] == all(c["met"] for c in g["checks"].values())
    assert {"failed_vs_least_cpu", "failed_minus_fewest_peer"} <= set(
        doc["goal"]["fail_fast"]["checks"]
    )
    assert "sent_to_dead_vs_least_cpu" in doc["goal"]["churn"]["checks"]


def test_faults_show_up_where_configured(quick_run):
    doc, _ = quick_run
    s = doc["scenarios"]
    for m in s["baseline"]["policies"].values():
        assert m["lost"] == m["failed"] == m["attempt_errors"] == m["retries"] == 0
    assert any(m["sent_to_dead"] > 0 for m in s["churn"]["policies"].values())
    assert all(
        m["attempt_errors"] > 0
        for m in s["fail_fast"]["policies"].values()
        if m is not s["fail_fast"]["policies"]["oracle"]
    )
    assert s["fail_fast"]["policies"]["oracle"]["attempt_errors"] == 0  # it knows


def test_goal_is_judged_on_the_worst_seed():
    def res(p99_shipped, p99_peer):
        pol = {}
        for name, v in [
            (SHIPPED, p99_shipped),
            ("least_request", p99_peer),
            ("p2c_queue", [x * 3 for x in p99_peer]),
        ]:
            pol[name] = {
                "by_seed": {"p99_s": v, "failed": [0] * len(v), "sent_to_dead": [0] * len(v)}
            }
        return {"policies": pol}

    # seed 2 has the shipped pick slower than the peer: missed, whatever the median
    g = goal({"baseline": res([1.0, 2.2, 1.0], [2.0, 2.0, 2.0])})["baseline"]
    c = g["checks"]["p99_vs_least_request"]
    assert c["by_seed"] == [0.5, 1.1, 0.5] and c["max"] == 1.1 and not c["met"] and not g["met"]
    # 1.0 is not below the peer (strict), 0.5 of p2c_queue's is allowed (<=)
    g = goal({"baseline": res([2.0], [2.0])})["baseline"]
    assert not g["checks"]["p99_vs_least_request"]["met"]
    g = goal({"baseline": res([3.0], [2.0])})["baseline"]
    check = g["checks"]["p99_vs_p2c_queue"]
    assert check["by_seed"] == [0.5] and check["met"]


def test_markdown_section_between_markers(quick_run, tmp_path):
    _, text = quick_run
    assert text.startswith("# Benchmark results\n\nsomeone else's section\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "## Routing quality" in text and "worst seed" in text
    # rewriting replaces the section and keeps what surrounds it
    p = tmp_path / "R.md"
    p.write_text(f"head\n{BEGIN}\nold\n{END}\ntail\n")
    write_section(str(p), "new\n")
    assert p.read_text() == f"head\n{BEGIN}\nnew\n{END}\ntail\n"
    q = tmp_path / "absent.md"
    write_section(str(q), "x\n")
    assert BEGIN in q.read_text()


def test_same_seed_same_results_and_retries_configurable():
    kw = dict(
        scenarios=["mixed"],
        policies=["p2c_queue", "prequal", SHIPPED],
        seeds=[3, 4],
        is_quick=True,
        workers=1,
    )
    a = simulate(**kw)
    b = simulate(**kw)
    assert a["scenarios"] == b["scenarios"]
    pa = a["scenarios"]["mixed"]["policies"]
    assert all(len(m["by_seed"]["p99_s"]) == 2 for m in pa.values())
    assert pa[SHIPPED]["by_seed"]["p99_s"][0] != pa[SHIPPED]["by_seed"]["p99_s"][1]
    # no retries: every failed or lost attempt fails its job
    c = simulate(**{**kw, "seeds": [3], "retries": 0})["scenarios"]["mixed"]
    assert c["max_retries"] == 0
    for m in c["policies"].values():
        assert m["retries"] == 0
        assert m["failed"] == m["attempt_errors"] + m["lost"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "--seeds 0: must be >= 1"),
        (["--retries", "-1", "--scenario", "baseline"], "retries = -1 must be >= 0"),
        (["--score-override", "no_such_key=1"], "no_such_key: not a [score] key"),
        (["--score-override", "beta=fast"], "not a finite number"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
