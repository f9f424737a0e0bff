"""EventReader: the engine's event log (node state changes, and why), read from shared memory.

The tick worker appends one event per state change of a node to a ring in
the segment ``/NAME.events`` (`shm_engine.core.events`).  A reader maps it
read-only and copies entries out; it never slows the tick and never waits
for it.  Events are numbered 1, 2, ...; a reader keeps the number of the
last event it has seen and asks for those after it::

    events = EventReader.attach("dfps")
    batch = events.read(0)            # everything still in the ring
    for ev in batch.events:           # Event(seq, epoch, tick_wall, node, slot,
        print(ev.node, ev.from_state, ev.to_state, ev.reason)   # gen, ...)
    batch = events.read(batch.next_seq)   # only what came since

The ring keeps the newest ``[events] capacity`` events.  A reader that falls
further behind loses the oldest ones: ``batch.lost`` counts them (an entry
overwritten while it was being copied is lost too, never returned torn).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from shm_engine.core.events import Event, EventBatch, EventSegment, read_events
from shm_engine.core.runtime import DEFAULT_NAME
from shm_engine.core.segment import process_alive

__all__ = ["EventReader", "Event", "EventBatch"]


class EventReader:
    """Read-only client of an engine's event log.  Build with `attach`."""

    def __init__(self, segment: EventSegment):
        self._seg = segment

    @classmethod
    def attach(cls, name: str = DEFAULT_NAME, *, owner: int | str | None = None) -> EventReader:
        """Map engine ``name``'s event log read-only.  ``owner`` as for
        `ScoreReader.attach`.  Raises EngineNotRunning if there is none,
        UntrustedSegment, LayoutMismatch."""
        return cls(EventSegment.attach(name, readonly=True, owner=owner))

    def close(self) -> None:
        self._seg.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def capacity(self) -> int:
        """Events the ring keeps."""
        return int(self._seg.layout.capacity)

    @property
    def head(self) -> int:
        """The number of the newest event (0: none yet)."""
        return int(self._seg.views.header.head[0])

    def read(
        self, after_seq: int = 0, *, node: str | None = None, limit: int | None = None
    ) -> EventBatch:
        """The events numbered above ``after_seq``, oldest first: an
        `EventBatch` ``(events, lost, next_seq)``; pass ``next_seq`` as
        ``after_seq`` next time.  ``node``: only that node's events;
        ``limit``: at most that many events considered (the rest come with
        the next read).  Never blocks."""
        return read_events(self._seg.views, after_seq, limit, node)

    def follow(
        self,
        after_seq: int | None = None,
        *,
        node: str | None = None,
        poll_s: float = 0.05,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[EventBatch]:
        """Yield a batch each time new events arrive (or some were lost),
        polling every ``poll_s`` seconds, until ``should_stop()`` is true or
        the engine that writes the log has stopped.  ``after_seq`` None:
        start at the newest event (only what comes next)."""
        seq = self.head if after_seq is None else after_seq
        h = self._seg.views.header
        next_check = 0.0
        while should_stop is None or not should_stop():
            batch = self.read(seq, node=node)
            seq = batch.next_seq
            if batch.events or batch.lost:
                yield batch
                continue
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1.0
                if not process_alive(int(h.creator_pid[0]), int(h.creator_start[0])):
                    return  # the engine is gone: no event will come
            time.sleep(poll_s)


def format_event(ev: Event) -> str:
    """One line for a terminal: time, tick, node, transition, reason."""
    stamp = (
        time.strftime("%H:%M:%S", time.localtime(ev.tick_wall))
        + f".{int(ev.tick_wall * 1000) % 1000:03d}"
    )
    return (
        f"{stamp} #{ev.seq} epoch {ev.epoch} {ev.node or '?'} (slot {ev.slot}) "
        f"{ev.from_state} -> {ev.to_state}: {ev.reason}"
    )
