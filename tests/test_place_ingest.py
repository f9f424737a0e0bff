"""The ingest keeps each node's capacity of the configured resources
(``alloc``, fixed point): the one-heartbeat path (Python, on the decoder's
scalars) and the batch path (`rows.write_alloc`, compiled) must agree on
every heartbeat, including absent names, rounding and the 32-bit clamp."""

from __future__ import annotations

import json
import mmap

import numpy as np

from shm_engine.core.config import Config
from shm_engine.core.layout import SegmentViews, layout_for, write_place_resources
from shm_engine.ingest.process import Ingest
from shm_engine.wire.encode import encode_batch

NAMES = ["cpu", "mem_gb", "gpu", "disk"]  # disk is not a configured resource
AMOUNTS = [0.0, 0.0004, 0.0005, 1.2345, 2.5, 5e6]  # 0.0005 * 1000 rounds up; 5e6 * 1000 clamps


def _ingest():
    lay = layout_for(16)
    mm = mmap.mmap(-1, lay.size)
    views = SegmentViews(mm, lay)
    write_place_resources(views.header, Config().placement.resources)
    return views, Ingest(views, Config())


def test_one_by_one_and_batched_heartbeats_store_the_same_capacity():
    rng = np.random.default_rng(0)
    one_v, one = _ingest()
    batch_v, batch = _ingest()
    for _ in range(200):
        hbs = []
        for n in range(8):
            hb = dict(node=f"n{n}", cpu=0.1, mem=0.1, queue=0.0, avg_job_s=1.0)
            if rng.random() < 0.7:
                names = rng.choice(NAMES, size=int(rng.integers(0, 4)), replace=False)
                hb["resources"] = {str(k): float(rng.choice(AMOUNTS)) for k in names}
            hbs.append(hb)
        for hb in hbs:
            assert one.handle_frame(json.dumps(hb).encode(), 1.0) == 1
        assert batch.handle_frame(encode_batch(hbs), 1.0) == 8
        np.testing.assert_array_equal(one_v.table.alloc, batch_v.table.alloc)
    del one, batch


def test_fixed_point_arithmetic():
    views, ing = _ingest()
    hb = dict(node="a", cpu=0.1, mem=0.1, queue=0.0, avg_job_s=1.0)
    cases = [
        # resources sent -> alloc (cpu x1000, mem_gb x1000, gpu x1)
        ({"cpu": 2.5, "gpu": 1.4}, [2500, 0, 1]),
        ({"mem_gb": 0.0005}, [0, 1, 0]),  # 0.5 unit rounds half up
        ({"mem_gb": 0.0004}, [0, 0, 0]),
        ({"cpu": 5e6}, [2**32 - 1, 0, 0]),  # 5e9 units: clamped to 32 bits
        ({}, [0, 0, 0]),
    ]
    for res, want in cases:
        assert ing.handle_frame(json.dumps({**hb, "resources": res}).encode(), 1.0) == 1
        assert views.table.alloc[0, :3].tolist() == want, res
    del ing


def test_binary_heartbeats_set_and_clear_taints():
    views, ing = _ingest()
    reg = views.registry

    def meta():
        return bytes(reg.labels[0, : reg.labels_len[0]])

    hb = dict(node="a", cpu=0.1, mem=0.1, queue=0.0, avg_job_s=1.0)
    assert ing.handle_frame(encode_batch([{**hb, "taints": ["gpu=true:NoSchedule"]}]), 1.0) == 1
    assert meta() == b"{}\ngpu=true:NoSchedule"
    # A heartbeat without taints replaces them (as every heartbeat replaces the row).
    assert ing.handle_frame(encode_batch([hb]), 2.0) == 1
    assert meta() == b""
    del ing
