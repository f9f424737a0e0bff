"""Taints on the wire: each malformed taint is rejected as ``bad_field`` with
a detail naming it, valid ones are kept sorted after the labels (the node's
meta bytes), and they round-trip through the encoders."""

from __future__ import annotations

import json
import struct

import pytest

from shm_engine.wire import decode_frame
from shm_engine.wire.encode import encode_batch, record_to_dict
from shm_engine.wire.format import join_meta, split_meta
from shm_engine.wire.jsondecode import check_heartbeat

MAX = 1 << 20


def hb(**kw):
    return {**dict(node="n1", cpu=0.5, mem=0.5, queue=0.0, avg_job_s=1.0), **kw}


@pytest.mark.parametrize(
    "taints, detail",
    [
        ("gpu=true:NoSchedule", "taints='gpu=true:NoSchedule' is not an array"),
        ([1], "taint 1 is not key=value:Effect"),
        (["gpu=true"], "taint 'gpu=true' is not key=value:Effect"),
        (["=true:NoSchedule"], "taint '=true:NoSchedule' is not key=value:Effect"),
        (["-gpu=true:NoSchedule"], "is not key=value:Effect"),
        (["gpu=tr ue:NoSchedule"], "is not key=value:Effect"),
        (["gpu=true:NoExecute"], "has effect 'NoExecute', not one of NoSchedule, PreferNoSchedule"),
        (["gpu=a:NoSchedule", "gpu=b:NoSchedule"], "taint gpu:NoSchedule given twice"),
        ([f"k{i}:NoSchedule" for i in range(9)], "taints has 9 entries > 8"),
        # (50 + 1 + 51 + 17) + (50 + 1 + 52 + 17) + 1 comma = 240 bytes: kept;
        # one value byte more: 241
        ([f"{'k' * 49}{i}={'v' * (51 + i)}:PreferNoSchedule" for i in range(2)], None),
        (
            [f"{'k' * 49}{i}={'v' * 52}:PreferNoSchedule" for i in range(2)],
            "taints are 241 bytes > 240",
        ),
    ],
)
def test_malformed_taints_are_rejected_as_bad_field(taints, detail):
    rec, meta, reason, got = check_heartbeat(hb(taints=taints))
    if detail is None:
        assert reason is None and rec is not None
        return
    assert (rec, meta, reason) == (None, None, "bad_field")
    assert got is not None and detail in got


def test_taints_are_kept_sorted_after_the_labels():
    d = decode_frame(
        json.dumps(
            [
                hb(taints=["z=1:NoSchedule", "a:PreferNoSchedule"], labels={"k": "v"}),
                hb(node="n2", taints=["gpu=true:NoSchedule"]),
                hb(node="n3", taints=[]),
                hb(node="n4"),
            ]
        ).encode(),
        MAX,
    )
    assert d.rejects == {}
    assert d.labels == [
        b'{"k":"v"}\na=:PreferNoSchedule,z=1:NoSchedule',
        b"{}\ngpu=true:NoSchedule",
        None,
        None,
    ]
    assert split_meta(d.labels[0]) == (b'{"k":"v"}', ("a=:PreferNoSchedule", "z=1:NoSchedule"))
    assert split_meta(d.labels[1]) == (b"{}", ("gpu=true:NoSchedule",))
    assert split_meta(None) == (None, ())
    assert join_meta(b'{"k":"v"}', ()) == b'{"k":"v"}'


def test_taints_round_trip_through_record_to_dict():
    obj = hb(taints=["gpu=true:NoSchedule"], labels={"a": "b"})
    d = decode_frame(json.dumps(obj).encode(), MAX)
    back = record_to_dict(d.records[0], d.labels[0])
    assert back["taints"] == ["gpu=true:NoSchedule"] and back["labels"] == {"a": "b"}
    only = decode_frame(json.dumps(hb(taints=["x:NoSchedule"])).encode(), MAX)
    back = record_to_dict(only.records[0], only.labels[0])
    assert back["taints"] == ["x=:NoSchedule"] and "labels" not in back


def test_binary_frames_carry_taints_in_version_3():
    hbs = [hb(taints=["x:NoSchedule", "gpu=true:PreferNoSchedule"]), hb(node="n2")]
    frame = encode_batch(hbs)
    version, size = struct.unpack_from("<HH", frame, 4)
    assert (version, size) == (3, 640)
    d = decode_frame(frame, MAX)
    assert d.rejects == {} and len(d.records) == 2
    assert d.labels == [b"{}\ngpu=true:PreferNoSchedule,x=:NoSchedule", None]
    assert encode_batch([hb(node="n2")])[4] == 2  # no taints: version 2
    with pytest.raises(ValueError, match=r"labels cannot travel in a binary frame"):
        encode_batch([hb(taints=["x:NoSchedule"], labels={"a": "b"})])


def _v3(taints: bytes, **kw) -> bytes:
    body = bytearray(encode_batch([hb(taints=["x:NoSchedule"], **kw)]))
    body[16 + 384 :] = taints.ljust(256, b"\0")
    return bytes(body)


@pytest.mark.parametrize(
    "field, detail",
    [
        (b"x:NoExecute", "has effect 'NoExecute'"),
        (b"x:NoSchedule\0junk", "taints field not NUL-padded"),
        (b"x" * 256, "taints field not NUL-padded"),
        ("é:NoSchedule".encode(), "taints field is not ASCII"),
        (b"a:NoSchedule,a:NoSchedule", "taint a:NoSchedule given twice"),
        (b",", "taint '' is not key=value:Effect"),
    ],
)
def test_bad_taints_in_a_binary_record_reject_it(field, detail):
    d = decode_frame(_v3(field), MAX)
    assert d.rejects == {"bad_field": 1} and len(d.records) == 0
    assert detail in d.sample[0][1] and d.sample[0][1].startswith("node 'n1'")


def test_a_version_3_record_is_also_checked_as_version_2():
    d = decode_frame(_v3(b"x:NoSchedule", cpu=0.5), MAX)
    assert d.rejects == {} and d.one is not None and d.labels == [b"{}\nx=:NoSchedule"]
    frame = bytearray(_v3(b"x:NoSchedule"))
    struct.pack_into("<d", frame, 16, 1.5)  # cpu = 1.5
    d = decode_frame(bytes(frame), MAX)
    assert d.rejects == {"bad_field": 1} and "cpu=1.5" in d.sample[0][1]


def test_many_version_3_records_take_the_compiled_check():
    hbs = [hb(node=f"n{i}", taints=[f"k{i % 3}:NoSchedule"]) for i in range(50)]
    hbs[7]["cpu"] = 0.25
    frame = bytearray(encode_batch(hbs))
    struct.pack_into("<d", frame, 16 + 640 * 9, -1.0)  # record 9: cpu out of range
    d = decode_frame(bytes(frame), MAX)
    assert d.rejects == {"bad_field": 1} and len(d.records) == 49
    assert d.labels[9] == b"{}\nk1=:NoSchedule"  # record 10's, the 10th kept


def _recv(sock, limit=MAX):
    assert sock.poll(10_000), "no frame arrived"
    frame = sock.recv()
    return frame, decode_frame(frame, limit)


def test_the_heartbeat_client_sends_taints_in_binary_version_3(pull):
    from clients import HeartbeatClient

    sock, endpoint = pull
    limit = 16 + 3 * 640  # 3 records of version 3 per frame
    records = [hb(node=f"n{i}", taints=[f"k{i}:NoSchedule"] if i % 2 else []) for i in range(7)]
    with HeartbeatClient(endpoint, max_frame_bytes=limit) as client:
        assert client.send(
            "solo", cpu=0.5, mem=0.5, queue=0.0, avg_job_s=1.0, taints=["x:NoSchedule"]
        )
        assert client.send_batch(records) == 7
        frame, d = _recv(sock)
        assert struct.unpack_from("<H", frame, 4)[0] == 3 and d.labels == [b"{}\nx=:NoSchedule"]
        metas = []
        for expected in (3, 3, 1):
            frame, d = _recv(sock, limit)
            assert len(frame) <= limit and d.seen == expected and d.rejects == {}
            metas += d.labels or [None] * len(d.records)  # a chunk without taints: v2
    assert metas == [None if i % 2 == 0 else f"{{}}\nk{i}=:NoSchedule".encode() for i in range(7)]
