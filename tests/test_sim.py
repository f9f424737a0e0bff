"""Smoke test of the routing simulator (`python -m benchmarks sim --quick`).

Asserts the harness works, not the routing goal: every scenario x policy
produces sane metrics, the RESULTS.md section is written between its markers
only, and a seed gives the same numbers twice.
"""

import json
import math

import pytest

from benchmarks.sim import POLICIES, SCENARIOS, main, simulate
from benchmarks.sim.report import BEGIN, END, write_section


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
    assert set(doc["scenarios"]) == set(SCENARIOS)
    for name, res in doc["scenarios"].items():
        assert set(res["policies"]) == set(POLICIES), name
        for pol, m in res["policies"].items():
            where = f"{name}/{pol}"
            assert m["jobs"] > 1000, where
            for k in ("mean_s", "p50_s", "p99_s", "p999_s"):
                assert math.isfinite(m[k]) and m[k] > 0, where
            assert m["p50_s"] <= m["p99_s"] <= m["p999_s"], where
            assert m["failed"] + m["lost"] < m["jobs"], where
            assert 0 <= m["sent_to_dead"] <= m["lost"], where
            assert 0.0 <= m["over_limit_pct"] <= 100.0, where
            assert m["jobs_per_s"] > 0, where
    assert set(doc["goal"]) == set(SCENARIOS)


def test_faults_show_up_where_configured(quick_run):
    doc, _ = quick_run
    s = doc["scenarios"]
    assert all(m["lost"] == 0 for m in s["baseline"]["policies"].values())
    assert all(m["failed"] == 0 for m in s["baseline"]["policies"].values())
    assert any(m["lost"] > 0 for m in s["churn"]["policies"].values())
    assert any(m["failed"] > 0 for m in s["fail_fast"]["policies"].values())


def test_markdown_section_between_markers(quick_run, tmp_path):
    _, text = quick_run
    assert text.startswith("# Benchmark results\n\nsomeone else's section\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "## Routing quality" in text
    # rewriting replaces the section and keeps what surrounds it
    p = tmp_path / "R.md"
    p.write_text(f"head\n{BEGIN}\nold\n{END}\ntail\n")
    write_section(str(p), "new\n")
    assert p.read_text() == f"head\n{BEGIN}\nnew\n{END}\ntail\n"
    q = tmp_path / "absent.md"
    write_section(str(q), "x\n")
    assert BEGIN in q.read_text()


def test_same_seed_same_results():
    kw = dict(scenarios=["mixed"], seed=3, is_quick=True, workers=1)
    a = simulate(**kw)["scenarios"]
    b = simulate(**kw)["scenarios"]
    assert a == b
    c = simulate(**{**kw, "seed": 4})["scenarios"]
    assert c != a
