"""Fast-tick mode: the schedule's precise wait and the header's stats cadence.

`run_schedule` is driven by a fake clock, so the tests are exact: the worker
must sleep until `SPIN_S` before a deadline, yield (never sleep) for the
rest, and start each tick no earlier than its deadline.
"""

import os
import threading

import pytest

from shm_engine.tick import ticker as tk
from shm_engine.tick.ticker import SPIN_S, SUMMARY_EVERY, TickStats, run_schedule


class _Clock:
    """Monotonic time that moves only when the loop sleeps, yields or ticks."""

    def __init__(self, t0=100.0, yield_s=50e-6, tick_s=300e-6, oversleep_s=0.0):
        self.t = t0
        self.yield_s = yield_s
        self.tick_s = tick_s
        self.oversleep_s = oversleep_s
        self.sleeps = []
        self.yields = 0

    def __call__(self):
        return self.t

    def sleep(self, s):
        assert s > 0
        self.sleeps.append(s)
        self.t += max(s, 1e-6) + self.oversleep_s  # a real sleep always takes some time

    def yield_cpu(self):
        self.yields += 1
        self.t += self.yield_s


class _Header:
    def __init__(self):
        self.overruns = [0]


class _FakeTicker:
    def __init__(self, clock, n_ticks):
        self.header = _Header()
        self.clock = clock
        self.starts = []
        self.n_ticks = n_ticks

    def tick(self, now):
        self.starts.append(now)
        self.clock.t += self.clock.tick_s

    def done(self):
        return len(self.starts) >= self.n_ticks


def _run(clock, interval, n_ticks, check_s=0.1):
    t = _FakeTicker(clock, n_ticks)
    run_schedule(
        t, interval, t.done, check_s, clock=clock, sleep=clock.sleep, yield_cpu=clock.yield_cpu
    )
    return t


def test_ticks_start_on_their_deadlines_within_one_yield():
    clock = _Clock()
    t = _run(clock, 0.002, 50)
    t0 = 100.0
    for k, start in enumerate(t.starts):
        late = start - (t0 + k * 0.002)
        assert 0.0 <= late < clock.yield_s + 1e-12, (k, late)
    assert t.header.overruns[0] == 0


def test_sleeps_end_spin_s_before_the_deadline_and_yields_cover_the_rest():
    clock = _Clock(yield_s=10e-6)
    _run(clock, 0.002, 3)
    # after a 300 µs tick, 1.7 ms remain: one sleep of 1.7 ms - SPIN_S
    assert clock.sleeps[0] == pytest.approx(0.002 - 300e-6 - SPIN_S)
    assert all(s <= 0.002 for s in clock.sleeps)
    # SPIN_S of yielding per tick (the first tick is due at once)
    assert clock.yields == pytest.approx(2 * SPIN_S / 10e-6, abs=2)


def test_a_late_wake_up_is_not_compounded():
    # every sleep overshoots by 150 µs (< SPIN_S): ticks still start on time
    clock = _Clock(oversleep_s=150e-6)
    t = _run(clock, 0.002, 20)
    for k, start in enumerate(t.starts):
        assert 0.0 <= start - (100.0 + k * 0.002) < clock.yield_s + 1e-12


def test_long_waits_are_cut_into_stop_checks():
    clock = _Clock()
    _run(clock, 1.0, 2, check_s=0.1)
    assert max(clock.sleeps) == pytest.approx(0.1)


def test_overrunning_ticks_are_counted_and_skipped():
    clock = _Clock(tick_s=0.0025)  # every tick longer than the 2 ms interval
    t = _run(clock, 0.002, 5)
    assert t.header.overruns[0] == 5
    for a, b in zip(t.starts, t.starts[1:], strict=False):
        assert b - a == pytest.approx(0.004, abs=60e-6)  # the missed deadline is skipped


@pytest.mark.parametrize(
    "n, due",
    [
        (0, False),
        (1, True),
        (2, True),
        (3, False),
        (4, True),
        (SUMMARY_EVERY - 1, False),
        (SUMMARY_EVERY, True),
        (SUMMARY_EVERY + 1, False),
        (3 * SUMMARY_EVERY, True),
    ],
)
def test_summary_cadence(n, due):
    s = TickStats(window=8)
    for _ in range(n):
        s.add(1.0)
    assert s.summary_due() is due


def _slack_ns() -> int:
    # /proc/PID/timerslack_ns is the main thread's slack: pytest runs tests there.
    with open(f"/proc/{os.getpid()}/timerslack_ns") as f:
        return int(f.read())


@pytest.mark.skipif(not os.path.exists("/proc/self/timerslack_ns"), reason="Linux >= 4.6 only")
def test_precise_timers_sets_the_thread_slack():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the slack shown is the main thread's")
    before = _slack_ns()
    try:
        assert tk.precise_timers(1000) is True
        assert _slack_ns() == 1000
    finally:
        tk.precise_timers(before)
    assert _slack_ns() == before
