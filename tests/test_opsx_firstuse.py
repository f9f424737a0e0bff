"""First use: `run --bind` without a config file, `attach(wait=True)`, the
per-node reader calls, optional fields as None, `HeartbeatClient.leave`
(in-process at the ingest, and end to end: unranked at the next tick, with
its event), the exported exceptions, and `shm-engine events`.
"""

import json
import os
import subprocess
import sys
import time

import pytest

import clients
from shm_engine.core.config import Config
from shm_engine.core.errors import ShmEngineError
from shm_engine.core.segment import Segment
from shm_engine.ingest.process import Ingest
from shm_engine.wire.encode import encode_json
from shm_engine.wire.format import REJECT_REASONS
from shm_engine.wire.leave import decode_leave, encode_leave, is_leave_frame
from support.engine import START_TIMEOUT_S, cli, free_port
from support.wait import wait_until

HB = dict(cpu=0.2, mem=0.3, queue=0.0, avg_job_s=0.5)


# ---------------------------------------------------------------- the wire --
@pytest.mark.parametrize(
    ("frame", "want"),
    [
        (b'{"leave":"n1"}', (b"n1", None)),
        (b'{ "leave" : "web-7/a" }', (b"web-7/a", None)),
        (b'{"leave":"bad id"}', (None, "bad_node_id")),
        (b'{"leave":""}', (None, "bad_node_id")),
        (b'{"leave":7}', (None, "bad_node_id")),
        (b'{"leave":"n1","cpu":0.5}', (None, "unknown_field")),
        (b'{"leave":"n1"', (None, "malformed_frame")),
    ],
)
def test_decode_leave(frame, want):
    assert is_leave_frame(frame)
    key, reason, _detail = decode_leave(frame)
    assert (key, reason) == want


def test_heartbeats_are_not_leaves():
    assert not is_leave_frame(encode_json({"node": "leave", **HB}))
    assert not is_leave_frame(b"[" + b'{"leave":"n1"}' + b"]")
    assert encode_leave("n1") == b'{"leave":"n1"}'


def test_ingest_frees_the_slot_of_a_leaving_node(shm_name):
    cfg = Config.from_dict({"ingest": {"allow_nodes": ["n*"]}})
    with Segment.create(shm_name, capacity=4) as seg:
        ing = Ingest(seg.views, cfg)
        assert ing.handle_frame(encode_json({"node": "n1", **HB}), 1.0) == 1
        assert ing.registry.get(b"n1") == 0
        gen = int(seg.views.registry.slot_gen[0])
        h = seg.views.header
        assert ing.handle_frame(encode_leave("n1"), 1.1) == 1
        assert ing.registry.get(b"n1") == -1 and seg.views.registry.registered[0] == 0
        assert int(seg.views.registry.slot_gen[0]) > gen
        assert ing.handle_frame(encode_leave("n1"), 1.2) == 1  # again: nothing to do, accepted
        assert ing.handle_frame(encode_leave("x1"), 1.3) == 0  # outside allow_nodes
        assert ing.handle_frame(b'{"leave":"a b"}', 1.4) == 0
        rejects = dict(zip(REJECT_REASONS, h.rejects.tolist(), strict=False))
        assert rejects["node_not_allowed"] == 1 and rejects["bad_node_id"] == 1
        assert int(h.ingest_left[0]) == 2
        assert int(h.ingest_accepted[0]) + sum(h.rejects.tolist()) == int(h.ingest_heartbeats[0])
        # A later heartbeat registers the node anew.
        assert ing.handle_frame(encode_json({"node": "n1", **HB}), 1.5) == 1
        assert ing.registry.get(b"n1") == 0


def test_coalesced_json_run_keeps_a_leave_apart(shm_name):
    with Segment.create(shm_name, capacity=16) as seg:
        ing = Ingest(seg.views, Config())
        frames = [encode_json({"node": f"n{i}", **HB}) for i in range(10)]
        ing.handle_frames(frames, 1.0)
        run = [encode_json({"node": f"n{i}", **HB}) for i in range(5)]
        run += [encode_leave("n3")] + [encode_json({"node": f"n{i}", **HB}) for i in range(6, 10)]
        assert ing.handle_frames(run, 2.0) == 10
        assert ing.registry.get(b"n3") == -1 and len(ing.registry) == 9
        assert int(seg.views.header.ingest_left[0]) == 1


def test_client_validates_and_drops_none(pull):
    sock, endpoint = pull
    with clients.HeartbeatClient(endpoint) as hb:
        assert hb.send("n1", io=None, throughput=None, zone=None, **HB)
        with pytest.raises(clients.InvalidHeartbeat, match="missing_field"):
            hb.send("n1", cpu=None, mem=0.3, queue=0.0, avg_job_s=0.5)
        with pytest.raises(clients.InvalidHeartbeat, match="bad_node_id"):
            hb.leave("no spaces")
        with pytest.raises(clients.InvalidHeartbeat, match="bad_node_id"):
            hb.leave(17)  # type: ignore[arg-type]
        assert hb.leave("n1")
    frames = [sock.recv() for _ in range(2)]
    assert frames[1] == b'{"leave":"n1"}'
    assert b"io" not in frames[0] or frames[0][:4] == b"SHMH"  # binary: io absent


def test_every_exception_of_the_public_calls_is_exported():
    names = set(clients.__all__)
    for exc in (
        "ShmEngineError",
        "EngineNotRunning",
        "EngineStopped",
        "UntrustedSegment",
        "LayoutMismatch",
        "NothingPublished",
        "UnknownNode",
        "ReadContention",
        "SchedulerLimitReached",
        "LeaseRevoked",
        "ClaimAlreadyReleased",
        "InvalidHeartbeat",
    ):
        assert exc in names
        cls = getattr(clients, exc)
        assert issubclass(cls, ShmEngineError), exc
    for name in clients.__all__:
        assert getattr(clients, name) is not None


def test_attach_wait_times_out_naming_the_wait(shm_name):
    t0 = time.monotonic()
    with pytest.raises(clients.EngineNotRunning, match=r"waited 0\.3 s"):
        clients.ScoreReader.attach(shm_name, wait=True, timeout=0.3)
    assert time.monotonic() - t0 < 10


# ------------------------------------------------------------- end to end --
def test_run_bind_without_config_then_first_use(tmp_path, shm_name, reap):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shm_engine", "run", "--name", shm_name, "--bind", endpoint],
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    reap(proc)
    # Attach at once: the engine is still starting (no segment, or no tick yet).
    reader = clients.ScoreReader.attach(shm_name, wait=True, timeout=START_TIMEOUT_S)
    try:
        wait_until(lambda: "ready\n" in out.read_text(), START_TIMEOUT_S, "ready")
        st = json.loads(cli("status", "--name", shm_name, "--json").stdout)
        assert st["ingest_endpoint"] == endpoint
        followed = tmp_path / "follow.out"
        with open(followed, "wb") as fo:
            follower = subprocess.Popen(
                [sys.executable, "-m", "shm_engine", "events", "--name", shm_name]
                + ["--follow", "--json", "--node", "drain"],
                stdout=fo,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        reap(follower)
        with clients.HeartbeatClient(endpoint) as hb:
            for node in ("keep", "drain"):
                hb.send(
                    node,
                    zone="eu-1",
                    labels={"rack": "r7"},
                    io=None,
                    p50_ms=None,
                    p95_ms=None,
                    **HB,
                )
        wait_until(
            lambda: {n for n, _ in reader.top(5)} == {"keep", "drain"}, 30, "both nodes ranked"
        )
        assert reader.zone("drain") == "eu-1" and reader.labels("drain") == {"rack": "r7"}
        assert reader.liveness("drain") == 1.0
        assert 0.0 <= reader.node_age_s("drain") < 30.0
        with pytest.raises(clients.UnknownNode):
            reader.zone("nobody")
        epoch = reader.epoch
        with clients.HeartbeatClient(endpoint) as hb:
            assert hb.leave("drain")
        wait_until(lambda: [n for n, _ in reader.top(5)] == ["keep"], 30, "drain unranked")
        # Unranked by the first tick after the leave arrived (no dead_after_s wait).
        assert reader.epoch - epoch < 60
        with pytest.raises(clients.UnknownNode):
            reader.score("drain")

        def drained():
            r = cli("events", "--name", shm_name, "--json", "--node", "drain")
            rows = [json.loads(line) for line in r.stdout.splitlines()]
            return rows if any(x["to_state"] == "unregistered" for x in rows) else None

        rows = wait_until(drained, 30, "the drain node's unregistered event")
        wait_until(
            lambda: '"reason": "unregistered"' in followed.read_text(),
            30,
            "events --follow to print the leave",
        )
        lines = [json.loads(x) for x in followed.read_text().splitlines()]
        assert lines == rows  # --follow printed the same events, as they came
        assert rows[0]["reason"] == "registered" and rows[0]["from_state"] == "unregistered"
        assert rows[-1]["reason"] == "unregistered" and rows[-1]["node"] == "drain"
        assert all(x["node"] == "drain" for x in rows)
        with clients.EventReader.attach(shm_name) as ev:
            batch = ev.read(0)
            assert batch.lost == 0 and batch.next_seq == ev.head >= len(rows)
        text = cli("events", "--name", shm_name)
        assert "drain (slot" in text.stdout and "unregistered: unregistered" in text.stdout
        assert json.loads(cli("status", "--name", shm_name, "--json").stdout)["ingest"]["left"] == 1
    finally:
        reader.close()
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0
    assert not os.path.exists(f"/dev/shm/{shm_name}.events")  # unlinked with the others
    assert follower.wait(30) == 0  # --follow ends once the engine has stopped


def test_run_bind_is_validated_like_the_file(shm_name):
    r = cli("run", "--name", shm_name, "--bind", "tcp://0.0.0.0:7710")
    assert r.returncode == 2
    assert 'ingest.bind = "tcp://0.0.0.0:7710" can be reached from other machines' in r.stderr
    r = cli("run", "--name", shm_name, "--bind", "nonsense")
    assert r.returncode == 2 and 'ingest.bind = "nonsense"' in r.stderr
