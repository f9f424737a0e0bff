"""Segment lifecycle and layout: creation, attach, stale reclaim, modes, read-only maps."""

import itertools
import multiprocessing as mp
import os
import stat

import numpy as np
import pytest

from shm_engine.core.errors import EngineAlreadyRunning, EngineNotRunning, LayoutMismatch
from shm_engine.core.layout import HEADER_BYTES, LAYOUT_VERSION, MAGIC, layout_for
from shm_engine.core.segment import Segment, posix_name, process_alive, unlink


def _dev_shm(name):
    return os.path.join("/dev/shm", name)


# ------------------------------------------------------------------ layout --
@pytest.mark.parametrize("capacity", [1, 7, 10_000, 16_384])
def test_layout_fields_do_not_overlap_and_are_aligned(capacity):
    lay = layout_for(capacity)
    spans = [(0, HEADER_BYTES, "header")]
    for region in (lay.table, lay.registry, *lay.buffers):
        for f in region.values():
            assert f.offset % f.dtype.itemsize == 0, f.name
            spans.append((f.offset, f.offset + f.nbytes, f.name))
    spans.sort()
    for (_a0, a1, an), (b0, _b1, bn) in itertools.pairwise(spans):
        assert a1 <= b0, f"{an} overlaps {bn}"
    assert spans[-1][1] <= lay.size and lay.size % 4096 == 0


def test_layout_columns_start_on_cache_lines():
    lay = layout_for(1000)
    for region in (lay.table, lay.registry):
        for f in region.values():
            assert f.offset % 64 == 0, f.name


def test_layout_size_for_16384_slots_is_reported():
    # Recorded in docs/design.md; changes to the layout must update it there.
    assert layout_for(16_384).size == 18_493_440  # 1,128 bytes per slot + 12 KiB


def test_bad_capacity_rejected():
    with pytest.raises(ValueError, match="capacity 0 out of range"):
        layout_for(0)


# ---------------------------------------------------------------- segments --
def test_create_attach_and_unlink(shm_name):
    seg = Segment.create(shm_name, 64, tick_interval_ms=20, endpoint="tcp://127.0.0.1:1")
    try:
        h = seg.views.header
        assert int(h.magic[0]) == MAGIC and int(h.layout_version[0]) == LAYOUT_VERSION
        assert int(h.capacity[0]) == 64 and int(h.creator_pid[0]) == os.getpid()
        assert h.read_str("endpoint") == "tcp://127.0.0.1:1"
        assert (seg.views.buffers[0].state.state == 255).all()
        ro = Segment.attach(shm_name)
        assert ro.layout.capacity == 64 and ro.readonly
        assert ro.views.header.read_str("name") == shm_name
        ro.close()
    finally:
        seg.close()
        seg.unlink()
    assert not os.path.exists(_dev_shm(shm_name))


def test_segment_mode_defaults_to_0600(shm_name):
    old = os.umask(0o077)  # a restrictive umask must not matter either way
    try:
        seg = Segment.create(shm_name, 8)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(_dev_shm(shm_name)).st_mode) == 0o600
    finally:
        seg.close()


def test_segment_mode_0640_opens_to_group(shm_name):
    seg = Segment.create(shm_name, 8, mode=0o640)
    try:
        assert stat.S_IMODE(os.stat(_dev_shm(shm_name)).st_mode) == 0o640
    finally:
        seg.close()


def test_attach_missing_engine_names_it(shm_name):
    with pytest.raises(EngineNotRunning, match=f"engine '{shm_name}' is not running"):
        Segment.attach(shm_name)


def test_second_create_while_creator_alive_fails(shm_name):
    seg = Segment.create(shm_name, 8)
    try:
        with pytest.raises(EngineAlreadyRunning, match=rf"already running \(pid {os.getpid()}\)"):
            Segment.create(shm_name, 8)
    finally:
        seg.close()


def _create_and_die(name, q):
    seg = Segment.create(name, 8)
    seg.views.table.cpu[3] = 0.5  # leave a mark
    q.put(os.getpid())
    q.close()
    q.join_thread()  # flushed before dying
    os._exit(0)  # dies without unlinking: the segment is stale


def test_stale_segment_of_dead_creator_is_reclaimed(shm_name, reap):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_create_and_die, args=(shm_name, q))
    reap(p)
    p.start()
    dead_pid = q.get(timeout=30)
    p.join(timeout=30)
    assert not process_alive(dead_pid)
    assert os.path.exists(_dev_shm(shm_name))
    seg = Segment.create(shm_name, 16)  # different capacity: a fresh segment
    try:
        assert seg.layout.capacity == 16 and int(seg.views.header.creator_pid[0]) == os.getpid()
        assert seg.views.table.cpu[3] == 0.0
    finally:
        seg.close()


def test_pid_reuse_is_not_mistaken_for_the_creator():
    # Our own pid with a different start time is "another process".
    assert process_alive(os.getpid())
    assert not process_alive(os.getpid(), start_time=1)


def test_layout_version_mismatch_is_refused(shm_name):
    seg = Segment.create(shm_name, 8)
    try:
        seg.views.header.layout_version[0] = LAYOUT_VERSION + 1
        with pytest.raises(LayoutMismatch, match=f"layout version {LAYOUT_VERSION + 1}"):
            Segment.attach(shm_name)
    finally:
        seg.close()


def test_reader_mapping_is_read_only(shm_name):
    seg = Segment.create(shm_name, 8)
    try:
        ro = Segment.attach(shm_name, readonly=True)
        with pytest.raises(ValueError, match="read-only"):
            ro.views.buffers[0].out.score[0] = 1.0
        # Even bypassing numpy's flag, the page is mapped PROT_READ.
        assert not ro.views.buffers[0].out.score.flags.writeable
        with pytest.raises(TypeError):
            memoryview(ro._mmap)[0] = 1  # noqa: SLF001 - proving the mapping itself
        ro.close()
    finally:
        seg.close()


def test_bad_engine_names_are_refused():
    for bad in ("", "a/b", "x" * 201, "sp ace"):
        with pytest.raises(ValueError, match="engine name"):
            posix_name(bad)


def test_unlink_reports_absence(shm_name):
    assert unlink(shm_name) is False
    Segment.create(shm_name, 4).close()
    assert unlink(shm_name) is True


def test_numpy_views_share_the_mapping(shm_name):
    seg = Segment.create(shm_name, 8)
    try:
        ro = Segment.attach(shm_name)
        seg.views.table.queue[5] = 42.0
        assert ro.views.table.queue[5] == 42.0
        assert np.shares_memory(seg.views.table.queue, seg.views.table.queue)
        ro.close()
    finally:
        seg.close()
