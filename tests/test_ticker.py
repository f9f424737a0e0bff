"""The tick worker in-process: publishing through the latch, resuming after a
restart or a crash mid-write, duration statistics, the schedule, and the
process entry's exits.

Heartbeats are written as the ingest writes them (`NodeRegistry` +
`rows.write_rows`), on a logical clock: times are seconds chosen by the
test, so every age is exact.
"""

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from clients.reader import ScoreReader
from shm_engine.core.config import Config, with_overrides
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.segment import Segment
from shm_engine.core.seqlock import write_begin
from shm_engine.core.states import NodeState
from shm_engine.tick.ticker import Schedule, Ticker, TickStats, ticker_main, warm_up
from support.ticks import node, send

CAP = 6  # not 8, the length of the weights and counts vectors
CFG = Config()


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warm_up()


@pytest.fixture
def seg(shm_name):
    s = Segment.create(shm_name, CAP, tick_interval_ms=50)
    yield s
    s.close()


# Queues and outcomes vary tick by tick so that the queue EMA, the error
# window and the smoothed score carry real state from one epoch to the next.
SCRIPT = [
    [node("a", queue=10.0, ok=4, err=1), node("b", cpu=0.2)],
    [node("a", queue=40.0, ok=0, err=3)],
    [node("a", queue=5.0), node("b", cpu=0.9, queue=20.0, ok=7, err=0)],
    [node("a", queue=60.0, ok=2, err=2)],
    [node("b", cpu=0.1, ok=1, err=1)],
    [node("a", queue=0.0), node("b", queue=3.0)],
]


def run_script(views, registry, ticker_for, ticks, crash_at=None):
    """Feed SCRIPT[k] before tick k at time k*0.05; ``ticker_for(k)`` gives the
    Ticker of tick k (tests swap it to simulate a restart)."""
    results = []
    for k in range(ticks):
        now = k * 0.05
        for hb in SCRIPT[k]:
            send(views, registry, now, **hb)
        results.append(ticker_for(k).tick(now))
    return results


def published(views):
    """What the newest buffer defines: per-tick scalars (but the wall clock),
    the 7 weights and 5 counts, every column of the used slots, the ranking."""
    e = int(views.header.latch_seq[0]) >> 1
    b = views.buffers[e & 1]
    hwm, n_ranked = int(b.slot_hwm[0]), int(b.n_ranked[0])
    out = {name: arr[:hwm].copy() for name, arr in b.views.items() if arr.shape == (CAP,)}
    out.update(
        {
            name: getattr(b, name).copy()
            for name in (
                "epoch",
                "tick_mono",
                "pressure",
                "n_ranked",
                "live",
                "registered",
                "slot_hwm",
            )
        }
    )
    out.update(
        weights=b.weights[:7].copy(),
        counts=b.counts[:5].copy(),
        ranked=b.views["ranked"][:n_ranked].copy(),
    )
    return out


def test_hand_computed_score_is_published(seg):
    # cpu 0.49 -> g_cpu = 1 - 0.49/0.98 = 0.5; mem 0.475 -> g_mem = 1 - 0.475/0.95 = 0.5;
    # queue 0 -> wait 0 -> g_wait 1; avg_job_s 1 -> rate 1/1, the only rate, so
    # R = 1 and g_rate = 1; no outcomes -> g_succ = (0+1)/(0+0+1) = 1; the only
    # live node -> P_i = 0, so the weights are the base ones:
    # core = (0.20*0.5 + 0.15*0.5 + 0.25*1 + 0.15*1 + 0.15*1) / 0.90 = 0.725/0.9;
    # L = 1, B = 1, first tick s = raw.
    v = seg.views
    reg = NodeRegistry(v)
    send(v, reg, 10.0, **node("n1"))
    t = Ticker(v, CFG)
    r = t.tick(10.0)
    assert (r.epoch, r.n_ranked, r.live, r.registered, r.torn) == (1, 1, 1, 1, 0)
    with ScoreReader.attach(seg.name) as reader:
        assert reader.score("n1") == pytest.approx(0.725 / 0.9, abs=1e-12)
        assert reader.state("n1") == NodeState.HEALTHY


def test_error_window_is_carried_in_the_published_buffers(seg):
    # d = 0.5 ** (50 / 1000 / 10.0).  Tick 0: e = 0*d + 4 ok, 1 err.  Tick 1
    # (no heartbeat): e*d.  Tick 2 (ok 2, err 3): e*d + (2, 3).
    d = 0.5 ** (50 / 1000 / 10.0)
    v = seg.views
    reg = NodeRegistry(v)
    t = Ticker(v, CFG)
    slot = send(v, reg, 0.0, **node("w", ok=4, err=1))
    t.tick(0.0)
    t.tick(0.05)
    send(v, reg, 0.1, **node("w", ok=2, err=3))
    t.tick(0.1)
    b = v.buffers[3 & 1]
    assert float(b.state.e_ok[slot]) == pytest.approx((4 * d) * d + 2, abs=1e-12)
    assert float(b.state.e_err[slot]) == pytest.approx((1 * d) * d + 3, abs=1e-12)
    # g_succ = (e_ok + 1) / (e_ok + e_err + 1) < 1 now: the score fell.
    e_ok, e_err = (4 * d) * d + 2, (1 * d) * d + 3
    core = (
        0.20 * 0.5 + 0.15 * 0.5 + 0.25 * 1 + 0.15 * 1 + 0.15 * (e_ok + 1) / (e_ok + e_err + 1)
    ) / 0.90
    assert float(b.out.raw[slot]) == pytest.approx(core, abs=1e-12)


def test_uses_the_engine_tick_interval_for_the_window(shm_name):
    cfg = with_overrides(CFG, {"engine.tick_interval_ms": 1000, "score.error_half_life_s": 1.0})
    with Segment.create(shm_name, CAP, tick_interval_ms=1000) as s:
        reg = NodeRegistry(s.views)
        t = Ticker(s.views, cfg)
        slot = send(s.views, reg, 0.0, **node("w", ok=8, err=0))
        t.tick(0.0)
        t.tick(1.0)  # d = 0.5 ** (1000 / 1000 / 1.0) = 0.5 exactly
        assert float(s.views.buffers[0].state.e_ok[slot]) == 4.0
        t = None


def test_epochs_are_published_into_alternating_buffers(seg):
    v = seg.views
    reg = NodeRegistry(v)
    t = Ticker(v, CFG)
    results = run_script(v, reg, lambda k: t, 4)
    assert [r.epoch for r in results] == [1, 2, 3, 4]
    assert int(v.header.latch_seq[0]) == 2 * 4  # even: nothing in progress
    for e in (3, 4):
        b = v.buffers[e & 1]
        assert int(b.epoch[0]) == e
        assert float(b.tick_mono[0]) == (e - 1) * 0.05
        assert int(b.registered[0]) == 2
        assert int(b.slot_hwm[0]) == 2
        assert abs(float(b.tick_wall[0]) - time.time()) < 60
    assert int(v.header.ticks[0]) == 4


def test_restarted_ticker_resumes_from_published_state(shm_names):
    # One uninterrupted run against one stopped after 3 ticks and resumed by
    # a fresh Ticker over a fresh mapping (as a restarted process would).
    names = shm_names(), shm_names()
    whole = Segment.create(names[0], CAP)
    split = Segment.create(names[1], CAP)
    try:
        t = Ticker(whole.views, CFG)
        run_script(whole.views, NodeRegistry(whole.views), lambda k: t, 6)

        reg = NodeRegistry(split.views)
        first = Ticker(split.views, CFG)
        for k in range(3):
            for hb in SCRIPT[k]:
                send(split.views, reg, k * 0.05, **hb)
            first.tick(k * 0.05)
        with Segment.attach(names[1], readonly=False) as again:
            second = Ticker(again.views, CFG)
            assert second.epoch == 3
            for k in range(3, 6):
                for hb in SCRIPT[k]:
                    send(split.views, reg, k * 0.05, **hb)
                assert second.tick(k * 0.05).epoch == k + 1
            second = None
        a, b = published(whole.views), published(split.views)
        for col in a:
            np.testing.assert_array_equal(a[col], b[col], err_msg=col)
    finally:
        for s in (whole, split):
            s.close()


def test_odd_latch_rewrites_the_unfinished_epoch(shm_names):
    names = shm_names(), shm_names()
    whole = Segment.create(names[0], CAP)
    crashed = Segment.create(names[1], CAP)
    try:
        t = Ticker(whole.views, CFG)
        run_script(whole.views, NodeRegistry(whole.views), lambda k: t, 4)

        v = crashed.views
        reg = NodeRegistry(v)
        t1 = Ticker(v, CFG)
        run_script(v, reg, lambda k: t1, 3)
        # Crash while writing epoch 4: latch odd, buffer 0 half-written with garbage.
        assert write_begin(v.header.latch_seq) == 4
        assert int(v.header.latch_seq[0]) == 7
        garbage = v.buffers[0]
        for arr in garbage.views.values():
            arr[...] = 77
        with ScoreReader.attach(names[1]) as reader:
            assert reader.snapshot().epoch == 3  # readers still see epoch 3
        for hb in SCRIPT[3]:
            send(v, reg, 3 * 0.05, **hb)
        r = Ticker(v, CFG).tick(3 * 0.05)
        assert r.epoch == 4
        assert int(v.header.latch_seq[0]) == 8
        a, b = published(whole.views), published(v)
        for col in a:
            np.testing.assert_array_equal(a[col], b[col], err_msg=col)
    finally:
        for s in (whole, crashed):
            s.close()


def test_tick_stats_in_header(seg):
    v = seg.views
    t = Ticker(v, CFG)
    before = time.monotonic()
    for k in range(20):
        t.tick(k * 0.05)
    h = v.header
    assert int(h.ticks[0]) == 20
    last, p50, p99, mx = (
        float(h.tick_us_last[0]),
        float(h.tick_us_p50[0]),
        float(h.tick_us_p99[0]),
        float(h.tick_us_max[0]),
    )
    assert 0 < last <= mx
    assert 0 < p50 <= p99 <= mx
    assert float(h.ticker_alive_mono[0]) >= before


@pytest.mark.parametrize(
    "samples, expect",
    [
        # (values added in order, (last, p50, p99, max)) over a window of 4
        ([], (0.0, 0.0, 0.0, 0.0)),
        ([5.0], (5.0, 5.0, 5.0, 5.0)),
        ([1.0, 2.0, 3.0], (3.0, 2.0, 2.98, 3.0)),  # p99 = 2 + 0.98*(3-2)
        ([100.0, 1.0, 2.0, 3.0, 4.0], (4.0, 2.5, 3.97, 4.0)),  # 100 fell out of the window
    ],
)
def test_tick_stats_window(samples, expect):
    s = TickStats(window=4)
    for x in samples:
        s.add(x)
    assert s.summary() == pytest.approx(expect)


@pytest.mark.parametrize(
    "ends, ks, overruns",
    [
        # interval 1.0 from t0 = 0: deadlines 0, 1, 2, ...
        ([0.3, 1.2, 2.9], [1, 2, 3], 0),  # every tick ends before the next deadline
        ([0.3, 3.5], [1, 4], 1),  # tick 1 ends at 3.5: skip 2 and 3, next is 4
        ([1.0], [1], 0),  # ending exactly on the deadline is on time
        ([1.0001], [2], 1),
    ],
)
def test_schedule_skips_missed_deadlines(ends, ks, overruns):
    sch = Schedule(1.0, 0.0)
    got_k, got_over = [], 0
    for end in ends:
        got_over += sch.after_tick(end)
        got_k.append(sch.k)
    assert got_k == ks and got_over == overruns
    assert sch.deadline == float(ks[-1])


def wait_until(predicate, timeout, what, period=0.005):
    """Poll ``predicate`` until true (a condition wait with a deadline; the
    short sleep only leaves the CPU to the tick worker between polls)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(period)


def _spawn_ticker(name, config):
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=ticker_main, args=(name, config, os.getpid()))
    p.start()
    return p


def test_ticker_process_ticks_and_stops(seg, reap):
    cfg = with_overrides(CFG, {"engine.tick_interval_ms": 10})
    h = seg.views.header
    p = _spawn_ticker(seg.name, cfg)
    reap(p)
    wait_until(lambda: int(h.latch_seq[0]) >> 1 >= 5, 30, "five epochs")
    # Drift-free cadence: consecutive ticks are about one interval apart.
    b0 = seg.views.buffers
    wait_until(lambda: int(h.ticks[0]) >= 20, 30, "20 ticks")
    assert abs(float(b0[0].tick_mono[0]) - float(b0[1].tick_mono[0])) < 0.5
    h.stopping[0] = 1
    p.join(15)
    assert p.exitcode == 0
    assert int(h.latch_seq[0]) % 2 == 0


def test_ticker_process_exits_on_sigterm(seg, reap):
    h = seg.views.header
    p = _spawn_ticker(seg.name, CFG)
    reap(p)
    wait_until(lambda: int(h.latch_seq[0]) >> 1 >= 1, 30, "first epoch")
    os.kill(p.pid, signal.SIGTERM)
    p.join(15)
    assert p.exitcode == 0
