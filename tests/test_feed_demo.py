"""``shm-engine demo --zones 2``: two engines and a federating mirror, end to end."""

from support.engine import cli


def test_zones_demo_runs_and_leaves_nothing_behind():
    proc = cli("demo", "--zones", "2", "--nodes", "24", "--duration", "4", "--no-view", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "2 zones, 24 nodes on mirror" in out
    assert "zone eu: fresh, 12 nodes" in out and "zone us: fresh, 12 nodes" in out
    assert "left behind" not in proc.stderr
