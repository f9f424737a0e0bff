"""JSON frames, and the check of one heartbeat given as a mapping.

A JSON frame is one UTF-8 object or an array of objects; it is the only kind
that carries ``labels``.  The frame is hostile until checked: its nesting
depth is bounded before it is parsed (linear time), a repeated key is caught
by the parser hook, and nothing is evaluated.

Two parsers, one result.  The reference is the standard library's, with a
hook that marks a repeated key (`parse_json`); `loads` parses with orjson
(several times faster) and keeps its value only where it provably equals the
reference's: no integer literal of 19 digits or more (orjson turns those
beyond 64 bits into floats), as many key-value pairs in the value as colons
outside strings in the text (no repeated key: orjson keeps one silently).
Anything orjson refuses (``NaN``, ``1e400``, a lone surrogate, bad UTF-8) is
parsed again by the reference, so every reject reason and detail is the
reference's.  A run of flat objects is vetted as one text (`_flat_objects`);
there a float of 2**63 or more may stand for a long integer, so the column
check never takes one as plain and the reference reads its frame again.

Runs of heartbeats (`decode_json_objects`, and arrays of `COLUMNS_MIN` or
more) are checked column by column: heartbeats with the same keys form a
group, and a group of `COLUMNS_MIN` or more has each field's values checked
at once against its `FIELDS` row (floats and integers of the right type in
range, node ids by one pattern over the whole column).  A heartbeat the
column check does not plainly accept goes through `check_mapping`, the
reference, in frame order; the column check only ever accepts what the
reference accepts, with the same record bytes, so the result is the
reference's, heartbeat for heartbeat.

`check_heartbeat` validates one mapping against `format.FIELDS` (the replay
path and the clients use it; the encoders use it through `check_mapping`).
The node id is 1..63 characters of ``A-Z a-z 0-9 . _ : - /``; ``resources``
an object of at most 8 names (1..15 bytes of UTF-8, no NUL) to numbers >= 0,
kept in the record's entries in the object's order.
The checks run in this order, and the first failure names the reason:
unknown key; node missing, then malformed; required fields missing; one
half of a pair without the other (``missing_field``); a repeated key; then
each value in `FIELDS` order.  ``bool`` is not a number, an integral float is
not an integer field's value, ``null`` is not a value (omit the key), and a
zone may not contain NUL (the binary padding could not represent it).

Rules for callers: `check_heartbeat`, `decode_json` and `decode_json_objects`
are hot paths and never raise on bad input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from shm_engine.wire._scalar import json_fields
from shm_engine.wire.format import (
    FIELD_INDEX,
    FIELD_NAMES,
    FIELDS,
    KNOWN_FIELDS,
    MAX_JSON_DEPTH,
    PAIRS,
    RECORD_DTYPE,
    RECORD_PACK,
    REQUIRED_FIELDS,
    TAINT_KEY_RE,
    TAINT_VALUE_RE,
    Labels,
    Number,
    Resources,
    Taints,
    Text,
    describe_ranges,
    join_meta,
    names_of,
)
from shm_engine.wire.result import (
    SAMPLE_MAX,
    DecodedFrame,
    Reject,
    frame_reject,
    node_label,
    short,
    tally,
)

_NUMBER_TYPES = (int, float, np.integer, np.floating)  # bool is excluded apart
_INT_TYPES = (int, np.integer)
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1
_REQUIRED_SET = frozenset(REQUIRED_FIELDS)
_KEY = FIELDS[0]  # the node id: checked first
assert isinstance(_KEY, Text) and _KEY.bit == 0
_KEY_INDEX = FIELD_INDEX[_KEY.name]

# A record's values in RECORD_DTYPE field order before any field is set.
_BLANK = tuple(
    b"" if RECORD_DTYPE[n].kind == "S" else 0 if RECORD_DTYPE[n].kind == "u" else 0.0
    for n in FIELD_NAMES
)
_INDEX = FIELD_INDEX
_LIMIT = {n: RECORD_DTYPE[n].itemsize - 1 for n in FIELD_NAMES if RECORD_DTYPE[n].kind == "S"}


# ------------------------------------------------------------------ one value


def _number(obj: Mapping, key: str) -> float:
    """A finite float from any JSON number, or Reject."""
    value = obj[key]
    if type(value) is float and math.isfinite(value):
        return value
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise Reject("bad_field", f"{key}={short(value)} is not a number")
    try:
        x = float(value)
    except OverflowError:
        raise Reject("bad_field", f"{key}={short(value)} overflows float64") from None
    if not math.isfinite(x):
        raise Reject("bad_field", f"{key}={x!r} is not finite")
    return x


def _reader(rule: Number, key: str, first: int | None):
    """``read(obj, values)``: the checked value of ``key``, a field of the
    number row ``rule``; ``first``: the position of the value it must not be
    below (the second of an ordered pair), else None.  A closure per field,
    made once: the common case (a finite float in range) is a few operations."""
    holds, fault, reason = rule.bound.holds, rule.bound.fault, rule.reason
    integer = RECORD_DTYPE[key].kind == "u"

    def read(obj: Mapping, values: list) -> float | int:
        x = obj[key]
        if integer:
            if isinstance(x, bool) or not isinstance(x, _INT_TYPES):
                raise Reject(reason, f"{key}={short(x)} is not an integer")
            if not holds(x):
                raise Reject(reason, f"{key}={short(x)} {fault}")
            x = int(x)
        elif not (type(x) is float and holds(x)):  # a bound holds finite values only
            x = _number(obj, key)
            if not holds(x):
                raise Reject(reason, f"{key}={x!r} {fault}")
        if first is not None and not x >= values[first]:
            a = FIELD_NAMES[first]
            raise Reject(reason, f"{key}={x!r} < {a}={values[first]!r}")
        return x

    return read


def _ranges_re(rule: Text) -> re.Pattern:
    chars = "".join(f"\\x{lo:02x}-\\x{hi:02x}" for lo, hi in rule.ranges or ())
    return re.compile(f"[{chars}]*")


_RANGES_RE = {
    rule.name: _ranges_re(rule)
    for rule in FIELDS
    if isinstance(rule, Text) and rule.ranges is not None
}


def _text(rule: Text, value: Any) -> bytes:
    """The UTF-8 bytes of a `Text` row's value, or Reject."""
    what = rule.what
    if not isinstance(value, str):
        raise Reject(rule.reason, f"{what}={short(value)} is not a string")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise Reject(rule.reason, f"{what} is not valid UTF-8") from None
    if rule.nonempty and not raw:
        raise Reject(rule.reason, f"{what} is empty")
    limit = _LIMIT[rule.name]
    if len(raw) > limit:
        raise Reject(rule.reason, f"{what} is {len(raw)} bytes > {limit}")
    if rule.ranges is not None:
        if _RANGES_RE[rule.name].fullmatch(value) is None:
            raise Reject(
                rule.reason,
                f"{what} {short(value)} has a character outside {describe_ranges(rule.ranges)}",
            )
    elif rule.printable:
        if _CONTROL_RE.search(value):
            raise Reject(rule.reason, f"{what} contains a control character")
    elif b"\0" in raw:
        raise Reject(rule.reason, f"{what} contains NUL")
    return raw


_LABELS_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _labels(rule: Labels, labels: Any) -> bytes:
    """Canonical compact JSON of a string -> string object, or Reject."""
    if not isinstance(labels, dict):
        raise Reject(rule.reason, f"{rule.name}={short(labels)} is not an object")
    dup = getattr(labels, "duplicate", None)
    if dup is not None:
        raise Reject(rule.reason, f"label {short(dup)} given twice")
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise Reject(rule.reason, f"label {short(k)}={short(v)} is not str -> str")
    try:
        raw = _LABELS_ENCODER.encode(labels).encode("utf-8")
    except UnicodeEncodeError:
        raise Reject(rule.reason, "labels are not valid UTF-8") from None
    if len(raw) > rule.max_bytes:
        raise Reject(rule.reason, f"labels are {len(raw)} bytes > {rule.max_bytes}")
    return raw


_TAINT_RE = re.compile(f"({TAINT_KEY_RE})(?:=({TAINT_VALUE_RE}))?:([A-Za-z]+)")


def _with_taints(rule: Taints, taints: Any, labels: bytes | None) -> bytes | None:
    """The meta bytes of ``labels`` and the checked ``taints`` (a list of
    ``key=value:Effect``), or Reject.  See `format.split_meta`."""
    if not isinstance(taints, list):
        raise Reject(rule.reason, f"{rule.name}={short(taints)} is not an array")
    if len(taints) > rule.max_entries:
        raise Reject(rule.reason, f"{rule.name} has {len(taints)} entries > {rule.max_entries}")
    seen: set[tuple[str, str]] = set()
    canonical = []
    for t in taints:
        m = _TAINT_RE.fullmatch(t) if isinstance(t, str) else None
        if m is None:
            raise Reject(rule.reason, f"taint {short(t)} is not key=value:Effect")
        key, value, effect = m.group(1), m.group(3) or "", m.group(6)
        if effect not in rule.effects:
            raise Reject(
                rule.reason,
                f"taint {short(t)} has effect {effect!r}, not one of {', '.join(rule.effects)}",
            )
        if (key, effect) in seen:
            raise Reject(rule.reason, f"taint {key}:{effect} given twice")
        seen.add((key, effect))
        canonical.append(f"{key}={value}:{effect}")
    canonical.sort()
    raw = ",".join(canonical).encode("ascii")
    if len(raw) > rule.max_bytes:
        raise Reject(rule.reason, f"taints are {len(raw)} bytes > {rule.max_bytes}")
    return join_meta(labels, tuple(canonical))


def _resources(rule: Resources, obj: Mapping, values: list) -> None:
    """Check ``obj[rule.name]`` and write its entries into ``values`` (the
    record's names and values, in the object's order), or Reject."""
    res = obj[rule.name]
    if not isinstance(res, dict):
        raise Reject(rule.reason, f"{rule.name}={short(res)} is not an object")
    dup = getattr(res, "duplicate", None)
    if dup is not None:
        raise Reject(rule.reason, f"{rule.name} name {short(dup)} given twice")
    if len(res) > len(rule.names):
        raise Reject(rule.reason, f"{rule.name} has {len(res)} names > {len(rule.names)}")
    for i, (name, amount) in enumerate(res.items()):
        raw = _text(rule.entry, name)
        if isinstance(amount, bool) or not isinstance(amount, _NUMBER_TYPES):
            raise Reject(rule.reason, f"{rule.name} {short(name)}={short(amount)} is not a number")
        x = _number(res, name)
        if not rule.bound.holds(x):
            raise Reject(rule.reason, f"{rule.name} {short(name)}={x!r} {rule.bound.fault}")
        values[_INDEX[rule.names[i]]] = raw
        values[_INDEX[rule.values[i]]] = x


# ------------------------------------------------------------------ one heartbeat


def _field_readers() -> dict:
    """key -> ``read(obj, values)``: the checked value of that field (the
    reference; the rendered `_fields` calls it for anything but a float in
    range)."""
    readers = {}
    for rule in FIELDS[1:]:
        if isinstance(rule, Number):
            for j, key in enumerate(rule.names):
                first = _INDEX[rule.names[0]] if rule.ordered and j else None
                readers[key] = _reader(rule, key, first)
        elif isinstance(rule, Text):
            readers[rule.name] = lambda obj, values, rule=rule: _text(rule, obj[rule.name])
        elif isinstance(rule, Resources):
            readers[rule.name] = lambda obj, values, rule=rule: _resources(rule, obj, values)
        elif isinstance(rule, Taints):
            readers[rule.name] = lambda obj, labels, rule=rule: _with_taints(
                rule, obj[rule.name], labels
            )
        else:
            readers[rule.name] = lambda obj, values, rule=rule: _labels(rule, obj[rule.name])
    return readers


_READ = _field_readers()


def check_mapping(obj: dict) -> tuple[tuple, bytes | None]:
    """Validate one heartbeat mapping; return (record values in RECORD_DTYPE
    field order, canonical labels or None).  Raises Reject."""
    keys = obj.keys()
    if not keys <= KNOWN_FIELDS:
        unknown = next(k for k in obj if k not in KNOWN_FIELDS)
        raise Reject("unknown_field", f"unknown field {short(unknown)}")
    if _KEY.name not in obj:
        raise Reject("missing_field", f"missing {_KEY.name}")
    values = list(_BLANK)
    values[_KEY_INDEX] = _text(_KEY, obj[_KEY.name])
    if not _REQUIRED_SET <= keys:
        missing = next(k for k in REQUIRED_FIELDS if k not in obj)
        raise Reject("missing_field", f"missing {missing}")
    for a, b in PAIRS:
        if (a in obj) != (b in obj):
            raise Reject(
                "missing_field",
                f"{a if a in obj else b} without its pair ({a} and {b} come together)",
            )
    dup = getattr(obj, "duplicate", None)
    if dup is not None:
        raise Reject("bad_field", f"field {short(dup)} given twice")

    labels = json_fields(obj, values, _READ)
    return tuple(values), labels


def check_heartbeat(obj: dict) -> tuple[np.void | None, bytes | None, str | None, str | None]:
    """Validate one decoded JSON heartbeat object (the replay path uses this).

    Returns ``(record, labels, None, None)`` when valid: ``record`` a RECORD_DTYPE
    scalar, ``labels`` canonical compact JSON bytes or None.  Returns
    ``(None, None, reason, detail)`` otherwise.  Never raises on bad input.
    """
    if not isinstance(obj, dict):
        return (
            None,
            None,
            "malformed_heartbeat",
            f"heartbeat is {type(obj).__name__}, not an object",
        )
    try:
        values, labels = check_mapping(obj)
    except Reject as rej:
        return None, None, rej.reason, f"{node_label(obj.get('node'))}: {rej.detail}"
    one = np.zeros(1, RECORD_DTYPE)
    one[0] = values
    return one[0], labels, None, None


def pack_records(good: list) -> np.ndarray:
    """Checked value tuples as RECORD_DTYPE rows (reserved bytes 0).  Packed
    with struct: several times cheaper than assigning tuples to a structured
    array."""
    pack = RECORD_PACK.pack
    return np.frombuffer(bytearray(b"".join([pack(*v) for v in good])), RECORD_DTYPE)


# ------------------------------------------------------------------ JSON frames


class _DupDict(dict):
    """A decoded object in which a key appeared more than once."""

    duplicate: str


def _pairs_hook(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        obj = _DupDict(obj)
        obj.duplicate = key
    return obj


JSON_DECODER = json.JSONDecoder(object_pairs_hook=_pairs_hook)
# Strings (escapes included) to strip before counting brackets.  Possessive
# quantifiers and the `\Z` fallback make an unterminated string match to the end,
# so the scan stays linear on hostile input.
_JSON_STRING_RE = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)


def _depths(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, bracket depth after each byte) of ``buf`` with its strings
    removed: a linear scan, before parsing."""
    a = np.frombuffer(_JSON_STRING_RE.sub(b"", buf), np.uint8)
    step = ((a == 0x5B) | (a == 0x7B)).astype(np.int32)
    step -= (a == 0x5D) | (a == 0x7D)
    return a, step.cumsum()


def _too_deep(buf: bytes) -> bool:
    """Nesting depth > MAX_JSON_DEPTH, decided before parsing (linear time)."""
    if buf.count(b"[") + buf.count(b"{") <= MAX_JSON_DEPTH:
        return False
    depth = _depths(buf)[1]
    return bool(depth.size) and int(depth.max()) > MAX_JSON_DEPTH


def json_array_items(buf: bytes) -> int:
    """At least the number of heartbeats JSON text ``buf`` can hold: 1 +
    the commas of its top-level array (1 when the top level is not an
    array), counted by a linear scan before parsing, so a frame with too
    many costs no parse.  Exact for a well-formed array of n >= 1 items."""
    if not buf.lstrip(b" \t\n\r").startswith(b"["):
        return 1
    a, depth = _depths(buf)
    return 1 + int(np.count_nonzero((a == 0x2C) & (depth == 1)))


def parse_json(buf: bytes) -> Any:
    """The decoded JSON value, or Reject('malformed_frame')."""
    if _too_deep(buf):
        raise Reject("malformed_frame", f"JSON nesting deeper than {MAX_JSON_DEPTH}")
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Reject("malformed_frame", f"invalid UTF-8 at byte {err.start}") from None
    try:
        return JSON_DECODER.decode(text)
    except RecursionError:
        raise Reject("malformed_frame", "JSON nesting too deep") from None
    except ValueError as err:  # JSONDecodeError, and int digit-limit errors
        raise Reject("malformed_frame", f"invalid JSON: {short(str(err), 80)}") from None


# An integer literal orjson may not return as an int (beyond 64 bits): a run
# of 19 digits anywhere (a fraction, a string) sends the frame to the reference.
# Digits become "0" (a regex search backtracks at every digit: 20x slower).
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGITS = b"0" * 19
_CONTAINERS = (dict, list)


def _pairs(value: Any) -> int:
    """Key-value pairs in a parsed JSON value, nested objects included
    (level by level: no call per element, no recursion)."""
    total, level = 0, [value]
    while level:
        dicts = [v for v in level if type(v) is dict]
        total += sum(map(len, dicts))
        inner = [x for d in dicts for x in d.values() if type(x) in _CONTAINERS]
        inner += [x for v in level if type(v) is list for x in v if type(x) in _CONTAINERS]
        level = inner
    return total


def loads(buf: bytes) -> Any:
    """`parse_json`'s value (or its Reject), parsed by orjson where that is
    known to give the same value (see the module docstring)."""
    opens = buf.count(b"{") + buf.count(b"[")
    shallow = opens <= MAX_JSON_DEPTH or not _too_deep(buf)
    if shallow and _LONG_DIGITS not in buf.translate(_DIGITS_TO_ZERO):
        try:
            value = orjson.loads(buf)
        except orjson.JSONDecodeError:
            return parse_json(buf)  # the reference decides, and words the reason
        # A flat object (one bracket in the text) holds len() pairs; otherwise
        # count them.  Colons in the text: one per pair, plus those in strings.
        pairs = len(value) if opens == 1 and type(value) is dict else _pairs(value)
        if pairs == buf.count(b":") or pairs == _JSON_STRING_RE.sub(b"", buf).count(b":"):
            return value
    return parse_json(buf)


class _Heartbeats:
    """What a decode accepts and rejects, heartbeat by heartbeat."""

    def __init__(self) -> None:
        self.good: list[tuple] = []
        self.labels: list[bytes | None] = []
        self.rejects: dict[str, int] = {}
        self.sample: list[tuple[str, str]] = []

    def check(self, obj: dict) -> None:
        try:
            values, lab = check_mapping(obj)
        except Reject as rej:
            tally(
                self.rejects,
                self.sample,
                rej.reason,
                f"{node_label(obj.get('node'))}: {rej.detail}",
            )
            return
        self.good.append(values)
        self.labels.append(lab)

    def reject(self, reason: str, detail: str) -> None:
        tally(self.rejects, self.sample, reason, detail)

    def frame(self, seen: int, one: tuple | None = None) -> DecodedFrame:
        return DecodedFrame(
            pack_records(self.good), self.labels, self.rejects, seen, self.sample, one
        )


def decode_json(buf: bytes) -> DecodedFrame:
    """`decode_frame` for a JSON frame (``buf`` within the size limit)."""
    try:
        value = loads(buf)
    except Reject as rej:
        return frame_reject(rej.reason, rej.detail)
    if isinstance(value, dict):
        items = [value]
    elif isinstance(value, list):
        items = value
        if len(items) >= COLUMNS_MIN:
            return _decode_items(items)
    else:
        return frame_reject(
            "malformed_frame", f"top level is {type(value).__name__}, not object or array"
        )
    out = _Heartbeats()
    for item in items:
        if isinstance(item, dict):
            out.check(item)
        else:
            out.reject(
                "malformed_heartbeat", f"array element is {type(item).__name__}, not an object"
            )
    one = out.good[0] if len(items) == 1 and out.good else None
    return out.frame(len(items), one)


def decode_json_objects(frames: list) -> DecodedFrame:
    """Decode k JSON frames that each start with ``{`` as one batch.

    Returns the k results of `decode_frame` merged: records and labels in
    frame order, rejects summed, the first samples, ``seen = k`` (a frame
    that starts with ``{`` holds one object or is malformed).  Frames are
    bytes no longer than ``max_frame_bytes`` (the caller checks); never
    raises on bad input.
    """
    items = _flat_objects(frames)
    if items is not None:
        return _decode_items(items, frames)
    items = []
    for buf in frames:
        try:
            items.append(loads(buf))
        except Reject as rej:
            items.append(rej)
    return _decode_items(items)


def _flat_objects(frames: list) -> list | None:
    """orjson's value of every frame at once, when the run's text shows
    that each is one flat object: one brace per frame (the one it starts
    with), no bracket, and as many pairs in all as colons in all (each frame
    has at least as many colons as pairs, so the totals agree only if every
    frame's do: no repeated key).  None when that does not hold, or a frame
    does not parse: then frame by frame (`loads`).

    Unlike `loads`, the text is not searched for long integers (decimal
    fractions make long digit runs common): a value may be a float orjson
    made of an integer beyond 64 bits, at least `_BIG` in magnitude.
    `_decode_items` (told so by ``texts``) takes no such float as plain and
    has the reference parse such a heartbeat's frame again."""
    text = b"\n".join(frames)
    if text.count(b"{") != len(frames) or b"[" in text:
        return None
    try:
        items = list(map(orjson.loads, frames))
    except orjson.JSONDecodeError:
        return None
    return items if sum(map(len, items)) == text.count(b":") else None


# ------------------------------------------------------------------ runs, column by column

#: Heartbeats with the same keys are checked column by column from this many
#: on (a column check costs tens of microseconds whatever its length; one
#: heartbeat through `check_mapping` a few).
COLUMNS_MIN = 16
_KEY_SIZE = RECORD_DTYPE[_KEY.name].itemsize
_ITEM = np.dtype((np.void, RECORD_DTYPE.itemsize))
# A column of node ids joined by newlines (not a node id character): one
# fullmatch checks them all.
_KEY_COLUMN = re.compile(
    f"(?:{_RANGES_RE[_KEY.name].pattern[:-1]}{{1,{_KEY_SIZE - 1}}}\n)*"
    f"{_RANGES_RE[_KEY.name].pattern[:-1]}{{1,{_KEY_SIZE - 1}}}"
).fullmatch
assert _KEY.nonempty and _KEY.ranges is not None and max(hi for _, hi in _KEY.ranges) < 0x80


def _decode_items(items: list, texts: list | None = None) -> DecodedFrame:
    """The heartbeats ``items`` decoded as `decode_json` decodes an array's:
    a dict is a heartbeat, a `Reject` a frame that did not parse (counted as
    its frame's reject), anything else an element that is not an object.
    ``texts``: the frames the items were parsed from by `_flat_objects`
    (whose floats may stand for long integers), else None.

    Dicts with the same keys form a group.  A group whose keys alone decide
    the reject (`_key_reject`) is counted without a call per heartbeat; one
    the column check can read is checked column by column; what is left
    goes through `check_mapping`, in frame order.  Memory: the records of
    the checked groups and of the result, nothing per rejected heartbeat."""
    n = len(items)
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        if type(item) is dict:
            groups.setdefault(tuple(item), []).append(i)
    good = np.zeros(n, bool)
    early: list[tuple[str, str] | None] = [None] * n
    parts = []  # (frame positions, records, which are valid) per checked group
    for keys, where in groups.items():
        verdict = _key_reject(keys)
        if verdict is not None:
            for i in where:
                early[i] = verdict
        elif len(where) >= COLUMNS_MIN and _fast_keys(keys):
            idx = np.array(where, np.intp)
            recs = np.zeros(len(where), RECORD_DTYPE)
            ok = _check_columns(keys, [items[i] for i in where], recs)
            good[idx] = ok
            parts.append((idx, recs, ok))
    slow: dict[int, tuple] = {}
    labels_of: dict[int, bytes | None] = {}
    rejects: dict[str, int] = {}
    sample: list[tuple[str, str]] = []
    for i in np.flatnonzero(~good).tolist():
        item = items[i]
        verdict = early[i]
        if verdict is not None:
            reason, detail = verdict
            rejects[reason] = rejects.get(reason, 0) + 1
            if len(sample) < SAMPLE_MAX:  # the detail only for the sample
                sample.append((reason, f"{node_label(item.get('node'))}: {detail}"))
        elif isinstance(item, Reject):
            tally(rejects, sample, item.reason, "frame: " + item.detail)
        elif not isinstance(item, dict):
            tally(
                rejects,
                sample,
                "malformed_heartbeat",
                f"array element is {type(item).__name__}, not an object",
            )
        else:
            if texts is not None and _big_float(item):
                try:  # maybe an integer orjson made a float: the reference reads it
                    item = parse_json(texts[i])
                except Reject as rej:
                    tally(rejects, sample, rej.reason, "frame: " + rej.detail)
                    continue
            try:
                slow[i], labels_of[i] = check_mapping(item)
            except Reject as rej:
                tally(rejects, sample, rej.reason, f"{node_label(item.get('node'))}: {rej.detail}")
                continue
            good[i] = True
    kept = np.flatnonzero(good)
    m = len(kept)
    if m == n and len(parts) == 1 and not slow:
        records = parts[0][1]  # one group, all plainly valid: already in frame order
    else:
        records = np.zeros(m, RECORD_DTYPE)
        at = np.cumsum(good) - 1  # frame position -> position among the kept
        # Copied as whole items: a structured copy would leave reserved bytes unset.
        whole = records.view(_ITEM)
        for idx, recs, ok in parts:
            whole[at[idx[ok]]] = recs.view(_ITEM)[ok]
        for i, values in slow.items():
            records[at[i]] = values
    labels: list[bytes | None] = (
        [labels_of.get(i) for i in kept.tolist()] if labels_of else [None] * m
    )
    return DecodedFrame(records, labels, rejects, n, sample)


#: orjson reads an integer literal beyond 64 bits as a float at least this
#: large in magnitude (the standard library as an int): such a float is never
#: taken as plain.
_BIG = float(2**63)


def _big_float(obj: dict) -> bool:
    """Whether heartbeat ``obj`` holds a float of magnitude `_BIG` or more
    (in any field; resources and labels are one level down)."""
    values = list(obj.values())
    values += [x for v in values if type(v) is dict for x in v.values()]
    return any([type(x) is float and not -_BIG < x < _BIG for x in values])


def _key_reject(keys: tuple) -> tuple[str, str] | None:
    """The (reason, detail) `check_mapping` gives every heartbeat whose keys
    are exactly ``keys`` before it reads a value (an unknown key, no node
    id), or None."""
    unknown = [k for k in keys if k not in KNOWN_FIELDS]
    if unknown:
        return "unknown_field", f"unknown field {short(unknown[0])}"
    if _KEY.name not in keys:
        return "missing_field", f"missing {_KEY.name}"
    return None


def _fast_keys(keys: tuple) -> bool:
    """Whether heartbeats with exactly ``keys`` pass `check_mapping`'s key
    checks (known, required, pairs whole) and have only fields the column
    check reads (no resources, no labels)."""
    have = frozenset(keys)
    return (
        have <= _COLUMN_FIELDS
        and _REQUIRED_SET <= have
        and all((a in have) == (b in have) for a, b in PAIRS)
    )


_COLUMN_FIELDS = frozenset(
    key for rule in FIELDS if isinstance(rule, (Number, Text)) for key in names_of(rule)
)


def _check_columns(keys: tuple, objs: list, records: np.ndarray) -> np.ndarray:
    """Check heartbeats ``objs`` (dicts, each with exactly ``keys``: see
    `_fast_keys`) column by column and write them into ``records``;
    returns which are plainly valid.  Accepts only what `check_mapping`
    accepts, with the values it would give: a float field takes floats in
    range, an integer field ints in range (the reference decides anything
    else, e.g. an integer for a float field), text its rule's check."""
    ok = np.ones(len(objs), bool)
    flags = 0
    for rule in FIELDS:
        if not isinstance(rule, (Number, Text)) or rule.bit and names_of(rule)[0] not in keys:
            continue
        flags |= rule.bit
        if isinstance(rule, Text):
            records[rule.name] = _text_column(rule, list(map(itemgetter(rule.name), objs)), ok)
            continue
        first = None
        for key in rule.names:
            column = _number_column(rule, key, list(map(itemgetter(key), objs)), ok)
            if first is not None:
                ok &= column >= first
            first = column if rule.ordered else None
            records[key] = column
    records["flags"] = flags
    return ok


def _number_column(rule: Number, key: str, values: list, ok: np.ndarray) -> np.ndarray:
    """``values`` of number field ``key`` as an array; clears ``ok`` where a
    value is not of the field's type or not in range."""
    bound = rule.bound
    if RECORD_DTYPE[key].kind == "u":
        # An interval holds every int between its ends: min and max decide.
        if set(map(type, values)) == {int}:
            if bound.holds(min(values)) and bound.holds(max(values)):
                return np.array(values, np.int64)
        plain = [type(x) is int and bound.holds(x) for x in values]
        ok &= plain
        return np.array([x if p else 0 for x, p in zip(values, plain, strict=True)], np.int64)
    if set(map(type, values)) != {float}:
        plain = [type(x) is float for x in values]
        ok &= plain
        values = [x if p else 0.0 for x, p in zip(values, plain, strict=True)]
    column = np.fromiter(values, np.float64, len(values))
    # Within the bound, and short of _BIG (see _flat_objects).
    lo, lo_open = (bound.lo, bound.lo_open) if bound.lo > -_BIG else (-_BIG, True)
    hi, hi_open = (bound.hi, bound.hi_open) if bound.hi < _BIG else (_BIG, True)
    ok &= column > lo if lo_open else column >= lo
    ok &= column < hi if hi_open else column <= hi
    return column


def _text_column(rule: Text, values: list, ok: np.ndarray) -> np.ndarray:
    """``values`` of text field ``rule`` as UTF-8; clears ``ok`` where
    `_text` would reject one."""
    size = RECORD_DTYPE[rule.name].itemsize
    if rule is _KEY and set(map(type, values)) == {str} and _KEY_COLUMN("\n".join(values)):
        return np.array(values, f"S{size}")  # ASCII by the pattern
    raw = []
    for j, value in enumerate(values):
        try:
            raw.append(_text(rule, value))
        except Reject:
            ok[j] = False
            raw.append(b"")
    return np.array(raw, f"S{size}")
