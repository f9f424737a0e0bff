"""`shm-engine top`: a live terminal view of a running engine.

Three parts, so the view can be tested without a terminal and reused by
``shm-engine demo``:

- `Watcher` reads the engine: scores through `clients.reader.ScoreReader`
  (the latch), counters from the segment header (mapped read-only, each word
  read once), jobs in flight and outcomes from the claims segment (mapped
  read-only, when the caller may read it).  ``poll()`` returns a `ViewState`:
  plain data, rates computed from the counter deltas between two polls, and the
  nodes whose state changed since the previous poll.
- `render(view_state)` is a pure function from that data to a rich renderable.
- `cmd_top` drives both under ``rich.live.Live``.

Nothing here writes to the segment or opens a socket.  rich is imported only
where something is drawn, so the `Watcher` works without it (``demo
--no-view`` on an install without the ``top`` extra).

When the engine goes away (SIGTERM unlinks the segment; our mapping stays
valid but stops moving) the view says so and waits for an engine of the same
name to come back.  Exit codes: 2 if the engine never existed, 0 on Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shm_engine.core.claims import ClaimsSegment, claims_status, in_flight_by_slot
from shm_engine.core.errors import (
    EngineNotRunning,
    EngineStopped,
    LayoutMismatch,
    NothingPublished,
    ReadContention,
)
from shm_engine.core.segment import Segment, process_alive
from shm_engine.core.states import STATE_NAMES, NodeState
from shm_engine.wire.format import REJECT_REASONS

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from clients.reader import Snapshot

__all__ = ["Watcher", "ViewState", "NodeRow", "StateChange", "render", "cmd_top", "STATE_STYLES"]

#: rich style per state name (also used by the demo's status lines).
STATE_STYLES = {
    "healthy": "green",
    "degraded": "yellow",
    "overloaded": "red",
    "quarantined": "magenta",
    "dead": "grey50",
}
RATE_WINDOW_S = 1.0  # rates are averaged over at least this long
_UNRANKED_NAMES = 5  # node names listed per unranked state
_RECENT_CHANGES = 8  # the "recent state changes" panel keeps this many
_BAR_WIDTH = 10
_BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"


def state_name(value: int) -> str:
    return STATE_NAMES.get(int(value), "unknown")


@dataclass(frozen=True)
class NodeRow:
    """One line of the node table.  ``rank`` is None for an unranked node;
    ``old_state`` is set when the state changed since the previous refresh."""

    rank: int | None
    node: str
    score: float
    state: str
    wait: float
    qema: float
    liveness: float
    old_state: str | None = None
    in_flight: int = 0  # jobs claimed on it and not released


@dataclass(frozen=True)
class StateChange:
    node: str
    old: str
    new: str
    epoch: int
    at: float  # monotonic time the change was seen


@dataclass
class ViewState:
    """Everything `render` draws: plain data, no handles."""

    name: str
    epoch: int = 0
    tick_interval_ms: int = 0
    tick_us_p50: float = 0.0
    tick_us_p99: float = 0.0
    ticks_per_s: float | None = None
    heartbeats_per_s: float | None = None
    accepted_per_s: float | None = None
    pressure: float = 0.0
    weights: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    ejected: int = 0  # nodes ejected for consecutive errors
    registered: int = 0
    ranked: int = 0
    overruns: int = 0
    rows: list[NodeRow] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)  # since the previous refresh
    recent: list[StateChange] = field(default_factory=list)  # last few, newest first
    unranked: dict = field(default_factory=dict)  # state -> a few node names, worst first
    rejects: dict = field(default_factory=dict)  # reason -> total, non-zero only
    heartbeats: int = 0
    accepted: int = 0
    age_s: float | None = None
    claims: dict | None = None  # status's "claims" object; None: not readable
    zones: list = field(default_factory=list)  # a mirror's zones (status's "mirror")
    message: str | None = None  # e.g. "engine went away"
    now: float = 0.0  # monotonic time of the poll


class Watcher:
    """Polls engine ``name`` read-only; ``poll()`` -> `ViewState`.

    ``rows`` bounds the node table: ranked nodes best first, then (if room is
    left) unranked nodes, worst state first, so a small fleet shows every node.
    Raises EngineNotRunning / LayoutMismatch from the constructor if there is
    no engine to attach to."""

    def __init__(self, name: str, rows: int = 25, owner: int | str | None = None):
        from clients.reader import ScoreReader  # clients imports shm_engine: keep lazy

        self.name = name
        self.rows = rows
        self._reader = ScoreReader.attach(name, owner=owner)
        try:
            self._seg = Segment.attach(name, readonly=True, owner=owner)
        except BaseException:
            self._reader.close()
            raise
        self._hdr = self._seg.views.header
        try:
            self._claims: ClaimsSegment | None = ClaimsSegment.attach(
                name, readonly=True, owner=owner
            )
        except (EngineNotRunning, LayoutMismatch):
            self._claims = None
        self._owner = owner
        self._history: deque[tuple] = deque()  # counter samples of the rate window
        self._prev_states: dict[str, str] = {}
        self._recent: deque[StateChange] = deque(maxlen=_RECENT_CHANGES)
        self.snapshot: Snapshot | None = None  # the latest, for callers

    def close(self) -> None:
        self._reader.close()
        self._seg.close()
        if self._claims is not None:
            self._claims.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------- liveness --
    def engine_gone(self, stale_after_s: float) -> str | None:
        """A reason the engine is gone (stopping, supervisor dead, no tick for
        ``stale_after_s``), or None while it runs."""
        h = self._hdr
        if int(h.stopping[0]):
            return "engine is stopping"
        if not process_alive(int(h.creator_pid[0]), int(h.creator_start[0])):
            return "engine process is gone"
        if self._reader.epoch > 0 and self._reader.is_stale(stale_after_s):
            return f"no tick for {self._reader.age_s:.1f} s"
        return None

    # ---------------------------------------------------------------- poll --
    def sample(self):
        """The latest `Snapshot` (also kept in ``self.snapshot``), without
        building a view; None before the first tick."""
        try:
            self.snapshot = self._reader.snapshot()
        except (NothingPublished, ReadContention, EngineStopped):
            pass  # keep the previous one (engine_gone tells a stopped engine)
        return self.snapshot

    def _counters(self) -> tuple:
        h = self._hdr
        return (
            time.monotonic(),
            int(h.ticks[0]),
            int(h.ingest_heartbeats[0]),
            int(h.ingest_accepted[0]),
        )

    def poll(self) -> ViewState:
        h = self._hdr
        now_c = self._counters()
        vs = ViewState(
            name=self.name,
            tick_interval_ms=int(h.tick_interval_ms[0]),
            tick_us_p50=float(h.tick_us_p50[0]),
            tick_us_p99=float(h.tick_us_p99[0]),
            overruns=int(h.overruns[0]),
            heartbeats=now_c[2],
            accepted=now_c[3],
            now=now_c[0],
        )
        # Rates over the last RATE_WINDOW_S at least: heartbeats come in
        # batches, and a window of one fast refresh would make them jump.
        hist = self._history
        while len(hist) > 1 and now_c[0] - hist[1][0] >= RATE_WINDOW_S:
            hist.popleft()
        if hist:
            old = hist[0]
            dt = now_c[0] - old[0]
            if dt > 0:
                vs.ticks_per_s = (now_c[1] - old[1]) / dt
                vs.heartbeats_per_s = (now_c[2] - old[2]) / dt
                vs.accepted_per_s = (now_c[3] - old[3]) / dt
        hist.append(now_c)
        vs.rejects = {
            r: int(h.rejects[i]) for i, r in enumerate(REJECT_REASONS) if int(h.rejects[i])
        }
        from shm_engine.feed.mirror import read_mirror_status  # a mirror's zones, if any

        mirror = read_mirror_status(self.name, self._owner)
        vs.zones = mirror["zones"] if mirror is not None else []
        try:
            snap = self._reader.snapshot()
        except NothingPublished:
            vs.message = "waiting for the first tick"
            return vs
        except ReadContention:
            vs.message = "ticks came faster than this view could copy one; retrying"
            return vs
        except EngineStopped as err:
            vs.message = str(err)
            return vs
        self.snapshot = snap
        vs.epoch = snap.epoch
        vs.pressure = snap.pressure
        vs.weights = dict(snap.weights)
        vs.counts = dict(snap.counts)
        vs.ejected = snap.ejected
        vs.age_s = self._reader.age_s
        self._diff_states(snap, vs)
        in_flight = None
        if self._claims is not None:
            reg, hwm = self._seg.views.registry, int(h.slot_hwm[0])
            cv = self._claims.views
            in_flight = in_flight_by_slot(cv, reg.slot_gen, reg.registered, hwm)
            vs.claims = claims_status(cv, reg.slot_gen, reg.registered, hwm)
        vs.rows = self._rows(snap, {c.node: c.old for c in vs.changes}, in_flight)
        vs.registered = sum(1 for n in snap.nodes if n is not None)
        vs.ranked = len(snap.ranked)
        vs.recent = list(reversed(self._recent))
        vs.unranked = self._unranked(snap)
        return vs

    @staticmethod
    def _unranked(snap, per_state: int = _UNRANKED_NAMES) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for state in (NodeState.DEAD, NodeState.QUARANTINED, NodeState.OVERLOADED):
            slots = [
                s
                for s in range(len(snap.nodes))
                if snap.nodes[s] is not None and int(snap.state[s]) == int(state)
            ]
            if slots:
                out[STATE_NAMES[state]] = sorted(snap.nodes[s] for s in slots)[:per_state]
        return out

    def _diff_states(self, snap, vs: ViewState) -> None:
        states = {}
        first = not self._prev_states
        for slot, node in enumerate(snap.nodes):
            if node is None:
                continue
            new = state_name(snap.state[slot])
            states[node] = new
            old = self._prev_states.get(node)
            if not first and old is not None and old != new:
                change = StateChange(node, old, new, snap.epoch, vs.now)
                vs.changes.append(change)
                self._recent.append(change)
        self._prev_states = states

    def _rows(self, snap, old: dict[str, str], in_flight=None) -> list[NodeRow]:
        def row(slot: int, rank: int | None) -> NodeRow:
            node = snap.nodes[slot]
            jobs = int(in_flight[slot]) if in_flight is not None and slot < len(in_flight) else 0
            return NodeRow(
                rank=rank,
                node=node,
                score=float(snap.score[slot]),
                state=state_name(snap.state[slot]),
                wait=float(snap.wait[slot]),
                qema=float(snap.qema[slot]),
                liveness=float(snap.liveness[slot]),
                old_state=old.get(node),
                in_flight=jobs,
            )

        rows = []
        for rank, slot in enumerate(snap.ranked[: self.rows].tolist(), 1):
            if snap.nodes[slot] is not None:
                rows.append(row(slot, rank))
        if len(rows) < self.rows:
            ranked = set(snap.ranked.tolist())
            rest = [s for s, n in enumerate(snap.nodes) if n is not None and s not in ranked]
            # Worst state first (dead, quarantined, overloaded), then by name.
            rest.sort(key=lambda s: (-int(snap.state[s]), snap.nodes[s]))
            rows.extend(row(s, None) for s in rest[: self.rows - len(rows)])
        return rows


# ------------------------------------------------------------------ render --
def _bar(x: float) -> str:
    x = min(max(x, 0.0), 1.0)
    eighths = round(x * _BAR_WIDTH * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_BAR_EIGHTHS[part] if part else "")
    return text.ljust(_BAR_WIDTH)


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _state_text(state: str, old: str | None = None):
    from rich.text import Text

    t = Text()
    if old is not None:
        t.append(old, style=STATE_STYLES.get(old, ""))
        t.append(" → ", style="bold")
    t.append(state, style=STATE_STYLES.get(state, ""))
    return t


def render(view_state: ViewState):
    """The whole screen for ``view_state`` as a rich renderable (pure)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    vs = view_state
    head = Text()
    head.append(f"shm-engine {vs.name}", style="bold")
    head.append(
        f"  epoch {vs.epoch}  tick every {vs.tick_interval_ms} ms, takes"
        f" p50 {vs.tick_us_p50:,.0f} µs p99 {vs.tick_us_p99:,.0f} µs"
        f"  {_rate(vs.ticks_per_s)} ticks/s  {_rate(vs.heartbeats_per_s)} hb/s"
        + (f"  overruns {vs.overruns}" if vs.overruns else "")
    )
    line2 = Text()
    line2.append(f"pressure {vs.pressure:.3f}  ")
    if vs.weights:
        line2.append("weights " + " ".join(f"{k} {v:.2f}" for k, v in vs.weights.items()))
    line3 = Text(f"{vs.registered} nodes, {vs.ranked} ranked:  ")
    for name in STATE_STYLES:
        line3.append(f"{name} {vs.counts.get(name, 0)}  ", style=STATE_STYLES[name])
    if vs.ejected:
        line3.append(f"ejected {vs.ejected}", style=STATE_STYLES["overloaded"])
    parts: list[Text | Table] = [head, line2, line3]
    if vs.claims is not None:
        cl, le = vs.claims, vs.claims["leases"]
        parts.append(
            Text(
                f"jobs in flight {cl['in_flight']:,}  released {cl['released_ok']:,} ok"
                f" {cl['released_err']:,} error  abandoned {cl['abandoned']:,}  stale "
                f"{cl['stale_releases']:,}  schedulers {le['in_use']}/{le['max']}"
            )
        )
    for z in vs.zones:
        stale = z["state"] != "fresh"
        age = "-" if z["age_s"] is None else f"{z['age_s']:.2f} s"
        parts.append(
            Text(
                f"zone {z['zone'] or '?'}: {z['state']}, {z['nodes']} nodes, last frame {age} "
                f"ago, epoch {z['epoch']}, {z['gaps']} gaps" + ("  (not ranked)" if stale else ""),
                style="bold red" if stale else "",
            )
        )
    if vs.message:
        parts.append(Text(vs.message, style="bold red"))

    table = Table(expand=False, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("rank", justify="right")
    table.add_column("node", no_wrap=True, max_width=40)
    table.add_column("score", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("wait s", justify="right")
    table.add_column("queue ema", justify="right")
    table.add_column("live", justify="right")
    table.add_column("jobs", justify="right")
    for r in vs.rows:
        changed = r.old_state is not None
        table.add_row(
            "-" if r.rank is None else str(r.rank),
            Text(("▶ " if changed else "  ") + r.node, style="bold" if changed else ""),
            f"{r.score:.3f}",
            Text(_bar(r.score), style=STATE_STYLES.get(r.state, "")),
            _state_text(r.state, r.old_state),
            f"{r.wait:.1f}",
            f"{r.qema:.1f}",
            f"{r.liveness:.2f}",
            f"{r.in_flight}",
            style="on grey15" if changed else None,
        )
    parts.append(table)

    if vs.unranked:
        out = Text("not ranked: ")
        for state, names in vs.unranked.items():
            more = vs.counts.get(state, len(names)) - len(names)
            out.append(state, style=STATE_STYLES.get(state, ""))
            out.append(" " + ", ".join(names) + (f" +{more}" if more > 0 else "") + "  ")
        parts.append(out)

    changes = Text()
    changes.append(f"state changes since last refresh: {len(vs.changes)}; recent:", style="bold")
    for c in vs.recent:
        changes.append(f"\n  ▶ {c.node}  ")
        changes.append_text(_state_text(c.new, c.old))
        changes.append(f"  (epoch {c.epoch})", style="dim")
    parts.append(changes)

    foot = Text()
    foot.append(f"heartbeats {vs.heartbeats:,} received, {vs.accepted:,} accepted; rejected: ")
    if vs.rejects:
        foot.append("  ".join(f"{k} {v:,}" for k, v in vs.rejects.items()), style="red")
    else:
        foot.append("none")
    parts.append(foot)
    return Group(*parts)


# -------------------------------------------------------------------- top --
def cmd_top(args) -> int:
    """``shm-engine top [--name NAME] [--interval S] [--rows N]``."""
    try:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text
    except ImportError:
        print("shm-engine top: needs rich (pip install 'shm-engine[top]')", file=sys.stderr)
        return 2
    if args.interval <= 0 or args.rows < 1:
        print("shm-engine top: --interval must be > 0 and --rows >= 1", file=sys.stderr)
        return 2
    try:
        watcher: Watcher | None = Watcher(args.name, args.rows, args.owner)
    except EngineNotRunning as err:
        print(f"shm-engine top: {err}", file=sys.stderr)
        return 2
    console = Console()
    try:
        with Live(console=console, auto_refresh=False, screen=False, redirect_stderr=False) as live:
            while True:
                assert watcher is not None  # a lost engine's watcher is replaced below
                stale_after = max(2.0, 20 * int(watcher._hdr.tick_interval_ms[0]) / 1000)
                vs = watcher.poll()
                gone = watcher.engine_gone(stale_after)
                if gone is None:
                    live.update(render(vs), refresh=True)
                    time.sleep(args.interval)
                    continue
                vs.message = f"{gone}; waiting for engine {args.name!r} to come back (Ctrl-C quits)"
                live.update(render(vs), refresh=True)
                watcher.close()
                watcher = None
                while watcher is None:
                    time.sleep(max(args.interval, 0.5))
                    try:
                        candidate = Watcher(args.name, args.rows, args.owner)
                    except (EngineNotRunning, LayoutMismatch):
                        continue
                    if candidate.engine_gone(stale_after) is None:
                        watcher = candidate
                    else:
                        candidate.close()
                live.update(Text(f"engine {args.name!r} is back"), refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if watcher is not None:
            watcher.close()
