"""A hostile or broken upstream: the mirror refuses its frames, counts them by
reason, keeps running, and no other zone's slots (nor its own) change.

Two zones, each a real engine (`support.claims.ClaimsEngine`) whose frames
the test sends from a fake feed (an XPUB socket bound here) to the mirror's
real loop (`mirror.run`, in a thread of this process).  Every malformed frame
is built from a full frame of the engine's *current* epoch whose scores were
all changed to 123.0, so a frame applied even in part shows as a difference
from the engine (`support.feed.compare`).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import zmq

from clients.reader import ScoreReader
from shm_engine.core.errors import NothingPublished
from shm_engine.feed import format as ff
from shm_engine.feed.mirror import read_mirror_status
from support.feed import FeedRig, MirrorThread, compare
from support.wait import wait_until

ZONES = ("eu", "us")
CAP = 16  # slots of each engine, and the mirror's span per zone


class Hostile:
    def __init__(self, rig: FeedRig, pubs: list[zmq.Socket], loop: MirrorThread):
        self.rig, self.pubs, self.loop = rig, pubs, loop

    def subscribed(self, i: int) -> None:
        """Wait for the mirror's subscription to every frame on feed ``i``."""

        def got():
            while self.pubs[i].poll(0):
                if self.pubs[i].recv() == b"\x01":
                    return True
            return False

        wait_until(got, 10, f"the mirror's subscription on feed {i}", period=0.005)

    def send(self, i: int, data: bytes) -> None:
        self.pubs[i].send(data)

    def status(self, i: int) -> dict:
        return read_mirror_status(self.rig.mirror.name)["zones"][i]

    def exact(self, i: int) -> list[str]:
        """`compare` of zone ``i`` (a problem, too, before the mirror's first publish)."""
        try:
            return compare(self.rig.engines[i].name, self.rig.mirror.name)
        except NothingPublished:
            return ["nothing published yet"]

    def resync(self, i: int) -> None:
        """A full frame of engine ``i``'s latest tick; wait until the mirror is exact."""
        self.rig.pubs[i].full_pending = True
        fr = self.rig.frame(i)
        assert fr.kind == ff.KIND_FULL
        self.send(i, self.rig.sent[-1])
        wait_until(lambda: self.exact(i) == [], 10, f"zone {ZONES[i]} exact", period=0.005)

    def poisoned(self, i: int) -> bytes:
        """A full frame of engine ``i``'s current epoch, every score 123.0."""
        pub = self.rig.pubs[i]
        assert pub.capture()
        fr = ff.decode_score_frame(pub.frame(full=True))
        assert not isinstance(fr, str)
        rows = fr.rows.copy()
        rows["score"] = 123.0
        return ff.encode_score_frame(
            **{k: getattr(fr, k) for k in _HEADER_FIELDS}, rows=rows, idents=fr.idents
        )


_HEADER_FIELDS = (
    "kind stream seq epoch tick_wall sent_wall pressure capacity slot_hwm n_ranked live "
    "registered ejected tick_interval_ms feedback_port weights counts engine engine_run"
).split()


@pytest.fixture
def hostile(shm_names):
    ctx = zmq.Context()
    pubs, endpoints = [], []
    rig = loop = None
    try:
        for _ in ZONES:
            x = ctx.socket(zmq.XPUB)
            x.setsockopt(zmq.LINGER, 0)
            x.setsockopt(zmq.XPUB_VERBOSE, 1)
            port = x.bind_to_random_port("tcp://127.0.0.1")
            pubs.append(x)
            endpoints.append(f"tcp://127.0.0.1:{port}")
        rig = FeedRig(shm_names, zones=ZONES, capacity=CAP, endpoints=endpoints)
        loop = MirrorThread(rig.mirror)
        h = Hostile(rig, pubs, loop)
        for i in range(len(ZONES)):
            h.subscribed(i)
            for k in range(8):
                rig.engines[i].send(f"{ZONES[i]}-n{k}", cpu=0.05 * k, queue=float(k % 3))
            h.resync(i)
        yield h
        assert loop.error is None, loop.error
        assert loop.alive()
    finally:
        try:
            if loop is not None:
                loop.stop()
        finally:
            if rig is not None:
                rig.close()
            for x in pubs:
                x.close(0)
            ctx.term()


def _patch(data: bytes, fmt: str, offset: int, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


# Offsets from docs/feed-format.md: version 4, capacity 56, slot_hwm 60,
# n_rows 80, n_idents 84; the first row at 296 (its slot at 296, state at 300).
MALFORMED = [
    ("truncated header", lambda d: d[:200], "short"),
    ("truncated rows", lambda d: d[:-5], "length"),
    ("bytes after the records", lambda d: d + b"\0" * 72, "length"),
    ("not a score frame", lambda d: b"SHMB" + d[4:], "magic"),
    ("another version", lambda d: _patch(d, "<H", 4, 2), "version"),
    ("one row fewer than sent", lambda d: _patch(d, "<I", 80, 7), "length"),
    ("2^32-1 rows", lambda d: _patch(d, "<I", 80, 0xFFFF_FFFF), "count"),
    ("2^32-1 identities", lambda d: _patch(d, "<I", 84, 0xFFFF_FFFF), "count"),
    ("capacity beyond the format's", lambda d: _patch(d, "<I", 56, 1 << 25), "capacity"),
    ("a row at slot_hwm (8)", lambda d: _patch(d, "<I", 296, 8), "slot"),
    ("a state no node has", lambda d: _patch(d, "<B", 300, 7), "value"),
]


def test_malformed_frames_are_refused_by_reason_and_change_nothing(hostile):
    h = hostile
    bad = h.poisoned(1)
    fr = ff.decode_score_frame(bad)
    assert not isinstance(fr, str)  # the poisoned frame itself is valid ...
    assert (fr.slot_hwm, len(fr.rows)) == (8, 8)  # ... with the sizes MALFORMED assumes
    for what, mangle, reason in MALFORMED:
        before = h.status(1)
        h.send(1, mangle(bad))
        wait_until(
            lambda reason=reason, n=before["refused"][reason]: h.status(1)["refused"][reason] > n,
            10,
            f"{what}: refused as {reason!r}",
            period=0.005,
        )
        after = h.status(1)
        assert after["bad_frames"] == before["bad_frames"] + 1, what
        assert sum(after["refused"].values()) == after["bad_frames"], what
        assert h.exact(0) == [] and h.exact(1) == [], what
        assert h.loop.alive(), what
    # The zone still serves: a full frame of its engine is applied.
    h.rig.engines[1].send("us-n3", cpu=0.5, queue=2.0)
    h.resync(1)
    assert h.exact(0) == []


def test_an_oversized_frame_is_refused_and_the_mirror_reconnects(hostile):
    h = hostile
    bound = ff.score_frame_bound(h.rig.mirror.capacity) + ff.WIRE_SLACK
    h.send(1, h.poisoned(1) + b"\0" * bound)  # over the bound: never allocated by the mirror
    wait_until(lambda: h.status(1)["refused"]["oversize"] == 1, 10, "oversize counted")
    # ZeroMQ dropped that connection; the mirror connected again (a new subscription).
    h.subscribed(1)
    assert h.exact(0) == [] and h.exact(1) == []
    h.rig.engines[1].send("us-n5", cpu=0.4, queue=1.0)
    h.resync(1)
    st = h.status(1)
    assert st["bad_frames"] == 1 and st["state"] == "fresh"


def test_rows_beyond_the_zones_span_never_reach_the_next_zone(hostile):
    h = hostile
    pub = h.rig.pubs[0]
    assert pub.capture()
    # A delta that continues zone eu's stream and claims slots 16..31: zone
    # us's slots on the mirror, were they not cut at eu's span.
    at = np.arange(CAP, 2 * CAP)
    floats = np.full((len(ff.ROW_FLOATS), len(at)), 0.75)
    rows = ff.pack_rows(at, np.zeros(len(at), np.uint8), np.full(len(at), 2, np.uint64), floats)
    idents = np.zeros(len(at), ff.IDENT_DTYPE)
    idents["slot"], idents["registered"], idents["gen"] = at, 1, 2
    idents["node"] = [b"intruder-%d" % s for s in at]
    fr = ff.decode_score_frame(pub.frame(full=True))  # not sent: its seq is the delta's
    assert not isinstance(fr, str)
    data = ff.encode_score_frame(
        **{k: getattr(fr, k) for k in _HEADER_FIELDS if k not in ("kind", "capacity", "slot_hwm")},
        kind=ff.KIND_DELTA,
        capacity=4 * CAP,
        slot_hwm=2 * CAP,
        rows=rows,
        idents=idents,
    )
    before = h.status(0)["overflow"]
    h.send(0, data)
    wait_until(lambda: h.status(0)["overflow"] >= before + 2 * CAP, 10, "overflow counted")
    assert h.exact(0) == [] and h.exact(1) == []
    with ScoreReader.attach(h.rig.mirror.name) as r:
        nodes = {n for n in r.snapshot().nodes if n is not None}
    assert not any(n.startswith("intruder") for n in nodes)
    assert h.status(0)["bad_frames"] == 0 and h.status(1)["nodes"] == 8


@pytest.mark.parametrize("curve", [False, True])
def test_the_engines_feedback_socket_takes_the_largest_frame_and_drops_larger(curve):
    from shm_engine.feed.publisher import feedback_socket

    if curve and not zmq.has("curve"):
        pytest.skip("this libzmq has no CURVE")
    cap = 64
    ctx = zmq.Context()
    pull = feedback_socket(ctx, cap)
    push = ctx.socket(zmq.PUSH)
    try:
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDTIMEO, 5000)
        if curve:  # the limit applies to the frame on the wire: CURVE's is larger
            server_public, server_secret = zmq.curve_keypair()
            pull.curve_secretkey, pull.curve_publickey = server_secret, server_public
            pull.curve_server = True
            push.curve_publickey, push.curve_secretkey = zmq.curve_keypair()
            push.curve_serverkey = server_public
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        # One record of each kind per slot: the largest frame a mirror sends.
        biggest = ff.encode_feedback(
            flags=1,
            mirror=1,
            stream=7,
            seq=1,
            in_flight=np.zeros(cap, ff.IN_FLIGHT_DTYPE),
            outcomes=np.zeros(cap, ff.OUTCOME_DTYPE),
        )
        assert len(biggest) == ff.feedback_frame_bound(cap)
        push.send(biggest)
        assert pull.poll(10_000) and pull.recv() == biggest
        push.send(biggest + b"\0" * (ff.WIRE_SLACK + 64))
        small = biggest[: ff.FEEDBACK_HEADER.size]

        def only_small_arrives():
            try:
                push.send(small, zmq.NOBLOCK)
            except zmq.Again:
                pass  # reconnecting
            if pull.poll(10):
                assert pull.recv() == small  # never the oversized frame
                return True
            return False

        wait_until(only_small_arrives, 10, "a frame after the oversized one", period=0.01)
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()


def test_a_refused_curve_key_is_retried_uncounted_and_served_once_admitted(shm_names, tmp_path):
    from zmq.auth.thread import ThreadAuthenticator
    from zmq.utils.monitor import recv_monitor_message

    from shm_engine.feed.mirror import CurveClient

    if not zmq.has("curve"):
        pytest.skip("this libzmq has no CURVE")
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(tmp_path))  # no key admitted yet
    server_public, server_secret = zmq.curve_keypair()
    x = ctx.socket(zmq.XPUB)
    mon = x.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    rig = loop = None
    try:
        x.setsockopt(zmq.LINGER, 0)
        x.curve_secretkey, x.curve_publickey = server_secret, server_public
        x.curve_server = True
        port = x.bind_to_random_port("tcp://127.0.0.1")
        rig = FeedRig(shm_names, zones=("eu",), capacity=CAP, endpoints=[f"tcp://127.0.0.1:{port}"])
        loop = MirrorThread(rig.mirror, CurveClient(server_public, *zmq.curve_keypair()))
        refusals = [0]

        def refused_twice():
            while mon.poll(0):
                recv_monitor_message(mon)
                refusals[0] += 1
            return refusals[0] >= 2  # ZeroMQ alone would not try a second time

        wait_until(refused_twice, 10, "the mirror trying its refused key again")
        st = read_mirror_status(rig.mirror.name)["zones"][0]
        assert st["bad_frames"] == 0 and st["state"] == "never" and loop.alive()
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        h = Hostile(rig, [x], loop)
        h.subscribed(0)
        rig.engines[0].send("eu-n1", cpu=0.2)
        h.resync(0)
        assert (
            loop.error is None
            and read_mirror_status(rig.mirror.name)["zones"][0]["bad_frames"] == 0
        )
    finally:
        try:
            if loop is not None:
                loop.stop()
        finally:
            if rig is not None:
                rig.close()
            x.disable_monitor()
            mon.close(0)
            x.close(0)
            auth.stop()
            ctx.term()
