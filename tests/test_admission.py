"""shm_engine.ingest.admission and its use by `Ingest`: bindings, budgets, counters.

Tables of patterns and files, token buckets on a logical clock, the ZAP
handler's answers, and `Ingest` with senders: the same rows, registrations
and counters whether a run of frames is handled at once or frame by frame.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import zmq
import zmq.auth
from zmq.utils import z85

from shm_engine import wire
from shm_engine.core.config import Config, with_overrides
from shm_engine.core.layout import N_SENDER_SLOTS
from shm_engine.core.segment import Segment
from shm_engine.ingest.admission import (
    Admission,
    BindingError,
    NodeSet,
    RegistrationBudget,
    Sender,
    SenderCounters,
    load_keys,
    load_peer_bindings,
    read_senders,
)
from shm_engine.ingest.process import Ingest
from shm_engine.ingest.zap import ZapHandler
from shm_engine.wire.format import HEADER, MAGIC, RECORD_SIZE, V1_RECORD_SIZE, V1_VERSION


def hb(node: str, **kw) -> dict:
    return {"node": node, "cpu": 0.5, "mem": 0.25, "queue": 2.0, "avg_job_s": 0.5, **kw}


# ------------------------------------------------------------------ patterns


@pytest.mark.parametrize(
    "patterns, node, admitted",
    [
        (["web-1"], "web-1", True),
        (["web-1"], "web-10", False),  # exact ids match whole
        (["web-*"], "web-10", True),
        (["web-*"], "xweb-1", False),  # globs match the whole id too
        (["db-[0-9]"], "db-3", True),
        (["db-[0-9]"], "db-33", False),
        (["n?"], "n7", True),
        (["*"], "anything at all", True),
        ([], "web-1", False),  # bound to nothing
        (["Web-*"], "web-1", False),  # case-sensitive
        (["zone-é*"], "zone-ég", True),  # UTF-8 ids
    ],
)
def test_node_sets(patterns, node, admitted):
    assert (node.encode() in NodeSet(patterns)) == admitted
    assert Sender("s", NodeSet(patterns)).may_speak_for(node.encode()) == admitted


def test_a_sender_bound_to_nothing_is_refused_and_one_bound_to_all_checks_nothing():
    assert Sender("s", NodeSet(())).refused
    assert Sender("s", NodeSet(["*"])).nodes is None
    assert Sender("s", None).may_speak_for(b"x") and not Sender("s", None).refused


# ------------------------------------------------------------------ key and peer files


def _key(directory, name: str, nodes: str | None = None) -> str:
    """A client key NAME.key in ``directory`` (and NAME.nodes); its Z85."""
    pub, _sec = zmq.auth.create_certificates(str(directory), name)
    os.remove(_sec)
    if nodes is not None:
        (directory / f"{name}.nodes").write_text(nodes)
    return zmq.auth.load_certificate(pub)[0].decode()


def test_keys_are_bound_to_their_nodes_file_or_their_own_name(tmp_path):
    a = _key(tmp_path, "node-a")
    b = _key(tmp_path, "gateway", "# the rack\nrack-7-*\n\n  web-1  \n")
    c = _key(tmp_path, "locked", "")
    (tmp_path / "notes.txt").write_text("ignored")
    senders, problems = load_keys(str(tmp_path))
    assert problems == [] and set(senders) == {a, b, c}
    assert senders[a].name == "node-a" and senders[a].may_speak_for(b"node-a")
    assert not senders[a].may_speak_for(b"node-b")
    assert senders[b].may_speak_for(b"rack-7-12") and senders[b].may_speak_for(b"web-1")
    assert not senders[b].may_speak_for(b"rack-8-1")
    assert senders[c].refused


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "bad.key").write_text("not a key"), r"bad\.key: not a CURVE public key"),
        (lambda d: (d / "node-a.nodes").write_bytes(b"\xff\xfe"), r"node-a\.nodes: not UTF-8"),
        (lambda d: (d / "node-a.nodes").write_text("a\x01b\n"), r"contains a control character"),
        (
            lambda d: (d / "copy.key").write_bytes((d / "node-a.key").read_bytes()),
            r"node-a\.key: the same public key as copy\.key",
        ),  # files are read in name order
    ],
)
def test_a_bad_file_fails_startup_and_is_left_out_of_a_reload(tmp_path, damage, message):
    good = _key(tmp_path, "node-a")
    other = _key(tmp_path, "node-b")
    damage(tmp_path)
    with pytest.raises(BindingError, match=message):
        load_keys(str(tmp_path))
    senders, problems = load_keys(str(tmp_path), strict=False)
    assert len(problems) == 1
    assert other in senders and (good in senders) == ("node-a.nodes" not in problems[0])


def test_a_missing_keys_directory(tmp_path):
    with pytest.raises(BindingError, match="cannot list authorized keys"):
        load_keys(str(tmp_path / "absent"))
    assert load_keys(str(tmp_path / "absent"), strict=False)[0] == {}


def test_peer_bindings(tmp_path):
    path = tmp_path / "peers"
    path.write_text("10.0.0.7 node-7   # one node\n10.0.0.8 web-* db-1\n10.0.0.7 node-7b\n")
    peers, problems = load_peer_bindings(str(path))
    assert problems == [] and set(peers) == {"10.0.0.7", "10.0.0.8"}
    assert b"node-7b" in peers["10.0.0.7"] and b"db-1" in peers["10.0.0.8"]
    adm = Admission(Config().ingest, peers=peers)
    assert adm.sender_of_peer("10.0.0.8").may_speak_for(b"web-3")
    assert adm.sender_of_peer("10.0.0.9").refused  # unlisted
    assert adm.sender_of_peer(None).refused  # e.g. an ipc:// peer
    path.write_text("10.0.0.7\n")
    with pytest.raises(BindingError, match=r"'10\.0\.0\.7' has no node pattern"):
        load_peer_bindings(str(path))


def test_reload_swaps_senders_and_names_revoked_keys(tmp_path):
    a = _key(tmp_path, "node-a")
    adm = Admission(Config().ingest, keys=load_keys(str(tmp_path))[0])
    assert adm.sender_of_key(a).name == "node-a" and not adm.sender_of_key(a).refused
    os.remove(tmp_path / "node-a.key")
    assert adm.reload(str(tmp_path), None) == []
    revoked = adm.sender_of_key(a)
    assert revoked.refused and revoked.name == "node-a (revoked)"
    assert adm.sender_of_key("x" * 40).name.startswith("unknown key")
    assert adm.sender_of_key(None).refused


# ------------------------------------------------------------------ budget


def test_registration_budget_per_sender_and_overall():
    # Per sender: a burst of 3, then 2 per second; overall: a burst of 4.
    b = RegistrationBudget(rate=1.0, burst=4, rate_per_sender=2.0, burst_per_sender=3)
    took = []
    for sender in ["a"] * 5 + ["b"] * 5:
        ok = b.admits(sender, 0.0)
        if ok:
            b.charge(sender)
        took.append(ok)
    assert took == [True] * 3 + [False] * 2 + [True] + [False] * 4  # overall 4 used
    assert b.admits("a", 0.5) is False  # overall refilled 0.5 only
    assert b.admits("a", 1.0) is True  # overall 1, a's own 2
    b.charge("a")
    assert b.admits("b", 1.0) is False  # overall empty again


def test_a_zero_burst_turns_a_bucket_off():
    b = RegistrationBudget(rate=1.0, burst=0, rate_per_sender=1.0, burst_per_sender=0)
    for _ in range(10_000):
        assert b.admits("a", 0.0)
        b.charge("a")


def test_the_sender_table_is_pruned_not_grown_without_bound():
    b = RegistrationBudget(rate=1.0, burst=0, rate_per_sender=1.0, burst_per_sender=2)
    for i in range(10_000):
        assert b.admits(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(b._senders) <= 4096


# ------------------------------------------------------------------ header counters


def test_sender_counters_keep_a_bounded_table_and_survive_a_new_ingest(shm_name):
    seg = Segment.create(shm_name, capacity=4)
    try:
        h = seg.views.header
        c = SenderCounters(h)
        for i in range(40):
            c.add(f"10.0.0.{i}", h.sender_not_authorized, i + 1)
        table = read_senders(h)
        assert len(table) == N_SENDER_SLOTS
        assert table["10.0.0.0"]["not_authorized"] == 1
        assert table["(others)"]["not_authorized"] == sum(range(N_SENDER_SLOTS, 41))
        again = SenderCounters(h)  # a restarted ingest adopts the rows
        again.add("10.0.0.3", h.sender_registration_rate, 5)
        assert read_senders(h)["10.0.0.3"] == {"not_authorized": 4, "registration_rate": 5}
    finally:
        seg.close()
        seg.unlink()


# ------------------------------------------------------------------ ZAP


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_zap_answers():
    public, _secret = zmq.curve_keypair()
    ctx = zmq.Context()
    zap = ZapHandler(ctx, lambda: {public.decode(): Sender("k", None)})
    try:
        raw = z85.decode(public)
        ok = zap._answer([b"1.0", b"7", b"", b"10.0.0.1", b"", b"CURVE", raw])
        assert ok == [b"1.0", b"7", b"200", b"OK", public, b""]
        other = z85.decode(zmq.curve_keypair()[0])
        assert zap._answer([b"1.0", b"8", b"", b"10.0.0.1", b"", b"CURVE", other])[2] == b"400"
        assert zap._answer([b"1.0", b"9", b"", b"10.0.0.1", b"", b"NULL"])[2] == b"400"
        assert zap._answer([b"2.0", b"10"])[2] == b"500"
        assert (zap.accepted, zap.refused) == (1, 3)
    finally:
        zap.close()
        ctx.term()


# ------------------------------------------------------------------ Ingest with senders


def _segment_bytes(seg) -> tuple:
    v = seg.views
    return (
        bytes(v.table.recv_time),
        bytes(v.table.queue),
        bytes(v.registry.node_id),
        bytes(v.registry.slot_gen),
        bytes(v.header.rejects),
        int(v.header.ingest_accepted[0]),
        int(v.header.ingest_heartbeats[0]),
        int(v.header.ingest_frames[0]),
        bytes(v.header.sender_names),
        bytes(v.header.sender_not_authorized),
        bytes(v.header.sender_registration_rate),
    )


@pytest.mark.parametrize("invalid, who", [(True, "ABR"), (False, "AB"), (False, "B")])
def test_runs_with_senders_equal_frame_by_frame(shm_name, monkeypatch, invalid, who):
    """Three senders interleaved (as fair queuing delivers them): one bound
    to ``a-*``, one to ``b-*`` and ``c-*`` with a budget of 3 new nodes
    each, one bound to nothing;
    valid, unauthorized and new-node frames mixed, invalid ones too (then
    the run goes frame by frame: the records no longer line up with their
    senders) or not (the run is one batch); or all from one sender.  Whether
    the frames go through `handle_frames` at once or one by one, the
    segment is the same."""
    config = with_overrides(
        Config(),
        {"ingest.registration_burst_per_sender": 3, "ingest.allow_nodes": ["a-*", "b-*", "c-*"]},
    )
    frames, senders = [], []
    bound = {"A": NodeSet(["a-*"]), "B": NodeSet(["b-*", "c-*"]), "R": NodeSet(())}
    for i in range(60):
        node = f"{'abc'[i % 3]}-{i % 7}" if i % 5 else f"b-{i}"  # some not theirs
        frame = wire.encode_batch([hb(node, queue=float(i))])
        if invalid and i % 11 == 0:  # cpu out of range
            frame = bytearray(frame)
            frame[16:24] = np.float64(2.0).tobytes()
            frame = bytes(frame)
        frames.append(frame)
        senders.append(who[i % len(who)])
    one_by_one = []
    real = Ingest._one_by_one
    monkeypatch.setattr(
        Ingest,
        "_one_by_one",
        lambda self, fs, now, ss: one_by_one.append(len(fs)) or real(self, fs, now, ss),
    )
    results = []
    for together in (False, True):
        seg = Segment.create(f"{shm_name}{int(together)}", capacity=8)
        try:
            ing = Ingest(seg.views, config)
            objs = {k: Sender(k, v) for k, v in bound.items()}
            sent_by = [objs[s] for s in senders]
            if together:
                one_by_one.clear()
                ing.handle_frames(frames, 5.0, sent_by)
                # A sender bound to nothing, or an invalid record among
                # several senders, sends the run frame by frame.
                assert bool(one_by_one) == ("R" in who)
            else:
                for f, s in zip(frames, sent_by, strict=True):
                    ing.handle_frame(f, 5.0, s)
            h = seg.views.header
            assert int(h.ingest_accepted[0]) + int(h.rejects.sum()) == int(h.ingest_heartbeats[0])
            results.append(_segment_bytes(seg))
            reasons = {
                r: int(h.rejects[i]) for i, r in enumerate(wire.REJECT_REASONS) if h.rejects[i]
            }
        finally:
            ing = None
            seg.close()
            seg.unlink()
    assert results[0] == results[1]
    assert reasons["not_authorized"] > 0 and reasons["registration_rate"] > 0
    assert ("bad_field" in reasons) == invalid


def test_frames_over_the_heartbeat_cap_are_refused_undecoded(shm_name):
    config = with_overrides(
        Config(), {"ingest.max_heartbeats_per_frame": 10, "ingest.allow_nodes": ["n-*"]}
    )
    seg = Segment.create(shm_name, capacity=64)
    try:
        ing = Ingest(seg.views, config)
        h = seg.views.header
        ten = [hb(f"n-{i}") for i in range(10)]
        assert ing.handle_frame(wire.encode_batch(ten), 1.0) == 10
        assert ing.handle_frame(wire.encode_batch(ten + [hb("n-10")]), 1.0) == 0
        array = b"[" + b",".join(wire.encode_json(r) for r in ten) + b"]"
        assert ing.handle_frame(array, 1.0) == 10
        with_comma_in_strings = (
            b"["
            + b",".join(wire.encode_json(hb(f"n-{i}", labels={"k": ",,,,"})) for i in range(10))
            + b"]"
        )
        assert ing.handle_frame(with_comma_in_strings, 1.0) == 10  # counted, not over
        assert ing.handle_frame(b"[" + b"{}," * 10 + b"{}]", 1.0) == 0
        assert ing.handle_frame(wire.encode_batch([hb("other")]), 1.0) == 0
        # A wire version 1 frame is held to the cap by its own record size.
        eleven = wire.encode_batch(ten + [hb("n-10")])
        v1 = HEADER.pack(MAGIC, V1_VERSION, V1_RECORD_SIZE, 11, 0) + b"".join(
            eleven[16 + i * RECORD_SIZE : 16 + i * RECORD_SIZE + V1_RECORD_SIZE] for i in range(11)
        )
        assert ing.handle_frame(v1, 1.0) == 0
        counts = {r: int(h.rejects[i]) for i, r in enumerate(wire.REJECT_REASONS) if h.rejects[i]}
        assert counts == {"too_many_heartbeats": 3, "node_not_allowed": 1}
        assert int(h.ingest_heartbeats[0]) == 10 + 1 + 10 + 10 + 1 + 1 + 1
    finally:
        ing = None
        seg.close()
        seg.unlink()
