"""Binary batch frames: the header, then every record against
`format.RECORD_RULES`.

Version 2 is the current record (384 bytes).  Version 1 (192 bytes, the
first 192 of a v2 record) is still accepted: its records are extended with
zeros to v2 records and checked as those, once a record that sets a flag
bit version 1 did not know (`format.V2_ONLY_FLAGS`) is rejected as v1 did.
The extension is one numpy copy per frame.  Version 3 (640 bytes) is a v2
record followed by the node's taints (`format.TAINTS_FIELD_SIZE` bytes,
NUL-padded ASCII, comma-joined): the v2 part is checked as a v2 record, the
taints as a JSON heartbeat's, and they become the record's meta bytes
(`DecodedFrame.labels`).

The rules exist once, as that table; three checks apply them:

- `record_fault`, the per-record fault finder: plain Python over one record
  unpacked with `format.RECORD_STRUCT`, walking the table in order.  It is
  the reference: it names the first rule a record breaks and says why.
- `_accept`, the scalar fast path (frames of at most `SMALL_MAX` records):
  one boolean expression rendered from the table (`_scalar.accept`), True
  exactly when `record_fault` finds nothing (present resources and text
  that is not plain ASCII are left to the reference walk).  A loop of Python
  calls, or a numpy reduction, costs more than a whole record's comparisons at
  that size.
- `_checks.check_records`, the compiled whole-batch check (larger frames and
  runs of 1-record frames), generated from the table (`rulecode`): each
  record's first broken rule in one pass, so a batch costs no per-record
  Python unless it holds rejects, and then only for the sample's details.

test_wire and test_wire_fastpath prove the three agree on hostile records.
Rules for callers: everything here returns status; nothing raises on bad input.
"""

from __future__ import annotations

import functools
import re
from operator import itemgetter

import numpy as np

from shm_engine.wire._scalar import accept, one
from shm_engine.wire.format import (
    BINARY_VERSIONS,
    FLAGS_OFFSET,
    HEADER,
    HEADER_ONE,
    HEADER_SIZE,
    ITEM,
    ONE_FRAME_SIZE,
    RECORD_DTYPE,
    RECORD_RULES,
    RECORD_SIZE,
    RECORD_STRUCT,
    RESERVED_ITEMS,
    RESERVED_SPANS,
    TAINTS,
    V1_HEADER_ONE,
    V1_ONE_FRAME_SIZE,
    V1_RECORD_SIZE,
    V1_VERSION,
    V2_ONLY_FLAGS,
    V3_RECORD_SIZE,
    V3_VERSION,
    VERSION,
    FlagsByte,
    Number,
    ReservedBytes,
    Resources,
    Text,
    describe_ranges,
)
from shm_engine.wire.jsondecode import _with_taints
from shm_engine.wire.result import (
    SAMPLE_MAX,
    DecodedFrame,
    Reject,
    frame_reject,
    no_records,
    node_label,
    tally,
)
from shm_engine.wire.rulecode import text_pattern

SMALL_MAX = 4  # frames of at most this many records take the scalar path

_FLAGS_ITEM = ITEM["flags"]
_NODE_ITEM = ITEM["node"]
_C0_DEL_RE = re.compile(rb"[\x01-\x1f\x7f]")
_C1_RE = re.compile("[\x80-\x9f]")


# ------------------------------------------------------------------ the fault finder


def _text_fault(rule: Text, raw: bytes) -> str | None:
    """What is wrong with a present text field (None: nothing)."""
    what = rule.what
    if rule.nonempty and raw[0] == 0:
        return f"{what} is empty"
    if raw[-1]:
        return f"{what} has no trailing NUL (> {len(raw) - 1} bytes)"
    text = raw.rstrip(b"\0")
    if b"\0" in text:
        return f"{what} contains NUL"
    if rule.ranges is not None:
        if any(not any(lo <= c <= hi for lo, hi in rule.ranges) for c in text):
            return f"{what} has a byte outside {describe_ranges(rule.ranges)}"
        return None
    if rule.printable and _C0_DEL_RE.search(text):
        return f"{what} contains a control character"
    if not text.isascii():
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            decoded = None
        if decoded is None or (rule.printable and _C1_RE.search(decoded)):
            return f"{what} is not valid UTF-8" + (
                " or contains a control character" if rule.printable else ""
            )
    return None


def _resources_fault(rule: Resources, v: tuple, flags: int) -> str | None:
    """What is wrong with the resource entries of unpacked record ``v``."""
    names = [v[ITEM[n]] for n in rule.names]
    values = [v[ITEM[n]] for n in rule.values]
    if not flags & rule.bit:
        if any(map(any, names)) or any(x != 0 for x in values):
            return f"{rule.name} set without its presence bit 0x{rule.bit:02x}"
        return None
    seen: set[bytes] = set()
    end = next((i for i, raw in enumerate(names) if raw[0] == 0), len(names))
    for i in range(end):
        fault = _text_fault(rule.entry, names[i])
        if fault is not None:
            return f"{rule.name} entry {i}: {fault}"
        name = names[i].rstrip(b"\0")
        if name in seen:
            return f"{rule.name} name {name!r} given twice"
        seen.add(name)
        if not rule.bound.holds(values[i]):
            return f"{rule.name} {name!r}={values[i]!r} {rule.bound.fault}"
    for i in range(end, len(names)):
        if any(names[i]) or values[i] != 0:
            return f"{rule.name} entry {i} follows an empty name but is not zero"
    return None


def _range_text(rule: Number) -> str:
    """How a value out of range is named; for an ordered pair, e.g.
    ``not 0 < p50_ms <= p95_ms < inf``."""
    if not rule.ordered:
        return rule.bound.fault
    b = rule.bound
    a, z = rule.names
    return (
        f"not {b.lo:g} {'<' if b.lo_open else '<='} {a} <= {z} "
        f"{'<' if b.hi_open else '<='} {b.hi:g}"
    )


def _items(items: list[int]):
    """``v -> tuple`` of the unpacked record's ``items``."""
    get = itemgetter(*items)
    return (lambda v: (get(v),)) if len(items) == 1 else get


def _number_detail(rule: Number, xs: tuple, flags: int) -> str:
    shown = " ".join(f"{n}={x!r}" for n, x in zip(rule.names, xs, strict=True))
    if rule.bit and not flags & rule.bit:
        return f"{shown} set without its presence bit 0x{rule.bit:02x}"
    return f"{shown} {_range_text(rule)}"


def _rule_check(rule):
    """``check(v, flags) -> detail or None`` for one rule of RECORD_RULES,
    made once: a valid record costs a few operations per rule."""
    if isinstance(rule, Number):
        bit, holds, ordered = rule.bit, rule.bound.holds, rule.ordered
        if len(rule.names) == 1:
            i = ITEM[rule.names[0]]

            def check(v, flags):
                x = v[i]  # absent: exactly 0 (NaN == 0 is False)
                ok = holds(x) if not bit or flags & bit else x == 0
                return None if ok else _number_detail(rule, (x,), flags)
        else:
            i, k = (ITEM[n] for n in rule.names)

            def check(v, flags):
                x, y = v[i], v[k]
                ok = (
                    holds(x) and holds(y) and (not ordered or x <= y)
                    if not bit or flags & bit
                    else x == 0 and y == 0
                )
                return None if ok else _number_detail(rule, (x, y), flags)
    elif isinstance(rule, Text):
        item, bit, plain = ITEM[rule.name], rule.bit, re.compile(text_pattern(rule)).fullmatch

        def check(v, flags):
            raw = v[item]
            if bit and not flags & bit:
                return (
                    None
                    if not any(raw)
                    else f"{rule.what} bytes set without its presence bit 0x{bit:02x}"
                )
            return None if plain(raw) is not None else _text_fault(rule, raw)
    elif isinstance(rule, Resources):

        def check(v, flags):
            return _resources_fault(rule, v, flags)
    elif isinstance(rule, FlagsByte):

        def check(v, flags):
            return f"flags=0x{flags:02x} has unknown bits" if flags & ~rule.known else None
    else:
        assert isinstance(rule, ReservedBytes)
        spans = _items([_SPAN_ITEM[span] for span in rule.spans])

        def check(v, flags):
            return "reserved record bytes are not zero" if any(map(any, spans(v))) else None

    return check


_SPAN_ITEM = dict(zip(RESERVED_SPANS, RESERVED_ITEMS, strict=True))
_RULE_CHECKS = tuple(_rule_check(rule) for rule in RECORD_RULES)


def record_fault(v: tuple) -> tuple[int, str, str] | None:
    """The first rule of RECORD_RULES that the unpacked record ``v``
    (`RECORD_STRUCT`) breaks, as (its index, reason, detail without the node
    label); None for a valid record."""
    flags = v[_FLAGS_ITEM]
    for i, check in enumerate(_RULE_CHECKS):
        detail = check(v, flags)
        if detail is not None:
            return i, RECORD_RULES[i].reason, detail
    return None


# ------------------------------------------------------------------ the scalar fast path


def _slow_ok(rule_index: int, x) -> bool:
    """The accept's slow path: text that is not plain ASCII (``x`` its raw
    bytes), or present resources (``x`` the unpacked record)."""
    rule = RECORD_RULES[rule_index]
    if isinstance(rule, Resources):
        return _resources_fault(rule, x, x[_FLAGS_ITEM]) is None
    assert isinstance(rule, Text)
    return _text_fault(rule, x) is None


def _accept(v: tuple) -> bool:
    """Whether the unpacked record ``v`` breaks no rule (`_scalar.accept`)."""
    return accept(v, _slow_ok)


# ------------------------------------------------------------------ frames


def _fault_sample(v: tuple) -> tuple[str, str]:
    """(reason, detail with the node label) of a record that breaks a rule."""
    fault = record_fault(v)
    assert fault is not None, "only a record the accept refused has a fault"
    _, reason, detail = fault
    return reason, f"{node_label(v[_NODE_ITEM])}: {detail}"


def decode_one(mv: memoryview) -> DecodedFrame:
    """`decode_frame` for a frame of one record with the current header (the
    common frame)."""
    v = RECORD_STRUCT.unpack_from(mv, HEADER_SIZE)
    if accept(v, _slow_ok) or record_fault(v) is None:
        return DecodedFrame(
            np.frombuffer(bytearray(mv[HEADER_SIZE:]), RECORD_DTYPE), None, {}, 1, [], one(v)
        )
    reason, detail = _fault_sample(v)
    return DecodedFrame(no_records(), None, {reason: 1}, 1, [(reason, detail)])


def _scan(mv: memoryview, first: int, count: int) -> DecodedFrame:
    """The scalar path over ``count`` records from byte ``first`` of ``mv``."""
    unpack = RECORD_STRUCT.unpack_from
    kept: list = []
    rejects: dict[str, int] = {}
    sample: list[tuple[str, str]] = []
    for off in range(first, first + count * RECORD_SIZE, RECORD_SIZE):
        v = unpack(mv, off)
        if accept(v, _slow_ok) or record_fault(v) is None:
            kept.append(mv[off : off + RECORD_SIZE])
        else:
            tally(rejects, sample, *_fault_sample(v))
    records = np.frombuffer(bytearray(b"".join(kept)), RECORD_DTYPE)
    return DecodedFrame(records, None, rejects, count, sample)


def _decode_small(mv: memoryview, count: int) -> DecodedFrame:
    """`decode_binary`'s scalar path, header checked."""
    return decode_one(mv) if count == 1 else _scan(mv, HEADER_SIZE, count)


@functools.cache
def _compiled_check():
    """The compiled check, imported on first use: senders never load numba."""
    from shm_engine.wire._checks import check_records

    return check_records


def batch_faults(raw: np.ndarray) -> tuple[np.ndarray, int]:
    """(each record's first broken rule as 1 + its index in RECORD_RULES, 0
    for a valid record; how many are invalid) of ``raw``, records as a
    C-contiguous (n, RECORD_SIZE) uint8 array, by the compiled check."""
    check_records = _compiled_check()
    out = np.empty(raw.shape[0], np.uint8)
    f8, words = raw.view("<f8"), raw.view("<u8")
    bad = check_records(f8, words, out, False)
    if bad:  # some may be text with bytes >= 0x80: decode those
        bad = check_records(f8, words, out, True)
    return out, int(bad)


def _decode_rows(
    raw: np.ndarray,
    seen: int,
    rejects: dict[str, int] | None = None,
    sample: list[tuple[str, str]] | None = None,
) -> DecodedFrame:
    """The records of ``raw`` (a private C-contiguous (n, RECORD_SIZE) uint8
    copy) that pass every rule, with the rejects of the others (added to
    ``rejects`` and ``sample``: those of the frame's records already
    rejected, if any)."""
    faults, bad = batch_faults(raw)
    records = raw.view(RECORD_DTYPE).reshape(len(raw))
    if not bad and not rejects:
        return DecodedFrame(records, None, {}, seen, [])
    rejects = {} if rejects is None else rejects
    sample = [] if sample is None else sample
    if not bad:
        return DecodedFrame(records, None, rejects, seen, sample)
    failing = np.flatnonzero(faults)
    for j, rule in zip(failing.tolist(), faults[failing].tolist(), strict=True):
        if len(sample) < SAMPLE_MAX:
            v = RECORD_STRUCT.unpack(raw[j].tobytes())
            tally(rejects, sample, *_fault_sample(v))
        else:
            reason = RECORD_RULES[rule - 1].reason
            rejects[reason] = rejects.get(reason, 0) + 1
    kept = raw[faults == 0]
    return DecodedFrame(kept.view(RECORD_DTYPE).reshape(len(kept)), None, rejects, seen, sample)


def _decode_large(mv: memoryview, count: int) -> DecodedFrame:
    """`decode_binary`'s compiled path, header checked."""
    # Copied out of the frame buffer first (as bytes: a structured copy is
    # slow), so the frame can be released and the check reads aligned memory.
    raw = (
        np.frombuffer(mv, np.uint8, count * RECORD_SIZE, HEADER_SIZE)
        .reshape(count, RECORD_SIZE)
        .copy()
    )
    return _decode_rows(raw, count)


def _from_v1(raw1: np.ndarray) -> tuple[np.ndarray, dict[str, int], list[tuple[str, str]]]:
    """Version 1 records ``raw1`` ((n, V1_RECORD_SIZE) uint8) as v2 records
    (a new C-contiguous (m, RECORD_SIZE) uint8 array, zero-extended), without
    those that set a flag bit version 1 did not know; those are counted as
    version 1 counted them (its node id rule first, then its flags rule)."""
    flags = raw1[:, FLAGS_OFFSET]
    newer = (flags & V2_ONLY_FLAGS) != 0
    rejects: dict[str, int] = {}
    sample: list[tuple[str, str]] = []
    if newer.any():
        pad = bytes(RECORD_SIZE - V1_RECORD_SIZE)
        for j in np.flatnonzero(newer).tolist():
            v = RECORD_STRUCT.unpack(raw1[j].tobytes() + pad)
            fault = record_fault(v)
            if fault is not None and fault[0] == 0:  # the node id, checked first
                reason, detail = fault[1], fault[2]
            else:
                reason = "bad_field"
                detail = f"flags=0x{int(flags[j]):02x} has bits unknown in version {V1_VERSION}"
            tally(rejects, sample, reason, f"{node_label(v[_NODE_ITEM])}: {detail}")
        raw1 = raw1[~newer]
    raw = np.zeros((len(raw1), RECORD_SIZE), np.uint8)
    raw[:, :V1_RECORD_SIZE] = raw1
    return raw, rejects, sample


def _decode_v1(mv: memoryview, count: int, compiled: bool) -> DecodedFrame:
    """`decode_binary` for a version 1 frame, header checked."""
    raw1 = np.frombuffer(mv, np.uint8, count * V1_RECORD_SIZE, HEADER_SIZE).reshape(
        count, V1_RECORD_SIZE
    )
    raw, rejects, sample = _from_v1(raw1)
    if count > SMALL_MAX and compiled:
        return _decode_rows(raw, count, rejects, sample)
    dec = _scan(raw.reshape(-1).data, 0, len(raw))
    for reason, n in dec.rejects.items():
        rejects[reason] = rejects.get(reason, 0) + n
    sample = (sample + dec.sample)[:SAMPLE_MAX]
    return DecodedFrame(dec.records, None, rejects, count, sample)


def _taints_of(tail: bytes) -> bytes | None:
    """The meta bytes of a v3 record's taints field, or Reject."""
    text, nul, rest = tail.partition(b"\0")
    if not nul or rest.strip(b"\0"):
        raise Reject(TAINTS.reason, "taints field not NUL-padded")
    if not text:
        return None
    try:
        taints = text.decode("ascii").split(",")
    except UnicodeDecodeError:
        raise Reject(TAINTS.reason, "taints field is not ASCII") from None
    return _with_taints(TAINTS, taints, None)


def _decode_v3(mv: memoryview, count: int, compiled: bool) -> DecodedFrame:
    """`decode_binary` for a version 3 frame, header checked: each record's
    v2 part by the v2 rules, then its taints."""
    raw3 = np.frombuffer(mv, np.uint8, count * V3_RECORD_SIZE, HEADER_SIZE).reshape(
        count, V3_RECORD_SIZE
    )
    raw = np.ascontiguousarray(raw3[:, :RECORD_SIZE])
    if compiled and count > SMALL_MAX:
        faults = batch_faults(raw)[0].tolist()
    else:
        faults = [
            0 if accept(v, _slow_ok) or record_fault(v) is None else 1 for v in _unpacked(raw)
        ]
    rejects: dict[str, int] = {}
    sample: list[tuple[str, str]] = []
    keep: list[int] = []
    metas: list[bytes | None] = []
    for j, fault in enumerate(faults):
        if fault:
            tally(rejects, sample, *_fault_sample(RECORD_STRUCT.unpack(raw[j].tobytes())))
            continue
        try:
            metas.append(_taints_of(raw3[j, RECORD_SIZE:].tobytes()))
        except Reject as rej:
            v = RECORD_STRUCT.unpack(raw[j].tobytes())
            tally(rejects, sample, rej.reason, f"{node_label(v[_NODE_ITEM])}: {rej.detail}")
            continue
        keep.append(j)
    kept = raw[keep]
    records = kept.view(RECORD_DTYPE).reshape(len(kept))
    single = one(RECORD_STRUCT.unpack(kept[0].tobytes())) if count == 1 and keep else None
    return DecodedFrame(records, metas, rejects, count, sample, single)


def _unpacked(raw: np.ndarray):
    unpack = RECORD_STRUCT.unpack
    for j in range(len(raw)):
        yield unpack(raw[j].tobytes())


def decode_binary(mv: memoryview, compiled: bool = True) -> DecodedFrame:
    """`decode_frame` for a frame that starts with the magic (within the size
    limit).  ``compiled=False`` takes the scalar path whatever the number of
    records: no numba, for senders that check what they send."""
    size = mv.nbytes
    if size < HEADER_SIZE:
        return frame_reject("malformed_frame", f"binary header truncated ({size} bytes)")
    _, version, record_size, count, reserved = HEADER.unpack_from(mv)
    if (version, record_size) not in BINARY_VERSIONS:
        return frame_reject(
            "unsupported_version",
            f"version {version} record_size {record_size} "
            f"(known: {VERSION}, {RECORD_SIZE}; {V1_VERSION}, {V1_RECORD_SIZE}; "
            f"{V3_VERSION}, {V3_RECORD_SIZE})",
        )
    if reserved != 0:
        return frame_reject("malformed_frame", f"reserved header field is {reserved}")
    if size != HEADER_SIZE + count * record_size:
        return frame_reject(
            "malformed_frame",
            f"{size} bytes, header promises {HEADER_SIZE} + {count}*{record_size}",
        )
    if count == 0:
        return DecodedFrame(no_records(), None, {}, 0, [])
    if version == V1_VERSION:
        return _decode_v1(mv, count, compiled)
    if version == V3_VERSION:
        return _decode_v3(mv, count, compiled)
    if count <= SMALL_MAX or not compiled:
        return _decode_small(mv, count)
    return _decode_large(mv, count)


# Headers of 1-record frames (this version, version 1) as two little-endian
# 8-byte words each.
_ONE_HEADER_WORDS = np.frombuffer(HEADER_ONE, "<u8")
_V1_ONE_HEADER_WORDS = np.frombuffer(V1_HEADER_ONE, "<u8")


def decode_one_record_frames(frames: list) -> DecodedFrame | None:
    """Decode k frames of exactly one binary record each as one batch.

    Returns what `decode_frame` returns for a k-record frame holding the
    same records in the same order (so rejects, details and ``seen = k`` are
    those of the k frames decoded one by one), or None when the frames are
    not all `ONE_FRAME_SIZE`-byte frames with the current 1-record header,
    or all `V1_ONE_FRAME_SIZE`-byte frames with the version 1 one (decode
    each one then).  Frames are bytes-like; never raises on bad input.  The
    caller has checked that ``max_frame_bytes`` admits such a frame.
    """
    k = len(frames)
    try:
        joined = b"".join(frames)
    except TypeError:
        return None
    if len(joined) == k * ONE_FRAME_SIZE:
        size, words = ONE_FRAME_SIZE, _ONE_HEADER_WORDS
    elif len(joined) == k * V1_ONE_FRAME_SIZE:
        size, words = V1_ONE_FRAME_SIZE, _V1_ONE_HEADER_WORDS
    else:
        return None
    buf = np.frombuffer(joined, np.uint8).reshape(k, size)
    head = buf[:, :HEADER_SIZE].view("<u8")
    if not ((head[:, 0] == words[0]) & (head[:, 1] == words[1])).all():
        return None
    if size == V1_ONE_FRAME_SIZE:
        raw, rejects, sample = _from_v1(buf[:, HEADER_SIZE:])
        return _decode_rows(raw, k, rejects, sample)
    return _decode_rows(np.ascontiguousarray(buf[:, HEADER_SIZE:]), k)  # a copy
