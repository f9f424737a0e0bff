"""`decode_frame`: the ingest's trust boundary for one frame.

Every byte that arrives on the engine's PULL socket comes from the network, so
a frame is hostile until checked: it is never unpickled or evaluated, its
length is checked before anything looks inside it, and every heartbeat is
validated against `format.FIELDS` (SCORING.md's input table) before anything
of it reaches the registry.  A heartbeat with any problem is rejected whole
and counted under one reason of ``REJECT_REASONS``; the good heartbeats of the
same frame are kept.

The first byte decides the kind (docs/wire-format.md is the spec): JSON
(`jsondecode`) or binary batch (`binary`).  Whatever the kind, the records
come back in the `RECORD_DTYPE` layout, so the ingest handles one batch type.
Fields a heartbeat does not carry are 0 and their presence bit is clear.

Rules for callers: a hot path; returns status, never raises on bad input.
"""

from __future__ import annotations

from shm_engine.wire.binary import decode_binary, decode_one
from shm_engine.wire.format import HEADER_ONE, HEADER_SIZE, JSON_FIRST_BYTES, MAGIC, ONE_FRAME_SIZE
from shm_engine.wire.jsondecode import decode_json
from shm_engine.wire.result import DecodedFrame, frame_reject


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
        return frame_reject("frame_too_large", f"{size} bytes > max {max_frame_bytes}")
    if size == ONE_FRAME_SIZE and mv[:HEADER_SIZE] == HEADER_ONE:
        return decode_one(mv)  # the common frame
    if size == 0:
        return frame_reject("malformed_frame", "empty frame")
    first = mv[0]
    if first in JSON_FIRST_BYTES:
        return decode_json(frame if type(frame) is bytes else bytes(mv))
    if mv[:4] == MAGIC:
        return decode_binary(mv)
    return frame_reject("malformed_frame", f"unknown frame kind (first byte 0x{first:02x})")
