"""Placement under a race: 4 placer processes on scarce capacity (demand 3x
supply), with the real tick worker process running.

16 nodes of 4 CPUs and 8 GB; every job asks for 1 CPU and 1 GB, and each
placer holds up to 48 placements, so the 4 of them want 192 CPUs of the 64
there are: most attempts race for the last free CPUs, and many find none
(`Unschedulable`).  The test process plays the ingest (heartbeats, so the
nodes stay live) and samples the reservation words all the while:

- at every sample, on every node, reserved <= allocatable (never over-commit);
- every `EVERY` attempts all placers stand still at a barrier, and the
  totals balance exactly: the units reserved on each node are the units the
  placers say they hold there (each logs its holdings into shared memory
  after every operation), and so are the open reservations and claims;
- at the end everything is released: nothing reserved, nothing in flight,
  no release stale.

The CI variant makes 4 x 6,000 attempts; the full one (``-m slow``) 10^6.
In the second test a process holding placements is killed with SIGKILL: its
reservations come back within 1 s (the tick worker's lease check), and the
racing survivors' totals still balance.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from shm_engine.core import placement as core_placement
from shm_engine.core.config import Config, with_overrides
from shm_engine.tick.ticker import ticker_main
from tests.support.placement import JOB_UNITS, PlaceEngine, holder_main, node_heartbeat, placer_main

N_NODES = 16
CPU_PER_NODE = 4
N_PLACERS = 4
MAX_HELD = 48  # 4 x 48 = 192 jobs of 1 CPU for 64 CPUs: demand 3 x supply
EVERY = 1000
TICK_MS = 20
SPAWN = mp.get_context("spawn")
NODES = [f"n-{i:02d}" for i in range(N_NODES)]


def _heartbeats(eng) -> None:
    eng.send_batch([node_heartbeat(n, resources={"cpu": CPU_PER_NODE, "mem_gb": 8}) for n in NODES])


def wait_until(predicate, timeout, what, eng=None, period=0.002):
    """Poll ``predicate`` until true, TimeoutError naming ``what`` otherwise;
    with ``eng``, heartbeats every second meanwhile, so the nodes stay live
    however slowly the placer processes start (the sleep is the poll period;
    the result is decided by the predicate)."""
    deadline = time.monotonic() + timeout
    beat = time.monotonic()
    while not predicate():
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        if eng is not None and now - beat > 1.0:
            _heartbeats(eng)
            beat = now
        time.sleep(period)


def _collect(results, procs, n, sampler, timeout=600) -> list:
    """``n`` reports from ``results``, sampling meanwhile; fails if a
    process died without reporting, or on the timeout."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        sampler.check_no_overcommit()
        if not results.empty():
            got.append(results.get())
            continue
        dead = [p.exitcode for p in procs if not p.is_alive() and p.exitcode != 0]
        assert not dead, f"a placer died: exit codes {dead}"
        assert time.monotonic() < deadline, f"{len(got)}/{n} reports after {timeout}s"
    return got


@pytest.fixture
def engine(shm_name, reap):
    cfg = with_overrides(Config(), {"engine.tick_interval_ms": TICK_MS})
    eng = PlaceEngine(shm_name, capacity=32, max_schedulers=8, max_reservations=64, config=cfg)
    try:
        _heartbeats(eng)
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


class Sampler:
    """Reads the reservation words of the engine (the test process's own
    mappings) and checks them."""

    def __init__(self, eng):
        self.eng = eng
        self.cv = eng.claims.views
        self.gens = eng.views.registry.slot_gen
        self.alloc = eng.views.table.alloc
        self.samples = 0
        self.last_beat = time.monotonic()

    def units(self) -> np.ndarray:
        return core_placement.reserved_units(self.cv, self.gens, N_NODES)[:, :2].astype(np.int64)

    def check_no_overcommit(self) -> None:
        u = self.units()
        a = self.alloc[:N_NODES, :2].astype(np.int64)
        over = np.argwhere(u > a)
        assert not len(over), f"over-commit at sample {self.samples}: {over.tolist()}, {u}, {a}"
        self.samples += 1
        if time.monotonic() - self.last_beat > 1.0:  # keep the nodes live
            _heartbeats(self.eng)
            self.last_beat = time.monotonic()

    def check_balance(self, logs) -> None:
        held = sum(log[:N_NODES] for log in logs)
        n_held = sum(int(log[N_NODES]) for log in logs)
        u = self.units()
        np.testing.assert_array_equal(u[:, 0], held)
        np.testing.assert_array_equal(u[:, 1], held // JOB_UNITS[0] * JOB_UNITS[1])
        opened = core_placement.open_reservations(self.cv, self.gens, N_NODES)
        assert int(opened.sum()) == n_held


def _race(engine, reap, attempts: int):
    logs_raw = [SPAWN.RawArray("q", N_NODES + 2) for _ in range(N_PLACERS)]
    logs = [np.frombuffer(r, np.int64) for r in logs_raw]
    go, results = SPAWN.Event(), SPAWN.Queue()
    barrier = SPAWN.Barrier(N_PLACERS + 1)
    arrived = SPAWN.Value("q", 0)
    procs = []
    for i in range(N_PLACERS):
        p = SPAWN.Process(
            target=placer_main,
            args=(
                engine.name,
                N_NODES,
                attempts,
                MAX_HELD,
                100 + i,
                go,
                barrier,
                arrived,
                EVERY,
                logs_raw[i],
                results,
            ),
        )
        reap(p)
        p.start()
        procs.append(p)
    ident = engine.claims.views.lease_ident
    wait_until(lambda: np.count_nonzero(ident) == N_PLACERS, 120, "every placer's lease", engine)
    sampler = Sampler(engine)
    t0 = time.monotonic()
    go.set()
    checkpoints = attempts // EVERY
    done = 0
    deadline = time.monotonic() + 3600
    while done < checkpoints:
        sampler.check_no_overcommit()
        if arrived.value >= N_PLACERS * (done + 1):
            sampler.check_balance(logs)  # every placer stands at the barrier
            done += 1
            barrier.wait(60)
        assert time.monotonic() < deadline and all(p.is_alive() for p in procs)
    got = _collect(results, procs, N_PLACERS, sampler)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    elapsed = time.monotonic() - t0
    placed = sum(g[1] for g in got)
    unschedulable = sum(g[2] for g in got)
    assert sum(g[4] for g in got) == N_PLACERS * attempts
    assert all(g[3] == 0 for g in got), "no release may be stale"
    assert placed > 0 and unschedulable > 0, "capacity must have been scarce"
    sampler.check_balance(logs)  # all released: nothing reserved
    assert sampler.units().sum() == 0
    h = engine.claims.views.header
    assert int(h.placements[0]) == placed == int(h.reservations_released[0])
    assert int(h.reservations_stale[0]) == 0
    print(
        f"\n{N_PLACERS} x {attempts} attempts in {elapsed:.1f} s: {placed} placed, "
        f"{unschedulable} unschedulable, {int(h.place_conflicts[0])} CAS lost, "
        f"{sampler.samples} samples, {checkpoints} balanced checkpoints"
    )


def test_four_placers_on_scarce_capacity_never_overcommit(engine, reap):
    _race(engine, reap, attempts=6_000)


@pytest.mark.slow
def test_four_placers_a_million_attempts_never_overcommit(engine, reap):
    _race(engine, reap, attempts=250_000)


def test_a_killed_placer_returns_its_reservations_within_a_second(engine, reap):
    log_raw = SPAWN.RawArray("q", N_NODES + 2)
    log = np.frombuffer(log_raw, np.int64)
    go = SPAWN.Event()
    victim = SPAWN.Process(target=holder_main, args=(engine.name, N_NODES, 20, go, log_raw))
    reap(victim)
    victim.start()
    wait_until(go.is_set, 120, "the victim to place its jobs", engine)
    sampler = Sampler(engine)
    sampler.check_balance([log])
    assert sampler.units()[:, 0].sum() == 20 * JOB_UNITS[0]
    # Racing survivors keep placing meanwhile.
    logs_raw = [SPAWN.RawArray("q", N_NODES + 2) for _ in range(2)]
    go2, results = SPAWN.Event(), SPAWN.Queue()
    barrier, arrived = SPAWN.Barrier(1), SPAWN.Value("q", 0)
    others = []
    for i in range(2):
        p = SPAWN.Process(
            target=placer_main,
            args=(
                engine.name,
                N_NODES,
                3000,
                MAX_HELD,
                200 + i,
                go2,
                barrier,
                arrived,
                0,
                logs_raw[i],
                results,
            ),
        )
        reap(p)
        p.start()
        others.append(p)
    ident = engine.claims.views.lease_ident
    wait_until(lambda: np.count_nonzero(ident) == 3, 120, "the survivors' leases", engine)
    go2.set()
    logs = [np.frombuffer(r, np.int64) for r in logs_raw]
    wait_until(
        lambda: all(lg[N_NODES + 1] >= 500 for lg in logs), 300, "the race under way", engine
    )
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    h = engine.claims.views.header
    wait_until(lambda: int(h.reservations_reaped[0]) >= 20, 10, "the victim's reservations", engine)
    returned_after = time.monotonic() - killed
    print(f"\nvictim's reservations returned {returned_after * 1000:.0f} ms after SIGKILL")
    assert returned_after <= 1.0
    assert int(h.reservations_reaped[0]) == 20
    got = _collect(results, others, 2, sampler)
    for p in others:
        p.join(60)
        assert p.exitcode == 0
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    assert all(g[3] == 0 for g in got)
    assert sampler.units().sum() == 0  # the victim's 20 and the survivors' all returned
    assert core_placement.open_reservations(sampler.cv, sampler.gens, N_NODES).sum() == 0
