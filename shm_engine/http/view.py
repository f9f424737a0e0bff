"""What the HTTP API reads: one engine's segments, as a scheduler reads them.

`EngineView` maps the scores segment read-only (through a `ScoreReader`,
whose latch loop makes every snapshot consistent) and, if it can, the
claims segment read-only too.  Nothing here writes shared memory or can
hold up a writer: the latch, the heartbeat table's ``row_version`` and the
registry's ``meta_version`` are seqcounts, so a reader that loses a race
copies again and the writer never waits.

Per tick, not per request.  A request never copies the score buffers: the
view keeps one `Frame` (a `Snapshot` and what is derived from it: the node
index, the ranks, sort orders made on first use) per published epoch, and
the zones and labels of every slot per ``registry_epoch``.  Under load the
cost of a request is a dict lookup and a few array reads, whatever the
request rate, and the tick worker's cost is zero (it never sees a reader).

History.  `sample` (called by the server's background task about once a
second) appends one summary per second (counts, pressure, weights) for the
last `SUMMARY_SECONDS`, and every slot's score for the last
`SCORE_SECONDS`, tagged with the slot's registration so that a slot
reused by another node never shows the old node's history (for the lowest
`HISTORY_SLOTS` slots: an engine with more nodes shows no sparkline for
the others).

Events.  The view maps the engine's event log read-only too (`EventReader`;
None when the engine has none) and keeps, in `RecentEvents`, each node's
latest `RECENT_PER_NODE` events, brought up to date from the log's head
when asked (a read of one word when nothing is new), so that a node's
detail never scans the ring.

Rules for callers: one thread (the server's event loop); ``close()`` once.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from clients.events import Event, EventReader
from clients.reader import ScoreReader, Snapshot
from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.errors import EngineNotRunning, LayoutMismatch
from shm_engine.core.registry import read_node_id
from shm_engine.core.segment import Segment
from shm_engine.core.states import STATE_NAMES, UNREGISTERED, NodeState
from shm_engine.ingest.counters import read_ingest_counters
from shm_engine.wire.format import HAS_IO, HAS_OKERR, HAS_SLOTS, HAS_TAIL, HAS_THROUGHPUT, HAS_TS

__all__ = [
    "EngineView",
    "Frame",
    "RecentEvents",
    "RECENT_PER_NODE",
    "SORT_KEYS",
    "STATE_BY_NAME",
    "SUMMARY_SECONDS",
    "SCORE_SECONDS",
]

SUMMARY_SECONDS = 600  # summaries kept, one per second: the dashboard's charts
SCORE_SECONDS = 60  # per-node score samples kept, one per second: sparklines
#: Slots whose score history is kept (the lowest ones): 60 samples of 8
#: bytes each, so at most 31 MB however large the capacity.
HISTORY_SLOTS = 65536
ROW_READ_ATTEMPTS = 100  # copies of a row being written before giving up
#: Sort keys of GET /v1/nodes: the published column each sorts by.
SORT_KEYS = ("score", "raw", "wait", "liveness", "node")
STATE_BY_NAME = {STATE_NAMES[int(s)]: int(s) for s in NodeState}
RECENT_PER_NODE = 16  # events kept per node for its detail view
SYNC_CHUNK = 8192  # events copied from the log per read while catching up
_OPTIONAL = (
    ("throughput", HAS_THROUGHPUT, ("throughput",)),
    ("ok_err", HAS_OKERR, ("ok", "err")),
    ("io", HAS_IO, ("io",)),
    ("tail", HAS_TAIL, ("p50_ms", "p95_ms")),
    ("ts", HAS_TS, ("ts",)),
)


@dataclass
class Frame:
    """One published tick and what requests derive from it (built once)."""

    snap: Snapshot
    slot_of: dict[str, int]
    rank: np.ndarray  # rank of each slot (0 best), -1 if not ranked
    present: np.ndarray  # bool per slot: a node is there
    names: np.ndarray  # node id per slot ("" where none), for sorting
    orders: dict = field(default_factory=dict)  # sort key -> (slots, values, names)

    def order(self, key: str, descending: bool):
        """Slots holding a node, sorted by ``key`` then node id (ascending
        id in both directions, so ties have one stable order), with the
        sort values as they are compared (negated when descending)."""
        got = self.orders.get((key, descending))
        if got is None:
            slots = np.flatnonzero(self.present)
            names = self.names[slots]
            if key == "node":
                idx = np.argsort(names, kind="stable")
                if descending:
                    idx = idx[::-1]
                values = np.zeros(len(slots))
            else:
                col = getattr(self.snap, key)[slots].astype(np.float64)
                values = -col if descending else col
                idx = np.lexsort((names, values))
                values = values[idx]
            got = (slots[idx], values, names[idx])
            self.orders[(key, descending)] = got
        return got


class EngineView:
    """Read-only view of engine ``name`` for the HTTP API (see the module
    docstring).  Raises what `ScoreReader.attach` raises."""

    def __init__(self, name: str, owner: int | str | None = None):
        self.name = name
        self.reader = ScoreReader.attach(name, owner=owner)
        try:
            self.seg = Segment.attach(name, readonly=True, owner=owner)
        except BaseException:
            self.reader.close()
            raise
        self.claims: ClaimsSegment | None = None
        try:
            self.claims = ClaimsSegment.attach(name, readonly=True, owner=owner)
        except (EngineNotRunning, LayoutMismatch):
            pass  # no claims segment readable: in-flight counts are reported as None
        except BaseException:
            self.seg.close()
            self.reader.close()
            raise
        self.events: EventReader | None = None
        try:
            self.events = EventReader.attach(name, owner=owner)
        except (EngineNotRunning, LayoutMismatch):
            pass  # no event log readable: the event endpoints answer 503
        except BaseException:
            if self.claims is not None:
                self.claims.close()
            self.seg.close()
            self.reader.close()
            raise
        self.recent = RecentEvents(self.events, max_nodes=2 * self.seg.layout.capacity)
        v = self.seg.views
        self.header = v.header
        self.capacity = self.seg.layout.capacity
        self._frame: Frame | None = None
        self._meta_epoch = -1
        self._zones: list[str] = []
        self._labels: list[dict] = []
        # History rings (module docstring).
        self._sum: list[dict] = []
        self._hist = min(self.capacity, HISTORY_SLOTS)
        self._scores = np.full((SCORE_SECONDS, self._hist), np.nan, np.float32)
        self._score_gen = np.zeros((SCORE_SECONDS, self._hist), np.uint32)  # slot_gen, low bits
        self._score_at = 0  # samples taken so far
        self._last_sample_s = 0

    def close(self) -> None:
        self._frame = None
        if self.events is not None:
            self.events.close()
        if self.claims is not None:
            self.claims.close()
        self.seg.close()
        self.reader.close()

    # ------------------------------------------------------------- frames --
    @property
    def epoch(self) -> int:
        return self.reader.epoch

    def frame(self) -> Frame:
        """The `Frame` of the latest published tick.  Raises NothingPublished
        before the first tick, EngineStopped once the engine is gone,
        ReadContention if no copy could be made and none was held."""
        f = self._frame
        if f is not None and f.snap.epoch == self.reader.epoch:
            return f
        snap = self.reader.snapshot()
        if f is not None and snap is f.snap:
            return f  # the reader served its last copy (contention)
        nodes = snap.nodes
        if f is not None and f.snap.nodes is nodes:
            slot_of, present, names = f.slot_of, f.present, f.names
        else:
            slot_of = {n: i for i, n in enumerate(nodes) if n is not None}
            present = np.array([n is not None for n in nodes], bool)
            names = np.array([n or "" for n in nodes], dtype=object).astype(str)
        rank = np.full(len(nodes), -1, np.int64)
        ranked = snap.ranked[snap.ranked < len(nodes)]
        rank[ranked] = np.arange(len(ranked))
        self._frame = Frame(snap, slot_of, rank, present, names)
        return self._frame

    # ---------------------------------------------------- zones and labels --
    def meta(self) -> tuple[list[str], list[dict]]:
        """Zone and labels of every slot below the high-water mark ("" and
        {} for a free slot), read consistently per slot and cached until
        the registry changes."""
        h = self.header
        epoch = int(h.registry_epoch[0])
        if epoch == self._meta_epoch:
            return self._zones, self._labels
        reg = self.seg.views.registry
        hwm = min(int(h.slot_hwm[0]), self.capacity)
        for _attempt in range(ROW_READ_ATTEMPTS):
            before = reg.meta_version[:hwm].copy()
            gens = reg.slot_gen[:hwm].copy()
            zone = reg.zone[:hwm].copy()
            llen = reg.labels_len[:hwm].copy()
            labels = reg.labels[:hwm].copy()
            registered = reg.registered[:hwm].copy()
            # Pairs with the ingest's slot_change_end on meta_version and
            # slot_gen: an even, unchanged version means a whole copy.
            unstable = ((before & 1) | (gens & 1)).astype(bool)
            unstable |= reg.meta_version[:hwm] != before
            unstable |= reg.slot_gen[:hwm] != gens
            if not unstable.any():
                break
        zones: list[str] = []
        labs: list[dict] = []
        for s in range(hwm):
            if not registered[s]:
                zones.append("")
                labs.append({})
                continue
            zones.append(bytes(zone[s]).split(b"\0", 1)[0].decode("utf-8", "replace"))
            n = int(llen[s])
            if n:
                try:
                    labs.append(json.loads(bytes(labels[s, :n])))
                except ValueError:
                    labs.append({})
            else:
                labs.append({})
        self._zones, self._labels = zones, labs
        # A copy that never settled is not cached: read again next time.
        self._meta_epoch = epoch if not unstable.any() else -1
        return zones, labs

    def zone_labels(self, slot: int) -> tuple[str, dict]:
        """Zone and labels of ``slot``: from the cache while the registry has
        not changed, else read for this slot alone (a request for a few
        nodes never pays for re-reading the whole registry)."""
        if int(self.header.registry_epoch[0]) == self._meta_epoch and slot < len(self._zones):
            return self._zones[slot], self._labels[slot]
        reg = self.seg.views.registry
        for _attempt in range(ROW_READ_ATTEMPTS):
            v0, g0 = int(reg.meta_version[slot]), int(reg.slot_gen[slot])
            if (v0 | g0) & 1:
                continue
            zone = bytes(reg.zone[slot]).split(b"\0", 1)[0]
            n = int(reg.labels_len[slot])
            raw = bytes(reg.labels[slot, :n])
            live = bool(reg.registered[slot])
            # Pairs with the ingest's slot_change_end on both versions.
            if int(reg.meta_version[slot]) == v0 and int(reg.slot_gen[slot]) == g0:
                if not live:
                    return "", {}
                try:
                    labels = json.loads(raw) if n else {}
                except ValueError:
                    labels = {}
                return zone.decode("utf-8", "replace"), labels
        return "", {}

    # ------------------------------------------------------------ one node --
    def heartbeat(self, slot: int, gen: int) -> dict | None:
        """The latest heartbeat of the node in ``slot`` (registration
        ``gen``) as the ingest stored it, with its age; None if the slot
        changed hands or stayed mid-write."""
        t = self.seg.views.table
        reg = self.seg.views.registry
        for _attempt in range(ROW_READ_ATTEMPTS):
            # Plain loads, in program order on x86-64 (shm_engine.core.ordering):
            # the version, the row, the version again.  Pairs with the two
            # row_version increments of rows.write_rows (odd while written).
            v0 = int(t.row_version[slot])
            if v0 & 1:
                continue
            vals = {
                "cpu": float(t.cpu[slot]),
                "mem": float(t.mem[slot]),
                "queue": float(t.queue[slot]),
                "avg_job_s": float(t.avg_job_s[slot]),
                "throughput": float(t.throughput[slot]),
                "ok": float(t.ok[slot]),
                "err": float(t.err[slot]),
                "io": float(t.io[slot]),
                "p50_ms": float(t.p50_ms[slot]),
                "p95_ms": float(t.p95_ms[slot]),
                "ts": float(t.ts[slot]),
                "slots": float(t.slots[slot]),
            }
            recv = float(t.recv_time[slot])
            reported = int(t.reported[slot])
            if int(t.row_version[slot]) != v0:
                continue
            if int(reg.slot_gen[slot]) != gen:
                return None
            out: dict[str, float | int | None] = {"age_s": max(0.0, time.monotonic() - recv)}
            for k in ("cpu", "mem", "queue", "avg_job_s"):  # required: always there
                out[k] = vals[k]
            for _name, bit, keys in _OPTIONAL:
                for k in keys:
                    out[k] = vals[k] if reported & bit else None
            out["slots"] = int(vals["slots"]) if reported & HAS_SLOTS else None
            return out
        return None

    def in_flight(self, slot: int, gen: int) -> int | None:
        """Claims open now on the node in ``slot`` (registration ``gen``),
        every scheduler's; None without a readable claims segment."""
        cs = self.claims
        if cs is None:
            return None
        v = cs.views
        tag = (gen >> 1) & 0xFFFFFFFF
        total = 0
        for k in np.flatnonzero(v.lease_ident).tolist():
            w = int(v.in_flight[k, slot])
            if w >> 32 == tag:
                total += w & 0xFFFFFFFF
        return total

    def registration(self, slot: int, node: str) -> int | None:
        """The registration (``slot_gen``) under which ``node`` holds
        ``slot`` now; None if the slot holds another node or is changing."""
        got = read_node_id(self.seg.views.registry, slot)
        if got is None or got[1] != node.encode("utf-8"):
            return None
        return got[0]

    # ------------------------------------------------------------- history --
    def sample(self, now_wall: float | None = None) -> bool:
        """Record this second's summary and scores (at most once per whole
        second of wall time); True if a sample was taken.  Raises what
        `frame` raises."""
        now_wall = time.time() if now_wall is None else now_wall
        second = int(now_wall)
        if second <= self._last_sample_s:
            return False
        f = self.frame()
        self._last_sample_s = second
        self._sum.append(self.summary(f))
        if len(self._sum) > SUMMARY_SECONDS:
            del self._sum[: len(self._sum) - SUMMARY_SECONDS]
        row = self._score_at % SCORE_SECONDS
        n = min(len(f.snap.nodes), self._hist)
        self._scores[row] = np.nan
        self._scores[row, :n] = np.where(f.present[:n], f.snap.score[:n], np.nan)
        self._score_gen[row] = 0
        self._score_gen[row, :n] = self.seg.views.registry.slot_gen[:n].astype(np.uint32)
        self._score_at += 1
        return True

    def summaries(self) -> list[dict]:
        """The per-second summaries kept, oldest first."""
        return list(self._sum)

    def score_history(self, slots: np.ndarray) -> list[list[float | None]]:
        """Per slot, its score once a second, oldest first (None where the
        slot held another registration or nothing)."""
        k = min(self._score_at, SCORE_SECONDS)
        if k == 0 or len(slots) == 0:
            return [[] for _ in range(len(slots))]
        rows = (self._score_at - k + np.arange(k)) % SCORE_SECONDS
        if len(slots) == 1:  # one node (GET /v1/nodes/{id}): plain column reads
            slot = int(slots[0])
            if slot >= self._hist:
                return [[None] * k]
            sc = self._scores[rows, slot].astype(np.float64)
            same = self._score_gen[rows, slot] == np.uint32(self.seg.views.registry.slot_gen[slot])
            col = np.where(same, sc, np.nan).round(4).tolist()
            return [[None if x != x else x for x in col]]  # NaN: None
        slots = np.asarray(slots, np.int64)
        kept = slots < self._hist
        at = np.where(kept, slots, 0)
        sc2 = self._scores[np.ix_(rows, at)]
        gens = self._score_gen[np.ix_(rows, at)]
        cur = self.seg.views.registry.slot_gen[slots].astype(np.uint32)
        sc2[:, ~kept] = np.nan
        out = np.where(gens == cur[None, :], sc2, np.nan).astype(np.float64).round(4)
        return [[None if x != x else x for x in c] for c in out.T.tolist()]

    # ------------------------------------------------------------ summary --
    def summary(self, f: Frame | None = None) -> dict:
        """The compact per-tick summary pushed by GET /v1/stream."""
        h = self.header
        ingest = read_ingest_counters(h)  # first: see shm_engine.ingest.counters
        f = self.frame() if f is None else f
        s = f.snap
        return {
            "epoch": int(s.epoch),
            "t": float(s.tick_time),
            "age_s": max(0.0, time.monotonic() - s.tick_mono),
            "counts": {k: int(v) for k, v in s.counts.items()},
            "pressure": float(s.pressure),
            "weights": {k: float(v) for k, v in s.weights.items()},
            "ranked": len(s.ranked),
            "registered": int(f.present.sum()),
            "ejected": int(s.ejected),
            "ingest": {
                "frames": ingest["frames"],
                "accepted": ingest["accepted"],
                "rejected": sum(ingest["rejected"].values()),
            },
            "tick_us_p99": float(h.tick_us_p99[0]),
            "config_version": int(h.config_version[0]),
            "reloads": int(h.reloads_done[0]),
        }


class RecentEvents:
    """Each node's latest `RECENT_PER_NODE` events, from an event log.

    `sync` copies what the log appended since the last call (in chunks of
    `SYNC_CHUNK`); events the ring overwrote before they were copied are
    counted in ``lost``, as any reader's are.  At most ``max_nodes`` node
    ids are kept: past that, the node whose latest event is the oldest is
    dropped, so ids that come and go cannot grow it without bound."""

    def __init__(self, log: EventReader | None, max_nodes: int):
        self.log = log
        self.max_nodes = max(1, max_nodes)
        self.seq = 0  # the last event copied
        self.lost = 0
        self._by_node: OrderedDict[str, deque[Event]] = OrderedDict()

    def sync(self) -> None:
        log = self.log
        if log is None:
            return
        while log.head > self.seq:
            batch = log.read(self.seq, limit=SYNC_CHUNK)
            self.lost += batch.lost
            self.seq = batch.next_seq
            by_node = self._by_node
            for ev in batch.events:
                q = by_node.get(ev.node)
                if q is None:
                    q = by_node[ev.node] = deque(maxlen=RECENT_PER_NODE)
                    if len(by_node) > self.max_nodes:
                        by_node.popitem(last=False)
                else:
                    by_node.move_to_end(ev.node)
                q.append(ev)

    def of_node(self, node: str) -> list[Event] | None:
        """The node's latest events, oldest first (None without a log)."""
        if self.log is None:
            return None
        self.sync()
        return list(self._by_node.get(node, ()))


def state_name(value: int) -> str:
    return STATE_NAMES.get(int(value), STATE_NAMES[UNREGISTERED])
