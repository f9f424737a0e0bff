"""The HTTP app on a real uvicorn server in a thread, and a raw SSE reader.

Starlette's TestClient runs an app until its response ends, so a stream
that never ends (server-sent events) is tested against a real server:
`serve` runs uvicorn in a thread over a socket the test made (options such
as a small send buffer are inherited by the accepted connections) and
stops it on exit.  `SseReader` reads a stream over a plain socket, so a
test decides exactly when bytes are taken from the kernel: a reader that
stops reading is a slow client.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import uvicorn

from support.wait import wait_until

__all__ = ["serve", "SseReader"]


@contextlib.contextmanager
def serve(app, sndbuf: int | None = None) -> Iterator[tuple[str, int]]:
    """Serve ``app`` on 127.0.0.1 (a free port); yields (host, port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 30, "uvicorn started")
        assert server.started, "uvicorn did not start"
        yield sock.getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class SseReader:
    """``GET path`` over a plain socket, its server-sent events parsed one
    by one (`next_event`).  ``rcvbuf``: the socket's receive buffer."""

    def __init__(
        self,
        addr: tuple[str, int],
        path: str,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        timeout: float = 30.0,
    ):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        lines = [f"GET {path} HTTP/1.1", f"Host: {addr[0]}:{addr[1]}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buf = b""
        head = self._until(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        self._chunked = self.headers.get("transfer-encoding") == "chunked"
        self._body = b""  # de-chunked bytes not parsed yet

    def _until(self, sep: bytes) -> bytes:
        while sep not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the stream")
            self._buf += data
        out, _, self._buf = self._buf.partition(sep)
        return out

    def _more(self) -> None:
        if not self._chunked:
            data = self._buf or self.sock.recv(65536)
            self._buf = b""
            if not data:
                raise EOFError("the server closed the stream")
            self._body += data
            return
        size = int(self._until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            raise EOFError("the stream ended")
        while len(self._buf) < size + 2:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the stream")
            self._buf += data
        self._body += self._buf[:size]
        self._buf = self._buf[size + 2 :]

    def next_event(self) -> dict:
        """The next message: {"event", "data" (parsed JSON or None), "id",
        "comment"}; a message of only an id or a comment counts too."""
        while b"\n\n" not in self._body:
            self._more()
        raw, _, self._body = self._body.partition(b"\n\n")
        msg: dict = {"event": None, "data": None, "id": None, "comment": None}
        data = []
        for line in raw.decode("utf-8").split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "":
                msg["comment"] = value
            elif field == "data":
                data.append(value)
            elif field in ("event", "id", "retry"):
                msg[field] = value
        if data:
            msg["data"] = json.loads("\n".join(data))
        return msg

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SseReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
