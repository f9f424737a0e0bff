"""Key revocation: removing a key takes effect on SIGHUP, without a restart.

The attack (issue 12): removing a key from ``authorized_keys_dir`` revoked
nothing (keys were read once).  Here a client key ``temp`` sends for its
node while the honest fleet beats from the ``fleet`` key.  SIGHUP to ``run``
(the supervisor forwards it to the ingest) reloads the keys and bindings:

1. ``temp.key`` removed: the client, still connected, has every frame
   refused (``not_authorized``, under ``temp (revoked)``); a new connection
   with the key is refused in the handshake, its frames never counted.
2. ``temp.key`` back, holding a *new* key: the old key stays refused (a
   connection is judged by its public key, not by the file's name) and the
   new key is admitted for ``temp-*``.
3. ``fleet.nodes`` narrowed to ``good-*``: the fleet's heartbeats for the
   failing nodes are refused, the good ones still admitted.

The ingest keeps its pid and restarts nothing; the good nodes' scores are
exact throughout.
"""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import zmq

from clients.heartbeat import CurveKeys
from clients.reader import ScoreReader
from shm_engine import wire
from shm_engine.ops.keys import make_keys
from support.attack import FAILING, GOOD, HONEST, Sent, honest_frame, honest_problems, push
from support.engine import START_TIMEOUT_S, Engine, free_port, segment_exists, write_config
from support.wait import wait_until

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")

FRAMES = 20  # frames each refused client sends after a reload


def _temp_frame() -> bytes:
    return wire.encode_batch([dict(node="temp-0", cpu=0.0, mem=0.0, queue=0.0, avg_job_s=0.0)])


def test_sighup_revokes_keys_and_rebinds_nodes_without_restart(shm_name, tmp_path, reap):
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    spub, ssec = make_keys(str(keys), "engine")
    fleet_pub, fleet_sec = make_keys(str(keys), "fleet")
    temp_pub, temp_sec = make_keys(str(keys), "temp")
    new_pub, new_sec = make_keys(str(keys), "temp-new")
    shutil.copy(fleet_pub, authorized / "fleet.key")
    shutil.copy(temp_pub, authorized / "temp.key")
    (authorized / "fleet.nodes").write_text("good-*\nfailing-*\n")
    (authorized / "temp.nodes").write_text("temp-*\n")
    extra = (
        f'\n[ingest.curve]\nserver_secret_key_file = "{ssec}"\n'
        f'authorized_keys_dir = "{authorized}"\n'
    )
    port = free_port()
    eng = Engine(shm_name, write_config(tmp_path / "e.toml", port, extra=extra), tmp_path, reap)
    st0 = eng.wait_ready()
    ingest_pid = st0["children"]["ingest"]["pid"]
    ctx = zmq.Context()
    fleet = push(ctx, port, curve=CurveKeys.from_files(spub, fleet_sec))
    temp = push(ctx, port, curve=CurveKeys.from_files(spub, temp_sec))
    reader = ScoreReader.attach(shm_name)
    sent = Sent(eng)
    send, problems = sent.send, sent.problems

    def counted() -> dict:
        """The status once every frame sent so far is counted, the good
        nodes' scores checked on the way (the failing ones lose their
        binding in step 3)."""
        problems.extend(honest_problems(reader, GOOD))
        return sent.counted()

    def reload(n: int) -> dict:
        os.kill(eng.proc.pid, signal.SIGHUP)
        return wait_until(
            lambda: eng.status()["security"]["reloads"] >= n and eng.status(), 30, f"reload {n}"
        )

    try:
        wait_until(
            lambda: send(fleet, honest_frame()) or not honest_problems(reader),
            START_TIMEOUT_S,
            "the honest nodes scored",
            period=0.05,
        )
        wait_until(
            lambda: send(temp, _temp_frame()) or "temp-0" in reader.snapshot().nodes,
            START_TIMEOUT_S,
            "temp-0 scored",
            period=0.05,
        )
        st = wait_until(counted, 30, "frames counted")
        assert st["security"]["keys"] == 2

        # 1. temp.key removed.
        os.remove(authorized / "temp.key")
        st = reload(1)
        assert st["security"]["keys"] == 1
        before = wait_until(counted, 30, "frames counted")["ingest"]
        late = push(ctx, port, curve=CurveKeys.from_files(spub, temp_sec))
        for _ in range(FRAMES):
            send(temp, _temp_frame())
            try:  # never arrives (refused in the handshake): not counted in `sent`
                late.send(_temp_frame(), zmq.NOBLOCK)
            except zmq.Again:
                pass  # no pipe while the refused connection retries: nothing to queue
            send(fleet, honest_frame())
        wait_until(
            lambda: eng.status()["security"]["handshakes_refused"] >= 1,
            30,
            "the new connection refused in its handshake",
        )
        st = wait_until(counted, 30, "frames counted")
        ing = st["ingest"]
        assert ing["rejected"]["not_authorized"] - before["rejected"]["not_authorized"] == FRAMES
        assert ing["accepted"] - before["accepted"] == FRAMES * len(HONEST)
        assert st["security"]["refused_by_sender"]["temp (revoked)"]["not_authorized"] == FRAMES
        late.close(0)

        # 2. temp.key replaced by another key under the same name.
        shutil.copy(new_pub, authorized / "temp.key")
        reload(2)
        renewed = push(ctx, port, curve=CurveKeys.from_files(spub, new_sec))
        before = wait_until(counted, 30, "frames counted")["ingest"]
        for _ in range(FRAMES):
            send(temp, _temp_frame())
            send(renewed, _temp_frame())
        ing = wait_until(counted, 30, "frames counted")["ingest"]
        assert ing["rejected"]["not_authorized"] - before["rejected"]["not_authorized"] == FRAMES
        assert ing["accepted"] - before["accepted"] == FRAMES
        renewed.close(0)

        # 3. The fleet's key narrowed to the good nodes.
        (authorized / "fleet.nodes").write_text("good-*\n")
        reload(3)
        before = wait_until(counted, 30, "frames counted")["ingest"]
        for _ in range(FRAMES):
            send(fleet, honest_frame())
        st = wait_until(counted, 30, "frames counted")
        ing = st["ingest"]
        assert ing["rejected"]["not_authorized"] - before["rejected"]["not_authorized"] == (
            FRAMES * len(FAILING)
        )
        assert ing["accepted"] - before["accepted"] == FRAMES * len(GOOD)
        assert st["security"]["refused_by_sender"]["fleet"]["not_authorized"] == (
            FRAMES * len(FAILING)
        )
    finally:
        reader.close()
        # Every socket of the context, those a failed step left open too:
        # ctx.term() would wait for them forever.
        ctx.destroy(linger=0)

    assert problems == []
    assert st["children"]["ingest"] == {"pid": ingest_pid, "restarts": 0}
    assert st["security"]["reloads"] == 3 and st["security"]["reloads_with_problems"] == 0
    assert eng.stop() == 0
    assert not segment_exists(shm_name)
