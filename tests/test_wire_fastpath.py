"""The small-frame binary path (the scalar accept and the fault finder on a
struct unpack) against the compiled batch path: same records, reject
reasons, counts and sample details on random and mutated frames of 1..4
records, and `one` mirrors the record; runs of 1-record frames (of this
version or version 1) decode as one batch like one by one."""

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shm_engine.wire import binary
from shm_engine.wire.binary import batch_faults, decode_one_record_frames, record_fault
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.encode import encode_batch, encode_json
from shm_engine.wire.format import (
    HEADER,
    MAGIC,
    ONE_FRAME_SIZE,
    RECORD_DTYPE,
    RECORD_SIZE,
    RECORD_STRUCT,
    V1_RECORD_SIZE,
    V1_VERSION,
)
from shm_engine.wire.jsondecode import check_mapping, decode_json_objects
from support.heartbeats import FULL, MAX, MINIMAL

BASES = [
    FULL,
    MINIMAL,
    dict(MINIMAL, node="a.b_c:d-e/F", zone="zé"),
    dict(FULL, node="x" * 63),
    dict(MINIMAL, ok=2**32 - 1, err=0, zone="z" * 31, slots=65535),
    dict(MINIMAL, slots=4, resources={"cpu": 16.0, "gpü": 2.0, "m" * 15: 0.0}),
    dict(FULL, resources={f"r{i}": float(i) for i in range(8)}),
]
R = RECORD_SIZE

FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1.0000000000000002,
    5e-324,
    -5e-324,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    3.0,
    9.0,
]
F8_NAMES = [
    "cpu",
    "mem",
    "queue",
    "avg_job_s",
    "throughput",
    "io",
    "p50_ms",
    "p95_ms",
    "ts",
    "res_value0",
    "res_value1",
    "res_value7",
]
# Bytes that sit on rule boundaries: NUL, controls, DEL, C1 lead bytes, invalid UTF-8.
BYTES = [
    0x00,
    0x01,
    0x09,
    0x1F,
    0x20,
    0x41,
    0x7E,
    0x7F,
    0x80,
    0x85,
    0x9F,
    0xC2,
    0xC3,
    0xE2,
    0xFF,
    0x40,
    0x3F,
]

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def both(frame: bytes):
    mv = memoryview(frame)
    count = struct.unpack_from("<I", frame, 8)[0]
    for i in range(count):
        # the one-expression accept passes exactly what the fault finder passes
        v = RECORD_STRUCT.unpack_from(mv, 16 + R * i)
        assert binary._accept(v) == (record_fault(v) is None)
    small, large = binary._decode_small(mv, count), binary._decode_large(mv, count)
    if count == 1:  # decode_frame's inlined 1-record path
        whole = decode_frame(frame, MAX)
        assert_same(whole, large)
        assert whole.one == small.one
    return small, large


def assert_same(small, large):
    assert small.records.dtype == RECORD_DTYPE
    assert small.records.tobytes() == large.records.tobytes()
    assert small.rejects == large.rejects
    assert list(small.rejects) == list(large.rejects)  # first-seen order too
    assert small.seen == large.seen
    assert small.sample == large.sample
    assert small.labels is None and large.labels is None


def assert_one_mirrors_records(d):
    if d.one is None:
        assert not (d.seen == 1 and len(d.records) == 1)
        return
    assert d.seen == 1 and len(d.records) == 1
    assert d.one == d.records[0].item()  # S fields read back without padding
    assert all(type(x) is float for x in d.one[:9])
    assert all(type(x) is int for x in d.one[9:13])  # ok, err, flags, slots
    assert all(type(x) is bytes for x in d.one[13:23])  # node, zone, resource names
    assert all(type(x) is float for x in d.one[23:])  # resource values


def summed_rejects(decoded) -> dict:
    """The reject counts of decoded frames, summed by reason."""
    expect: dict = {}
    for d in decoded:
        for r, c in d.rejects.items():
            expect[r] = expect.get(r, 0) + c
    return expect


def body_of(bases) -> bytearray:
    return bytearray(
        encode_batch([dict(b, node=f"{b['node'][:60]}{i}") for i, b in enumerate(bases)])
    )


@FUZZ
@given(
    st.lists(st.sampled_from(BASES), min_size=1, max_size=4),
    st.lists(
        st.tuples(st.integers(0, 4 * R - 1), st.sampled_from(BYTES) | st.integers(0, 255)),
        max_size=6,
    ),
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(F8_NAMES), st.sampled_from(FLOATS)), max_size=3
    ),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 255)), max_size=2),
)
def test_small_path_agrees_with_the_compiled_one(bases, pokes, floats, flags):
    frame = body_of(bases)
    n = len(bases)
    for rec, name, value in floats:
        struct.pack_into("<d", frame, 16 + (rec % n) * R + RECORD_DTYPE.fields[name][1], value)
    for rec, value in flags:
        frame[16 + (rec % n) * R + 80] = value
    for pos, value in pokes:
        frame[16 + pos % (n * R)] = value
    small, large = both(bytes(frame))
    assert_same(small, large)
    assert_one_mirrors_records(small)


@FUZZ
@given(
    st.lists(st.sampled_from(BASES), min_size=5, max_size=12),
    st.lists(
        st.tuples(st.integers(0, 12 * R - 1), st.sampled_from(BYTES) | st.integers(0, 255)),
        max_size=8,
    ),
)
def test_the_scalar_path_for_senders_agrees_with_the_compiled_one(bases, pokes):
    """`decode_binary(compiled=False)` (what `HeartbeatClient` checks with, no
    numba) on frames above the small-frame size: what the compiled path gives."""
    frame = body_of(bases)
    for pos, value in pokes:
        frame[16 + pos % (len(bases) * R)] = value
    mv = memoryview(bytes(frame))
    assert_same(binary.decode_binary(mv, compiled=False), binary.decode_binary(mv))


@FUZZ
@given(st.integers(1, 4), st.binary(min_size=R * 4, max_size=R * 4))
def test_small_path_agrees_on_random_records(n, body):
    frame = struct.pack("<4sHHII", b"SHMH", 2, R, n, 0) + body[: n * R]
    small, large = both(frame)
    assert_same(small, large)
    assert_one_mirrors_records(small)


def test_decode_frame_takes_the_small_path_up_to_4_records(monkeypatch):
    calls = []
    real = binary._decode_large
    monkeypatch.setattr(binary, "_decode_large", lambda mv, n: calls.append(n) or real(mv, n))
    for n in (1, 4, 5):
        d = decode_frame(bytes(body_of(BASES[:1] * n)), MAX)
        assert d.rejects == {} and len(d.records) == n
    assert calls == [5]


def test_one_is_set_for_a_single_accepted_heartbeat_of_either_kind():
    b = decode_frame(encode_batch([FULL]), MAX)
    j = decode_frame(encode_json(FULL), MAX)
    assert b.one == j.one == j.records[0].item()
    assert b.one[13:15] == (b"n7", b"eu-1")
    assert decode_frame(encode_batch([FULL, MINIMAL]), MAX).one is None
    assert decode_frame(json.dumps(dict(FULL, cpu=2.0)).encode(), MAX).one is None
    assert decode_frame(b"[" + encode_json(FULL) + b"]", MAX).one == j.one


def test_json_records_are_packed_like_the_structured_assignment():
    objs = [
        FULL,
        MINIMAL,
        dict(MINIMAL, node="n:1", zone="zé", labels={"a": "b"}),
        dict(MINIMAL, slots=3, resources={"gpu": 2.0, "cpu": 0.5}),
    ]
    d = decode_frame(json.dumps(objs).encode(), MAX)
    expect = np.zeros(len(objs), RECORD_DTYPE)
    for i, o in enumerate(objs):
        expect[i] = check_mapping(dict(o))[0]
    assert d.rejects == {} and d.records.tobytes() == expect.tobytes()
    assert d.records.flags.writeable


@pytest.mark.parametrize(
    "value", [0x00, 0x01, 0x1F, 0x20, 0x41, 0x7E, 0x7F, 0x80, 0x85, 0xC2, 0xE2, 0xFF]
)
def test_compiled_batch_check_agrees_byte_by_byte(value):
    """The compiled batch check tests node, zone and resource name bytes 8 at
    a time (and byte by byte where one is >= 0x80): poke every byte of those
    fields, the slots and the resource values (and the words around them) in
    turn, on a record with a zone, one without, one whose zone is already
    multi-byte UTF-8 and ones with resources (one full); the compiled check
    must name the fault finder's first broken rule exactly."""
    base = dict(cpu=0.5, mem=0.5, queue=1.0, avg_job_s=0.1)
    frame = encode_batch(
        [
            dict(base, node="node-0001", zone="eu-west-1a"),
            dict(base, node="n" * 63, slots=2),
            dict(base, node="n.o_d:e-/", zone="zé"),
            dict(base, node="r", resources={"gpu": 1.0, "é€": 2.5}),
            dict(base, node="f", resources={f"n{i}": 1.0 for i in range(8)}),
        ]
    )
    base = np.frombuffer(frame, np.uint8, 5 * R, 16).reshape(5, R)
    for row in range(5):
        for pos in range(72, R):
            raw = base.copy()
            raw[row, pos] = value
            faults, _ = batch_faults(raw)
            expect = [
                0 if (f := record_fault(RECORD_STRUCT.unpack(r.tobytes()))) is None else f[0] + 1
                for r in raw
            ]
            assert faults.tolist() == expect, (row, pos)


def test_one_record_frames_decode_as_one_batch_like_one_by_one():
    """decode_one_record_frames: the records, reject counts and seen of the
    frames decoded one by one; None when a frame is not a 1-record frame."""
    rng = np.random.default_rng(11)
    good = encode_batch([dict(cpu=0.5, mem=0.5, queue=1.0, avg_job_s=0.1, node="a", zone="z")])
    frames = []
    for i in range(200):
        f = bytearray(good)
        if i % 7 == 0:
            f[16 + int(rng.integers(0, R))] = int(rng.integers(0, 256))
        frames.append(bytes(f))
    one_by_one = [decode_frame(f, 1 << 20) for f in frames]
    batch = decode_one_record_frames(frames)
    assert batch.seen == 200
    assert batch.records.tobytes() == b"".join(d.records.tobytes() for d in one_by_one)
    expect = summed_rejects(one_by_one)
    assert batch.rejects == expect and expect
    assert (
        decode_one_record_frames(frames[:3] + [b"{" + b" " * (ONE_FRAME_SIZE - 2) + b"}"]) is None
    )
    bad_header = bytearray(good)
    bad_header[4] = 3  # version 3
    assert decode_one_record_frames([good, bytes(bad_header)]) is None
    assert decode_one_record_frames([good, good[:-1]]) is None


def v1_frame(record_bytes: bytes) -> bytes:
    """A 1-record version 1 frame of a record's first 192 bytes."""
    return HEADER.pack(MAGIC, V1_VERSION, V1_RECORD_SIZE, 1, 0) + record_bytes[:V1_RECORD_SIZE]


def test_version_1_frames_decode_as_their_zero_extended_records():
    """Version 1 (192-byte records): one by one, as a run, and in batches of
    any size, the records are the v2 records the bytes extend to with zeros;
    a v1 record that sets a bit version 1 did not know is rejected."""
    rng = np.random.default_rng(5)
    good = encode_batch([dict(FULL, node="old-1")])[16:]
    assert good[V1_RECORD_SIZE:] == bytes(R - V1_RECORD_SIZE)  # nothing v2-only in it
    frames = []
    for i in range(60):
        f = bytearray(v1_frame(good))
        if i % 5 == 0:
            f[16 + int(rng.integers(0, V1_RECORD_SIZE))] = int(rng.integers(0, 256))
        if i % 10 == 3:
            f[16 + 80] |= 0x40  # HAS_SLOTS: unknown in v1
        frames.append(bytes(f))
    one_by_one = [decode_frame(f, MAX) for f in frames]
    for f, d in zip(frames, one_by_one, strict=True):
        assert d.seen == 1
        if len(d.records):
            assert d.records.tobytes() == f[16:] + bytes(R - V1_RECORD_SIZE)
        if f[16 + 80] & 0x40:
            assert d.rejects == {"bad_field": 1}
            assert "has bits unknown in version 1" in d.sample[0][1]
    batch = decode_one_record_frames(frames)
    assert batch.seen == 60
    assert batch.records.tobytes() == b"".join(d.records.tobytes() for d in one_by_one)
    expect = summed_rejects(one_by_one)
    assert batch.rejects == expect and expect
    # One v1 frame of many records, through both paths: the same again.
    body = b"".join(f[16:] for f in frames)
    many = HEADER.pack(MAGIC, V1_VERSION, V1_RECORD_SIZE, 60, 0) + body
    for compiled in (True, False):
        d = binary.decode_binary(memoryview(many), compiled=compiled)
        assert d.seen == 60 and d.records.tobytes() == batch.records.tobytes()
        assert d.rejects == expect
    # Version 1 checked the node id before the flags: so does its decode.
    bad_id = bytearray(v1_frame(good))
    bad_id[16 + 80] |= 0x80
    bad_id[16 + 88] = ord(" ")
    assert decode_frame(bytes(bad_id), MAX).rejects == {"bad_node_id": 1}
    # A v1 run mixed with a current frame is decoded frame by frame.
    assert decode_one_record_frames(frames[:3] + [encode_batch([FULL])]) is None


def test_json_objects_decode_as_one_batch_like_one_by_one():
    """decode_json_objects: records, labels, reject counts and samples of the
    frames decoded one by one, merged in frame order."""
    base = dict(node="a", cpu=0.5, mem=0.5, queue=1.0, avg_job_s=0.1)
    frames = [
        encode_json(
            dict(base, node=f"n{i}", labels={"k": str(i)})
            if i % 4 == 0
            else dict(base, node=f"n{i}")
        )
        for i in range(12)
    ]
    frames[2] = b'{"node": "x", "cpu": -1, "mem": 0.1, "queue": 1, "avg_job_s": 1}'
    frames[5] = b'{"node": '
    frames[7] = b'{"node": "x", "node": "y"}'
    frames[9] = b'{"node": "\\u0001", "cpu": 0.1, "mem": 0.1, "queue": 1, "avg_job_s": 1}'
    one_by_one = [decode_frame(f, MAX) for f in frames]
    batch = decode_json_objects(frames)
    assert batch.seen == len(frames)
    assert batch.records.tobytes() == b"".join(d.records.tobytes() for d in one_by_one)
    assert batch.labels == [lab for d in one_by_one for lab in d.labels or []]
    expect = summed_rejects(one_by_one)
    assert batch.rejects == expect and sum(expect.values()) == 4
    assert batch.sample == [s for d in one_by_one for s in d.sample][:3]
