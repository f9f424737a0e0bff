"""Faults: children killed under load, a stalled tick worker, a killed supervisor.

Each test runs a real ``shm-engine run`` (`support.engine.Engine`) fed by a
self-describing fleet (`support.fleet.sender_main`) and read by separate reader
processes (`support.fleet.reader_main`) that check every snapshot they copy
(`support.fleet.check_snapshot`): a snapshot mixing two epochs, or naming a
slot after another node, counts as torn.  Waits are polls with deadlines.
"""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import psutil
import pytest

from clients.reader import NothingPublished, ScoreReader
from shm_engine.core.segment import Segment
from support.engine import START_TIMEOUT_S, Engine, free_port, segment_exists, write_config
from support.fleet import (
    SPAWN,
    check_snapshot,
    node_name,
    node_params,
    pid_gone,
    reader_main,
    sender_main,
    start_procs,
)
from support.wait import wait_until

NODES = 200
SEND_PERIOD_S = 0.05  # 20 heartbeats per node per second
READERS = 2
# The promise: scoring resumes within 1 s of the restart delay.  It rests on
# the supervisor's warm spares (a cold start, importing numba and loading the
# kernels, takes 1-5 s on a busy 2-core machine), so each kill waits until
# the role's spare has said it is warm (`spare_ready`), then a random moment.
RESUME_S = 1.0
KILL_JITTER_S = (0.0, 1.0)


def _spare_warm(stderr: str, role: str) -> bool:
    """Every spare of ``role`` started so far has reported ``spare_ready``."""
    started = len(re.findall(rf"spare_started role={role}\b", stderr))
    return started > 0 and len(re.findall(rf"spare_ready role={role}\b", stderr)) == started


def _registry_rows(name: str) -> tuple[dict, np.ndarray]:
    """({slot: node id}, table rows (cpu, mem, avg_job_s) of those slots), read
    from the segment directly."""
    with Segment.attach(name, readonly=True) as seg:
        reg, t = seg.views.registry, seg.views.table
        slots = np.flatnonzero(reg.registered[:])
        ids = {int(s): bytes(reg.node_id[s]).rstrip(b"\0").decode() for s in slots}
        rows = np.stack([t.cpu[slots], t.mem[slots], t.avg_job_s[slots]], axis=1).copy()
    return ids, rows


def _rows_describe_their_nodes(ids: dict, rows: np.ndarray) -> bool:
    want = np.stack(node_params([int(n[3:]) for n in ids.values()]), axis=1)
    return np.array_equal(rows, want)


def _restart_delay(stderr: str, role: str, pid: int) -> float:
    m = re.search(
        rf"child_exited role={role} pid={pid} code=signal_9 \S+ restart_in_s=(\S+)", stderr
    )
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def fleet(reap):
    """``fleet(endpoint, name)``: one sender of NODES nodes and READERS reader
    processes; returns (stop, pause, results, readers).  All stopped after."""
    made = []

    def start(endpoint: str, name: str):
        stop, pause = SPAWN.Event(), SPAWN.Event()
        results = SPAWN.Queue()
        senders = start_procs(sender_main, [(endpoint, 0, NODES, SEND_PERIOD_S, stop, pause)])
        readers = start_procs(
            reader_main, [(name, stop, results, NODES, seed) for seed in range(READERS)]
        )
        for p in senders + readers:
            reap(p)
        made.append(stop)
        return stop, pause, results, readers

    yield start
    for stop in made:
        stop.set()


def _collect(stop, results, readers) -> list[dict]:
    stop.set()
    out = [results.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(30)
    return out


def test_kill9_of_either_child_under_load_keeps_snapshots_whole_and_state_in_memory(
    shm_name, tmp_path, reap, fleet
):
    port = free_port()
    eng = Engine(
        shm_name, write_config(tmp_path / "e.toml", port, tick_ms=50, capacity=256), tmp_path, reap
    )
    eng.wait_ready()
    stop, pause, results, readers = fleet(f"tcp://127.0.0.1:{port}", shm_name)
    reader = ScoreReader.attach(shm_name)
    rng = np.random.default_rng(20240611)
    resumes = []
    try:

        def all_registered():
            try:
                return sum(n is not None for n in reader.snapshot().nodes) == NODES
            except NothingPublished:
                return False

        wait_until(all_registered, START_TIMEOUT_S, "the fleet registered", period=0.02)
        ids0, rows0 = _registry_rows(shm_name)
        assert sorted(ids0.values()) == [node_name(i) for i in range(NODES)]
        assert _rows_describe_their_nodes(ids0, rows0)

        for role in ("ticker", "ingest", "ticker", "ingest"):
            wait_until(
                lambda role=role: _spare_warm(eng.stderr, role),
                START_TIMEOUT_S,
                f"the {role} spare warm",
                period=0.02,
            )
            time.sleep(rng.uniform(*KILL_JITTER_S))  # a random moment, under load
            st = eng.status()
            pid = st["children"][role]["pid"]
            frames0 = st["ingest"]["frames"]
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: pid_gone(pid), 10, f"{role} {pid} dead", period=0.001)
            if role == "ticker":
                e0 = reader.epoch  # nothing publishes until the restart
                wait_until(
                    lambda e0=e0: reader.epoch > e0,
                    START_TIMEOUT_S,
                    "an epoch after the kill",
                    period=0.001,
                )
            else:
                # The tick worker scores on from the table meanwhile; the new
                # ingest must take the next frame.
                wait_until(
                    lambda frames0=frames0: eng.status()["ingest"]["frames"] > frames0,
                    START_TIMEOUT_S,
                    "a frame after the kill",
                    period=0.001,
                )
            resume = time.monotonic() - t_kill
            delay = _restart_delay(eng.stderr, role, pid)
            resumes.append((role, round(resume, 3), delay))
            assert resume < delay + RESUME_S, (resumes, eng.stderr)

            # Same nodes in the same slots, rows still describing their nodes.
            ids, rows = _registry_rows(shm_name)
            assert ids == ids0, role
            assert _rows_describe_their_nodes(ids, rows), role

        st = eng.status()
        assert st["children"]["ticker"]["restarts"] == 2
        assert st["children"]["ingest"]["restarts"] == 2
        # The new ingests adopted the registry rather than starting empty.
        assert eng.stderr.count("ingest_started") == 3
        assert len(re.findall(rf"ingest_started .* registered={NODES}\b", eng.stderr)) == 2
        # Scoring goes on: every node live and HEALTHY again.
        wait_until(
            lambda: reader.snapshot().counts["healthy"] == NODES, 30, "all healthy", period=0.05
        )
        assert check_snapshot(reader.snapshot(), NODES) == []
    finally:
        reader.close()
        got = _collect(stop, results, readers)
    print(f"\nresume after kill (role, seconds, restart delay): {resumes}")
    print(f"readers: {[{k: r[k] for k in ('snapshots', 'scores', 'torn')} for r in got]}")
    for r in got:
        assert r["torn"] == 0 and r["backwards"] == 0, r["problems"]
        assert r["snapshots"] > 20 and r["scores"] > 0, r
    assert eng.stop() == 0
    assert not segment_exists(shm_name)


def test_stalled_tick_worker_is_stale_to_readers_who_keep_the_last_snapshot(
    shm_name, tmp_path, reap, fleet
):
    port = free_port()
    eng = Engine(
        shm_name, write_config(tmp_path / "e.toml", port, tick_ms=50, capacity=256), tmp_path, reap
    )
    eng.wait_ready()
    stop, pause, results, readers = fleet(f"tcp://127.0.0.1:{port}", shm_name)
    reader = ScoreReader.attach(shm_name)
    pid = eng.status()["children"]["ticker"]["pid"]
    try:
        wait_until(
            lambda: sum(n is not None for n in reader.snapshot().nodes) == NODES,
            START_TIMEOUT_S,
            "the fleet registered",
            period=0.02,
        )
        assert not reader.is_stale(1.0)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: reader.is_stale(0.5), 10, "stale after SIGSTOP", period=0.01)
            before = reader.snapshot()
            assert reader.age_s > 0.5
            assert check_snapshot(before, NODES) == []
            # Still stalled: the same epoch and scores, from one read to the next.
            wait_until(lambda: reader.age_s > 1.0, 10, "a second of stall")
            again = reader.snapshot()
            assert again.epoch == before.epoch
            assert np.array_equal(again.score, before.score)
            assert reader.score(node_name(7)) == before.scores()[node_name(7)] > 0
            # The supervisor does not take a stopped worker for a dead one.
            assert eng.status()["children"]["ticker"] == {"pid": pid, "restarts": 0}
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: not reader.is_stale(0.5), 10, "fresh after SIGCONT", period=0.01)
        assert reader.snapshot().epoch > before.epoch
    finally:
        reader.close()
        got = _collect(stop, results, readers)
    for r in got:
        assert r["torn"] == 0 and r["backwards"] == 0, r["problems"]
    assert eng.stop() == 0
    assert not segment_exists(shm_name)


def test_kill9_of_the_supervisor_children_exit_and_next_run_reclaims(shm_name, tmp_path, reap):
    port = free_port()
    config = write_config(tmp_path / "e.toml", port, tick_ms=50, capacity=64)
    eng = Engine(shm_name, config, tmp_path, reap)
    st = eng.wait_ready()
    children = [st["children"]["ingest"]["pid"], st["children"]["ticker"]["pid"]]
    assert all(p > 0 for p in children)
    # Every process the supervisor started: the two children and their warm spares.
    wait_until(lambda: len(psutil.Process(eng.proc.pid).children()) >= 4, 30, "spares started")
    children = sorted(set(children) | {c.pid for c in psutil.Process(eng.proc.pid).children()})
    eng.proc.kill()
    eng.proc.wait(10)
    # parent_check_interval_s = 0.1 in the test config: each child notices
    # within a poll period; the deadline allows for a loaded machine.
    wait_until(lambda: all(pid_gone(p) for p in children), 10, "every child exited")
    assert segment_exists(shm_name)  # SIGKILL leaves it; the next run reclaims it

    (tmp_path / "second").mkdir()
    again = Engine(shm_name, config, tmp_path / "second", reap)
    st2 = again.wait_ready()
    assert st2["pid"] == again.proc.pid
    assert st2["children"]["ingest"]["restarts"] == st2["children"]["ticker"]["restarts"] == 0
    assert st2["nodes"]["registered"] == 0 and st2["ingest"]["frames"] == 0  # started clean
    assert again.stop() == 0
    assert not segment_exists(shm_name)
