"""CURVE on the ingest socket: key generation, client keys, and who gets in.

Through a real ``shm-engine run`` with ``[ingest.curve]``: heartbeats of a
client whose public key is in ``authorized_keys_dir`` reach shared memory;
those of an unknown key, or of a client without CURVE, never do (ZeroMQ
drops the connection in the handshake, so not even the frame counter moves).
The last test prints the throughput cost of CURVE against plain TCP for the
same batched binary frames.
"""

from __future__ import annotations

import os
import shutil
import stat
import time

import numpy as np
import pytest
import zmq
import zmq.auth

from clients.heartbeat import CurveKeys, HeartbeatClient
from clients.reader import NothingPublished, ScoreReader
from shm_engine.ops.keys import make_keys
from support.engine import START_TIMEOUT_S, Engine, cli, free_port, segment_exists, write_config
from support.fleet import fleet_records
from support.wait import wait_until

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")

HB = dict(cpu=0.1, mem=0.1, queue=0.0, avg_job_s=1.0)


def test_keys_command_writes_a_pair_with_a_private_secret(tmp_path):
    out = cli("keys", str(tmp_path / "k"), "--key-name", "node-7")
    assert out.returncode == 0, out.stderr
    pub, sec = tmp_path / "k" / "node-7.key", tmp_path / "k" / "node-7.key_secret"
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    public, secret = zmq.auth.load_certificate(str(sec))
    assert zmq.auth.load_certificate(str(pub)) == (public, None)
    assert len(public) == len(secret) == 40 and secret.decode() not in pub.read_text()
    again = cli("keys", str(tmp_path / "k"), "--key-name", "node-7")
    assert again.returncode == 2 and "exists" in again.stderr
    assert zmq.auth.load_certificate(str(sec)) == (public, secret)  # not overwritten


def test_curve_keys_from_files_and_bad_keys(tmp_path):
    spub, _ = make_keys(str(tmp_path), "engine")
    cpub, csec = make_keys(str(tmp_path), "client")
    keys = CurveKeys.from_files(spub, csec)
    assert keys.server_public == zmq.auth.load_certificate(spub)[0]
    assert (keys.client_public, keys.client_secret) == zmq.auth.load_certificate(csec)
    with pytest.raises(ValueError, match="holds no secret key"):
        CurveKeys.from_files(spub, cpub)
    with pytest.raises(ValueError, match="client_secret must be 40 bytes"):
        CurveKeys(keys.server_public, keys.client_public, b"short")
    with pytest.raises(ValueError, match="curve must be a CurveKeys"):
        HeartbeatClient("tcp://127.0.0.1:1", curve={"server_key": b"x"})


def _curve_setup(tmp_path):
    """(config extra, allowed keys, unknown keys, endpoint-less)."""
    keys = tmp_path / "keys"
    allowed_dir = tmp_path / "authorized"
    allowed_dir.mkdir()
    spub, ssec = make_keys(str(keys), "engine")
    apub, asec = make_keys(str(keys), "allowed")
    _upub, usec = make_keys(str(keys), "unknown")
    shutil.copy(apub, allowed_dir / "allowed.key")
    # The key speaks for its own node and the throughput test's fleet.
    (allowed_dir / "allowed.nodes").write_text("allowed\nsd-*\n")
    extra = (
        f'\n[ingest.curve]\nserver_secret_key_file = "{ssec}"\n'
        f'authorized_keys_dir = "{allowed_dir}"\n'
    )
    return extra, CurveKeys.from_files(spub, asec), CurveKeys.from_files(spub, usec)


def test_only_authorized_clients_reach_shared_memory(shm_name, tmp_path, reap):
    extra, allowed, unknown = _curve_setup(tmp_path)
    port = free_port()
    eng = Engine(shm_name, write_config(tmp_path / "e.toml", port, extra=extra), tmp_path, reap)
    eng.wait_ready()
    ep = f"tcp://127.0.0.1:{port}"
    reader = ScoreReader.attach(shm_name)
    with (
        HeartbeatClient(ep, curve=allowed) as ok,
        HeartbeatClient(ep, curve=unknown) as bad,
        HeartbeatClient(ep) as plain,
    ):
        try:

            def nodes():
                try:
                    return {n for n in reader.snapshot().nodes if n}
                except NothingPublished:
                    return set()

            def allowed_in():
                bad.send("intruder", **HB)
                plain.send("plaintext", **HB)
                ok.send("allowed", **HB)
                return "allowed" in nodes()

            wait_until(allowed_in, START_TIMEOUT_S, "the allowed client scored", period=0.05)
            # Keep the others trying for a while; then one more allowed
            # heartbeat, and every frame that arrived is the allowed one's.
            for _ in range(50):
                bad.send("intruder", **HB)
                plain.send("plaintext", **HB)
                time.sleep(0.01)
            frames = eng.status()["ingest"]["frames"]
            ok.send("allowed", **HB)
            wait_until(lambda: eng.status()["ingest"]["frames"] > frames, 30, "last frame")
            assert nodes() == {"allowed"}
            st = eng.status()
            assert st["ingest"]["frames"] == st["ingest"]["accepted"] == ok.sent
            assert st["nodes"]["registered"] == 1
            # They tried (queued, or dropped once ZeroMQ had no peer for them).
            assert bad.sent + bad.dropped > 50 and plain.sent + plain.dropped > 50
        finally:
            reader.close()
    assert eng.stop() == 0
    assert not segment_exists(shm_name)


BATCH = 1000  # heartbeats per frame (192 KB)
FRAMES = 200


def _throughput(name: str, tmp_path, reap, extra: str, curve) -> float:
    """Heartbeats per second an engine takes in from one client sending
    FRAMES binary frames of BATCH heartbeats as fast as it can."""
    port = free_port()
    (tmp_path / name).mkdir()
    eng = Engine(
        name,
        write_config(tmp_path / name / "e.toml", port, capacity=BATCH, extra=extra),
        tmp_path / name,
        reap,
    )
    eng.wait_ready()
    rec = fleet_records(np.arange(BATCH))
    with HeartbeatClient(f"tcp://127.0.0.1:{port}", curve=curve, sndhwm=FRAMES * 2) as c:
        c.send_batch(rec)
        wait_until(lambda: eng.status()["ingest"]["accepted"] >= BATCH, 30, "warm-up batch")
        t0 = time.monotonic()
        for _ in range(FRAMES):
            c.send_batch(rec)
        wait_until(
            lambda: eng.status()["ingest"]["accepted"] >= BATCH * (FRAMES + 1),
            120,
            "all batches",
            period=0.002,
        )
        rate = BATCH * FRAMES / (time.monotonic() - t0)
        assert c.dropped == 0
    assert eng.stop() == 0
    return rate


def test_curve_throughput_cost(shm_names, tmp_path, reap):
    extra, allowed, _ = _curve_setup(tmp_path)
    plain = _throughput(shm_names(), tmp_path, reap, "", None)
    curve = _throughput(shm_names(), tmp_path, reap, extra, allowed)
    print(
        f"\ningest throughput, {FRAMES} frames x {BATCH} heartbeats: plain {plain:,.0f}/s, "
        f"CURVE {curve:,.0f}/s ({100 * (1 - curve / plain):+.0f}% cost)"
    )
    assert curve > 0.2 * plain  # encryption must not make the intake collapse
