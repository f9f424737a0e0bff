"""The leave message: a node says it is going away (draining), so it is unranked at once.

A leave is a JSON frame holding exactly one object with one key::

    {"leave": "node-17"}

The node id follows the heartbeat's rules (docs/wire-format.md).  The
ingest frees the node's slot as if it had been forgotten: from the next
tick it is no longer scored or ranked, its claims feedback is dropped with
the registration, and a later heartbeat registers it anew.  A leave for a
node that is not registered does nothing (and is not an error: leaves are
idempotent).  It counts as one heartbeat (accepted, or rejected under the
reason its node id or shape earns), and the sender must be allowed to speak
for the node, as for heartbeats.

Telling a leave from a heartbeat costs a length test and, for frames of at
most `MAX_LEAVE_FRAME_BYTES`, one anchored match (`is_leave_frame`): a
leave must start with ``{"leave":`` (whitespace allowed around the key).
"""

from __future__ import annotations

import json
import re

from shm_engine.wire.jsondecode import check_heartbeat

__all__ = ["LEAVE_KEY", "MAX_LEAVE_FRAME_BYTES", "decode_leave", "encode_leave", "is_leave_frame"]

LEAVE_KEY = "leave"
#: Longest frame taken for a leave: 63 bytes of id, the key and generous space.
MAX_LEAVE_FRAME_BYTES = 256
# A leave object's only key comes first; a heartbeat that names a node
# "leave" has "node" first.
_MARK = re.compile(rb'\{[ \t\r\n]*"leave"[ \t\r\n]*:')
# Placeholder values that pass the heartbeat rules, so that the node id of a
# leave is checked by exactly the heartbeat's code (its checks run first).
_PROBE = {"cpu": 0.0, "mem": 0.0, "queue": 0.0, "avg_job_s": 0.0}


def is_leave_frame(buf: bytes) -> bool:
    """Whether frame ``buf`` (bytes) is meant as a leave: a short JSON
    object naming the ``leave`` key.  Whether it is a valid one is for
    `decode_leave`."""
    return len(buf) <= MAX_LEAVE_FRAME_BYTES and _MARK.match(buf) is not None


def decode_leave(buf: bytes) -> tuple[bytes | None, str | None, str | None]:
    """``(node id bytes, None, None)`` for a valid leave frame, else
    ``(None, reject reason, detail)``.  Never raises on bad input."""
    try:
        obj = json.loads(buf)
    except (ValueError, RecursionError):
        return None, "malformed_frame", "leave: not JSON"
    if not isinstance(obj, dict):
        return None, "malformed_frame", "leave: not a JSON object"
    extra = sorted(k for k in obj if k != LEAVE_KEY)
    if extra:
        return None, "unknown_field", f"leave: unknown field {extra[0]!r}"
    node = obj.get(LEAVE_KEY)
    rec, _labels, reason, detail = check_heartbeat({"node": node, **_PROBE})
    if rec is None or not isinstance(node, str):
        return None, reason, f"leave: {detail}"
    return node.encode("ascii"), None, None


def encode_leave(node: str) -> bytes:
    """The leave frame for ``node`` (not validated here)."""
    return json.dumps({LEAVE_KEY: node}, separators=(",", ":")).encode("utf-8")
