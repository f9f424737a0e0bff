"""The HTTP server as ``shm-engine run`` starts it: a supervised child.

Each test runs a real engine (`support.engine.Engine`) with ``[http] bind =
"127.0.0.1:0"`` and talks to it with httpx: the URL bound is in the
engine's status.  Heartbeats posted over HTTP must be counted exactly as
the same heartbeats sent over ZeroMQ; the child must be restarted when it
dies, stop with the engine, and refuse a bad setup with a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess

import httpx
import pytest
import zmq

from shm_engine.ops.keys import make_keys
from support.engine import START_TIMEOUT_S, Engine, cli, free_port, write_config
from support.wait import wait_until

GOOD = {"node": "web-1", "cpu": 0.2, "mem": 0.3, "queue": 1, "avg_job_s": 0.5}
BAD = {"node": "web-2", "cpu": 1.5, "mem": 0.3, "queue": 1, "avg_job_s": 0.5}
TOKEN = "t0ken-for-tests"


def _start(shm_name, tmp_path, reap, http_extra=""):
    cfg = write_config(tmp_path / "e.toml", free_port(), http="127.0.0.1:0", http_extra=http_extra)
    eng = Engine(shm_name, cfg, tmp_path, reap)
    st = eng.wait_ready()
    url = st["http"]["url"]
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    assert f"http endpoint {url}\n" in eng.stdout
    return eng, url


def _rejects(eng) -> dict:
    return eng.status()["ingest"]["rejected"]


def test_http_child_serves_counts_like_the_ingest_restarts_and_stops(shm_name, tmp_path, reap):
    eng, url = _start(shm_name, tmp_path, reap)
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        wait_until(lambda: http.get("/readyz").status_code == 200, 10, "ready")

        # A valid heartbeat posted over HTTP is written by the ingest.
        r = http.post("/v1/heartbeat", json=GOOD)
        assert r.status_code == 202 and r.json()["accepted"] == 1
        node = wait_until(
            lambda: (
                http.get("/v1/nodes/web-1").json()
                if http.get("/v1/nodes/web-1").status_code == 200
                else None
            ),
            10,
            "web-1 scored",
        )
        assert node["state"] == "healthy" and node["heartbeat"]["cpu"] == 0.2

        # The same bad heartbeat over HTTP and over ZeroMQ: the same counter, +1 each.
        before = _rejects(eng)
        r = http.post("/v1/heartbeat", json=BAD)
        assert r.status_code == 400
        err = r.json()["error"]
        assert (err["code"], err["field"], err["value"], err["node"]) == (
            "bad_field",
            "cpu",
            "1.5",
            "web-2",
        )
        wait_until(
            lambda: _rejects(eng)["bad_field"] == before["bad_field"] + 1, 10, "HTTP reject counted"
        )
        endpoint = eng.status()["ingest_endpoint"]
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)  # a plain sender: HeartbeatClient would refuse BAD itself
        push.connect(endpoint)
        push.send(json.dumps(BAD).encode())
        push.close(linger=5000)
        ctx.term()
        wait_until(
            lambda: _rejects(eng)["bad_field"] == before["bad_field"] + 2,
            10,
            "ZeroMQ reject counted",
        )
        after = _rejects(eng)
        assert {k: v for k, v in after.items() if k != "bad_field"} == {
            k: v for k, v in before.items() if k != "bad_field"
        }
        # Bad JSON: 400 with the parser's reason, counted malformed_frame by the ingest.
        r = http.post(
            "/v1/heartbeat", content=b"{oops", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and "invalid JSON" in r.json()["error"]["message"]
        wait_until(
            lambda: _rejects(eng)["malformed_frame"] == before["malformed_frame"] + 1,
            10,
            "malformed counted",
        )

        # Server-sent events: the history, then tick summaries with growing epochs.
        epochs = []
        with http.stream("GET", "/v1/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "tick":
                    epochs.append(json.loads(line[6:])["epoch"])
                    if len(epochs) == 3:
                        break
        assert epochs == sorted(epochs) and len(set(epochs)) == 3

        stats = http.get("/v1/stats").json()
        assert stats["children"]["http"]["restarts"] == 0
        status = cli("status", "--name", shm_name)
        assert status.returncode == 0 and f"http     {url}\n" in status.stdout, status.stdout
        assert "shm_engine_up" in http.get("/metrics").text

    # The supervisor restarts a killed HTTP child, on a new port (bind port 0).
    pid = eng.status()["children"]["http"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: (
            eng.status()["children"]["http"]["restarts"] == 1
            and eng.status()["http"]["url"] != url
            and eng.status()["http"]["alive_age_s"] is not None
        ),
        START_TIMEOUT_S,
        "http child restarted",
    )
    new_url = eng.status()["http"]["url"]
    wait_until(
        lambda: httpx.get(new_url + "/healthz", timeout=5).status_code == 200,
        10,
        "new child serves",
    )
    assert eng.stop() == 0
    assert "http_started" in eng.stderr and "http_stopped" in eng.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(new_url + "/healthz", timeout=2)


def test_token_file_guards_posts_and_reload_goes_through(shm_name, tmp_path, reap):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    eng, url = _start(shm_name, tmp_path, reap, http_extra=f'token_file = "{token}"')
    auth = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/v1/heartbeat", json=GOOD)
        assert r.status_code == 401 and r.json()["error"]["code"] == "token_missing"
        r = http.post("/v1/heartbeat", json=GOOD, headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "token_invalid"
        r = http.post("/v1/heartbeat", json=GOOD, headers=auth)
        assert r.status_code == 202
        assert http.get("/v1/nodes").status_code == 200  # reads stay open

        # POST /v1/reload: the HTTP child signals the supervisor, which re-reads the file.
        assert http.post("/v1/reload").status_code == 401
        path = tmp_path / "e.toml"
        text = path.read_text()
        path.write_text(text + "\n[score]\nbeta = 0.8\n")
        r = http.post("/v1/reload", headers=auth)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["config_version"], r.json()["applied"]) == (
            "applied",
            2,
            ["score.beta"],
        )
        wait_until(
            lambda: http.get("/v1/stats").json()["config"]["epoch_version"] == 2,
            20,
            "an epoch computed with config version 2",
        )
        path.write_text(text + "\n[score]\nbeta = 1.5\n")
        r = http.post("/v1/reload", headers=auth)
        assert r.status_code == 422, r.text
        e = r.json()["error"]
        assert (e["code"], e["field"], e["value"]) == ("invalid_config", "score.beta", 1.5)
        config = http.get("/v1/stats").json()["config"]
        assert config["version"] == 2 and config["score"]["beta"] == 0.8
        assert config["last_reload"]["status"] == "invalid"
    assert eng.stop() == 0


def test_remote_placement_and_its_lease_on_a_running_engine(shm_name, tmp_path, reap):
    """POST /v1/place on a real engine: the placement holds capacity on the
    node; one not released within its ttl_s is returned by the HTTP
    child's own sweep (in flight back to 0, a late release 410)."""
    eng, url = _start(shm_name, tmp_path, reap)
    node = {**GOOD, "node": "big-1", "resources": {"cpu": 4, "mem_gb": 8}}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/v1/heartbeat", json=node).status_code == 202

        def in_flight():
            r = http.get("/v1/nodes/big-1")
            return r.json()["in_flight"] if r.status_code == 200 else None

        wait_until(lambda: in_flight() == 0, 20, "big-1 scored")
        kept = http.post("/v1/place", json={"requests": {"cpu": 3}}).json()
        assert kept["node"] == "big-1" and kept["reserved"] == {"cpu": 3.0}
        r = http.post("/v1/place", json={"requests": {"cpu": 1}, "ttl_s": 0.5})
        assert r.status_code == 200, r.text
        short = r.json()
        assert in_flight() == 2
        r = http.post("/v1/place", json={"requests": {"cpu": 1}})
        assert r.status_code == 409 and r.json()["error"]["counts"] == {"insufficient cpu": 1}
        wait_until(lambda: in_flight() == 1, 20, "the short lease returned by the server")
        r = http.post("/v1/release", json={"id": short["id"], "ok": True})
        assert r.status_code == 410 and r.json()["error"]["code"] == "lease_expired"
        assert http.post("/v1/place", json={"requests": {"cpu": 1}}).status_code == 200
        r = http.post("/v1/release", json={"id": kept["id"], "ok": True})
        assert r.json() == {"id": kept["id"], "node": "big-1", "ok": True, "held": True}
    assert eng.stop() == 0


def test_a_token_file_others_can_read_is_refused_before_start(shm_name, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    cfg = write_config(
        tmp_path / "e.toml", free_port(), http="127.0.0.1:0", http_extra=f'token_file = "{token}"'
    )
    run = cli("run", "--name", shm_name, "--config", str(cfg))
    assert run.returncode == 2
    assert f'http.token_file = "{token}" has mode 0o644' in run.stderr, run.stderr


@pytest.mark.parametrize(
    "line, message",
    [
        ('bind = "localhost"', 'http.bind = "localhost" must look like HOST:PORT'),
        ('bind = "127.0.0.1:70000"', 'http.bind = "127.0.0.1:70000" must look like HOST:PORT'),
        ('tls_cert = "c.pem"', 'http.tls_cert = "c.pem" is set but http.tls_key is empty'),
        ("max_body_bytes = 0", "http.max_body_bytes = 0 must be in 1..67108864"),
        ("nice = 20", "http.nice = 20 must be in 0..19"),
        ("bnid = 1", "unknown key http.bnid (did you mean http.bind?)"),
        ("place_ttl_s = 0", "http.place_ttl_s = 0 must be > 0"),
        ("place_ttl_s = 7200", "http.place_ttl_s = 7200 must be <= http.max_place_ttl_s (3600)"),
        ("max_place_ttl_s = 0.5", "http.max_place_ttl_s = 0.5 must be in 1..86400"),
    ],
)
def test_bad_http_config_names_key_and_value(tmp_path, line, message):
    path = tmp_path / "c.toml"
    path.write_text(f"[http]\n{line}\n")
    out = cli("config", "--check", str(path))
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_a_taken_http_port_stops_the_engine_with_the_reason(shm_name, tmp_path, reap):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path / "e.toml", free_port(), http=f"127.0.0.1:{port}")
        eng = Engine(shm_name, cfg, tmp_path, reap)
        wait_until(lambda: eng.returncode is not None, START_TIMEOUT_S, "engine exit")
    assert eng.returncode == 1
    assert "http_bind_failed" in eng.stderr and "engine_stopped" in eng.stderr, eng.stderr
    assert not eng.segment_exists()


def test_https_with_tls_cert_and_key(shm_name, tmp_path, reap):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    cfg = write_config(
        tmp_path / "e.toml",
        free_port(),
        http="127.0.0.1:0",
        http_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"',
    )
    eng = Engine(shm_name, cfg, tmp_path, reap)
    url = eng.wait_ready()["http"]["url"]
    assert url.startswith("https://127.0.0.1:")
    with httpx.Client(base_url=url, verify=str(cert), timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        r = http.post("/v1/heartbeat", json=GOOD)
        assert r.status_code == 202
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port is refused
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)
    assert eng.stop() == 0


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_heartbeats_forwarded_over_curve_follow_a_restarted_ingest(shm_name, tmp_path, reap):
    """With CURVE on, the API forwards with its own client key, held to that
    key's node bindings like any sender; an ingest restarted on another
    port (``*``) is followed."""
    keys, allowed = tmp_path / "keys", tmp_path / "authorized"
    allowed.mkdir()
    _spub, ssec = make_keys(str(keys), "engine")
    apub, asec = make_keys(str(keys), "api")
    shutil.copy(apub, allowed / "api.key")
    (allowed / "api.nodes").write_text("web-*\n")
    extra = (
        f'\n[ingest.curve]\nserver_secret_key_file = "{ssec}"\nauthorized_keys_dir = "{allowed}"\n'
    )
    cfg = write_config(
        tmp_path / "e.toml",
        "*",
        extra=extra,
        http="127.0.0.1:0",
        http_extra=f'curve_client_key_file = "{asec}"',
    )
    eng = Engine(shm_name, cfg, tmp_path, reap)
    url = eng.wait_ready()["http"]["url"]
    with httpx.Client(base_url=url, timeout=10) as http:

        def scored(node):
            return http.get(f"/v1/nodes/{node}").status_code == 200

        assert http.post("/v1/heartbeat", json=GOOD).status_code == 202
        wait_until(lambda: scored("web-1"), 20, "web-1 scored through CURVE")
        before = _rejects(eng)["not_authorized"]
        other = {**GOOD, "node": "db-1"}
        assert http.post("/v1/heartbeat", json=other).status_code == 202  # valid: forwarded
        wait_until(lambda: _rejects(eng)["not_authorized"] == before + 1, 20, "db-1 refused")
        assert not scored("db-1")

        old = eng.status()
        os.kill(old["children"]["ingest"]["pid"], signal.SIGKILL)
        wait_until(
            lambda: (
                eng.status()["ingest_endpoint"] not in (old["ingest_endpoint"], "")
                and "*" not in eng.status()["ingest_endpoint"]
            ),
            START_TIMEOUT_S,
            "ingest restarted on a new port",
        )
        second = {**GOOD, "node": "web-2"}

        def delivered():
            r = http.post("/v1/heartbeat", json=second)
            return r.status_code == 202 and scored("web-2")

        wait_until(delivered, START_TIMEOUT_S, "web-2 through the new ingest", period=0.2)
    assert eng.stop() == 0
