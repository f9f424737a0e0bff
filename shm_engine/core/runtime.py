"""What every engine process keeps to: the default name, the log line, the exit codes.

An engine is known by its name, which is its shared-memory segment's name;
`DEFAULT_NAME` is the one ``shm-engine run``, ``status``, ``top``,
``metrics`` and ``ScoreReader.attach`` use when none is given.

The supervisor and its two children (ingest, tick worker) write one line per
event on stderr, ``2024-05-01T12:00:00.123Z LEVEL event key=value ...``
(UTC, milliseconds), so one engine's log reads as one stream and a test can
grep a child's event next to the supervisor's.  Writing a log line never
raises: a closed stderr must not take a process down.

Exit codes are the contract between a child and the supervisor: `EXIT_OK`
(stopped as asked), `EXIT_FAILED` (restartable, e.g. the segment is not
there yet) and `EXIT_FATAL` (78, ``EX_CONFIG`` of sysexits.h: the
configuration cannot work, e.g. the ingest cannot bind; the supervisor does
not restart the child and stops the engine).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["DEFAULT_NAME", "EXIT_OK", "EXIT_FAILED", "EXIT_FATAL", "log_event"]

DEFAULT_NAME = "dfps"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_FATAL = 78


def log_event(level: str, event: str, /, *, stream: TextIO | None = None, **fields) -> None:
    """Write one log line to ``stream`` (default: the current ``sys.stderr``).

    ``fields`` are printed as ``key=value`` in the order given; ``stream``
    is the one name a field cannot have."""
    t = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
    text = "".join(f" {k}={v}" for k, v in fields.items())
    out = sys.stderr if stream is None else stream
    try:
        out.write(f"{stamp} {level} {event}{text}\n")
        out.flush()
    except (OSError, ValueError):
        pass
