"""deploy/: the Grafana dashboard asks only for metrics the exporter
serves (names checked against a scrape of a live test segment, claims and
per-node series included), and the systemd unit runs ``shm-engine run``
with a config that ``config --check`` validates first."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.config import Config
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.core.segment import Segment
from shm_engine.ops.metrics import EngineCollector
from shm_engine.tick.ticker import Ticker
from shm_engine.wire.jsondecode import check_heartbeat

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "shm-engine.json"
UNIT = ROOT / "deploy" / "systemd" / "shm-engine.service"


def _exported(name: str) -> set[str]:
    seg = Segment.create(name, 8)
    claims = ClaimsSegment.create(name, 8, 2)
    try:
        v = seg.views
        ticker = Ticker(v, Config(), claims.views)
        rec, *_ = check_heartbeat(dict(node="n0", cpu=0.1, mem=0.2, queue=1, avg_job_s=1))
        slot = NodeRegistry(v).register(b"n0")
        now = time.monotonic()
        write_rows(column_addresses(v.table), 8, np.array([slot]), np.atleast_1d(rec), now)
        ticker.tick(now)
        reg = CollectorRegistry(auto_describe=False)
        reg.register(EngineCollector(name, per_node=True))
        text = generate_latest(reg).decode()
    finally:
        claims.close()
        seg.close()
    return {m.group(1) for m in re.finditer(r"^([a-z_]+)[{ ]", text, re.M)}


def test_dashboard_queries_only_exported_metrics(shm_name):
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs.append(dash["templating"]["list"][1]["query"]["query"])
    used = {m for e in exprs for m in re.findall(r"\bshm_engine_[a-z_]+", e)}
    exported = _exported(shm_name)
    assert used - exported == set(), f"not exported: {sorted(used - exported)}"
    assert len(used) >= 20  # the dashboard covers the exporter, not a corner of it
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


def test_systemd_unit_runs_the_engine():
    text = UNIT.read_text()
    sections = re.findall(r"^\[(\w+)\]$", text, re.M)
    assert sections == ["Unit", "Service", "Install"]
    start = re.search(r"^ExecStart=(.*)$", text, re.M).group(1).split()
    assert start[0].endswith("/shm-engine") and start[1] == "run" and "--config" in start
    check = re.search(r"^ExecStartPre=(.*)$", text, re.M).group(1).split()
    assert check[1:3] == ["config", "--check"] and check[3] == start[start.index("--config") + 1]
    assert re.search(r"^KillSignal=SIGTERM$", text, re.M)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
