"""JSON frames, and the check of one heartbeat given as a mapping.

A JSON frame is one UTF-8 object or an array of objects; it is the only kind
that carries ``labels``.  The frame is hostile until checked: its nesting
depth is bounded before it is parsed (linear time), a repeated key is caught
by the parser hook, and nothing is evaluated.

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
from typing import Any

import numpy as np

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
)
from shm_engine.wire.result import DecodedFrame, Reject, frame_reject, node_label, short, tally

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
        value = parse_json(buf)
    except Reject as rej:
        return frame_reject(rej.reason, rej.detail)
    if isinstance(value, dict):
        items = [value]
    elif isinstance(value, list):
        items = value
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
    out = _Heartbeats()
    for buf in frames:
        try:
            obj = parse_json(buf)
        except Reject as rej:
            out.reject(rej.reason, "frame: " + rej.detail)
            continue
        out.check(obj)
    return out.frame(len(frames))
