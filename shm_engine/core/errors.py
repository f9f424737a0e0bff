"""Exceptions, named from the caller's side.

Hot paths (the tick, the ingest loop) return status values; these are raised by
setup (loading configuration, creating or attaching a segment) and by a
scheduler's `clients.ScoreReader` calls, where there is no value to return.
Each docstring says who raises it and what to do.
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


class EngineStopped(EngineNotRunning):
    """Raised by `ScoreReader` calls when the engine that published the
    mapped segment has stopped: it is shutting down (or shut down), or its
    supervisor died.  No tick will ever be published there again.

    Attach again once the engine runs (a new ``run`` makes a new segment), or
    fall back.  ``score``, ``state`` and ``top`` serve a node from their fast
    path without asking; they raise this once ``is_stale``, ``engine_alive``
    or any slow path has seen the engine gone.
    """


class UntrustedSegment(ShmEngineError):
    """Raised when a segment with the engine's name is not the engine's: it
    is owned by another user than expected, or others may write it.

    Raised by attach (readers, status, the engine's children) and by ``run``
    when the name is taken (squatted).  The message names the owner and the
    mode.  Remove the segment if it is not an engine of yours, pick another
    ``--name``, or give the engine's user as ``owner`` when attaching to an
    engine that runs as another user.
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


class NothingPublished(ShmEngineError):
    """Raised by `ScoreReader` calls (``score``, ``state``, ``top``, ``pick``,
    ``snapshot``) before the engine has published its first tick.

    Not a fault: the engine publishes a tick interval after start. Wait until
    ``reader.epoch > 0``, or catch this and try again.
    """


class UnknownNode(ShmEngineError, KeyError):
    """Raised by `ScoreReader.score` and ``state`` when the latest published
    tick has no score for the node: it never sent an accepted heartbeat, was
    forgotten after a silence, is misspelt, or registered after that tick.

    ``node`` names it (so does the message). Check the name; a node that has
    just started sending is scored from the next tick. A ``KeyError``, so
    mapping-style callers keep working.
    """

    def __init__(self, node: str, message: str):
        super().__init__(node, message)
        self.node = node

    def __str__(self) -> str:
        return self.args[1]  # KeyError would print the repr of args


class ReadContention(ShmEngineError):
    """Raised by `ScoreReader.score`, ``state`` and ``snapshot`` when the engine
    published faster than the reader could copy on every retry, and the reader
    holds no earlier copy to serve instead.

    The engine is healthy; this reader is starved of CPU (or the tick interval
    is far below a copy's duration). Try again; if it recurs, give the reader
    more CPU or raise the tick interval. ``ScoreReader.retries_exhausted``
    counts these events, including those served from an earlier copy.
    """


class SnapshotExpired(ShmEngineError):
    """Raised by a `clients.SnapshotView` (``ScoreReader.view()``) used after
    the engine began rewriting its buffer, two ticks after the view's epoch:
    what was read from it since may mix two ticks.

    Not a fault: discard what was computed from the view and take a new one
    (``reader.view()``), or copy what must outlive a tick
    (``view.copy()`` or ``reader.snapshot()``).
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


class Unschedulable(ShmEngineError):
    """Raised by ``Placer.place()`` when no node can take the job now.

    The message counts, per filter, the nodes it eliminated (each node under
    the first filter it failed), e.g. ``0/10000 nodes fit: 7200
    insufficient cpu, 2500 taint gpu=true:NoSchedule, 300 not ready``;
    ``.counts`` holds the same as a dict and ``.explain`` the whole
    `clients.placer.Explanation`.  Retry later (capacity is released as
    jobs end), relax the job's constraints, or add capacity.
    """

    def __init__(self, message: str, counts: dict[str, int] | None = None, explain=None):
        super().__init__(message)
        self.counts = counts or {}
        self.explain = explain


class ReservationLimitReached(ShmEngineError):
    """Raised by ``Placer.place()`` when this process holds ``[placement]
    max_reservations`` open reservations already.

    Release placements as their jobs end (``Placement.release``), or raise
    the limit and restart the engine.
    """
