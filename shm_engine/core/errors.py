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


class SchedulerLimitReached(ShmEngineError):
    """Raised by ``claim()`` when every scheduler lease of the engine is held.

    Each process that claims holds one of ``[claims] max_schedulers`` leases
    until it exits (a dead holder's lease is freed within a second).  Stop a
    scheduler process, or raise the limit and restart the engine.
    """


class LeaseRevoked(ShmEngineError):
    """Raised by ``claim()`` when the engine took this process's lease back.

    The engine frees the lease of a process it sees as dead, returning its
    open claims; a live process loses its lease only if the engine cannot see
    it (another pid namespace).  Its earlier claims release as stale; the
    next ``claim()`` takes a new lease.  Run schedulers where the engine can
    see their pids.
    """


class ClaimAlreadyReleased(ShmEngineError):
    """Raised by ``Claim.release()`` on a claim that was already released.

    Each claim is released exactly once (a ``with`` block does it for you on
    exit); releasing twice would count one job's outcome twice.
    """
