"""The Prometheus collector reads a live segment; a missing engine is up=0."""

import time

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from shm_engine.core.config import Config
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.core.segment import Segment
from shm_engine.ops.metrics import EngineCollector
from shm_engine.tick.ticker import Ticker
from shm_engine.wire.jsondecode import check_heartbeat


def _scrape(name, per_node=False) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EngineCollector(name, per_node=per_node))
    return generate_latest(reg).decode()


def test_missing_engine_is_down(shm_name):
    text = _scrape(shm_name)
    assert f'shm_engine_up{{engine="{shm_name}"}} 0.0' in text
    assert "shm_engine_nodes" not in text


def test_live_segment_is_exported(shm_name):
    seg = Segment.create(shm_name, 8)
    try:
        v = seg.views
        reg = NodeRegistry(v)
        now = time.monotonic()
        for i, cpu in enumerate((0.1, 0.99)):
            rec, _l, _r, _d = check_heartbeat(
                dict(node=f"n{i}", cpu=cpu, mem=0.2, queue=1, avg_job_s=1)
            )
            slot = reg.register(f"n{i}".encode())
            write_rows(
                column_addresses(v.table),
                len(v.table.row_version),
                np.array([slot], np.int64),
                np.atleast_1d(rec),
                now,
            )
        v.header.rejects[0] = 3  # frame_too_large
        Ticker(v, Config()).tick(now)
        text = _scrape(shm_name, per_node=True)
    finally:
        seg.close()
    e = f'engine="{shm_name}"'
    assert f"shm_engine_up{{{e}}} 1.0" in text
    assert f'shm_engine_nodes{{{e},state="healthy"}} 1.0' in text
    assert f'shm_engine_nodes{{{e},state="overloaded"}} 1.0' in text
    assert f'shm_engine_heartbeats_rejected_total{{{e},reason="frame_too_large"}} 3.0' in text
    assert f'shm_engine_node_state{{{e},node="n1",state="overloaded"}} 1.0' in text
    assert f'shm_engine_node_score{{{e},node="n1"}} 0.0' in text
    assert f"shm_engine_epoch{{{e}}} 1.0" in text
