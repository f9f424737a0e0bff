"""Impersonation: a sender speaks for nodes it does not own.

The attack (issue 12): one client set another node's score to 0, made a
failing node HEALTHY at 1.0, and registered 500 ids it does not own, with
CURVE on too.  Here the honest fleet beats from its own sender while an
intruder, bound to its own node only, forges a heartbeat for every honest
node and invents 500 ids, round after round.  Without CURVE the senders are
peer addresses bound by ``[ingest] peer_nodes_file`` (the intruder connects
from 127.0.0.2); with CURVE they are client keys bound by ``NAME.nodes``.

Checked: every forged and invented heartbeat is refused ``not_authorized``
and counted under the intruder's name; the intruder's own node is admitted;
the honest scores are exact at every read during the attack and after it;
no node the intruder invented is registered.
"""

from __future__ import annotations

import shutil

import pytest
import zmq

from clients.heartbeat import CurveKeys
from clients.reader import ScoreReader
from shm_engine import wire
from shm_engine.ops.keys import make_keys
from support.attack import (
    HONEST,
    Sent,
    fake_frames,
    forged_frame,
    honest_frame,
    honest_problems,
    push,
)
from support.engine import START_TIMEOUT_S, Engine, free_port, segment_exists, write_config
from support.wait import wait_until

ROUNDS = 50
INVENTED_PER_ROUND = 10  # 500 invented ids in all
OWN_NODE = "rogue-0"


def _peer_setup(tmp_path):
    """Config text, and the (honest, intruder) socket options: peers."""
    peers = tmp_path / "peers"
    peers.write_text(
        f"# address  node patterns\n127.0.0.1 good-* failing-*\n127.0.0.2 {OWN_NODE}\n"
    )
    return f'peer_nodes_file = "{peers}"\n', {"source": "127.0.0.1"}, {"source": "127.0.0.2"}


def _curve_setup(tmp_path):
    """The same with CURVE keys: ``fleet`` bound to the honest nodes by its
    .nodes file, ``rogue-0`` to the node of its own name (no .nodes file)."""
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    spub, ssec = make_keys(str(keys), "engine")
    clients = {}
    for name in ("fleet", OWN_NODE):
        cpub, csec = make_keys(str(keys), name)
        shutil.copy(cpub, authorized / f"{name}.key")
        clients[name] = CurveKeys.from_files(spub, csec)
    (authorized / "fleet.nodes").write_text("good-*\nfailing-*\n")
    extra = (
        f'\n[ingest.curve]\nserver_secret_key_file = "{ssec}"\n'
        f'authorized_keys_dir = "{authorized}"\n'
    )
    return extra, {"curve": clients["fleet"]}, {"curve": clients[OWN_NODE]}


@pytest.mark.parametrize(
    "mode, setup, intruder_name",
    [
        ("loopback", _peer_setup, "127.0.0.2"),
        pytest.param(
            "curve",
            _curve_setup,
            OWN_NODE,
            marks=pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE"),
        ),
    ],
)
def test_impersonation_is_refused_and_counted_per_sender(
    shm_name, tmp_path, reap, mode, setup, intruder_name
):
    extra, honest_opts, intruder_opts = setup(tmp_path)
    port = free_port()
    eng = Engine(shm_name, write_config(tmp_path / "e.toml", port, extra=extra), tmp_path, reap)
    st0 = eng.wait_ready()
    assert st0["security"]["mode"] == mode
    ctx = zmq.Context()
    honest = push(ctx, port, **honest_opts)
    intruder = push(ctx, port, **intruder_opts)
    reader = ScoreReader.attach(shm_name)
    invented = fake_frames("stolen", ROUNDS * INVENTED_PER_ROUND, INVENTED_PER_ROUND)
    own = wire.encode_batch([dict(node=OWN_NODE, cpu=0.0, mem=0.0, queue=0.0, avg_job_s=0.0)])
    sent = Sent(eng)
    send = sent.send
    try:
        wait_until(
            lambda: send(honest, honest_frame()) or not honest_problems(reader),
            START_TIMEOUT_S,
            "the honest nodes scored",
            period=0.05,
        )
        wait_until(
            lambda: send(intruder, own) or OWN_NODE in reader.snapshot().nodes,
            START_TIMEOUT_S,
            "the intruder's own node scored",
            period=0.05,
        )
        base = wait_until(sent.counted, 60, "the frames so far counted")["ingest"]
        seen_problems = []
        for k in range(ROUNDS):
            send(intruder, forged_frame())
            send(intruder, invented[k])
            send(intruder, own)
            send(honest, honest_frame())
            seen_problems += honest_problems(reader)
        wait_until(sent.counted, 60, "every frame counted")
        # Two more ticks: whatever got in would be scored by now.
        epoch = reader.epoch
        wait_until(lambda: reader.epoch >= epoch + 2, 30, "two more ticks")
        seen_problems += honest_problems(reader)
        st = eng.status()
        nodes = {n for n in reader.snapshot().nodes if n}
    finally:
        reader.close()
        honest.close(0)
        intruder.close(0)
        ctx.term()

    assert seen_problems == []
    refused = ROUNDS * (len(HONEST) + INVENTED_PER_ROUND)
    ing = st["ingest"]
    assert ing["frames"] == sent.frames
    assert ing["rejected"]["not_authorized"] - base["rejected"]["not_authorized"] == refused
    assert ing["accepted"] - base["accepted"] == ROUNDS * (1 + len(HONEST))
    assert st["security"]["refused_by_sender"][intruder_name]["not_authorized"] == refused
    assert nodes == set(HONEST) | {OWN_NODE}  # nothing invented got a slot
    assert st["children"]["ingest"]["restarts"] == 0
    assert eng.stop() == 0
    assert not segment_exists(shm_name)
