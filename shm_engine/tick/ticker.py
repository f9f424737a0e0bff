"""The tick worker: gathers the heartbeat table, runs the kernels, publishes an epoch.

Invariant: the tick worker is the only writer of the latch and the score
buffers.  Epoch ``E`` is written into buffer ``E & 1`` from the state carried
in buffer ``(E - 1) & 1`` (the last published epoch) and made visible by one
store of the latch.  Because the carried state lives in the segment, a
restarted worker resumes exactly where the last published epoch left off;
if it finds the latch odd (its predecessor died mid-write), ``write_begin``
returns that unfinished epoch and the same buffer is rewritten from scratch.

Memory ordering (see `shm_engine.core.ordering` and `shm_engine.core.seqlock`): the
buffer is filled by jitted code (`epoch.compute_epoch`: the gather, the
feedback and `kernels.tick` in one call) and by
Python numpy stores of the per-tick scalars, between the Python twins
``seqlock.write_begin`` and ``seqlock.write_end``.  We rely on x86-64 TSO plus
the opacity of each call into compiled code: every store of the jitted
functions has retired in program order before the function returns, the
Python stores that follow are separate C calls that no compiler moves, and
TSO never reorders a store with an older store.  So the odd latch value is
visible before any buffer store, and every buffer store before the even
value (pairs with ``read_begin``/``read_retry`` in the readers).  On a weakly
ordered CPU the latch stores would have to be `shm_engine.core.ordering`'s
release store and fence, in one jitted function around the fill.

Rules for callers: one `Ticker` per segment at a time (the supervisor only
starts a worker after the previous one has exited); ``now`` is
``time.monotonic()``, the clock the ingest stamps ``recv_time`` with and
schedulers stamp their error releases with.

Scheduler feedback (`shm_engine.core.claims`): each tick, right after the
heartbeat gather, `claims.gather_feedback` reads the claims segment into the
tick inputs' feedback columns (`Ticker.feedback`: ``rif``, ``fb_ok``,
``fb_err``, ``consec``, ``err_age`` of `kernels.TickInputs`), which are the
published columns of the buffer being written (one set of inputs per
buffer), with the counters it saw carried to the next tick and the number
of ejected nodes.  After the publish, every
`claims.LEASE_CHECK_INTERVAL_S`, the worker returns the claims of schedulers
that died (`claims.reap_dead_leases`) and their placement reservations, and
the reservations past their deadline (`shm_engine.core.placement`).
Without a claims segment (tests, an
engine created without one) the tick reads a private zeroed one: every node
has no scheduler traffic.  (Replay fills the same columns from its trace's
feedback lines instead.)

Events (`shm_engine.core.events`): after each publish the worker diffs the
states of the two buffers and appends the changes, with the reason column
the kernels wrote, to the events segment (`Ticker.events`); without one
(tests, replay) nothing is appended.

Reload (`shm_engine.core.paramsblock`): at the start of each tick the
worker compares the header's ``config_version`` with the one it uses; when
it moved, it adopts the pending parameter vector for this tick.  Every
published buffer carries the vector and version it was computed with.

Scheduling (`run_schedule`): deadlines are ``t0 + k * interval``, so the
cadence never drifts; a tick that ends after the next deadline counts one
overrun and the schedule skips to the first deadline still ahead instead of
bursting to catch up.  The worker sleeps until ``SPIN_S`` before a deadline
and yields the CPU in a loop for the rest, with the thread's timer slack cut
to 1 µs (`precise_timers`): a plain sleep to the deadline wakes up to the
default 50 µs slack plus the scheduler's wake-up latency late, which a 2 ms
tick cannot absorb.  Durations (µs) are kept over the last ``STATS_WINDOW``
ticks; the header gets the last and the running maximum after each publish,
and p50, p99 and the window's maximum on ticks 1, 2, 4, .. and then every
``SUMMARY_EVERY`` ticks (a percentile over the window costs about as much as
a tick at 10K nodes; these are monitoring values, outside the latch).
"""

from __future__ import annotations

import math
import mmap
import os
import signal
import time
from typing import NamedTuple

import numba
import numpy as np

import kernels
from kernels.columns import make_inputs
from kernels.params import N_PARAMS
from shm_engine.core import claims as claims_mod
from shm_engine.core import placement
from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.config import Config
from shm_engine.core.errors import EngineNotRunning, LayoutMismatch
from shm_engine.core.events import EventLog, EventSegment
from shm_engine.core.events import warm_up as warm_up_events
from shm_engine.core.layout import (
    FEEDBACK_COLUMNS,
    ClaimsViews,
    EventsViews,
    SegmentViews,
    layout_for,
    private_claims,
)
from shm_engine.core.paramsblock import read_pending
from shm_engine.core.rows import make_gather_cache
from shm_engine.core.runtime import EXIT_FAILED, EXIT_OK, log_event
from shm_engine.core.segment import Segment
from shm_engine.core.seqlock import check_sequence_word, write_begin, write_end
from shm_engine.tick.epoch import compute_epoch, compute_epoch_threads

__all__ = [
    "Ticker",
    "TickResult",
    "TickStats",
    "Feedback",
    "ticker_main",
    "warm_up",
    "STATS_WINDOW",
    "SUMMARY_EVERY",
    "SPIN_S",
    "precise_timers",
]

STATS_WINDOW = 2048
SUMMARY_EVERY = 64  # ticks between two percentile summaries in the header
SPIN_S = 100e-6  # yield instead of sleeping this close to a deadline


class TickResult(NamedTuple):
    """What one tick published."""

    epoch: int
    n_ranked: int
    pressure: float
    live: int
    registered: int
    torn: int  # slots whose row stayed inconsistent (kept last tick's view)
    duration_us: float  # write_begin .. write_end, wall of this process


class Feedback(NamedTuple):
    """The feedback columns of the tick inputs (f8 per slot; see
    `shm_engine.core.claims.gather_feedback` for their meaning)."""

    rif: np.ndarray
    fb_ok: np.ndarray
    fb_err: np.ndarray
    consec: np.ndarray
    err_age: np.ndarray


def feedback_columns(inputs) -> Feedback:
    """The feedback columns of tick inputs ``inputs`` (views, not copies)."""
    return Feedback(*(getattr(inputs, c) for c in FEEDBACK_COLUMNS))


class TickStats:
    """Tick durations over a rolling window, and the header fields they feed."""

    def __init__(self, window: int = STATS_WINDOW):
        self._ring = np.zeros(window, np.float64)
        self._n = 0
        self.last = 0.0

    def add(self, us: float) -> None:
        self._ring[self._n % self._ring.shape[0]] = us
        self._n += 1
        self.last = us

    def summary_due(self) -> bool:
        """Whether the tick just added should refresh the header's
        percentiles: ticks 1, 2, 4, .. SUMMARY_EVERY, then every SUMMARY_EVERY."""
        n = self._n
        return n > 0 and (n % SUMMARY_EVERY == 0 or (n < SUMMARY_EVERY and n & (n - 1) == 0))

    def summary(self) -> tuple[float, float, float, float]:
        """(last, p50, p99, max) in µs over the window; zeros before any tick."""
        n = min(self._n, self._ring.shape[0])
        if n == 0:
            return 0.0, 0.0, 0.0, 0.0
        w = self._ring[:n]
        p50, p99 = np.percentile(w, (50.0, 99.0))
        return self.last, float(p50), float(p99), float(w.max())


class Ticker:
    """Drives ticks over `SegmentViews` ``views`` (a live segment or a private mapping).

    ``tick(now)`` computes and publishes one epoch and updates the tick
    counters in the header; overruns are counted by the schedule, not here.
    ``claims``: the engine's claims segment (views), or None to tick on
    heartbeats alone; ``events``: its events segment (views), or None to
    log no events."""

    def __init__(
        self,
        views: SegmentViews,
        config: Config,
        claims: ClaimsViews | None = None,
        events: EventsViews | None = None,
    ):
        self.views = views
        self.config = config
        self.header = views.header
        self._latch = views.header.latch_seq
        check_sequence_word(self._latch)
        self.params = config.to_params()
        cap = views.layout.capacity
        inputs = make_inputs(cap)
        # A slot the gather cannot read consistently keeps its previous inputs
        # for one tick.  A just-started worker has none: infinite age makes
        # such a slot DEAD (score 0) for that tick, never a zero-load node.
        inputs.age[:] = np.inf
        # The feedback columns of the inputs are the published ones of the
        # buffer being written (written once, read by the kernels there), so
        # there is one set of inputs per buffer, sharing every other column.
        self._inputs = tuple(
            inputs._replace(**{c: b.views[c] for c in FEEDBACK_COLUMNS}) for b in views.buffers
        )
        # Which rows the inputs hold (the gather skips unchanged rows), and
        # the tick's work arrays: private, allocated once.
        self._gather_cache = make_gather_cache(cap)
        self._scratch = kernels.make_scratch(cap)
        # Threads of the per-node work (`epoch`): one runs the serial
        # compilation; more, the parallel one on numba's pool, capped at the
        # pool's size.
        # (numba.config sets its attributes at import: mypy cannot see them.)
        pool: int = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        self.threads = min(config.engine.tick_threads, pool)
        self._epoch = compute_epoch if self.threads == 1 else compute_epoch_threads
        if self.threads > 1:
            if "NUMBA_THREADING_LAYER" not in os.environ:
                # numba's own pool: its idle workers sleep, where OpenMP's
                # spin for a while after each tick and burn a core.
                numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]
            numba.set_num_threads(self.threads)
        self._max_hwm = 0
        self._whole_ticks = 0
        self.stats = TickStats()
        self.live_claims = claims is not None
        if claims is None:
            claims = private_claims(cap)
        elif claims.layout.capacity != cap:
            raise LayoutMismatch(
                f"claims segment has {claims.layout.capacity} slots, the scores segment {cap}"
            )
        self.claims = claims
        self._next_lease_check = -math.inf
        self.events = EventLog(events, cap, views.registry)
        #: The configuration version of `params` (0: the one given, no reload block).
        self.config_version = 0
        self._config_version_cell = views.header.config_version.data

    @property
    def epoch(self) -> int:
        """The last published epoch (0: none)."""
        return int(self._latch[0]) >> 1

    @property
    def inputs(self):
        """The tick inputs (`kernels.TickInputs`) of the last published epoch;
        their feedback columns are that epoch's buffer's."""
        return self._inputs[self.epoch & 1]

    @property
    def feedback(self) -> Feedback:
        """The feedback columns of `inputs` (views, not copies)."""
        return feedback_columns(self.inputs)

    def tick(self, now: float) -> TickResult:
        t_start = time.perf_counter()
        h = self.header
        if self._config_version_cell[0] != self.config_version:
            self.adopt_params()
        epoch = write_begin(self._latch)
        # Published state of epoch - 1 is the previous tick (all-UNREGISTERED
        # initial buffer 0 when epoch == 1).
        prev = self.views.buffers[(epoch - 1) & 1]
        nxt = self.views.buffers[epoch & 1]
        inp = self._inputs[epoch & 1]
        hwm = min(int(h.slot_hwm[0]), inp.active.shape[0])
        # Slots at or above every hwm so far never held a node: once both
        # buffers (and both input sets) were written whole, they are skipped
        # (`epoch`, "Empty slots above the high-water mark").
        self._max_hwm = max(self._max_hwm, hwm)
        limit = inp.active.shape[0] if self._whole_ticks < 2 else self._max_hwm
        self._whole_ticks += 1
        c, t, cache = self.claims, self.views.table, self._gather_cache
        reg = self.views.registry
        n_ranked, pressure, live, torn, sum_rif, sum_ok, sum_err, ejected = self._epoch(
            self.params,
            t,
            reg.slot_gen,
            reg.registered,
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
            self._scratch,
            cache.gen,
            cache.version,
            cache.recv_time,
            c.lease_ident,
            c.in_flight_flat,
            c.row_words,
            c.outcomes,
            float(now),
            hwm,
            limit,
            self.threads,
        )
        registered = int(nxt.out.counts.sum())
        nxt.epoch[0] = epoch
        nxt.tick_mono[0] = now
        nxt.tick_wall[0] = time.time()
        nxt.pressure[0] = pressure
        nxt.n_ranked[0] = n_ranked
        nxt.live[0] = live
        nxt.registered[0] = registered
        nxt.slot_hwm[0] = hwm
        nxt.ejected[0] = ejected
        nxt.params[:N_PARAMS] = self.params
        nxt.config_version[0] = self.config_version
        # Every buffer store above stays before this one (x86-64 TSO, see the
        # module docstring). Pairs with read_begin in the readers.
        write_end(self._latch)
        self.events.append(prev, nxt, inp.fresh, self.views.registry, hwm, epoch)
        us = (time.perf_counter() - t_start) * 1e6
        self.stats.add(us)
        h.tick_us_last[0] = us
        if self.stats.summary_due():
            _last, p50, p99, mx = self.stats.summary()
            h.tick_us_p50[0] = p50
            h.tick_us_p99[0] = p99
            h.tick_us_max[0] = mx
        elif us > h.tick_us_max[0]:
            h.tick_us_max[0] = us
        h.ticks[0] += 1
        h.ticker_alive_mono[0] = time.monotonic()
        if self.live_claims:
            ch = self.claims.header
            ch.released_ok[0] += sum_ok
            ch.released_err[0] += sum_err
            ch.in_flight[0] = int(sum_rif)
            if now >= self._next_lease_check:
                self.check_leases(now, hwm)
        return TickResult(
            epoch, int(n_ranked), float(pressure), int(live), registered, int(torn), us
        )

    def adopt_params(self) -> bool:
        """Take the header's pending score parameters (a reload) for the next
        tick; False if the block was being written (retried next tick)."""
        got = read_pending(self.header)
        if got is None:
            return False
        version, params = got
        self.params = params
        self.config_version = version
        log_event("INFO", "params_adopted", config_version=version)
        return True

    def score(self, prev, nxt) -> tuple[int, float, int]:
        """The kernels of a tick (docs/scoring.md, steps A-P) over ``self.inputs``:
        the carried state of buffer ``prev`` in, the state and outputs of
        buffer ``nxt`` out.  Returns (n_ranked, pressure, live).  `tick` runs
        the same kernels inside `compute_epoch`; alone, this is what the
        benchmark times as the kernels."""
        return kernels.tick(self.params, self.inputs, prev.state, nxt.state, nxt.out, self._scratch)

    def check_leases(self, now: float, hwm: int | None = None) -> tuple[int, int, int]:
        """Return the claims of schedulers that died (see
        `claims.reap_dead_leases`); (leases reaped, claims returned, leases in
        use).  `tick` calls it every `claims.LEASE_CHECK_INTERVAL_S`."""
        self._next_lease_check = now + claims_mod.LEASE_CHECK_INTERVAL_S
        if hwm is None:
            hwm = int(self.header.slot_hwm[0])
        # Reservations past their deadline, then those of dead leases (before
        # each lease is freed: a new holder starts from free entries).
        placement.expire_reservations(self.claims, time.monotonic_ns())
        placement.measure_rate(self.claims, now)
        return claims_mod.reap_dead_leases(
            self.claims, hwm, now, before_free=placement.return_lease_reservations
        )


def warm_up(threads: int = 1) -> None:
    """Compile (or load from numba's cache) everything a tick runs, on the
    exact dtypes and array kinds of a live segment, before the first tick;
    with ``threads`` > 1 also the threaded tick (`epoch`)."""
    kernels.warm_up()
    claims_mod.warm_up()
    warm_up_events()
    placement.warm_up()
    layout = layout_for(2)
    mm = mmap.mmap(-1, layout.size)
    views = SegmentViews(mm, layout)
    for b in views.buffers:
        b.state.state[:] = 255
    for n in sorted({1, threads}):
        t = Ticker(views, Config.from_dict({"engine": {"tick_threads": n}}))
        t.tick(0.0)
        t.tick(0.05)


# ------------------------------------------------------------------ schedule --
class Schedule:
    """Absolute deadlines ``t0 + k * interval``; skips missed ones."""

    def __init__(self, interval_s: float, t0: float):
        self.interval = interval_s
        self.t0 = t0
        self.k = 0

    @property
    def deadline(self) -> float:
        return self.t0 + self.k * self.interval

    def after_tick(self, end: float) -> bool:
        """Advance past a tick that ended at ``end``; True if it overran
        (ended after the next deadline)."""
        nxt = self.k + 1
        if end > self.t0 + nxt * self.interval:
            self.k = math.floor((end - self.t0) / self.interval) + 1
            return True
        self.k = nxt
        return False


def precise_timers(slack_ns: int = 1000) -> bool:
    """Cut the calling thread's timer slack (Linux ``PR_SET_TIMERSLACK``) so
    that a sleep ends within about ``slack_ns`` of its deadline instead of up
    to 50 µs after it.  Best effort: False where prctl is unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(slack_ns), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


_PR_SET_TIMERSLACK = 29


def run_schedule(
    ticker: Ticker,
    interval_s: float,
    should_stop,
    check_s: float,
    clock=time.monotonic,
    sleep=time.sleep,
    yield_cpu=os.sched_yield,
) -> None:
    """Tick on the schedule until ``should_stop()``; it is checked at least
    every ``check_s`` seconds while sleeping and after every tick.  Sleeps
    until `SPIN_S` before each deadline, then yields until it (``clock``,
    ``sleep`` and ``yield_cpu`` are for tests)."""
    h = ticker.header
    sched = Schedule(interval_s, clock())
    while not should_stop():
        wait = sched.deadline - clock()
        if wait > SPIN_S:
            sleep(min(wait - SPIN_S, check_s))
            continue  # re-check stop, then the deadline
        while clock() < sched.deadline:
            yield_cpu()
        ticker.tick(clock())
        if sched.after_tick(clock()):
            h.overruns[0] += 1


# -------------------------------------------------------------- entry point --
def ticker_main(name: str, config: Config, parent_pid: int) -> int:
    """Tick worker process: attach ``name``, warm up, tick until the parent
    dies, ``header.stopping`` is set, or SIGTERM.  Returns the exit code."""
    stop = {"signal": False}

    def on_term(_sig, _frame):
        stop["signal"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor coordinates shutdown
    try:
        seg = Segment.attach(name, readonly=False)
    except Exception as err:  # noqa: BLE001 - reported as an exit code
        log_event("ERROR", "ticker_attach_failed", name=name, error=repr(str(err)))
        return EXIT_FAILED
    claims_seg = None
    try:
        claims_seg = ClaimsSegment.attach(name, readonly=False)
    except EngineNotRunning as err:
        log_event("WARN", "claims_absent", name=name, error=repr(str(err)))
    except Exception as err:  # noqa: BLE001 - reported as an exit code
        log_event("ERROR", "ticker_attach_failed", name=name, error=repr(str(err)))
        seg.close()
        return EXIT_FAILED
    events_seg = None
    try:
        events_seg = EventSegment.attach(name, readonly=False)
    except EngineNotRunning as err:
        log_event("WARN", "events_absent", name=name, error=repr(str(err)))
    except Exception as err:  # noqa: BLE001 - reported as an exit code
        log_event("ERROR", "ticker_attach_failed", name=name, error=repr(str(err)))
        seg.close()
        if claims_seg is not None:
            claims_seg.close()
        return EXIT_FAILED
    ticker: Ticker | None = None
    try:
        warm_up(config.engine.tick_threads)
        ticker = Ticker(
            seg.views,
            config,
            claims_seg.views if claims_seg is not None else None,
            events_seg.views if events_seg is not None else None,
        )
        h = seg.views.header
        h.ticker_alive_mono[0] = time.monotonic()
        log_event(
            "INFO",
            "ticker_started",
            pid=os.getpid(),
            resume_epoch=ticker.epoch,
            threads=ticker.threads,
        )

        def should_stop() -> bool:
            return stop["signal"] or bool(h.stopping[0]) or os.getppid() != parent_pid

        precise_timers()
        run_schedule(
            ticker,
            config.engine.tick_interval_ms / 1000.0,
            should_stop,
            min(config.engine.parent_check_interval_s, 0.1),
        )
        log_event("INFO", "ticker_stopped", pid=os.getpid(), epoch=ticker.epoch)
        return EXIT_OK
    finally:
        ticker = None
        seg.close()
        if claims_seg is not None:
            claims_seg.close()
        if events_seg is not None:
            events_seg.close()
