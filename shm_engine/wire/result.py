"""What a decode returns (`DecodedFrame`), and the reject bookkeeping every
decode path shares.

Invariant of every `DecodedFrame`: ``len(records) + sum(rejects.values())
== seen``; every record is a valid heartbeat in the `RECORD_DTYPE` layout,
whatever the frame kind.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from shm_engine.wire.format import RECORD_DTYPE

SAMPLE_MAX = 3  # (reason, detail) pairs kept per decode, for rate-limited logs


class DecodedFrame(NamedTuple):
    """What one frame yielded (immutable; a NamedTuple because building a
    frozen dataclass costs about as much as decoding a 1-record frame).

    ``records``: the accepted heartbeats (RECORD_DTYPE), in frame order.
    ``labels``: canonical JSON labels aligned with ``records`` (None where a
    heartbeat had none); None for binary frames, which cannot carry labels.
    ``rejects``: reason -> count, only reasons that occurred, in the order
    they first occurred.
    ``seen``: heartbeats in the frame (1 for a frame that could not be split).
    ``sample``: up to 3 (reason, detail) pairs, for rate-limited logging.
    ``one``: for a frame of exactly one heartbeat that was accepted, its
    values as plain Python objects in RECORD_DTYPE field order, node and zone
    without padding (what ``records[0].item()`` holds); None otherwise.  The
    ingest's 1-record path reads it instead of the numpy record.
    """

    records: np.ndarray
    labels: list[bytes | None] | None
    rejects: dict[str, int]
    seen: int
    sample: list[tuple[str, str]]
    one: tuple | None = None


class Reject(Exception):
    """One heartbeat is invalid.  Internal to the wire package: decoders turn
    it into a count, encoders into ValueError."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def short(value: Any, limit: int = 40) -> str:
    """repr() for log details: escaped (ids are untrusted) and bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def node_label(node: Any) -> str:
    """``node '<id>'`` for a detail, from an id as str or (padded) bytes."""
    if isinstance(node, (bytes, bytearray)):
        node = bytes(node).rstrip(b"\0").decode("utf-8", "backslashreplace")
    elif not isinstance(node, str):
        return "node ?"
    return "node " + short(node)


def no_records() -> np.ndarray:
    return np.zeros(0, RECORD_DTYPE)


def frame_reject(reason: str, detail: str) -> DecodedFrame:
    """A frame that could not be split into heartbeats: one reject."""
    return DecodedFrame(no_records(), None, {reason: 1}, 1, [(reason, "frame: " + detail)])


def tally(rejects: dict[str, int], sample: list[tuple[str, str]], reason: str, detail: str) -> None:
    """Count one rejected heartbeat and keep its detail while the sample has room."""
    rejects[reason] = rejects.get(reason, 0) + 1
    if len(sample) < SAMPLE_MAX:
        sample.append((reason, detail))
