"""The event log: the reasons the stages write, the diff, the ring, its readers.

Table tests for `breaker.trip_reason`, `hysteresis.transition_reason` and
`kernels.events.transitions`; the ring's wrap-around and lost count; a
writer process appending self-describing events while a slow reader in
this process falls behind and provably loses the oldest (counted, never
torn); and the events of a tick worker matching the state transitions
replay computes from the same heartbeats.
"""

import mmap
import multiprocessing

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import reasons as R
from kernels.breaker import trip_reason, tripped
from kernels.events import transitions
from kernels.hysteresis import transition_reason
from kernels.params import DEAD, DEGRADED, HEALTHY, OVERLOADED, QUARANTINED, UNREGISTERED
from shm_engine.core.config import Config
from shm_engine.core.events import EventLog, EventSegment, read_events
from shm_engine.core.events import warm_up as warm_up_events
from shm_engine.core.layout import SegmentViews, layout_for
from shm_engine.core.registry import NodeRegistry
from shm_engine.tick.replay import Replay
from shm_engine.tick.ticker import Ticker, warm_up
from support.events import check, private_ring, put
from support.ticks import node, send
from support.wait import wait_until

INF = float("inf")
# Breaker limits at their defaults: max_queue 100, max_wait_s 30, max_cpu 0.98,
# max_mem 0.95, min_requests 10, max_error_rate 0.5, 5 consecutive, 5 s.
LIMITS = (100.0, 30.0, 0.98, 0.95, 10.0, 0.5, 5.0, 5.0)


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warm_up()
    warm_up_events()


# (load, wait, cpu, mem, e_ok, e_err, consec, err_age) -> reason
TRIPS = [
    ((0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, INF), R.NONE),
    ((0.0, 0.0, 0.98, 0.5, 0.0, 0.0, 0.0, INF), R.CPU),  # cpu >= max_cpu
    ((0.0, 0.0, 0.5, 0.95, 0.0, 0.0, 0.0, INF), R.MEM),  # mem >= max_mem
    ((100.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, INF), R.QUEUE),  # load >= max_queue
    ((1.0, 30.0, 0.5, 0.5, 0.0, 0.0, 0.0, INF), R.WAIT),  # wait >= max_wait_s
    ((0.0, 0.0, 0.5, 0.5, 5.0, 5.0, 0.0, INF), R.ERROR_RATE),  # 5/10 >= 0.5, 10 >= 10
    ((0.0, 0.0, 0.5, 0.5, 5.0, 4.0, 0.0, INF), R.NONE),  # 9 outcomes < min_requests
    ((0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 5.0, 4.9), R.EJECTION),  # 5 in a row, 4.9 s < 5 s
    ((0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 5.0, 5.0), R.NONE),  # the latest error 5 s ago
    ((0.0, 0.0, 0.99, 0.99, 9.0, 9.0, 9.0, 0.0), R.CPU),  # several: cpu is checked first
]


@pytest.mark.parametrize(("args", "want"), TRIPS)
def test_trip_reason_names_the_breaker(args, want):
    assert trip_reason(*args, *LIMITS) == want
    assert tripped(*args, *LIMITS) == (want != R.NONE)


# (prev, new, first, trip_why) -> reason
TRANSITIONS = [
    (HEALTHY, HEALTHY, False, R.NONE, R.NONE),
    (UNREGISTERED, HEALTHY, True, R.NONE, R.REGISTERED),
    (HEALTHY, DEAD, False, R.NONE, R.DEATH),
    (QUARANTINED, DEAD, False, R.NONE, R.DEATH),
    (DEAD, DEGRADED, False, R.NONE, R.REVIVAL),
    (DEAD, OVERLOADED, False, R.MEM, R.REVIVAL),
    (HEALTHY, OVERLOADED, False, R.QUEUE, R.QUEUE),
    (DEGRADED, OVERLOADED, False, R.EJECTION, R.EJECTION),
    (HEALTHY, OVERLOADED, False, R.NONE, R.HYSTERESIS),  # s < t_overloaded, untripped
    (OVERLOADED, DEGRADED, False, R.NONE, R.HYSTERESIS),
    (OVERLOADED, OVERLOADED, False, R.CPU, R.NONE),  # no change, no event
]


@pytest.mark.parametrize(("prev", "new", "first", "why", "want"), TRANSITIONS)
def test_transition_reason(prev, new, first, why, want):
    assert transition_reason(prev, new, first, why) == want


def test_transitions_rows_per_slot():
    # slot 0: unchanged; 1: HEALTHY -> OVERLOADED (cpu); 2: freed (was DEGRADED);
    # 3: a new node in a slot that held a DEAD one (two rows); 4: registered;
    # 5: empty before and after; 6 is above hwm and ignored.
    prev = np.array([HEALTHY, HEALTHY, DEGRADED, DEAD, UNREGISTERED, 255, HEALTHY], np.uint8)
    nxt = np.array([HEALTHY, OVERLOADED, 255, HEALTHY, DEGRADED, 255, DEAD], np.uint8)
    fresh = np.array([0, 0, 0, 1, 1, 0, 0], np.uint8)
    reason = np.array([0, R.CPU, 0, R.REGISTERED, R.REGISTERED, 0, R.DEATH], np.uint8)
    prev_gen = np.array([2, 2, 4, 6, 0, 0, 2], np.uint64)
    nxt_gen = np.array([2, 2, 6, 8, 2, 0, 2], np.uint64)
    out = [np.zeros(14, dt) for dt in (np.uint32, np.uint64, np.uint8, np.uint8, np.uint8)]
    n = transitions(prev, nxt, fresh, reason, prev_gen, nxt_gen, 6, *out)
    rows = list(zip(*(a[:n].tolist() for a in out), strict=True))
    assert rows == [
        (1, 2, HEALTHY, OVERLOADED, R.CPU),
        (2, 4, DEGRADED, UNREGISTERED, R.UNREGISTERED),
        (3, 6, DEAD, UNREGISTERED, R.UNREGISTERED),
        (3, 8, UNREGISTERED, HEALTHY, R.REGISTERED),
        (4, 2, UNREGISTERED, DEGRADED, R.REGISTERED),
    ]


# ------------------------------------------------------------------ the ring --
def test_ring_wraps_and_counts_the_lost():
    v = private_ring(16)
    names = np.zeros((40, 64), np.uint8)
    assert read_events(v, 0) == ([], 0, 0)
    assert put(v, 10, names) == 10
    b = read_events(v, 0)
    assert [e.seq for e in b.events] == list(range(1, 11)) and (b.lost, b.next_seq) == (0, 10)
    for e in b.events:
        check(e)
    put(v, 30, names)  # head 40: the ring holds 25..40
    b = read_events(v, 10)
    assert b.lost == 14  # 11..24 were overwritten before this read
    assert [e.seq for e in b.events] == list(range(25, 41)) and b.next_seq == 40
    assert read_events(v, 40) == ([], 0, 40)
    b = read_events(v, 30, limit=4)
    assert [e.seq for e in b.events] == [31, 32, 33, 34] and b.next_seq == 34
    b = read_events(v, 0, node="n33")  # filtered, still counting what was lost
    assert [e.seq for e in b.events] == [33] and (b.lost, b.next_seq) == (24, 40)
    assert read_events(v, 0, node="n3").events == []  # exact ids, not prefixes
    # A number from an earlier run, beyond the head, restarts at the head.
    assert read_events(v, 99) == ([], 0, 40)
    with pytest.raises(ValueError, match="after_seq"):
        read_events(v, -1)


def _writer(name: str, total: int, stop) -> None:
    """A writer process: ``total`` self-describing events in batches of 1..7."""
    seg = EventSegment.attach(name, readonly=False)
    names = np.zeros((8, 64), np.uint8)
    written = 0
    k = 0
    while written < total and not stop.is_set():
        n = 1 + k % 7
        put(seg.views, n, names)
        written += n
        k += 1
    seg.close()


def test_slow_reader_loses_the_oldest_and_counts_them(shm_name, reap):
    cap = 64
    seg = EventSegment.create(shm_name, cap)
    try:
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        proc = ctx.Process(target=_writer, args=(shm_name, 400_000, stop))
        proc.start()
        reap(proc)
        reader = EventSegment.attach(shm_name, readonly=True)
        seen, lost_total, after, rounds, lost_rounds = 0, 0, 0, 0, 0
        while proc.is_alive() or after < int(reader.views.header.head[0]):
            b = read_events(reader.views, after)
            seqs = [e.seq for e in b.events]
            # What was returned is one run, right after what was lost.
            assert seqs == list(range(after + b.lost + 1, b.next_seq + 1))
            for e in b.events:
                check(e)
            seen += len(seqs)
            lost_total += b.lost
            lost_rounds += b.lost > 0
            after = b.next_seq
            rounds += 1
            if rounds % 2 == 0 and proc.is_alive():
                # Be slow: let the writer get two rings ahead.
                target = after + 2 * cap
                wait_until(
                    lambda t=target: int(reader.views.header.head[0]) >= t or not proc.is_alive(),
                    30,
                    "the writer to get two rings ahead",
                    period=0,
                )
        proc.join(30)
        head = int(reader.views.header.head[0])
        assert proc.exitcode == 0
        assert seen + lost_total == head == after  # every event returned or counted lost
        assert lost_rounds > 0 and seen > 0
        reader.close()
    finally:
        seg.close()
        seg.unlink()


# ------------------------------------------------------- ticker vs replay --
TRACE = (
    # tick -> heartbeats; every node sends every tick, so ages are 0 both ways.
    [[node("a"), node("b"), node("c")]] * 3
    + [[node("a", cpu=0.99), node("b", queue=400.0, avg_job_s=0.01), node("c")]]
    * 3  # cpu, queue breakers
    + [[node("a"), node("b")]] * 4  # c goes silent: DEAD after dead_after_s
    + [[node("a"), node("b"), node("c")]] * 3  # c revives
)


def transitions_of(records) -> list[tuple[int, str, str, str]]:
    """(epoch, node, from, to) for every state change in replay records."""
    last: dict[str, str] = {}
    out = []
    for r in records:
        before = last.get(r["node"], "unregistered")
        if before != r["state"]:
            out.append((r["tick"] + 1, r["node"], before, r["state"]))
        last[r["node"]] = r["state"]
    return out


def test_ticker_events_match_replay_transitions():
    cfg = Config.from_dict(
        {
            "engine": {"capacity": 8, "tick_interval_ms": 100},
            "score": {"dead_after_s": 0.35, "suspect_after_s": 0.1},
        }
    )
    layout = layout_for(8)
    views = SegmentViews(mmap.mmap(-1, layout.size), layout)
    for b in views.buffers:
        b.state.state[:] = 255
    ring = private_ring(256)
    ticker = Ticker(views, cfg, events=ring)
    reg = NodeRegistry(views)
    rp = Replay(cfg)
    records = []
    for k, beats in enumerate(TRACE):
        for hb in beats:
            send(views, reg, k * 0.1, **hb)
            rp.add(dict(hb))
        reg.publish_pending()
        ticker.tick(k * 0.1)
        records.extend(rp.step())
    got = read_events(ring, 0)
    assert got.lost == 0
    want = transitions_of(records)
    assert [(e.epoch, e.node, e.from_state, e.to_state) for e in got.events] == want
    why = {(e.node, e.from_state, e.to_state): e.reason for e in got.events}
    assert why[("a", "unregistered", "healthy")] == "registered"
    assert why[("a", "healthy", "overloaded")] == "cpu"
    assert why[("b", "healthy", "overloaded")] == "queue"
    assert why[("c", "healthy", "dead")] == "death"
    revived = [e for e in got.events if e.node == "c" and e.from_state == "dead"]
    assert len(revived) == 1 and revived[0].reason == "revival"
    assert sum(e.reason == "hysteresis" for e in got.events) >= 1  # a and b recover


def test_no_event_log_appends_nothing():
    log = EventLog(None, 4)
    assert log.append(None, None, None, None, 0, 1) == 0


def test_event_reader_reads_and_follows(shm_name):
    from clients import EventReader

    seg = EventSegment.create(shm_name, 32)
    try:
        names = np.zeros((8, 64), np.uint8)
        put(seg.views, 5, names)
        with EventReader.attach(shm_name) as reader:
            assert (reader.capacity, reader.head) == (32, 5)
            assert [e.seq for e in reader.read().events] == [1, 2, 3, 4, 5]
            batches = []

            def stop():
                return len(batches) == 2

            for b in reader.follow(0, should_stop=stop):
                batches.append(b)
                if len(batches) == 1:
                    put(seg.views, 3, names)  # arrives while following
            assert [[e.seq for e in b.events] for b in batches] == [[1, 2, 3, 4, 5], [6, 7, 8]]
            assert all(b.lost == 0 for b in batches)
            # From the newest event on: nothing old; stops when told.
            assert list(reader.follow(should_stop=lambda: True)) == []
            assert reader.read(8, node="n3").events == []
            assert reader.read(0, node="n7").events[0].as_dict()["node"] == "n7"
    finally:
        seg.close()
        seg.unlink()


def test_an_engine_name_cannot_be_another_engines_event_log():
    from shm_engine.core.segment import posix_name

    with pytest.raises(ValueError, match="'.events'"):
        posix_name("dfps.events")


STATES = [HEALTHY, DEGRADED, OVERLOADED, QUARANTINED, DEAD, UNREGISTERED]


def _model(prev, nxt, fresh, reason, prev_gen, nxt_gen):
    """The rows of `transitions`, as its docstring states them."""
    rows = []
    for i, (a, b) in enumerate(zip(prev, nxt, strict=True)):
        if b == UNREGISTERED:
            if a != UNREGISTERED:
                rows.append((i, prev_gen[i], a, UNREGISTERED, R.UNREGISTERED))
        elif fresh[i] or a == UNREGISTERED:
            if a != UNREGISTERED:
                rows.append((i, prev_gen[i], a, UNREGISTERED, R.UNREGISTERED))
            rows.append((i, nxt_gen[i], UNREGISTERED, b, R.REGISTERED))
        elif a != b:
            rows.append((i, nxt_gen[i], a, b, reason[i]))
    return rows


_SLOT = st.tuples(
    st.sampled_from(STATES),
    st.sampled_from(STATES),
    st.booleans(),
    st.integers(0, R.N_REASONS - 1),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_SLOT, max_size=40))
def test_transitions_match_the_model(slots):
    n_slots = len(slots)
    cols = list(zip(*slots, strict=True)) if slots else [()] * 6
    dtypes = (np.uint8, np.uint8, np.uint8, np.uint8, np.uint64, np.uint64)
    prev, nxt, fresh, reason, pg, ng = (np.array(c, dt) for c, dt in zip(cols, dtypes, strict=True))
    out = [
        np.zeros(2 * n_slots + 1, dt) for dt in (np.uint32, np.uint64, np.uint8, np.uint8, np.uint8)
    ]
    n = transitions(prev, nxt, fresh, reason, pg, ng, n_slots, *out)
    got = list(zip(*(a[:n].tolist() for a in out), strict=True))
    want = _model(*(a.tolist() for a in (prev, nxt, fresh, reason, pg, ng)))
    assert got == want
