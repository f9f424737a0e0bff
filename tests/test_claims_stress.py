"""Claims under load: 4 scheduler processes x 250,000 claim/release pairs with
random outcomes on 100 nodes, with the real tick worker process running.

Every scheduler (`claims_util.scheduler_main`) holds one claim on a node of
its own ("hold") from before the start to its end, keeps up to 8 claims open,
releases them in random order with random outcomes, and reports exactly what
it did.  Afterwards every in-flight count must be 0 and the engine's ok and
error counts per node must equal the sums of the reports, both as the
counters read now and as the tick accumulated them.

In the second test one scheduler is killed with SIGKILL halfway, holding
claims.  It logs what it completed into shared memory after every
operation, so its totals are known but for the one operation it was in when
it died.  Its claims must come back within 1 s (measured from the kill to
the tick worker's return of them), and the others' counts must stay exact.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from clients.reader import ScoreReader
from shm_engine.core.config import Config, with_overrides
from shm_engine.tick.ticker import ticker_main
from support.claims import MAX_OPEN, ClaimsEngine, scheduler_main

N_NODES = 100
N_SCHEDULERS = 4
PAIRS = 250_000
TICK_MS = 20
SPAWN = mp.get_context("spawn")
NODES = [f"n-{i:03d}" for i in range(N_NODES)]


def wait_until(predicate, timeout, what, period=0.002):
    """Poll ``predicate`` until true, TimeoutError naming ``what`` otherwise
    (the sleep is the poll period, leaving the CPU to the schedulers; the
    result is always decided by the predicate)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(period)


@pytest.fixture
def engine(shm_name, reap):
    """100 registered nodes and a "hold" node, and the tick worker process."""
    cfg = with_overrides(Config(), {"engine.tick_interval_ms": TICK_MS})
    eng = ClaimsEngine(shm_name, capacity=128, max_schedulers=8, config=cfg)
    try:
        for node in NODES + ["hold"]:
            eng.send(node)
        ticker = SPAWN.Process(target=ticker_main, args=(shm_name, cfg, os.getpid()))
        reap(ticker)
        ticker.start()
        h = eng.views.header
        wait_until(lambda: int(h.latch_seq[0]) >> 1 >= 1, 120, "the first tick")
        yield eng
        h.stopping[0] = 1
        ticker.join(30)
    finally:
        eng.close()


def _start(name, reap, seeds, logs=None):
    """Scheduler processes, each holding a claim on "hold" (so its lease is
    taken before ``go``) until it ends."""
    go, results = SPAWN.Event(), SPAWN.Queue()
    procs = []
    for i, seed in enumerate(seeds):
        log = logs[i] if logs else None
        hold = "hold"
        p = SPAWN.Process(
            target=scheduler_main, args=(name, NODES, PAIRS, seed, go, results, log, hold)
        )
        reap(p)
        p.start()
        procs.append(p)
    return procs, go, results


def _wait_leases(eng, n, timeout=120):
    ident = eng.claims.views.lease_ident
    wait_until(lambda: np.count_nonzero(ident) == n, timeout, f"{n} leases in use")


def _engine_counts(reader):
    fb = [reader.feedback(node) for node in NODES]
    return (np.array([f.ok for f in fb]), np.array([f.err for f in fb]), [f.in_flight for f in fb])


def _tick_totals_reach(eng, ok, err, timeout=30):
    h = eng.claims.views.header
    wait_until(
        lambda: (int(h.released_ok[0]), int(h.released_err[0])) == (ok, err),
        timeout,
        f"the tick to count {ok} ok and {err} error releases "
        f"(has {int(h.released_ok[0])}, {int(h.released_err[0])})",
    )


def test_four_schedulers_250k_pairs_each_leave_exact_counts(engine, reap):
    t0 = time.monotonic()
    procs, go, results = _start(engine.name, reap, seeds=range(1, N_SCHEDULERS + 1))
    _wait_leases(engine, N_SCHEDULERS)  # all attached and claiming-ready
    go.set()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    elapsed = time.monotonic() - t0
    ok = sum(g[1] for g in got)
    err = sum(g[2] for g in got)
    assert ok.sum() + err.sum() == N_SCHEDULERS * PAIRS
    assert all(g[4] == 0 for g in got), "no release may be stale"
    with ScoreReader.attach(engine.name) as reader:
        e_ok, e_err, in_flight = _engine_counts(reader)
        assert reader.in_flight("hold") == 0
    assert in_flight == [0] * N_NODES
    np.testing.assert_array_equal(e_ok, ok)
    np.testing.assert_array_equal(e_err, err)
    _tick_totals_reach(engine, int(ok.sum()) + N_SCHEDULERS, int(err.sum()))  # + the holds
    h = engine.claims.views.header
    assert (int(h.abandoned_claims[0]), int(h.stale_releases[0]), int(h.claims_dropped[0])) == (
        0,
        0,
        0,
    )
    _wait_leases(engine, 0, timeout=10)  # the exited schedulers' leases are freed
    print(f"\n4 x {PAIRS} pairs: {elapsed:.1f} s from start to all reports")


def test_a_scheduler_killed_midway_returns_its_claims_within_a_second(
    engine, reap, record_property
):
    n = N_NODES
    logs = [None, None, None, SPAWN.RawArray("q", 2 * n + 2)]
    procs, go, results = _start(engine.name, reap, seeds=(11, 12, 13, 14), logs=logs)
    victim, log = procs[3], np.frombuffer(logs[3], np.int64)
    _wait_leases(engine, N_SCHEDULERS)
    go.set()
    wait_until(lambda: log[2 * n] >= PAIRS // 2, 300, "the victim's half-way point")
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    h = engine.claims.views.header
    wait_until(lambda: int(h.abandoned_claims[0]) > 0, 10, "the victim's claims to come back")
    returned_after = time.monotonic() - killed
    record_property("claims_returned_after_s", returned_after)
    print(f"\nvictim's claims returned {returned_after * 1000:.0f} ms after SIGKILL")
    assert returned_after <= 1.0

    got = [results.get(timeout=300) for _ in procs[:3]]
    for p in procs[:3]:
        p.join(60)
        assert p.exitcode == 0
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    done_ok, done_err = log[:n].copy(), log[n : 2 * n].copy()
    open_at_death = int(log[2 * n + 1])
    assert 1 <= open_at_death <= MAX_OPEN + 1
    ok = sum(g[1] for g in got)
    err = sum(g[2] for g in got)
    assert all(g[4] == 0 for g in got)
    with ScoreReader.attach(engine.name) as reader:
        e_ok, e_err, in_flight = _engine_counts(reader)
        assert reader.in_flight("hold") == 0
    assert in_flight == [0] * n  # nothing left behind
    # The survivors' counts are exact: what the engine counted beyond them and
    # the victim's log is at most the one release the victim died in.
    extra_ok, extra_err = e_ok - ok - done_ok, e_err - err - done_err
    assert (extra_ok >= 0).all() and (extra_err >= 0).all()
    assert extra_ok.sum() + extra_err.sum() <= 1
    abandoned = int(h.abandoned_claims[0])
    assert open_at_death - 1 <= abandoned <= open_at_death + 1
    _tick_totals_reach(engine, int(e_ok.sum()) + 3, int(e_err.sum()))  # + 3 holds released
    assert int(h.stale_releases[0]) == 0
    assert int(h.leases_reaped[0]) >= 1
