"""Section ``events``: what the event log costs the tick, and what reading it costs.

The tick worker calls `EventLog.append` after every publish: a diff of the
two buffers' states over the used slots (`kernels.events.transitions`) and,
when something changed, the ring append.  Measured here on private buffers
of ``nodes`` slots with no change (the common tick) and with 1 % of the
nodes changing state every tick, and `read_events` of a full batch of 1,000
events (what ``shm-engine events`` and `EventReader.read` do).  The
append is part of every tick: compare it with the tick's median in the
``tick`` section.
"""

from __future__ import annotations

import mmap
import time

import numpy as np

from benchmarks.harness.common import stats
from shm_engine.core.events import EventLog, read_events
from shm_engine.core.events import warm_up as warm_up_events
from shm_engine.core.layout import EventsViews, SegmentViews, events_layout_for, layout_for

__all__ = ["run", "summary"]

EVENTS_CAPACITY = 65536


def _time_us(fn, reps: int) -> dict:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return stats(out)


def run(nodes: int, reps: int, log) -> dict:
    warm_up_events()
    lay = layout_for(nodes)
    sv = SegmentViews(mmap.mmap(-1, lay.size), lay)
    el = events_layout_for(EVENTS_CAPACITY)
    ev = EventsViews(mmap.mmap(-1, el.size), el)
    elog = EventLog(ev, nodes)
    prev, nxt = sv.buffers
    prev.state.state[:] = 0
    nxt.state.state[:] = 0
    fresh = np.zeros(nodes, np.uint8)
    epoch = [0]

    def append():
        epoch[0] += 1
        elog.append(prev, nxt, fresh, sv.registry, nodes, epoch[0])

    res: dict = {"nodes": nodes, "reps": reps}
    res["append_none_us"] = _time_us(append, reps)
    step = 100
    nxt.state.state[::step] = 1  # 1 % of the nodes change state every tick
    res["changes_per_tick"] = len(range(0, nodes, step))
    res["append_1pct_us"] = _time_us(append, reps)
    head = int(ev.header.head[0])
    res["read_1000_us"] = _time_us(lambda: read_events(ev, head - 1000), max(10, reps // 10))
    log(
        f"  events n={nodes}: append {res['append_none_us']['median']:.1f} us (no change), "
        f"{res['append_1pct_us']['median']:.1f} us ({res['changes_per_tick']} changes); "
        f"read 1,000 {res['read_1000_us']['median']:.0f} us"
    )
    return res


def summary(ev: dict) -> tuple[list[str], list[str]]:
    """(table lines, goal lines) of the events section."""
    lines = [f"| event log ({ev['nodes']:,} nodes) | median | p99 |", "|---|---|---|"]
    for key, label in (
        ("append_none_us", "append after a tick, no change"),
        ("append_1pct_us", f"append after a tick, {ev['changes_per_tick']} changes"),
        ("read_1000_us", "read 1,000 events"),
    ):
        lines.append(f"| {label} | {ev[key]['median']:.1f} µs | {ev[key]['p99']:.1f} µs |")
    return lines, []
