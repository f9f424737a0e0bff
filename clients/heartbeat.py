"""Sending heartbeats to the engine: a ZeroMQ PUSH client.

Invariant: nothing this client sends is rejected by the engine's validation
(``shm_engine.wire``), because every heartbeat is checked here first with the
same code; a bad heartbeat is the caller's bug and raises ``InvalidHeartbeat``.
The client never loads numba: it validates with the wire package's Python
checks (the engine's compiled batch check applies the same rule table).

Rules for callers:
- ``send``/``send_batch`` never block.  When the socket's queue is full (the
  engine is slow or away) the heartbeat is dropped and counted in ``dropped``;
  heartbeats are periodic, so the next one replaces it.
- ``send`` only queues: the connection may not even be up when it returns.
  ``close()`` (and so the end of a ``with`` block) waits up to ``linger_ms``
  (`DEFAULT_LINGER_MS` unless given) for what is queued to reach the engine,
  then drops the rest; so ``with HeartbeatClient(...) as hb: hb.send(...)``
  delivers, and closing never blocks longer than that.
- A client owns its own ``zmq.Context`` and must not cross a ``fork()``:
  create one per process (a forked child's ``send`` raises RuntimeError).
- Labels travel only in JSON frames (``send``); everything else, taints
  included, goes in binary frames.
- An optional field passed as None is left out ("not reported"), so
  ``hb.send(node, ..., io=sample.io)`` needs no test when a value is unknown.
- ``leave(node)`` sends a leave message (`shm_engine.wire.leave`): a draining
  node is unranked at the next tick instead of dying over ``dead_after_s``.
- With ``curve=CurveKeys(...)`` the connection is CURVE-encrypted and the
  engine admits it only if the client's public key is in its
  ``[ingest.curve] authorized_keys_dir``.  An engine that refuses the key
  drops the connection silently (ZeroMQ gives the sender no error): the
  heartbeats count as ``sent`` but never arrive.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from shm_engine.core.errors import ShmEngineError
from shm_engine.wire.binary import decode_binary
from shm_engine.wire.encode import encode_batch, encode_json, encode_record
from shm_engine.wire.format import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER_SIZE,
    RECORD_DTYPE,
    RECORD_SIZE,
    V3_RECORD_SIZE,
)
from shm_engine.wire.jsondecode import check_heartbeat
from shm_engine.wire.leave import decode_leave, encode_leave

#: How long ``close()`` waits by default for queued heartbeats to be sent.
DEFAULT_LINGER_MS = 1000


class InvalidHeartbeat(ShmEngineError, ValueError):
    """Raised by ``HeartbeatClient.send``/``send_batch`` when a heartbeat would
    be rejected by the engine.  The message names the reason, the node and the
    field; fix the values the caller passes.  ``reason`` is the engine's reject
    reason (``bad_field``, ``missing_field``, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CurveKeys:
    """CURVE keys of one client: the engine's public key and the client's own
    pair (each 40-character Z85 bytes, as ``zmq.curve_keypair`` makes them).

    Build from the files ``shm-engine keys`` writes with `from_files`."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes

    def __post_init__(self) -> None:
        for name in ("server_public", "client_public", "client_secret"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 40:
                # Never echo the value: it may be a secret key.
                size = len(value) if isinstance(value, (bytes, str)) else "?"
                raise ValueError(
                    f"CurveKeys.{name} must be 40 bytes of Z85, got "
                    f"{type(value).__name__} of length {size}"
                )

    @classmethod
    def from_files(cls, server_public_file: str, client_secret_file: str) -> CurveKeys:
        """Keys from the engine's ``NAME.key`` and this client's
        ``NAME.key_secret``.  Raises ValueError if the secret file holds no
        secret key, OSError if a file cannot be read."""
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(server_public_file)
        client_public, client_secret = zmq.auth.load_certificate(client_secret_file)
        if not client_secret:
            raise ValueError(
                f"{client_secret_file} holds no secret key (give the client's .key_secret file)"
            )
        return cls(server_public, client_public, client_secret)


def _present(fields: Mapping) -> dict:
    """``fields`` without the keys whose value is None (not reported)."""
    return {k: v for k, v in fields.items() if v is not None}


def _check_linger(linger_ms: int) -> None:
    if isinstance(linger_ms, bool) or not isinstance(linger_ms, int) or linger_ms < 0:
        # ZeroMQ's -1 (wait forever) would let close() block without bound.
        raise ValueError(f"linger_ms={linger_ms!r} must be an integer >= 0")


class HeartbeatClient:
    """PUSH socket connected to the engine's heartbeat endpoint.

    ``sent`` and ``dropped`` count heartbeats (not frames).  ``max_frame_bytes``
    bounds each frame ``send_batch`` builds; keep it at or below the engine's
    limit, or whole batches are refused as ``frame_too_large``.  ``linger_ms``
    bounds how long ``close()`` waits to deliver what is queued (0: drop it).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        sndhwm: int = 10000,
        linger_ms: int = DEFAULT_LINGER_MS,
        curve: CurveKeys | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        _check_linger(linger_ms)
        if curve is not None and not isinstance(curve, CurveKeys):
            raise ValueError(f"curve must be a CurveKeys or None, got {type(curve).__name__}")
        if curve is not None and not zmq.has("curve"):
            raise ValueError("curve: this libzmq has no CURVE support")
        if max_frame_bytes < HEADER_SIZE + RECORD_SIZE:
            raise ValueError(
                f"max_frame_bytes={max_frame_bytes} cannot hold one record "
                f"({HEADER_SIZE + RECORD_SIZE} bytes)"
            )
        self.endpoint = endpoint
        self.max_frame_bytes = max_frame_bytes
        self.sent = 0
        self.dropped = 0
        self._pid = os.getpid()
        self._ctx = zmq.Context()
        try:
            self._sock = self._ctx.socket(zmq.PUSH)
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
            self._sock.setsockopt(zmq.LINGER, linger_ms)
            if curve is not None:  # before connect: the handshake uses them
                self._sock.curve_serverkey = curve.server_public
                self._sock.curve_publickey = curve.client_public
                self._sock.curve_secretkey = curve.client_secret
            self._sock.connect(endpoint)
        except BaseException:
            self._ctx.destroy(linger=0)
            raise
        self._closed = False

    # -- sending

    def send(self, node: str, **fields: Any) -> bool:
        """Send one heartbeat; True if queued, False if dropped (queue full).

        An optional field given as None is left out (not reported).  Raises
        InvalidHeartbeat if the engine would reject it."""
        self._check_usable()
        fields = _present(fields)
        record, labels, reason, detail = check_heartbeat({"node": node, **fields})
        if reason is not None:
            assert detail is not None  # a reject reason comes with its detail
            raise InvalidHeartbeat(reason, detail)
        assert record is not None  # no reject reason: the record is valid
        if labels is None:
            frame = encode_record(record)
        elif "labels" in fields:
            frame = encode_json({"node": node, **fields})
        else:  # taints without labels: binary version 3
            frame = encode_batch([{"node": node, **fields}])
        return self._send_frame(frame, 1)

    def send_batch(self, records: Iterable[Mapping] | np.ndarray) -> int:
        """Send many heartbeats in binary frames of at most ``max_frame_bytes``.

        ``records``: mappings with the JSON field names (``node`` included), or
        a ``wire.RECORD_DTYPE`` array.  All are validated before any is sent;
        labels cannot travel in a batch (use ``send``); taints can (the
        frames are then of binary version 3).  Returns how many heartbeats
        were queued; the rest were dropped and counted.
        """
        self._check_usable()
        tainted: list[Mapping] = []
        batch = self._validated(records, tainted)
        frames: list[Any]
        if tainted:  # every mapping, validated: version 3 frames
            per_frame = (self.max_frame_bytes - HEADER_SIZE) // V3_RECORD_SIZE
            frames = [tainted[i : i + per_frame] for i in range(0, len(tainted), per_frame)]
        else:
            per_frame = (self.max_frame_bytes - HEADER_SIZE) // RECORD_SIZE
            frames = [batch[i : i + per_frame] for i in range(0, len(batch), per_frame)]
        queued = 0
        for chunk in frames:
            if self._send_frame(encode_batch(chunk), len(chunk)):
                queued += len(chunk)
        return queued

    def _validated(
        self, records: Iterable[Mapping] | np.ndarray, tainted: list[Mapping]
    ) -> np.ndarray:
        """The records, validated; when a mapping has taints, ``tainted``
        receives every mapping (they go out as mappings, with their taints)."""
        if isinstance(records, np.ndarray):
            if records.dtype != RECORD_DTYPE:
                raise TypeError(f"records array has dtype {records.dtype}, not wire.RECORD_DTYPE")
            decoded = decode_binary(memoryview(encode_batch(records)), compiled=False)
            if decoded.rejects:
                raise InvalidHeartbeat(*decoded.sample[0])
            return decoded.records
        rows, mappings, any_taints = [], [], False
        for mapping in records:
            record, labels, reason, detail = check_heartbeat(_present(mapping))
            if reason is not None:
                assert detail is not None  # a reject reason comes with its detail
                raise InvalidHeartbeat(reason, detail)
            if "labels" in mapping:
                raise InvalidHeartbeat(
                    "bad_field",
                    f"node {mapping['node']!r}: labels cannot travel in a "
                    "binary batch; send this heartbeat with send()",
                )
            any_taints = any_taints or labels is not None
            rows.append(record)
            mappings.append(mapping)
        if any_taints:
            tainted.extend(mappings)
        out = np.zeros(len(rows), RECORD_DTYPE)
        for i, record in enumerate(rows):
            out[i] = record
        return out

    def leave(self, node: str) -> bool:
        """Tell the engine that ``node`` is leaving (draining): it is
        unranked from the next tick instead of dying slowly, and its slot is
        freed (a later heartbeat registers it again).  True if queued, False
        if dropped (queue full: send it again).  Raises InvalidHeartbeat for
        a malformed node id."""
        self._check_usable()
        frame = encode_leave(node) if isinstance(node, str) else b""
        key, reason, detail = decode_leave(frame) if frame else (None, "bad_node_id", "")
        if key is None:
            assert reason is not None
            raise InvalidHeartbeat(reason, detail or f"leave: node {node!r} is not a string")
        return self._send_frame(frame, 1)

    def _send_frame(self, frame: bytes, n: int) -> bool:
        try:
            self._sock.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
        except zmq.Again:
            self.dropped += n
            return False
        self.sent += n
        return True

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("HeartbeatClient is closed")
        if os.getpid() != self._pid:
            raise RuntimeError(
                "HeartbeatClient was created in another process; create a new client after fork()"
            )

    # -- lifetime

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket and terminate the context (idempotent), after
        waiting up to ``linger_ms`` (default: the client's) for queued
        heartbeats to be delivered; what is still queued then is dropped."""
        if linger_ms is not None:
            _check_linger(linger_ms)
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            return  # the parent owns the sockets; never terminate them here
        self._sock.close(linger=linger_ms)
        self._ctx.term()

    def __enter__(self) -> HeartbeatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
