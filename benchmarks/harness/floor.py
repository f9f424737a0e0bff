"""The memory floor of a tick: the bytes one tick must move per node, and a copy of them.

A tick reads every column it needs once and writes every column it
publishes or carries once; nothing it computes can be cheaper than moving
those bytes.  `tick_columns` lists them by name and width, taken from the
layouts (`shm_engine.core.layout`), never typed here:

- read, heartbeat table: every column but ``throughput`` and ``ts`` (shown,
  not scored);
- read, registry: ``slot_gen`` and ``registered`` (the registration scored);
- read, claims segment: the node's outcome row (counters, latest error);
  the in-flight words add 8 bytes per scheduler lease in use (none here);
- read, the previous score buffer: the carried state (`kernels.TickState`)
  and the counters the gathers compare against (``gen``, ``hb_seen``,
  ``ok_seen``, ``err_seen``);
- write, the next score buffer: every per-slot column (published and
  carried alike: the whole buffer is rewritten each epoch).

The floor is the time of one ``memcpy`` of that many bytes per node
(`Floor.time`: a numpy copy between two private buffers of ``n * bytes``,
warm, timed in the same run as the ticks).  A copy reads and writes each
byte, so it moves twice the bytes listed: the floor is the cost of touching
every column once from memory into its place, not a bound on arithmetic.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["tick_columns", "bytes_per_node", "Floor", "NOT_SCORED"]

#: Heartbeat table columns the score does not read.
NOT_SCORED = ("throughput", "ts")
_COUNTERS = ("gen", "hb_seen", "ok_seen", "err_seen")


def tick_columns() -> list[tuple[str, str, str, int]]:
    """(direction, region, column, bytes per node) of every column one tick
    touches, in layout order."""
    from kernels.columns import TickState
    from shm_engine.core.layout import OUTCOME_WORDS, claims_layout_for, layout_for

    lay = layout_for(2)  # 2: a per-slot column has shape (2,), a scalar (1,)
    claims = claims_layout_for(1, 1)
    out = []
    for name, f in lay.table.items():
        if name not in NOT_SCORED:
            out.append(("read", "table", name, f.dtype.itemsize))
    for name in ("slot_gen", "registered"):
        out.append(("read", "registry", name, lay.registry[name].dtype.itemsize))
    out.append(("read", "claims", "outcomes", OUTCOME_WORDS * claims.outcomes.dtype.itemsize))
    buf = lay.buffers[0]
    carried = set(TickState._fields) | set(_COUNTERS)
    for name, f in buf.items():
        if name in carried:
            out.append(("read", "prev buffer", name, f.dtype.itemsize))
    for name, f in buf.items():
        if f.shape != (2,):
            continue  # per-tick scalars and vectors, not per node
        out.append(("write", "next buffer", name, f.dtype.itemsize))
    return out


def bytes_per_node() -> dict:
    """{"read": R, "write": W, "total": R + W, "columns": tick_columns()}."""
    cols = tick_columns()
    r = sum(b for d, _reg, _n, b in cols if d == "read")
    w = sum(b for d, _reg, _n, b in cols if d == "write")
    return {"read": r, "write": w, "total": r + w, "columns": cols}


class Floor:
    """A warm copy of ``n * nbytes`` bytes between two private buffers."""

    def __init__(self, n: int, nbytes: int):
        self.src = np.ones(n * nbytes, np.uint8)
        self.dst = np.zeros(n * nbytes, np.uint8)
        np.copyto(self.dst, self.src)  # fault both buffers in

    def time(self) -> float:
        """One copy; µs."""
        t0 = time.perf_counter_ns()
        np.copyto(self.dst, self.src)
        return (time.perf_counter_ns() - t0) / 1e3
