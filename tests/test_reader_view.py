"""ScoreReader.view(): the published tick in place, guarded by the latch.

A view agrees with the stable copy of the same epoch; it stays valid while
the engine fills the other buffer and expires (loudly) once the engine
begins rewriting its own; and against a writer flipping as fast as it can in
another process, every view that says it is still valid after being read
held one epoch's values, never a mix."""

import multiprocessing as mp
import time

import numpy as np
import pytest

import clients
from clients import ReadContention, ScoreReader, SnapshotExpired, SnapshotView
from shm_engine.core.config import Config
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.core.segment import Segment
from shm_engine.core.seqlock import write_begin, write_end
from shm_engine.tick.ticker import Ticker
from shm_engine.wire.jsondecode import check_heartbeat


class Engine:
    """The ingest's and tick worker's writes, driven in-process."""

    def __init__(self, name, capacity=16):
        self.seg = Segment.create(name, capacity)
        self.views = self.seg.views
        self.registry = NodeRegistry(self.views)
        self.ticker = Ticker(self.views, Config())

    def send(self, node, now, **kw):
        rec, _labels, reason, detail = check_heartbeat(
            dict(dict(node=node, cpu=0.2, mem=0.3, queue=1.0, avg_job_s=1.0), **kw)
        )
        assert rec is not None, (reason, detail)
        slot = self.registry.get(node.encode())
        if slot < 0:
            slot = self.registry.register(node.encode(), b"", None)
        t = self.views.table
        write_rows(
            column_addresses(t),
            len(t.row_version),
            np.array([slot], np.int64),
            np.atleast_1d(rec),
            now,
        )

    def close(self):
        self.seg.close()


@pytest.fixture
def engine(shm_name):
    eng = Engine(shm_name)
    yield eng
    eng.close()


@pytest.fixture
def reader(engine):
    r = ScoreReader.attach(engine.seg.name)
    yield r
    r.close()


def _publish_three(engine, t):
    for i, cpu in enumerate((0.1, 0.5, 0.99)):  # n2: cpu over max_cpu, breaker trips
        engine.send(f"n{i}", t, cpu=cpu)
    engine.ticker.tick(t)


def test_a_view_is_the_snapshot_of_its_epoch_without_a_copy(engine, reader):
    t = time.monotonic()
    _publish_three(engine, t)
    snap = reader.snapshot()
    with reader.view() as v:
        assert isinstance(v, SnapshotView) and v.epoch == snap.epoch == 1
        for col in ("score", "raw", "wait", "qema", "liveness", "state", "ranked"):
            np.testing.assert_array_equal(getattr(v, col), getattr(snap, col))
        assert v.nodes == snap.nodes == ("n0", "n1", "n2")
        assert (v.tick_time, v.tick_mono, v.pressure, v.ejected) == (
            snap.tick_time,
            snap.tick_mono,
            snap.pressure,
            snap.ejected,
        )
        assert v.weights == snap.weights and v.counts == snap.counts
        assert v.top(2) == snap.top(2) and v.scores() == snap.scores()
        with pytest.raises(ValueError, match="read-only"):
            v.score[0] = 1.0
    copied = v.copy()
    assert copied.epoch == 1 and copied.nodes == snap.nodes
    np.testing.assert_array_equal(copied.score, snap.score)
    # In place: a store into the published buffer (the engine's mapping) shows
    # through the view at once, and not in the copies.
    engine.views.buffers[1].out.score[0] = 0.125
    assert v.score[0] == 0.125 and copied.score[0] == snap.score[0] != 0.125
    assert "valid" in repr(v) and "epoch=1" in repr(v)


def test_a_view_stays_valid_one_tick_and_expires_when_its_buffer_is_rewritten(engine, reader):
    t = time.monotonic()
    _publish_three(engine, t)
    v = reader.view()
    score1 = v.score.copy()
    engine.ticker.tick(t + 0.05)  # epoch 2 into the other buffer
    assert v.still_valid() and reader.view().epoch == 2
    np.testing.assert_array_equal(v.score, score1)  # epoch 1, untouched
    seq = engine.views.header.latch_seq
    write_begin(seq)  # epoch 3 begins: buffer 1, the view's, is rewritten
    try:
        assert not v.still_valid()
        for read in (
            lambda: v.score,
            lambda: v.ranked,
            lambda: v.state,
            lambda: v.nodes,
            lambda: v.top(1),
            v.copy,
            v.check,
        ):
            with pytest.raises(
                SnapshotExpired,
                match=r"^the view of epoch 1 expired: the engine began rewriting "
                r"its buffer \(epoch 3\); .* take a new view$",
            ):
                read()
        with pytest.raises(SnapshotExpired), v:
            pass  # leaving the block checks
        with reader.view() as v2:  # the newest view (epoch 2) is still fine
            assert v2.epoch == 2 and v2.still_valid()
    finally:
        write_end(seq)
    assert not v.still_valid()  # expired for ever
    assert reader.view().epoch == 3


def test_an_exception_inside_the_block_is_not_replaced(engine, reader):
    _publish_three(engine, time.monotonic())
    with pytest.raises(KeyError), reader.view():
        raise KeyError("mine")


def test_a_view_follows_new_slots_and_names(engine, reader):
    t = time.monotonic()
    engine.send("a", t)
    engine.ticker.tick(t)
    assert reader.view().nodes == ("a",) and len(reader.view().score) == 1
    engine.send("b", t)
    engine.ticker.tick(t)
    with reader.view() as v:
        assert v.nodes == ("a", "b") and len(v.score) == 2 and sorted(v.ranked) == [0, 1]
    engine.registry.free(0)
    engine.send("c", t)  # a's slot, a new generation
    engine.ticker.tick(t)
    assert reader.view().nodes == ("c", "b")


def test_view_before_the_first_tick_and_under_contention(engine, reader):
    engine.send("a", 0.0)
    with pytest.raises(clients.NothingPublished):
        reader.view()
    engine.ticker.tick(0.0)
    engine.ticker.tick(0.0)

    class Lapping:  # the writer moves two epochs between any two loads
        seq = 4

        def __getitem__(self, index):
            self.seq += 4
            return self.seq - 4

    reader._seq_mv = Lapping()
    with pytest.raises(ReadContention, match=r"could copy a view \(17 attempts\)"):
        reader.view()


# ------------------------------------------------------------------ stress --
# The writer publishes epoch e with score[s] = (e * 100_000 + s) * 1e-12 and
# ranked = slots forward (even e) or backward (odd e), for N_STRESS slots: any
# value tells its epoch and slot.  N_STRESS is large enough that reading a
# view takes longer than the writer's epoch, so views expire often.
N_STRESS = 4096


def _value(epoch, slot):
    return (epoch * 100_000 + slot) * 1e-12


def _writer(name, stop, ready):
    seg = Segment.attach(name, readonly=False)
    v = seg.views
    reg = NodeRegistry(v)
    for s in range(N_STRESS):
        reg.register(f"n{s}".encode())
    for b in v.buffers:
        b.gen[:N_STRESS] = v.registry.slot_gen[:N_STRESS]
        b.state.state[:N_STRESS] = 0
        b.n_ranked[0] = N_STRESS
    slots = np.arange(N_STRESS)
    latch = v.header.latch_seq
    ready.set()
    while not stop.is_set():
        e = write_begin(latch)
        buf = v.buffers[e & 1]
        buf.out.score[:N_STRESS] = _value(e, slots)
        buf.out.ranked[:N_STRESS] = slots[::-1] if e & 1 else slots
        buf.tick_mono[0] = float(e)
        write_end(latch)
    seg.close()


def _consistent(epoch, score, ranked, mono) -> bool:
    slots = np.arange(N_STRESS)
    return (
        np.array_equal(score, _value(epoch, slots))
        and np.array_equal(ranked, slots[::-1] if epoch & 1 else slots)
        and mono == float(epoch)
    )


def _reader(name, n_views, result):
    r = ScoreReader.attach(name)
    bad = valid = expired = 0
    try:
        while r.epoch == 0:
            pass
        for i in range(n_views):
            try:
                kind = i % 3
                if kind == 0:  # read, then ask
                    v = r.view()
                    score, ranked = v.score.tolist(), v.ranked.tolist()
                    if not v.still_valid():
                        expired += 1
                        try:
                            v.score  # noqa: B018 - must raise once expired
                            bad += 1
                        except SnapshotExpired:
                            pass
                        continue
                    ok = _consistent(v.epoch, score, ranked, v.tick_mono)
                elif kind == 1:  # the block checks on the way out
                    with r.view() as v:
                        score, ranked = v.score.tolist(), v.ranked.tolist()
                    ok = _consistent(v.epoch, score, ranked, v.tick_mono)
                else:  # a stable copy
                    snap = r.view().copy()
                    ok = _consistent(snap.epoch, snap.score, snap.ranked, snap.tick_mono)
                valid += 1
                bad += not ok
            except SnapshotExpired:
                expired += 1
            except ReadContention:
                expired += 1  # lapped while reading the scalars: no view made
    finally:
        result.put((bad, valid, expired))
        r.close()


def test_stress_a_valid_view_never_mixes_epochs(shm_name, reap):
    n_readers, views_each = 2, 3000
    seg = Segment.create(shm_name, N_STRESS)
    ctx = mp.get_context("spawn")
    stop, ready, result = ctx.Event(), ctx.Event(), ctx.Queue()
    try:
        w = ctx.Process(target=_writer, args=(shm_name, stop, ready))
        reap(w)
        w.start()
        assert ready.wait(60)
        readers = [
            ctx.Process(target=_reader, args=(shm_name, views_each, result))
            for _ in range(n_readers)
        ]
        for p in readers:
            reap(p)
            p.start()
        got = [result.get(timeout=300) for _ in readers]
        stop.set()
        w.join(timeout=30)
        assert not w.is_alive()
        assert seg.views.header.latch_seq[0] >> 1 > 1000  # the writer really flipped
    finally:
        seg.close()
    assert [g[0] for g in got] == [0] * n_readers, f"inconsistent views: {got}"
    assert all(g[1] > 0 for g in got), f"no view was ever valid: {got}"
    # The guard really worked: views were read while their buffer was rewritten.
    assert sum(g[2] for g in got) > 0, f"no view ever expired: {got}"
