"""The ingest's ZAP handler: which CURVE client keys may complete a handshake.

libzmq asks a ZAP handler (RFC 27, a REP socket at
``inproc://zeromq.zap.01`` of the socket's context) about every CURVE
handshake, and the client's connection waits for the answer.  This one
runs in the ingest's own thread: the loop polls `ZapHandler.socket` beside
the heartbeat socket and calls `ZapHandler.serve`, which answers what is
waiting and never blocks.  So the key table it consults is the one the loop
uses for frames, swapped by a reload between two turns of the loop, with no
lock and no second thread.

A key of the current table is accepted with its Z85 public key as the
connection's User-Id; libzmq attaches that to every message of the
connection (frame property ``User-Id``), which is how the loop finds the
sender of each frame, and how frames of a key revoked after its handshake
are refused.  Any other key, and any mechanism but CURVE, is refused (400):
the client's connection is dropped in the handshake.

Rules for callers: create the handler before the heartbeat socket binds (a
CURVE server without a handler admits every key); `serve` at least once per
loop turn; `close` before terminating the context.
"""

from __future__ import annotations

import time

import zmq
from zmq.utils import z85

from shm_engine.core.runtime import log_event

__all__ = ["ZapHandler", "ZAP_ENDPOINT"]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_VERSION = b"1.0"
LOG_INTERVAL_S = 1.0  # refused handshakes are logged as a summary at most this often


class ZapHandler:
    """Answers ZAP requests from ``keys`` (a callable returning the current
    Z85 -> sender table).  ``accepted`` and ``refused`` count handshakes."""

    def __init__(self, ctx: zmq.Context, keys):
        self._keys = keys
        self.accepted = 0
        self.refused = 0
        self._unlogged = 0
        self._last_log = 0.0
        self._last_refused = ""
        self.socket = ctx.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)

    def serve(self) -> int:
        """Answer every request waiting, without blocking; returns how many."""
        sock, n = self.socket, 0
        while True:
            try:
                request = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            sock.send_multipart(self._answer(request))
            n += 1
        if self._unlogged and time.monotonic() - self._last_log >= LOG_INTERVAL_S:
            log_event(
                "WARN",
                "ingest_handshakes_refused",
                count=self._unlogged,
                last=repr(self._last_refused),
            )
            self._unlogged = 0
            self._last_log = time.monotonic()
        return n

    def _answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6 or request[0] != _VERSION:
            request_id = request[1] if len(request) > 1 else b""
            return self._refuse(request_id, b"500", "malformed ZAP request")
        request_id, address, mechanism, credentials = (
            request[1],
            request[3],
            request[5],
            request[6:],
        )
        peer = address.decode("utf-8", "replace")
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            return self._refuse(
                request_id, b"400", f"{peer}: mechanism {mechanism.decode('ascii', 'replace')}"
            )
        public = z85.encode(credentials[0]).decode("ascii")
        if public not in self._keys():
            return self._refuse(request_id, b"400", f"{peer}: key {public[:8]} not authorized")
        self.accepted += 1
        return [_VERSION, request_id, b"200", b"OK", public.encode("ascii"), b""]

    def _refuse(self, request_id: bytes, code: bytes, why: str) -> list[bytes]:
        self.refused += 1
        self._unlogged += 1
        self._last_refused = why
        return [_VERSION, request_id, code, why.encode("utf-8")[:255], b"", b""]

    def close(self) -> None:
        self.socket.close(0)
