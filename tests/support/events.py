"""Self-describing events for tests of the event log and its readers.

`put` appends events whose every field is a function of their sequence
number (node ``n<seq>``, generation ``7 * seq``, from ``seq % 5`` to
``(seq + 1) % 5``, reason hysteresis), so `check` can tell a torn,
misplaced or mislabelled event from a right one.  `private_ring` is a
ring in anonymous memory, for tests of one process.
"""

from __future__ import annotations

import mmap

import numpy as np

from kernels import reasons as R
from shm_engine.core.events import append_events
from shm_engine.core.layout import EventsViews, events_layout_for
from shm_engine.core.states import STATE_NAMES

__all__ = ["check", "private_ring", "put"]


def private_ring(capacity: int) -> EventsViews:
    layout = events_layout_for(capacity)
    return EventsViews(mmap.mmap(-1, layout.size), layout)


def put(views: EventsViews, n: int, names: np.ndarray | None = None, node: str = "") -> int:
    """Append ``n`` self-describing events (see `check`); returns the head.
    ``names``: a work array of at least ``n`` rows of 64 bytes (made if
    None); ``node``: name them all so instead (`check` no longer applies)."""
    head = int(views.header.head[0])
    rows = np.arange(n)
    seqs = head + 1 + rows
    if names is None:
        names = np.zeros((n, 64), np.uint8)
    names[:n] = 0
    for k, s in enumerate(seqs.tolist()):
        raw = (node or f"n{s}").encode()
        names[k, : len(raw)] = np.frombuffer(raw, np.uint8)
    return int(
        append_events(
            n,
            rows.astype(np.uint32),
            (seqs * 7).astype(np.uint64),
            (seqs % 5).astype(np.uint8),
            ((seqs + 1) % 5).astype(np.uint8),
            np.full(n, R.HYSTERESIS, np.uint8),
            head + 1,
            float(head) * 0.5,
            names,
            np.zeros((n, 64), np.uint8),
            np.zeros(n, np.uint64),
            views.header.head,
            views.seq,
            views.epoch,
            views.tick_wall,
            views.gen,
            views.slot,
            views.from_state,
            views.to_state,
            views.reason,
            views.node,
        )
    )


def check(ev) -> None:
    """An event written by `put` describes its own sequence number."""
    s = ev.seq
    assert ev.node == f"n{s}"
    assert ev.gen == 7 * s
    assert ev.reason == "hysteresis"
    assert (ev.from_state, ev.to_state) == (STATE_NAMES[s % 5], STATE_NAMES[(s + 1) % 5])
