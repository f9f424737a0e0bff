"""``shm-engine run`` as a child process: start it, wait until ready, stop it.

The demo runs its engine through `EngineProcess`, and so do the tests that
need a real engine, so both exercise the product the way an operator starts
it (a separate ``python -m shm_engine run`` with a config file).

Invariants:
- The child's output goes to two files in the caller's directory,
  ``<name>.out`` (the endpoint and ``ready`` lines) and ``<name>.err`` (the
  log lines of the supervisor and its children), never to a pipe that could
  fill up and block it.
- The child runs in its own session, so a Ctrl-C in the terminal reaches
  only the parent, which stops the engine in order; on Linux it also gets
  SIGTERM when the parent dies (``PR_SET_PDEATHSIG``), so a killed parent
  does not leave an engine behind.
- Ready means the child printed ``ready`` on stdout: the supervisor does
  that once the first epoch is published and the ingest socket is bound,
  so a segment of the same name made by another process never counts.
- `stop` sends SIGTERM and waits; a child that does not exit in time is
  killed.  Whether the segment is gone afterwards is for the caller to check
  (`segment_exists`): a clean stop removes it, a killed engine leaves it.

Rules for callers: one `EngineProcess` per engine name; call `stop` (or
`kill`) on every exit path.  `free_port` picks a port the OS says is free
now; another process may take it before the engine binds it, which the
engine reports as ``ingest_bind_failed`` (exit code 1): retry with another.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import posix_ipc

from shm_engine.core.errors import EngineNotRunning, LayoutMismatch
from shm_engine.core.segment import Segment, posix_name, process_alive
from shm_engine.ops.status import read_status

__all__ = [
    "EngineProcess",
    "EngineExited",
    "free_port",
    "segment_exists",
    "engine_running",
    "READY_POLL_S",
]

READY_POLL_S = 0.02


class EngineExited(RuntimeError):
    """Raised by `EngineProcess.wait_ready` when the child exited before it
    was ready; the message holds its exit code and the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def segment_exists(name: str) -> bool:
    """True if engine ``name``'s shared-memory segment exists (live or stale)."""
    try:
        posix_ipc.SharedMemory(posix_name(name), 0, read_only=True).close_fd()
    except posix_ipc.ExistentialError:
        return False
    return True


def engine_running(name: str) -> bool:
    """True if segment ``name`` exists and the process that created it runs."""
    try:
        with Segment.attach(name, readonly=True) as seg:
            h = seg.views.header
            return process_alive(int(h.creator_pid[0]), int(h.creator_start[0]))
    except (EngineNotRunning, LayoutMismatch):
        return False


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when its parent dies (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EngineProcess:
    """Engine ``name`` run with the configuration file ``config``, its output
    in directory ``workdir`` (created if missing)."""

    def __init__(self, name: str, config: str | os.PathLike, workdir: str | os.PathLike):
        self.name = name
        self.config = Path(config)
        self.workdir = Path(workdir)
        self.out_path = self.workdir / f"{name}.out"
        self.err_path = self.workdir / f"{name}.err"
        self.proc: subprocess.Popen | None = None

    def start(self) -> EngineProcess:
        """Start the child (output files truncated); returns self."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "shm_engine",
            "run",
            "--name",
            self.name,
            "--config",
            str(self.config),
        ]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    # ------------------------------------------------------------ output --
    @property
    def stdout(self) -> str:
        return self._read(self.out_path)

    @property
    def stderr(self) -> str:
        return self._read(self.err_path)

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the engine's log (stderr)."""
        return "".join(self.stderr.splitlines(keepends=True)[-lines:])

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------- state --
    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> dict:
        """Wait until the engine is ready; returns its status (`read_status`).

        Raises EngineExited if the child exits first, TimeoutError after
        ``timeout`` seconds."""
        if self.proc is None:
            raise RuntimeError(f"engine {self.name!r} was not started")
        deadline = time.monotonic() + timeout
        while True:
            if "ready\n" in self.stdout:
                return read_status(self.name)
            code = self.proc.poll()
            if code is not None:
                raise EngineExited(
                    f"engine {self.name!r} exited with code {code} before it "
                    f"was ready:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"engine {self.name!r} not ready within {timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(READY_POLL_S)

    def status(self) -> dict:
        """The engine's status object (``shm-engine status --json``)."""
        return read_status(self.name)

    def segment_exists(self) -> bool:
        return segment_exists(self.name)

    # -------------------------------------------------------------- stop --
    def terminate(self) -> None:
        """SIGTERM the child (if it runs) without waiting: several engines
        then stop in parallel; `stop` waits for each."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, then wait up to ``timeout`` seconds; SIGKILL if the child
        is still there.  Returns the exit code of a child that exited by
        itself (0 is a clean stop), None if it had to be killed or was never
        started."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return p.returncode

    def kill(self) -> None:
        """SIGKILL the child (if it runs) and reap it; the segment stays."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
