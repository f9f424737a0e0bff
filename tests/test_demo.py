"""`shm-engine demo` end to end: a real engine child, the simulated fleet
through the real ingest, the summary, a clean stop, no segment left behind."""

import os
import subprocess
import sys

import pytest

from shm_engine.ops.demo import KINDS, Fleet, kind_counts

DEMO_TIMEOUT_S = 150


def test_demo_runs_prints_a_summary_and_cleans_up(shm_name, reap):
    cmd = [
        sys.executable,
        "-m",
        "shm_engine",
        "demo",
        "--nodes",
        "40",
        "--duration",
        "8",
        "--no-view",
        "--name",
        shm_name,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reap(proc)
    out, err = proc.communicate(timeout=DEMO_TIMEOUT_S)
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "shm-engine demo: 40 nodes" in out
    for kind in KINDS:
        assert f"\n{kind.key} " in out, kind.key
    assert "GC-heavy nodes: mean rank" in out
    assert "pressure:" in out and "heartbeats:" in out
    assert "0 rejected" in out
    assert "engine stopped cleanly (exit 0)" in out
    assert not os.path.exists(f"/dev/shm/{shm_name}")


@pytest.mark.parametrize("n", [1, 5, 6, 7, 40, 200, 1001])
def test_kind_counts_add_up(n):
    counts = kind_counts(n)
    assert sum(counts) == n and min(counts) >= 0
    if n >= len(KINDS):
        assert min(counts) >= 1


def test_fleet_heartbeats_are_valid_and_dying_nodes_go_silent():
    from shm_engine.wire.decode import decode_frame
    from shm_engine.wire.encode import encode_batch

    fleet = Fleet(40, seed=7, period=30.0, dead_after_s=10.0)
    batch, cpu = fleet.heartbeats(0.0)
    assert len(batch) == 40
    decoded = decode_frame(encode_batch(batch), float("inf"))
    assert decoded.rejects == {} and len(decoded.records) == 40
    # dying nodes are silent from 15% of the timeline for dead_after_s + 2
    batch, cpu = fleet.heartbeats(30.0 * 0.15 + 1.5)
    dying = sum(1 for name in fleet.names if name.startswith("dying-"))
    assert len(batch) == 40 - dying
    assert fleet.spike(0.5 * 30.0) == 1.0 and fleet.spike(0.1 * 30.0) == 0.0
