"""Exceptions, named from the caller's side.

Hot paths (the tick, the ingest loop, reader calls) return status values; these
are raised only by setup: loading configuration, creating or attaching a segment.
"""


class ShmEngineError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(ShmEngineError, ValueError):
    """Raised by config loading when a key is unknown, mistyped or inconsistent.

    The message names the key (``section.key``) and the bad value; fix the file
    or the override and load again.
    """


class EngineNotRunning(ShmEngineError):
    """Raised when attaching to an engine whose segment does not exist.

    Start it with ``shm-engine run --name NAME`` or check the name.
    """


class EngineAlreadyRunning(ShmEngineError):
    """Raised by segment creation when a live engine already owns the name.

    Stop that engine (its pid is in the message) or pick another ``--name``.
    """


class LayoutMismatch(ShmEngineError):
    """Raised when attaching to a segment written by another layout version.

    The engine and its clients must come from compatible releases; restart the
    engine or upgrade the client.
    """
