"""On loopback: three engines with their score feeds and one federating mirror.

Real processes all the way: ``shm-engine run`` (supervisor, ingest, tick
worker, feed child) per zone, ``shm-engine mirror --from ...`` for all three,
heartbeats over ZeroMQ, readers and a scheduler on the mirror.

1. A reader on the mirror sees every zone's nodes with the scores of their
   engines, exactly.
2. Claims made on the mirror reach the owning engine (its in-flight count).
3. SIGKILL of one engine makes its zone stale within 1 s; the other zones
   keep serving (exact, picked); its restart resynchronises it.
4. Frames dropped on purpose (the mirror's test hook) are detected as gaps
   and repaired by full frames.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from clients.reader import ScoreReader
from shm_engine.feed.mirror import read_excluded, read_mirror_status
from support.engine import START_TIMEOUT_S, Engine, free_port, write_config
from support.feed import beat_frame, compare_when_aligned, feed_extra, mirror_main, zone_state
from support.wait import wait_until

ZONES = ("eu", "us", "ap")
NODES = 6
TICK_MS = 100


@pytest.fixture
def pusher():
    ctx = zmq.Context()
    socks: dict[str, zmq.Socket] = {}

    def send(endpoint: str, frame: bytes) -> None:
        s = socks.get(endpoint)
        if s is None:
            s = socks[endpoint] = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
        s.send(frame)

    yield send
    for s in socks.values():
        s.close(0)
    ctx.term()


def _start(tmp_path, name, zone, feed_port, back_port, reap) -> Engine:
    cfg = write_config(
        tmp_path / f"{zone}.toml",
        "*",
        tick_ms=TICK_MS,
        extra=feed_extra(feed_port, back_port),
        engine_extra="warm_spares = false",
    )
    return Engine(name, cfg, tmp_path, reap)


def _aligned(engine: str, mirror: str, i: int):
    """A predicate: `compare_when_aligned` found no difference."""
    got = compare_when_aligned(engine, mirror, i)
    return got == [] or None


def test_three_zones_through_a_federating_mirror(tmp_path, shm_names, reap, pusher):
    names = [shm_names() for _ in ZONES]
    mname = shm_names()
    ports = [(free_port(), free_port()) for _ in ZONES]
    engines = [
        _start(tmp_path, n, z, *p, reap) for n, z, p in zip(names, ZONES, ports, strict=True)
    ]
    endpoints = [e.wait_ready(START_TIMEOUT_S)["ingest_endpoint"] for e in engines]
    with open(tmp_path / "mirror.out", "wb") as out, open(tmp_path / "mirror.err", "wb") as err:
        mirror = subprocess.Popen(
            [sys.executable, "-m", "shm_engine", "mirror", "--name", mname, "--capacity", "192"]
            + [
                a
                for z, (fp, _b) in zip(ZONES, ports, strict=True)
                for a in ("--from", f"{z}=tcp://127.0.0.1:{fp}")
            ],
            stdout=out,
            stderr=err,
        )
    reap(mirror)
    k = [0]

    def beat(zones=range(3)):
        k[0] += 1
        for i in zones:
            pusher(endpoints[i], beat_frame(ZONES[i], NODES, k[0]))
        return True

    try:
        wait_until(
            lambda: beat() and (tmp_path / "mirror.out").read_text().count("ready"),
            START_TIMEOUT_S,
            "the mirror's first publish",
            period=0.05,
        )
        # 1. Every zone's nodes, with their engine's scores, exactly.
        for i, name in enumerate(names):
            wait_until(
                lambda i=i, name=name: beat() and _aligned(name, mname, i),
                20,
                f"zone {ZONES[i]} exact",
                period=0.03,
            )
        with ScoreReader.attach(mname) as r:
            nodes = {n for n in r.snapshot().nodes if n is not None}
            assert nodes == {f"{z}-n{i}" for z in ZONES for i in range(NODES)}
            # 2. A scheduler on the mirror: its claim reaches the owning engine.
            c = r.claim("us-n2")
            wait_until(
                lambda: beat() and engines[1].status()["claims"]["in_flight"] == 1,
                10,
                "the claim upstream",
                period=0.02,
            )
            wait_until(
                lambda: engines[1].status()["feed"]["feedback"]["mirrors"] == 1,
                5,
                "one mirror holding a lease upstream",
            )
            with ScoreReader.attach(names[1]) as up:
                wait_until(
                    lambda: beat() and up.feedback("us-n2").in_flight == 1,
                    5,
                    "rif upstream",
                    period=0.02,
                )
            c.release(ok=True)
            wait_until(
                lambda: beat() and engines[1].status()["claims"]["in_flight"] == 0,
                10,
                "the release upstream",
                period=0.02,
            )
            # 3. SIGKILL of "ap": stale within 1 s, the others keep serving.
            assert zone_state(mname, 2) == "fresh"
            engines[2].kill()
            killed = time.monotonic()
            wait_until(
                lambda: beat((0, 1)) and zone_state(mname, 2) == "stale",
                3.0,
                "ap stale",
                period=0.01,
            )
            assert time.monotonic() - killed < 1.0
            assert read_excluded(mname)[128:192].all()
            rng = np.random.default_rng(3)
            picked = {r.pick(rng=rng) for _ in range(200)}
            assert picked and not any(p.startswith("ap-") for p in picked)
            for i in (0, 1):
                wait_until(
                    lambda i=i: beat((0, 1)) and _aligned(names[i], mname, i),
                    10,
                    f"{ZONES[i]} still exact",
                    period=0.03,
                )
            assert [z["state"] for z in read_mirror_status(mname)["zones"]] == [
                "fresh",
                "fresh",
                "stale",
            ]
            # ... and its restart resynchronises it.
            engines[2] = _start(tmp_path, names[2], "ap2", *ports[2], reap)
            endpoints[2] = engines[2].wait_ready(START_TIMEOUT_S)["ingest_endpoint"]
            wait_until(
                lambda: beat() and zone_state(mname, 2) == "fresh",
                20,
                "ap fresh again",
                period=0.05,
            )
            wait_until(
                lambda: beat() and _aligned(names[2], mname, 2), 20, "ap exact again", period=0.03
            )
            assert not read_excluded(mname).any()
    finally:
        mirror.terminate()
        mirror.wait(20)
        for e in engines:
            e.stop()
    assert mirror.returncode == 0


def test_dropped_frames_are_detected_and_repaired(tmp_path, shm_names, reap, pusher):
    name, mname = shm_names(), shm_names()
    feed_port, back_port = free_port(), free_port()
    eng = _start(tmp_path, name, "eu", feed_port, back_port, reap)
    endpoint = eng.wait_ready(START_TIMEOUT_S)["ingest_endpoint"]
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(
        target=mirror_main,
        args=(mname, [("eu", f"tcp://127.0.0.1:{feed_port}")], 7, 0.5, ready),
    )
    proc.start()
    reap(proc)
    k = [0]

    def beat():
        k[0] += 1
        pusher(endpoint, beat_frame("eu", NODES, k[0]))
        return True

    try:
        wait_until(
            lambda: beat() and ready.is_set(), START_TIMEOUT_S, "the mirror ready", period=0.05
        )
        # Every 7th frame is lost: each loss is a gap, each repaired by a full frame.
        wait_until(
            lambda: beat() and read_mirror_status(mname)["zones"][0]["gaps"] >= 3,
            30,
            "three gaps",
            period=0.05,
        )
        zone = read_mirror_status(mname)["zones"][0]
        assert zone["snapshots"] >= zone["gaps"]  # the first, then one per gap at least
        assert eng.status()["feed"]["snapshot_requests"] >= 3
        wait_until(
            lambda: beat() and _aligned(name, mname, 0), 20, "exact after repairs", period=0.03
        )
    finally:
        proc.terminate()
        proc.join(20)
        eng.stop()


def test_curve_feed_and_a_restarted_feed_child(tmp_path, shm_names, reap, pusher):
    import os
    import signal

    import zmq.auth

    from shm_engine.feed.mirror import CurveClient
    from shm_engine.ops.keys import make_keys

    server_pub, server_sec = make_keys(str(tmp_path / "server"), "feed")
    client_pub, client_sec = make_keys(str(tmp_path / "mirrors"), "mirror-1")
    name, mname = shm_names(), shm_names()
    feed_port, back_port = free_port(), free_port()
    cfg = write_config(
        tmp_path / "curve.toml",
        "*",
        tick_ms=TICK_MS,
        extra=feed_extra(feed_port, back_port)
        + f'\n[feed.curve]\nserver_secret_key_file = "{server_sec}"\n'
        f'authorized_keys_dir = "{tmp_path / "mirrors"}"\n',
        engine_extra="warm_spares = false",
    )
    eng = Engine(name, cfg, tmp_path, reap)
    endpoint = eng.wait_ready(START_TIMEOUT_S)["ingest_endpoint"]
    s_pub, _ = zmq.auth.load_certificate(server_pub)
    c_pub, c_sec = zmq.auth.load_certificate(client_sec)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(
        target=mirror_main,
        args=(mname, [("eu", f"tcp://127.0.0.1:{feed_port}")], 0, 0.5, ready),
        kwargs={"curve": CurveClient(s_pub, c_pub, c_sec)},
    )
    proc.start()
    reap(proc)
    # A subscriber with a key the feed does not know.
    zctx = zmq.Context()
    stranger = zctx.socket(zmq.SUB)
    stranger.setsockopt(zmq.LINGER, 0)
    o_pub, o_sec = zmq.curve_keypair()
    stranger.curve_serverkey, stranger.curve_publickey, stranger.curve_secretkey = (
        s_pub,
        o_pub,
        o_sec,
    )
    stranger.setsockopt(zmq.SUBSCRIBE, b"")
    stranger.connect(f"tcp://127.0.0.1:{feed_port}")
    k = [0]

    def beat():
        k[0] += 1
        pusher(endpoint, beat_frame("eu", NODES, k[0]))
        return True

    try:
        wait_until(lambda: beat() and ready.is_set(), START_TIMEOUT_S, "mirror ready", period=0.05)
        wait_until(lambda: beat() and _aligned(name, mname, 0), 20, "exact over CURVE", period=0.03)
        frames = read_mirror_status(mname)["zones"][0]["frames"]
        wait_until(
            lambda: beat() and read_mirror_status(mname)["zones"][0]["frames"] >= frames + 10,
            10,
            "ten more frames",
            period=0.03,
        )
        assert stranger.poll(0) == 0  # the unknown key got none of them
        # The feed child dies: the supervisor restarts it, a new stream; resync.
        st = eng.status()
        old_pid, snaps = st["feed"]["pid"], read_mirror_status(mname)["zones"][0]["snapshots"]
        os.kill(old_pid, signal.SIGKILL)
        wait_until(
            lambda: beat() and eng.status()["feed"]["restarts"] >= 1,
            30,
            "the feed child restarted",
            period=0.05,
        )
        wait_until(
            lambda: beat() and read_mirror_status(mname)["zones"][0]["snapshots"] > snaps,
            30,
            "a full frame of the new stream",
            period=0.03,
        )
        wait_until(lambda: beat() and _aligned(name, mname, 0), 20, "exact again", period=0.03)
    finally:
        stranger.close(0)
        zctx.term()
        proc.terminate()
        proc.join(20)
        eng.stop()
