"""The HTTP child of ``shm-engine run``: the API and dashboard on uvicorn.

The supervisor starts `http_main` like the ingest and the tick worker
(``[http] bind`` set: see `shm_engine.ops.supervisor`), restarts it when it
dies, and stops it by setting the header's ``stopping`` or with SIGTERM.

Why it cannot slow the tick: it is its own process (niced by ``[http]
nice``), it maps the score segments read-only and reads them through the
latch like any scheduler (the writer never waits for a reader), and it
copies the score buffers at most once per published tick however many
requests come (`shm_engine.http.view`).  Heartbeats posted to it are sent
to the ingest's socket like any sender's (`Forwarder`): the ingest stays
the one writer of the table and the one place rejects are counted.

What it writes: only its own header fields (``http_alive_mono``, beaten
every `BEAT_S`, and ``http_endpoint``, the URL bound), through a writable
mapping of the header page alone (`HeaderFields`): the scores, the table
and the registry are never writable in this process.

Exit codes (`shm_engine.core.runtime`): `EXIT_OK` stopped; `EXIT_FAILED`
the segment could not be attached (restartable); `EXIT_FATAL` the address
cannot be bound, TLS files or the token cannot be loaded (restarting would
not help: the supervisor stops the engine and says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import signal
import socket
import time

import posix_ipc
import uvicorn
import zmq

from shm_engine.core.config import Config, http_host_port, is_loopback_http
from shm_engine.core.layout import HEADER_BYTES, Header, layout_for
from shm_engine.core.runtime import EXIT_FAILED, EXIT_FATAL, EXIT_OK, log_event
from shm_engine.core.segment import posix_name

__all__ = ["http_main", "Forwarder", "HeaderFields", "load_token", "warm_up", "BEAT_S"]

BEAT_S = 0.1  # the child beats, and checks its parent, this often
SAMPLE_S = 0.25  # history sampling is checked this often (a sample per second)
FORWARD_HWM = 1000  # heartbeat frames queued for the ingest before 503
MAX_CONNECTIONS = 1024  # open connections and requests; uvicorn answers 503 beyond


def warm_up() -> None:
    """What a warm spare loads before it is needed."""
    import shm_engine.http.api  # noqa: F401


class HeaderFields:
    """A writable mapping of engine ``name``'s header page, for the HTTP
    child's own fields only (module docstring)."""

    def __init__(self, name: str):
        shm = posix_ipc.SharedMemory(posix_name(name))
        try:
            self._mm = mmap.mmap(shm.fd, HEADER_BYTES)
        finally:
            shm.close_fd()
        self.header = Header(self._mm, layout_for(1))  # header offsets do not depend on capacity

    def beat(self, now: float) -> None:
        self.header.http_alive_mono[0] = now

    def set_url(self, url: str) -> None:
        self.header.write_str("http_endpoint", url)

    def close(self) -> None:
        self.header = None  # type: ignore[assignment]
        with contextlib.suppress(BufferError):
            self._mm.close()


def load_token(path: str) -> str | None:
    """The bearer token in ``[http] token_file`` (None when empty)."""
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        token = fh.read().strip()
    if not token:
        raise ValueError(f"http.token_file = {path!r} is empty")
    return token


class Forwarder:
    """Sends posted heartbeat frames to the ingest's socket (a PUSH, never
    blocking).  The endpoint is read from the header at each send, so an
    ingest restarted on another port (``*``) is followed.  With CURVE on,
    ``curve`` is ``(server_public, client_public, client_secret)``."""

    def __init__(self, header, curve: tuple[bytes, bytes, bytes] | None = None):
        self._header = header
        self._curve = curve
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self._endpoint = ""

    def __call__(self, frame: bytes) -> str | None:
        endpoint = self._header.read_str("endpoint")
        if not endpoint or "*" in endpoint:
            return "the ingest has not bound its socket yet; retry"
        if endpoint != self._endpoint:
            self._connect(endpoint)
        assert self._sock is not None
        try:
            self._sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return "the ingest's queue is full; retry"
        return None

    def _connect(self, endpoint: str) -> None:
        if self._sock is not None:
            self._sock.close(0)
        s = self._ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.SNDHWM, FORWARD_HWM)
        s.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:
            server_public, public, secret = self._curve
            s.curve_serverkey = server_public
            s.curve_publickey = public
            s.curve_secretkey = secret
        s.connect(endpoint)
        self._sock, self._endpoint = s, endpoint

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        self._ctx.term()


def _curve_keys(config: Config) -> tuple[bytes, bytes, bytes] | None:
    import zmq.auth

    cc = config.ingest.curve
    server_public, _ = zmq.auth.load_certificate(cc.server_secret_key_file)
    public, secret = zmq.auth.load_certificate(config.http.curve_client_key_file)
    if not secret:
        raise ValueError(
            f"http.curve_client_key_file = {config.http.curve_client_key_file!r} "
            "holds no secret key"
        )
    return server_public, public, secret


def _bind(bind: str) -> socket.socket:
    host, port = http_host_port(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only
    # then, and without it a keep-alive reply waits out delayed ACKs (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(config: Config, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if config.http.tls else 'http'}://{shown}:{port}"


def http_main(name: str, config: Config, parent_pid: int) -> int:
    """The HTTP child: serve engine ``name``'s API until the parent
    (``parent_pid``) dies, ``stopping`` is set, or SIGTERM.  Returns the
    exit code (module docstring)."""
    from shm_engine.http.api import Settings, build_app
    from shm_engine.http.view import EngineView

    hc = config.http
    with contextlib.suppress(OSError):
        os.nice(hc.nice)
    try:
        token = load_token(hc.token_file)
        curve = (
            _curve_keys(config)
            if config.ingest.curve.enabled and hc.curve_client_key_file
            else None
        )
    except (OSError, ValueError) as err:
        log_event("ERROR", "http_setup_failed", error=repr(str(err)))
        return EXIT_FATAL
    try:
        view = EngineView(name)
        fields = HeaderFields(name)
    except Exception as err:  # noqa: BLE001 - reported as an exit code
        log_event("ERROR", "http_attach_failed", name=name, error=repr(str(err)))
        return EXIT_FAILED
    forwarder = None
    sock = None
    try:
        try:
            sock = _bind(hc.bind)
        except OSError as err:
            log_event("ERROR", "http_bind_failed", bind=hc.bind, error=repr(str(err)))
            return EXIT_FATAL
        if not config.ingest.curve.enabled or curve is not None:
            forwarder = Forwarder(fields.header, curve)
        settings = Settings.from_config(config, token, is_loopback_http(hc.bind))
        app, api = build_app(view, settings, forwarder)
        ucfg = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            ssl_certfile=hc.tls_cert or None,
            ssl_keyfile=hc.tls_key or None,
            lifespan="off",
            timeout_graceful_shutdown=2,
            limit_concurrency=MAX_CONNECTIONS,
        )
        try:
            ucfg.load()
        except Exception as err:  # noqa: BLE001 - TLS files the ssl module refuses
            log_event("ERROR", "http_setup_failed", error=repr(str(err)))
            return EXIT_FATAL
        server = _Server(ucfg)
        url = _url(config, sock)
        try:
            asyncio.run(_serve(server, sock, view, fields, url, parent_pid, api))
        finally:
            api.close()
        log_event("INFO", "http_stopped", pid=os.getpid(), url=url)
        return EXIT_OK
    finally:
        if forwarder is not None:
            forwarder.close()
        if sock is not None:
            sock.close()
        fields.close()
        view.close()


class _Server(uvicorn.Server):
    """uvicorn's Server without its signal capture: the supervisor decides
    (Ctrl-C reaches the whole process group; this child ignores SIGINT and
    stops on SIGTERM or the header's ``stopping``)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def _serve(server, sock, view, fields: HeaderFields, url: str, parent_pid: int, api) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))

    async def upkeep() -> None:
        """Beat, follow the parent and ``stopping``, sample the history."""
        h = view.header
        next_sample = 0.0
        while not server.should_exit:
            now = time.monotonic()
            if os.getppid() != parent_pid or h.stopping[0]:
                server.should_exit = True
                return
            if server.started:
                fields.beat(now)
            if now >= next_sample:
                next_sample = now + SAMPLE_S
                with contextlib.suppress(Exception):  # nothing published yet, or gone
                    view.sample()
            # Node details find their events indexed (a word read when none is new).
            view.recent.sync()
            api.beat()  # placements whose lease ran out are returned
            await asyncio.sleep(BEAT_S)

    task = None

    async def announce() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.01)
        if server.started:
            fields.set_url(url)
            fields.beat(time.monotonic())
            log_event("INFO", "http_started", pid=os.getpid(), url=url)

    task = asyncio.ensure_future(upkeep())
    ann = asyncio.ensure_future(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        server.should_exit = True
        for t in (task, ann):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
