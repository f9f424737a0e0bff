"""The tick worker's epoch: threaded and single-threaded ticks agree bit for
bit, and the unused slots above the high-water mark are skipped safely.

`epoch.compute_epoch_threads` splits the per-node work of a tick into
ranges run on numba's thread pool and joins what crosses ranges (S, the
rates, the candidates, the counts) in slot order.  Random worlds (rows
being rewritten, empty and freed slots, slots above the high-water mark,
scheduler feedback of matching and foreign registrations, nodes about to
be quarantined under a cap, dead and suspect nodes) are ticked by both
compilations from identical copies: every column both write, the ranking
and the returned values must be identical, for thread counts that do and
do not divide the slots.  A wrong join (S summed per range, a range's
candidates dropped or out of order, counts of one range only) changes
scores, states or the ranking in these worlds.
"""

import mmap

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels.defaults import default_params
from shm_engine.core.layout import SegmentViews, layout_for, private_claims
from shm_engine.core.rows import make_gather_cache
from shm_engine.core.states import UNREGISTERED
from shm_engine.tick.epoch import compute_epoch, compute_epoch_threads

LEASES = 3


def _tags(gens):
    """`claims.tag_of` over an array."""
    return (gens >> np.uint64(1)) & np.uint64(0xFFFF_FFFF)


class _World:
    """One engine's memory for a tick: a private mapping of the scores
    segment's layout, a claims segment, the ticker's private arrays."""

    def __init__(self, cap: int):
        self.layout = layout_for(cap)
        self.mm = mmap.mmap(-1, self.layout.size)
        self.views = SegmentViews(self.mm, self.layout)
        self.claims = private_claims(cap, LEASES)
        self.inp = kernels.make_inputs(cap)
        self.inp.age[:] = np.inf
        self.cache = make_gather_cache(cap)
        self.scratch = kernels.make_scratch(cap)

    def copy_from(self, other: "_World") -> None:
        self.mm[:] = other.mm[:]
        for mine, theirs in (
            (self.claims.lease_ident, other.claims.lease_ident),
            (self.claims.in_flight_flat, other.claims.in_flight_flat),
            (self.claims.outcomes, other.claims.outcomes),
        ):
            mine[...] = theirs
        for mine, theirs in zip(self.inp, other.inp, strict=True):
            mine[:] = theirs
        for mine, theirs in zip(self.cache, other.cache, strict=True):
            mine[:] = theirs

    def tick(self, fn, params, epoch: int, now: float, hwm: int, threads: int):
        # As the ticker does: every slot on the first two ticks, then only
        # below the high-water mark (nothing registers above it here).
        limit = self.layout.capacity if epoch <= 2 else hwm
        prev = self.views.buffers[(epoch - 1) & 1]
        nxt = self.views.buffers[epoch & 1]
        inp = self.inp._replace(
            rif=nxt.views["rif"],
            fb_ok=nxt.views["fb_ok"],
            fb_err=nxt.views["fb_err"],
            consec=nxt.views["consec"],
            err_age=nxt.views["err_age"],
        )
        c = self.claims
        return fn(
            params,
            self.views.table,
            self.views.registry.slot_gen,
            self.views.registry.registered,
            prev.state,
            prev.gen,
            prev.hb_seen,
            prev.ok_seen,
            prev.err_seen,
            nxt.state,
            nxt.out,
            nxt.gen,
            nxt.hb_seen,
            nxt.ok_seen,
            nxt.err_seen,
            inp,
            self.scratch,
            self.cache.gen,
            self.cache.version,
            self.cache.recv_time,
            c.lease_ident,
            c.in_flight_flat,
            c.row_words,
            c.outcomes,
            now,
            hwm,
            limit,
            threads,
        )


def _write_rows(w: _World, rng, slots, now: float) -> None:
    """New heartbeats in ``slots`` (as the ingest leaves them: version + 2)."""
    t = w.views.table
    k = len(slots)
    t.recv_time[slots] = now - rng.uniform(0.0, 4.0, k)  # some suspect, some dead
    t.cpu[slots] = rng.uniform(0.0, 1.0, k)
    t.mem[slots] = rng.uniform(0.0, 1.0, k)
    t.queue[slots] = rng.choice([0.0, 1.0, 3.0, 40.0, 200.0], k)
    t.avg_job_s[slots] = rng.choice([0.0, 0.05, 0.5, 2.0], k)
    t.ok[slots] = rng.integers(0, 20, k)
    t.err[slots] = rng.integers(0, 5, k)
    t.io[slots] = rng.uniform(0.0, 1.0, k)
    t.p50_ms[slots] = rng.uniform(1.0, 10.0, k)
    t.p95_ms[slots] = t.p50_ms[slots] * rng.uniform(1.0, 8.0, k)
    t.slots[slots] = rng.choice([1.0, 4.0, 16.0], k)
    t.reported[slots] = rng.integers(0, 64, k)
    t.row_version[slots] += 2


def _feedback(w: _World, rng, hwm: int, now: float) -> None:
    """Leases in use, claims and outcomes of this and older registrations."""
    c = w.claims
    gens = w.views.registry.slot_gen[:hwm]
    c.lease_ident[:] = [1, 0, 7]  # the middle lease is free
    for lease in range(LEASES):
        tags = np.where(rng.random(hwm) < 0.8, _tags(gens), _tags(gens) + np.uint64(1))
        at = lease * c.row_words
        c.in_flight_flat[at : at + hwm] = (tags << np.uint64(32)) | rng.integers(0, 4, hwm).astype(
            np.uint64
        )
    out = c.outcomes[:hwm]
    mine = _tags(gens) << np.uint64(32)
    out[:, 2] = mine | (out[:, 2] & np.uint64(0xFFFF_FFFF)) + rng.integers(0, 3, hwm).astype(
        np.uint64
    )  # ok
    out[:, 3] = mine | (out[:, 3] & np.uint64(0xFFFF_FFFF)) + rng.integers(0, 2, hwm).astype(
        np.uint64
    )  # err
    consec = rng.integers(0, 8, hwm).astype(np.uint64)
    out[:, 0] = np.where(rng.random(hwm) < 0.7, mine, np.uint64(0)) | consec
    out[:, 1] = np.where(
        consec > 0, np.uint64(now * 1e9) - rng.integers(0, 10**10, hwm).astype(np.uint64), 0
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    cap=st.integers(1, 700),
    hwm_fraction=st.sampled_from([0.0, 0.3, 0.97, 1.0]),
    threads=st.integers(2, 7),
    quarantined_fraction=st.sampled_from([0.0, 0.05, 1.0]),
)
def test_threaded_ticks_equal_single_threaded(
    seed, cap, hwm_fraction, threads, quarantined_fraction
):
    rng = np.random.default_rng(seed)
    params = default_params(max_quarantined_fraction=quarantined_fraction)
    hwm = int(round(cap * hwm_fraction))
    one, many = _World(cap), _World(cap)
    reg = one.views.registry
    for b in one.views.buffers:
        b.state.state[:] = UNREGISTERED
    reg.registered[:hwm] = rng.random(hwm) < 0.9
    reg.slot_gen[:hwm] = 2 * rng.integers(1, 5, hwm)
    now = 1000.0
    _write_rows(one, rng, np.arange(hwm), now)
    many.copy_from(one)
    for epoch in range(1, 7):
        now += 0.05
        changed = np.flatnonzero(rng.random(hwm) < 0.3)
        _write_rows(one, rng, changed, now)
        if epoch == 4 and hwm:
            # A slot freed and one re-registered (a new generation).
            reg.registered[0] = 0
            reg.slot_gen[hwm - 1] += 2
        _feedback(one, rng, hwm, now)
        prev = one.views.buffers[(epoch - 1) & 1]
        if epoch == 3:
            # Nodes flapping hard: step 12's admissions under the cap.
            prev.state.flap[:hwm] = np.where(rng.random(hwm) < 0.4, 20.0, prev.state.flap[:hwm])
        many.copy_from(one)
        got_one = one.tick(compute_epoch, params, epoch, now, hwm, 1)
        got_many = many.tick(compute_epoch_threads, params, epoch, now, hwm, threads)
        assert got_many == got_one, f"epoch {epoch}: returned values"
        m = got_one[0]
        a = one.views.buffers[epoch & 1].views
        b = many.views.buffers[epoch & 1].views
        for name in a:
            x, y = a[name], b[name]
            if name == "ranked":
                x, y = x[:m], y[:m]
            assert np.array_equal(x, y, equal_nan=True), f"epoch {epoch}: column {name}"
        for x, y in zip(one.inp, many.inp, strict=True):
            assert np.array_equal(x, y, equal_nan=True), f"epoch {epoch}: inputs"
        for x, y in zip(one.cache, many.cache, strict=True):
            assert np.array_equal(x, y), f"epoch {epoch}: gather cache"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_count_in_the_result_of_a_busy_world(threads):
    """A sanity anchor for the property above: the worlds it draws do score
    nodes, rank them and quarantine some (so the comparison is not of empty
    buffers)."""
    rng = np.random.default_rng(5)
    cap = hwm = 500
    w = _World(cap)
    for b in w.views.buffers:
        b.state.state[:] = UNREGISTERED
    w.views.registry.registered[:] = 1
    w.views.registry.slot_gen[:] = 2
    now = 1000.0
    _write_rows(w, rng, np.arange(hwm), now)
    fn = compute_epoch if threads == 1 else compute_epoch_threads
    params = default_params(max_quarantined_fraction=0.05)
    for epoch in range(1, 5):
        now += 0.05
        _feedback(w, rng, hwm, now)
        if epoch == 3:
            w.views.buffers[(epoch - 1) & 1].state.flap[:] = 20.0
        m, P, live, _torn, sum_rif, *_ = w.tick(fn, params, epoch, now, hwm, threads)
    counts = w.views.buffers[4 & 1].out.counts
    assert m > 50 and live > 50 and 0 < P <= 1 and sum_rif > 0
    assert counts[kernels.QUARANTINED] > 0


def test_an_engine_with_tick_threads_scores_its_nodes(shm_name, tmp_path, reap):
    """``[engine] tick_threads = 2`` through ``shm-engine run``: the tick
    worker compiles and runs the threaded tick in its own process, and the
    nodes score as with one thread."""
    import zmq

    from clients.reader import NothingPublished, ScoreReader
    from shm_engine.core.states import NodeState
    from shm_engine.wire.encode import encode_batch
    from support.engine import START_TIMEOUT_S, Engine, free_port, write_config
    from support.wait import wait_until

    port = free_port()
    eng = Engine(
        shm_name,
        write_config(tmp_path / "e.toml", port, capacity=8, engine_extra="tick_threads = 2"),
        tmp_path,
        reap,
    )
    eng.wait_ready()
    # cpu 0.49 -> g_cpu 0.5, mem 0.475 -> g_mem 0.5, queue 0, equal rates,
    # no outcomes: every node scores 0.725 / 0.9 each tick (test_e2e).
    frame = encode_batch(
        [dict(node=f"n-{i}", cpu=0.49, mem=0.475, queue=0.0, avg_job_s=1.0) for i in range(6)]
    )
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    reader = ScoreReader.attach(shm_name)
    try:

        def scored():
            sock.send(frame)
            try:
                return len(reader.snapshot().ranked) == 6
            except NothingPublished:
                return False

        wait_until(scored, START_TIMEOUT_S, "six nodes ranked", period=0.05)
        epoch = reader.epoch
        wait_until(lambda: reader.epoch > epoch + 3, 10, "more epochs")
        for i in range(6):
            assert reader.state(f"n-{i}") == NodeState.HEALTHY
            assert reader.score(f"n-{i}") == pytest.approx(0.725 / 0.9, abs=1e-12)
        started = [ln for ln in eng.stderr.splitlines() if " ticker_started " in ln]
        want = min(2, numba.config.NUMBA_NUM_THREADS)  # capped at the pool's size
        assert started and started[-1].endswith(f" threads={want}"), eng.log_tail()
    finally:
        reader.close()
        sock.close(0)
        ctx.term()


def test_skipping_the_unused_slots_publishes_what_writing_them_does(shm_name):
    """A segment of 300 slots whose fleet grows from 20 to 200 nodes (the
    high-water mark moves up between ticks) and whose first nodes stop
    beating (DEAD): a `Ticker` that skips the slots above every high-water
    mark so far publishes exactly what one that writes every slot each tick
    (the reference) publishes, column by column, tick by tick."""
    from benchmarks.harness.common import bench_config, records, send_records
    from shm_engine.core.segment import Segment
    from shm_engine.ingest.process import Ingest
    from shm_engine.tick.ticker import Ticker

    cap = 300
    config = bench_config(cap)
    segs = [Segment.create(f"{shm_name}-{k}", cap) for k in range(2)]
    try:
        ingests = [Ingest(s.views, config) for s in segs]
        skipping, whole = (Ticker(s.views, config) for s in segs)
        rng = np.random.default_rng(3)
        recs = records(200, rng)
        now = 1000.0
        skipped = 0
        for k in range(40):
            now += 0.5  # ticks far apart: the silent nodes die within the test
            fleet = min(200, 20 + 10 * k)
            beating = np.arange(10 if k > 10 else 0, fleet)  # the first ten fall silent
            for ing in ingests:
                send_records(ing, recs[beating], now)
            whole._whole_ticks = 0  # the reference writes every slot, every tick
            a, b = skipping.tick(now), whole.tick(now)
            assert (a.epoch, a.n_ranked, a.pressure, a.live) == (
                b.epoch,
                b.n_ranked,
                b.pressure,
                b.live,
            )
            skipped += cap - skipping._max_hwm if skipping._whole_ticks > 2 else 0
            x = segs[0].views.buffers[a.epoch & 1].views
            y = segs[1].views.buffers[b.epoch & 1].views
            for name in x:
                if name in ("tick_wall", "tick_mono"):
                    continue
                u, v = x[name], y[name]
                if name == "ranked":
                    u, v = u[: a.n_ranked], v[: b.n_ranked]
                assert np.array_equal(u, v, equal_nan=True), f"tick {k}: column {name}"
        assert skipped > 0  # the skip happened
        counts = segs[0].views.buffers[a.epoch & 1].out.counts
        assert counts[kernels.DEAD] == 10 and a.n_ranked > 150
    finally:
        skipping = whole = ingests = None
        for s in segs:
            s.close()
            s.unlink()
