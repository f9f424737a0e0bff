"""`python -m benchmarks run --only http --quick` works end to end (not how
fast the API is): a real engine with its HTTP child, the client phase and
both tick phases, into a temporary output folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_http_section_runs(tmp_path):
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--only",
            "http",
            "--quick",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    res = json.loads((tmp_path / "http_only.json").read_text())["http"]
    assert res["nodes"] == 2000 and res["get_node_errors"] == 0
    assert res["get_node_ms"]["n"] > 50 and res["get_node_ms"]["median"] > 0
    assert res["get_node_rps"] > 0 and res["server_cpu_us_per_request"] > 0
    for phase in ("tick_us_quiet", "tick_us_hammered"):
        assert res[phase]["n"] > 10 and res[phase]["median"] > 0, phase
    for phase in ("place", "place_batched"):
        got = res[phase]
        assert got["errors"] == {} and got["placements_per_s"] > 0, (phase, got)
        assert got["request_ms"]["n"] > 10 and got["tick_us"]["n"] > 10, (phase, got)
        assert got["server_cpu_us_per_placement"] > 0
    assert res["place_batched"]["batch"] == 32
    assert "POST /v1/place" in proc.stdout
    assert "GET /v1/nodes/{id}" in proc.stdout
