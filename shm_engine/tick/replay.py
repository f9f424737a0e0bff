"""`shm-engine replay`: the scoring pipeline on a logical clock.

A trace is JSON lines (docs/scoring.md, Replay), each with an integer
``"tick": k``: a heartbeat object (it arrives just before tick k), a
scheduler feedback line ``{"tick": k, "feedback": NODE, "rif": R, "ok": A,
"err": B, "consec": C}``, or ``{"tick": k}`` alone to extend the run.
Replay uses the live engine's own code for everything that decides a
number: heartbeat validation (`wire.jsondecode.check_heartbeat`), the registry (lowest
free slot, forgetting), the row writer and the consistent gather
(`rows.write_rows`, `rows.gather`), and the kernels (`kernels.tick`).  Only
the clock and the source of the feedback differ: times are tick numbers,
ages are ``((k - a) * tick_interval_ms) / 1000``, exact in ticks, and the
feedback columns the live tick reads from the claims segment come from the
trace's feedback lines (``err_age`` from the tick of the latest line with
``err > 0``, the same way).

Per tick k: forgetting (a forgotten node's feedback is reset with its
slot), the heartbeats of k in file order, the feedback lines of k in file
order (a line for a node that is not registered then is ignored), the tick;
``fb_ok`` and ``fb_err`` start from 0 again after every tick.

The mapping is private (anonymous mmap): no shared memory, no sockets.
"""

from __future__ import annotations

import json
import mmap
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

import kernels
from kernels.columns import make_inputs
from shm_engine.core.config import Config
from shm_engine.core.errors import ShmEngineError
from shm_engine.core.layout import SegmentViews, layout_for
from shm_engine.core.registry import NodeRegistry, decode_id
from shm_engine.core.rows import column_addresses, gather, write_rows
from shm_engine.core.states import STATE_NAMES
from shm_engine.wire.encode import node_key
from shm_engine.wire.jsondecode import check_heartbeat


class TraceError(ShmEngineError, ValueError):
    """Raised by replay for a trace line that is not a trace line at all
    (not JSON, no integer ``tick``, ticks going backwards, a malformed
    feedback line).  The message gives the line number; fix the trace.
    Invalid *heartbeats* are not errors: they are rejected and counted, as
    live."""


#: The key that makes a trace line a feedback line, and its optional values.
FEEDBACK_KEY = "feedback"
FEEDBACK_VALUES = ("rif", "ok", "err", "consec")
# Feedback values are counts kept as float64 columns: exact up to 2**53.
MAX_FEEDBACK_VALUE = 2**53


class FeedbackLine(NamedTuple):
    """A validated feedback line; None for an absent ``rif`` or ``consec``
    (the node keeps its value), 0 for an absent ``ok`` or ``err``."""

    node: str
    rif: int | None
    ok: int
    err: int
    consec: int | None


def parse_feedback(obj: dict, lineno: int) -> FeedbackLine:
    """Validate feedback line ``obj`` (without ``tick``); TraceError if it has
    a key other than ``feedback`` and `FEEDBACK_VALUES`, a ``feedback`` that
    is not a string, or a value that is not an integer in [0, 2**53]."""
    unknown = sorted(set(obj) - {FEEDBACK_KEY, *FEEDBACK_VALUES})
    if unknown:
        raise TraceError(f"trace line {lineno}: feedback line with unknown keys {unknown}")
    node = obj[FEEDBACK_KEY]
    if not isinstance(node, str):
        raise TraceError(f"trace line {lineno}: 'feedback' must be a node id string, got {node!r}")
    values: dict[str, int | None] = {}
    for key in FEEDBACK_VALUES:
        v = obj.get(key)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_FEEDBACK_VALUE
        ):
            raise TraceError(
                f"trace line {lineno}: feedback {key!r} must be an integer in 0..2**53, got {v!r}"
            )
        values[key] = v
    return FeedbackLine(
        node, values["rif"], values["ok"] or 0, values["err"] or 0, values["consec"]
    )


class Replay:
    """Step-by-step replay state; `replay()` is the usual entry point.

    ``params`` (the kernels' parameter vector, `Config.to_params`) may be
    replaced between two `step` calls: the ticks from then on are computed
    with it, as the engine does from the tick after a reload."""

    def __init__(self, config: Config):
        self.config = config
        cap = config.engine.capacity
        self._mm = mmap.mmap(-1, layout_for(cap).size)
        self.views = SegmentViews(self._mm, layout_for(cap))
        for b in self.views.buffers:
            b.state.state[:] = 255
        self.registry = NodeRegistry(self.views)
        self._columns = column_addresses(self.views.table)  # self.views keeps them mapped
        self.params = config.to_params()
        self.inputs = make_inputs(cap)
        self._scratch = kernels.make_scratch(cap)
        self.rejects: Counter[str] = Counter()
        self.accepted = 0
        self.ignored_feedback = 0
        self.tick_no = 0
        self._interval = float(config.engine.tick_interval_ms)
        self._pending: list[dict] = []
        self._pending_feedback: list[FeedbackLine] = []
        # Scheduler feedback per slot, as the trace set it: rif and consec
        # persist, fb_ok/fb_err are this tick's, err_tick is the tick of the
        # latest error (-1: none).  Zero for a slot without a node.
        self._rif = np.zeros(cap, np.float64)
        self._consec = np.zeros(cap, np.float64)
        self._fb_ok = np.zeros(cap, np.float64)
        self._fb_err = np.zeros(cap, np.float64)
        self._err_tick = np.full(cap, -1, np.int64)

    def add(self, hb: dict) -> None:
        """Queue heartbeat object ``hb`` (without ``tick``) for the next tick."""
        self._pending.append(hb)

    def add_feedback(self, fb: FeedbackLine) -> None:
        """Queue feedback line ``fb`` for the next tick (applied after its
        heartbeats)."""
        self._pending_feedback.append(fb)

    def _reset_feedback(self, slots) -> None:
        for arr in (self._rif, self._consec, self._fb_ok, self._fb_err):
            arr[slots] = 0.0
        self._err_tick[slots] = -1

    def _apply_feedback(self, k: int) -> None:
        for fb in self._pending_feedback:
            slot = self.registry.get(fb.node.encode("utf-8", "surrogatepass"))
            if slot < 0:
                self.ignored_feedback += 1
                continue
            if fb.rif is not None:
                self._rif[slot] = fb.rif
            if fb.consec is not None:
                self._consec[slot] = fb.consec
            self._fb_ok[slot] += fb.ok
            self._fb_err[slot] += fb.err
            if fb.err > 0:
                self._err_tick[slot] = k
        self._pending_feedback.clear()

    def _feedback_inputs(self, k: int, hwm: int) -> None:
        """The feedback columns of the tick inputs for tick ``k``."""
        inp = self.inputs
        inp.rif[:hwm] = self._rif[:hwm]
        inp.consec[:hwm] = self._consec[:hwm]
        inp.fb_ok[:hwm] = self._fb_ok[:hwm]
        inp.fb_err[:hwm] = self._fb_err[:hwm]
        err_tick = self._err_tick[:hwm]
        ticks = (k - err_tick).astype(np.float64)
        # err_age = ((k - e) * tick_interval_ms) / 1000, as ages are.
        inp.err_age[:hwm] = np.where(err_tick >= 0, (ticks * self._interval) / 1000.0, np.inf)

    def _apply_pending(self, k: int) -> None:
        for obj in self._pending:
            rec, labels, reason, _detail = check_heartbeat(obj)
            if rec is None:
                assert reason is not None  # a rejected heartbeat has its reason
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
            write_rows(
                self._columns,
                self.config.engine.capacity,
                np.array([slot], np.int64),
                np.atleast_1d(rec),
                float(k),
            )
            self.accepted += 1
        self._pending.clear()

    def step(self) -> list[dict]:
        """Compute the next tick; return its records (slot order)."""
        k = self.tick_no
        cfg = self.config.engine
        # Order within a tick: forgetting, the heartbeats, the feedback.
        forgotten = self.registry.forget_older_than(
            float(k), cfg.forget_after_s, self._interval, 1000.0
        )
        self._reset_feedback(forgotten)
        self._apply_pending(k)
        self._apply_feedback(k)
        prev = self.views.buffers[k & 1]
        nxt = self.views.buffers[(k + 1) & 1]
        hwm = self.registry.hwm
        gather(self.views, prev, nxt, self.inputs, float(k), self._interval, 1000.0, hwm)
        self._feedback_inputs(k, hwm)
        # The tick worker's own kernel (`Ticker.score`), ranking included.
        n_ranked, pressure, _live = kernels.tick(
            self.params, self.inputs, prev.state, nxt.state, nxt.out, self._scratch
        )
        self._fb_ok[:hwm] = 0.0
        self._fb_err[:hwm] = 0.0
        self.tick_no += 1
        return self._records(k, nxt, int(n_ranked), float(pressure), hwm)

    def _records(self, k: int, buf, n_ranked: int, pressure: float, hwm: int) -> list[dict]:
        rank = {int(s): i + 1 for i, s in enumerate(buf.out.ranked[:n_ranked])}
        st, out = buf.state, buf.out
        node_id = self.views.registry.node_id
        recs = []
        for active in np.flatnonzero(self.inputs.active[:hwm]):
            s = int(active)
            recs.append(
                {
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
                }
            )
        return recs


def _parse(lines: Iterable[str | dict]) -> Iterator[tuple[int, dict | FeedbackLine]]:
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
            raise TraceError(
                f"trace line {lineno}: tick {tick} after tick {last}; "
                "trace lines must be in non-decreasing tick order"
            )
        last = tick
        yield tick, parse_feedback(obj, lineno) if FEEDBACK_KEY in obj else obj


def replay(
    lines: Iterable[str | dict], config: Config | None = None, ticks: int | None = None
) -> Iterator[dict]:
    """Replay a trace; yield one record per registered node per tick.

    Runs ticks 0 .. the last tick named, or 0 .. ``ticks - 1`` when given
    (heartbeats and feedback for later ticks are ignored, but still
    checked: a malformed later line raises TraceError)."""
    rp = Replay(config or Config())
    last_named = -1
    for tick, obj in _parse(lines):
        if ticks is not None and tick >= ticks:
            continue  # still parsed: a malformed later line is still an error
        while rp.tick_no < tick:
            yield from rp.step()
        last_named = tick
        if isinstance(obj, FeedbackLine):
            rp.add_feedback(obj)
        elif obj:
            rp.add(obj)
    end = ticks if ticks is not None else last_named + 1
    while rp.tick_no < end:
        yield from rp.step()
