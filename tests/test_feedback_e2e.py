"""Real clients against a real engine: does routing on `pick()` + claims beat
a dispatcher's own "fewest outstanding jobs" policy?

Eight spawned worker processes serve jobs with sleep-based service times, two
service threads each (``slots`` 2), and send a heartbeat every 150 ms through
`HeartbeatClient` (``queue`` = jobs waiting, ``avg_job_s`` = the service
time; no ``ok``/``err``: the error signal comes from the dispatcher's
claims).  Five are normal (100 ms a job), two slow (500 ms), one fails fast
(1 ms, 80 % errors); one normal worker is SIGKILLed halfway.  The dispatcher
(this process) sends the same seeded Poisson arrivals twice: once routed by
``reader.pick()`` with a claim per attempt, released with the outcome, and
once by fewest outstanding jobs (no engine input).  A job travels over one
pipe per worker, so a job sent to the killed worker fails at once on the
broken connection; a failed job is retried on another node at most twice.
Each run has its own eight workers (both sets spawned at the start); the
fewest-outstanding set sends no heartbeats, as that policy reads none.
The claims entry points are loaded before the clock starts (a cold numba
cache would otherwise stall the first claim for seconds).

Measured and asserted (printed with ``-s``): end-to-end p99 (retries
included) of the pick run below the fewest-outstanding run's; the failing
worker scored 0 (not HEALTHY/DEGRADED) within 1 s of its first error
release; at most 2 jobs sent to the killed worker after its death.
The default score parameters are used throughout.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import wait as conn_wait

import numpy as np

from clients.reader import ScoreReader
from shm_engine.core.states import NodeState
from support.engine import Engine, free_port, write_config
from support.wait import wait_until

SEED = 20261130
RATE = 60.0  # jobs per second (Poisson)
DURATION_S = 8.0  # arrivals per run
KILL_AT_S = DURATION_S / 2
SLOTS = 2
HB_PERIOD_S = 0.15
MAX_ATTEMPTS = 3  # the first try and at most two retries
NORMAL, SLOW, FAILING = 0.1, 0.5, 0.001
FAIL_P = 0.8

# name -> (service time, error probability); "n4" is the one killed.
WORKERS = {
    **{f"n{i}": (NORMAL, 0.0) for i in range(5)},
    "s0": (SLOW, 0.0),
    "s1": (SLOW, 0.0),
    "f0": (FAILING, FAIL_P),
}
VICTIM = "n4"
FAILER = "f0"


# ----------------------------------------------------------------- worker --
def _worker(
    node: str, conn, service_s: float, fail_p: float, endpoint: str | None, seed: int
) -> None:
    """Serve jobs ``(job_id, attempt)`` from ``conn`` with ``SLOTS`` threads;
    answer ``(job_id, attempt, ok)``; heartbeat every HB_PERIOD_S."""
    from clients import HeartbeatClient

    rng = np.random.default_rng(seed)
    waiting: deque = deque()
    cond = threading.Condition()
    send_lock = threading.Lock()
    stop = threading.Event()

    def serve():
        while True:
            with cond:
                while not waiting and not stop.is_set():
                    cond.wait()
                if stop.is_set():
                    return
                job = waiting.popleft()
                ok = bool(rng.random() >= fail_p)
            time.sleep(service_s)  # the simulated service time
            with send_lock:
                try:
                    conn.send((*job, ok))
                except OSError:
                    return

    def heartbeat():
        with HeartbeatClient(endpoint) as hb:
            while not stop.is_set():
                with cond:
                    q = len(waiting)
                hb.send(node, cpu=0.3, mem=0.4, queue=float(q), avg_job_s=service_s, slots=SLOTS)
                stop.wait(HB_PERIOD_S)

    threads = [threading.Thread(target=serve, daemon=True) for _ in range(SLOTS)]
    if endpoint is not None:
        threads.append(threading.Thread(target=heartbeat, daemon=True))
    for t in threads:
        t.start()
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                break
            if job is None:
                break
            with cond:
                waiting.append(job)
                cond.notify()
    finally:
        stop.set()
        with cond:
            cond.notify_all()
        for t in threads:
            t.join(timeout=2)


def _spawn_workers(reap, endpoint: str | None, tag: str) -> dict:
    ctx = mp.get_context("spawn")
    workers = {}
    for i, (node, (service_s, fail_p)) in enumerate(WORKERS.items()):
        mine, theirs = ctx.Pipe(duplex=True)
        p = ctx.Process(
            target=_worker,
            name=f"worker-{tag}-{node}",
            daemon=True,
            args=(node, theirs, service_s, fail_p, endpoint, SEED + i),
        )
        p.start()
        reap(p)
        theirs.close()
        workers[node] = (p, mine)
    return workers


# ------------------------------------------------------------- dispatcher --
def _arrivals() -> np.ndarray:
    rng = np.random.default_rng(SEED)
    gaps = rng.exponential(1.0 / RATE, size=int(RATE * DURATION_S * 2))
    t = np.cumsum(gaps)
    return t[t < DURATION_S]


def _dispatch(workers: dict, policy: str, reader: ScoreReader | None) -> dict:
    """Run the arrivals through ``policy`` ("pick" or "fewest"); returns the
    measurements."""
    rng = np.random.default_rng(SEED + 1)
    conns = {node: c for node, (_p, c) in workers.items()}
    node_of = {c: node for node, c in conns.items()}
    outstanding = {node: {} for node in workers}  # node -> {(job, attempt): claim}
    arrivals = _arrivals()
    start_t = {}  # job -> monotonic send time
    tried = {}  # job -> [nodes]
    latency = {}  # job -> (seconds, ok)
    pending: deque = deque()  # jobs waiting for a node
    dead: set = set()
    m = {
        "sent_to_dead": 0,
        "lost_in_flight": 0,
        "first_err_failer": None,
        "zero_tick_failer": None,
        "kill_t": None,
        "attempts": 0,
        "no_node": 0,
    }
    seen_epoch = [-1]

    def choose(job):
        excl = tried[job]
        if policy == "pick":
            return reader.pick(exclude=excl, rng=rng)
        cands = [n for n in workers if n not in excl]
        if not cands:
            return None
        least = min(len(outstanding[n]) for n in cands)
        best = [n for n in cands if len(outstanding[n]) == least]
        return best[int(rng.integers(len(best)))]

    def finish(node, key, ok):
        job, _attempt = key
        claim = outstanding[node].pop(key)
        if claim is not None:
            claim.release(ok=ok)
            if not ok and node == FAILER and m["first_err_failer"] is None:
                m["first_err_failer"] = time.monotonic()
        if ok or len(tried[job]) >= MAX_ATTEMPTS:
            latency[job] = (time.monotonic() - start_t[job], ok)
        else:
            send(job)

    def send(job):
        node = choose(job)
        if node is None:
            m["no_node"] += 1
            if len(tried[job]) >= len(workers) or policy != "pick":
                latency[job] = (time.monotonic() - start_t[job], False)
            else:
                pending.append(job)  # no node ranked: try again after the next tick
            return
        tried[job].append(node)
        key = (job, len(tried[job]))
        claim = reader.claim(node) if policy == "pick" else None
        outstanding[node][key] = claim
        m["attempts"] += 1
        if node in dead:
            m["sent_to_dead"] += 1

        try:
            conns[node].send(key)
        except OSError:  # broken connection: the worker is gone
            finish(node, key, False)

    def on_readable(conn):
        node = node_of[conn]
        try:
            job, attempt, ok = conn.recv()
        except (EOFError, OSError):  # the worker died: its jobs in flight fail
            conn_list.remove(conn)
            m["lost_in_flight"] += len(outstanding[node])
            for key in list(outstanding[node]):
                finish(node, key, False)
            return
        finish(node, (job, attempt), ok)

    def watch_failer():
        if reader is None or m["first_err_failer"] is None or m["zero_tick_failer"] is not None:
            return
        if reader.epoch == seen_epoch[0]:
            return
        snap = reader.snapshot()
        seen_epoch[0] = snap.epoch
        slot = snap.nodes.index(FAILER)
        state = NodeState(int(snap.state[slot]))
        if (
            snap.tick_mono >= m["first_err_failer"]
            and float(snap.score[slot]) == 0.0
            and state not in (NodeState.HEALTHY, NodeState.DEGRADED)
        ):
            m["zero_tick_failer"] = (snap.tick_mono, state.name)

    conn_list = list(conns.values())
    t0 = time.monotonic()
    i = 0
    while i < len(arrivals) or any(outstanding.values()) or pending:
        now = time.monotonic() - t0
        if m["kill_t"] is None and now >= KILL_AT_S:
            victim = workers[VICTIM][0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(timeout=10)
            assert victim.exitcode == -signal.SIGKILL
            dead.add(VICTIM)
            m["kill_t"] = time.monotonic() - t0
        while i < len(arrivals) and arrivals[i] <= now:
            start_t[i], tried[i] = t0 + arrivals[i], []
            send(i)
            i += 1
        for _ in range(len(pending)):
            send(pending.popleft())
        watch_failer()
        nxt = arrivals[i] - (time.monotonic() - t0) if i < len(arrivals) else 0.05
        for conn in conn_wait(conn_list, timeout=max(0.0, min(nxt, 0.005))):
            on_readable(conn)
        if time.monotonic() - t0 > DURATION_S + 20:
            raise TimeoutError(
                f"{policy}: jobs still outstanding 20 s after the last arrival: "
                f"{ {n: len(o) for n, o in outstanding.items()} }"
            )
    lat = np.array([v[0] for v in latency.values()])
    first = [tried[j][0] for j in latency]
    m["first_to_slow"] = sum(1 for n in first if WORKERS[n][0] == SLOW)
    m.update(
        jobs=len(latency),
        failed=sum(1 for v in latency.values() if not v[1]),
        p50=float(np.percentile(lat, 50)),
        p99=float(np.percentile(lat, 99)),
    )
    return m


def _stop_workers(workers: dict) -> None:
    for p, conn in workers.values():
        if p.is_alive():
            try:
                conn.send(None)
            except OSError:
                pass
    for p, conn in workers.values():
        p.join(timeout=10)
        conn.close()


# ------------------------------------------------------------------- test --
def test_pick_with_claims_against_fewest_outstanding(shm_name, tmp_path, reap):
    port = free_port()
    eng = Engine(
        shm_name, write_config(tmp_path / "e.toml", port, tick_ms=20, capacity=16), tmp_path, reap
    )
    endpoint = f"tcp://127.0.0.1:{port}"
    picked_workers = _spawn_workers(reap, endpoint, "pick")
    fewest_workers = _spawn_workers(reap, None, "fewest")
    eng.wait_ready()
    reader = ScoreReader.attach(shm_name)
    try:
        wait_until(
            lambda: sorted(n for n in reader.snapshot().nodes if n) == sorted(WORKERS),
            60,
            "every worker's heartbeat scored",
            period=0.01,
        )
        wait_until(
            lambda: all(reader.state(n) == NodeState.HEALTHY for n in WORKERS) or None,
            10,
            "every worker healthy",
            period=0.01,
        )
        # Map the claims segment and load its compiled entry points (numba's
        # cache) before the clock starts: not part of any job's latency.
        assert all(reader.in_flight(n) == 0 for n in WORKERS)
        pick = _dispatch(picked_workers, "pick", reader)
    finally:
        _stop_workers(picked_workers)
        reader.close()
    # Spawned at the start alongside the others; they sent no heartbeats.
    wait_until(
        lambda: all(p.is_alive() for p, _c in fewest_workers.values()),
        60,
        "the second set of workers running",
    )
    try:
        fewest = _dispatch(fewest_workers, "fewest", None)
    finally:
        _stop_workers(fewest_workers)

    eject_s = (
        pick["zero_tick_failer"][0] - pick["first_err_failer"]
        if pick["zero_tick_failer"] and pick["first_err_failer"]
        else None
    )
    for name, m in (("pick+claims", pick), ("fewest outstanding", fewest)):
        print(
            f"\n{name}: jobs {m['jobs']} attempts {m['attempts']} failed {m['failed']} "
            f"p50 {m['p50'] * 1e3:.1f} ms p99 {m['p99'] * 1e3:.1f} ms; killed at "
            f"{m['kill_t']:.2f} s, lost in flight {m['lost_in_flight']}, sent to it after "
            f"its death {m['sent_to_dead']}; first tries on a slow worker {m['first_to_slow']}; "
            f"no node {m['no_node']}"
        )
    print(
        f"failing worker: first error release -> first tick scoring it 0: "
        f"{'never' if eject_s is None else f'{eject_s * 1e3:.0f} ms'} "
        f"({pick['zero_tick_failer'] and pick['zero_tick_failer'][1]})"
    )

    assert eject_s is not None and eject_s <= 1.0, eject_s
    assert pick["sent_to_dead"] <= 2, pick["sent_to_dead"]
    assert pick["p99"] < fewest["p99"], (pick["p99"], fewest["p99"])
