"""ScoreReader: a scheduler's view of the published scores, straight from shared memory.

The reader maps the engine's segment read-only (a buggy scheduler cannot
corrupt scores) and copies what it needs out of the score buffer of the
latest epoch through the latch (`shm_engine.core.seqlock.read_consistent`, the one
retry loop).  No call makes a syscall or touches a socket: reads are loads
from the mapping, plus a monotonic clock read (vDSO) for ``age_s``.

Node names live in the registry region, written by the ingest.  The reader
caches ``name -> (slot, generation)`` and refreshes only the slots whose
generation moved (one vectorised compare); a score is returned only when
the buffer's generation for the slot matches, so a slot reused by another
node is never read as the old one.

If the writer laps the reader on every retry (it would have to publish
faster than a copy takes), the call serves the last good copy it made and
counts ``retries_exhausted``; `is_stale` tells a stalled engine apart.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from clients.claims import Claim, ClaimTable, NodeFeedback
from clients.pick import pick as _pick
from shm_engine.core.registry import decode_id
from shm_engine.core.segment import Segment
from shm_engine.core.seqlock import READ_NOTHING_PUBLISHED, READ_OK, read_consistent
from shm_engine.core.states import NodeState

__all__ = ["ScoreReader", "Snapshot", "NothingPublished", "Claim", "NodeFeedback"]

_PUBLISHED = ("score", "raw", "wait", "qema", "liveness", "state")
_STATES = {int(s): s for s in NodeState}
_STATE_KEYS = tuple(s.name.lower() for s in NodeState)  # NodeState(v) costs ~1 us; a dict hit ~30 ns
_WEIGHT_NAMES = ("cpu", "mem", "io", "wait", "throughput", "success", "tail")


class NothingPublished(LookupError):
    """Raised by reader calls before the engine has published its first tick.

    Wait for ``reader.epoch > 0`` (a tick interval after start)."""


class Snapshot(NamedTuple):
    """One consistent copy of a published tick (immutable; a NamedTuple
    because a frozen dataclass costs several microseconds to build).

    Arrays are indexed by slot (``nodes[i]`` is the node in slot i, None for
    an empty slot); ``ranked`` holds slots, best first."""
    epoch: int
    tick_time: float        # wall-clock time of the tick (time.time())
    tick_mono: float        # monotonic time of the tick (time.monotonic())
    nodes: tuple            # node id per slot, None where no node
    score: np.ndarray
    raw: np.ndarray
    state: np.ndarray
    wait: np.ndarray
    qema: np.ndarray
    liveness: np.ndarray
    ranked: np.ndarray
    pressure: float
    weights: dict
    counts: dict

    def scores(self) -> dict:
        """{node: published score} for every node in the snapshot."""
        return {n: float(self.score[i]) for i, n in enumerate(self.nodes) if n is not None}

    def top(self, k: int) -> list[tuple[str, float]]:
        return [(self.nodes[s], float(self.score[s])) for s in self.ranked[:k]]


class ScoreReader:
    """Read-only client of a running engine.  Build with `ScoreReader.attach`."""

    def __init__(self, segment: Segment):
        self._seg = segment
        v = segment.views
        self._hdr = v.header
        self._seq = v.header.latch_seq
        self._slot_gen = v.registry.slot_gen
        self._node_id = v.registry.node_id
        self._registered = v.registry.registered
        self._bufs = v.buffers
        cap = segment.layout.capacity
        # name -> (slot, gen); per-slot cached gens and names.
        self._index: dict[str, tuple[int, int]] = {}
        self._gens = np.zeros(cap, np.uint64)
        self._names: list[str | None] = [None] * cap
        self._index_epoch = -1
        self._nodes_cache: tuple = ()
        self._nodes_key = b""
        self._last: Snapshot | None = None
        self._rng: np.random.Generator | None = None
        self.retries_exhausted = 0
        # Hot paths read through typed memoryviews: an item load is ~30 ns,
        # a numpy scalar index ~100 ns.
        self._seq_mv = memoryview(self._seq)
        mvs = lambda col: tuple(memoryview(b.views[col]) for b in self._bufs)  # noqa: E731
        self._score_mv, self._state_mv = mvs("score"), mvs("state")
        self._gen_mv, self._ranked_mv = mvs("gen"), mvs("ranked")
        self._nranked_mv = tuple(memoryview(b.n_ranked) for b in self._bufs)
        self._gen_list = [0] * cap  # self._gens as Python ints, for per-slot checks
        self._published = tuple(tuple(b.views[c] for c in _PUBLISHED + ("gen",))
                                for b in self._bufs)
        self._ranked_views = tuple(b.views["ranked"] for b in self._bufs)
        self._claims: ClaimTable | None = None   # mapped on first use (read-write)

    @classmethod
    def attach(cls, name: str = "dfps") -> "ScoreReader":
        """Map engine ``name`` read-only.  Raises EngineNotRunning / LayoutMismatch."""
        return cls(Segment.attach(name, readonly=True))

    def close(self) -> None:
        if self._claims is not None:
            self._claims.close()   # unmaps once its open claims are released
            self._claims = None
        self._seq_mv = self._score_mv = self._state_mv = self._gen_mv = None
        self._ranked_mv = self._nranked_mv = None
        self._bufs = None
        self._seg.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------- status --
    @property
    def name(self) -> str:
        return self._seg.name

    @property
    def epoch(self) -> int:
        """Number of ticks published so far (0: none yet)."""
        return int(self._seq[0]) >> 1

    @property
    def age_s(self) -> float:
        """Seconds since the latest published tick (inf if none)."""
        st, _e, mono = read_consistent(self._seq, lambda b: float(self._bufs[b].tick_mono[0]))
        if st != READ_OK:
            return float("inf")
        return max(0.0, time.monotonic() - mono)

    def is_stale(self, max_age_s: float) -> bool:
        """True if no tick was published in the last ``max_age_s`` seconds
        (the engine is stalled or gone); the last snapshot stays readable."""
        return self.age_s > max_age_s

    # -------------------------------------------------------------- index --
    def _refresh_index(self) -> None:
        epoch = int(self._hdr.registry_epoch[0])
        if epoch == self._index_epoch:
            return
        hwm = min(int(self._hdr.slot_hwm[0]), self._gens.shape[0])
        gens = self._slot_gen[:hwm].copy()
        changed = np.flatnonzero(gens != self._gens[:hwm])
        for s in changed:
            s = int(s)
            old = self._names[s]
            if old is not None and self._index.get(old, (-1,))[0] == s:
                del self._index[old]
            self._names[s] = None
            self._gens[s] = 0
            self._gen_list[s] = 0
            for _ in range(100):
                g1 = int(self._slot_gen[s])
                if g1 & 1:
                    continue
                reg = bool(self._registered[s])
                raw = decode_id(self._node_id[s])
                if int(self._slot_gen[s]) == g1:
                    break
            else:
                continue  # the ingest is mid-change; the next refresh gets it
            self._gens[s] = g1
            self._gen_list[s] = g1
            if reg and raw:
                name = raw.decode("utf-8", "replace")
                self._names[s] = name
                self._index[name] = (s, g1)
        self._index_epoch = epoch

    def _lookup(self, node: str) -> tuple[int, int]:
        ent = self._index.get(node)
        if ent is None:
            self._refresh_index()
            ent = self._index.get(node)
            if ent is None:
                raise KeyError(f"node {node!r} is not registered with engine {self.name!r}")
        return ent

    # ------------------------------------------------------- single values --
    def _read_slot(self, node: str, column):
        """``column[slot]`` of ``node`` from the latest epoch (``column``: a
        pair of memoryviews, one per buffer)."""
        ent = self._index.get(node)
        if ent is not None:
            # One attempt of the latch read inline (the hot path of a
            # scheduler); anything unusual goes through read_consistent.
            slot, gen = ent
            seq = self._seq_mv
            s1 = seq[0]
            b = (s1 >> 1) & 1
            g = self._gen_mv[b][slot]
            value = column[b][slot]
            # Pairs with write_begin: the buffer we read is intact unless the
            # writer started the epoch after next (see seqlock.read_retry).
            if seq[0] < (s1 | 1) + 2 and g == gen and s1 > 1:
                return value
        return self._read_slot_slow(node, column)

    def _read_slot_slow(self, node: str, column):
        for _attempt in range(2):
            slot, gen = self._lookup(node)
            gmv = self._gen_mv
            st, _epoch, got = read_consistent(self._seq, lambda b: (gmv[b][slot], column[b][slot]))
            if st == READ_OK:
                if got[0] == gen:
                    return got[1]
                self._refresh_index()  # the slot changed hands, or the index is old
                continue
            if st == READ_NOTHING_PUBLISHED:
                raise NothingPublished(f"engine {self.name!r} has not published a tick yet")
            self.retries_exhausted += 1
            last = self._last
            if last is not None and slot < len(last.nodes) and last.nodes[slot] == node:
                col = last.score if column is self._score_mv else last.state
                return col[slot]
            raise KeyError(f"node {node!r}: engine {self.name!r} is publishing faster than "
                           "this reader can copy; no earlier copy to serve")
        raise KeyError(f"node {node!r} is registered but not scored yet by engine {self.name!r}")

    def score(self, node: str) -> float:
        """Published desirability of ``node`` in [0, 1] (0 unless HEALTHY or DEGRADED).

        Raises KeyError naming the node if it is unknown (or not yet scored)."""
        return self._read_slot(node, self._score_mv)

    def state(self, node: str) -> NodeState:
        """Published state of ``node``; KeyError naming it if unknown."""
        return _STATES[self._read_slot(node, self._state_mv)]

    # -------------------------------------------------------------- claims --
    def _claim_table(self) -> ClaimTable:
        if self._claims is None:
            def reindex():
                self._index_epoch = -1
                self._refresh_index()
            self._claims = ClaimTable(self._seg, self._index, self._lookup, reindex)
        return self._claims

    def claim(self, node: str) -> Claim:
        """Record one job sent to ``node``: in flight, visible to every
        scheduler at once, until ``release(ok=...)`` (see `clients.claims`).

        Raises KeyError if ``node`` is not registered, SchedulerLimitReached
        if every scheduler lease of the engine is held, EngineNotRunning if
        the claims segment cannot be mapped read-write."""
        t = self._claims
        return (t if t is not None else self._claim_table()).claim(node)

    def in_flight(self, node: str) -> int:
        """Jobs claimed on ``node`` and not yet released, by every scheduler."""
        return self._claim_table().in_flight(node)

    def feedback(self, node: str) -> NodeFeedback:
        """The schedulers' record of ``node`` (in flight, outcomes, errors)."""
        return self._claim_table().feedback(node)

    # ------------------------------------------------------------ snapshot --
    def _copy(self, b: int, hwm: int):
        buf = self._bufs[b]
        cols = [a[:hwm].copy() for a in self._published[b]]  # _PUBLISHED order, then gen
        n_ranked = min(self._nranked_mv[b][0], hwm)
        ranked = self._ranked_views[b][:n_ranked].copy()
        meta = (buf.tick_wall[0], buf.tick_mono[0], buf.pressure[0],
                buf.weights[:7].tolist(), buf.counts[:5].tolist())
        return cols, ranked, meta

    def snapshot(self) -> Snapshot:
        """One consistent copy of the latest tick (see `Snapshot`)."""
        hwm = min(int(self._hdr.slot_hwm[0]), self._gens.shape[0])
        st, epoch, got = read_consistent(self._seq, lambda b: self._copy(b, hwm))
        if st == READ_NOTHING_PUBLISHED:
            raise NothingPublished(f"engine {self.name!r} has not published a tick yet")
        if st != READ_OK:
            self.retries_exhausted += 1
            if self._last is None:
                raise NothingPublished(f"engine {self.name!r}: no consistent copy yet")
            return self._last
        cols, ranked, (wall, mono, pressure, weights, counts) = got
        score, raw, wait, qema, liveness, state, gen = cols
        snap = Snapshot(epoch, float(wall), float(mono), self._nodes_for(gen, state),
                        score, raw, state, wait, qema, liveness, ranked, float(pressure),
                        dict(zip(_WEIGHT_NAMES, weights)), dict(zip(_STATE_KEYS, counts)))
        self._last = snap
        return snap

    def _nodes_for(self, gen: np.ndarray, state: np.ndarray) -> tuple:
        """Node names per slot for buffer generations ``gen`` (cached)."""
        key = gen.tobytes()  # memcmp, cheaper than np.array_equal at 10K slots
        if key == self._nodes_key:
            return self._nodes_cache
        self._refresh_index()
        n = gen.shape[0]
        ok = (gen == self._gens[:n]) & (state != 255)
        if not ok[state != 255].all():
            self._index_epoch = -1  # a generation we have not seen: force a re-read
            self._refresh_index()
            ok = (gen == self._gens[:n]) & (state != 255)
        names = self._names
        nodes = tuple(names[i] if ok[i] else None for i in range(n))
        self._nodes_cache, self._nodes_key = nodes, key
        return nodes

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The best ``k`` nodes as ``(node, score)``, from the published ranking."""
        if k <= 0:
            return []
        seq = self._seq_mv
        s1 = seq[0]
        b = (s1 >> 1) & 1
        # Fast path: one pass over the buffer, then one latch check (pairs
        # with write_begin, as in _read_slot).  Every slot must be one whose
        # node we know at the generation the buffer was scored with; a torn
        # copy may hold garbage slots, which raise IndexError (or fail the
        # generation check) and are caught before anything is returned.
        sc, gm, known, names = self._score_mv[b], self._gen_mv[b], self._gen_list, self._names
        try:
            slots = self._ranked_mv[b][:min(self._nranked_mv[b][0], k)].tolist()
            out = [(nm, sc[s]) for s in slots
                   if s >= 0 and known[s] == gm[s] and (nm := names[s]) is not None]
        except IndexError:
            out = slots = None
        if s1 > 1 and seq[0] < (s1 | 1) + 2 and slots is not None and len(out) == len(slots):
            return out
        return self._top_slow(k)

    def _top_slow(self, k: int) -> list[tuple[str, float]]:
        """`top` through read_consistent, refreshing the node index when a
        ranked slot holds a node (or generation) we have not seen yet."""
        st, _epoch, got = read_consistent(self._seq, lambda b: self._top_copy(b, k))
        if st == READ_NOTHING_PUBLISHED:
            raise NothingPublished(f"engine {self.name!r} has not published a tick yet")
        if st != READ_OK:
            self.retries_exhausted += 1
            return self._last.top(k) if self._last is not None else []
        slots, scores, gens = got
        known = self._gen_list
        if [known[s] for s in slots] != gens:
            self._index_epoch = -1  # a node we have not seen yet
            self._refresh_index()
        names = self._names
        return [(names[s], sc) for s, sc, g in zip(slots, scores, gens)
                if known[s] == g and names[s] is not None]

    def _top_copy(self, b: int, k: int):
        n = min(self._nranked_mv[b][0], k)
        sc, gm, cap = self._score_mv[b], self._gen_mv[b], len(self._gen_list)
        # A torn copy may hold garbage slots: range-check, never fault.
        slots = [s for s in self._ranked_mv[b][:n].tolist() if 0 <= s < cap]
        return slots, [sc[s] for s in slots], [gm[s] for s in slots]

    # ---------------------------------------------------------------- pick --
    def pick(self, exclude=None, rng: np.random.Generator | None = None, *,
             d: int = 3) -> str | None:
        """Choose one node for a job without herding (see `clients.pick`).

        Power of ``d`` choices on the published desirability: ``d`` distinct
        ranked nodes drawn uniformly, the best of them returned.  ``exclude``:
        node names never to return (e.g. already tried for this job); ``rng``:
        a seeded ``numpy.random.Generator`` for reproducible picks (default:
        the reader's own).  None when no node qualifies (nothing ranked, or
        all excluded): wait for the next tick or fall back."""
        if d < 1:
            raise ValueError(f"pick: d = {d!r} must be >= 1")
        if rng is None:
            if self._rng is None:
                self._rng = np.random.default_rng()
            rng = self._rng
        ex = None
        if exclude:
            self._refresh_index()
            ex = [self._index[n][0] for n in exclude if n in self._index]

        def choose(b):
            buf = self._bufs[b]
            try:
                slot = _pick(buf.views["score"], buf.views["ranked"], int(buf.n_ranked[0]),
                             rng, ex, d=d)
                return slot, (self._gen_mv[b][slot] if slot >= 0 else 0)
            except (IndexError, ValueError):
                return -2, 0  # a torn copy: the latch check makes us retry

        st, _epoch, got = read_consistent(self._seq, choose)
        if st == READ_NOTHING_PUBLISHED:
            raise NothingPublished(f"engine {self.name!r} has not published a tick yet")
        if st != READ_OK:
            self.retries_exhausted += 1
            return None
        slot, gen = got
        if slot < 0:
            return None
        if self._gen_list[slot] != gen:
            self._index_epoch = -1  # registered after our last refresh
            self._refresh_index()
        return self._names[slot] if self._gen_list[slot] == gen else None
