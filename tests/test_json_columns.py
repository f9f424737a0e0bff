"""JSON frames through orjson and the column check give the reference's result.

The reference is the standard library's parser (`jsondecode.parse_json`) and
`check_mapping` heartbeat by heartbeat.  `jsondecode.loads` must return the
same value (types included: an integer stays an int) or fall back to the
reference; `decode_json_objects` and arrays decoded column by column must
give the records, labels, reject counts, samples and ``seen`` that the
reference gives frame by frame, for any mix of good and bad heartbeats."""

import json
import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shm_engine.wire import jsondecode
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.jsondecode import COLUMNS_MIN, Reject, decode_json_objects, loads, parse_json
from support.heartbeats import FULL, MAX, MINIMAL


def _same(a, b) -> bool:
    """Equal values of equal types, recursively (1 == 1.0 is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a.items()) == list(b.items()) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


def _outcome(parse, buf: bytes):
    try:
        return "value", parse(buf)
    except Reject as rej:
        return "reject", (rej.reason, rej.detail)


def _assert_loads_is_the_reference(buf: bytes) -> None:
    kind, got = _outcome(loads, buf)
    rkind, ref = _outcome(parse_json, buf)
    assert kind == rkind, (buf, got, ref)
    if kind == "reject":
        assert got == ref
    else:
        assert _same(got, ref), (buf, got, ref)
        assert getattr(got, "duplicate", None) == getattr(ref, "duplicate", None)


@pytest.mark.parametrize(
    "buf",
    [
        b'{"node": "a", "cpu": 0.5}',
        b'{"cpu": NaN}',  # orjson refuses; the reference reads NaN
        b'{"cpu": Infinity}',
        b'{"cpu": -1e400}',  # orjson refuses infinity; the reference gives -inf
        b'{"ok": 123456789012345678901234567890}',  # orjson: a float; reference: an int
        b'{"ok": -9223372036854775809}',
        b'{"ok": 18446744073709551615}',
        b'{"ok": 18446744073709551616}',
        b'{"cpu": 0.1234567890123456789012}',  # a long fraction: the reference reads it
        b'{"node": "a", "node": "b"}',  # repeated key: orjson would keep one
        b'{"labels": {"k": "1", "k": "2"}, "node": "a"}',
        b'{"resources": {"cpu": 1, "cpu": 2}}',
        b'[{"a": 1}, {"a": 1, "a": 2}]',
        b'{"node": "a:b", "zone": "x:y:z", "cpu": 1}',  # colons in strings
        b'{"node": "a:b", "x": {"y": 1, "y": 2}}',  # colons in strings and a repeat
        b'{"node": "\\ud800"}',  # a lone surrogate
        b'{"node": "\\u00e9\\":\\\\"}',
        b'{"node": "\xff"}',  # not UTF-8
        b"\xef\xbb\xbf{}",
        b'{"cpu": -0.0, "mem": -0, "queue": 1E5, "io": 5e-324}',
        b"[" * 32 + b"]" * 32,
        b"[" * 33 + b"]" * 33,
        b'{"a": [' + b"{}, " * 40 + b"{}]}",
        b'{"a": 1',
        b"{} {}",
        b'  {"a": 1}\n',
        b'{"a": 1}x',
    ],
)
def test_loads_gives_the_reference_value_or_falls_back_to_it(buf):
    _assert_loads_is_the_reference(buf)


def test_loads_keeps_orjson_values_only_when_nothing_was_dropped(monkeypatch):
    """The fallback really is taken: on a repeated key the value is the
    reference's (_DupDict naming the key), not orjson's."""
    got = loads(b'{"node": "a", "cpu": 1, "cpu": 2}')
    assert got.duplicate == "cpu" and got == {"node": "a", "cpu": 2}
    calls = []
    monkeypatch.setattr(jsondecode, "parse_json", lambda buf: calls.append(buf) or {})
    loads(json.dumps(FULL).encode())
    assert calls == []  # a plain heartbeat never reaches the reference


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from('ab:"\\{}[],é\u2028 0123456789'), max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b:c", "node", '"', "é"]), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_VALUES, st.integers(min_value=0, max_value=3))
def test_loads_equals_the_reference_on_random_values(value, repeat):
    text = json.dumps(value, ensure_ascii=bool(repeat & 1))
    _assert_loads_is_the_reference(text.encode())
    if isinstance(value, dict) and value and repeat & 2:
        key = json.dumps(next(iter(value)))  # the first key once more: a repeat
        _assert_loads_is_the_reference(text[:-1].encode() + b", " + key.encode() + b": 1}")


# ------------------------------------------------------------------ runs

_GOOD = [
    MINIMAL,
    FULL,
    dict(FULL, zone="zé"),
    dict(MINIMAL, node="a.b_c:d-e/F"),
    dict(MINIMAL, ok=2**32 - 1, err=0, slots=65535),
    dict(MINIMAL, labels={"k": "v"}),
    dict(MINIMAL, slots=4, resources={"cpu": 16.0, "gpü": 2.0}),
]
# Changes a heartbeat may suffer: (field, value); None deletes the field.
_CHANGES = [
    ("cpu", 1),  # an int for a float: valid, the reference converts it
    ("cpu", 2),
    ("cpu", True),
    ("cpu", "0.5"),
    ("cpu", 1.5),
    ("cpu", -0.0),
    ("queue", 10**30),
    ("queue", 1e300),
    ("ok", 5.0),
    ("ok", -1),
    ("ok", 2**32),
    ("err", None),
    ("slots", 0),
    ("slots", 65536),
    ("slots", False),
    ("p50_ms", 10.0),  # above p95_ms 9.0 in FULL
    ("p95_ms", 0.0),
    ("ts", -1e300),
    ("node", ""),
    ("node", "x" * 64),
    ("node", "sp ace"),
    ("node", "é"),
    ("node", 7),
    ("node", None),
    ("zone", "z" * 32),
    ("zone", "a\u0000b"),
    ("zone", 3),
    ("mem", None),
    ("extra", 1),
    ("labels", {"k": 1}),
    ("resources", {"cpu": -1.0}),
]
_RAW = [
    b'{"node": ',
    b'{"node": "d", "node": "e", "cpu": 0.1, "mem": 0.1, "queue": 1, "avg_job_s": 1}',
    b'{"node": "n", "cpu": NaN, "mem": 0.1, "queue": 1.0, "avg_job_s": 1.0}',
    b'{"node": "n", "cpu": 0.5, "mem": 0.1, "queue": 1e400, "avg_job_s": 1.0}',
    b'{"node": "n", "cpu": 0.5, "mem": 0.1, "queue": 1.0, "avg_job_s": 1.0, '
    b'"ok": 123456789012345678901, "err": 0}',
    b'{"node": "n\\ud800", "cpu": 0.5, "mem": 0.1, "queue": 1.0, "avg_job_s": 1.0}',
    b"{\xff}",
]


_ANY_BASE = st.sampled_from(_GOOD)


@st.composite
def _heartbeats(draw, bases=_ANY_BASE):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(_RAW))
    obj = dict(draw(bases))
    obj["node"] = f"n{draw(st.integers(0, 40))}"
    for _ in range(draw(st.integers(0, 2))):
        key, value = draw(st.sampled_from(_CHANGES))
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()


def _reference(frames):
    """decode_frame of each frame with orjson refusing everything: the
    reference parser and check_mapping alone."""

    def refuse(_buf):
        raise orjson.JSONDecodeError("refused", "", 0)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsondecode.orjson, "loads", refuse)
        return [decode_frame(f, MAX) for f in frames]


def _merged(decoded):
    records = b"".join(d.records.tobytes() for d in decoded)
    labels = [lab for d in decoded for lab in (d.labels or [None] * len(d.records))]
    rejects: dict = {}
    for d in decoded:
        for r, c in d.rejects.items():
            rejects[r] = rejects.get(r, 0) + c
    sample = [s for d in decoded for s in d.sample][:3]
    return records, labels, list(rejects.items()), sample, sum(d.seen for d in decoded)


def _result(d):
    labels = d.labels or [None] * len(d.records)
    return d.records.tobytes(), labels, list(d.rejects.items()), d.sample, d.seen


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_heartbeats(), min_size=1, max_size=40))
def test_runs_and_arrays_decode_as_the_reference_does(frames):
    expect = _merged(_reference(frames))
    assert _result(decode_json_objects(frames)) == expect
    # The same heartbeats as one array frame (column by column from
    # COLUMNS_MIN on), when each of them parses.
    parsed = []
    for f in frames:
        try:
            parsed.append(parse_json(f))
        except Reject:
            return
    array = b"[" + b",".join(frames) + b"]"
    (d,) = [decode_frame(array, MAX)]
    (ref,) = _reference([array])
    assert _result(d) == _result(ref)
    assert len(frames) < COLUMNS_MIN or d.one is None


@st.composite
def _one_sender(draw):
    """A run from one kind of sender: one base, most heartbeats unchanged,
    so that groups reach COLUMNS_MIN and the column check decides."""
    base = draw(st.sampled_from(_GOOD))
    return draw(st.lists(_heartbeats(st.just(base)), min_size=COLUMNS_MIN, max_size=80))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_one_sender())
def test_runs_of_one_sender_decode_as_the_reference_does(frames):
    assert _result(decode_json_objects(frames)) == _merged(_reference(frames))


def test_a_run_of_plain_heartbeats_is_checked_by_columns(monkeypatch):
    """The column check really carries a run: check_mapping is called only
    for the heartbeats it does not plainly accept."""
    frames = [json.dumps(dict(FULL, node=f"n{i}")).encode() for i in range(30)]
    frames[7] = json.dumps(dict(FULL, node="n7", cpu=2.0)).encode()
    frames[11] = json.dumps(dict(MINIMAL, node="m11", cpu=1)).encode()  # an int: the reference
    checked = []
    real = jsondecode.check_mapping
    monkeypatch.setattr(
        jsondecode, "check_mapping", lambda obj: checked.append(obj["node"]) or real(obj)
    )
    d = decode_json_objects(frames)
    assert checked == ["n7", "m11"]
    assert d.rejects == {"bad_field": 1} and len(d.records) == 29 and d.seen == 30
    assert d.records["cpu"][10] == 1.0 and d.records["node"][10] == b"m11"


@settings(max_examples=500, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**18 - 1),
    st.integers(min_value=0, max_value=18),
    st.integers(min_value=-340, max_value=320),
    st.booleans(),
)
def test_loads_reads_any_number_text_as_the_reference(mantissa, point, exponent, negative):
    """Decimal texts of up to 18 digits (longer ones go to the reference),
    any exponent: orjson rounds them as the standard library does, or
    refuses them (infinity) and the reference reads them."""
    digits = str(mantissa)
    if point and point < len(digits):
        digits = f"{digits[:-point]}.{digits[-point:]}"
    text = f"{'-' if negative else ''}{digits}e{exponent}"
    _assert_loads_is_the_reference(f'{{"cpu": {text}, "n": {digits}}}'.encode())


def test_a_flat_run_with_integers_beyond_64_bits_decodes_as_the_reference(monkeypatch):
    """A run of flat objects is parsed at once, without searching the text
    for long integers: a field orjson read as a float from such an integer
    is never taken as plain, and the reference reads that frame again."""
    frames = [json.dumps(dict(FULL, node=f"n{i}", zone="z")).encode() for i in range(24)]
    big = {3: ("queue", 10**30), 5: ("ok", 10**25), 8: ("ts", -(10**20)), 9: ("cpu", 10**20)}
    for i, (key, value) in big.items():
        frames[i] = json.dumps(dict(FULL, node=f"n{i}", **{key: value})).encode()
    reparsed = []
    real = jsondecode.parse_json
    monkeypatch.setattr(jsondecode, "parse_json", lambda buf: reparsed.append(buf) or real(buf))
    got = decode_json_objects(frames)
    assert sorted(reparsed) == sorted(frames[i] for i in big)  # only those, once each
    monkeypatch.undo()
    assert _result(got) == _merged(_reference(frames))
    assert got.records["queue"][3] == float(10**30) and got.records["ts"][7] == float(-(10**20))
    assert got.rejects == {"bad_field": 2}  # ok beyond 32 bits; cpu out of [0, 1]
