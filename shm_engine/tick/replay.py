"""`shm-engine replay`: the scoring pipeline on a logical clock.

A trace is JSON lines, each a heartbeat object plus ``"tick": k`` (it arrives
just before tick k), or ``{"tick": k}`` alone to extend the run.  Replay uses
the live engine's own code for everything that decides a number: heartbeat
validation (`wire.jsondecode.check_heartbeat`), the registry (lowest free slot,
forgetting), the row writer and the consistent gather (`rows.write_rows`,
`rows.gather`), and the kernels.  Only the clock differs: times are tick
numbers, and ages are ``((k - a) * tick_interval_ms) / 1000``, exact in ticks
(SCORING.md, Replay).

The mapping is private (anonymous mmap): no shared memory, no sockets.
"""

from __future__ import annotations

import json
import mmap
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np

from kernels.columns import make_inputs
from kernels.pipeline import tick_radix
from kernels.ranking import make_rank_scratch

from shm_engine.core.config import Config
from shm_engine.core.errors import ShmEngineError
from shm_engine.core.layout import SegmentViews, layout_for
from shm_engine.core.registry import NodeRegistry, decode_id
from shm_engine.core.states import STATE_NAMES
from shm_engine.core.rows import column_addresses, gather, write_rows
from shm_engine.wire.encode import node_key
from shm_engine.wire.jsondecode import check_heartbeat


class TraceError(ShmEngineError, ValueError):
    """Raised by replay for a trace line that is not a trace line at all
    (not JSON, no integer ``tick``, ticks going backwards).  The message
    gives the line number; fix the trace.  Invalid *heartbeats* are not
    errors: they are rejected and counted, as live."""


class Replay:
    """Step-by-step replay state; `replay()` is the usual entry point."""

    def __init__(self, config: Config):
        self.config = config
        cap = config.engine.capacity
        self._mm = mmap.mmap(-1, layout_for(cap).size)
        self.views = SegmentViews(self._mm, layout_for(cap))
        for b in self.views.buffers:
            b.state.state[:] = 255
        self.registry = NodeRegistry(self.views)
        self._columns = column_addresses(self.views.table)   # self.views keeps them mapped
        self.params = config.score.to_params()
        self.inputs = make_inputs(cap)
        self._rank_scratch = make_rank_scratch(cap)
        self.rejects: Counter[str] = Counter()
        self.accepted = 0
        self.tick_no = 0
        self._interval = float(config.engine.tick_interval_ms)
        self._pending: list[dict] = []

    def add(self, hb: dict) -> None:
        """Queue heartbeat object ``hb`` (without ``tick``) for the next tick."""
        self._pending.append(hb)

    def _apply_pending(self, k: int) -> None:
        for obj in self._pending:
            rec, labels, reason, _detail = check_heartbeat(obj)
            if rec is None:
                self.rejects[reason] += 1
                continue
            key = node_key(rec)
            zone = bytes(rec["zone"]).rstrip(b"\0")
            slot = self.registry.get(key)
            if slot < 0:
                slot = self.registry.register(key, zone, labels)
                if slot < 0:
                    self.rejects["registry_full"] += 1
                    continue
            else:
                self.registry.set_meta(slot, zone, labels)
            write_rows(self._columns, self.config.engine.capacity, np.array([slot], np.int64),
                       np.atleast_1d(rec), float(k))
            self.accepted += 1
        self._pending.clear()

    def step(self) -> list[dict]:
        """Compute the next tick; return its records (slot order)."""
        k = self.tick_no
        cfg = self.config.engine
        # Order within a tick (SCORING.md): forgetting, then the heartbeats.
        self.registry.forget_older_than(float(k), cfg.forget_after_s, self._interval, 1000.0)
        self._apply_pending(k)
        prev = self.views.buffers[k & 1]
        nxt = self.views.buffers[(k + 1) & 1]
        hwm = self.registry.hwm
        gather(self.views, prev, nxt, self.inputs, float(k), self._interval, 1000.0, hwm)
        # The tick worker's own kernel (`Ticker.tick`), ranking included.
        n_ranked, pressure, _live = tick_radix(self.params, self.inputs, prev.state,
                                               nxt.state, nxt.out, self._rank_scratch)
        self.tick_no += 1
        return self._records(k, nxt, int(n_ranked), float(pressure), hwm)

    def _records(self, k: int, buf, n_ranked: int, pressure: float, hwm: int) -> list[dict]:
        rank = {int(s): i + 1 for i, s in enumerate(buf.out.ranked[:n_ranked])}
        st, out = buf.state, buf.out
        node_id = self.views.registry.node_id
        recs = []
        for s in np.flatnonzero(self.inputs.active[:hwm]):
            s = int(s)
            recs.append({
                "tick": k,
                "node": decode_id(node_id[s]).decode("utf-8"),
                "slot": s,
                "score": float(out.score[s]),
                "raw": float(out.raw[s]),
                "state": STATE_NAMES[int(st.state[s])],
                "wait": float(out.wait[s]),
                "qema": float(st.qema[s]),
                "liveness": float(out.liveness[s]),
                "pressure": pressure,
                "rank": rank.get(s),
            })
        return recs


def _parse(lines: Iterable[str | dict]) -> Iterator[tuple[int, dict]]:
    last = -1
    for lineno, line in enumerate(lines, 1):
        if isinstance(line, dict):
            obj = dict(line)
        else:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:
                raise TraceError(f"trace line {lineno}: not JSON ({err})") from err
            if not isinstance(obj, dict):
                raise TraceError(f"trace line {lineno}: not a JSON object")
        tick = obj.pop("tick", None)
        if isinstance(tick, bool) or not isinstance(tick, int) or tick < 0:
            raise TraceError(f"trace line {lineno}: 'tick' must be an integer >= 0, got {tick!r}")
        if tick < last:
            raise TraceError(f"trace line {lineno}: tick {tick} after tick {last}; "
                             "trace lines must be in non-decreasing tick order")
        last = tick
        yield tick, obj


def replay(lines: Iterable[str | dict], config: Config | None = None,
           ticks: int | None = None) -> Iterator[dict]:
    """Replay a trace; yield one record per registered node per tick.

    Runs ticks 0 .. the last tick named, or 0 .. ``ticks - 1`` when given
    (heartbeats for later ticks are ignored)."""
    rp = Replay(config or Config())
    last_named = -1
    for tick, obj in _parse(lines):
        if ticks is not None and tick >= ticks:
            continue  # still parsed: a malformed later line is still an error
        while rp.tick_no < tick:
            yield from rp.step()
        last_named = tick
        if obj:
            rp.add(obj)
    end = ticks if ticks is not None else last_named + 1
    while rp.tick_no < end:
        yield from rp.step()
