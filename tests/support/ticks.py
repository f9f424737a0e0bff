"""Heartbeats written as the ingest writes them, for in-process tick tests.

`send` registers the node if needed and writes its row with
`rows.write_rows` at a time the test chooses (a logical clock: every age
is exact); `node` is a heartbeat of default values with some overridden.
"""

from __future__ import annotations

import numpy as np

from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.wire.encode import node_key
from shm_engine.wire.jsondecode import check_heartbeat

__all__ = ["node", "send"]


def send(views, registry, now, **hb):
    """Apply one heartbeat as the ingest does; returns its slot."""
    rec, labels, reason, detail = check_heartbeat(hb)
    assert rec is None or reason is None
    assert rec is not None, detail
    key = node_key(rec)
    slot = registry.get(key)
    if slot < 0:
        slot = registry.register(key, b"", labels)
    t = views.table
    write_rows(
        column_addresses(t), len(t.row_version), np.array([slot], np.int64), np.atleast_1d(rec), now
    )
    return slot


def node(name, **kw):
    hb = dict(node=name, cpu=0.49, mem=0.475, queue=0.0, avg_job_s=1.0)
    hb.update(kw)
    return hb
