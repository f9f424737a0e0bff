"""Heartbeat frame decoding: every rule and reject reason, round trips, the
rule table and the checks generated from it, and fuzzing (nothing raises;
every heartbeat is accounted for)."""

import json
import math
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shm_engine.wire
from shm_engine.wire import binary, jsondecode, rulecode
from shm_engine.wire import decode as decode_mod
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.encode import encode_batch, encode_json, node_key, record_to_dict
from shm_engine.wire.format import (
    FIELD_INDEX,
    FIELDS,
    KNOWN_FIELDS,
    OPTIONAL_FIELDS,
    RECORD_DTYPE,
    RECORD_RULES,
    RECORD_SIZE,
    RECORD_STRUCT,
    REJECT_REASONS,
    REQUIRED_FIELDS,
    RESERVED_SPANS,
    Labels,
    Resources,
    names_of,
)
from shm_engine.wire.jsondecode import check_heartbeat
from support.heartbeats import FULL, MAX, MINIMAL


def hb(**over):
    d = dict(MINIMAL)
    for k, v in over.items():
        if v is DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return d


DROP = object()


def accounted(d):
    return len(d.records) + sum(d.rejects.values()) == d.seen


def jframe(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


# ------------------------------------------------------------------ layout


def test_record_layout_is_the_documented_one():
    assert RECORD_DTYPE.itemsize == RECORD_SIZE == 384
    offsets = {name: RECORD_DTYPE.fields[name][1] for name in RECORD_DTYPE.names}
    assert offsets == dict(
        cpu=0,
        mem=8,
        queue=16,
        avg_job_s=24,
        throughput=32,
        io=40,
        p50_ms=48,
        p95_ms=56,
        ts=64,
        ok=72,
        err=76,
        flags=80,
        slots=82,
        node=88,
        zone=152,
        **{f"res_name{i}": 192 + 16 * i for i in range(8)},
        **{f"res_value{i}": 320 + 8 * i for i in range(8)},
    )
    assert RECORD_DTYPE["slots"] == np.dtype("<u2")
    # The decoder's reasons first, then those only the ingest counts (each
    # a fixed counter slot in the segment header).
    assert REJECT_REASONS[8:] == (
        "registry_full",
        "too_many_heartbeats",
        "not_authorized",
        "node_not_allowed",
        "registration_rate",
    )
    assert len(set(REJECT_REASONS)) == 13
    assert RESERVED_SPANS == ((81, 82), (84, 88), (184, 192))
    assert REQUIRED_FIELDS == ("node", "cpu", "mem", "queue", "avg_job_s")
    assert OPTIONAL_FIELDS == (
        "throughput",
        "ok",
        "err",
        "io",
        "p50_ms",
        "p95_ms",
        "slots",
        "resources",
        "ts",
        "zone",
        "labels",
        "taints",
    )
    assert [type(r).__name__ for r in RECORD_RULES] == (
        ["Text", "FlagsByte"] + ["Number"] * 9 + ["Resources", "Number", "Text", "ReservedBytes"]
    )


def test_the_package_exports_its_public_surface():
    for name in shm_engine.wire.__all__:
        assert getattr(shm_engine.wire, name) is not None, name
    assert shm_engine.wire.decode_frame is decode_frame


def test_the_rendered_modules_are_those_of_the_current_table():
    """`_checks.py` and `_scalar.py` are generated (``python -m
    shm_engine.wire``): they must be what the current table renders, or the
    fast checks and the reference walks disagree."""
    assert rulecode.CHECKS_PATH.read_text() == rulecode.render_checks()
    assert rulecode.SCALAR_PATH.read_text() == rulecode.render_scalar()


# ------------------------------------------------------------------ JSON accept / reject table

ACCEPT = [
    ("minimal", hb()),
    ("full", dict(FULL, labels={"rack": "r1", "gpu": "a100"})),
    ("bounds", hb(cpu=0, mem=1, queue=0, avg_job_s=0, io=1.0, throughput=0)),
    ("ints as floats", hb(cpu=1, queue=7)),
    ("p95 == p50", hb(p50_ms=2.0, p95_ms=2.0)),
    ("max counts", hb(ok=2**32 - 1, err=0)),
    ("negative ts", hb(ts=-5.0)),
    ("empty zone", hb(zone="")),
    ("31-byte zone", hb(zone="z" * 31)),
    ("63-byte id", hb(node="n" * 63)),
    ("every id character", hb(node="AZaz09._:-/")),
    ("empty labels", hb(labels={})),
    ("slots 1", hb(slots=1)),
    ("slots 65535", hb(slots=65535)),
    ("resources", hb(resources={"cpu": 64.0, "gpu": 0.0, "mem_gib": 251.5})),
    ("8 resources", hb(resources={f"r{i}": float(i) for i in range(8)})),
    ("15-byte resource name", hb(resources={"r" * 15: 1.0})),
    # 14 bytes; a control is allowed
    ("utf-8 resource name", hb(resources={"é" * 7: 1.0, "\t": 2.0})),
    ("empty resources", hb(resources={})),
    ("everything", dict(FULL, slots=8, resources={"gpu": 2.0}, labels={"a": "b"})),
]


@pytest.mark.parametrize("name,obj", ACCEPT, ids=[a[0] for a in ACCEPT])
def test_json_accepts(name, obj):
    d = decode_frame(jframe(obj), MAX)
    assert d.rejects == {} and d.seen == 1 and len(d.records) == 1
    assert record_to_dict(d.records[0], d.labels[0]) == obj


# (case, heartbeat, reason, detail regex)
REJECT = [
    ("unknown key", hb(colour="red"), "unknown_field", r"unknown field 'colour'"),
    ("tick is not a heartbeat key", hb(tick=3), "unknown_field", r"'tick'"),
    ("node missing", hb(node=DROP), "missing_field", r"node \?: missing node"),
    ("cpu missing", hb(cpu=DROP), "missing_field", r"node 'n7': missing cpu"),
    ("avg_job_s missing", hb(avg_job_s=DROP), "missing_field", r"missing avg_job_s"),
    ("id empty", hb(node=""), "bad_node_id", r"empty"),
    ("id 64 bytes", hb(node="n" * 64), "bad_node_id", r"64 bytes > 63"),
    ("id 22 x 3-byte chars", hb(node="€" * 22), "bad_node_id", r"66 bytes > 63"),
    ("id not a string", hb(node=7), "bad_node_id", r"not a string"),
    ("id C0 control", hb(node="a\nb"), "bad_node_id", r"character outside 0-9 A-Z a-z - \. / : _$"),
    ("id DEL", hb(node="a\x7f"), "bad_node_id", r"character outside"),
    ("id C1 control", hb(node="a\x85"), "bad_node_id", r"character outside"),
    ("id NUL", hb(node="a\x00b"), "bad_node_id", r"character outside"),
    ("id space", hb(node="a b"), "bad_node_id", r"'a b' has a character outside"),
    ("id UTF-8", hb(node="nœud"), "bad_node_id", r"character outside"),
    ("id look-alike letter", hb(node="n\u043ede"), "bad_node_id", r"character outside"),
    ("id other punctuation", hb(node="a@b"), "bad_node_id", r"character outside"),
    ("id lone surrogate", hb(node="a\ud800"), "bad_node_id", r"UTF-8"),
    ("cpu > 1", hb(cpu=1.5), "bad_field", r"node 'n7': cpu=1\.5 out of \[0, 1\]"),
    ("cpu < 0", hb(cpu=-0.1), "bad_field", r"cpu=-0\.1 out of \[0, 1\]"),
    ("mem NaN", hb(mem=math.nan), "bad_field", r"mem=nan is not finite"),
    ("queue inf", hb(queue=math.inf), "bad_field", r"queue=inf is not finite"),
    ("queue < 0", hb(queue=-1), "bad_field", r"queue=-1\.0 out of \[0, inf\)"),
    ("avg_job_s < 0", hb(avg_job_s=-0.5), "bad_field", r"avg_job_s=-0\.5 out of"),
    ("bool is not a number", hb(cpu=True), "bad_field", r"cpu=True is not a number"),
    ("string is not a number", hb(cpu="0.5"), "bad_field", r"cpu='0\.5' is not a number"),
    ("null is not a number", hb(queue=None), "bad_field", r"queue=None is not a number"),
    ("huge int overflows", hb(queue=10**400), "bad_field", r"overflows float64"),
    ("throughput < 0", hb(throughput=-1.0), "bad_field", r"throughput=-1\.0"),
    ("io > 1", hb(io=1.01), "bad_field", r"io=1\.01 out of \[0, 1\]"),
    ("ok alone", hb(ok=1), "missing_field", r"ok without its pair"),
    ("err alone", hb(err=1), "missing_field", r"err without its pair"),
    ("ok float", hb(ok=1.0, err=0), "bad_field", r"ok=1\.0 is not an integer"),
    ("ok bool", hb(ok=True, err=0), "bad_field", r"ok=True is not an integer"),
    ("err negative", hb(ok=0, err=-1), "bad_field", r"err=-1 out of \[0, 4294967295\]"),
    ("ok 2**32", hb(ok=2**32, err=0), "bad_field", r"ok=4294967296 out of"),
    ("p50 alone", hb(p50_ms=1.0), "missing_field", r"p50_ms without its pair"),
    ("p95 alone", hb(p95_ms=1.0), "missing_field", r"p95_ms without its pair"),
    ("p50 zero", hb(p50_ms=0.0, p95_ms=1.0), "bad_field", r"p50_ms=0\.0 out of \(0, inf\)"),
    ("p95 < p50", hb(p50_ms=5.0, p95_ms=3.0), "bad_field", r"p95_ms=3\.0 < p50_ms=5\.0"),
    ("slots 0", hb(slots=0), "bad_field", r"slots=0 out of \[1, 65535\]"),
    ("slots 65536", hb(slots=65536), "bad_field", r"slots=65536 out of"),
    ("slots float", hb(slots=2.0), "bad_field", r"slots=2\.0 is not an integer"),
    ("slots bool", hb(slots=True), "bad_field", r"slots=True is not an integer"),
    ("slots null", hb(slots=None), "bad_field", r"slots=None is not an integer"),
    (
        "resources not an object",
        hb(resources=[1]),
        "bad_field",
        r"resources=\[1\] is not an object",
    ),
    (
        "9 resources",
        hb(resources={f"r{i}": 1.0 for i in range(9)}),
        "bad_field",
        r"resources has 9 names > 8",
    ),
    ("resource name empty", hb(resources={"": 1.0}), "bad_field", r"resource name is empty"),
    (
        "resource name 16 bytes",
        hb(resources={"r" * 16: 1.0}),
        "bad_field",
        r"resource name is 16 bytes > 15",
    ),
    (
        "resource name 8 x 2-byte chars",
        hb(resources={"é" * 8: 1.0}),
        "bad_field",
        r"resource name is 16 bytes > 15",
    ),
    ("resource name NUL", hb(resources={"a\x00": 1.0}), "bad_field", r"resource name contains NUL"),
    (
        "resource negative",
        hb(resources={"gpu": -1.0}),
        "bad_field",
        r"resources 'gpu'=-1\.0 out of \[0, inf\)",
    ),
    ("resource NaN", hb(resources={"gpu": math.nan}), "bad_field", r"gpu.*not finite"),
    ("resource bool", hb(resources={"gpu": True}), "bad_field", r"'gpu'=True is not a number"),
    ("resource string", hb(resources={"gpu": "2"}), "bad_field", r"is not a number"),
    ("ts NaN", hb(ts=math.nan), "bad_field", r"ts=nan is not finite"),
    ("ts string", hb(ts="now"), "bad_field", r"ts='now' is not a number"),
    ("zone 32 bytes", hb(zone="z" * 32), "bad_field", r"zone is 32 bytes > 31"),
    ("zone not a string", hb(zone=3), "bad_field", r"zone=3 is not a string"),
    ("zone NUL", hb(zone="a\x00"), "bad_field", r"zone contains NUL"),
    ("labels not an object", hb(labels=["a"]), "bad_field", r"labels=\['a'\] is not an object"),
    ("label value not a string", hb(labels={"a": 1}), "bad_field", r"label 'a'=1 is not str"),
    ("labels too large", hb(labels={"k": "v" * 300}), "bad_field", r"labels are 308 bytes > 256"),
]


@pytest.mark.parametrize("name,obj,reason,detail", REJECT, ids=[r[0] for r in REJECT])
def test_json_rejects(name, obj, reason, detail):
    d = decode_frame(
        jframe(obj) if name != "id lone surrogate" else json.dumps(obj, ensure_ascii=True).encode(),
        MAX,
    )
    assert d.rejects == {reason: 1} and d.seen == 1 and len(d.records) == 0
    ((got_reason, got_detail),) = d.sample
    assert got_reason == reason
    assert re.search(detail, got_detail), got_detail
    # check_heartbeat (the replay path) agrees on reason and detail
    rec, labels, r, det = check_heartbeat(json.loads(jframe(obj)))
    assert (rec, labels, r, det) == (None, None, reason, got_detail)


def test_labels_at_the_limit():
    # {"k":"<v>"} is 8 bytes + len(v): 248 'v's make exactly 256 bytes.
    assert decode_frame(jframe(hb(labels={"k": "v" * 248})), MAX).rejects == {}
    assert decode_frame(jframe(hb(labels={"k": "v" * 249})), MAX).rejects == {"bad_field": 1}


def test_labels_are_canonical():
    d = decode_frame(
        b'{"node":"a","cpu":0,"mem":0,"queue":0,"avg_job_s":0,"labels":{"z": "1", "a": "\\u00e9"}}',
        MAX,
    )
    assert d.labels == ['{"a":"é","z":"1"}'.encode()]


def test_duplicate_keys_are_rejected():
    d = decode_frame(b'{"node":"a","cpu":0,"cpu":2,"mem":0,"queue":0,"avg_job_s":0}', MAX)
    assert d.rejects == {"bad_field": 1}
    assert "field 'cpu' given twice" in d.sample[0][1]
    d = decode_frame(
        b'{"node":"a","cpu":0,"mem":0,"queue":0,"avg_job_s":0,"resources":{"gpu":1,"gpu":2}}', MAX
    )
    assert d.rejects == {"bad_field": 1}
    assert "resources name 'gpu' given twice" in d.sample[0][1]


def test_slots_and_resources_in_the_record():
    rec, _, reason, _ = check_heartbeat(hb(slots=12, resources={"gpu": 2.0, "cpu": 64.0}))
    assert reason is None
    assert int(rec["slots"]) == 12 and int(rec["flags"]) == 0x40 | 0x80
    assert [bytes(rec[f"res_name{i}"]) for i in range(3)] == [b"gpu", b"cpu", b""]
    assert [float(rec[f"res_value{i}"]) for i in range(3)] == [2.0, 64.0, 0.0]
    rec, _, _, _ = check_heartbeat(hb())
    assert int(rec["slots"]) == 0 and int(rec["flags"]) == 0  # absent: the row writes 1


def test_check_order_unknown_then_node_then_missing():
    # three problems at once: the first in the documented order names the reason
    assert check_heartbeat({"node": "", "x": 1})[2] == "unknown_field"
    assert check_heartbeat({"node": ""})[2] == "bad_node_id"
    assert check_heartbeat({"node": "a", "cpu": 9})[2] == "missing_field"


def test_check_heartbeat_returns_a_record():
    rec, labels, reason, detail = check_heartbeat(dict(FULL, labels={"a": "b"}))
    assert reason is None and detail is None and labels == b'{"a":"b"}'
    assert rec.dtype == RECORD_DTYPE and node_key(rec) == b"n7"
    assert int(rec["flags"]) == 63
    assert check_heartbeat([1])[2] == "malformed_heartbeat"


# ------------------------------------------------------------------ JSON frames


@pytest.mark.parametrize(
    "frame,detail",
    [
        (b"{", r"invalid JSON"),
        (b"[1,", r"invalid JSON"),
        (b"{}x", r"invalid JSON"),
        (b'{"node": "\xff"}', r"invalid UTF-8 at byte 10"),
        (b" 3", r"top level is int"),
        (b'\n"x"', r"top level is str"),
        (b"[" * 33 + b"]" * 33, r"nesting deeper than 32"),
        (b"[" * 100000, r"nesting deeper than 32"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, r"nesting deeper than 32"),
        (b'[{"q":"' + b'\\"' * 5000 + b"[" * 40, r"nesting deeper than 32|invalid JSON"),
        (b"[" + b"1" * 5000 + b"]", r"invalid JSON"),  # past int digit limit
        (b"\xef\xbb\xbf{}", r"unknown frame kind"),  # BOM
        (b"xyz", r"unknown frame kind \(first byte 0x78\)"),
        (b"", r"empty frame"),
    ],
)
def test_malformed_frames(frame, detail):
    d = decode_frame(frame, MAX)
    assert d.rejects == {"malformed_frame": 1} and d.seen == 1 and len(d.records) == 0
    assert re.search(detail, d.sample[0][1]), d.sample


def test_depth_32_is_allowed_and_brackets_in_strings_do_not_count():
    d = decode_frame(b"[" * 32 + b"]" * 32, MAX)
    assert "malformed_frame" not in d.rejects
    obj = hb(labels={"k": "[" * 40 + "{" * 40})
    assert decode_frame(jframe(obj), MAX).rejects == {}


def test_recursion_error_is_malformed(monkeypatch):
    def deep(_text):
        raise RecursionError

    monkeypatch.setattr(jsondecode.JSON_DECODER, "decode", deep)
    # NaN: a frame orjson refuses, so the reference parser reads it.
    assert decode_frame(b'{"node": "a", "cpu": NaN}', MAX).rejects == {"malformed_frame": 1}


def test_bad_heartbeat_in_json_array_keeps_the_good_ones():
    frame = jframe(
        [
            hb(node="a"),
            hb(node="b", cpu=7),
            5,
            hb(node="c", labels={"x": "y"}),
            hb(node="d", extra=1),
        ]
    )
    d = decode_frame(frame, MAX)
    assert d.seen == 5 and [node_key(r) for r in d.records] == [b"a", b"c"]
    assert d.labels == [None, b'{"x":"y"}']
    assert d.rejects == {"bad_field": 1, "malformed_heartbeat": 1, "unknown_field": 1}
    assert [r for r, _ in d.sample] == ["bad_field", "malformed_heartbeat", "unknown_field"]


def test_empty_array_and_sample_is_capped():
    assert decode_frame(b"[]", MAX).seen == 0
    d = decode_frame(jframe([hb(cpu=9)] * 10), MAX)
    assert d.rejects == {"bad_field": 10} and len(d.sample) == 3


# ------------------------------------------------------------------ frame_too_large


def test_frame_too_large_is_not_decoded(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("decoded a frame that is too large")

    monkeypatch.setattr(json, "loads", boom)
    monkeypatch.setattr(jsondecode, "parse_json", boom)
    monkeypatch.setattr(decode_mod, "decode_json", boom)
    monkeypatch.setattr(decode_mod, "decode_binary", boom)
    for frame in (jframe([hb()] * 20), encode_batch([hb()] * 20)):
        d = decode_frame(frame, len(frame) - 1)
        assert d.rejects == {"frame_too_large": 1} and d.seen == 1
        assert d.sample == [
            ("frame_too_large", f"frame: {len(frame)} bytes > max {len(frame) - 1}")
        ]
    # exactly max is fine
    monkeypatch.undo()
    frame = encode_batch([hb()])
    assert decode_frame(frame, len(frame)).rejects == {}


# ------------------------------------------------------------------ binary frames


def test_round_trip_binary():
    records = (
        [dict(FULL, node=f"n{i}") for i in range(50)]
        + [hb(node="x" * 63)]
        + [hb(node="r", slots=3, resources={"gpu": 4.0, "ü": 0.5})]
    )
    d = decode_frame(encode_batch(records), MAX)
    assert d.rejects == {} and d.seen == 52 and d.labels is None
    assert [record_to_dict(r) for r in d.records] == records
    assert d.records.flags.writeable
    # the array form encodes to the same bytes
    assert encode_batch(d.records) == encode_batch(records)


def test_round_trip_json_and_binary_give_the_same_record():
    j = decode_frame(encode_json(FULL), MAX).records
    b = decode_frame(encode_batch([FULL]), MAX).records
    assert j.tobytes() == b.tobytes()
    assert encode_json(j[0]) == encode_json(FULL)


def test_worked_example_in_the_docs():
    frame = encode_batch(
        [
            dict(
                node="n7",
                cpu=0.5,
                mem=0.25,
                queue=2.0,
                avg_job_s=0.1,
                ok=9,
                err=1,
                slots=4,
                zone="eu",
                resources={"gpu": 2.0},
            )
        ]
    )
    assert len(frame) == 400
    assert frame[:16].hex() == "53484d48020080010100000000000000"
    # ok=9, err=1, flags=0xe2, reserved, slots=4
    assert frame[16 + 72 : 16 + 84].hex() == "0900000001000000e2000400"
    assert frame[16 + 88 : 16 + 91] == b"n7\0" and frame[16 + 152 : 16 + 155] == b"eu\0"
    assert (
        frame[16 + 192 : 16 + 196] == b"gpu\0"
        and frame[16 + 320 : 16 + 328].hex() == "0000000000000040"
    )
    assert frame[16 + 196 : 16 + 320] == bytes(124) and frame[16 + 328 :] == bytes(56)


def raw_records(n, **fields):
    a = np.zeros(n, RECORD_DTYPE)
    a["cpu"], a["mem"], a["queue"], a["avg_job_s"] = 0.5, 0.25, 3.0, 0.2
    for i in range(n):
        a["node"][i] = f"n{i}".encode()
    for k, v in fields.items():
        a[k] = v
    return a


def binframe(a, *, version=2, record_size=RECORD_SIZE, count=None, reserved=0, pokes=()):
    body = bytearray(a.tobytes())
    for off, val in pokes:
        body[off] = val
    n = len(a) if count is None else count
    return struct.pack("<4sHHII", b"SHMH", version, record_size, n, reserved) + bytes(body)


# (case, mutation of record 1 of 3 as (field values) or byte pokes, reason, detail regex)
R = RECORD_SIZE
NAME1 = R + 192 + 16  # record 1's second resource name
BIN_REJECT = [
    (
        "slots without bit",
        dict(slots=3),
        (),
        "bad_field",
        r"slots=3 set without its presence bit 0x40",
    ),
    ("slots 0 with bit", dict(flags=64), (), "bad_field", r"slots=0 out of \[1, 65535\]"),
    (
        "resources without bit",
        dict(res_value3=1.0),
        (),
        "bad_field",
        r"resources set without its presence bit 0x80",
    ),
    (
        "resource name without bit",
        dict(res_name0=b"gpu"),
        (),
        "bad_field",
        r"resources set without its presence bit",
    ),
    (
        "resource value < 0",
        dict(flags=128, res_name0=b"gpu", res_value0=-1.0),
        (),
        "bad_field",
        r"resources b'gpu'=-1\.0 out of \[0, inf\)",
    ),
    (
        "resource value NaN",
        dict(flags=128, res_name0=b"gpu", res_value0=np.nan),
        (),
        "bad_field",
        r"resources b'gpu'=nan out of",
    ),
    (
        "resource entry after an empty one",
        dict(flags=128, res_name1=b"gpu"),
        (),
        "bad_field",
        r"resources entry 1 follows an empty name",
    ),
    (
        "resource value after an empty name",
        dict(flags=128, res_name0=b"a", res_value1=2.0),
        (),
        "bad_field",
        r"resources entry 1 follows an empty name",
    ),
    (
        "resource name twice",
        dict(flags=128, res_name0=b"gpu", res_name1=b"gpu"),
        (),
        "bad_field",
        r"resources name b'gpu' given twice",
    ),
    (
        "resource name 16 bytes",
        dict(flags=128, res_name0=b"a", res_name1=b"r" * 16),
        (),
        "bad_field",
        r"resources entry 1: resource name has no trailing NUL",
    ),
    (
        "resource name NUL inside",
        dict(flags=128, res_name0=b"a"),
        ((NAME1, 0x41), (NAME1 + 2, 0x42)),
        "bad_field",
        r"resources entry 1: resource name contains NUL",
    ),
    (
        "resource name bad UTF-8",
        dict(flags=128, res_name0=b"\xff"),
        (),
        "bad_field",
        r"resources entry 0: resource name is not valid UTF-8",
    ),
    ("cpu > 1", dict(cpu=1.5), (), "bad_field", r"node 'n1': cpu=1\.5 out of \[0, 1\]"),
    ("mem NaN", dict(mem=np.nan), (), "bad_field", r"mem=nan out of"),
    ("queue inf", dict(queue=np.inf), (), "bad_field", r"queue=inf out of \[0, inf\)"),
    ("avg_job_s < 0", dict(avg_job_s=-1.0), (), "bad_field", r"avg_job_s=-1\.0"),
    (
        "throughput without bit",
        dict(throughput=2.0),
        (),
        "bad_field",
        r"throughput=2\.0 set without its presence bit 0x01",
    ),
    ("throughput < 0", dict(throughput=-2.0, flags=1), (), "bad_field", r"throughput=-2\.0 out of"),
    ("ok without bit", dict(ok=3), (), "bad_field", r"ok=3 err=0 set without"),
    ("io > 1", dict(io=2.0, flags=4), (), "bad_field", r"io=2\.0 out of \[0, 1\]"),
    ("io without bit", dict(io=0.5), (), "bad_field", r"io=0\.5 set without"),
    (
        "p95 < p50",
        dict(p50_ms=5.0, p95_ms=3.0, flags=8),
        (),
        "bad_field",
        r"p50_ms=5\.0 p95_ms=3\.0 not 0 < p50_ms <= p95_ms",
    ),
    ("p50 zero", dict(p50_ms=0.0, p95_ms=3.0, flags=8), (), "bad_field", r"p50_ms=0\.0"),
    ("ts inf", dict(ts=np.inf, flags=16), (), "bad_field", r"ts=inf not finite"),
    ("ts without bit", dict(ts=1.0), (), "bad_field", r"ts=1\.0 set without"),
    ("zone without bit", dict(zone=b"eu"), (), "bad_field", r"zone bytes set without"),
    ("zone 32 bytes", dict(zone=b"z" * 32, flags=32), (), "bad_field", r"zone has no trailing NUL"),
    (
        "zone NUL inside",
        dict(flags=32),
        ((R + 152, 0x41), (R + 154, 0x42)),
        "bad_field",
        r"zone contains NUL",
    ),
    ("zone bad UTF-8", dict(zone=b"\xff", flags=32), (), "bad_field", r"zone is not valid UTF-8"),
    ("reserved byte 81", {}, ((R + 81, 1),), "bad_field", r"reserved record bytes"),
    ("reserved byte 84", {}, ((R + 84, 1),), "bad_field", r"reserved record bytes"),
    ("reserved byte 87", {}, ((R + 87, 1),), "bad_field", r"reserved record bytes"),
    ("reserved byte 191", {}, ((R + 191, 1),), "bad_field", r"reserved record bytes"),
    ("id empty", dict(node=b""), (), "bad_node_id", r"empty"),
    ("id 64 bytes", dict(node=b"n" * 64), (), "bad_node_id", r"no trailing NUL"),
    ("id NUL inside", {}, ((R + 88 + 4, 0x41),), "bad_node_id", r"contains NUL"),
    (
        "id control",
        dict(node=b"a\tb"),
        (),
        "bad_node_id",
        r"node id has a byte outside 0-9 A-Z a-z - \. / : _$",
    ),
    ("id DEL", dict(node=b"a\x7f"), (), "bad_node_id", r"byte outside"),
    ("id space", dict(node=b"a b"), (), "bad_node_id", r"byte outside"),
    ("id C1", dict(node="a\x85".encode()), (), "bad_node_id", r"byte outside"),
    ("id UTF-8", dict(node="nœud".encode()), (), "bad_node_id", r"byte outside"),
    ("id bad UTF-8", dict(node=b"a\xff"), (), "bad_node_id", r"byte outside"),
]


@pytest.mark.parametrize(
    "name,fields,pokes,reason,detail", BIN_REJECT, ids=[r[0] for r in BIN_REJECT]
)
def test_binary_rejects_keep_the_good_records(name, fields, pokes, reason, detail):
    a = raw_records(3)
    for k, v in fields.items():
        a[k][1] = v
    d = decode_frame(binframe(a, pokes=pokes), MAX)
    assert d.seen == 3 and d.rejects == {reason: 1}
    assert [node_key(r) for r in d.records] == [b"n0", b"n2"]
    ((r, det),) = d.sample
    assert r == reason and re.search(detail, det), det


@pytest.mark.parametrize(
    "name,frame,reason,detail",
    [
        ("truncated header", b"SHMH\x01\x00", "malformed_frame", r"header truncated"),
        (
            "version 3",
            None,
            "unsupported_version",
            r"version 3 record_size 384 \(known: 2, 384; 1, 192; 3, 640\)",
        ),
        ("record size 200", None, "unsupported_version", r"record_size 200"),
        (
            "version 1 with the v2 record size",
            None,
            "unsupported_version",
            r"version 1 record_size 384",
        ),
        (
            "version 2 with the v1 record size",
            None,
            "unsupported_version",
            r"version 2 record_size 192",
        ),
        ("reserved header", None, "malformed_frame", r"reserved header field is 7"),
        ("one byte short", None, "malformed_frame", r"783 bytes, header promises 16 \+ 2\*384"),
        ("v1 one byte short", None, "malformed_frame", r"399 bytes, header promises 16 \+ 2\*192"),
        ("count too large", None, "malformed_frame", r"header promises 16 \+ 4294967295"),
    ],
)
def test_binary_frame_errors(name, frame, reason, detail):
    a = raw_records(2)
    v1 = struct.pack("<4sHHII", b"SHMH", 1, 192, 2, 0) + b"".join(r.tobytes()[:192] for r in a)
    frame = (
        frame
        or {
            "version 3": lambda: binframe(a, version=3),
            "record size 200": lambda: binframe(a, record_size=200),
            "version 1 with the v2 record size": lambda: binframe(a, version=1),
            "version 2 with the v1 record size": lambda: binframe(a, record_size=192),
            "reserved header": lambda: binframe(a, reserved=7),
            "one byte short": lambda: binframe(a)[:-1],
            "v1 one byte short": lambda: v1[:-1],
            "count too large": lambda: binframe(a, count=2**32 - 1),
        }[name]()
    )
    d = decode_frame(frame, MAX)
    assert d.rejects == {reason: 1} and d.seen == 1 and len(d.records) == 0
    assert re.search(detail, d.sample[0][1]), d.sample


def test_empty_binary_batch():
    d = decode_frame(binframe(raw_records(0)), MAX)
    assert d.seen == 0 and d.rejects == {} and len(d.records) == 0
    d = decode_frame(struct.pack("<4sHHII", b"SHMH", 1, 192, 0, 0), MAX)
    assert d.seen == 0 and d.rejects == {} and len(d.records) == 0


@pytest.mark.parametrize("n", [1, 3, 9])
def test_version_1_frames_are_still_accepted(n):
    """A version 1 frame (192-byte records, as version-1 senders send) gives
    the records it would give as version 2 with the extra bytes zero: no
    slots (the row writes 1), no resources.  Its reserved bytes 82..83 are
    slots now, but without the presence bit they must still be zero."""
    a = raw_records(n, flags=0x22, ok=4, err=1)
    a["zone"] = b"eu"
    v1 = struct.pack("<4sHHII", b"SHMH", 1, 192, n, 0) + b"".join(r.tobytes()[:192] for r in a)
    d = decode_frame(v1, MAX)
    assert d.rejects == {} and d.seen == n
    assert d.records.tobytes() == a.tobytes()
    assert [record_to_dict(r)["node"] for r in d.records] == [f"n{i}" for i in range(n)]
    bad = bytearray(v1)
    bad[16 + 82] = 1
    assert decode_frame(bytes(bad), MAX).rejects == {"bad_field": 1}


def test_memoryview_frames_and_records_outlive_the_buffer():
    buf = bytearray(encode_batch([hb(node="a"), hb(node="b")]))
    d = decode_frame(memoryview(buf), MAX)
    buf[16 + 88] = ord("z")  # records must be a copy, not a view of the frame
    assert [node_key(r) for r in d.records] == [b"a", b"b"]


def test_encoders_refuse_invalid_heartbeats():
    with pytest.raises(ValueError, match=r"bad_field: node 'n7': cpu=2\.0 out of"):
        encode_batch([hb(cpu=2.0)])
    with pytest.raises(ValueError, match=r"labels cannot travel in a binary frame"):
        encode_batch([hb(labels={"a": "b"})])
    with pytest.raises(ValueError, match=r"missing_field"):
        encode_json(hb(cpu=DROP))
    assert node_key(hb(node="n-1")) == b"n-1"


# ------------------------------------------------------------------ fuzzing

VALID_FRAMES = [
    encode_batch([dict(FULL, node=f"n{i}") for i in range(4)]),
    encode_batch([hb(node="n.1"), hb(node="b", zone="zé", slots=2)]),
    encode_batch([hb(node="r", resources={"gpu": 1.0, "é": 2.0})]),
    jframe([FULL, hb(node="x", labels={"a": "b"})]),
    jframe(FULL),
    jframe(hb(slots=5, resources={"gpu": 2.5})),
]

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(frame):
    d = decode_frame(frame, 512)
    assert accounted(d)


@FUZZ
@given(
    st.sampled_from(VALID_FRAMES),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.integers(0, 10**6),
    st.booleans(),
)
def test_mutated_frames_never_raise_and_account_for_everything(frame, pokes, cut, do_cut):
    buf = bytearray(frame)
    for pos, val in pokes:
        buf[pos % len(buf)] = val
    if do_cut:
        buf = buf[: cut % (len(buf) + 1)]
    d = decode_frame(bytes(buf), MAX)
    assert accounted(d)
    assert d.records.dtype == RECORD_DTYPE
    # every accepted record survives a re-encode and re-decode unchanged
    if len(d.records):
        again = decode_frame(encode_batch(d.records), MAX)
        assert again.rejects == {} and again.records.tobytes() == d.records.tobytes()


# ------------------------------------------------------------------ one rule table, three checks


def finder_faults(raw: np.ndarray) -> list[int]:
    """Each record's first broken rule by the fault finder (1 + its index in
    RECORD_RULES; 0: valid), the compiled check's encoding."""
    out = []
    for row in raw:
        fault = binary.record_fault(RECORD_STRUCT.unpack(row.tobytes()))
        out.append(0 if fault is None else fault[0] + 1)
    return out


def assert_checks_agree(raw: np.ndarray) -> None:
    """The compiled check gives exactly the fault finder's first broken rule,
    and the scalar accept passes exactly the records the finder passes."""
    faults, bad = binary.batch_faults(np.ascontiguousarray(raw))
    expect = finder_faults(raw)
    assert faults.tolist() == expect
    assert bad == sum(1 for f in expect if f)
    for row, fault in zip(raw, expect, strict=True):
        assert binary._accept(RECORD_STRUCT.unpack(row.tobytes())) == (not fault)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, R * 3 - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_the_compiled_check_agrees_with_the_fault_finder_on_poked_records(pokes):
    body = bytearray(
        encode_batch(
            [
                dict(FULL, node="a", slots=3),
                hb(node="b"),
                hb(node="c", resources={"gpu": 1.0, "x": 2.0}),
            ]
        )[16:]
    )
    for pos, val in pokes:
        body[pos] = val
    assert_checks_agree(np.frombuffer(bytes(body), np.uint8).reshape(3, R))


# Values on the rules' boundaries, and text pieces: ASCII, controls, NUL, C1
# (U+0085), 2-4 byte UTF-8, and bytes no valid UTF-8 holds there (overlong
# lead, lone continuation, surrogate, > U+10FFFF, a truncated sequence).
EDGE_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1.0000000000000002,
    5e-324,
    -5e-324,
    1e308,
    3.0,
    9.0,
    float("inf"),
    float("-inf"),
    float("nan"),
]
GOOD_ID = [b"a", b"node-7", b"Z.9_:/", b"-"]
GOOD_TEXT = GOOD_ID + [b" ", "é".encode(), "€".encode(), "😀".encode()]
BAD_TEXT = [
    b"\t",
    b"\x7f",
    b"\x00",
    "\x85".encode(),
    b"\xc0\x80",
    b"\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\xff",
    b"@",
    b"`",
    b"[",
    b"{",
    b",",
    b"~",
]
FLOAT_FIELDS = ("cpu", "mem", "queue", "avg_job_s", "throughput", "io", "p50_ms", "p95_ms", "ts")


def padded(pieces: list[bytes], size: int, nul_tail: bool) -> bytes:
    text = b"".join(pieces)[:size]
    return (text[: size - 1] if nul_tail else text).ljust(size, b"\0")


@st.composite
def hostile_records(draw):
    """A valid record (any optional fields, text in any script where the
    field allows it), then 0-3 mutations that may break it: a boundary
    float, a flipped flag bit, an ok/err count, slots, hostile text, a
    resource entry, a reserved byte."""
    flags = draw(st.integers(0, 255))
    rec = np.zeros(1, RECORD_DTYPE)
    rec["cpu"], rec["mem"] = draw(st.sampled_from([0.0, 0.5, 1.0])), 0.25
    rec["queue"], rec["avg_job_s"] = draw(st.sampled_from([0.0, 3.0])), 0.2
    for bit, names, value in (
        (1, ("throughput",), 2.0),
        (4, ("io",), 0.5),
        (8, ("p50_ms", "p95_ms"), 3.0),
        (16, ("ts",), -1.0),
    ):
        for name in names:
            rec[name] = value if flags & bit else 0.0
    if flags & 2:
        rec["ok"], rec["err"] = 5, 1
    if flags & 64:
        rec["slots"] = draw(st.sampled_from([1, 2, 65535]))
    if flags & 128:
        names = draw(st.lists(st.sampled_from(GOOD_TEXT), max_size=8, unique=True))
        for i, name in enumerate(names):
            rec[f"res_name{i}"], rec[f"res_value{i}"] = name, draw(st.sampled_from([0.0, 2.5]))
    rec["flags"] = flags
    raw = bytearray(rec.tobytes())

    def text(name, size, pieces, nul_tail=True):
        off = RECORD_DTYPE.fields[name][1]
        raw[off : off + size] = padded(pieces, size, nul_tail)

    text("node", 64, draw(st.lists(st.sampled_from(GOOD_ID), min_size=1, max_size=8)))
    if flags & 32:
        text("zone", 32, draw(st.lists(st.sampled_from(GOOD_TEXT), max_size=5)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "float",
                    "flag",
                    "count",
                    "slots",
                    "node",
                    "zone",
                    "resource name",
                    "resource value",
                    "reserved",
                ]
            )
        )
        if kind == "float":
            off = RECORD_DTYPE.fields[draw(st.sampled_from(FLOAT_FIELDS))][1]
            raw[off : off + 8] = struct.pack("<d", draw(st.sampled_from(EDGE_FLOATS)))
        elif kind == "flag":
            raw[80] ^= 1 << draw(st.integers(0, 7))
        elif kind == "count":
            raw[72 + 4 * draw(st.integers(0, 1))] = draw(st.integers(1, 255))
        elif kind == "slots":
            raw[82:84] = struct.pack("<H", draw(st.sampled_from([0, 1, 7, 65535])))
        elif kind in ("node", "zone"):
            pieces = draw(st.lists(st.sampled_from(GOOD_TEXT + BAD_TEXT), max_size=24))
            text(kind, 64 if kind == "node" else 32, pieces, draw(st.booleans()))
        elif kind == "resource name":
            pieces = draw(st.lists(st.sampled_from(GOOD_TEXT + BAD_TEXT), max_size=6))
            text(f"res_name{draw(st.integers(0, 7))}", 16, pieces, draw(st.booleans()))
        elif kind == "resource value":
            off = RECORD_DTYPE.fields[f"res_value{draw(st.integers(0, 7))}"][1]
            raw[off : off + 8] = struct.pack("<d", draw(st.sampled_from(EDGE_FLOATS)))
        else:
            raw[draw(st.sampled_from([81, 84, 87, 184, 191]))] = draw(st.integers(1, 255))
    return bytes(raw)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_records(), min_size=1, max_size=8))
def test_the_compiled_check_agrees_with_the_fault_finder_on_hostile_records(records):
    """Property: every record, valid or broken in any field (text with any
    UTF-8 or none), gets the same first broken rule from the compiled check
    as from the fault finder, the reference, and the same verdict from the
    scalar accept."""
    assert_checks_agree(np.frombuffer(b"".join(records), np.uint8).reshape(len(records), R))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(sorted(KNOWN_FIELDS) + ["x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-3, 2**33),
            st.floats(allow_nan=True),
            st.text(max_size=70),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            st.dictionaries(
                st.text(max_size=16), st.floats(-1.0, 1e300) | st.integers(-1, 9), max_size=9
            ),
        ),
    )
)
def test_random_objects_never_raise(obj):
    rec, labels, reason, detail = check_heartbeat(obj)
    assert (rec is None) == (reason is not None)
    if rec is not None:
        # an accepted heartbeat re-encodes to an identical record, both ways
        assert decode_frame(encode_json(obj), MAX).records.tobytes() == np.array([rec]).tobytes()


def fields_by_readers(obj: dict, values: list, read: dict):
    """The reference for the rendered `_scalar.json_fields`: each field's
    reader, walking FIELDS in order."""
    flags, labels = 0, None
    for rule in FIELDS[1:]:
        keys = names_of(rule)
        if keys[0] not in obj:
            continue
        for key in keys:
            value = read[key](obj, values)
            if isinstance(rule, Labels):
                labels = value
            elif not isinstance(rule, Resources):  # its reader fills the entries
                values[FIELD_INDEX[key]] = value
        flags |= getattr(rule, "bit", 0)
    values[FIELD_INDEX["flags"]] = flags
    return labels


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2**33),
    st.floats(allow_nan=True),
    st.sampled_from([0.0, 0.5, 1.0, 3.0, 2**32 - 1, 2**32, 65535, 65536]),
    st.text(max_size=40),
    st.dictionaries(st.text(max_size=16), st.floats() | st.integers(-1, 9), max_size=9),
)


@FUZZ
@given(
    st.sampled_from(
        [
            FULL,
            MINIMAL,
            dict(FULL, labels={"a": "b"}),
            dict(MINIMAL, slots=2, resources={"gpu": 1.0}),
        ]
    ),
    st.dictionaries(st.sampled_from(sorted(KNOWN_FIELDS - {"node", "labels"})), VALUES, max_size=4),
)
def test_the_rendered_json_fields_agree_with_the_readers(base, changes):
    """`check_mapping` reads fields with code rendered from the table (a
    float in range is taken as is); with the readers alone it must give the
    same record, labels, reason and detail."""
    obj = dict(base, **changes)

    def outcome():
        try:
            return jsondecode.check_mapping(dict(obj))
        except jsondecode.Reject as rej:
            return rej.reason, rej.detail

    rendered = outcome()
    original = jsondecode.json_fields
    try:
        jsondecode.json_fields = fields_by_readers
        assert outcome() == rendered
    finally:
        jsondecode.json_fields = original


# ------------------------------------------------------------------ speed (smoke check)


def test_binary_batch_of_1000_validates_quickly():
    """Smoke check only (shared CI machines are noisy): tens of microseconds
    on an idle core; fails if the batch path stops being compiled."""
    import timeit

    frame = encode_batch([dict(FULL, node=f"node-{i}") for i in range(1000)])
    best = min(timeit.repeat(lambda: decode_frame(frame, MAX), number=20, repeat=5)) / 20
    assert best < 5e-3, f"{best * 1e6:.0f} us"
