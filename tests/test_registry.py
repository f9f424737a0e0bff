"""Registry (lowest free slot, forgetting, unpublished registrations, crash
repair), the row writer, and the table protocol between the ingest and the
tick's gather (in process, and across processes with self-describing rows)."""

import mmap
import multiprocessing as mp
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from kernels.columns import make_inputs
from shm_engine.core.layout import SegmentViews, layout_for
from shm_engine.core.registry import ID_READ_ATTEMPTS, NodeRegistry, decode_id, read_node_id
from shm_engine.core.rows import (
    column_addresses,
    gather,
    gather_inputs,
    make_gather_cache,
    write_rows,
)
from shm_engine.core.segment import Segment
from shm_engine.wire.format import RECORD_DTYPE
from shm_engine.wire.jsondecode import check_heartbeat
from support.wait import wait_until


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
    write_rows(
        column_addresses(v.table),
        len(v.table.row_version),
        np.array([slot], np.int64),
        _row(node, **kw),
        now,
    )


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


class _GenSequence:
    """A ``slot_gen`` column whose loads return ``values`` in turn (the last
    one forever): another process's registration changes, step by step."""

    def __init__(self, values):
        self.values, self.loads = list(values), 0

    def __getitem__(self, slot):
        self.loads += 1
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def test_read_node_id_of_registered_and_free_slots(views):
    reg = NodeRegistry(views)
    assert reg.register(b"alpha") == 0 and reg.register(b"beta") == 1
    reg.free(1)
    assert read_node_id(views.registry, 0) == (2, b"alpha")  # registered: gen 0 -> 1 -> 2
    assert read_node_id(views.registry, 1) == (4, b"")  # freed: two changes
    assert read_node_id(views.registry, 5) == (0, b"")  # never used


@pytest.mark.parametrize(
    "gens, expect, loads",
    [
        # slot_gen loads in order (2 per attempt: before and after the id), result
        ([2, 2], (2, b"alpha"), 2),  # quiet slot: one attempt
        ([2, 4, 4, 4], (4, b"alpha"), 4),  # changed during the copy: copied again
        ([3, 2, 2], (2, b"alpha"), 3),  # mid-change (odd) at first: skipped, one retry
        ([5], None, ID_READ_ATTEMPTS),  # odd on every attempt: a status, not a wait
    ],
)
def test_read_node_id_never_pairs_an_id_with_another_generation(views, gens, expect, loads):
    reg = NodeRegistry(views)
    reg.register(b"alpha")
    gen = _GenSequence(gens)
    assert read_node_id(views.registry._replace(slot_gen=gen), 0) == expect
    assert gen.loads == loads


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
    views.registry.slot_gen[b] += 1  # died during a registration change
    views.table.row_version[a] += 1  # died mid-row
    again = NodeRegistry(views)  # the restarted ingest
    assert b"a" in again and b"b" not in again
    assert int(views.registry.slot_gen[b]) % 2 == 0 and views.registry.registered[b] == 0
    assert int(views.table.row_version[a]) % 2 == 0
    assert again.register(b"c") == b  # the dropped slot is free again


# --------------------------------------------------------------------------
# The row writer

# Metrics the table keeps, with the presence bit that carries each (0: always).
ROW_METRICS = (
    ("cpu", 0),
    ("mem", 0),
    ("queue", 0),
    ("avg_job_s", 0),
    ("throughput", 1),
    ("ok", 2),
    ("err", 2),
    ("io", 4),
    ("p50_ms", 8),
    ("p95_ms", 8),
    ("ts", 16),
)
F8 = st.floats(allow_nan=False, width=64)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-2, 9),
            st.integers(0, 255),
            st.lists(F8, min_size=9, max_size=9),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 65535),
        ),
        min_size=1,
        max_size=12,
    ),
    F8,
)
def test_write_rows_writes_each_row_exactly(writes, now):
    """Against a row computed by hand: every metric copied (ok/err as exact
    floats, any u4), an absent metric 0, ``slots`` copied when its bit (0x40)
    is set and 1 otherwise, ``reported`` the low 4 flags, two ``row_version``
    steps per write, the later write of a slot wins, and slots outside [0, 8)
    are skipped and not counted."""
    lay = layout_for(8)
    mm = mmap.mmap(-1, lay.size)
    table = SegmentViews(mm, lay).table
    recs = np.zeros(len(writes), RECORD_DTYPE)
    for j, (_, flags, floats, ok, err, n_slots) in enumerate(writes):
        for name, value in zip(
            ("cpu", "mem", "queue", "avg_job_s", "throughput", "io", "p50_ms", "p95_ms", "ts"),
            floats,
            strict=True,
        ):
            recs[j][name] = value
        recs[j]["ok"], recs[j]["err"], recs[j]["flags"] = ok, err, flags
        recs[j]["slots"] = n_slots
        recs[j]["node"] = b"n%d" % j
    slots = np.array([w[0] for w in writes], np.int64)
    expect = {name: np.zeros(8) for name, _ in ROW_METRICS}
    expect.update(
        recv_time=np.zeros(8),
        reported=np.zeros(8, np.uint8),
        row_version=np.zeros(8, np.uint64),
        slots=np.zeros(8),
        alloc=np.zeros((8, 8), np.uint64),  # written by write_alloc, not here
    )
    for s, rec in zip(slots.tolist(), recs, strict=True):
        if 0 <= s < 8:
            for name, bit in ROW_METRICS:
                expect[name][s] = rec[name] if bit == 0 or rec["flags"] & bit else 0.0
            expect["recv_time"][s] = now
            expect["slots"][s] = rec["slots"] if rec["flags"] & 64 else 1.0
            expect["reported"][s] = rec["flags"] & 15
            expect["row_version"][s] += 2
    written = write_rows(column_addresses(table), 8, slots, recs, now)
    assert written == int(((slots >= 0) & (slots < 8)).sum())
    for name in table._fields:
        got = getattr(table, name)
        assert got.tobytes() == expect[name].astype(got.dtype).tobytes(), name
    del table


def test_column_addresses_refuses_a_table_of_other_columns(views):
    t = views.table
    with pytest.raises(
        ValueError,
        match=r"table column 'cpu' is float32\(8,\), not an aligned "
        r"contiguous float64\[8\]",
    ):
        column_addresses(t._replace(cpu=t.cpu.astype(np.float32)))
    with pytest.raises(ValueError, match=r"table column 'mem' .* contiguous"):
        column_addresses(t._replace(mem=np.zeros(16)[::2]))


# --------------------------------------------------------------------------
# The row protocol across processes: a child rewrites a few rows as fast as
# it can while this process gathers them, in compiled loops on both sides.
# Row s of round k describes itself: its receive time is k and every metric
# derives from x = k * ROWS + s, so a row copied partly before and partly
# after a write cannot pass.  The same loop copies the rows once more without
# the protocol: torn copies there show that the race really ran.

ROWS = 8
ROUNDS_PER_CALL = 4096
GATHERS_PER_CALL = 1024


@njit(cache=True)
def _write_rounds(columns, slots, recs, first, rounds):
    for k in range(first, first + rounds):
        for s in range(ROWS):
            x = float(k * ROWS + s)
            r = recs[s]
            r.cpu, r.mem, r.queue, r.avg_job_s = x, x + 1.0, x + 2.0, x + 3.0
            r.throughput, r.io, r.p50_ms, r.p95_ms = x + 4.0, x + 5.0, x + 6.0, x + 7.0
            r.ok, r.err = k * ROWS + s, k * ROWS + s + 1
            r.flags = 15
        write_rows(columns, ROWS, slots, recs, float(k))


def _rewrite_rows(name, stop, rounds_done):
    seg = Segment.attach(name, readonly=False)
    try:
        columns = column_addresses(seg.views.table)
        recs = np.zeros(ROWS, RECORD_DTYPE)
        slots = np.arange(ROWS, dtype=np.int64)
        k = 1
        while not stop.is_set():
            _write_rounds(columns, slots, recs, k, ROUNDS_PER_CALL)
            k += ROUNDS_PER_CALL
            rounds_done.value = k - 1
    finally:
        seg.close()


@njit(cache=True)
def _torn(s, recv, cpu, mem, queue, avg, tp, ok, err, io, p50, p95, reported):
    """Whether slot ``s``'s copied fields mix two writes (see above)."""
    x = recv * ROWS + s
    return not (
        cpu == x
        and mem == x + 1.0
        and queue == x + 2.0
        and avg == x + 3.0
        and tp == x + 4.0
        and io == x + 5.0
        and p50 == x + 6.0
        and p95 == x + 7.0
        and ok == x
        and err == x + 1.0
        and reported == 15
    )


@njit(cache=True)
def _race(reg, t, inp, gen, hb_seen, state, cache, gathers):
    """``gathers`` gathers (as the tick worker's: `gather_inputs` with the
    row cache; ``now`` 0 and ``age_mul`` -1, so age = receive time), each
    checked, and as many unprotected copies.  Returns (torn rows gathered,
    rows the gather gave up on, gathers that saw a new row, torn rows in the
    unprotected copies)."""
    torn = gave_up = changed = unprotected = 0
    for _ in range(gathers):
        gave_up += gather_inputs(
            reg.slot_gen,
            reg.registered,
            t,
            gen,
            hb_seen,
            state,
            inp,
            gen,
            hb_seen,
            0.0,
            -1.0,
            1.0,
            ROWS,
            inp.active.shape[0],
            cache.gen,
            cache.version,
            cache.recv_time,
        )
        new = 0
        for s in range(ROWS):
            torn += _torn(
                s,
                inp.age[s],
                inp.cpu[s],
                inp.mem[s],
                inp.queue[s],
                inp.avg_job_s[s],
                inp.throughput[s],
                inp.ok[s],
                inp.err[s],
                inp.io[s],
                inp.p50_ms[s],
                inp.p95_ms[s],
                inp.reported[s],
            )
            new |= inp.new_hb[s]
            unprotected += _torn(
                s,
                t.recv_time[s],
                t.cpu[s],
                t.mem[s],
                t.queue[s],
                t.avg_job_s[s],
                t.throughput[s],
                t.ok[s],
                t.err[s],
                t.io[s],
                t.p50_ms[s],
                t.p95_ms[s],
                t.reported[s],
            )
        changed += new
    return torn, gave_up, changed, unprotected


def test_gather_never_takes_a_row_the_other_process_is_writing(shm_name, reap):
    seg = Segment.create(shm_name, ROWS)
    try:
        views = seg.views
        reg = NodeRegistry(views)
        assert [reg.register(b"n%d" % s) for s in range(ROWS)] == list(range(ROWS))
        # Round 0 by this process, so the inputs start consistent: a slot the
        # gather gives up on (the child was preempted mid-row for all its
        # spins) keeps its previous inputs, which must still pass.
        recs, slots = np.zeros(ROWS, RECORD_DTYPE), np.arange(ROWS, dtype=np.int64)
        _write_rounds(column_addresses(views.table), slots, recs, 0, 1)
        inp, cache = make_inputs(ROWS), make_gather_cache(ROWS)
        gen, hb_seen = np.zeros(ROWS, np.uint64), np.zeros(ROWS, np.uint64)
        state = np.zeros(ROWS, np.uint8)  # every node scored before: new_hb = a new row
        args = (views.registry, views.table, inp, gen, hb_seen, state, cache)
        assert _race(*args, 1) == (0, 0, 1, 0)
        ctx = mp.get_context("spawn")
        stop, rounds_done = ctx.Event(), ctx.Value("q", 0, lock=False)
        child = ctx.Process(target=_rewrite_rows, args=(shm_name, stop, rounds_done))
        reap(child)
        child.start()
        version = views.table.row_version
        wait_until(lambda v=version: v[ROWS - 1] > 2, timeout=120, what="the child's rows")
        gathers = torn = gave_up = changed = unprotected = 0
        deadline = time.monotonic() + 60
        while gathers < 50_000 or changed < 5_000 or unprotected < 100:
            assert time.monotonic() < deadline, (gathers, changed, unprotected)
            got = _race(*args, GATHERS_PER_CALL)
            gathers += GATHERS_PER_CALL
            torn, gave_up, changed, unprotected = (
                a + b for a, b in zip((torn, gave_up, changed, unprotected), got, strict=True)
            )
            assert torn == 0, (gathers, torn)
        stop.set()
        child.join(timeout=30)
        assert child.exitcode == 0
        print(
            f"\n{time.monotonic() - deadline + 60:.1f} s: {gathers} gathers over "
            f"{rounds_done.value} rounds of {ROWS} rows: {changed} saw a new row, "
            f"{gave_up} rows kept (writer preempted mid-row); the "
            f"unprotected copies tore {unprotected} rows"
        )
        del views, version, args
    finally:
        seg.close()
        seg.unlink()
