"""Encoding heartbeats into frames, for senders and tests.

Numpy only: `clients.HeartbeatClient` and the node agent import this module,
and a sender must not load numba.  Mappings are validated with the engine's
own check (`jsondecode.check_mapping`) before they are encoded, so what an
encoder returns is accepted by `decode_frame`.

Rules for callers: the encoders raise ``ValueError`` on an invalid heartbeat
(the message names the reason, the node and the field); an already
validated RECORD_DTYPE array or record is written as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from shm_engine.wire.format import (
    BIT_OF,
    FIELD_NAMES,
    HEADER,
    HEADER_ONE,
    MAGIC,
    OPTIONAL_FIELDS,
    RECORD_DTYPE,
    RECORD_SIZE,
    REQUIRED_FIELDS,
    RESOURCES,
    TAINTS_FIELD_SIZE,
    V3_RECORD_SIZE,
    V3_VERSION,
    VERSION,
    split_meta,
)
from shm_engine.wire.jsondecode import check_mapping
from shm_engine.wire.result import Reject, node_label

_KINDS = {name: RECORD_DTYPE[name].kind for name in FIELD_NAMES}
_JSON_ORDER = REQUIRED_FIELDS + OPTIONAL_FIELDS


def node_key(record: Any) -> bytes:
    """The node id's bytes without padding: the registry key.

    ``record`` is a RECORD_DTYPE scalar or a mapping with a ``node`` string."""
    if isinstance(record, np.void):
        return bytes(record["node"])
    return record["node"].encode("utf-8")


def _plain(name: str, value: Any) -> Any:
    """A record or mapping value as the JSON field holds it."""
    kind = _KINDS[name]
    if kind == "S":
        return bytes(value).decode("utf-8") if not isinstance(value, str) else value
    return int(value) if kind == "u" else float(value)


_ENTRIES = frozenset(RESOURCES.names + RESOURCES.values)


def record_to_dict(record: np.void, labels: bytes | None = None) -> dict:
    """The JSON-field mapping of a validated record (only the fields it
    carries); ``labels``: the heartbeat's meta bytes (labels and taints,
    `format.split_meta`)."""
    flags = int(record["flags"])
    out: dict[str, Any] = {}
    for name, bit in BIT_OF.items():
        if (not bit or flags & bit) and name not in _ENTRIES:
            out[name] = _plain(name, record[name])
    if flags & RESOURCES.bit:
        out[RESOURCES.name] = {
            bytes(record[n]).decode("utf-8"): float(record[v])
            for n, v in zip(RESOURCES.names, RESOURCES.values, strict=True)
            if bytes(record[n])
        }
    lab, taints = split_meta(labels)
    if lab is not None and (lab != b"{}" or not taints):
        out["labels"] = json.loads(lab)
    if taints:
        out["taints"] = list(taints)
    return out


def _checked(mapping: Mapping) -> tuple[tuple, bytes | None]:
    obj = dict(mapping)
    try:
        return check_mapping(obj)
    except Reject as rej:
        raise ValueError(f"{rej.reason}: {node_label(obj.get('node'))}: {rej.detail}") from None


def encode_batch(records: Iterable[Mapping] | np.ndarray) -> bytes:
    """A binary frame (current version) holding ``records``.

    Mappings (JSON field names) are validated; an invalid one, or one with
    labels (binary frames cannot carry them), raises ValueError.  When a
    mapping has taints, the frame is version 3 (each record followed by its
    taints).  A
    RECORD_DTYPE array is written as is (reserved bytes zeroed), unvalidated.
    """
    if isinstance(records, np.ndarray):
        if records.dtype != RECORD_DTYPE:
            raise TypeError(f"records array has dtype {records.dtype}, not RECORD_DTYPE")
        out = np.zeros(len(records), RECORD_DTYPE)  # zeros: reserved bytes are 0
        for name in FIELD_NAMES:
            out[name] = records[name]
    else:
        rows, taints = [], []
        for mapping in records:
            values, meta = _checked(mapping)
            labels, node_taints = split_meta(meta)
            if "labels" in mapping:
                raise ValueError(
                    f"{node_label(mapping.get('node'))}: labels cannot "
                    "travel in a binary frame; use encode_json"
                )
            rows.append(values)
            taints.append(",".join(node_taints).encode("ascii"))
        out = np.zeros(len(rows), RECORD_DTYPE)
        for i, values in enumerate(rows):
            out[i] = values
        if any(taints):  # version 3: each record followed by its taints
            tail = np.zeros((len(out), TAINTS_FIELD_SIZE), np.uint8)
            for i, t in enumerate(taints):
                tail[i, : len(t)] = np.frombuffer(t, np.uint8)
            body = np.hstack([out.view(np.uint8).reshape(len(out), RECORD_SIZE), tail])
            return HEADER.pack(MAGIC, V3_VERSION, V3_RECORD_SIZE, len(out), 0) + body.tobytes()
    return HEADER.pack(MAGIC, VERSION, RECORD_SIZE, len(out), 0) + out.tobytes()


def encode_record(record: np.void) -> bytes:
    """A 1-record binary frame of an already validated RECORD_DTYPE scalar."""
    one = np.zeros(1, RECORD_DTYPE)
    one[0] = record
    return HEADER_ONE + one.tobytes()


def encode_json(record_mapping: Mapping | np.void) -> bytes:
    """A JSON frame of one heartbeat: compact, fields in table order, only those
    present.  Validates first (ValueError on an invalid heartbeat)."""
    if isinstance(record_mapping, np.void):
        record_mapping = record_to_dict(record_mapping)
    _checked(record_mapping)
    ordered = {k: record_mapping[k] for k in _JSON_ORDER if k in record_mapping}
    for k, value in ordered.items():
        if k in _KINDS and _KINDS[k] != "S":
            ordered[k] = _plain(k, value)
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )
