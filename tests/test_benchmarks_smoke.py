"""`python -m benchmarks run --quick` works end to end (not how fast it is),
and a run rewrites no committed file unless told to (``--record``).

The quick run goes as a user would start it, into a temporary output folder,
and latest.json must hold every section with positive numbers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import driver, report

ROOT = Path(__file__).resolve().parent.parent
QUICK_TIMEOUT_S = 150  # about a minute on a busy 2-core machine


def _run(*args, timeout):
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_quick_run_writes_every_section_into_its_output_folder_only(tmp_path):
    committed = {p: p.stat().st_mtime_ns for p in (driver.RESULTS_MD, *driver.RECORD_DIR.iterdir())}
    proc = _run("--quick", "--out", str(tmp_path), timeout=QUICK_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "latest.json").read_text())
    for key in (
        "machine",
        "tick",
        "read",
        "claims",
        "ingest",
        "freshness",
        "feed",
        "place",
        "ingest",
        "freshness",
        "memory",
        "scaling",
    ):
        assert res.get(key), key
    assert [r["nodes"] for r in res["tick"]] == [1000, 10000]
    for row in res["tick"]:
        for variant in ("ticker", "kernels", "numpy", "python"):
            assert row[variant]["median"] > 0 and row[variant]["ns_per_node"] > 0
        for part in ("gather_full", "gather_cached", "passes", "step14_radix"):
            assert row["parts"][part]["median"] > 0
    ours = res["read"]["ours"]
    assert ours["score_ns"]["median"] > 0 and ours["snapshot_us"]["median"] > 0
    assert ours["view_us"]["median"] > 0
    assert ours["top10_us"]["median"] > 0 and ours["pick_us"]["median"] > 0
    assert not ours["picked_none"]
    for k in ("ok", "error", "with", "in_flight"):
        assert res["claims"][k]["median_ns"] > 0
    pl = res["place"]
    assert pl["place_us"]["p50"] > 0 and pl["one_per_s"] > 0 and pl["many_per_s"] > 0
    assert res["read"]["manager"]["get_ns"]["median"] > 0
    assert "skipped" in res["read"]["redis"] or res["read"]["redis"]["hget_ns"]["median"] > 0
    for k in (
        "ceiling_single_frames",
        "single_binary",
        "single_json",
        "ceiling_batched_frames",
        "batched_binary_1000",
    ):
        assert res["ingest"][k]["hb_per_s"] > 0
    assert res["freshness"]["latency_ms"]["n"] > 0
    assert res["freshness"]["latency_ms"]["median"] > 0
    assert res["memory"]["10000"]["segment_bytes_per_node"] > 0
    for k in ("append_none_us", "append_1pct_us", "read_1000_us"):
        assert res["events"][k]["median"] > 0
    phases = res["feed"]["phases"]
    assert [p["fraction"] for p in phases] == [0.01, 0.1, 1.0]
    for p in phases:
        assert p["frames"] > 0 and p["bytes_per_tick"] > 0 and p["lag_ms"]["median"] > 0
    assert "Goals:" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in committed} == committed


@pytest.mark.parametrize(
    "extra",
    [["--quick"], ["--only", "tick"], ["--out", "x"], ["--nodes", "1000"], ["--skip", "read"]],
)
def test_record_is_a_full_run_only(extra):
    proc = _run("--record", *extra, timeout=60)
    assert proc.returncode == 2
    assert "--record is a full run" in proc.stderr


def test_record_replaces_the_bench_span_and_nothing_else(tmp_path):
    md = tmp_path / "RESULTS.md"
    sim = "<!-- sim:begin -->\nrouting tables\n<!-- sim:end -->\n"
    md.write_text(f"# Benchmark results\n\n{sim}\n{report.BEGIN}\nold\n{report.END}\n\ntail\n")
    res = {
        "command": "python -m benchmarks run",
        "date": "today",
        "machine": {
            "cpu": "x",
            "cores": 2,
            "python": "3.11",
            "numpy": "2",
            "numba": "0.6",
            "load_avg_1m_at_start": 0.5,
        },
    }
    report.record_results_md(res, ["| new table |"], md, "tick_scaling.png")
    text = md.read_text()
    assert sim in text and text.endswith("\n\ntail\n") and "old" not in text
    assert text.count(report.BEGIN) == text.count(report.END) == 1
    assert "| new table |\n\n![tick scaling](results/tick_scaling.png)\n" + report.END in text
    md.write_text(f"{report.BEGIN}\nno end\n")
    with pytest.raises(ValueError, match="without"):
        report.record_results_md(res, [], md, "tick_scaling.png")
