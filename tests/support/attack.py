"""Honest nodes with exact scores, and the sockets attackers send from.

For the abuse tests (``tests/security``): each runs a real engine, attacks
its ingest, and checks that the honest nodes' published scores never move.

Honest nodes whose score is exact whatever the other nodes do, with any
weights and any pressure: a good node (id ``good-...``) reports only perfect
values (cpu, mem, queue and avg_job_s all 0): every goodness term it has is
1, so core is 1, B = 1, and fresh heartbeats keep L = 1: score 1.0, HEALTHY.
A failing node (any other id, e.g. ``failing-...``) reports cpu = 0.99 >=
max_cpu: its breaker trips: score 0.0, OVERLOADED.  A forged heartbeat (`forged_frame`) flips
either, so an
impersonation that gets through shows in the score.

Attackers on loopback can have their own peer address: `push` connects
from any 127.0.0.0/8 address (ZeroMQ's ``tcp://SOURCE:0;TARGET`` form).
"""

from __future__ import annotations

import numpy as np
import zmq

from clients.heartbeat import CurveKeys
from clients.reader import NothingPublished
from shm_engine import wire
from shm_engine.core.states import NodeState

__all__ = [
    "GOOD",
    "FAILING",
    "HONEST",
    "Sent",
    "expected",
    "honest_frame",
    "forged_frame",
    "fake_frames",
    "push",
    "honest_problems",
]

GOOD = tuple(f"good-{i}" for i in range(4))
FAILING = tuple(f"failing-{i}" for i in range(2))
HONEST = GOOD + FAILING

_PERFECT = dict(cpu=0.0, mem=0.0, queue=0.0, avg_job_s=0.0)
_TRIPPED = dict(cpu=0.99, mem=0.0, queue=0.0, avg_job_s=0.0)


def _good(node: str) -> bool:
    return node.startswith("good")


def expected(node: str) -> tuple[float, NodeState]:
    """(published score, state) of honest ``node`` while it keeps beating."""
    return (1.0, NodeState.HEALTHY) if _good(node) else (0.0, NodeState.OVERLOADED)


def honest_frame(nodes=HONEST) -> bytes:
    """One binary frame of the true heartbeats of ``nodes``."""
    return wire.encode_batch([dict(node=n, **(_PERFECT if _good(n) else _TRIPPED)) for n in nodes])


def forged_frame(nodes=HONEST) -> bytes:
    """The same nodes with their values swapped: a good node tripped, a
    failing one perfect."""
    return wire.encode_batch([dict(node=n, **(_TRIPPED if _good(n) else _PERFECT)) for n in nodes])


def fake_frames(prefix: str, count: int, per_frame: int) -> list[bytes]:
    """``count`` fake nodes ``PREFIX-<i>`` with perfect values (each would
    score 1.0 and fill top() and pick()), in binary frames of ``per_frame``."""
    rec = np.zeros(count, wire.RECORD_DTYPE)
    rec["node"] = [f"{prefix}-{i}".encode() for i in range(count)]
    return [wire.encode_batch(rec[a : a + per_frame]) for a in range(0, count, per_frame)]


#: Longest a test's send may wait for room in its queue.
SEND_TIMEOUT_MS = 60_000


def push(
    ctx: zmq.Context,
    port: int,
    *,
    source: str | None = None,
    curve: CurveKeys | None = None,
    sndhwm: int = 1000,
) -> zmq.Socket:
    """A PUSH socket to the engine on 127.0.0.1:``port``, connecting from
    loopback address ``source`` (so the engine sees that peer address) and
    with client keys ``curve``.  The caller closes it."""
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    # A send that cannot queue fails the test (zmq.Again) instead of hanging it.
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    if curve is not None:
        sock.curve_serverkey = curve.server_public
        sock.curve_publickey = curve.client_public
        sock.curve_secretkey = curve.client_secret
    target = f"127.0.0.1:{port}"
    sock.connect(f"tcp://{source}:0;{target}" if source else f"tcp://{target}")
    return sock


def honest_problems(reader, nodes=HONEST) -> list[str]:
    """How the published scores of ``nodes`` differ from `expected` (to
    1e-12), in the latest snapshot; a node missing or not yet scored counts."""
    try:
        snap = reader.snapshot()
    except NothingPublished:
        return ["nothing published yet"]
    slot = {n: s for s, n in enumerate(snap.nodes) if n is not None}
    out = []
    for n in nodes:
        want_score, want_state = expected(n)
        s = slot.get(n)
        if s is None:
            out.append(f"{n}: not registered")
            continue
        score, state = float(snap.score[s]), int(snap.state[s])
        if abs(score - want_score) > 1e-12 or state != want_state:
            out.append(
                f"{n}: score {score!r} state {state}, expected {want_score} {want_state.name}"
            )
    return out


class Sent:
    """Frames sent to engine ``eng``, counted, so a test can wait until the
    ingest has counted them all; ``reader`` (optional): each wait also checks
    the honest nodes' scores and keeps what it finds in ``problems``."""

    def __init__(self, eng, reader=None):
        self.eng = eng
        self.reader = reader
        self.frames = 0
        self.problems: list[str] = []

    def send(self, sock: zmq.Socket, frame: bytes) -> None:
        sock.send(frame)
        self.frames += 1

    def counted(self) -> dict:
        """The engine's status once it has counted every frame sent, else
        {} (a predicate for `wait_until`)."""
        if self.reader is not None:
            self.problems += honest_problems(self.reader)
        st = self.eng.status()
        return st if st["ingest"]["frames"] >= self.frames else {}
