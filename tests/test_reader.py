"""ScoreReader over a real segment: values, names, slot reuse, staleness, and a
cross-process stress test whose published values describe themselves."""

import multiprocessing as mp
import pickle
import time

import numpy as np
import pytest

import clients
from clients import (
    EngineNotRunning,
    NothingPublished,
    ReadContention,
    ScoreReader,
    ShmEngineError,
    UnknownNode,
)
from shm_engine.core.config import Config
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.core.segment import Segment
from shm_engine.core.seqlock import write_begin, write_end
from shm_engine.core.states import NodeState
from shm_engine.tick.ticker import Ticker
from shm_engine.wire.jsondecode import check_heartbeat
from support.claims import ClaimsEngine


def _hb(node, **kw):
    obj = dict(node=node, cpu=0.2, mem=0.3, queue=1.0, avg_job_s=1.0)
    obj.update(kw)
    rec, labels, reason, detail = check_heartbeat(obj)
    assert rec is not None, (reason, detail)
    return rec, labels


class Engine:
    """The ingest's and tick worker's writes, driven in-process."""

    def __init__(self, name, capacity=16):
        self.seg = Segment.create(name, capacity)
        self.views = self.seg.views
        self.registry = NodeRegistry(self.views)
        self.ticker = Ticker(self.views, Config())

    def send(self, node, now, **kw):
        rec, labels = _hb(node, **kw)
        key = node.encode()
        slot = self.registry.get(key)
        if slot < 0:
            slot = self.registry.register(key, b"", labels)
        t = self.views.table
        write_rows(
            column_addresses(t),
            len(t.row_version),
            np.array([slot], np.int64),
            np.atleast_1d(rec),
            now,
        )
        return slot

    def tick(self, now):
        return self.ticker.tick(now)

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


def test_nothing_published_before_the_first_tick(engine, reader):
    engine.send("a", 0.0)
    assert reader.epoch == 0 and reader.age_s == float("inf")
    calls = [
        lambda: reader.score("a"),
        lambda: reader.state("a"),
        reader.snapshot,
        reader.top,
        reader.pick,
    ]
    for call in calls:
        with pytest.raises(NothingPublished, match=r"^engine '.+' has not published a tick yet$"):
            call()
    engine.tick(0.0)
    assert reader.epoch == 1 and reader.score("a") > 0


def test_attaching_to_no_engine_names_it(shm_name):
    with pytest.raises(EngineNotRunning, match=rf"^engine '{shm_name}' is not running"):
        ScoreReader.attach(shm_name)


def test_every_reader_exception_is_exported_from_clients():
    """What a scheduler catches is importable from `clients` (no numba needed)
    and is one family."""
    for exc in (
        EngineNotRunning,
        NothingPublished,
        UnknownNode,
        ReadContention,
        clients.LayoutMismatch,
    ):
        assert exc.__name__ in clients.__all__ and getattr(clients, exc.__name__) is exc
        assert issubclass(exc, ShmEngineError)
    assert issubclass(UnknownNode, KeyError)
    assert not issubclass(ReadContention, KeyError)  # not "no such node"
    assert not issubclass(NothingPublished, KeyError)


def test_unknown_node_prints_its_message_and_survives_pickling():
    err = UnknownNode("n1", "node 'n1' is not registered with engine 'e'")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.node) == ("node 'n1' is not registered with engine 'e'", "n1")


def test_score_state_snapshot_and_top_agree_with_the_buffer(engine, reader):
    t = time.monotonic()
    engine.send("calm", t, cpu=0.1, queue=0.0)
    engine.send("busy", t, cpu=0.6, queue=20.0, avg_job_s=1.0)
    engine.send("hot", t, cpu=0.99)  # cpu >= max_cpu 0.98: breaker trips
    engine.tick(t)
    buf = engine.views.buffers[1]
    assert reader.epoch == 1
    assert reader.score("calm") == buf.out.score[0] > reader.score("busy") > 0
    assert reader.score("hot") == 0.0
    assert reader.state("calm") is NodeState.HEALTHY
    assert reader.state("hot") is NodeState.OVERLOADED
    snap = reader.snapshot()
    assert snap.epoch == 1 and snap.nodes[:3] == ("calm", "busy", "hot")
    np.testing.assert_array_equal(snap.score, buf.out.score[:3])
    assert list(snap.ranked) == [0, 1]
    assert snap.counts["healthy"] + snap.counts["degraded"] + snap.counts["overloaded"] == 3
    assert list(snap.weights) == ["cpu", "mem", "io", "wait", "rate", "success", "tail"]
    np.testing.assert_array_equal(list(snap.weights.values()), buf.weights[:7])
    assert snap.ejected == 0
    assert reader.top(10) == [("calm", snap.score[0]), ("busy", snap.score[1])]
    assert reader.top(1) == [("calm", snap.score[0])]
    assert 0.0 <= reader.age_s < 60 and not reader.is_stale(60)


def test_unknown_node_is_a_key_error_naming_it(engine, reader):
    engine.send("a", 0.0)
    engine.tick(0.0)
    with pytest.raises(
        UnknownNode, match=r"^node 'nope' is not registered with engine '.+'$"
    ) as err:
        reader.score("nope")
    assert isinstance(err.value, KeyError) and err.value.node == "nope"
    with pytest.raises(UnknownNode, match=r"^node 'nope' is not registered"):
        reader.state("nope")


def test_every_call_sees_the_tick_published_before_it(engine, reader):
    """The hot paths start from the epoch of the reader's last read; a tick
    published since is seen, never the older copy."""
    engine.send("a", 0.0, cpu=0.1)
    engine.send("b", 0.0, cpu=0.5)
    engine.tick(0.0)
    assert reader.score("a") > reader.score("b") > 0 and reader.top(1)[0][0] == "a"
    states = set()
    for epoch in range(2, 8):  # a alternates between idle and overloaded
        engine.send("a", float(epoch), cpu=0.99 if epoch % 2 else 0.1)
        engine.send("b", float(epoch), cpu=0.5)
        engine.tick(float(epoch))
        buf = engine.views.buffers[epoch & 1]
        out, names = buf.out, ("a", "b")
        ranked = out.ranked[: int(buf.n_ranked[0])]
        assert reader.score("a") == out.score[0] and reader.score("b") == out.score[1]
        assert reader.top(2) == [(names[s], out.score[s]) for s in ranked]
        states.add(reader.state("a"))
    assert reader.epoch == 7 and NodeState.OVERLOADED in states  # the ticks really differed


def test_registered_but_not_yet_scored(engine, reader):
    engine.send("a", 0.0)
    engine.tick(0.0)
    engine.send("late", 0.0)
    with pytest.raises(
        UnknownNode,
        match=r"^node 'late' is registered but not scored yet by "
        r"engine '.+'; it is from the next tick$",
    ):
        reader.score("late")
    engine.tick(0.05)
    assert reader.score("late") > 0


def test_a_reused_slot_is_never_read_as_its_old_node(engine, reader):
    engine.send("old", 0.0, cpu=0.1)
    engine.tick(0.0)
    assert reader.score("old") > 0
    engine.registry.free(0)
    slot = engine.send("new", 1.0, cpu=0.99)  # same slot, tripped breaker
    assert slot == 0
    engine.tick(1.0)
    assert reader.score("new") == 0.0
    with pytest.raises(UnknownNode, match=r"^node 'old' is not registered"):
        reader.score("old")
    assert reader.snapshot().nodes[0] == "new"


def test_top_names_nodes_registered_after_the_first_call_and_reused_slots(engine, reader):
    engine.send("a", 0.0, cpu=0.5)
    engine.tick(0.0)
    assert [n for n, _ in reader.top(5)] == ["a"]
    engine.send("b", 0.5, cpu=0.1)  # unseen by the reader's index so far
    engine.tick(0.5)
    assert [n for n, _ in reader.top(5)] == ["b", "a"]
    engine.registry.free(1)
    assert engine.send("c", 1.0, cpu=0.05) == 1  # b's slot, a new generation
    engine.tick(1.0)
    top = reader.top(5)
    assert [n for n, _ in top] == ["c", "a"]
    snap = reader.snapshot()
    assert top == [("c", snap.score[1]), ("a", snap.score[0])]


def test_top_skips_out_of_range_and_unknown_slots_without_faulting(engine, reader):
    """A ranking holding slots that are out of range, negative or never
    registered (what a torn copy can hold; here published on purpose) never
    faults top() nor yields an unknown name: only real nodes come back."""
    t = time.monotonic()
    for i, cpu in enumerate((0.1, 0.2, 0.3)):
        engine.send(f"n{i}", t, cpu=cpu)
    engine.tick(t)
    engine.tick(t)  # both buffers hold the three nodes
    assert [n for n, _ in reader.top(3)] == ["n0", "n1", "n2"]
    seq = engine.views.header.latch_seq
    buf = engine.views.buffers[write_begin(seq) & 1]
    buf.out.ranked[:4] = [10_000_000, -5, 7, 2]  # 7: an empty slot
    buf.n_ranked[0] = 4
    write_end(seq)  # publish it, garbage included
    assert reader.top(4) == [("n2", buf.out.score[2])]
    # A writer mid-publish never disturbs the published ranking.
    write_begin(seq)
    try:
        assert reader.top(4) == [("n2", buf.out.score[2])]
    finally:
        write_end(seq)


class _LappingSeq:
    """A latch word the writer moves by two epochs between any two loads:
    every copy a reader makes is lapped (seq 4k at read_begin, 4k + 4 at
    read_retry, and 4k + 4 >= 2 * 2k + 3)."""

    def __init__(self, start):
        self.seq = start

    def __getitem__(self, index):
        value = self.seq
        self.seq += 4
        return value


def test_lapped_on_every_retry_without_an_earlier_copy_is_read_contention(engine, reader):
    engine.send("a", 0.0)
    engine.tick(0.0)
    engine.tick(0.0)
    reader._seq_mv = _LappingSeq(4)  # a writer faster than any copy
    for call in (lambda: reader.score("a"), lambda: reader.state("a"), reader.snapshot):
        with pytest.raises(
            ReadContention,
            match=r"^engine '.+' published faster than this reader "
            r"could copy .+ \(17 attempts\)",
        ):
            call()
    assert reader.top(5) == [] and reader.pick() is None  # documented statuses
    assert reader.retries_exhausted == 5


def test_lapped_on_every_retry_serves_the_last_snapshot(engine, reader):
    engine.send("a", 0.0, cpu=0.1)
    engine.send("b", 0.0, cpu=0.5)
    engine.tick(0.0)
    last = reader.snapshot()
    reader._seq_mv = _LappingSeq(4)  # a writer faster than any copy
    assert reader.snapshot() is last
    assert reader.score("b") == last.score[1] and reader.state("a") is NodeState.HEALTHY
    assert reader.top(1) == last.top(1) == [("a", last.score[0])]
    assert reader.retries_exhausted == 4


def test_stale_engine_keeps_serving_the_last_snapshot(engine, reader):
    engine.send("a", time.monotonic())
    engine.tick(time.monotonic() - 5.0)  # a tick that happened 5 s ago
    assert reader.is_stale(1.0) and not reader.is_stale(30.0)
    assert reader.score("a") > 0  # still served


def test_reader_cannot_write_scores(engine, reader):
    engine.send("a", 0.0)
    engine.tick(0.0)
    snap = reader.snapshot()
    snap.score[0] = 5.0  # a private copy: harmless
    assert reader.score("a") < 1.0
    with pytest.raises(ValueError, match="read-only"):
        reader._bufs[1].out.score[0] = 1.0  # noqa: SLF001 - proving the mapping


# ------------------------------------------------------------------ stress --
# The writer publishes epoch e with score[s] = (e * 1000 + s) * 1e-12 for every
# slot s < N_STRESS, so any value tells which epoch and slot it came from: a
# snapshot mixing epochs, a score from the wrong slot or a torn float fails.
N_STRESS = 64


def _stress_value(epoch, slot):
    return (epoch * 1000 + slot) * 1e-12


def _stress_writer(name, stop_at_epoch, ready):
    seg = Segment.attach(name, readonly=False)
    v = seg.views
    reg = NodeRegistry(v)
    for s in range(N_STRESS):
        reg.register(f"n{s}".encode())
    for b in v.buffers:
        b.gen[:N_STRESS] = v.registry.slot_gen[:N_STRESS]
        b.state.state[:N_STRESS] = 0
        b.n_ranked[0] = N_STRESS
    ready.set()
    slots = np.arange(N_STRESS)
    latch = v.header.latch_seq
    while True:
        e = write_begin(latch)
        buf = v.buffers[e & 1]
        buf.out.score[:N_STRESS] = _stress_value(e, slots)
        buf.out.ranked[:N_STRESS] = slots[::-1] if e & 1 else slots
        buf.epoch[0] = e
        buf.tick_mono[0] = float(e)
        write_end(latch)
        if e >= stop_at_epoch.value:
            break
    seg.close()


def _stress_reader(name, n_reads, result):
    r = ScoreReader.attach(name)
    bad = backwards = reads = starved = 0
    last = 0
    try:
        while r.epoch == 0:
            pass
        while reads < n_reads:
            exhausted_before = r.retries_exhausted
            try:
                if reads % 64 == 0:
                    snap = r.snapshot()
                    e = snap.epoch
                    exp = _stress_value(e, np.arange(N_STRESS))
                    if not np.array_equal(snap.score[:N_STRESS], exp) or snap.tick_mono != float(e):
                        bad += 1
                    expect_rank = np.arange(N_STRESS)[::-1] if e & 1 else np.arange(N_STRESS)
                    if not np.array_equal(snap.ranked, expect_rank):
                        bad += 1
                else:
                    s = reads % N_STRESS
                    val = r.score(f"n{s}")
                    code = round(val * 1e12)
                    e, slot = divmod(code, 1000)
                    if slot != s or val != _stress_value(e, s):
                        bad += 1
            except (NothingPublished, ReadContention):
                # Lapped on every retry with no earlier copy to serve: the
                # documented status of a starved reader, not a wrong value.
                starved += 1
                reads += 1
                continue
            # A call whose retry budget ran out serves the last good copy (an
            # older epoch, by design); ordering is promised for fresh reads.
            if r.retries_exhausted == exhausted_before:
                if e < last:
                    backwards += 1
                last = e
            reads += 1
    finally:
        result.put((reads, bad, backwards, r.retries_exhausted + starved))
        r.close()


def test_stress_readers_never_see_a_mixed_or_backward_snapshot(shm_name, reap):
    n_readers, reads_each = 3, 120_000
    seg = Segment.create(shm_name, N_STRESS)
    ctx = mp.get_context("spawn")
    stop_at = ctx.Value("q", 1 << 60)
    ready = ctx.Event()
    result = ctx.Queue()
    try:
        w = ctx.Process(target=_stress_writer, args=(shm_name, stop_at, ready))
        reap(w)
        w.start()
        assert ready.wait(60)
        readers = [
            ctx.Process(target=_stress_reader, args=(shm_name, reads_each, result))
            for _ in range(n_readers)
        ]
        for p in readers:
            reap(p)
            p.start()
        got = [result.get(timeout=300) for _ in readers]
        stop_at.value = 0
        w.join(timeout=30)
        assert not w.is_alive()
        assert seg.views.header.latch_seq[0] >> 1 > 1000  # the writer really flipped
    finally:
        seg.close()
    total = sum(g[0] for g in got)
    assert total == n_readers * reads_each
    assert [g[1] for g in got] == [0] * n_readers, f"inconsistent reads: {got}"
    assert [g[2] for g in got] == [0] * n_readers, f"epochs went backwards: {got}"
    # Against a writer flipping every few microseconds a reader is sometimes
    # lapped on every retry (then it serves its last copy); this only checks
    # that readers make progress.  At a real tick interval it never happens.
    assert sum(g[3] for g in got) < total // 20, f"readers starved: {got}"


def test_pick_spreads_over_ranked_nodes_and_honours_exclude(engine, reader):
    t = time.monotonic()
    cpus = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.99)  # n8 is tripped
    for i, cpu in enumerate(cpus):
        engine.send(f"n{i}", t, cpu=cpu)
    engine.tick(t)
    rng = np.random.default_rng(7)
    picks = [reader.pick(rng=rng) for _ in range(2000)]
    assert "n8" not in picks  # score 0 is never a candidate
    # Best of DEFAULT_D = 4 drawn from 8 ranked (no claims segment here, so
    # no discount): the three worst can never win a draw.
    assert set(picks) == {f"n{i}" for i in range(5)}
    # P(n0) = P(n0 is drawn) = 4/8 (sd 0.011 over 2000 picks): favoured, yet
    # half the jobs still go elsewhere.
    assert 0.44 < picks.count("n0") / len(picks) < 0.56
    assert picks.count("n0") > picks.count("n1") > picks.count("n4")
    assert reader.pick(exclude=[f"n{i}" for i in range(6)], rng=rng) in ("n6", "n7")
    assert reader.pick(exclude=[f"n{i}" for i in range(8)], rng=rng) is None
    again = [reader.pick(rng=np.random.default_rng(7)) for _ in range(3)]
    assert again == [picks[0]] * 3  # seedable
    with pytest.raises(ValueError, match="d = 0"):
        reader.pick(d=0)


def test_pick_weighs_claims_made_since_the_tick(shm_name):
    """A node that got many claims since the tick is passed over before the
    next tick, by the claiming reader and by one that never claimed; the
    next tick counts them in ``rif`` and the discount starts again from 0."""
    eng = ClaimsEngine(shm_name, capacity=16)
    try:
        t = time.monotonic()
        for i, cpu in enumerate((0.1, 0.3, 0.35, 0.4)):
            eng.send(f"n{i}", t, cpu=cpu, slots=2)
        eng.tick(t)
        with ScoreReader.attach(shm_name) as mine, ScoreReader.attach(shm_name) as other:
            s0, s1 = mine.score("n0"), mine.score("n1")
            assert s0 > s1 > 0
            # 4 nodes, d = 4: every pick sees them all, whatever the rng draws.
            rng = np.random.default_rng(3)
            assert {mine.pick(rng=rng) for _ in range(50)} == {"n0"}
            # claims needed to bring n0 under n1: s0 / (1 + k / 2) < s1
            k = int(2 * (s0 / s1 - 1)) + 1
            held = [mine.claim("n0") for _ in range(k)]
            for r in (mine, other):
                picks = [r.pick(rng=rng) for _ in range(50)]
                assert "n0" not in picks and set(picks) == {"n1"}
            # The next tick sees the claims as rif: none are new any more.
            eng.tick(t + 0.05)
            assert eng.published("rif", eng.registry.get(b"n0")) == k
            assert mine.epoch == 2
            since = [mine.pick(rng=rng) for _ in range(50)]
            # n0's score now reflects its load itself; whichever wins, it is
            # the published ranking's best, undiscounted.
            best = max(("n0", "n1", "n2", "n3"), key=mine.score)
            assert set(since) == {best}
            for c in held:
                c.release(ok=True)
            # Released since the tick: in flight (0) is below rif, floored at 0.
            assert {other.pick(rng=rng) for _ in range(20)} == {best}
    finally:
        eng.close()
