"""End to end: ``shm-engine run`` fed by a plain pyzmq PUSH socket, read by
`ScoreReader` and ``shm-engine status --json``, stopped by SIGTERM.

1. Every kind of bad frame is rejected under its own reason while good nodes
   keep scoring, unchanged.
2. A steady heartbeat sequence, with scheduler claims held and released,
   gives the same states and scores live as through
   `shm_engine.tick.replay.replay` with the same feedback as trace lines.
"""

from __future__ import annotations

import json
import time

import pytest
import zmq

from clients.reader import NothingPublished, ScoreReader
from shm_engine.core.config import load_config
from shm_engine.core.states import NodeState
from shm_engine.tick.replay import replay
from shm_engine.wire.encode import encode_batch, encode_json
from shm_engine.wire.format import HEADER, MAGIC, RECORD_SIZE, REJECT_REASONS
from support.engine import START_TIMEOUT_S, Engine, cli, free_port, segment_exists, write_config
from support.wait import wait_until


@pytest.fixture
def push():
    """``push(port)``: a connected PUSH socket, closed after the test."""
    ctx = zmq.Context()
    socks = []

    def connect(port: int) -> zmq.Socket:
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(f"tcp://127.0.0.1:{port}")
        socks.append(s)
        return s

    yield connect
    for s in socks:
        s.close(0)
    ctx.term()


def hb(node: str, **kw) -> dict:
    # cpu 0.49 -> g_cpu 0.5; mem 0.475 -> g_mem 0.5; queue 0 -> g_wait 1 and
    # P_i 0; every node's rate 1 / 1.0 = R -> g_rate 1; no outcomes -> g_succ 1:
    # score = (0.20*0.5 + 0.15*0.5 + 0.25*1 + 0.15*1 + 0.15*1) / 0.90
    #       = 0.725 / 0.9, every tick.
    d = dict(node=node, cpu=0.49, mem=0.475, queue=0.0, avg_job_s=1.0)
    d.update(kw)
    return d


GOOD_SCORE = 0.725 / 0.9
GOOD = [hb(f"good-{i}") for i in range(4)]  # fills capacity 4
MAX_FRAME = 4096

# (what, frame, reason) -- one frame of each kind of bad input.
BAD_FRAMES = [
    ("bad JSON", b'{"node": "x", ', "malformed_frame"),
    ("bad UTF-8", b'{"node": "\xff\xfe", "cpu": 0.1}', "malformed_frame"),
    ("wrong magic", b"SHMX" + bytes(12), "malformed_frame"),
    (
        "wrong version",
        HEADER.pack(MAGIC, 3, RECORD_SIZE, 1, 0) + bytes(RECORD_SIZE),
        "unsupported_version",
    ),
    ("truncated binary", encode_batch([hb("t")])[:-10], "malformed_frame"),
    ("oversized frame", b"[" + b" " * MAX_FRAME + b"]", "frame_too_large"),
    ("array element not an object", b"[1]", "malformed_heartbeat"),
    ("missing field", json.dumps({"node": "m", "cpu": 0.1}).encode(), "missing_field"),
    ("bad field", json.dumps(hb("b", cpu=2.0)).encode(), "bad_field"),
    ("bad node id", json.dumps(hb("")).encode(), "bad_node_id"),
    ("unknown field", json.dumps(hb("u", color="red")).encode(), "unknown_field"),
    ("registry full", json.dumps(hb("one-too-many")).encode(), "registry_full"),
]


def test_bad_frames_are_counted_while_good_nodes_keep_scoring(shm_name, tmp_path, reap, push):
    port = free_port()
    eng = Engine(
        shm_name,
        write_config(tmp_path / "e.toml", port, capacity=4, max_frame_bytes=MAX_FRAME),
        tmp_path,
        reap,
    )
    eng.wait_ready()
    sock = push(port)
    # Binary batch for two nodes, JSON for the other two: both kinds score.
    good_frames = [encode_batch(GOOD[:2])] + [encode_json(h) for h in GOOD[2:]]

    def send_good():
        for f in good_frames:
            sock.send(f)

    reader = ScoreReader.attach(shm_name)
    try:

        def all_scored():
            send_good()
            try:
                snap = reader.snapshot()
            except NothingPublished:
                return False
            return sorted(n for n in snap.nodes if n) == sorted(h["node"] for h in GOOD)

        wait_until(all_scored, START_TIMEOUT_S, "the good nodes scored", period=0.05)

        before = eng.status()
        for what, frame, reason in BAD_FRAMES:
            want = eng.status()["ingest"]["rejected"][reason] + 1
            sock.send(frame)

            def counted(reason=reason, want=want):
                send_good()  # keep the good nodes live meanwhile
                return eng.status()["ingest"]["rejected"][reason] >= want

            wait_until(counted, 10, f"{what} counted as {reason}", period=0.02)
            snap = reader.snapshot()
            for h in GOOD:
                node = h["node"]
                assert reader.state(node) == NodeState.HEALTHY, what
                assert reader.score(node) == pytest.approx(GOOD_SCORE, abs=1e-12), what
            assert snap.counts["healthy"] == 4 and len(snap.ranked) == 4, what

        # Scoring went on through all of it.
        epoch = reader.epoch
        wait_until(lambda: reader.epoch > epoch + 2, 10, "more epochs")
        assert reader.snapshot().scores() == pytest.approx(
            {h["node"]: GOOD_SCORE for h in GOOD}, abs=1e-12
        )
    finally:
        reader.close()

    # The same counters through the command line.
    out = cli("status", "--name", shm_name, "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    expected = {r: 0 for r in REJECT_REASONS}
    for _what, _frame, reason in BAD_FRAMES:
        expected[reason] += 1
    assert st["ingest"]["rejected"] == expected
    assert st["nodes"]["registered"] == 4 and st["nodes"]["healthy"] == 4
    assert st["ingest"]["accepted"] > before["ingest"]["accepted"]
    assert st["ingest"]["frames"] >= before["ingest"]["frames"] + len(BAD_FRAMES)
    assert st["name"] == shm_name and st["pid"] == eng.proc.pid
    assert st["ingest_endpoint"] == f"tcp://127.0.0.1:{port}"
    assert st["epoch"] > before["epoch"]
    assert st["last_tick_age_s"] < 5.0
    assert 0 < st["tick_us"]["p50"] <= st["tick_us"]["p99"] <= st["tick_us"]["max"]
    assert set(st["children"]) == {"ingest", "ticker"}

    assert eng.stop() == 0
    assert not segment_exists(shm_name)


# Steady fleet: every node sends the same heartbeat every tick.  Chosen away
# from every threshold so a different first tick (live nodes may register a
# tick apart) cannot change a hysteresis path, only decay away.  Outcomes in
# heartbeats are all-ok or trip the breaker whatever the window holds, and
# the window forgets within a few ticks (error_half_life_s 0.05 at 20 ms
# ticks: d = 0.5 ** 0.4), so the number of heartbeats that landed in each
# tick does not change the last tick's numbers.
STEADY = [
    hb("healthy-plain"),
    hb(
        "healthy-full",
        cpu=0.3,
        mem=0.4,
        queue=4.0,
        avg_job_s=0.5,
        throughput=20.0,
        ok=50,
        err=0,
        io=0.2,
        p50_ms=10.0,
        p95_ms=14.0,
    ),
    hb("degraded", cpu=0.9, mem=0.8, queue=20.0, avg_job_s=1.0, throughput=5.0),
    hb("overloaded-tripped", cpu=0.99),
    hb("failing-fast", ok=5, err=30),
    hb("ejected"),
    # 4 slots: wait = load 8 * avg_job_s 1 / 4 = 2 s, rate 4 / 1 = 4 (R);
    # resources are checked, not scored.
    hb("four-slots", queue=8.0, slots=4, resources={"cpu": 32.0, "gpu": 1.0}),
]
TICKS = 80
# Scheduler feedback, live through claims and in replay as trace lines:
# "healthy-plain" has 6 jobs in flight (load = max(qema 0, 6 - 1 slot, 0) = 5,
# wait 5 s), "ejected" had 5 error releases in a row (ejected for ejection_s).
IN_FLIGHT = {"healthy-plain": 6}
ERRORS = {"ejected": 5}
E2E_SCORE = "[score]\nerror_half_life_s = 0.05\nejection_s = 1000.0\n"


def test_live_matches_replay_with_feedback(shm_name, tmp_path, reap, push):
    port = free_port()
    config_path = write_config(tmp_path / "e.toml", port, tick_ms=20, capacity=16, extra=E2E_SCORE)
    eng = Engine(shm_name, config_path, tmp_path, reap)
    eng.wait_ready()
    sock = push(port)
    frame = json.dumps(STEADY).encode()  # one frame: every node in the same tick
    names = sorted(h["node"] for h in STEADY)
    reader = ScoreReader.attach(shm_name)
    held = []
    try:
        sock.send(frame)
        wait_until(
            lambda: sorted(n for n in reader.snapshot().nodes if n) == names,
            30,
            "all nodes registered",
            period=0.005,
        )
        for node, n in IN_FLIGHT.items():
            held += [reader.claim(node) for _ in range(n)]
        for node, n in ERRORS.items():
            for _ in range(n):
                reader.claim(node).release(ok=False)
        start = reader.epoch
        last_sent = start
        while reader.epoch < start + TICKS:
            if reader.epoch != last_sent:  # about one heartbeat per node per tick
                last_sent = reader.epoch
                sock.send(frame)
            time.sleep(0.002)
        live = reader.snapshot()
        status = eng.status()
    finally:
        for c in held:
            c.release(ok=True)
        reader.close()
    assert eng.stop() == 0
    assert not segment_exists(shm_name)

    trace = [dict(h, tick=k) for k in range(TICKS) for h in STEADY]
    trace[len(STEADY) : len(STEADY)] = [
        {"tick": 0, "feedback": node, "rif": n} for node, n in IN_FLIGHT.items()
    ] + [{"tick": 0, "feedback": node, "err": n, "consec": n} for node, n in ERRORS.items()]
    recs = [r for r in replay(trace, load_config(config_path)) if r["tick"] == TICKS - 1]
    assert sorted(r["node"] for r in recs) == names
    for r in recs:
        s = live.nodes.index(r["node"])
        assert NodeState(int(live.state[s])).name.lower() == r["state"], r["node"]
        assert float(live.score[s]) == pytest.approx(r["score"], abs=1e-6), r["node"]
        assert float(live.raw[s]) == pytest.approx(r["raw"], abs=1e-6), r["node"]
        assert float(live.qema[s]) == pytest.approx(r["qema"], abs=1e-6), r["node"]
        assert float(live.wait[s]) == pytest.approx(r["wait"], abs=1e-6), r["node"]
        assert float(live.liveness[s]) == r["liveness"] == 1.0
    assert live.pressure == pytest.approx(recs[0]["pressure"], abs=1e-6)
    by_node = {r["node"]: r for r in recs}
    # The feedback counted: the claims are the load, the errors an ejection.
    assert by_node["healthy-plain"]["wait"] == 5.0
    assert by_node["four-slots"]["wait"] == 2.0
    assert by_node["ejected"]["raw"] == 0.0 and by_node["ejected"]["state"] == "overloaded"
    assert live.ejected == status["ejected"] == 1
    # The fleet covers more than one state, so the comparison means something.
    assert {r["state"] for r in recs} >= {"healthy", "degraded", "overloaded"}
