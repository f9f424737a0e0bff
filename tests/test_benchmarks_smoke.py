"""`python -m benchmarks run --quick` works end to end (not how fast it is).

Runs the harness as a user would, into a temporary results directory, and
checks that latest.json holds every section with positive numbers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_writes_every_section(tmp_path):
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "latest.json").read_text())
    for key in ("machine", "tick", "read", "ingest", "freshness", "memory", "scaling"):
        assert res.get(key), key
    assert [r["nodes"] for r in res["tick"]] == [1000, 10000]
    for row in res["tick"]:
        for variant in ("ticker", "ticker_ranked", "kernels", "numpy", "python"):
            assert row[variant]["median"] > 0 and row[variant]["ns_per_node"] > 0
    ours = res["read"]["ours"]
    assert ours["score_ns"]["median"] > 0 and ours["snapshot_us"]["median"] > 0
    assert ours["top10_us"]["median"] > 0
    assert res["read"]["manager"]["get_ns"]["median"] > 0
    assert "skipped" in res["read"]["redis"] or res["read"]["redis"]["hget_ns"]["median"] > 0
    for k in ("ceiling_single_frames", "single_binary", "single_json",
              "ceiling_batched_frames", "batched_binary_1000"):
        assert res["ingest"][k]["hb_per_s"] > 0
    assert res["freshness"]["latency_ms"]["n"] > 0
    assert res["freshness"]["latency_ms"]["median"] > 0
    assert res["memory"]["10000"]["segment_bytes_per_node"] > 0
    assert "Goals:" in proc.stdout
