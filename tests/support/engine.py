"""A real engine for tests: ``shm-engine run`` through the product's own helper.

`Engine` is `shm_engine.ops.engine_process.EngineProcess` (the helper the
demo uses) started at once, registered with the ``reap`` fixture (killed
after the test, pass or fail) and given the tests' timeouts.  Its status is
read in-process with `read_status` (what ``status --json`` prints).

Also here: a config file writer for small fast engines, the CLI as a
subprocess, and `LOG_LINE`, the shape of every log line the engine writes.
`free_port` and `segment_exists` are the product's (re-exported).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from shm_engine.ops.engine_process import EngineProcess, free_port, segment_exists

__all__ = [
    "Engine",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "LOG_LINE",
    "cli",
    "free_port",
    "segment_exists",
    "write_config",
]

START_TIMEOUT_S = 60.0  # two spawned children import numba on a busy machine
STOP_TIMEOUT_S = 30.0
#: One log line of the supervisor or a child (`shm_engine.core.runtime.log_event`).
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARN|ERROR) [a-z_]+"
    r"( \w+=\S+)*$"
)


class Engine(EngineProcess):
    """Engine ``name`` with config file ``config``, output in ``workdir``;
    started at once and killed after the test by ``reap``."""

    def __init__(self, name: str, config: Path, workdir: Path, reap):
        super().__init__(name, config, workdir)
        self.start()
        reap(self.proc)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict:
        return super().wait_ready(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        return super().stop(timeout)


def write_config(
    path: Path,
    port: int | str,
    *,
    tick_ms: int = 20,
    capacity: int = 64,
    max_frame_bytes: int = 1048576,
    extra: str = "",
    engine_extra: str = "",
    http: str = "",
    http_extra: str = "",
) -> Path:
    """A config for a small engine that restarts children fast; ``port`` may
    be ``"*"`` (the ingest picks one and publishes it).  ``extra`` goes into
    ``[ingest]`` (later sections may follow it), ``engine_extra`` into
    ``[engine]``.  ``http``: the ``[http] bind`` (default "": no HTTP
    server, so engines of parallel tests never compete for its port;
    ``"127.0.0.1:0"`` takes a free one), ``http_extra`` more ``[http]`` keys."""
    path.write_text(f"""
[engine]
tick_interval_ms = {tick_ms}
capacity = {capacity}
restart_backoff_min_s = 0.1
restart_backoff_max_s = 0.4
parent_check_interval_s = 0.1
{engine_extra}

[ingest]
bind = "tcp://127.0.0.1:{port}"
max_frame_bytes = {max_frame_bytes}
{extra}

[http]
bind = "{http}"
{http_extra}
""")
    return path


def cli(*args, timeout=60) -> subprocess.CompletedProcess:
    """``shm-engine ARGS...`` in a subprocess, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "shm_engine", *args], capture_output=True, text=True, timeout=timeout
    )
