"""The node agent: service reports merged into heartbeats that the engine's
own validation accepts; bad service input ignored (and logged at a bounded
rate); dropped heartbeats keep their ok/err; a --count run sends N."""

import json
import time

import pytest
import zmq

from clients import agent as agent_mod
from clients.agent import Agent, Reporter, check_report
from clients.heartbeat import HeartbeatClient
from shm_engine.ops.cli import main
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.encode import record_to_dict
from shm_engine.wire.format import DEFAULT_MAX_FRAME_BYTES
from shm_engine.wire.jsondecode import check_heartbeat

TIMEOUT_S = 5.0
MACHINE = {"cpu": 0.5, "mem": 0.25, "io": 0.125}


class FakeSampler:
    def __init__(self, values=MACHINE):
        self.values = dict(values)

    def sample(self):
        return dict(self.values)


def recv_heartbeat(sock) -> dict:
    assert sock.poll(int(TIMEOUT_S * 1000)), "no heartbeat within the timeout"
    d = decode_frame(sock.recv(), DEFAULT_MAX_FRAME_BYTES)
    assert d.rejects == {} and len(d.records) == 1, d.sample
    return record_to_dict(d.records[0])


def poll_until(agent, cond):
    deadline = time.monotonic() + TIMEOUT_S
    while not cond():
        assert time.monotonic() < deadline, "condition not reached within the timeout"
        agent.poll_reports(0.05)


def test_service_report_is_merged_into_a_valid_heartbeat(pull):
    sock, endpoint = pull
    logs = []
    with Agent(
        endpoint, "node-a", listen="tcp://127.0.0.1:*", sampler=FakeSampler(), log=logs.append
    ) as agent:
        rep = Reporter(agent.listen_endpoint)
        try:
            assert rep.report(
                queue=3,
                avg_job_s=0.5,
                throughput=7.0,
                ok=5,
                err=1,
                p50_ms=10.0,
                p95_ms=20.0,
                slots=8,
            )
            # latest wins for queue and slots; ok/err add up: 5+2, 1+0
            assert rep.report(queue=4, ok=2, err=0, slots=6)
            poll_until(agent, lambda: agent.reports == 2)
        finally:
            rep.close()
        assert agent.send_once()
        hb = recv_heartbeat(sock)
        ts = hb.pop("ts")
        assert abs(ts - time.time()) < 60
        assert hb == {
            "node": "node-a",
            "cpu": 0.5,
            "mem": 0.25,
            "io": 0.125,
            "queue": 4.0,
            "avg_job_s": 0.5,
            "slots": 6,
            "throughput": 7.0,
            "ok": 7,
            "err": 1,
            "p50_ms": 10.0,
            "p95_ms": 20.0,
        }
        # ok/err were delivered: the next heartbeat counts from zero
        assert agent.send_once()
        hb = recv_heartbeat(sock)
        assert (hb["ok"], hb["err"], hb["queue"]) == (0, 0, 4.0)
        assert logs == [] and agent.bad_reports == 0


def test_without_service_reports_queue_and_job_time_are_zero(pull):
    sock, endpoint = pull
    with Agent(endpoint, "node-b", sampler=FakeSampler({"cpu": 0.1, "mem": 0.2})) as agent:
        assert agent.send_once()
        hb = recv_heartbeat(sock)
    hb.pop("ts")
    assert hb == {"node": "node-b", "cpu": 0.1, "mem": 0.2, "queue": 0.0, "avg_job_s": 0.0}


# (raw message, fields that must survive, whether it is counted bad)
BAD_INPUTS = [
    (b"not json", {}, True),
    (b"\xff\xfe", {}, True),
    (b"[1, 2]", {}, True),
    (b'"ok"', {}, True),
    (json.dumps({"queue": -1, "avg_job_s": 2.0}).encode(), {"avg_job_s": 2.0}, True),
    (json.dumps({"queue": "7"}).encode(), {}, True),
    (json.dumps({"queue": True}).encode(), {}, True),
    (b'{"queue": NaN}', {}, True),
    (b'{"queue": 1e999}', {}, True),
    (json.dumps({"ok": 1.5, "err": -1}).encode(), {}, True),
    (json.dumps({"slots": 0}).encode(), {}, True),
    (json.dumps({"slots": 65536, "queue": 1}).encode(), {"queue": 1.0}, True),
    (json.dumps({"slots": 2.0}).encode(), {}, True),
    (json.dumps({"slots": 3}).encode(), {"slots": 3}, False),
    (json.dumps({"cpu": 0.5, "queue": 6}).encode(), {"queue": 6.0}, True),  # unknown field
    (json.dumps({"p50_ms": 10}).encode(), {}, True),  # no partner
    (json.dumps({"p50_ms": 10, "p95_ms": 5}).encode(), {}, True),  # p95 < p50
    (json.dumps({"p50_ms": 0, "p95_ms": 5}).encode(), {}, True),  # p50 not > 0
    (b"[" * 5000 + b"]" * 5000, {}, True),  # deep nesting
    (
        json.dumps({"queue": 2, "p50_ms": 1, "p95_ms": 1}).encode(),
        {"queue": 2.0, "p50_ms": 1.0, "p95_ms": 1.0},
        False,
    ),
]


@pytest.mark.parametrize("raw, kept, bad", BAD_INPUTS)
def test_bad_service_input_is_ignored(raw, kept, bad):
    logs = []
    agent = Agent("tcp://127.0.0.1:9", "node-x", sampler=FakeSampler(), log=logs.append)
    try:
        agent.handle_report(raw)
        assert agent.service == kept
        assert (agent.ok, agent.err) == (0, 0)
        assert agent.bad_reports == int(bad) and len(logs) == int(bad)
        hb = agent.build()  # whatever came in, the heartbeat stays valid
        assert check_heartbeat(hb)[2] is None
    finally:
        agent.close()


def test_bad_input_over_the_socket_is_logged_at_a_bounded_rate(pull):
    _sock, endpoint = pull
    logs = []
    with Agent(
        endpoint, "node-y", listen="tcp://127.0.0.1:*", sampler=FakeSampler(), log=logs.append
    ) as agent:
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(agent.listen_endpoint)
        try:
            for _ in range(50):
                push.send(b"{broken")
            push.send(json.dumps({"queue": 9, "avg_job_s": 1.0}).encode())
            poll_until(agent, lambda: agent.reports == 51)
        finally:
            push.close(linger=0)
            ctx.term()
        assert agent.bad_reports == 50
        assert len(logs) == 1 and "service_report_ignored" in logs[0]
        assert agent.service == {"queue": 9.0, "avg_job_s": 1.0}


def test_reporter_rejects_bad_fields_in_the_caller():
    with pytest.raises(ValueError, match="queue=-2.0 must be >= 0"):
        Reporter("tcp://127.0.0.1:9").report(queue=-2)
    with pytest.raises(ValueError, match="unknown field 'cpu'"):
        agent_mod.report("tcp://127.0.0.1:9", cpu=0.5)


def test_check_report_table():
    assert check_report({"queue": 1, "ok": 2}) == ({"queue": 1.0, "ok": 2}, [])
    good, problems = check_report({"ok": True, "throughput": -0.5})
    assert good == {} and len(problems) == 2


def test_dropped_heartbeat_keeps_its_ok_err_for_the_next():
    logs = []
    # No peer and a queue of one frame: the second send is dropped.
    client = HeartbeatClient("tcp://127.0.0.1:9", sndhwm=1)
    agent = Agent("unused", "node-d", sampler=FakeSampler(), client=client, log=logs.append)
    try:
        agent.handle_report(json.dumps({"ok": 3, "err": 1}).encode())
        results = [agent.send_once() for _ in range(5)]
        assert results[0] is True and results[-1] is False
        # the first heartbeat took 3/1; everything after it was dropped
        assert (agent.ok, agent.err) == (0, 0)
        agent.handle_report(json.dumps({"ok": 2, "err": 2}).encode())
        assert agent.send_once() is False
        agent.handle_report(json.dumps({"ok": 1}).encode())
        assert (agent.ok, agent.err) == (3, 2)
        assert client.dropped == 5
        assert sum("heartbeats_dropped" in line for line in logs) == 1
    finally:
        agent.close()
        client.close()


def test_count_bounded_run_sends_n_heartbeats(pull):
    sock, endpoint = pull
    rc = main(
        [
            "agent",
            "--endpoint",
            endpoint,
            "--node-id",
            "node-c",
            "--interval",
            "0.05",
            "--count",
            "3",
            "--listen",
            "tcp://127.0.0.1:*",
        ]
    )
    assert rc == 0
    for _ in range(3):
        hb = recv_heartbeat(sock)
        assert hb["node"] == "node-c"
        assert 0.0 <= hb["cpu"] <= 1.0 and 0.0 <= hb["mem"] <= 1.0
        assert 0.0 <= hb.get("io", 0.0) <= 1.0
    assert not sock.poll(200), "more heartbeats than --count"


@pytest.mark.parametrize(
    "keys, message",
    [
        (["--curve-server-key", "s.key"], "give both"),
        (
            ["--curve-server-key", "missing.key", "--curve-client-key", "missing.key_secret"],
            "cannot load CURVE keys",
        ),
    ],
)
def test_curve_options(keys, message, capsys):
    assert main(["agent", "--endpoint", "tcp://127.0.0.1:9", "--count", "1", *keys]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("node_id", ["x" * 64, "web 17", "nœud"])
def test_bad_node_id_is_a_usage_error(capsys, node_id):
    assert (
        main(["agent", "--endpoint", "tcp://127.0.0.1:9", "--node-id", node_id, "--count", "1"])
        == 2
    )
    assert "give --node-id" in capsys.readouterr().err


def test_ipc_listen_socket_file_is_removed_on_close(tmp_path, pull):
    _sock, endpoint = pull
    path = tmp_path / "agent.sock"
    with Agent(endpoint, "node-i", listen=f"ipc://{path}", sampler=FakeSampler()) as agent:
        assert path.exists()
        rep = Reporter(agent.listen_endpoint)
        try:
            assert rep.report(queue=1)
            poll_until(agent, lambda: agent.reports == 1)
        finally:
            rep.close()
    assert not path.exists()


def test_agent_heartbeats_over_curve_reach_an_authenticating_engine_socket(tmp_path):
    """The agent's --curve-* keys encrypt its heartbeats; a CURVE PULL socket
    that knows the agent's public key receives them."""
    import zmq
    from zmq.auth.thread import ThreadAuthenticator

    from shm_engine.ops.keys import make_keys
    from shm_engine.wire.decode import decode_frame

    make_keys(str(tmp_path / "server"), "engine")
    make_keys(str(tmp_path / "clients"), "agent")
    server_pub, server_sec = zmq.auth.load_certificate(
        str(tmp_path / "server" / "engine.key_secret")
    )
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    try:
        auth.configure_curve(domain="*", location=str(tmp_path / "clients"))
        sock = ctx.socket(zmq.PULL)
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = server_pub, server_sec
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        rc = main(
            [
                "agent",
                "--endpoint",
                f"tcp://127.0.0.1:{port}",
                "--node-id",
                "sealed",
                "--count",
                "1",
                "--interval",
                "0.05",
                "--listen",
                f"ipc://{tmp_path}/agent.sock",
                "--curve-server-key",
                str(tmp_path / "server" / "engine.key"),
                "--curve-client-key",
                str(tmp_path / "clients" / "agent.key_secret"),
            ]
        )
        assert rc == 0
        assert sock.poll(10_000), "no heartbeat arrived over CURVE"
        dec = decode_frame(sock.recv(), 1 << 20)
        assert bytes(dec.records[0]["node"]).rstrip(b"\0") == b"sealed"
        sock.close(0)
    finally:
        auth.stop()
        ctx.term()
