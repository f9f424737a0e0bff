"""The score feed's frames and the feedback frames, byte for byte (docs/feed-format.md).

Two frame kinds travel between an engine and its mirrors, each one ZeroMQ
single-part message of fixed-size little-endian records, decoded with
``numpy.frombuffer`` over a validated length (nothing is ever unpickled or
evaluated):

- A *score frame* (engine -> mirrors, PUB): the header (`SCORE_HEADER`), then
  ``n_rows`` rows (`ROW_DTYPE`: the published per-slot fields), then
  ``n_idents`` identities (`IDENT_DTYPE`: a slot's node id and zone, sent
  when the slot's registration or zone changed).  A *delta* carries the rows
  that changed since the previous frame of the stream; a *full* frame every
  slot below ``slot_hwm`` and every registered slot's identity.
- A *feedback frame* (mirror -> engine, PUSH): the header (`FEEDBACK_HEADER`),
  then ``n_in_flight`` absolute in-flight counts (`IN_FLIGHT_DTYPE`), then
  ``n_outcomes`` release counts since the mirror's previous frame
  (`OUTCOME_DTYPE`).

Invariant: a decoder returns a frame only if every length, count, slot and
state is in range; anything else is a status string (hot paths return
status; the score decoder's are `layout.REFUSAL_REASONS`), and the caller
counts it and drops the frame.  Records are copies, never views of the
message buffer, so a frame outlives its message.

Size bounds: a receiver caps its socket's messages (``ZMQ_MAXMSGSIZE``) at
`score_frame_bound` / `feedback_frame_bound` of the slots it can hold, plus
`WIRE_SLACK`, so a hostile or broken peer cannot make it allocate more than
one legitimate frame; ZeroMQ drops the connection that carried a larger one
(the receiver reconnects and counts it).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from shm_engine.core.layout import NAME_BYTES, NODE_ID_BYTES, ZONE_BYTES
from shm_engine.core.states import UNREGISTERED, NodeState

__all__ = [
    "SCORE_MAGIC",
    "FEEDBACK_MAGIC",
    "FEED_VERSION",
    "KIND_DELTA",
    "KIND_FULL",
    "SCORE_HEADER",
    "FEEDBACK_HEADER",
    "ROW_DTYPE",
    "IDENT_DTYPE",
    "IN_FLIGHT_DTYPE",
    "OUTCOME_DTYPE",
    "ScoreFrame",
    "FeedbackFrame",
    "encode_score_frame",
    "decode_score_frame",
    "encode_feedback",
    "decode_feedback",
    "SNAPSHOT_TOPIC",
    "MAX_CAPACITY",
    "WIRE_SLACK",
    "score_frame_bound",
    "feedback_frame_bound",
]

SCORE_MAGIC = b"SHMF"
FEEDBACK_MAGIC = b"SHMB"
FEED_VERSION = 1
KIND_DELTA, KIND_FULL = 1, 2
#: A subscription whose topic starts with this byte asks the publisher for a
#: full frame (a subscription never matches a frame: frames start with
#: `SCORE_MAGIC`).  The rest of the topic is a nonce, so each request is new.
SNAPSHOT_TOPIC = b"\xffsnapshot:"
MAX_CAPACITY = 1 << 24

#: magic, version, kind, stream, seq, epoch, tick_wall, sent_wall, pressure,
#: capacity, slot_hwm, n_ranked, live, registered, ejected, n_rows, n_idents,
#: tick_interval_ms, feedback_port, reserved, weights[8], counts[8], engine name,
#: engine run.
SCORE_HEADER = struct.Struct(f"<4sHHQQQddd9IHH8d8q{NAME_BYTES}sQ")
assert SCORE_HEADER.size == 296

ROW_DTYPE = np.dtype(
    {
        "names": [
            "slot",
            "state",
            "gen",
            "score",
            "raw",
            "wait",
            "qema",
            "liveness",
            "rif",
            "slots",
        ],
        "formats": ["<u4", "u1", "<u8", "<f8", "<f8", "<f8", "<f8", "<f8", "<f8", "<f8"],
        "offsets": [0, 4, 8, 16, 24, 32, 40, 48, 56, 64],
        "itemsize": 72,
    }
)
#: The float columns of a row, in order (the scores segment's names; ``slots``
#: is the heartbeat table's worker count).
ROW_FLOATS = ("score", "raw", "wait", "qema", "liveness", "rif", "slots")

_ROW_WORDS = ROW_DTYPE.itemsize // 8  # 9: [slot | state << 32, gen, the 7 floats]


def pack_rows(slots: np.ndarray, states: np.ndarray, gens: np.ndarray, floats) -> np.ndarray:
    """Rows of ``slots`` (with their ``states``, ``gens`` and the 7 float
    columns of `ROW_FLOATS` as arrays or bit patterns, one per column), built
    column by column (a structured array field is strided: a row's nine
    8-byte words are filled as nine contiguous columns, then transposed)."""
    k = len(slots)
    words = np.empty((_ROW_WORDS, k), np.uint64)
    words[0] = slots.astype(np.uint64) | (states.astype(np.uint64) << np.uint64(32))
    words[1] = gens
    for i, col in enumerate(floats):
        words[2 + i] = col.view(np.uint64) if col.dtype != np.uint64 else col
    return np.ascontiguousarray(words.T).view(ROW_DTYPE).reshape(k)


def unpack_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(slots i8, states u1, gens u8, floats f8[7, k]) of contiguous ``rows``,
    the inverse of `pack_rows` (columns contiguous, whatever the count)."""
    words = np.ascontiguousarray(rows.view(np.uint64).reshape(len(rows), _ROW_WORDS).T)
    slots = (words[0] & np.uint64(0xFFFF_FFFF)).astype(np.int64)
    states = ((words[0] >> np.uint64(32)) & np.uint64(0xFF)).astype(np.uint8)
    return slots, states, words[1], words[2:].view(np.float64)


IDENT_DTYPE = np.dtype(
    {
        "names": ["slot", "registered", "gen", "node", "zone"],
        "formats": ["<u4", "u1", "<u8", f"S{NODE_ID_BYTES}", f"S{ZONE_BYTES}"],
        "offsets": [0, 4, 8, 16, 16 + NODE_ID_BYTES],
        "itemsize": 16 + NODE_ID_BYTES + ZONE_BYTES,
    }
)
assert IDENT_DTYPE.itemsize == 112

#: magic, version, flags, mirror id, stream, seq, n_in_flight, n_outcomes.
FEEDBACK_HEADER = struct.Struct("<4sHHQQQII")
#: `FeedbackFrame.flags`: the in-flight counts are the mirror's whole set
#: (every slot of the stream not listed has none from this mirror).
FEEDBACK_FULL = 1
IN_FLIGHT_DTYPE = np.dtype([("slot", "<u4"), ("pad", "<u4"), ("gen", "<u8"), ("count", "<u8")])
OUTCOME_DTYPE = np.dtype(
    [("slot", "<u4"), ("pad", "<u4"), ("gen", "<u8"), ("ok", "<u4"), ("err", "<u4")]
)


#: Bytes a frame may grow by on the wire: ZeroMQ applies ``ZMQ_MAXMSGSIZE``
#: to the frame as it travels, which under CURVE is the MESSAGE command
#: around the ciphertext (33 bytes more than the payload).
WIRE_SLACK = 256
_TOP_STATE = max(int(s) for s in NodeState)


def score_frame_bound(slots: int) -> int:
    """Bytes of the largest score frame about ``slots`` slots: the header, a
    row and an identity for each (a frame lists a slot at most once)."""
    return SCORE_HEADER.size + slots * (ROW_DTYPE.itemsize + IDENT_DTYPE.itemsize)


def feedback_frame_bound(slots: int) -> int:
    """Bytes of the largest feedback frame about ``slots`` slots: the header,
    an in-flight and an outcome record for each."""
    return FEEDBACK_HEADER.size + slots * (IN_FLIGHT_DTYPE.itemsize + OUTCOME_DTYPE.itemsize)


class ScoreFrame(NamedTuple):
    kind: int
    stream: int
    seq: int
    epoch: int
    tick_wall: float
    sent_wall: float
    pressure: float
    capacity: int
    slot_hwm: int
    n_ranked: int
    live: int
    registered: int
    ejected: int
    tick_interval_ms: int
    feedback_port: int
    weights: tuple
    counts: tuple
    engine: str
    engine_run: int  # the engine's run (its segment's creation): a restart changes it
    rows: np.ndarray  # ROW_DTYPE
    idents: np.ndarray  # IDENT_DTYPE
    nbytes: int


class FeedbackFrame(NamedTuple):
    flags: int
    mirror: int
    stream: int
    seq: int
    in_flight: np.ndarray  # IN_FLIGHT_DTYPE
    outcomes: np.ndarray  # OUTCOME_DTYPE


def encode_score_frame(
    *,
    kind: int,
    stream: int,
    seq: int,
    epoch: int,
    tick_wall: float,
    sent_wall: float,
    pressure: float,
    capacity: int,
    slot_hwm: int,
    n_ranked: int,
    live: int,
    registered: int,
    ejected: int,
    tick_interval_ms: int,
    feedback_port: int,
    weights,
    counts,
    engine: str,
    engine_run: int,
    rows: np.ndarray,
    idents: np.ndarray,
) -> bytes:
    """One score frame (``rows``/``idents`` already of `ROW_DTYPE`/`IDENT_DTYPE`)."""
    w = [float(x) for x in weights][:8]
    c = [int(x) for x in counts][:8]
    head = SCORE_HEADER.pack(
        SCORE_MAGIC,
        FEED_VERSION,
        kind,
        stream,
        seq,
        epoch,
        tick_wall,
        sent_wall,
        pressure,
        capacity,
        slot_hwm,
        n_ranked,
        live,
        registered,
        ejected,
        len(rows),
        len(idents),
        tick_interval_ms,
        feedback_port,
        0,
        *(w + [0.0] * (8 - len(w))),
        *(c + [0] * (8 - len(c))),
        engine.encode("utf-8")[: NAME_BYTES - 1],
        engine_run,
    )
    return b"".join((head, rows.tobytes(), idents.tobytes()))


def decode_score_frame(msg) -> ScoreFrame | str:
    """The frame in ``msg`` (bytes-like), or why it is refused."""
    buf = memoryview(msg)
    n = buf.nbytes
    if n < SCORE_HEADER.size:
        return "short"
    f = SCORE_HEADER.unpack_from(buf, 0)
    magic, version, kind = f[0], f[1], f[2]
    if magic != SCORE_MAGIC:
        return "magic"
    if version != FEED_VERSION:
        return "version"
    if kind not in (KIND_DELTA, KIND_FULL):
        return "kind"
    stream, seq, epoch, tick_wall, sent_wall, pressure = f[3:9]
    capacity, hwm, n_ranked, live, registered, ejected, n_rows, n_idents, tick_ms = f[9:18]
    feedback_port = f[18]
    weights, counts, name, engine_run = f[20:28], f[28:36], f[36], f[37]
    if not 1 <= capacity <= MAX_CAPACITY or hwm > capacity:
        return "capacity"
    if n_rows > hwm or n_idents > hwm:
        return "count"  # a slot is listed at most once
    if n != SCORE_HEADER.size + n_rows * ROW_DTYPE.itemsize + n_idents * IDENT_DTYPE.itemsize:
        return "length"
    off = SCORE_HEADER.size
    rows = np.frombuffer(buf, ROW_DTYPE, n_rows, off).copy()
    off += n_rows * ROW_DTYPE.itemsize
    idents = np.frombuffer(buf, IDENT_DTYPE, n_idents, off).copy()
    if (rows["slot"] >= hwm).any() or (idents["slot"] >= hwm).any():
        return "slot"
    if not np.isfinite(pressure) or not all(np.isfinite(weights)):
        return "value"
    st = rows["state"]
    if ((st > _TOP_STATE) & (st != UNREGISTERED)).any():
        return "value"
    return ScoreFrame(
        kind,
        stream,
        seq,
        epoch,
        tick_wall,
        sent_wall,
        pressure,
        capacity,
        hwm,
        n_ranked,
        live,
        registered,
        ejected,
        tick_ms,
        feedback_port,
        weights,
        counts,
        name.split(b"\0", 1)[0].decode("utf-8", "replace"),
        engine_run,
        rows,
        idents,
        n,
    )


def encode_feedback(
    *, flags: int, mirror: int, stream: int, seq: int, in_flight: np.ndarray, outcomes: np.ndarray
) -> bytes:
    head = FEEDBACK_HEADER.pack(
        FEEDBACK_MAGIC, FEED_VERSION, flags, mirror, stream, seq, len(in_flight), len(outcomes)
    )
    return b"".join((head, in_flight.tobytes(), outcomes.tobytes()))


def decode_feedback(msg, capacity: int) -> FeedbackFrame | str:
    """The feedback frame in ``msg`` for an engine of ``capacity`` slots, or
    why it is refused."""
    buf = memoryview(msg)
    n = buf.nbytes
    if n < FEEDBACK_HEADER.size:
        return "short"
    magic, version, flags, mirror, stream, seq, n_if, n_out = FEEDBACK_HEADER.unpack_from(buf, 0)
    if magic != FEEDBACK_MAGIC:
        return "magic"
    if version != FEED_VERSION:
        return "version"
    if n_if > capacity or n_out > capacity:
        return "count"
    if n != FEEDBACK_HEADER.size + n_if * IN_FLIGHT_DTYPE.itemsize + n_out * OUTCOME_DTYPE.itemsize:
        return "length"
    off = FEEDBACK_HEADER.size
    in_flight = np.frombuffer(buf, IN_FLIGHT_DTYPE, n_if, off).copy()
    outcomes = np.frombuffer(buf, OUTCOME_DTYPE, n_out, off + n_if * IN_FLIGHT_DTYPE.itemsize)
    outcomes = outcomes.copy()
    if (in_flight["slot"] >= capacity).any() or (outcomes["slot"] >= capacity).any():
        return "slot"
    if (in_flight["count"] >= 1 << 32).any():
        return "count"
    return FeedbackFrame(flags, mirror, stream, seq, in_flight, outcomes)
