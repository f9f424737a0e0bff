"""ScoreReader: a scheduler's view of the published scores, straight from shared memory.

The reader maps the engine's segment read-only (a buggy scheduler cannot
corrupt scores) and copies what it needs out of the score buffer of the
latest epoch through the latch (`shm_engine.core.seqlock`).  No call makes a
syscall or touches a socket: reads are loads from the mapping, plus a
monotonic clock read (vDSO) for ``age_s``.

Latch reads.  Every read goes through ``read_consistent``, the one retry
loop, and the reader keeps the epoch it returned.  ``score``, ``state`` and
``top`` first try a single copy from that epoch's buffer, accepted if
``still_newest`` says no newer epoch was published meanwhile (one load of the
latch per call); anything unusual -- a new tick, nothing published, a node
the index does not know -- goes to their slow path through
``read_consistent``.  A copy never trusts a value it read (a slot, a length)
before the latch accepts it: garbage slots are range-checked, never followed.

Node names live in the registry region, written by the ingest.  The reader
caches ``name -> (slot, generation)`` and refreshes only the slots whose
generation moved (one vectorised compare, then `registry.read_node_id` per
slot); a score is returned only when the buffer's generation for the slot
matches, so a slot reused by another node is never read as the old one.

Errors, from the caller's side (`shm_engine.core.errors`): `NothingPublished`
before the first tick; `UnknownNode` (a ``KeyError``) for a node the latest
tick has no score for; `ReadContention` when the writer lapped the reader on
every retry and no earlier copy is held.  With an earlier copy the call serves
it instead and counts ``retries_exhausted``; `is_stale` tells a stalled
engine apart.

A stopped engine.  A segment outlives its engine in the mappings of its
readers (and in ``/dev/shm`` after a SIGKILL), frozen.  `engine_alive` says
whether the engine that publishes into it still runs: False once it is
stopping (the header's ``stopping``) or its supervisor is dead.  It costs no
syscall while the supervisor beats (``supervisor_alive_mono``, at least once
a second): the process is looked up (`process_alive`) only when the beat is
older than `SUPERVISOR_SILENT_S`, at most once per `DEAD_CHECK_INTERVAL_S`.
Every slow path (``snapshot``, ``pick``, ``top`` and ``score``/``state``
when they cannot serve from the fast path) asks it and raises
`EngineStopped`; the fast paths do not ask, but once anything has seen the
engine gone they fall through to the slow path too.  A reader whose calls
all take the fast path learns it from ``is_stale`` or ``engine_alive``.
``attach`` refuses a segment whose engine is gone.  The supervisor must be
visible to the reader (the same pid namespace), or a reader could take a
hung supervisor for a dead one.
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import numpy as np

from clients.claims import Claim, ClaimCounter, ClaimTable, NodeFeedback, SinceTick
from clients.pick import DEFAULT_D
from clients.pick import pick as _pick
from clients.view import SnapshotView
from kernels.params import N_WEIGHTS, WEIGHT_NAMES
from shm_engine.core.errors import (
    EngineNotRunning,
    EngineStopped,
    NothingPublished,
    ReadContention,
    ShmEngineError,
    SnapshotExpired,
    UnknownNode,
)
from shm_engine.core.registry import read_node_id, read_node_meta
from shm_engine.core.runtime import DEFAULT_NAME
from shm_engine.core.segment import Segment, process_alive
from shm_engine.core.seqlock import (
    DEFAULT_MAX_RETRIES,
    READ_NOTHING_PUBLISHED,
    READ_OK,
    read_begin,
    read_consistent,
    still_newest,
)
from shm_engine.core.states import STATE_NAMES, NodeState

__all__ = [
    "ScoreReader",
    "Snapshot",
    "SnapshotView",
    "NothingPublished",
    "UnknownNode",
    "ReadContention",
    "SnapshotExpired",
    "EngineStopped",
    "Claim",
    "NodeFeedback",
    "SUPERVISOR_SILENT_S",
    "DEAD_CHECK_INTERVAL_S",
]

#: A supervisor beat older than this makes `ScoreReader.engine_alive` look
#: the process up (the supervisor beats at least once a second).
SUPERVISOR_SILENT_S = 3.0
#: Looked up at most this often while the beat stays old.
DEAD_CHECK_INTERVAL_S = 1.0
#: How often ``attach(wait=True)`` tries again.
ATTACH_POLL_S = 0.05

_PUBLISHED = ("score", "raw", "wait", "qema", "liveness", "state")
_STATES = {int(s): s for s in NodeState}
_STATE_KEYS = tuple(
    STATE_NAMES[s] for s in NodeState
)  # NodeState(v) costs ~1 us; a dict hit ~30 ns


class Snapshot(NamedTuple):
    """One consistent copy of a published tick (immutable; a NamedTuple
    because a frozen dataclass costs several microseconds to build).

    Arrays are indexed by slot (``nodes[i]`` is the node in slot i, None for
    an empty slot); ``ranked`` holds slots, best first."""

    epoch: int
    tick_time: float  # wall-clock time of the tick (time.time())
    tick_mono: float  # monotonic time of the tick (time.monotonic())
    nodes: tuple  # node id per slot, None where no node
    score: np.ndarray
    raw: np.ndarray
    state: np.ndarray
    wait: np.ndarray
    qema: np.ndarray
    liveness: np.ndarray
    ranked: np.ndarray
    pressure: float
    weights: dict  # the weights in effect at `pressure`, by kernels.WEIGHT_NAMES
    counts: dict  # nodes per state name
    ejected: int = 0  # nodes ejected for consecutive errors in this tick

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
        self._registry = v.registry
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
        self._epoch = 0  # of the last consistent read: the hot paths' guess
        self._rng: np.random.Generator | None = None
        self.retries_exhausted = 0
        # Hot paths read through typed memoryviews: an item load is ~30 ns,
        # a numpy scalar index ~100 ns.
        self._seq_mv = v.header.latch_seq.data
        mvs = lambda col: tuple(b.views[col].data for b in self._bufs)  # noqa: E731
        self._score_mv, self._state_mv = mvs("score"), mvs("state")
        self._liveness_mv = mvs("liveness")
        self._recv_mv = v.table.recv_time.data
        self._gen_mv, self._ranked_mv = mvs("gen"), mvs("ranked")
        self._nranked_mv = tuple(b.n_ranked.data for b in self._bufs)
        self._gen_list = [0] * cap  # self._gens as Python ints, for per-slot checks
        self._published = tuple(
            tuple(b.views[c] for c in _PUBLISHED + ("gen",)) for b in self._bufs
        )
        self._ranked_views = tuple(b.views["ranked"] for b in self._bufs)
        self._sliced = [tuple(c[:0] for c in cols) for cols in self._published]  # view()
        self._meta_mv = tuple(
            (b.tick_wall.data, b.tick_mono.data, b.pressure.data, b.ejected.data)
            for b in self._bufs
        )
        self._rif_mv = mvs("rif")
        self._slots = v.table.slots  # pick reads .item(slot)
        self._counter: ClaimCounter | None = None  # claims counted read-only (pick)
        self._counter_tried = False
        self._since: tuple = (0, (None, None))  # (context address, SinceTick per buffer)
        self._claims: ClaimTable | None = None  # mapped on first use (read-write)
        self._stopped: str | None = None  # why the engine is gone, once seen
        self._next_dead_check = 0.0
        self._stopping_mv = v.header.stopping.data
        self._beat_mv = v.header.supervisor_alive_mono.data

    @classmethod
    def attach(
        cls,
        name: str = DEFAULT_NAME,
        *,
        owner: int | str | None = None,
        wait: bool = False,
        timeout: float = 60.0,
    ) -> ScoreReader:
        """Map engine ``name`` read-only.

        ``owner``: the user the engine runs as (uid or name); default this
        process's effective uid.  Raises EngineNotRunning if there is no
        segment, EngineStopped if its engine is gone, UntrustedSegment if it
        belongs to another user or others may write it, LayoutMismatch.

        ``wait=True``: wait up to ``timeout`` seconds for the engine to
        start and publish its first tick (an engine's first start compiles
        its kernels: tens of seconds, minutes on a busy machine), instead
        of raising EngineNotRunning or, on the first read, NothingPublished.
        After ``timeout`` it raises what it last saw (EngineNotRunning,
        EngineStopped or NothingPublished), saying how long it waited.
        UntrustedSegment and LayoutMismatch are raised at once."""
        if not wait:
            return cls._attach_once(name, owner)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reader = cls._attach_once(name, owner)
            except EngineNotRunning as err:  # EngineStopped too: a new run may come
                last: ShmEngineError = err
            else:
                if reader.epoch > 0:
                    return reader
                reader.close()
                last = NothingPublished(f"engine {name!r} has not published a tick yet")
            if time.monotonic() >= deadline:
                raise type(last)(f"{last} (waited {timeout:g} s)") from last
            time.sleep(ATTACH_POLL_S)

    @classmethod
    def _attach_once(cls, name: str, owner: int | str | None) -> ScoreReader:
        reader = cls(Segment.attach(name, readonly=True, owner=owner))
        try:
            reader._check_engine(time.monotonic())
        except BaseException:
            reader.close()
            raise
        return reader

    def close(self) -> None:
        if self._claims is not None:
            self._claims.close()  # unmaps once its open claims are released
            self._claims = None
        if self._counter is not None:
            self._counter.close()
            self._counter = None
        # A closed reader drops its views (the mapping can go); using it after
        # close is the caller's error, so the attributes stay typed as open.
        self._rif_mv = self._slots = None  # type: ignore[assignment]
        self._seq_mv = self._score_mv = self._state_mv = self._gen_mv = None  # type: ignore[assignment]
        self._liveness_mv = self._recv_mv = None  # type: ignore[assignment]
        self._stopping_mv = self._beat_mv = None  # type: ignore[assignment]
        self._ranked_mv = self._nranked_mv = None  # type: ignore[assignment]
        self._sliced = self._meta_mv = None  # type: ignore[assignment]
        self._bufs = None  # type: ignore[assignment]
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
        return read_begin(self._seq_mv)

    @property
    def age_s(self) -> float:
        """Seconds since the latest published tick (inf if none)."""
        st, _e, mono = read_consistent(self._seq_mv, lambda b: float(self._bufs[b].tick_mono[0]))
        if st != READ_OK or mono is None:
            return float("inf")
        return max(0.0, time.monotonic() - mono)

    def is_stale(self, max_age_s: float) -> bool:
        """True if no tick was published in the last ``max_age_s`` seconds:
        the engine is stalled (the last snapshot stays readable) or gone
        (`engine_alive` tells which; after this has seen it gone, the data
        calls raise EngineStopped)."""
        stale = self.age_s > max_age_s
        if stale:
            self._stopped_reason(time.monotonic())
        return stale

    def engine_alive(self) -> bool:
        """False once the engine that publishes here is stopping or its
        supervisor is dead: no tick will come into this segment again, and
        the data calls raise EngineStopped; attach again to follow a new
        run.  No syscall while the supervisor beats (module docstring)."""
        self._next_dead_check = 0.0  # asked explicitly: look it up if in doubt
        return self._stopped_reason(time.monotonic()) is None

    def _stopped_reason(self, now: float) -> str | None:
        """Why the engine is gone, or None while it runs (cached once gone)."""
        if self._stopped is not None:
            return self._stopped
        if self._stopping_mv[0]:
            why = "is stopping or stopped"
        elif now - self._beat_mv[0] < SUPERVISOR_SILENT_S:
            return None
        elif now < self._next_dead_check:
            return None
        else:
            self._next_dead_check = now + DEAD_CHECK_INTERVAL_S
            h = self._hdr
            pid = int(h.creator_pid[0])
            if process_alive(pid, int(h.creator_start[0])):
                return None
            why = f"has stopped: its supervisor (pid {pid}) is dead"
        self._stopped = why
        self._epoch = 0  # the fast paths now fall through to the slow ones
        return why

    def _check_engine(self, now: float) -> None:
        why = self._stopped_reason(now)
        if why is not None:
            raise EngineStopped(
                f"engine {self.name!r} {why}; this segment gets no more "
                "ticks: attach again once it runs"
            )

    # -------------------------------------------------------------- index --
    def _refresh_index(self) -> None:
        epoch = int(self._hdr.registry_epoch[0])
        if epoch == self._index_epoch:
            return
        hwm = min(int(self._hdr.slot_hwm[0]), self._gens.shape[0])
        gens = self._registry.slot_gen[:hwm].copy()
        changed = np.flatnonzero(gens != self._gens[:hwm])
        for s in changed.tolist():
            old = self._names[s]
            if old is not None and self._index.get(old, (-1,))[0] == s:
                del self._index[old]
            self._names[s] = None
            self._gens[s] = 0
            self._gen_list[s] = 0
            got = read_node_id(self._registry, s)
            if got is None:
                continue  # the ingest is mid-change; the next refresh gets it
            gen, key = got
            self._gens[s] = gen
            self._gen_list[s] = gen
            if key:
                name = key.decode("utf-8", "replace")
                self._names[s] = name
                self._index[name] = (s, gen)
        self._index_epoch = epoch

    def _lookup(self, node: str) -> tuple[int, int]:
        ent = self._index.get(node)
        if ent is None:
            self._refresh_index()
            ent = self._index.get(node)
            if ent is None:
                raise UnknownNode(
                    node, f"node {node!r} is not registered with engine {self.name!r}"
                )
        return ent

    def _read(self, copy_fn):
        """``read_consistent`` over this engine's latch: ``(epoch, copy)``, or
        ``(epoch, None)`` when the writer lapped every attempt (counted in
        ``retries_exhausted``).  Raises NothingPublished before the first
        tick, EngineStopped once the engine is gone."""
        self._check_engine(time.monotonic())
        st, epoch, got = read_consistent(self._seq_mv, copy_fn)
        if st == READ_OK:
            self._epoch = epoch
        elif st == READ_NOTHING_PUBLISHED:
            raise NothingPublished(f"engine {self.name!r} has not published a tick yet")
        else:
            self.retries_exhausted += 1
        return epoch, got

    def _contention(self, what: str) -> ReadContention:
        return ReadContention(
            f"engine {self.name!r} published faster than this reader could "
            f"copy {what} ({DEFAULT_MAX_RETRIES + 1} attempts), and no "
            "earlier copy is held; try again"
        )

    # ------------------------------------------------------- single values --
    def _read_slot(self, node: str, column):
        """``column[slot]`` of ``node`` from the latest epoch (``column``: a
        pair of memoryviews, one per buffer)."""
        # The hot path of a scheduler: one copy, one latch check.
        try:
            slot, gen = self._index[node]
        except KeyError:
            return self._read_slot_slow(node, column)
        epoch = self._epoch
        b = epoch & 1
        g = self._gen_mv[b][slot]
        value = column[b][slot]
        if g == gen and still_newest(self._seq_mv, epoch):
            return value
        return self._read_slot_slow(node, column)

    def _read_slot_slow(self, node: str, column):
        self._check_engine(time.monotonic())  # before UnknownNode: the cause
        for _attempt in range(2):
            slot, gen = self._lookup(node)
            gmv = self._gen_mv
            _epoch, got = self._read(lambda b, gmv=gmv, slot=slot: (gmv[b][slot], column[b][slot]))
            if got is not None:
                if got[0] == gen:
                    return got[1]
                self._refresh_index()  # the slot changed hands, or the index is old
                continue
            last = self._last
            if last is not None and slot < len(last.nodes) and last.nodes[slot] == node:
                if column is self._score_mv:
                    return last.score[slot]
                return last.liveness[slot] if column is self._liveness_mv else last.state[slot]
            raise self._contention(f"node {node!r}")
        raise UnknownNode(
            node,
            f"node {node!r} is registered but not scored yet by engine "
            f"{self.name!r}; it is from the next tick",
        )

    def score(self, node: str) -> float:
        """Published desirability of ``node`` in [0, 1] (0 unless HEALTHY or DEGRADED).

        Raises UnknownNode naming the node if the latest tick has no score for
        it, NothingPublished before the first tick, ReadContention if no
        consistent copy could be made (see the module docstring)."""
        return self._read_slot(node, self._score_mv)

    def state(self, node: str) -> NodeState:
        """Published state of ``node``; raises as `score` does."""
        return _STATES[self._read_slot(node, self._state_mv)]

    def liveness(self, node: str) -> float:
        """Published liveness L of ``node`` in [0, 1] (SCORING.md step 4: 1
        while heartbeats are fresh, 0 once DEAD); raises as `score` does."""
        return self._read_slot(node, self._liveness_mv)

    def node_age_s(self, node: str) -> float:
        """Seconds since the engine received ``node``'s latest heartbeat (its
        own monotonic clock, as liveness uses; this host's clock is the
        same).  Raises UnknownNode if ``node`` is not registered.  (The
        reader's ``age_s`` is the age of the latest tick.)"""
        self._check_engine(time.monotonic())
        slot, gen = self._lookup(node)
        recv = self._recv_mv[slot]
        if int(self._registry.slot_gen[slot]) != gen:
            self._refresh_index()
            slot, gen = self._lookup(node)
            recv = self._recv_mv[slot]
        return max(0.0, time.monotonic() - recv)

    def _meta(self, node: str) -> tuple[bytes, bytes]:
        self._check_engine(time.monotonic())
        for _attempt in range(2):
            slot, gen = self._lookup(node)
            got = read_node_meta(self._registry, slot, gen)
            if got is not None:
                return got
            self._index_epoch = -1  # the slot changed hands: look the node up again
            self._refresh_index()
        raise UnknownNode(node, f"node {node!r} is not registered with engine {self.name!r}")

    def zone(self, node: str) -> str:
        """The zone ``node``'s latest heartbeat gave ("" if none).  Raises
        UnknownNode if ``node`` is not registered."""
        return self._meta(node)[0].decode("utf-8", "replace")

    def labels(self, node: str) -> dict[str, str]:
        """The labels ``node``'s latest heartbeat gave ({} if none).  Raises
        UnknownNode if ``node`` is not registered."""
        raw = self._meta(node)[1]
        return json.loads(raw) if raw else {}

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

        Raises UnknownNode if ``node`` is not registered, SchedulerLimitReached
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
        meta = (
            buf.tick_wall[0],
            buf.tick_mono[0],
            buf.pressure[0],
            buf.weights[:N_WEIGHTS].tolist(),
            buf.counts[:5].tolist(),
            buf.ejected[0],
        )
        return cols, ranked, meta

    def snapshot(self) -> Snapshot:
        """One consistent copy of the latest tick (see `Snapshot`): stable,
        the caller's to keep.  `view` reads the same in place, without the
        copy, for as long as the latch allows.

        Raises NothingPublished before the first tick; ReadContention if no
        consistent copy could be made and none was made before (otherwise
        that earlier copy is returned)."""
        hwm = min(int(self._hdr.slot_hwm[0]), self._gens.shape[0])
        epoch, got = self._read(lambda b: self._copy(b, hwm))
        if got is None:
            if self._last is None:
                raise self._contention("a snapshot")
            return self._last
        cols, ranked, (wall, mono, pressure, weights, counts, ejected) = got
        meta = (
            float(wall),
            float(mono),
            float(pressure),
            dict(zip(WEIGHT_NAMES, weights, strict=True)),
            dict(zip(_STATE_KEYS, counts, strict=True)),
            int(ejected),
        )
        return self._snapshot_of(epoch, cols, ranked, meta)

    def _snapshot_of(self, epoch: int, cols: list, ranked: np.ndarray, meta: tuple) -> Snapshot:
        """A `Snapshot` of consistent copies: ``cols`` in _PUBLISHED order,
        then gen; ``meta`` (wall, mono, pressure, weights, counts, ejected)."""
        score, raw, wait, qema, liveness, state, gen = cols
        wall, mono, pressure, weights, counts, ejected = meta
        snap = Snapshot(
            epoch,
            wall,
            mono,
            self._nodes_for(gen, state),
            score,
            raw,
            state,
            wait,
            qema,
            liveness,
            ranked,
            pressure,
            weights,
            counts,
            ejected,
        )
        self._last = snap
        return snap

    def view(self) -> SnapshotView:
        """The latest tick in place: read-only views of the published
        buffer, no copy, the same cost at any number of nodes.  Valid until
        the engine begins rewriting that buffer, two ticks on: read, then
        check (``with reader.view() as v:``, ``v.still_valid()``); see
        `clients.view` for the rule.  ``v.copy()`` makes it a `Snapshot`.

        Raises NothingPublished before the first tick, EngineStopped once
        the engine is gone, ReadContention if the writer lapped every
        attempt to read the tick's scalars."""
        hwm = min(self._hdr.slot_hwm.item(0), len(self._gen_list))
        epoch, got = self._read(self._view_meta)
        if got is None:
            raise self._contention("a view")
        b = epoch & 1
        cols = self._sliced[b]
        if len(cols[0]) != hwm:
            cols = self._sliced[b] = tuple(a[:hwm] for a in self._published[b])
        n_ranked, meta = got
        ranked = self._ranked_views[b][: min(n_ranked, hwm)]
        return SnapshotView(self, self._seq_mv, epoch, cols, ranked, meta)

    def _view_meta(self, b: int) -> tuple:
        """The per-tick scalars a view copies: (n_ranked, (wall, mono,
        pressure, ejected))."""
        wall, mono, pressure, ejected = self._meta_mv[b]
        return self._nranked_mv[b][0], (wall[0], mono[0], pressure[0], ejected[0])

    def _weights_counts(self, b: int) -> tuple[dict, dict]:
        """Buffer ``b``'s weights and counts as `Snapshot` holds them (not
        checked: the caller checks the latch after)."""
        buf = self._bufs[b]
        return (
            dict(zip(WEIGHT_NAMES, buf.weights[:N_WEIGHTS].tolist(), strict=True)),
            dict(zip(_STATE_KEYS, buf.counts[:5].tolist(), strict=True)),
        )

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
        """The best ``k`` nodes as ``(node, score)``, from the published ranking.

        Raises NothingPublished before the first tick.  If no consistent copy
        could be made, returns the top of the last snapshot (``[]`` if none)."""
        if k <= 0:
            return []
        # One copy, one latch check, as in _read_slot.  Every slot must be one
        # whose node we know at the generation the buffer was scored with; a
        # torn copy may hold garbage slots, which raise IndexError (or fail
        # the generation check) and are caught before anything is returned.
        epoch = self._epoch
        b = epoch & 1
        sc, gm, known, names = self._score_mv[b], self._gen_mv[b], self._gen_list, self._names
        try:
            slots = self._ranked_mv[b][: min(self._nranked_mv[b][0], k)].tolist()
            out: list[tuple[str, float]] = [
                (nm, sc[s])
                for s in slots
                if s >= 0 and known[s] == gm[s] and (nm := names[s]) is not None
            ]
        except IndexError:
            return self._top_slow(k)
        if len(out) == len(slots) and still_newest(self._seq_mv, epoch):
            return out
        return self._top_slow(k)

    def _top_slow(self, k: int) -> list[tuple[str, float]]:
        """`top` through read_consistent, refreshing the node index when a
        ranked slot holds a node (or generation) we have not seen yet."""
        _epoch, got = self._read(lambda b: self._top_copy(b, k))
        if got is None:
            return self._last.top(k) if self._last is not None else []
        slots, scores, gens = got
        known = self._gen_list
        if [known[s] for s in slots] != gens:
            self._index_epoch = -1  # a node we have not seen yet
            self._refresh_index()
        names = self._names
        return [
            (names[s], sc)
            for s, sc, g in zip(slots, scores, gens, strict=True)
            if known[s] == g and names[s] is not None
        ]

    def _top_copy(self, b: int, k: int):
        n = min(self._nranked_mv[b][0], k)
        sc, gm, cap = self._score_mv[b], self._gen_mv[b], len(self._gen_list)
        # A torn copy may hold garbage slots: range-check, never fault.
        slots = [s for s in self._ranked_mv[b][:n].tolist() if 0 <= s < cap]
        return slots, [sc[s] for s in slots], [gm[s] for s in slots]

    # ---------------------------------------------------------------- pick --
    def _count_at(self) -> int:
        """Address of a context `SinceTick` counts through: the claim
        table's if this reader claims, else a read-only mapping of the
        claims segment made on first use; 0 if the engine has none."""
        if self._claims is not None:
            return self._claims._at
        if self._counter is None and not self._counter_tried:
            self._counter_tried = True
            try:
                self._counter = ClaimCounter(self._seg)
            except EngineNotRunning:
                pass  # no claims segment: pick without the discount
        return self._counter.at if self._counter is not None else 0

    def pick(
        self, exclude=None, rng: np.random.Generator | None = None, *, d: int = DEFAULT_D
    ) -> str | None:
        """Choose one node for a job without herding (see `clients.pick`).

        Power of ``d`` choices on the published desirability: ``d`` distinct
        ranked nodes drawn uniformly, and the best of them returned, each
        weighed by the claims made on it since the tick that produced its
        score: ``score / (1 + claims / slots)``, claims being the live
        in-flight count (every scheduler's) minus the ``rif`` the tick
        published (floored at 0), ``slots`` the node's reported worker
        count (1 when not reported).  Only the ``d`` candidates are read, so
        a pick costs O(d) whatever the number of nodes.  A reader that never
        claimed maps the claims segment read-only to count; an engine
        without a claims segment gets picks without the discount.

        ``exclude``: node names never to return (e.g. already tried for this
        job); ``rng``: a seeded ``numpy.random.Generator`` for reproducible
        picks (default: the reader's own).  Returns None when no node
        qualifies (nothing ranked, or all excluded): wait for the next tick
        or fall back."""
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
        at = self._count_at()
        if at != self._since[0]:
            self._since = (
                at,
                tuple(
                    SinceTick(at, g, r) if at else None
                    for g, r in zip(self._gen_mv, self._rif_mv, strict=True)
                ),
            )
        per_buffer = self._since[1]
        slots = self._slots

        def choose(b):
            buf = self._bufs[b]
            since = per_buffer[b]
            try:
                slot = _pick(
                    buf.views["score"],
                    buf.views["ranked"],
                    int(buf.n_ranked[0]),
                    rng,
                    ex,
                    d=d,
                    claims=since,
                    slots=slots,
                )
                return slot, (self._gen_mv[b][slot] if slot >= 0 else 0)
            except (IndexError, ValueError):
                return -2, 0  # a torn copy: the latch check makes us retry

        _epoch, got = self._read(choose)
        if got is None:
            return None
        slot, gen = got
        if slot < 0:
            return None
        if self._gen_list[slot] != gen:
            self._index_epoch = -1  # registered after our last refresh
            self._refresh_index()
        return self._names[slot] if self._gen_list[slot] == gen else None
