"""Registry (lowest free slot, forgetting, unpublished registrations, crash
repair) and the table protocol between the ingest and the tick's gather."""

import mmap

import numpy as np
import pytest

from kernels.columns import make_inputs
from shm_engine.core.layout import SegmentViews, layout_for
from shm_engine.core.registry import NodeRegistry, decode_id
from shm_engine.core.rows import gather, write_batch
from shm_engine.wire.jsondecode import check_heartbeat


@pytest.fixture
def views():
    lay = layout_for(8)
    mm = mmap.mmap(-1, lay.size)
    v = SegmentViews(mm, lay)
    for b in v.buffers:
        b.state.state[:] = 255
    yield v
    del v


def _row(node, **kw):
    obj = dict(node=node, cpu=0.5, mem=0.5, queue=2.0, avg_job_s=1.0)
    obj.update(kw)
    rec, _labels, reason, _d = check_heartbeat(obj)
    assert rec is not None, reason
    return np.atleast_1d(rec)


def _write(v, slot, node, now, **kw):
    write_batch(v.table, np.array([slot], np.int64), _row(node, **kw), now)


def test_lowest_free_slot_and_full(views):
    reg = NodeRegistry(views)
    assert [reg.register(k) for k in (b"a", b"b", b"c")] == [0, 1, 2]
    reg.free(1)
    reg.free(0)
    assert reg.register(b"d") == 0  # lowest free, not the latest freed
    assert reg.register(b"e") == 1
    for k in (b"f", b"g", b"h", b"i", b"j"):
        reg.register(k)
    assert reg.register(b"full") == -1 and len(reg) == 8
    assert decode_id(views.registry.node_id[0]) == b"d"
    assert int(views.header.registered[0]) == 8


def test_every_change_bumps_generation_and_epoch(views):
    reg = NodeRegistry(views)
    e0 = int(views.header.registry_epoch[0])
    s = reg.register(b"a")
    g1 = int(views.registry.slot_gen[s])
    reg.free(s)
    g2 = int(views.registry.slot_gen[s])
    assert g1 % 2 == 0 and g2 % 2 == 0 and g2 > g1
    assert int(views.header.registry_epoch[0]) == e0 + 2
    assert not views.registry.zone[s].any() and not views.registry.labels[s].any()


def test_label_change_is_not_a_new_registration(views):
    reg = NodeRegistry(views)
    s = reg.register(b"a", b"eu-1", b'{"gpu":"a100"}')
    gen = int(views.registry.slot_gen[s])
    reg.set_meta(s, b"eu-2", None)
    assert int(views.registry.slot_gen[s]) == gen  # the tick keeps the node's state
    assert int(views.registry.meta_version[s]) == 2
    assert bytes(views.registry.zone[s]).rstrip(b"\0") == b"eu-2"
    assert int(views.registry.labels_len[s]) == 0


def test_forget_uses_the_age_before_new_heartbeats(views):
    reg = NodeRegistry(views)
    a, b = reg.register(b"a"), reg.register(b"b")
    _write(views, a, "a", now=0.0)
    _write(views, b, "b", now=250.0)
    # replay clock: ages ((k - a) * 50) / 1000 at k = 6000 -> 300 s and 287.5 s
    assert reg.forget_older_than(6000.0, 300.0, 50.0, 1000.0) == [a]
    assert b"a" not in reg and b"b" in reg


def test_unpublished_registration_is_not_gathered_on_the_old_row(views):
    """A tick between a registration and its first row must not score the new
    node on the previous occupant's row."""
    reg = NodeRegistry(views)
    old = reg.register(b"old")
    _write(views, old, "old", now=0.0, cpu=0.1)
    reg.free(old)
    new = reg.register(b"new", publish=False)
    assert new == old and int(views.registry.slot_gen[new]) % 2 == 1
    inp = make_inputs(8)
    prev, nxt = views.buffers[0], views.buffers[1]
    torn = gather(views, prev, nxt, inp, now=1.0, hwm=reg.hwm)
    # The slot is mid-change: it keeps last tick's view (no node there yet).
    assert torn == 1 and inp.active[new] == 0
    _write(views, new, "new", now=1.0, cpu=0.9)
    reg.publish_pending()
    gather(views, prev, nxt, inp, now=1.0, hwm=reg.hwm)
    assert inp.active[new] == 1 and inp.fresh[new] == 1 and inp.cpu[new] == 0.9


def test_gather_fresh_and_new_heartbeat_flags(views):
    reg = NodeRegistry(views)
    s = reg.register(b"a")
    _write(views, s, "a", now=10.0)
    inp = make_inputs(8)
    b0, b1 = views.buffers
    gather(views, b0, b1, inp, now=12.5)
    assert (inp.active[s], inp.fresh[s], inp.new_hb[s], inp.age[s]) == (1, 1, 1, 2.5)
    b1.state.state[s] = 0  # as if the tick scored it
    gather(views, b1, b0, inp, now=13.0)
    assert (inp.fresh[s], inp.new_hb[s]) == (0, 0)  # same generation, same row
    _write(views, s, "a", now=13.0, queue=7.0)
    b0.state.state[s] = 0
    gather(views, b0, b1, inp, now=13.0)
    assert (inp.fresh[s], inp.new_hb[s], inp.queue[s]) == (0, 1, 7.0)


def test_optional_metrics_not_carried_read_as_not_reported(views):
    reg = NodeRegistry(views)
    s = reg.register(b"a")
    _write(views, s, "a", 0.0, throughput=5.0, ok=3, err=1, io=0.2, p50_ms=1.0, p95_ms=2.0)
    assert views.table.reported[s] == 15
    _write(views, s, "a", 0.0)  # the whole row is replaced
    t = views.table
    assert t.reported[s] == 0 and t.throughput[s] == t.ok[s] == t.io[s] == t.p95_ms[s] == 0.0


def test_adopting_a_crashed_writers_registry_repairs_half_written_slots(views):
    reg = NodeRegistry(views)
    a = reg.register(b"a")
    b = reg.register(b"b")
    _write(views, a, "a", 0.0)
    views.registry.slot_gen[b] += 1     # died during a registration change
    views.table.row_version[a] += 1     # died mid-row
    again = NodeRegistry(views)         # the restarted ingest
    assert b"a" in again and b"b" not in again
    assert int(views.registry.slot_gen[b]) % 2 == 0 and views.registry.registered[b] == 0
    assert int(views.table.row_version[a]) % 2 == 0
    assert again.register(b"c") == b  # the dropped slot is free again
