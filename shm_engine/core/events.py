"""The event log: a ring of state changes in shared memory, one writer, readers never wait.

The tick worker appends one entry per state change of a node (which tick,
which node and slot generation, from, to, and why: `kernels.reasons`) to
the events segment ``/NAME.events`` (`shm_engine.core.layout.events_layout_for`),
which the supervisor creates and unlinks with the others.  Readers map it
read-only and copy entries out; nothing they do can slow the tick.

Sequence numbers.  Events are numbered 1, 2, ... in the order they are
appended; event ``s`` lives in entry ``s % capacity``, so the ring keeps the
latest ``capacity`` events and a newer event overwrites the oldest.  The
header's ``head`` is the number of the last event appended (0: none).

Per-entry validation (a seqlock per entry).  The writer stores an entry's
``seq`` word as ``s << 1 | 1`` before its fields and ``(s << 1) + 2`` after
them, then, once a tick's entries are written, ``head``.  A reader loads
``head``, copies the entries it wants with their ``seq`` words before and
after the copy, and keeps an entry only if both words are ``(s << 1) + 2``
for the ``s`` it expected.  An entry overwritten during the copy (or before)
fails that test: it is *lost*, counted and never returned torn.  A reader
that falls more than ``capacity`` events behind loses the oldest ones the
same way, counted.  The writer never looks at readers.

Memory ordering: the append is jitted, with `shm_engine.core.ordering`'s
release stores and fence (odd ``seq`` before the fields, fields before the
even ``seq``, every entry before ``head``); the reader is numpy copies,
each one call into C, in program order (x86-64 TSO keeps loads in order;
see `shm_engine.core.ordering` for what a weakly ordered CPU would need).

Rules for callers: one writer per segment (the tick worker; the supervisor
starts a new one only after the old one exited).  The log belongs to the
engine's run: a new ``run`` starts it empty.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from kernels.events import transitions
from kernels.reasons import REASON_NAMES, REGISTERED
from shm_engine.core.errors import LayoutMismatch
from shm_engine.core.layout import (
    EVENT_NODE_BYTES,
    EVENTS_LAYOUT_VERSION,
    EVENTS_MAGIC,
    EventsLayout,
    EventsViews,
    events_layout_for,
)
from shm_engine.core.ordering import (
    fence_acquire,
    fence_release,
    load_acquire_u64,
    store_release_u64,
)
from shm_engine.core.segment import (
    EVENTS_SUFFIX,
    SCORES_FORBIDDEN,
    MappedSegment,
    check_identity,
    create_exclusive,
    expected_uid,
    map_existing,
    posix_name,
    stamp_identity,
    unlink_on_error,
)
from shm_engine.core.states import STATE_NAMES

__all__ = [
    "EVENTS_SUFFIX",
    "Event",
    "EventLog",
    "EventSegment",
    "EventBatch",
    "append_events",
    "events_posix_name",
    "read_events",
]


def events_posix_name(name: str) -> str:
    """The POSIX shm name of engine ``name``'s events segment."""
    return posix_name(name) + EVENTS_SUFFIX


class Event(NamedTuple):
    """One state change.  ``from_state``/``to_state`` are lower-case state
    names (``"unregistered"`` for no node), ``reason`` a name of
    `kernels.reasons.REASON_NAMES`; ``tick_wall`` is the tick's unix time."""

    seq: int
    epoch: int
    tick_wall: float
    node: str
    slot: int
    gen: int
    from_state: str
    to_state: str
    reason: str

    def as_dict(self) -> dict:
        return self._asdict()


class EventBatch(NamedTuple):
    """What one read returned: the events in order, how many events the
    reader lost (overwritten before it could copy them), and the sequence
    number to pass as ``after_seq`` next time."""

    events: list[Event]
    lost: int
    next_seq: int


class EventSegment(MappedSegment):
    """A mapped events segment ``/NAME.events`` and its views (``.views``)."""

    views: EventsViews

    def __init__(
        self, name: str, mm, layout: EventsLayout, readonly: bool, owner_uid: int | None = None
    ):
        super().__init__(name, events_posix_name(name), mm, readonly, owner_uid)
        self.layout = layout
        self.views = EventsViews(mm, layout)

    @classmethod
    def create(cls, name: str, capacity: int, *, mode: int = 0o600) -> EventSegment:
        """Create engine ``name``'s events segment, empty (``head`` 0).

        Raises EngineAlreadyRunning if a live engine owns the name,
        UntrustedSegment if a segment that is not this user's holds it,
        ValueError for a bad capacity or mode (nothing created)."""
        layout = events_layout_for(capacity)
        pname = events_posix_name(name)
        mm = create_exclusive(name, pname, layout.size, mode, EVENTS_MAGIC, SCORES_FORBIDDEN)
        seg = cls(name, mm, layout, readonly=False)
        with unlink_on_error(seg, pname):
            h = seg.views.header
            stamp_identity(h, EVENTS_LAYOUT_VERSION, capacity, layout.size)
            h.magic[0] = EVENTS_MAGIC  # last: the segment is now valid
        return seg

    @classmethod
    def attach(
        cls, name: str, *, readonly: bool = True, owner: int | str | None = None
    ) -> EventSegment:
        """Map engine ``name``'s events segment.  ``owner`` as for
        `shm_engine.core.segment.Segment.attach`.  Raises EngineNotRunning
        if there is none, UntrustedSegment, LayoutMismatch."""
        pname = events_posix_name(name)
        uid = expected_uid(owner)
        mm, size = map_existing(name, pname, readonly, "engine.shm_mode", uid, SCORES_FORBIDDEN)
        try:
            capacity = check_identity(
                name, pname, mm, EVENTS_MAGIC, EVENTS_LAYOUT_VERSION, "events"
            )
            layout = events_layout_for(capacity)
            if layout.size != size:
                raise LayoutMismatch(
                    f"engine {name!r}: events segment is {size} bytes, layout for "
                    f"capacity {capacity} needs {layout.size}"
                )
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, layout, readonly, uid)


# ------------------------------------------------------------------ writer --
@njit(cache=True)
def append_events(
    n,
    ev_slot,
    ev_gen,
    ev_from,
    ev_to,
    ev_reason,
    epoch,
    tick_wall,
    names,
    reg_node_id,
    reg_slot_gen,
    head,
    seq,
    r_epoch,
    r_wall,
    r_gen,
    r_slot,
    r_from,
    r_to,
    r_reason,
    r_node,
):
    """Append the ``n`` rows of `kernels.events.transitions` as events of
    tick ``epoch``; returns the new head.

    ``names`` (u1[capacity, 64], the writer's private copy of each slot's
    node id) is refreshed from the registry (``reg_node_id``) for each
    REGISTERED row whose generation the registry still holds; every other
    row names the node the slot held, so a node that was forgotten is named
    too.  Ordering: see the module docstring."""
    cap = seq.shape[0]
    s = np.int64(load_acquire_u64(head, 0))
    width = names.shape[1]
    for k in range(n):
        slot = ev_slot[k]
        if ev_reason[k] == REGISTERED:
            g = ev_gen[k]
            for b in range(width):
                names[slot, b] = reg_node_id[slot, b]
            # The id is the registration's only if the generation did not move:
            # the copy's loads before the re-check (pairs with the ingest's
            # fence_release in rows.slot_change_begin).
            fence_acquire()
            if load_acquire_u64(reg_slot_gen, slot) != g:
                for b in range(width):
                    names[slot, b] = 0
        s += 1
        i = s % cap
        store_release_u64(seq, i, np.uint64((s << 1) | 1))
        fence_release()  # the odd word before the fields; pairs with the reader's second load
        r_epoch[i] = epoch
        r_wall[i] = tick_wall
        r_gen[i] = ev_gen[k]
        r_slot[i] = slot
        r_from[i] = ev_from[k]
        r_to[i] = ev_to[k]
        r_reason[i] = ev_reason[k]
        for b in range(width):
            r_node[i, b] = names[slot, b]
        # The fields before the even word; pairs with the reader's first load.
        store_release_u64(seq, i, np.uint64((s << 1) + 2))
    # Every entry before head; pairs with the reader's load of head.
    store_release_u64(head, 0, np.uint64(s))
    return s


class EventLog:
    """The tick worker's side: diff a tick's buffers and append its events.

    ``views``: the events segment's views (or None: no log, `append` does
    nothing).  Work arrays are private and allocated once."""

    def __init__(self, views: EventsViews | None, capacity: int, registry=None):
        self.views = views
        cap = capacity
        self._slot = np.zeros(2 * cap, np.uint32)
        self._gen = np.zeros(2 * cap, np.uint64)
        self._from = np.zeros(2 * cap, np.uint8)
        self._to = np.zeros(2 * cap, np.uint8)
        self._reason = np.zeros(2 * cap, np.uint8)
        self.names = np.zeros((cap, EVENT_NODE_BYTES), np.uint8)
        if registry is not None:
            # A restarted writer names the nodes registered before it started.
            self.names[:] = registry.node_id[:cap]

    def append(self, prev, nxt, fresh: np.ndarray, registry, hwm: int, epoch: int) -> int:
        """Append the state changes between score buffers ``prev`` and ``nxt``
        (the tick just computed, epoch ``epoch``); returns how many."""
        v = self.views
        if v is None:
            return 0
        n = transitions(
            prev.state.state,
            nxt.state.state,
            fresh,
            nxt.out.reason,
            prev.gen,
            nxt.gen,
            hwm,
            self._slot,
            self._gen,
            self._from,
            self._to,
            self._reason,
        )
        if n:
            append_events(
                n,
                self._slot,
                self._gen,
                self._from,
                self._to,
                self._reason,
                epoch,
                float(nxt.tick_wall[0]),
                self.names,
                registry.node_id,
                registry.slot_gen,
                v.header.head,
                v.seq,
                v.epoch,
                v.tick_wall,
                v.gen,
                v.slot,
                v.from_state,
                v.to_state,
                v.reason,
                v.node,
            )
        return int(n)


def warm_up() -> None:
    """Compile the diff and the append for the dtypes of a live segment."""
    import mmap

    from shm_engine.core.layout import SegmentViews, layout_for

    layout = layout_for(2)
    sv = SegmentViews(mmap.mmap(-1, layout.size), layout)
    el = events_layout_for(4)
    ev = EventsViews(mmap.mmap(-1, el.size), el)
    log = EventLog(ev, 2)
    prev, nxt = sv.buffers
    prev.state.state[:] = 255
    nxt.state.state[:] = 0
    log.append(prev, nxt, np.ones(2, np.uint8), sv.registry, 2, 1)


# ------------------------------------------------------------------ reader --
_STATE = STATE_NAMES


def _named(names: np.ndarray, node: str) -> np.ndarray:
    """Which rows of NUL-padded ids ``names`` (u1[n, 64]) are exactly ``node``
    (vectorised: a ring of 65,536 entries is filtered in about a millisecond)."""
    key = node.encode("utf-8", "surrogatepass")
    width = names.shape[1]
    if not key or len(key) >= width:
        return np.zeros(names.shape[0], bool)
    want = np.zeros(width, np.uint8)
    want[: len(key)] = np.frombuffer(key, np.uint8)
    if width % 8 == 0 and names.flags.c_contiguous:
        # Eight bytes at a time: the ids as words.
        return (names.view(np.uint64) == want.view(np.uint64)).all(axis=1)
    return (names == want).all(axis=1)


def read_events(
    views: EventsViews, after_seq: int, limit: int | None = None, node: str | None = None
) -> EventBatch:
    """The events numbered above ``after_seq`` that are still in the ring
    (at most ``limit`` of them, the oldest first), as one `EventBatch`.

    ``lost`` counts the events above ``after_seq`` that were overwritten
    before they could be copied (and any older than one that was: the
    events returned are always one run, right after the lost ones);
    ``next_seq`` is the number of the last event considered (pass it as
    ``after_seq`` next time).  ``node``: keep only that node's events (the
    others still advance ``next_seq``).  Never blocks and never raises on
    what it reads."""
    if after_seq < 0:
        raise ValueError(f"after_seq = {after_seq!r} must be >= 0")
    h = views.header
    cap = int(views.layout.capacity)
    # Pairs with the release store of head in append_events.
    head = int(h.head[0])
    if head <= after_seq:
        # Nothing new; a number beyond head (from an earlier run) restarts at head.
        return EventBatch([], 0, head)
    first = max(after_seq + 1, head - cap + 1)
    lost = first - (after_seq + 1)
    last = head if limit is None else min(head, first + max(int(limit), 0) - 1)
    if last < first:
        return EventBatch([], lost, first - 1)
    seqs = np.arange(first, last + 1, dtype=np.uint64)
    idx = (seqs % np.uint64(cap)).astype(np.int64)
    before = views.seq[idx]  # fancy indexing copies
    cols = (
        views.epoch[idx],
        views.tick_wall[idx],
        views.gen[idx],
        views.slot[idx],
        views.from_state[idx],
        views.to_state[idx],
        views.reason[idx],
        views.node[idx],
    )
    after = views.seq[idx]  # after the copies: a changed word means torn
    want = (seqs << np.uint64(1)) + np.uint64(2)
    ok = (before == want) & (after == want)
    torn = np.flatnonzero(~ok)
    if torn.shape[0]:
        # The writer overwrites the oldest first, but numpy's copies promise
        # no load order: an older entry can pass its check beside a newer
        # torn one.  Drop everything up to the last torn entry, so what is
        # returned is always one run, right after what was lost.
        ok[: int(torn[-1]) + 1] = False
    lost += int((~ok).sum())
    epoch, wall, gen, slot, frm, to, reason, names = cols
    keep = ok
    if node is not None:
        keep = ok & _named(names, node)
    rows = np.flatnonzero(keep)
    if rows.shape[0] == 0:
        return EventBatch([], lost, last)
    # Whole columns to Python values at once (a numpy scalar each costs ~100 ns).
    raw = np.ascontiguousarray(names[rows]).tobytes()
    width = names.shape[1]
    n_reasons = len(REASON_NAMES)
    events = [
        Event(
            s,
            e,
            w,
            raw[k * width : (k + 1) * width].split(b"\0", 1)[0].decode("utf-8", "replace"),
            sl,
            g,
            _STATE.get(f, str(f)),
            _STATE.get(t, str(t)),
            REASON_NAMES[r] if r < n_reasons else str(r),
        )
        for k, (s, e, w, sl, g, f, t, r) in enumerate(
            zip(
                seqs[rows].tolist(),
                epoch[rows].tolist(),
                wall[rows].tolist(),
                slot[rows].tolist(),
                gen[rows].tolist(),
                frm[rows].tolist(),
                to[rows].tolist(),
                reason[rows].tolist(),
                strict=True,
            )
        )
    ]
    return EventBatch(events, lost, last)
