"""Heartbeat frames: decoding and validation at the ingest's trust boundary.

Every byte that arrives on the engine's PULL socket comes from the network, so
this module treats it as hostile: it never unpickles or evaluates anything, it
checks a frame's length before looking inside it, and it validates every
heartbeat against the input table of SCORING.md before anything of it reaches
the registry.  A heartbeat with any problem is rejected whole and counted under
one reason of ``REJECT_REASONS``; the good heartbeats of the same frame are kept.

Invariant: every record ``decode_frame`` returns is a valid heartbeat in the
``RECORD_DTYPE`` layout, whatever the frame kind, so the ingest handles one
batch type.  Fields a heartbeat does not carry are 0 and their presence bit is
clear.  For every frame, ``len(records) + sum(rejects.values()) == seen``.

Rules for callers: ``decode_frame`` and ``check_heartbeat`` are hot paths and
return status, never raise on bad input; so are ``decode_one_record_frames``
and ``decode_json_objects``, which decode a run of small frames as one batch
with the results of ``decode_frame`` on each, merged.  The encoders are for senders and
tests; they raise ``ValueError`` on an invalid heartbeat.

Two frame kinds (the first byte decides, docs/wire-format.md is the spec):

- JSON: one UTF-8 object, or an array of objects (first byte ``{``, ``[`` or
  JSON whitespace).  The only kind that carries ``labels``.
- binary batch v1, little-endian::

      header (16 bytes)                 record (192 bytes), `count` times
      +------+-----+------+-----+-----+  +-----------------------------+
      | SHMH | ver | rsz  |count| rsv |  | 0   f8 x 9: cpu mem queue   |
      | 4    | u2  | u2   | u4  | u4  |  |     avg_job_s throughput io |
      +------+-----+------+-----+-----+  |     p50_ms p95_ms ts        |
        ver = 1, rsz = 192, rsv = 0      | 72  u4 ok, 76 u4 err        |
                                         | 80  u1 flags, 81..87 rsv    |
                                         | 88  node[64]  NUL-padded    |
                                         | 152 zone[32]  NUL-padded    |
                                         | 184..191 rsv                |
                                         +-----------------------------+

Binary validation is vectorised over the batch; only failing records, and node
ids or zones with bytes >= 0x80 (which need a real UTF-8 decode), cost per-record
Python work.  Frames of at most 4 records (most senders send one heartbeat per
frame) take a scalar path instead: a struct unpack and plain comparisons per
record, the same rules in the same order with the same details (a numpy
reduction costs more than a whole record's checks in Python at that size).

Decisions SCORING.md leaves open (the checks run in this order; the first
failure names the reason, as in the test suite's reference implementation):
unknown key; node missing, then malformed; required fields missing; then each
value in table order (a both-or-neither pair with one half is ``missing_field``: its partner is missing).
``bool`` is not a number, an integral float is not an ``ok``/``err`` count,
``null`` is not a value (omit the key), a zone may not contain NUL (the binary
padding could not represent it), and a JSON object with a repeated key is
rejected (``bad_field``) rather than silently keeping the last value.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from kernels.params import HAS_IO, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT

# Presence bits of the `flags` byte.  The first four are the kernels' "reported"
# bits (kernels.params); the tick never sees the last two.
HAS_TS = 16
HAS_ZONE = 32
KNOWN_FLAGS = HAS_THROUGHPUT | HAS_OKERR | HAS_IO | HAS_TAIL | HAS_TS | HAS_ZONE

MAGIC = b"SHMH"
VERSION = 1
HEADER = struct.Struct("<4sHHII")     # magic, version, record_size, count, reserved
HEADER_SIZE = HEADER.size             # 16
RECORD_SIZE = 192

NODE_OFFSET, NODE_SIZE = 88, 64
ZONE_OFFSET, ZONE_SIZE = 152, 32
RESERVED_SPANS = ((81, 88), (184, 192))   # record bytes that must be zero

MAX_NODE_BYTES = NODE_SIZE - 1        # 63: at least one trailing NUL
MAX_ZONE_BYTES = ZONE_SIZE - 1        # 31
MAX_LABELS_BYTES = 256                # canonical compact JSON of `labels`
MAX_JSON_DEPTH = 32
U32_MAX = 2**32 - 1
DEFAULT_MAX_FRAME_BYTES = 1 << 20     # what clients split batches to

RECORD_DTYPE = np.dtype({
    "names": ["cpu", "mem", "queue", "avg_job_s", "throughput", "io",
              "p50_ms", "p95_ms", "ts", "ok", "err", "flags", "node", "zone"],
    "formats": ["<f8"] * 9 + ["<u4", "<u4", "u1", f"S{NODE_SIZE}", f"S{ZONE_SIZE}"],
    "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 76, 80, NODE_OFFSET, ZONE_OFFSET],
    "itemsize": RECORD_SIZE,
})
assert RECORD_DTYPE.itemsize == RECORD_SIZE

# Reject reasons, in the order counters are laid out.
REJECT_REASONS = (
    "frame_too_large",      # frame longer than max_frame_bytes; not decoded at all
    "malformed_frame",      # undecodable frame: bad UTF-8/JSON, too deep, wrong top
                            # level, bad magic, truncated or mis-sized binary,
                            # non-zero reserved header field
    "unsupported_version",  # binary version or record_size we do not know
    "malformed_heartbeat",  # an element of a JSON array that is not an object
    "missing_field",        # a required field is absent, or half of an ok/err or
                            # p50_ms/p95_ms pair
    "bad_field",            # wrong type, non-finite, out of range,
                            # bad flags/reserved bytes, labels or zone invalid
    "bad_node_id",          # empty, > 63 bytes, invalid UTF-8, control chars, NUL
    "unknown_field",        # a JSON key not in SCORING.md's input table
    "registry_full",        # counted by the ingest, never by this module
    # Counted by the ingest (`shm_engine.ingest.admission`), never by this module:
    "too_many_heartbeats",  # more than [ingest] max_heartbeats_per_frame; not decoded
    "not_authorized",       # the sender may not speak for this node id
    "node_not_allowed",     # node id outside [ingest] allow_nodes
    "registration_rate",    # a new node over the registration budget
)

REQUIRED_FIELDS = ("node", "cpu", "mem", "queue", "avg_job_s")
OPTIONAL_FIELDS = ("throughput", "ok", "err", "io", "p50_ms", "p95_ms", "ts",
                   "zone", "labels")
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)
_REQUIRED_SET = frozenset(REQUIRED_FIELDS)

_SAMPLE_MAX = 3
_NUMBER_TYPES = (int, float, np.integer, np.floating)   # bool is excluded below
_INT_TYPES = (int, np.integer)
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")        # C0, DEL, C1
_JSON_FIRST = frozenset(b"{[ \t\n\r")
_HEADER_V1_ONE = HEADER.pack(MAGIC, VERSION, RECORD_SIZE, 1, 0)
_ONE_FRAME_SIZE = HEADER_SIZE + RECORD_SIZE


class DecodedFrame(NamedTuple):
    """What one frame yielded (immutable; a NamedTuple because building a
    frozen dataclass costs about as much as decoding a 1-record frame).

    ``records``: the accepted heartbeats (RECORD_DTYPE), in frame order.
    ``labels``: canonical JSON labels aligned with ``records`` (None where a
    heartbeat had none); None for binary frames, which cannot carry labels.
    ``rejects``: reason -> count, only reasons that occurred.
    ``seen``: heartbeats in the frame (1 for a frame that could not be split).
    ``sample``: up to 3 (reason, detail) pairs, for rate-limited logging.
    ``one``: for a frame of exactly one heartbeat that was accepted, its
    values as plain Python objects in RECORD_DTYPE field order, node and zone
    without padding (what ``records[0]`` holds); None otherwise.  The
    ingest's 1-record path reads it instead of the numpy record.
    """
    records: np.ndarray
    labels: list[bytes | None] | None
    rejects: dict[str, int]
    seen: int
    sample: list[tuple[str, str]]
    one: tuple | None = None


class _Reject(Exception):
    """Internal: one heartbeat is invalid.  Never escapes this module's hot paths."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


# ------------------------------------------------------------------ helpers

def _short(value: Any, limit: int = 40) -> str:
    """repr() for log details: escaped (ids are untrusted) and bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _node_label(node: Any) -> str:
    if isinstance(node, (bytes, bytearray)):
        node = bytes(node).decode("utf-8", "backslashreplace")
    elif not isinstance(node, str):
        return "node ?"
    return "node " + _short(node)


def _frame_reject(reason: str, detail: str) -> DecodedFrame:
    return DecodedFrame(np.zeros(0, RECORD_DTYPE), None, {reason: 1}, 1,
                        [(reason, "frame: " + detail)])


def _num(obj: Mapping, key: str) -> float:
    value = obj[key]
    if type(value) is float and math.isfinite(value):
        return value
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise _Reject("bad_field", f"{key}={_short(value)} is not a number")
    try:
        x = float(value)
    except OverflowError:
        raise _Reject("bad_field", f"{key}={_short(value)} overflows float64") from None
    if not math.isfinite(x):
        raise _Reject("bad_field", f"{key}={x!r} is not finite")
    return x


def _unit(obj: Mapping, key: str) -> float:
    x = _num(obj, key)
    if not 0.0 <= x <= 1.0:
        raise _Reject("bad_field", f"{key}={x!r} out of [0, 1]")
    return x


def _nonneg(obj: Mapping, key: str) -> float:
    x = _num(obj, key)
    if x < 0.0:
        raise _Reject("bad_field", f"{key}={x!r} out of [0, inf)")
    return x


def _positive(obj: Mapping, key: str) -> float:
    x = _num(obj, key)
    if x <= 0.0:
        raise _Reject("bad_field", f"{key}={x!r} out of (0, inf)")
    return x


def _count(obj: Mapping, key: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, _INT_TYPES):
        raise _Reject("bad_field", f"{key}={_short(value)} is not an integer")
    if not 0 <= value <= U32_MAX:
        raise _Reject("bad_field", f"{key}={_short(value)} out of [0, {U32_MAX}]")
    return int(value)


def _node_bytes(node: Any) -> bytes:
    """The id's UTF-8 bytes, or _Reject('bad_node_id')."""
    if not isinstance(node, str):
        raise _Reject("bad_node_id", f"node id is not a string: {_short(node)}")
    try:
        raw = node.encode("utf-8")
    except UnicodeEncodeError:
        raise _Reject("bad_node_id", "node id is not valid UTF-8") from None
    if not raw:
        raise _Reject("bad_node_id", "node id is empty")
    if len(raw) > MAX_NODE_BYTES:
        raise _Reject("bad_node_id", f"node id is {len(raw)} bytes > {MAX_NODE_BYTES}")
    if _CONTROL_RE.search(node):
        raise _Reject("bad_node_id", "node id contains a control character")
    return raw


# ------------------------------------------------------------------ one JSON heartbeat

def _check(obj: dict) -> tuple[tuple, bytes | None]:
    """Validate one decoded JSON heartbeat; return (record tuple, labels).

    The tuple is in RECORD_DTYPE field order.  Raises _Reject (internal).
    """
    keys = obj.keys()
    if not keys <= KNOWN_FIELDS:
        unknown = next(k for k in obj if k not in KNOWN_FIELDS)
        raise _Reject("unknown_field", f"unknown field {_short(unknown)}")
    if "node" not in obj:
        raise _Reject("missing_field", "missing node")
    node = _node_bytes(obj["node"])
    if not _REQUIRED_SET <= keys:
        missing = next(k for k in REQUIRED_FIELDS if k not in obj)
        raise _Reject("missing_field", f"missing {missing}")
    for a, b in (("ok", "err"), ("p50_ms", "p95_ms")):
        if (a in obj) != (b in obj):
            raise _Reject("missing_field", f"{a if a in obj else b} without its pair "
                                       f"({a} and {b} come together)")
    dup = getattr(obj, "duplicate", None)
    if dup is not None:
        raise _Reject("bad_field", f"field {_short(dup)} given twice")

    cpu = _unit(obj, "cpu")
    mem = _unit(obj, "mem")
    queue = _nonneg(obj, "queue")
    avg_job_s = _nonneg(obj, "avg_job_s")
    flags = 0
    throughput = io = p50 = p95 = ts = 0.0
    ok = err = 0
    zone = b""
    labels = None
    if "throughput" in obj:
        throughput = _nonneg(obj, "throughput")
        flags |= HAS_THROUGHPUT
    if "ok" in obj:
        ok = _count(obj, "ok")
        err = _count(obj, "err")
        flags |= HAS_OKERR
    if "io" in obj:
        io = _unit(obj, "io")
        flags |= HAS_IO
    if "p50_ms" in obj:
        p50 = _positive(obj, "p50_ms")
        p95 = _positive(obj, "p95_ms")
        if not p95 >= p50:
            raise _Reject("bad_field", f"p95_ms={p95!r} < p50_ms={p50!r}")
        flags |= HAS_TAIL
    if "ts" in obj:
        ts = _num(obj, "ts")
        flags |= HAS_TS
    if "zone" in obj:
        zone = _zone_bytes(obj["zone"])
        flags |= HAS_ZONE
    if "labels" in obj:
        labels = _labels_bytes(obj["labels"])
    return ((cpu, mem, queue, avg_job_s, throughput, io, p50, p95, ts,
             ok, err, flags, node, zone), labels)


def _zone_bytes(zone: Any) -> bytes:
    if not isinstance(zone, str):
        raise _Reject("bad_field", f"zone={_short(zone)} is not a string")
    try:
        raw = zone.encode("utf-8")
    except UnicodeEncodeError:
        raise _Reject("bad_field", "zone is not valid UTF-8") from None
    if len(raw) > MAX_ZONE_BYTES:
        raise _Reject("bad_field", f"zone is {len(raw)} bytes > {MAX_ZONE_BYTES}")
    if b"\0" in raw:
        raise _Reject("bad_field", "zone contains NUL")
    return raw


_LABELS_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _labels_bytes(labels: Any) -> bytes:
    if not isinstance(labels, dict):
        raise _Reject("bad_field", f"labels={_short(labels)} is not an object")
    dup = getattr(labels, "duplicate", None)
    if dup is not None:
        raise _Reject("bad_field", f"label {_short(dup)} given twice")
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise _Reject("bad_field", f"label {_short(k)}={_short(v)} is not str -> str")
    try:
        raw = _LABELS_ENCODER.encode(labels).encode("utf-8")
    except UnicodeEncodeError:
        raise _Reject("bad_field", "labels are not valid UTF-8") from None
    if len(raw) > MAX_LABELS_BYTES:
        raise _Reject("bad_field", f"labels are {len(raw)} bytes > {MAX_LABELS_BYTES}")
    return raw


def check_heartbeat(obj: dict) -> tuple[np.void | None, bytes | None, str | None, str | None]:
    """Validate one decoded JSON heartbeat object (the replay path uses this).

    Returns ``(record, labels, None, None)`` when valid: ``record`` a RECORD_DTYPE
    scalar, ``labels`` canonical compact JSON bytes or None.  Returns
    ``(None, None, reason, detail)`` otherwise.  Never raises on bad input.
    """
    if not isinstance(obj, dict):
        return None, None, "malformed_heartbeat", f"heartbeat is {type(obj).__name__}, not an object"
    try:
        values, labels = _check(obj)
    except _Reject as rej:
        return None, None, rej.reason, f"{_node_label(obj.get('node'))}: {rej.detail}"
    one = np.zeros(1, RECORD_DTYPE)
    one[0] = values
    return one[0], labels, None, None


# ------------------------------------------------------------------ JSON frames

class _DupDict(dict):
    """A decoded object in which a key appeared more than once."""
    duplicate: str


def _pairs_hook(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        obj = _DupDict(obj)
        obj.duplicate = dup
    return obj


_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_pairs_hook)
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


def _parse_json(buf: bytes) -> Any:
    """The decoded JSON value, or _Reject('malformed_frame')."""
    if _too_deep(buf):
        raise _Reject("malformed_frame", f"JSON nesting deeper than {MAX_JSON_DEPTH}")
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Reject("malformed_frame", f"invalid UTF-8 at byte {err.start}") from None
    try:
        return _JSON_DECODER.decode(text)
    except RecursionError:
        raise _Reject("malformed_frame", "JSON nesting too deep") from None
    except ValueError as err:   # JSONDecodeError, and int digit-limit errors
        raise _Reject("malformed_frame", f"invalid JSON: {_short(str(err), 80)}") from None


def _pack_records(good: list) -> np.ndarray:
    """Checked value tuples as RECORD_DTYPE rows.  Packed with struct
    (reserved bytes 0): several times cheaper than assigning tuples to a
    structured array."""
    pack = _REC.pack
    return np.frombuffer(bytearray(b"".join([pack(*v, 0) for v in good])), RECORD_DTYPE)


def _decode_json(buf: bytes) -> DecodedFrame:
    try:
        value = _parse_json(buf)
    except _Reject as rej:
        return _frame_reject(rej.reason, rej.detail)
    if isinstance(value, dict):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        return _frame_reject("malformed_frame",
                             f"top level is {type(value).__name__}, not object or array")
    good: list[tuple] = []
    labels: list[bytes | None] = []
    rejects: dict[str, int] = {}
    sample: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            reason = "malformed_heartbeat"
            detail = f"array element is {type(item).__name__}, not an object"
        else:
            try:
                values, lab = _check(item)
            except _Reject as rej:
                reason = rej.reason
                detail = f"{_node_label(item.get('node'))}: {rej.detail}"
            else:
                good.append(values)
                labels.append(lab)
                continue
        rejects[reason] = rejects.get(reason, 0) + 1
        if len(sample) < _SAMPLE_MAX:
            sample.append((reason, detail))
    records = _pack_records(good)
    one = good[0] if len(items) == 1 and good else None
    return DecodedFrame(records, labels, rejects, len(items), sample, one)


# ------------------------------------------------------------------ binary frames

def _bad_utf8_rows(col: np.ndarray, rows: np.ndarray, check_control: bool) -> np.ndarray:
    """Rows (indices) of an S-field whose text is not valid UTF-8 (or, with
    check_control, contains a C1 control character)."""
    bad = []
    for i in rows:
        try:
            text = col[i].decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
            continue
        if check_control and _CONTROL_RE.search(text):
            bad.append(i)
    return np.asarray(bad, np.intp)


def _rows_any(b: np.ndarray) -> np.ndarray:
    """Per-row any() of a C-contiguous (n, 8*k) bool array.

    numpy's any(axis=1) over short rows is slow; the whole-array test settles
    the common all-False case, and a uint64 view does 8 bytes per step."""
    if not b.any():
        return np.zeros(b.shape[0], bool)
    return np.bitwise_or.reduce(b.view(np.uint64), axis=1) != 0


def _padded_field(raw: np.ndarray, offset: int, size: int):
    """(bytes, non-zero bytes after the first NUL per row) of a NUL-padded field."""
    b = np.ascontiguousarray(raw[:, offset:offset + size])
    nz = b != 0
    first_nul = nz.argmin(axis=1)          # 0 when a row has no NUL; checked apart
    after = np.arange(size, dtype=np.uint8) >= first_nul.astype(np.uint8)[:, None]
    return b, _rows_any(nz & after)


def _all_valid(recs: np.ndarray, raw: np.ndarray) -> bool:
    """True iff every record passes every rule of _validate_binary.

    One compiled pass over the records (`_wire_kernels.all_valid_records`,
    imported on first use so that senders never load numba); when it says
    False, _validate_binary (one mask per rule) finds which records fail and
    why.  test_wire checks the two agree on random and mutated frames.
    """
    global _all_valid_records
    if _all_valid_records is None:
        from shm_engine.wire._checks import all_valid_records as _all_valid_records
    if not raw.flags.c_contiguous:
        raw = np.ascontiguousarray(raw)
    return bool(_all_valid_records(raw.view("<f8"), raw.view("<u8")))


_all_valid_records = None


def _validate_binary(recs: np.ndarray, raw: np.ndarray):
    """Vectorised checks.  Returns (ok mask, reasons, details) for the failures.

    Rules are listed in priority order; a failing record is reported under the
    first rule it breaks.  Each rule: (mask, reason, detail(i) -> str).
    """
    flags = recs["flags"]
    rules: list[tuple[np.ndarray, str, Any]] = []

    def f(name: str):
        return lambda i: f"{name}={float(recs[name][i])!r}"

    # node id
    node, node_inner_nul = _padded_field(raw, NODE_OFFSET, NODE_SIZE)
    # (b - 1) < 0x1f picks 0x01..0x1f: uint8 wraps NUL to 0xff.
    ctrl = _rows_any(((node - np.uint8(1)) < np.uint8(0x1F)) | (node == 0x7F))
    high = _rows_any(node >= 0x80)
    rules += [
        (node[:, 0] == 0, "bad_node_id", lambda i: "node id is empty"),
        (node[:, NODE_SIZE - 1] != 0, "bad_node_id",
         lambda i: f"node id has no trailing NUL (> {MAX_NODE_BYTES} bytes)"),
        (node_inner_nul, "bad_node_id", lambda i: "node id contains NUL"),
        (ctrl, "bad_node_id", lambda i: "node id contains a control character"),
    ]
    if high.any():
        m = np.zeros(len(recs), bool)
        m[_bad_utf8_rows(recs["node"], np.flatnonzero(high), True)] = True
        rules.append((m, "bad_node_id",
                      lambda i: "node id is not valid UTF-8 or contains a control character"))

    rules.append((flags & np.uint8(0xFF ^ KNOWN_FLAGS) != 0, "bad_field",
                  lambda i: f"flags=0x{int(flags[i]):02x} has unknown bits"))
    # required metrics: comparisons are False for NaN, so non-finite fails too
    for name in ("cpu", "mem"):
        x = recs[name]
        rules.append((~((x >= 0.0) & (x <= 1.0)), "bad_field",
                      lambda i, d=f(name): d(i) + " out of [0, 1]"))
    for name in ("queue", "avg_job_s"):
        x = recs[name]
        rules.append((~((x >= 0.0) & (x < np.inf)), "bad_field",
                      lambda i, d=f(name): d(i) + " out of [0, inf)"))

    def optional(bit: int, names: tuple[str, ...], valid: np.ndarray, rng: str) -> None:
        has = (flags & bit) != 0
        rules.append((has & ~valid, "bad_field",
                      lambda i: " ".join(f(n)(i) for n in names) + " " + rng))
        absent_set = np.zeros(len(recs), bool)
        for n in names:
            absent_set |= recs[n] != 0
        rules.append((~has & absent_set, "bad_field",
                      lambda i: " ".join(f(n)(i) for n in names)
                      + f" set without its presence bit 0x{bit:02x}"))

    t = recs["throughput"]
    optional(HAS_THROUGHPUT, ("throughput",), (t >= 0.0) & (t < np.inf), "out of [0, inf)")
    has_okerr = (flags & HAS_OKERR) != 0
    rules.append((~has_okerr & ((recs["ok"] != 0) | (recs["err"] != 0)), "bad_field",
                  lambda i: f"ok={int(recs['ok'][i])} err={int(recs['err'][i])} set "
                            f"without its presence bit 0x{HAS_OKERR:02x}"))
    x = recs["io"]
    optional(HAS_IO, ("io",), (x >= 0.0) & (x <= 1.0), "out of [0, 1]")
    p50, p95 = recs["p50_ms"], recs["p95_ms"]
    optional(HAS_TAIL, ("p50_ms", "p95_ms"),
             (p50 > 0.0) & (p50 < np.inf) & (p95 < np.inf) & (p95 >= p50),
             "not 0 < p50_ms <= p95_ms < inf")
    optional(HAS_TS, ("ts",), np.isfinite(recs["ts"]), "not finite")

    # zone
    zone, zone_inner_nul = _padded_field(raw, ZONE_OFFSET, ZONE_SIZE)
    has_zone = (flags & HAS_ZONE) != 0
    rules += [
        (~has_zone & _rows_any(zone != 0), "bad_field",
         lambda i: f"zone bytes set without its presence bit 0x{HAS_ZONE:02x}"),
        (has_zone & (zone[:, ZONE_SIZE - 1] != 0), "bad_field",
         lambda i: f"zone has no trailing NUL (> {MAX_ZONE_BYTES} bytes)"),
        (has_zone & zone_inner_nul, "bad_field", lambda i: "zone contains NUL"),
    ]
    zhigh = has_zone & _rows_any(zone >= 0x80)
    if zhigh.any():
        m = np.zeros(len(recs), bool)
        m[_bad_utf8_rows(recs["zone"], np.flatnonzero(zhigh), False)] = True
        rules.append((m, "bad_field", lambda i: "zone is not valid UTF-8"))

    reserved = np.zeros(len(recs), bool)
    for lo, hi in RESERVED_SPANS:
        span = raw[:, lo:hi]
        if span.any():
            reserved |= span.any(axis=1)
    rules.append((reserved, "bad_field", lambda i: "reserved record bytes are not zero"))

    bad = np.zeros(len(recs), bool)
    for mask, _, _ in rules:
        bad |= mask
    failing = np.flatnonzero(bad)
    reasons: list[str] = []
    details: list[str] = []
    for i in failing:
        for mask, reason, detail in rules:
            if mask[i]:
                reasons.append(reason)
                if len(details) < _SAMPLE_MAX:
                    details.append(f"{_node_label(recs['node'][i])}: {detail(i)}")
                break
    return ~bad, reasons, details


# The small-frame path (count <= _SMALL_MAX): one struct unpack per record and
# plain comparisons, the rules of _validate_binary in the same order with the
# same details; whole-array numpy work costs more than it saves on a few records.
# test_wire_fastpath checks the two paths agree on random and mutated frames.
_SMALL_MAX = 4
# cpu..ts, ok, err, then `flags` and the 7 reserved bytes after it as one
# little-endian word (flags is its low byte), node, zone, the last reserved word.
_REC = struct.Struct("<9dIIQ64s32sQ")
assert _REC.size == RECORD_SIZE
_INF = math.inf
_NODE_CTRL_RE = re.compile(rb"[\x01-\x1f\x7f]")
_ZERO_ZONE = bytes(ZONE_SIZE)


def _record_fault(v: tuple) -> tuple[str, str] | None:
    """The first rule of _validate_binary that the unpacked record ``v``
    (`_REC` fields) breaks, as (reason, detail without the node label), or None."""
    cpu, mem, queue, avg, tp, io, p50, p95, ts, ok, err, fw, node, zone, rsv = v
    if node[0] == 0:
        return "bad_node_id", "node id is empty"
    if node[NODE_SIZE - 1]:
        return "bad_node_id", f"node id has no trailing NUL (> {MAX_NODE_BYTES} bytes)"
    text = node.rstrip(b"\0")
    if b"\0" in text:
        return "bad_node_id", "node id contains NUL"
    if _NODE_CTRL_RE.search(text):
        return "bad_node_id", "node id contains a control character"
    if not text.isascii():
        try:
            bad = _CONTROL_RE.search(text.decode("utf-8")) is not None
        except UnicodeDecodeError:
            bad = True
        if bad:
            return "bad_node_id", "node id is not valid UTF-8 or contains a control character"
    flags = fw & 0xFF
    if flags & (0xFF ^ KNOWN_FLAGS):
        return "bad_field", f"flags=0x{flags:02x} has unknown bits"
    if not 0.0 <= cpu <= 1.0:
        return "bad_field", f"cpu={cpu!r} out of [0, 1]"
    if not 0.0 <= mem <= 1.0:
        return "bad_field", f"mem={mem!r} out of [0, 1]"
    if not 0.0 <= queue < _INF:
        return "bad_field", f"queue={queue!r} out of [0, inf)"
    if not 0.0 <= avg < _INF:
        return "bad_field", f"avg_job_s={avg!r} out of [0, inf)"
    # x != 0.0 is True for NaN, as in the vectorised rules.
    if flags & HAS_THROUGHPUT:
        if not 0.0 <= tp < _INF:
            return "bad_field", f"throughput={tp!r} out of [0, inf)"
    elif tp != 0.0:
        return "bad_field", (f"throughput={tp!r} set without its presence bit "
                             f"0x{HAS_THROUGHPUT:02x}")
    if not flags & HAS_OKERR and (ok or err):
        return "bad_field", f"ok={ok} err={err} set without its presence bit 0x{HAS_OKERR:02x}"
    if flags & HAS_IO:
        if not 0.0 <= io <= 1.0:
            return "bad_field", f"io={io!r} out of [0, 1]"
    elif io != 0.0:
        return "bad_field", f"io={io!r} set without its presence bit 0x{HAS_IO:02x}"
    if flags & HAS_TAIL:
        if not (0.0 < p50 < _INF and p95 < _INF and p95 >= p50):
            return "bad_field", (f"p50_ms={p50!r} p95_ms={p95!r} "
                                 "not 0 < p50_ms <= p95_ms < inf")
    elif p50 != 0.0 or p95 != 0.0:
        return "bad_field", (f"p50_ms={p50!r} p95_ms={p95!r} set without its presence bit "
                             f"0x{HAS_TAIL:02x}")
    if flags & HAS_TS:
        if not math.isfinite(ts):
            return "bad_field", f"ts={ts!r} not finite"
    elif ts != 0.0:
        return "bad_field", f"ts={ts!r} set without its presence bit 0x{HAS_TS:02x}"
    if not flags & HAS_ZONE:
        if zone != _ZERO_ZONE:
            return "bad_field", f"zone bytes set without its presence bit 0x{HAS_ZONE:02x}"
    elif zone[ZONE_SIZE - 1]:
        return "bad_field", f"zone has no trailing NUL (> {MAX_ZONE_BYTES} bytes)"
    else:
        ztext = zone.rstrip(b"\0")
        if b"\0" in ztext:
            return "bad_field", "zone contains NUL"
        if not ztext.isascii():
            try:
                ztext.decode("utf-8")
            except UnicodeDecodeError:
                return "bad_field", "zone is not valid UTF-8"
    if fw >> 8 or rsv:
        return "bad_field", "reserved record bytes are not zero"
    return None


# A node id or zone field that is valid without a UTF-8 decode: printable
# ASCII (zone: any ASCII but NUL), then NUL padding with at least one NUL.
_ASCII_NODE = re.compile(rb"[\x20-\x7e]{1,%d}\x00+" % MAX_NODE_BYTES).fullmatch
_ASCII_ZONE = re.compile(rb"[\x01-\x7f]*\x00+").fullmatch


def _plainly_valid(v: tuple) -> bool:
    """True only if `_record_fault` would find no fault (False for some valid
    records too, e.g. non-ASCII ids): the common case in one expression."""
    cpu, mem, queue, avg, tp, io, p50, p95, ts, ok, err, fw, node, zone, rsv = v
    # fw < 64: no unknown flag bit and the 7 reserved bytes after `flags` are 0.
    # x == 0.0 is False for NaN, as the rules want.
    return (fw < 64 and not rsv
            and 0.0 <= cpu <= 1.0 and 0.0 <= mem <= 1.0
            and 0.0 <= queue < _INF and 0.0 <= avg < _INF
            and (0.0 <= tp < _INF if fw & HAS_THROUGHPUT else tp == 0.0)
            and (fw & HAS_OKERR or not (ok or err))
            and (0.0 <= io <= 1.0 if fw & HAS_IO else io == 0.0)
            and ((0.0 < p50 < _INF and p50 <= p95 < _INF) if fw & HAS_TAIL
                 else p50 == 0.0 and p95 == 0.0)
            and (-_INF < ts < _INF if fw & HAS_TS else ts == 0.0)
            and _ASCII_NODE(node) is not None
            and (_ASCII_ZONE(zone) is not None if fw & HAS_ZONE else zone == _ZERO_ZONE))


def _decode_small(mv: memoryview, count: int) -> DecodedFrame:
    """_decode_binary's result for a frame of 1.._SMALL_MAX records, header checked."""
    unpack = _REC.unpack_from
    if count == 1:   # the common frame
        v = unpack(mv, HEADER_SIZE)
        fault = None if _plainly_valid(v) else _record_fault(v)
        if fault is None:
            records = np.frombuffer(bytearray(mv[HEADER_SIZE:]), RECORD_DTYPE)
            one = v[:11] + (v[11] & 0xFF, v[12].rstrip(b"\0"), v[13].rstrip(b"\0"))
            return DecodedFrame(records, None, {}, 1, [], one)
        reason, detail = fault
        label = _node_label(v[12].rstrip(b"\0"))
        return DecodedFrame(np.zeros(0, RECORD_DTYPE), None, {reason: 1}, 1,
                            [(reason, f"{label}: {detail}")])
    kept: list = []
    rejects: dict[str, int] = {}
    sample: list[tuple[str, str]] = []
    for off in range(HEADER_SIZE, HEADER_SIZE + count * RECORD_SIZE, RECORD_SIZE):
        v = unpack(mv, off)
        if _plainly_valid(v) or (fault := _record_fault(v)) is None:
            kept.append(mv[off:off + RECORD_SIZE])
            continue
        reason, detail = fault
        rejects[reason] = rejects.get(reason, 0) + 1
        if len(sample) < _SAMPLE_MAX:
            label = _node_label(v[12].rstrip(b"\0"))
            sample.append((reason, f"{label}: {detail}"))
    records = np.frombuffer(bytearray(b"".join(kept)), RECORD_DTYPE)
    return DecodedFrame(records, None, rejects, count, sample)


def _decode_binary(mv: memoryview) -> DecodedFrame:
    size = mv.nbytes
    if size < HEADER_SIZE:
        return _frame_reject("malformed_frame", f"binary header truncated ({size} bytes)")
    _, version, record_size, count, reserved = HEADER.unpack_from(mv)
    if version != VERSION or record_size != RECORD_SIZE:
        return _frame_reject("unsupported_version",
                             f"version {version} record_size {record_size} "
                             f"(known: {VERSION}, {RECORD_SIZE})")
    if reserved != 0:
        return _frame_reject("malformed_frame", f"reserved header field is {reserved}")
    if size != HEADER_SIZE + count * RECORD_SIZE:
        return _frame_reject("malformed_frame",
                             f"{size} bytes, header promises 16 + {count}*{RECORD_SIZE}")
    if count == 0:
        return DecodedFrame(np.zeros(0, RECORD_DTYPE), None, {}, 0, [])
    if count <= _SMALL_MAX:
        return _decode_small(mv, count)
    return _decode_large(mv, count)


def _decode_large(mv: memoryview, count: int) -> DecodedFrame:
    """_decode_binary's vectorised path, header checked."""
    # Copied out of the frame buffer first (as bytes: a structured copy is
    # slow), so the frame can be released and the check reads aligned memory.
    raw = np.frombuffer(mv, np.uint8, count * RECORD_SIZE, HEADER_SIZE).reshape(
        count, RECORD_SIZE).copy()
    recs = raw.view(RECORD_DTYPE).reshape(count)
    if _all_valid(recs, raw):
        return DecodedFrame(recs, None, {}, count, [])
    ok, reasons, details = _validate_binary(recs, raw)
    rejects: dict[str, int] = {}
    for r in reasons:
        rejects[r] = rejects.get(r, 0) + 1
    sample = list(zip(reasons, details))
    kept = raw[ok]
    records = kept.view(RECORD_DTYPE).reshape(len(kept))
    return DecodedFrame(records, None, rejects, count, sample)


# ------------------------------------------------------------------ the entry point

def decode_frame(frame: bytes | bytearray | memoryview, max_frame_bytes: int) -> DecodedFrame:
    """Decode and validate one frame from the PULL socket.  Never raises on bad input.

    The length is checked first: a frame longer than ``max_frame_bytes`` is
    counted ``frame_too_large`` and not looked into.
    """
    mv = memoryview(frame)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    size = mv.nbytes
    if size > max_frame_bytes:
        return _frame_reject("frame_too_large", f"{size} bytes > max {max_frame_bytes}")
    if size == _ONE_FRAME_SIZE and mv[:HEADER_SIZE] == _HEADER_V1_ONE:
        # The common frame, one binary record: _decode_small without the layers.
        v = _REC.unpack_from(mv, HEADER_SIZE)
        if _plainly_valid(v):
            node = v[12].rstrip(b"\0")
            zone = v[13].rstrip(b"\0") if v[11] & HAS_ZONE else b""
            return DecodedFrame(np.frombuffer(bytearray(mv[HEADER_SIZE:]), RECORD_DTYPE),
                                None, {}, 1, [], v[:11] + (v[11], node, zone))
        return _decode_small(mv, 1)
    if size == 0:
        return _frame_reject("malformed_frame", "empty frame")
    first = mv[0]
    if first in _JSON_FIRST:
        return _decode_json(frame if type(frame) is bytes else bytes(mv))
    if mv[:4] == MAGIC:
        return _decode_binary(mv)
    return _frame_reject("malformed_frame", f"unknown frame kind (first byte 0x{first:02x})")


def decode_json_objects(frames: list) -> DecodedFrame:
    """Decode k JSON frames that each start with ``{`` as one batch.

    Returns the k results of `decode_frame` merged: records and labels in
    frame order, rejects summed, the first samples, ``seen = k`` (a frame
    that starts with ``{`` holds one object or is malformed).  Frames are
    bytes no longer than ``max_frame_bytes`` (the caller checks); never
    raises on bad input.
    """
    good: list[tuple] = []
    labels: list[bytes | None] = []
    rejects: dict[str, int] = {}
    sample: list[tuple[str, str]] = []
    for buf in frames:
        try:
            obj = _parse_json(buf)
        except _Reject as rej:
            reason, detail = rej.reason, "frame: " + rej.detail
        else:
            try:
                values, lab = _check(obj)
            except _Reject as rej:
                reason, detail = rej.reason, f"{_node_label(obj.get('node'))}: {rej.detail}"
            else:
                good.append(values)
                labels.append(lab)
                continue
        rejects[reason] = rejects.get(reason, 0) + 1
        if len(sample) < _SAMPLE_MAX:
            sample.append((reason, detail))
    return DecodedFrame(_pack_records(good), labels, rejects, len(frames), sample)


# Header of a 1-record v1 frame as its two little-endian 8-byte words.
_ONE_HEADER_WORDS = np.frombuffer(_HEADER_V1_ONE, "<u8")


def decode_one_record_frames(frames: list) -> DecodedFrame | None:
    """Decode k frames of exactly one binary v1 record each as one batch.

    Returns what `decode_frame` returns for a k-record frame holding the
    same records in the same order (so rejects, details and ``seen = k`` are
    those of the k frames decoded one by one), or None when some frame is not
    a 208-byte frame with the 1-record v1 header (decode each one then).
    Frames are bytes-like; never raises on bad input.  The caller has checked
    that ``max_frame_bytes`` admits a 208-byte frame.
    """
    k = len(frames)
    try:
        joined = b"".join(frames)
    except TypeError:
        return None
    if len(joined) != k * _ONE_FRAME_SIZE:
        return None
    buf = np.frombuffer(joined, np.uint8).reshape(k, _ONE_FRAME_SIZE)
    head = buf[:, :HEADER_SIZE].view("<u8")
    if not ((head[:, 0] == _ONE_HEADER_WORDS[0]) & (head[:, 1] == _ONE_HEADER_WORDS[1])).all():
        return None
    raw = np.ascontiguousarray(buf[:, HEADER_SIZE:])    # a copy: aligned, writable
    recs = raw.view(RECORD_DTYPE).reshape(k)
    if _all_valid(recs, raw):
        return DecodedFrame(recs, None, {}, k, [])
    ok, reasons, details = _validate_binary(recs, raw)
    rejects: dict[str, int] = {}
    for r in reasons:
        rejects[r] = rejects.get(r, 0) + 1
    kept = raw[ok]
    return DecodedFrame(kept.view(RECORD_DTYPE).reshape(len(kept)), None, rejects, k,
                        list(zip(reasons, details)))


# ------------------------------------------------------------------ encoders

def node_key(record: Any) -> bytes:
    """The node id's bytes without padding: the registry key.

    ``record`` is a RECORD_DTYPE scalar or a mapping with a ``node`` string."""
    if isinstance(record, np.void):
        return bytes(record["node"])
    return record["node"].encode("utf-8")


def record_to_dict(record: np.void, labels: bytes | None = None) -> dict:
    """The JSON-field mapping of a validated record (only the fields it carries)."""
    flags = int(record["flags"])
    out: dict[str, Any] = {"node": bytes(record["node"]).decode("utf-8")}
    for name in ("cpu", "mem", "queue", "avg_job_s"):
        out[name] = float(record[name])
    if flags & HAS_THROUGHPUT:
        out["throughput"] = float(record["throughput"])
    if flags & HAS_OKERR:
        out["ok"] = int(record["ok"])
        out["err"] = int(record["err"])
    if flags & HAS_IO:
        out["io"] = float(record["io"])
    if flags & HAS_TAIL:
        out["p50_ms"] = float(record["p50_ms"])
        out["p95_ms"] = float(record["p95_ms"])
    if flags & HAS_TS:
        out["ts"] = float(record["ts"])
    if flags & HAS_ZONE:
        out["zone"] = bytes(record["zone"]).decode("utf-8")
    if labels is not None:
        out["labels"] = json.loads(labels)
    return out


def _checked(mapping: Mapping) -> tuple[tuple, bytes | None]:
    obj = dict(mapping)
    try:
        return _check(obj)
    except _Reject as rej:
        raise ValueError(f"{rej.reason}: {_node_label(obj.get('node'))}: {rej.detail}") from None


def encode_batch(records: Iterable[Mapping] | np.ndarray) -> bytes:
    """A binary v1 frame holding ``records``.

    Mappings (JSON field names) are validated; an invalid one, or one with
    labels (binary frames cannot carry them), raises ValueError.  A
    RECORD_DTYPE array is written as is (reserved bytes zeroed), unvalidated.
    """
    if isinstance(records, np.ndarray):
        if records.dtype != RECORD_DTYPE:
            raise TypeError(f"records array has dtype {records.dtype}, not RECORD_DTYPE")
        out = np.zeros(len(records), RECORD_DTYPE)   # zeros: reserved bytes are 0
        for name in RECORD_DTYPE.names:
            out[name] = records[name]
    else:
        rows = []
        for mapping in records:
            values, labels = _checked(mapping)
            if labels is not None:
                raise ValueError(f"{_node_label(mapping.get('node'))}: labels cannot "
                                 "travel in a binary frame; use encode_json")
            rows.append(values)
        out = np.zeros(len(rows), RECORD_DTYPE)
        for i, values in enumerate(rows):
            out[i] = values
    return HEADER.pack(MAGIC, VERSION, RECORD_SIZE, len(out), 0) + out.tobytes()


def encode_record(record: np.void) -> bytes:
    """A 1-record binary frame of an already validated RECORD_DTYPE scalar."""
    one = np.zeros(1, RECORD_DTYPE)
    one[0] = record
    return _HEADER_V1_ONE + one.tobytes()


def encode_json(record_mapping: Mapping | np.void) -> bytes:
    """A JSON frame of one heartbeat: compact, fields in table order, only those
    present.  Validates first (ValueError on an invalid heartbeat)."""
    if isinstance(record_mapping, np.void):
        record_mapping = record_to_dict(record_mapping)
    _checked(record_mapping)
    ordered = {k: record_mapping[k] for k in REQUIRED_FIELDS + OPTIONAL_FIELDS
               if k in record_mapping}
    for k in ("cpu", "mem", "queue", "avg_job_s", "throughput", "io", "p50_ms",
              "p95_ms", "ts"):
        if k in ordered:
            ordered[k] = float(ordered[k])
    for k in ("ok", "err"):
        if k in ordered:
            ordered[k] = int(ordered[k])
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
