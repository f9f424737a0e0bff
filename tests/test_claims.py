"""Claims: the segment, the client API, stale releases, leases and the reaper,
and the feedback the tick reads (`shm_engine.core.claims`, `clients.claims`).

Multi-process load is in test_claims_stress.py; here every test drives one
engine in-process (`claims_util.ClaimsEngine`) and, where a second process
matters, a spawned or forked one.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import stat
import time

import numpy as np
import pytest

from clients import ClaimAlreadyReleased, LeaseRevoked, SchedulerLimitReached
from clients.reader import ScoreReader
from shm_engine.core import claims as C
from shm_engine.core.claims import ClaimsSegment, unlink_claims
from shm_engine.core.errors import EngineAlreadyRunning, EngineNotRunning, LayoutMismatch
from shm_engine.core.layout import (
    CLAIMS_HEADER_BYTES,
    CLAIMS_LAYOUT_VERSION,
    OUTCOME_WORDS,
    claims_layout_for,
    private_claims,
)
from shm_engine.core.segment import posix_name, process_stat
from shm_engine.core.states import NodeState
from support.claims import ClaimsEngine

LOW32 = 0xFFFF_FFFF


def _dev_shm(name):
    return os.path.join("/dev/shm", name)


# ------------------------------------------------------------------ layout --
@pytest.mark.parametrize("capacity, leases", [(1, 1), (7, 3), (10_000, 64), (16_384, 64)])
def test_claims_layout_regions_are_page_aligned_and_disjoint(capacity, leases):
    lay = claims_layout_for(capacity, leases)
    regions = lay.regions()
    assert [r[0] for r in regions] == [
        "header",
        "leases",
        "outcomes",
        "in_flight",
        "reserved",
        "place",
        "reservations",
    ]
    for (_n, off, size), (_m, nxt, _s) in zip(regions, regions[1:], strict=False):
        assert off % 4096 == 0 and off + size <= nxt
    assert lay.outcomes.shape == (capacity, OUTCOME_WORDS)
    assert lay.row_bytes % 4096 == 0 and lay.row_bytes >= capacity * 8
    assert lay.reserved.offset == lay.in_flight.offset + leases * lay.row_bytes
    assert lay.size == lay.reservations.offset + leases * lay.block_bytes
    for f in lay.leases.values():
        assert CLAIMS_HEADER_BYTES <= f.offset and f.offset % 64 == 0


def test_claims_layout_size_for_the_defaults_is_reported():
    # Recorded in docs/design.md: 4 + 4 KiB, 32 B per slot, 8 B per slot and
    # lease, 128 B of placement words per slot, 128 B per reservation entry.
    assert claims_layout_for(16_384, 64).size == 19_406_848


@pytest.mark.parametrize(
    "capacity, leases, message",
    [
        (0, 1, "capacity 0 out of range"),
        (4, 0, "max_schedulers 0 out of range 1..4096"),
        (4, 4097, "max_schedulers 4097 out of range"),
    ],
)
def test_claims_layout_rejects_bad_sizes(capacity, leases, message):
    with pytest.raises(ValueError, match=message):
        claims_layout_for(capacity, leases)


def test_views_of_a_private_claims_segment():
    v = private_claims(10, 3)
    assert v.in_flight.shape == (3, 10) and v.in_flight.strides == (4096, 8)
    v.in_flight[2, 9] = 7
    assert v.in_flight_flat[2 * v.row_words + 9] == 7
    assert v.outcomes.ctypes.data % 16 == 0  # cas_pair_u64 needs it


# ---------------------------------------------------------------- segment --
def test_create_attach_and_unlink(shm_name):
    seg = ClaimsSegment.create(shm_name, 32, 5)
    try:
        h = seg.views.header
        assert int(h.layout_version[0]) == CLAIMS_LAYOUT_VERSION
        assert (int(h.capacity[0]), int(h.max_schedulers[0])) == (32, 5)
        assert int(h.creator_pid[0]) == os.getpid() and seg.instance != 0
        assert os.path.exists(_dev_shm(shm_name + ".claims"))
        other = ClaimsSegment.attach(shm_name)
        assert other.layout == seg.layout and not other.readonly
        assert other.instance == seg.instance
        other.close()
    finally:
        seg.close()
        seg.unlink()
    assert not os.path.exists(_dev_shm(shm_name + ".claims"))
    assert not unlink_claims(shm_name)


@pytest.mark.parametrize("mode", [0o600, 0o660])
def test_claims_segment_mode(shm_name, mode):
    old = os.umask(0o077)
    try:
        seg = ClaimsSegment.create(shm_name, 4, 1, mode=mode)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(_dev_shm(shm_name + ".claims")).st_mode) == mode
    finally:
        seg.close()


def test_attach_missing_claims_segment_names_the_engine(shm_name):
    with pytest.raises(
        EngineNotRunning,
        match=rf"engine '{shm_name}' is not running \(no "
        rf"segment /{shm_name}\.claims\)",
    ):
        ClaimsSegment.attach(shm_name)


def test_second_create_while_creator_alive_fails(shm_name):
    seg = ClaimsSegment.create(shm_name, 4, 1)
    try:
        with pytest.raises(EngineAlreadyRunning, match=rf"already running \(pid {os.getpid()}\)"):
            ClaimsSegment.create(shm_name, 4, 1)
    finally:
        seg.close()


def _create_and_die(name, q):
    seg = ClaimsSegment.create(name, 4, 2)
    seg.views.in_flight[1, 3] = 99  # leave a mark
    q.put(os.getpid())
    q.close()
    q.join_thread()
    os._exit(0)  # dies without unlinking: stale


def test_stale_claims_segment_of_dead_creator_is_reclaimed(shm_name, reap):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_create_and_die, args=(shm_name, q))
    reap(p)
    p.start()
    q.get(timeout=60)
    p.join(timeout=60)
    seg = ClaimsSegment.create(shm_name, 8, 3)
    try:
        assert int(seg.views.header.creator_pid[0]) == os.getpid()
        assert seg.layout.max_schedulers == 3 and not seg.views.in_flight.any()
    finally:
        seg.close()


def test_layout_version_mismatch_is_refused(shm_name):
    seg = ClaimsSegment.create(shm_name, 4, 1)
    try:
        seg.views.header.layout_version[0] = CLAIMS_LAYOUT_VERSION + 1
        with pytest.raises(
            LayoutMismatch, match=f"claims layout version {CLAIMS_LAYOUT_VERSION + 1}"
        ):
            ClaimsSegment.attach(shm_name)
    finally:
        seg.close()


def test_an_engine_name_cannot_be_another_engines_claims_segment():
    with pytest.raises(ValueError, match="not ending in '.claims'"):
        posix_name("dfps.claims")


# ------------------------------------------------------------- client API --
@pytest.fixture
def engine(shm_name):
    eng = ClaimsEngine(shm_name)
    yield eng
    eng.close()


@pytest.fixture
def reader(engine):
    r = ScoreReader.attach(engine.name)
    yield r
    r.close()


def test_claim_is_in_flight_until_released_with_its_outcome(engine, reader):
    engine.send("a")
    c1, c2 = reader.claim("a"), reader.claim("a")
    assert reader.in_flight("a") == 2
    assert c1.release(ok=True) is True
    assert reader.in_flight("a") == 1
    before = time.monotonic_ns()
    assert c2.release(ok=False) is True
    fb = reader.feedback("a")
    assert (fb.in_flight, fb.ok, fb.err, fb.consec) == (0, 1, 1, 1)
    assert before <= fb.last_error_ns <= time.monotonic_ns()


def test_consecutive_errors_count_across_releases_until_an_ok(engine, reader):
    engine.send("a")
    seen = []
    for ok in (False, False, False, True, False):
        reader.claim("a").release(ok=ok)
        seen.append(reader.feedback("a").consec)
    assert seen == [1, 2, 3, 0, 1]
    fb = reader.feedback("a")
    assert (fb.ok, fb.err) == (1, 4)


def test_a_second_release_raises_and_counts_nothing(engine, reader):
    engine.send("a")
    c = reader.claim("a")
    c.release(ok=True)
    with pytest.raises(ClaimAlreadyReleased, match="claim on node 'a' was already released"):
        c.release(ok=False)
    fb = reader.feedback("a")
    assert (fb.ok, fb.err, fb.in_flight) == (1, 0, 0)


def test_with_block_releases_ok_or_as_an_error(engine, reader):
    engine.send("a")
    with reader.claim("a") as c:
        assert reader.in_flight("a") == 1
    assert c.released
    with pytest.raises(RuntimeError, match="job failed"):
        with reader.claim("a"):
            raise RuntimeError("job failed")
    with reader.claim("a") as c:
        c.release(ok=False)  # released inside: the exit adds nothing
    fb = reader.feedback("a")
    assert (fb.in_flight, fb.ok, fb.err, fb.consec) == (0, 1, 2, 2)


def test_unknown_node_raises_key_error(engine, reader):
    engine.send("a")
    with pytest.raises(KeyError, match="node 'nope' is not registered"):
        reader.claim("nope")
    with pytest.raises(KeyError, match="nope"):
        reader.in_flight("nope")


def test_claims_of_another_reader_are_seen_at_once(engine, reader):
    engine.send("a")
    with ScoreReader.attach(engine.name) as other:
        c = other.claim("a")
        assert reader.in_flight("a") == 1
        c.release()
        assert reader.in_flight("a") == 0


def _claim_in_child(name, node, q, go):
    with ScoreReader.attach(name) as r:
        c = r.claim(node)
        q.put(r.in_flight(node))
        go.wait(60)
        c.release(ok=False)
        q.put("released")


def test_claims_of_another_process_are_seen_at_once(engine, reader, reap):
    engine.send("a")
    ctx = mp.get_context("spawn")
    q, go = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=_claim_in_child, args=(engine.name, "a", q, go))
    reap(p)
    p.start()
    assert q.get(timeout=60) == 1
    assert reader.in_flight("a") == 1
    mine = reader.claim("a")
    assert reader.in_flight("a") == 2
    go.set()
    assert q.get(timeout=60) == "released"
    assert reader.in_flight("a") == 1
    mine.release()
    p.join(30)
    fb = reader.feedback("a")
    assert (fb.in_flight, fb.ok, fb.err) == (0, 1, 1)
    assert int(engine.claims.views.header.leases_taken[0]) == 2


def test_release_after_the_node_was_forgotten_never_touches_the_new_node(engine, reader):
    slot = engine.send("old")
    c = reader.claim("old")
    engine.forget("old")
    assert engine.send("new") == slot  # the slot is reused
    fresh = reader.claim("new")
    assert reader.in_flight("new") == 1  # the old claim is not counted
    assert c.release(ok=False) is False  # stale: nothing counted
    fb = reader.feedback("new")
    assert (fb.in_flight, fb.ok, fb.err, fb.consec, fb.last_error_ns) == (1, 0, 0, 0, None)
    assert int(engine.claims.views.header.stale_releases[0]) == 1
    fresh.release(ok=True)
    assert reader.feedback("new")[:3] == (0, 1, 0)
    with pytest.raises(KeyError):
        reader.claim("old")


def test_stale_release_when_the_node_is_forgotten_but_the_slot_still_free(engine, reader):
    engine.send("a")
    c = reader.claim("a")
    engine.forget("a")
    assert c.release(ok=True) is False
    assert int(engine.claims.views.header.stale_releases[0]) == 1


def test_a_dropped_claim_is_returned_with_a_warning(engine, reader):
    engine.send("a")
    with pytest.warns(ResourceWarning, match="claim on node 'a' was never released"):
        reader.claim("a")
        gc.collect()
    assert reader.in_flight("a") == 0
    assert int(engine.claims.views.header.claims_dropped[0]) == 1
    assert reader.feedback("a")[1:3] == (0, 0)


def test_claims_stay_releasable_after_the_reader_is_closed(engine):
    engine.send("a")
    r = ScoreReader.attach(engine.name)
    c = r.claim("a")
    r.close()
    assert c.release(ok=True) is True
    with ScoreReader.attach(engine.name) as again:
        assert again.feedback("a")[:3] == (0, 1, 0)


# ----------------------------------------------------------------- leases --
def _ident_of(pid):
    start, _state = process_stat(pid)
    return ((start & LOW32) << 32) | pid


def test_one_lease_per_process_shared_by_its_readers(engine, reader):
    engine.send("a")
    reader.claim("a").release()
    with ScoreReader.attach(engine.name) as other:
        other.claim("a").release()
    v = engine.claims.views
    assert np.count_nonzero(v.lease_ident) == 1
    assert int(v.lease_pid[np.flatnonzero(v.lease_ident)[0]]) == os.getpid()
    assert int(v.header.leases_taken[0]) == 1


def test_exhausted_leases_raise_a_clear_error(shm_name):
    eng = ClaimsEngine(shm_name, max_schedulers=2)
    try:
        eng.send("a")
        v = eng.claims.views
        v.lease_ident[0] = _ident_of(os.getppid())  # live processes hold both
        v.lease_ident[1] = _ident_of(1)
        v.lease_pid[:] = [os.getppid(), 1]
        with ScoreReader.attach(shm_name) as r:
            with pytest.raises(
                SchedulerLimitReached,
                match=r"all 2 scheduler leases \(\[claims\] max_schedulers\) "
                r"are held by live processes",
            ):
                r.claim("a")
            assert int(v.header.leases_refused[0]) == 1
            v.lease_ident[1] = 0  # one frees up
            r.claim("a").release()
            assert int(v.lease_ident[1]) == _ident_of(os.getpid())
    finally:
        eng.close()


def _exit_now():
    pass


def _dead_ident(reap):
    """The ident of a process that has exited (and been reaped)."""
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_exit_now)
    reap(p)
    p.start()
    ident = None
    while p.is_alive() and ident is None:
        st = process_stat(p.pid)
        if st is not None:
            ident = ((st[0] & LOW32) << 32) | p.pid
    p.join(60)
    assert ident is not None
    return ident


def test_reaper_returns_a_dead_leases_claims_as_abandoned(engine, reader, reap):
    slot = engine.send("a")
    engine.send("b")
    v = engine.claims.views
    gen = int(engine.views.registry.slot_gen[slot])
    dead = _dead_ident(reap)
    v.lease_ident[3] = dead
    v.in_flight[3, slot] = (C.tag_of(gen) << 32) | 5  # five claims left open
    v.in_flight[3, slot + 1] = (7 << 32) | 2  # two on an old registration
    assert reader.in_flight("a") == 5
    mine = reader.claim("a")
    assert reader.in_flight("a") == 6
    reaped, returned, in_use = engine.ticker.check_leases(time.monotonic())
    assert (reaped, returned, in_use) == (1, 7, 1)  # ours is still in use
    assert reader.in_flight("a") == 1
    assert int(v.lease_ident[3]) == 0 and not v.in_flight[3].any()
    h = v.header
    assert (int(h.abandoned_claims[0]), int(h.leases_reaped[0])) == (7, 1)
    assert reader.feedback("a")[1:3] == (0, 0)  # neither ok nor error
    mine.release()


def _sleep_until_killed():
    time.sleep(600)


def test_a_zombie_holds_no_lease(reap):
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_sleep_until_killed)
    reap(p)
    p.start()
    ident = None
    while ident is None:
        st = process_stat(p.pid)
        ident = None if st is None else ((st[0] & LOW32) << 32) | p.pid
    assert C.lease_holder_alive(ident)
    os.kill(p.pid, 9)
    deadline = time.monotonic() + 30
    while process_stat(p.pid) is not None and process_stat(p.pid)[1] != "Z":
        assert time.monotonic() < deadline
    assert not C.lease_holder_alive(ident)  # not reaped by its parent yet: a zombie
    assert not C.lease_holder_alive(_ident_of(os.getpid()) ^ (1 << 32))  # other start time
    assert C.lease_holder_alive(_ident_of(os.getpid()))


def test_a_revoked_lease_raises_once_then_a_new_one_is_taken(engine, reader):
    engine.send("a")
    old = reader.claim("a")
    v = engine.claims.views
    k = int(np.flatnonzero(v.lease_ident)[0])
    # The engine takes this process for dead (as when it cannot see its pid).
    C.reap_dead_leases(engine.claims.views, 16, 0.0, alive=lambda ident: False)
    assert v.lease_ident[k] == 0
    with pytest.raises(LeaseRevoked, match="revoked this process's scheduler lease"):
        reader.claim("a")
    new = reader.claim("a")
    assert reader.in_flight("a") == 1
    assert old.release(ok=False) is False  # made under the revoked lease
    assert new.release(ok=True) is True
    assert reader.feedback("a")[:4] == (0, 1, 0, 0)


def test_a_forked_child_takes_its_own_lease(engine, reader):
    engine.send("a")
    inherited = reader.claim("a")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must never return into pytest
        code = 1
        try:
            stale = inherited.release(ok=False)  # the parent's claim
            c = reader.claim("a")
            n = reader.in_flight("a")
            c.release(ok=True)
            os.write(w, f"{stale} {n}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    out = os.read(r, 100).decode()
    os.close(r)
    assert status == 0 and out == "False 2"  # the parent's claim and the child's
    v = engine.claims.views
    assert np.count_nonzero(v.lease_ident) == 2
    assert reader.in_flight("a") == 1
    inherited.release(ok=True)
    fb = reader.feedback("a")
    assert (fb.in_flight, fb.ok, fb.err) == (0, 2, 0)
    engine.ticker.check_leases(time.monotonic())  # the child is gone: its lease too
    assert np.count_nonzero(v.lease_ident) == 1


# -------------------------------------------------------- the tick's view --
def _gather(
    gen,
    active,
    fresh,
    idents,
    in_flight,
    outcomes,
    prev_ok,
    prev_err,
    now,
    max_consecutive_errors=5.0,
    ejection_s=5.0,
):
    n = len(gen)
    cols = [np.full(n, -1.0) for _ in range(10)]
    ok_seen, err_seen = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    sums = C.gather_feedback(
        np.asarray(gen, np.uint64),
        np.asarray(active, np.uint8),
        np.asarray(fresh, np.uint8),
        np.asarray(idents, np.uint64),
        np.ascontiguousarray(in_flight, np.uint64).ravel(),
        n,
        np.asarray(outcomes, np.uint64),
        np.asarray(prev_ok, np.uint64),
        np.asarray(prev_err, np.uint64),
        n,
        now,
        max_consecutive_errors,
        ejection_s,
        *cols,
        ok_seen,
        err_seen,
    )
    names = ("rif", "fb_ok", "fb_err", "consec", "err_age")
    got = {k: cols[i].tolist() for i, k in enumerate(names)}
    assert all(cols[i].tolist() == cols[i + 5].tolist() for i in range(5))  # published too
    return got, ok_seen.tolist(), err_seen.tolist(), sums


def _w(tag, value):
    return (tag << 32) | value


def test_gather_table():
    # Four slots.  Registrations: gen 4 (tag 2) in slot 0, gen 6 (tag 3) in
    # slot 1, gen 2 (tag 1) in slot 2, nothing in slot 3.
    gen = [4, 6, 2, 0]
    active = [1, 1, 1, 0]
    fresh = [0, 1, 0, 0]
    idents = [11, 0, 12]  # leases 0 and 2 in use
    in_flight = [
        [_w(2, 3), _w(3, 1), _w(9, 4), _w(1, 8)],  # lease 0
        [_w(2, 50), 0, 0, 0],  # lease 1: free, ignored
        [_w(2, 1), _w(2, 6), _w(1, 2), 0],
    ]  # lease 2
    now = 100.0
    outcomes = [
        # [tag|consec, last_err_ns, tag|ok, tag|err]
        [_w(2, 2), 99_500_000_000, _w(2, 10), _w(2, 4)],  # 2 errors in a row, 0.5 s ago
        [_w(3, 0), 0, _w(3, 5), _w(1, 9)],  # fresh: all 5 ok are new
        [_w(7, 3), 1, _w(1, 2), _w(1, 0)],  # consec pair of another tag
        [_w(5, 5), 5, _w(5, 5), _w(5, 5)],  # inactive slot
    ]
    prev_ok = [LOW32, 3, 2, 0]  # slot 0's counter wrapped: 0xffffffff -> 10
    prev_err = [1, 0, 0, 0]
    got, ok_seen, err_seen, sums = _gather(
        gen,
        active,
        fresh,
        idents,
        in_flight,
        outcomes,
        prev_ok,
        prev_err,
        now,
        max_consecutive_errors=2.0,
        ejection_s=1.0,
    )
    inf = float("inf")
    assert got["rif"] == [4.0, 1.0, 2.0, 0.0]  # 3+1 | 1 (lease 2 has tag 2) | 2 | inactive
    assert got["fb_ok"] == [11.0, 5.0, 0.0, 0.0]  # (10 - 0xffffffff) mod 2**32 | 5 - 0 | 2 - 2
    assert got["fb_err"] == [3.0, 0.0, 0.0, 0.0]  # 4 - 1 | err word of another tag | 0 - 0
    assert got["consec"] == [2.0, 0.0, 0.0, 0.0]
    assert got["err_age"] == [pytest.approx(0.5), inf, inf, inf]
    assert ok_seen == [10, 5, 2, 0] and err_seen == [4, 0, 0, 0]
    # Ejected: consec >= 2 and err_age < 1.0 s: slot 0 alone (slot 2's run
    # is another registration's; slot 3 is empty).
    assert sums == (7.0, 16, 3, 1)


@pytest.mark.parametrize(
    "consec, age_s, limit, ejection_s, ejected",
    [
        (5, 4.999, 5.0, 5.0, 1),  # the run reached the limit, the error is recent
        (4, 0.0, 5.0, 5.0, 0),  # one error short
        (5, 5.0, 5.0, 5.0, 0),  # exactly ejection_s after the error: tried again
        (9, 0.5, 5.0, 0.25, 0),  # ejection already over
    ],
)
def test_gather_counts_ejected_nodes_as_the_breaker_does(consec, age_s, limit, ejection_s, ejected):
    last_err_ns = 1_000_000_000
    now = last_err_ns * 1e-9 + age_s
    got, _ok, _err, sums = _gather(
        [2],
        [1],
        [0],
        [1],
        [[0]],
        [[_w(1, consec), last_err_ns, 0, _w(1, consec)]],
        [0],
        [0],
        now,
        limit,
        ejection_s,
    )
    assert got["consec"] == [float(consec)] and got["err_age"][0] == pytest.approx(age_s)
    assert sums[3] == ejected


def test_gather_error_in_the_future_of_the_tick_has_age_zero():
    got, *_ = _gather(
        [2], [1], [1], [1], [[0]], [[_w(1, 1), 5_000_000_000, 0, _w(1, 1)]], [0], [0], 4.0
    )
    assert got["err_age"] == [0.0] and got["fb_err"] == [1.0]


def test_gather_a_word_that_moved_to_the_next_registration_reads_as_no_news():
    # The tick scores gen 2 (tag 1), but the slot already holds a newer
    # registration whose ok word says 1: not the scored node's news.
    got, ok_seen, *_ = _gather([2], [1], [0], [0], [[0]], [[0, 0, _w(2, 1), 0]], [7], [0], 1.0)
    assert got["fb_ok"] == [0.0] and ok_seen == [7]


def test_tick_publishes_feedback_and_resets_it_with_the_registration(engine, reader):
    slot = engine.send("a")
    engine.tick()
    held = [reader.claim("a") for _ in range(3)]
    held.pop().release(ok=True)
    held.pop().release(ok=False)
    engine.tick()
    assert [engine.published(c, slot) for c in ("rif", "fb_ok", "fb_err", "consec")] == [
        1.0,
        1.0,
        1.0,
        1.0,
    ]
    assert 0.0 <= engine.published("err_age", slot) < 60.0
    fb = engine.ticker.feedback
    assert (fb.rif[slot], fb.fb_ok[slot], fb.fb_err[slot]) == (1.0, 1.0, 1.0)
    # The feedback columns are the tick inputs' own: the kernels read them.
    assert fb.rif is engine.ticker.inputs.rif and fb.err_age is engine.ticker.inputs.err_age
    engine.tick()  # nothing new since
    assert [engine.published(c, slot) for c in ("rif", "fb_ok", "fb_err", "consec")] == [
        1.0,
        0.0,
        0.0,
        1.0,
    ]
    h = engine.claims.views.header
    assert (int(h.released_ok[0]), int(h.released_err[0]), int(h.in_flight[0])) == (1, 1, 1)
    engine.forget("a")
    engine.tick()
    engine.send("b")  # same slot, new registration
    engine.tick()
    assert [engine.published(c, slot) for c in ("rif", "fb_ok", "fb_err", "consec")] == [
        0.0,
        0.0,
        0.0,
        0.0,
    ]
    assert engine.published("err_age", slot) == float("inf")
    assert held[0].release(ok=False) is False


def _ejected(engine) -> int:
    """The ejected count of the latest published tick."""
    epoch = int(engine.views.header.latch_seq[0]) >> 1
    return int(engine.views.buffers[epoch & 1].ejected[0])


def test_feedback_enters_the_score(engine, reader):
    # Heartbeat: queue 1, avg_job_s 1, slots 1 (not reported).  4 claims in
    # flight: load = max(qema 1, rif 4 - slots 1, 0) = 3, wait = 3 * 1 / 1.
    slot = engine.send("a")
    engine.send("b")
    engine.tick()
    assert engine.published("wait", slot) == 1.0
    held = [reader.claim("a") for _ in range(4)]
    engine.tick()
    assert engine.published("wait", slot) == 3.0
    # Five errors in a row (max_consecutive_errors 5): ejected, tripped.
    for c in held:
        c.release(ok=False)
    reader.claim("a").release(ok=False)
    engine.tick()
    assert engine.published("consec", slot) == 5.0 and engine.published("wait", slot) == 1.0
    assert engine.published("raw", slot) == 0.0 and engine.published("score", slot) == 0.0
    assert reader.state("a") is NodeState.OVERLOADED
    assert _ejected(engine) == 1
    # One ok release ends the run (the window, 5 errors and 1 ok, is below
    # min_requests 10: no trip from the error rate).
    reader.claim("a").release(ok=True)
    engine.tick()
    assert engine.published("consec", slot) == 0.0 and engine.published("raw", slot) > 0.0
    assert _ejected(engine) == 0


def test_ejected_nodes_show_in_status_metrics_and_top(engine, reader):
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry
    from rich.console import Console

    from shm_engine.ops.metrics import EngineCollector
    from shm_engine.ops.status import read_status, render
    from shm_engine.ops.topview import Watcher
    from shm_engine.ops.topview import render as render_top

    engine.send("a")
    engine.send("b")
    engine.tick()
    for _ in range(5):
        reader.claim("a").release(ok=False)
    engine.tick()
    st = read_status(engine.name)
    assert st["ejected"] == 1 and st["nodes"]["overloaded"] == 1
    assert "1 ranked, 1 ejected, pressure" in render(st)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EngineCollector(engine.name))
    assert (
        f'shm_engine_nodes_ejected{{engine="{engine.name}"}} 1.0' in generate_latest(reg).decode()
    )
    with Watcher(engine.name, rows=5) as w:
        vs = w.poll()
    assert vs.ejected == 1
    console = Console(width=160, record=True)
    console.print(render_top(vs))
    assert "ejected 1" in console.export_text()


# ------------------------------------------------------------- monitoring --
def test_status_metrics_and_top_show_the_claims(engine, reader, reap):
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from shm_engine.ops.metrics import EngineCollector
    from shm_engine.ops.status import read_status, render
    from shm_engine.ops.topview import Watcher
    from shm_engine.ops.topview import render as render_top

    engine.send("a")
    engine.send("b")
    engine.tick()
    open_claims = [reader.claim("a"), reader.claim("a"), reader.claim("b")]
    reader.claim("b").release(ok=True)
    reader.claim("b").release(ok=False)
    engine.claims.views.lease_ident[2] = _dead_ident(reap)
    engine.claims.views.in_flight[2, 0] = (C.tag_of(2) << 32) | 4  # a dead scheduler's claims
    engine.tick()  # counts the releases
    engine.ticker.check_leases(time.monotonic())  # returns the dead lease's claims
    st = read_status(engine.name)["claims"]
    assert st["in_flight"] == 3
    assert (st["released_ok"], st["released_err"], st["abandoned"]) == (1, 1, 4)
    assert st["leases"]["in_use"] == 1 and st["leases"]["max"] == 4
    assert st["leases"]["pids"] == [os.getpid()] and st["leases"]["reaped"] == 1
    assert (
        "claims   3 in flight; released 1 ok, 1 error; 4 abandoned, 0 stale; "
        "schedulers 1/4" in render(read_status(engine.name))
    )

    reg = CollectorRegistry(auto_describe=False)
    reg.register(EngineCollector(engine.name))
    text = generate_latest(reg).decode()
    e = f'engine="{engine.name}"'
    assert f"shm_engine_claims_in_flight{{{e}}} 3.0" in text
    assert f'shm_engine_claims_released_total{{{e},outcome="error"}} 1.0' in text
    assert f"shm_engine_claims_abandoned_total{{{e}}} 4.0" in text
    assert f"shm_engine_scheduler_leases{{{e}}} 1.0" in text

    with Watcher(engine.name, rows=5) as w:
        vs = w.poll()
    assert {r.node: r.in_flight for r in vs.rows} == {"a": 2, "b": 1}
    assert vs.claims["in_flight"] == 3
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(render_top(vs))
    out = console.export_text()
    assert "jobs in flight 3  released 1 ok 1 error  abandoned 4  stale 0  schedulers 1/4" in out
    for c in open_claims:
        c.release()


# ------------------------------------------------------------ live engine --
def test_the_engine_creates_reclaims_and_unlinks_its_claims_segment(shm_name, tmp_path, reap):
    import json

    from clients import HeartbeatClient
    from shm_engine.ops.engine_process import free_port
    from support.engine import START_TIMEOUT_S, Engine, cli, write_config
    from support.wait import wait_until

    port = free_port()
    cfg = write_config(
        tmp_path / "c.toml", port, extra='\n[claims]\nshm_mode = "0660"\nmax_schedulers = 3\n'
    )
    claims_path = _dev_shm(shm_name + ".claims")
    eng = Engine(shm_name, cfg, tmp_path, reap)
    st = eng.wait_ready()
    assert st["claims"]["leases"] == {
        "in_use": 0,
        "max": 3,
        "pids": [],
        "taken": 0,
        "refused": 0,
        "reaped": 0,
    }
    assert stat.S_IMODE(os.stat(claims_path).st_mode) == 0o660
    with HeartbeatClient(f"tcp://127.0.0.1:{port}") as hb:
        hb.send("x", cpu=0.1, mem=0.1, queue=0.0, avg_job_s=1.0)
        wait_until(
            lambda: eng.status()["nodes"]["registered"] == 1, START_TIMEOUT_S, "node x registered"
        )
    reader = ScoreReader.attach(shm_name)
    c = reader.claim("x")
    out = cli("status", "--name", shm_name, "--json")
    assert out.returncode == 0, out.stderr
    claims = json.loads(out.stdout)["claims"]
    assert claims["in_flight"] == 1 and claims["leases"]["pids"] == [os.getpid()]

    # SIGKILL leaves both segments behind; the next run reclaims both.
    eng.proc.kill()
    eng.proc.wait(30)
    assert os.path.exists(_dev_shm(shm_name)) and os.path.exists(claims_path)
    again = Engine(shm_name, cfg, tmp_path, reap)
    st = again.wait_ready()
    assert st["pid"] == again.proc.pid and st["claims"]["in_flight"] == 0
    assert st["claims"]["leases"]["in_use"] == 0
    c.release()  # into the old engine's (unlinked) segment: harmless
    reader.close()
    assert again.stop() == 0
    assert not os.path.exists(_dev_shm(shm_name)) and not os.path.exists(claims_path)
