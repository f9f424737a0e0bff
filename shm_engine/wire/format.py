"""The heartbeat wire format: every byte position, bit, limit and rule, once.

docs/wire-format.md is the spec for senders; this module is the same facts as
data.  The decoders (`jsondecode`, `binary`), the encoders (`encode`), the
compiled batch check (`_checks`, rendered from this module by `rulecode`),
the table's row writer, the ingest's slot check and the segment layout all
read them from here; none restates an offset, a bit or a bound.  Numpy only
(no numba): senders import it.

A binary v2 frame, little-endian::

      header (16 bytes)                 record (384 bytes), `count` times
      +------+-----+------+-----+-----+  +-----------------------------+
      | SHMH | ver | rsz  |count| rsv |  | 0   f8 x 9: cpu mem queue   |
      | 4    | u2  | u2   | u4  | u4  |  |     avg_job_s throughput io |
      +------+-----+------+-----+-----+  |     p50_ms p95_ms ts        |
        ver = 2, rsz = 384, rsv = 0      | 72  u4 ok, 76 u4 err        |
                                         | 80  u1 flags, 81 rsv        |
                                         | 82  u2 slots, 84..87 rsv    |
                                         | 88  node[64]  NUL-padded    |
                                         | 152 zone[32]  NUL-padded    |
                                         | 184..191 rsv                |
                                         | 192 res_name0..7 [16] each  |
                                         | 320 res_value0..7 f8 each   |
                                         +-----------------------------+

Version 1 (record 192 bytes: the first 192 bytes of v2, with slots and the
two flag bits of v2 unknown) is still accepted: its records are the v2
records they extend to with zeros (`binary`).  Version 3 (record 640
bytes) is a v2 record followed by 256 bytes of taints (`TAINTS_FIELD_SIZE`),
for nodes that have taints: binary frames carry no labels, but may carry
taints.

`RECORD_FIELDS` is the record, (name, type, offset) per field; everything
else about its bytes (`RECORD_DTYPE`, the 8-byte words, the struct formats,
the reserved spans) is derived from it.  Bytes no field covers are reserved
and must be zero.

Labels travel in JSON frames only, taints in JSON or binary version 3; the
decoders keep them as a node's *meta bytes* (`split_meta`): canonical
labels, then taints.

`FIELDS` is the input table of SCORING.md as data, one row per heartbeat
field (a pair sent together is one row), in the order the checks run, so a
bound, a presence bit or a reject reason is written once.  `RECORD_RULES`
is the binary check order: the node id, the flags byte, the record's fields
in `FIELDS` order, the reserved bytes.  The first row a heartbeat breaks
names its reason.

Rules for editors: a new field is a line in `RECORD_FIELDS` and a row in
`FIELDS` (and a bit, if optional); then run ``python -m shm_engine.wire``
to render `_checks.py` again (a test fails until it matches).  Numba caches
compiled code by source file: `core.rows` and the ingest's `_checks` compile
word positions and bits in, so clear the numba cache after moving a field.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

import numpy as np

from kernels.params import HAS_IO, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT

# ------------------------------------------------------------------ frames

MAGIC = b"SHMH"
VERSION = 2
HEADER = struct.Struct("<4sHHII")  # magic, version, record_size, count, reserved
HEADER_SIZE = HEADER.size  # 16
RECORD_SIZE = 384
ONE_FRAME_SIZE = HEADER_SIZE + RECORD_SIZE
HEADER_ONE = HEADER.pack(MAGIC, VERSION, RECORD_SIZE, 1, 0)  # a 1-record frame's header
# The previous version, still accepted: its record is the first V1_RECORD_SIZE
# bytes of a v2 record, without the fields of V2_ONLY_FLAGS.
V1_VERSION = 1
V1_RECORD_SIZE = 192
V1_ONE_FRAME_SIZE = HEADER_SIZE + V1_RECORD_SIZE
V1_HEADER_ONE = HEADER.pack(MAGIC, V1_VERSION, V1_RECORD_SIZE, 1, 0)
# Version 3: a version 2 record followed by the node's taints, NUL-padded
# ASCII `key=value:Effect` joined by commas (empty: no taints), for senders
# whose nodes have taints; the rest of the frame is version 2's.
V3_VERSION = 3
TAINTS_FIELD_SIZE = 256
V3_RECORD_SIZE = RECORD_SIZE + TAINTS_FIELD_SIZE
# The (version, record_size) pairs a binary header may name.
BINARY_VERSIONS = (
    (VERSION, RECORD_SIZE),
    (V1_VERSION, V1_RECORD_SIZE),
    (V3_VERSION, V3_RECORD_SIZE),
)
DEFAULT_MAX_FRAME_BYTES = 1 << 20  # what clients split batches to
JSON_FIRST_BYTES = frozenset(b"{[ \t\n\r")  # a frame starting so is JSON
MAX_JSON_DEPTH = 32

# ------------------------------------------------------------------ presence bits

# Bits of the `flags` byte.  The first four are the kernels' "reported" bits
# (`kernels.params`, the bottom layer: defined there, re-exported here); the
# tick never sees the others (the row keeps `slots` itself, 1 when absent).
HAS_TS = 16
HAS_ZONE = 32
HAS_SLOTS = 64
HAS_RESOURCES = 128
REPORTED_BITS = HAS_THROUGHPUT | HAS_OKERR | HAS_IO | HAS_TAIL
KNOWN_FLAGS = REPORTED_BITS | HAS_TS | HAS_ZONE | HAS_SLOTS | HAS_RESOURCES
V2_ONLY_FLAGS = HAS_SLOTS | HAS_RESOURCES

# ------------------------------------------------------------------ the record

NODE_SIZE = 64  # padded: 63 bytes of ASCII + at least one NUL
ZONE_SIZE = 32  # padded: 31 bytes of UTF-8 + at least one NUL
MAX_NODE_BYTES = NODE_SIZE - 1
MAX_ZONE_BYTES = ZONE_SIZE - 1
MAX_LABELS_BYTES = 256  # canonical compact JSON of `labels`
MAX_TAINTS = 8  # taints per heartbeat
MAX_TAINTS_BYTES = 240  # canonical taints: sorted, comma-joined `key=value:Effect`
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule")
# A node's meta bytes (the registry's `labels` column): canonical labels, then
# a newline and canonical taints if the node has taints (`split_meta`).
MAX_META_BYTES = MAX_LABELS_BYTES + 1 + MAX_TAINTS_BYTES
# Taint keys and values: Kubernetes label syntax (a key may carry a
# `prefix/`); values may be empty.
TAINT_KEY_RE = r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?"
TAINT_VALUE_RE = r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?"
U32_MAX = 2**32 - 1
SLOTS_MAX = 65535
MAX_RESOURCES = 8  # resource entries per heartbeat
RESOURCE_NAME_SIZE = 16  # padded: 1..15 bytes of UTF-8 + at least one NUL
# The node id's characters (ASCII letters, digits and `. _ : - /`), as
# inclusive byte ranges: the checks test ranges, eight bytes at a time.
NODE_ID_RANGES = ((0x2D, 0x3A), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))  # -./0-9: A-Z _ a-z


def describe_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    """Byte ranges as a reader would write the characters: runs of letters
    or digits as ``A-Z``, then the other characters one by one."""
    chars = sorted({chr(c) for lo, hi in ranges for c in range(lo, hi + 1)})
    runs: list[tuple[str, str, tuple[bool, bool, bool]]] = []
    others: list[str] = []
    for ch in chars:
        kind = (ch.isupper(), ch.islower(), ch.isdigit())
        if any(kind) and runs and runs[-1][2] == kind and ord(runs[-1][1]) + 1 == ord(ch):
            runs[-1] = (runs[-1][0], ch, kind)
        elif any(kind):
            runs.append((ch, ch, kind))
        else:
            others.append(ch)
    words = [a if a == b else f"{a}-{b}" for a, b, _ in runs]
    return " ".join(words + others)


RESOURCE_NAMES = tuple(f"res_name{i}" for i in range(MAX_RESOURCES))
RESOURCE_VALUES = tuple(f"res_value{i}" for i in range(MAX_RESOURCES))
_RESOURCES_AT = 192

# The record's fields: (name, numpy type, byte offset), in offset order.
RECORD_FIELDS = (
    ("cpu", "<f8", 0),
    ("mem", "<f8", 8),
    ("queue", "<f8", 16),
    ("avg_job_s", "<f8", 24),
    ("throughput", "<f8", 32),
    ("io", "<f8", 40),
    ("p50_ms", "<f8", 48),
    ("p95_ms", "<f8", 56),
    ("ts", "<f8", 64),
    ("ok", "<u4", 72),
    ("err", "<u4", 76),
    ("flags", "u1", 80),
    ("slots", "<u2", 82),
    ("node", f"S{NODE_SIZE}", 88),
    ("zone", f"S{ZONE_SIZE}", 152),
    *(
        (name, f"S{RESOURCE_NAME_SIZE}", _RESOURCES_AT + RESOURCE_NAME_SIZE * i)
        for i, name in enumerate(RESOURCE_NAMES)
    ),
    *(
        (name, "<f8", _RESOURCES_AT + RESOURCE_NAME_SIZE * MAX_RESOURCES + 8 * i)
        for i, name in enumerate(RESOURCE_VALUES)
    ),
)
FIELD_NAMES = tuple(name for name, _, _ in RECORD_FIELDS)
RECORD_DTYPE = np.dtype(
    {
        "names": list(FIELD_NAMES),
        "formats": [fmt for _, fmt, _ in RECORD_FIELDS],
        "offsets": [off for _, _, off in RECORD_FIELDS],
        "itemsize": RECORD_SIZE,
    }
)

# A field's position in RECORD_DTYPE order (in a record's values as a tuple,
# e.g. `DecodedFrame.one`) and its byte offset.
FIELD_INDEX = {name: i for i, name in enumerate(FIELD_NAMES)}
OFFSET = {name: off for name, _, off in RECORD_FIELDS}
NODE_OFFSET = OFFSET["node"]
ZONE_OFFSET = OFFSET["zone"]

# Compiled code reads records as (n, WORDS) float64 and uint64 views: a field
# lives in word OFFSET // 8, at bit 8 * (OFFSET % 8) of it.
WORDS = RECORD_SIZE // 8
WORD = {name: off // 8 for name, off in OFFSET.items()}
SHIFT = {name: 8 * (off % 8) for name, off in OFFSET.items()}
FLAGS_WORD = WORD["flags"]
OKERR_WORD = WORD["ok"]  # ok: the low 32 bits, err: the high 32
NODE_WORDS = slice(WORD["node"], WORD["node"] + NODE_SIZE // 8)
ZONE_WORDS = slice(WORD["zone"], WORD["zone"] + ZONE_SIZE // 8)


def _reserved_spans() -> tuple[tuple[int, int], ...]:
    """[start, end) byte spans of the record no field covers, in order."""
    spans, pos = [], 0
    for name, _, off in RECORD_FIELDS:
        assert off >= pos, f"{name} overlaps the field before it"
        if off > pos:
            spans.append((pos, off))
        pos = off + RECORD_DTYPE[name].itemsize
    if pos < RECORD_SIZE:
        spans.append((pos, RECORD_SIZE))
    return tuple(spans)


RESERVED_SPANS = _reserved_spans()  # ((81, 82), (84, 88), (184, 192))
FLAGS_OFFSET = OFFSET["flags"]

_STRUCT_CODES = {"<f8": "d", "<u4": "I", "<u2": "H", "|u1": "B"}


def _record_structs() -> tuple[struct.Struct, struct.Struct, dict[str, int], tuple[int, ...]]:
    """(unpack, pack, item of each field, items of the reserved spans).

    ``unpack`` reads a record as a tuple of its fields and reserved spans (as
    bytes) in offset order; ``pack`` writes the fields alone, in
    `RECORD_DTYPE` order, reserved bytes zero."""
    parts: list[tuple[int, str | int]] = [(off, name) for name, _, off in RECORD_FIELDS]
    parts += [(lo, hi - lo) for lo, hi in RESERVED_SPANS]
    unpack, pack, item_of, reserved = ["<"], ["<"], {}, []
    for i, (_, what) in enumerate(sorted(parts, key=lambda part: part[0])):
        if isinstance(what, int):  # a reserved span of `what` bytes
            unpack.append(f"{what}s")
            pack.append(f"{what}x")
            reserved.append(i)
            continue
        ftype = RECORD_DTYPE[what]
        code = f"{ftype.itemsize}s" if ftype.kind == "S" else _STRUCT_CODES[ftype.str]
        unpack.append(code)
        pack.append(code)
        item_of[what] = i
    return (struct.Struct("".join(unpack)), struct.Struct("".join(pack)), item_of, tuple(reserved))


# A record as Python objects (the scalar paths): RECORD_STRUCT.unpack gives
# its fields, field `f` at item ITEM[f], and each reserved span, as bytes, at
# the items RESERVED_ITEMS.  RECORD_PACK.pack(*values) takes the values in
# RECORD_DTYPE field order and writes reserved bytes as zero.
RECORD_STRUCT, RECORD_PACK, ITEM, RESERVED_ITEMS = _record_structs()
assert RECORD_STRUCT.size == RECORD_PACK.size == RECORD_SIZE == RECORD_DTYPE.itemsize

# ------------------------------------------------------------------ reject reasons

# In the order counters are laid out (the segment's `rejects` array).
REJECT_REASONS = (
    "frame_too_large",  # frame longer than max_frame_bytes; not decoded at all
    "malformed_frame",  # undecodable frame: bad UTF-8/JSON, too deep, wrong top
    # level, bad magic, truncated or mis-sized binary,
    # non-zero reserved header field
    "unsupported_version",  # binary version or record_size we do not know
    "malformed_heartbeat",  # an element of a JSON array that is not an object
    "missing_field",  # a required field is absent, or half of an ok/err or
    # p50_ms/p95_ms pair
    "bad_field",  # wrong type, non-finite, out of range,
    # bad flags/reserved bytes, labels or zone invalid
    "bad_node_id",  # not 1..63 of A-Z a-z 0-9 . _ : - / (NUL padded in binary)
    "unknown_field",  # a JSON key not in SCORING.md's input table
    "registry_full",  # counted by the ingest, never by a decoder
    # Counted by the ingest (`shm_engine.ingest.admission`), never by a decoder:
    "too_many_heartbeats",  # more than [ingest] max_heartbeats_per_frame; not decoded
    "not_authorized",  # the sender may not speak for this node id
    "node_not_allowed",  # node id outside [ingest] allow_nodes
    "registration_rate",  # a new node over the registration budget
)

# ------------------------------------------------------------------ the rules


class Bound:
    """The range of a number field; ``fault`` is how a rejection names it.
    ``holds(x)``: whether ``x`` is in range (False for NaN)."""

    __slots__ = ("lo", "hi", "lo_open", "hi_open", "fault", "holds")

    def __init__(self, lo: float, hi: float, lo_open: bool, hi_open: bool, fault: str) -> None:
        assert (lo_open or math.isfinite(lo)) and (hi_open or math.isfinite(hi)), (
            "a bound holds finite values only (the checks rely on it)"
        )
        self.lo, self.hi, self.lo_open, self.hi_open, self.fault = lo, hi, lo_open, hi_open, fault
        # One closure per kind of interval: the checks call it per value.
        if lo_open:
            self.holds = (lambda x: lo < x < hi) if hi_open else (lambda x: lo < x <= hi)
        else:
            self.holds = (lambda x: lo <= x < hi) if hi_open else (lambda x: lo <= x <= hi)

    def __repr__(self) -> str:
        return f"Bound({self.lo!r}, {self.hi!r}, {self.lo_open}, {self.hi_open}, {self.fault!r})"


UNIT = Bound(0.0, 1.0, False, False, "out of [0, 1]")
NON_NEGATIVE = Bound(0.0, math.inf, False, True, "out of [0, inf)")
POSITIVE = Bound(0.0, math.inf, True, True, "out of (0, inf)")
FINITE = Bound(-math.inf, math.inf, True, True, "not finite")
COUNT = Bound(0, U32_MAX, False, False, f"out of [0, {U32_MAX}]")
SLOTS = Bound(1, SLOTS_MAX, False, False, f"out of [1, {SLOTS_MAX}]")


class Number(NamedTuple):
    """A number field, or a pair sent together (both or neither).

    ``bit``: its presence bit (0: required).  Present, each value is within
    ``bound`` (and with ``ordered``, the first <= the second); absent, a
    binary record holds 0 there.  An unsigned integer field in
    `RECORD_DTYPE` takes JSON integers only, a float field any JSON number."""

    names: tuple[str, ...]
    bit: int
    bound: Bound
    ordered: bool = False
    reason: str = "bad_field"


class Text(NamedTuple):
    """A NUL-padded UTF-8 string field (its size in `RECORD_DTYPE` bounds it:
    at least one NUL).  ``what`` names it in rejections; ``printable``: no
    control character (C0, DEL, C1); ``nonempty``: at least one byte;
    ``ranges``: if given, every byte is in one of these inclusive ASCII
    ranges (and the text is ASCII)."""

    name: str
    bit: int
    what: str
    printable: bool
    nonempty: bool
    reason: str
    ranges: tuple[tuple[int, int], ...] | None = None


class Resources(NamedTuple):
    """An object of name -> number (JSON key ``name``): at most
    ``len(names)`` entries, each name valid as the `Text` ``entry`` (1..15
    bytes of UTF-8, no NUL; its field is the first name's, whose size every
    name has), the names distinct, each value within ``bound``.  In the
    record, entry i is ``names[i]`` / ``values[i]``: the entries come first,
    then empty names with zero values; absent (bit clear), all zero."""

    name: str
    bit: int
    names: tuple[str, ...]
    values: tuple[str, ...]
    entry: Text
    bound: Bound
    reason: str = "bad_field"


class Labels(NamedTuple):
    """A JSON object of string to string, kept as canonical compact JSON of
    at most ``max_bytes``; JSON frames only (not in the binary record)."""

    name: str
    max_bytes: int
    reason: str = "bad_field"


class Taints(NamedTuple):
    """A JSON array of at most ``max_entries`` distinct strings
    ``key=value:Effect`` (or ``key:Effect``; key and value as
    `TAINT_KEY_RE` / `TAINT_VALUE_RE`, the effect one of ``effects``, one
    taint per key and effect), kept sorted and comma-joined after the
    labels in the node's meta bytes (`split_meta`); JSON frames, or the
    taints field of a binary version 3 record."""

    name: str
    max_entries: int
    max_bytes: int
    effects: tuple[str, ...]
    reason: str = "bad_field"


class FlagsByte(NamedTuple):
    """Binary only: no bit of the flags byte outside ``known``."""

    known: int
    reason: str = "bad_field"


class ReservedBytes(NamedTuple):
    """Binary only: every byte of ``spans`` is zero."""

    spans: tuple[tuple[int, int], ...]
    reason: str = "bad_field"


# The heartbeat fields of the score's input table (docs/scoring.md), in
# check order.
FIELDS = (
    Text(
        "node",
        0,
        "node id",
        printable=True,
        nonempty=True,
        reason="bad_node_id",
        ranges=NODE_ID_RANGES,
    ),
    Number(("cpu",), 0, UNIT),
    Number(("mem",), 0, UNIT),
    Number(("queue",), 0, NON_NEGATIVE),
    Number(("avg_job_s",), 0, NON_NEGATIVE),
    Number(("throughput",), HAS_THROUGHPUT, NON_NEGATIVE),
    Number(("ok", "err"), HAS_OKERR, COUNT),
    Number(("io",), HAS_IO, UNIT),
    Number(("p50_ms", "p95_ms"), HAS_TAIL, POSITIVE, ordered=True),
    Number(("slots",), HAS_SLOTS, SLOTS),
    Resources(
        "resources",
        HAS_RESOURCES,
        RESOURCE_NAMES,
        RESOURCE_VALUES,
        Text(
            RESOURCE_NAMES[0],
            0,
            "resource name",
            printable=False,
            nonempty=True,
            reason="bad_field",
        ),
        NON_NEGATIVE,
    ),
    Number(("ts",), HAS_TS, FINITE),
    Text("zone", HAS_ZONE, "zone", printable=False, nonempty=False, reason="bad_field"),
    Labels("labels", MAX_LABELS_BYTES),
    Taints("taints", MAX_TAINTS, MAX_TAINTS_BYTES, TAINT_EFFECTS),
)
_META_ONLY = (Labels, Taints)  # rules of JSON frames only, kept in the meta bytes

# The binary record's checks, in order: the node id, the flags, the rest.
RECORD_RULES = (
    (FIELDS[0], FlagsByte(KNOWN_FLAGS))
    + tuple(f for f in FIELDS[1:] if not isinstance(f, _META_ONLY))
    + (ReservedBytes(RESERVED_SPANS),)
)


def names_of(row) -> tuple[str, ...]:
    """The heartbeat (JSON) keys of a `FIELDS` row."""
    return row.names if isinstance(row, Number) else (row.name,)


def fields_of(row) -> tuple[str, ...]:
    """The record fields of a `FIELDS` row (none for labels and taints)."""
    if isinstance(row, Resources):
        return row.names + row.values
    return () if isinstance(row, _META_ONLY) else names_of(row)


def _required(row) -> bool:
    return isinstance(row, (Number, Text)) and row.bit == 0


REQUIRED_FIELDS = tuple(n for f in FIELDS if _required(f) for n in names_of(f))
OPTIONAL_FIELDS = tuple(n for f in FIELDS if not _required(f) for n in names_of(f))
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)
# Pairs sent together: a heartbeat with one half misses the other.
PAIRS = tuple(f.names for f in FIELDS if isinstance(f, Number) and len(f.names) == 2)
# The presence bit of each record field (0: always present).
BIT_OF = {n: f.bit for f in FIELDS if not isinstance(f, _META_ONLY) for n in fields_of(f)}
RESOURCES = next(f for f in FIELDS if isinstance(f, Resources))
TAINTS = next(f for f in FIELDS if isinstance(f, Taints))


def split_meta(meta: bytes | None) -> tuple[bytes | None, tuple[str, ...]]:
    """(canonical labels JSON or None, taints) of a node's meta bytes.

    The meta bytes are what a JSON heartbeat's ``labels`` and ``taints``
    leave in the registry: the canonical labels object (``{}`` when only
    taints were sent), then, if there are taints, a newline and the sorted
    taints joined by commas.  Canonical JSON never holds a raw newline, so
    the split is unambiguous."""
    if not meta:
        return None, ()
    labels, sep, taints = bytes(meta).partition(b"\n")
    return labels, tuple(taints.decode("utf-8").split(",")) if sep and taints else ()


def join_meta(labels: bytes | None, taints: tuple[str, ...]) -> bytes | None:
    """The meta bytes of canonical ``labels`` and sorted ``taints`` (see
    `split_meta`); None when there are neither."""
    if not taints:
        return labels
    return (labels if labels is not None else b"{}") + b"\n" + ",".join(taints).encode("utf-8")


def _check_the_tables() -> None:
    in_record = set(FIELD_NAMES) - {"flags"}
    in_rules = set(BIT_OF)
    assert in_record == in_rules, in_record ^ in_rules
    bits = [f.bit for f in FIELDS if not isinstance(f, _META_ONLY) and f.bit]
    assert len(bits) == len(set(bits)) and sum(bits) == KNOWN_FLAGS < 256
    texts = [f.name for f in FIELDS if isinstance(f, Text)] + list(RESOURCES.names)
    for name in texts:  # the compiled check reads text fields as whole words
        assert OFFSET[name] % 8 == 0 and RECORD_DTYPE[name].itemsize % 8 == 0
    for names in (RESOURCES.names, RESOURCES.values):  # entries in order, adjacent
        offsets = [OFFSET[n] for n in names]
        size = RECORD_DTYPE[names[0]].itemsize
        assert offsets == list(range(offsets[0], offsets[0] + size * len(names), size))
    assert all(RECORD_DTYPE[n].kind in "fuS" for n in FIELD_NAMES)
    # Version 1's record is a prefix of this one, without the v2-only fields.
    v1_fields = {n for n, _, off in RECORD_FIELDS if off < V1_RECORD_SIZE}
    assert all(OFFSET[n] + RECORD_DTYPE[n].itemsize <= V1_RECORD_SIZE for n in v1_fields)
    assert {n for n in v1_fields if BIT_OF.get(n, 0) & V2_ONLY_FLAGS} == {"slots"}


_check_the_tables()
