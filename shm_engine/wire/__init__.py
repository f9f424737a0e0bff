"""The heartbeat wire format: decoding and validation at the ingest's trust
boundary, and encoding for senders.

Public API (the modules hold the rest; code in this repository imports from
them directly):

- `decode_frame(frame, max_frame_bytes) -> DecodedFrame`: one frame from the
  PULL socket, never raises on bad input (`decode`).
- `check_heartbeat(mapping)`: one heartbeat given as a mapping (`jsondecode`).
- `encode_batch`, `encode_json`, `encode_record`, `record_to_dict`,
  `node_key`: for senders and tests (`encode`).
- `RECORD_DTYPE`, `REJECT_REASONS`, `DEFAULT_MAX_FRAME_BYTES`, the presence
  bits `HAS_*`: the format's facts (`format`, where every other one is).

Modules, none of which imports numba but the last two:

    format      record layout, limits, flags, reject reasons, the rule table
    result      DecodedFrame and the reject bookkeeping of every decode path
    jsondecode  JSON frames; the check of one heartbeat mapping
    binary      binary frames: the fault finder, the scalar and batch paths
    decode      decode_frame: length, then kind by the first byte
    encode      encoders, for senders
    rulecode    the rule table rendered as code (`python -m shm_engine.wire`)
    _checks     the compiled batch check, rendered by rulecode (numba; loaded
                on first use by `binary`, never by a sender)
    _padded     compiled checks of NUL-padded text fields (numba)
"""

from shm_engine.wire.decode import decode_frame
from shm_engine.wire.encode import (
    encode_batch,
    encode_json,
    encode_record,
    node_key,
    record_to_dict,
)
from shm_engine.wire.format import (
    DEFAULT_MAX_FRAME_BYTES,
    HAS_IO,
    HAS_OKERR,
    HAS_TAIL,
    HAS_THROUGHPUT,
    HAS_TS,
    HAS_ZONE,
    RECORD_DTYPE,
    REJECT_REASONS,
)
from shm_engine.wire.jsondecode import check_heartbeat
from shm_engine.wire.result import DecodedFrame

__all__ = [
    "decode_frame",
    "DecodedFrame",
    "check_heartbeat",
    "encode_batch",
    "encode_json",
    "encode_record",
    "node_key",
    "record_to_dict",
    "RECORD_DTYPE",
    "REJECT_REASONS",
    "DEFAULT_MAX_FRAME_BYTES",
    "HAS_THROUGHPUT",
    "HAS_OKERR",
    "HAS_IO",
    "HAS_TAIL",
    "HAS_TS",
    "HAS_ZONE",
]
