"""`shm-engine mirror`: a local copy of one or more engines' scores, fed over ZeroMQ.

A mirror subscribes to the score feed of one engine (a *mirror*) or of
several, one per zone (a *federating mirror*), and publishes what it
receives into a segment of its own with the engine's layout, through the
same latch.  `clients.ScoreReader`, ``pick()``, ``top`` and ``status`` read a
mirror exactly as they read an engine: a mirror is an engine whose "tick" is
the arrival of a frame.

Ownership: the mirror process plays the supervisor, the ingest and the tick
worker of its segments at once: it creates the scores segment ``/NAME``, the
claims segment ``/NAME.claims`` (schedulers on this host claim there) and the
mirror segment ``/NAME.mirror`` (per-zone freshness, per-slot ``excluded``),
each O_CREAT|O_EXCL with a stale one reclaimed, and unlinks all three on every
exit but SIGKILL (after which the next mirror of the name reclaims them).

Slots: upstream ``i`` owns the mirror slots ``[base_i, base_i + span_i)``
(``span`` = ``--zone-slots``, default ``capacity // upstreams``); its slot
``s`` is mirror slot ``base_i + s``, so zones never collide and a node keeps
its slot while its engine keeps it.  Rows of upstream slots beyond the span
are dropped and counted (``overflow``).  A mirror slot's registration
generation is the mirror's own (a new upstream registration, or the same
slot of a restarted engine, is a new registration here too), so claims
taken on the mirror can never be counted for another node.

Freshness: an upstream whose latest frame is older than ``--stale-after``
(default 0.5 s) is *stale*: its nodes keep their last published scores but
leave the ranking (so ``pick()`` and ``top`` skip them) and are marked
``excluded`` in the mirror segment (placement must skip them), until its
frames come back and a full frame has resynchronised it.  The published
``tick_mono`` is the receive time of the newest frame of any upstream, so
``ScoreReader.is_stale(s)`` on the mirror is true once no upstream has
published for ``s``: a mirror is never silently frozen.

Gaps: frames carry a sequence number per stream (a run of the engine's feed
child).  A gap (a slow subscriber's frames dropped at the high-water mark,
or a frame refused) or a new stream makes the mirror ignore deltas of that
upstream and ask for a full frame (a subscription to
`format.SNAPSHOT_TOPIC` plus a nonce), asked again every
`SNAPSHOT_RETRY_S` until one arrives.

Hostile or broken upstreams: each SUB socket caps its messages
(``ZMQ_MAXMSGSIZE``) at `format.score_frame_bound` of the mirror's capacity
(plus `format.WIRE_SLACK`): nothing larger is ever allocated.  ZeroMQ drops
the connection that carried a larger frame and, that being a protocol error,
does not reconnect it by itself; the mirror watches each socket's monitor
and, when a disconnection is not followed by ZeroMQ's own reconnection
within `RECONNECT_GRACE_S`, counts the frame (reason ``oversize``) and
reconnects.  A refused handshake (a CURVE key the feed does not admit) is
not a frame: logged once, retried every `HANDSHAKE_RETRY_S`, not counted.
A frame the decoder refuses is counted by reason (`layout.REFUSAL_REASONS`)
and changes nothing; either way the upstream waits for a full frame.  A
frame is applied only to its own zone's slots (`_local`), so no frame of
one upstream reaches another zone's slots.

Node ids: a node id is registered at one mirror slot at a time.  A
registration whose id another slot holds (another zone reports the same id)
is refused and counted (``duplicates``); the first holder keeps the id, and
the refused node is registered from its zone's first full frame after the
id is free.  Within a frame, releases are applied before registrations, so
a node that moves between slots of one engine is never a duplicate.

Feedback upstream: every `FEEDBACK_INTERVAL_S` the mirror reads its claims
segment and sends each upstream that announced a feedback port (ZeroMQ
PUSH) the in-flight counts that changed and the releases since the last
send, by the upstream's slot and generation; every `FEEDBACK_FULL_S` the
whole in-flight set, which also tells the engine the mirror is alive.

Rules for callers: one mirror per name; the segments are its alone (it is
their only writer); node ids must be unique across zones (a duplicate is
refused, see above).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import zmq
from numba import njit

from kernels.ranking import make_rank_scratch, radix_ranked
from shm_engine.core.claims import ClaimsSegment, in_flight_by_slot, reap_dead_leases
from shm_engine.core.errors import ConfigError
from shm_engine.core.layout import (
    MAX_UPSTREAMS,
    MIRROR_LAYOUT_VERSION,
    MIRROR_MAGIC,
    OUT_ERR,
    OUT_OK,
    REFUSAL_REASONS,
    UPSTREAM_FRESH,
    UPSTREAM_NEVER,
    UPSTREAM_STALE,
    ZONE_BYTES,
    MirrorViews,
    mirror_layout_for,
)
from shm_engine.core.rows import slot_change_begin, slot_change_end
from shm_engine.core.runtime import log_event
from shm_engine.core.segment import (
    MIRROR_SUFFIX,
    SCORES_FORBIDDEN,
    MappedSegment,
    Segment,
    check_identity,
    create_exclusive,
    expected_uid,
    map_existing,
    posix_name,
    stamp_identity,
    unlink_on_error,
)
from shm_engine.core.seqlock import write_begin, write_end
from shm_engine.core.states import UNREGISTERED
from shm_engine.feed import format as ff

__all__ = [
    "Mirror",
    "MirrorSegment",
    "Upstream",
    "cmd_mirror",
    "mirror_posix_name",
    "read_mirror_status",
    "DEFAULT_STALE_AFTER_S",
    "FEEDBACK_INTERVAL_S",
]

DEFAULT_STALE_AFTER_S = 0.5
FEEDBACK_INTERVAL_S = 0.002
FEEDBACK_FULL_S = 0.5
SNAPSHOT_RETRY_S = 0.25
LEASE_CHECK_S = 0.2
#: Above one changed row in this many ranked ones, the ranking is rebuilt
#: whole (radix) instead of merged.
RERANK_FULL_SHARE = 16
IDLE_POLL_MS = 20  # the loop's longest wait without frames or schedulers (staleness checks)
LAG_WINDOW = 1024
#: After a disconnection, how long ZeroMQ has to announce its own reconnection
#: (it does at once, after a peer's close) before the mirror takes it for a
#: connection dropped on a protocol error (an oversized frame) and reconnects.
RECONNECT_GRACE_S = 0.1
#: After a failed handshake (a CURVE key the feed does not admit), ZeroMQ
#: does not try again either; the mirror does, this often (the key may be
#: admitted later), and counts no frame.
HANDSHAKE_RETRY_S = 1.0
_WATCHED = (
    zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_REASON_INDEX = {r: i for i, r in enumerate(REFUSAL_REASONS)}
_NONE = np.iinfo(np.uint64).max
_LOW32 = np.uint64(0xFFFF_FFFF)
_FLOATS = ff.ROW_FLOATS[:-1]  # the buffer's; "slots" goes to the heartbeat table


def mirror_posix_name(name: str) -> str:
    """The POSIX shm name of mirror ``name``'s mirror segment."""
    return posix_name(name) + MIRROR_SUFFIX


class MirrorSegment(MappedSegment):
    """A mapped mirror segment ``/NAME.mirror`` and its views (``.views``)."""

    views: MirrorViews

    def __init__(self, name: str, mm, capacity: int, readonly: bool, owner_uid=None):
        super().__init__(name, mirror_posix_name(name), mm, readonly, owner_uid)
        self.views = MirrorViews(mm, mirror_layout_for(capacity))

    @classmethod
    def create(cls, name: str, capacity: int, *, mode: int = 0o600) -> MirrorSegment:
        layout = mirror_layout_for(capacity)
        pname = mirror_posix_name(name)
        mm = create_exclusive(name, pname, layout.size, mode, MIRROR_MAGIC, SCORES_FORBIDDEN)
        seg = cls(name, mm, capacity, readonly=False)
        with unlink_on_error(seg, pname):
            h = seg.views.header
            stamp_identity(h, MIRROR_LAYOUT_VERSION, capacity, layout.size)
            seg.views.zone_index[:] = 255
            h.magic[0] = MIRROR_MAGIC  # last: the segment is now valid
        return seg

    @classmethod
    def attach(cls, name: str, *, owner: int | str | None = None) -> MirrorSegment:
        """Map mirror ``name``'s mirror segment read-only.  Raises
        EngineNotRunning if there is none (the engine is not a mirror)."""
        pname = mirror_posix_name(name)
        uid = expected_uid(owner)
        mm, _size = map_existing(name, pname, True, "engine.shm_mode", uid, SCORES_FORBIDDEN)
        try:
            capacity = check_identity(
                name, pname, mm, MIRROR_MAGIC, MIRROR_LAYOUT_VERSION, "mirror"
            )
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, capacity, True, uid)


@dataclass
class Upstream:
    """One engine the mirror follows (a zone)."""

    index: int
    endpoint: str
    zone: str  # label; "" until the first frame names the engine
    base: int
    span: int
    stream: int = 0
    engine_run: int = 0
    epoch: int = 0  # upstream epoch of the latest frame applied
    seq: int = 0
    synced: bool = False  # a full frame of the current stream was applied
    hwm: int = 0  # upstream slot_hwm (capped at span)
    last_frame: float = 0.0  # mirror monotonic time of its latest frame
    tick_wall: float = 0.0
    pressure: float = 0.0
    weights: tuple = ()
    counts: tuple = ()
    live: int = 0
    registered: int = 0
    ejected: int = 0
    feedback_port: int = 0
    state: int = UPSTREAM_NEVER
    snapshot_topic: bytes | None = None
    snapshot_asked: float = -1e9
    lags: np.ndarray = field(default_factory=lambda: np.zeros(LAG_WINDOW))
    n_lag: int = 0
    # feedback bookkeeping (mirror slots base..base+span)
    sent_in_flight: np.ndarray | None = None
    seen_ok: np.ndarray | None = None
    seen_err: np.ndarray | None = None
    seen_gen: np.ndarray | None = None
    feedback_seq: int = 0
    feedback_full_at: float = 0.0
    # refusals
    dropped_at: float = 0.0  # monotonic time of a disconnection not yet explained
    handshake_failed: bool = False  # the latest handshake failed (the drop follows)
    refusals_logged: set = field(default_factory=set)
    duplicates_logged: set = field(default_factory=set)


class Mirror:
    """The mirror's state over its three segments; `apply` a decoded frame of
    upstream ``i``, `publish` an epoch, `check_fresh` marks stale zones.
    Sockets are `run`'s (and `cmd_mirror`'s); tests may drive this directly.

    ``drop_frame(i, seq)``: a test hook; frames it returns True for are
    dropped as a slow subscriber's would be."""

    def __init__(
        self,
        name: str,
        endpoints: list[tuple[str, str]],
        *,
        capacity: int = 16384,
        zone_slots: int | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        max_schedulers: int = 64,
        mode: int = 0o600,
        claims_mode: int = 0o600,
        drop_frame=None,
    ):
        if not 1 <= len(endpoints) <= MAX_UPSTREAMS:
            raise ConfigError(f"--from: 1..{MAX_UPSTREAMS} upstreams, got {len(endpoints)}")
        span = zone_slots if zone_slots is not None else capacity // len(endpoints)
        if span < 1 or span * len(endpoints) > capacity:
            raise ConfigError(
                f"--zone-slots {span} x {len(endpoints)} upstreams must fit --capacity {capacity}"
            )
        if not 0 < stale_after_s <= 60:
            raise ConfigError(f"--stale-after {stale_after_s} must be in (0, 60] seconds")
        self.name = name
        self.capacity = capacity
        self.stale_after_s = stale_after_s
        self.drop_frame = drop_frame
        self.mirror_id = int.from_bytes(os.urandom(8), "little")
        self.ups = [Upstream(i, ep, zone, i * span, span) for i, (zone, ep) in enumerate(endpoints)]
        self.seg = Segment.create(name, capacity, mode=mode, endpoint=endpoints[0][1])
        self.claims: ClaimsSegment | None = None
        self.mseg: MirrorSegment | None = None
        try:
            self.claims = ClaimsSegment.create(name, capacity, max_schedulers, mode=claims_mode)
            self.mseg = MirrorSegment.create(name, capacity, mode=mode)
        except BaseException:
            self.close()
            raise
        v = self.seg.views
        self.views = v
        self.mv = self.mseg.views
        self.reg = v.registry
        h = v.header
        pid = os.getpid()
        h.supervisor_pid[0] = pid
        h.ingest_pid[0] = pid
        h.ticker_pid[0] = pid
        mh = self.mv.header
        mh.n_upstreams[0] = len(self.ups)
        mh.stale_after_s[0] = stale_after_s
        for up in self.ups:
            self.mv.write_up_str("endpoint", up.index, up.endpoint)
            self.mv.write_up_str("zone", up.index, up.zone)
            self.mv.up.base[up.index] = up.base
            self.mv.up.span[up.index] = up.span
            self.mv.zone_index[up.base : up.base + up.span] = up.index
        # Private state of every mirror slot; published through the latch.
        self.cols = {c: np.zeros(capacity) for c in _FLOATS}
        self.state = np.full(capacity, UNREGISTERED, np.uint8)
        self.gen_pub = np.zeros(capacity, np.uint64)  # buffer gen: mirror gen or 0
        self.ident_up_gen = np.full(capacity, _NONE, np.uint64)  # registration mirrored
        self.row_up_gen = np.full(capacity, _NONE, np.uint64)  # registration of the row
        self.excluded = np.zeros(capacity, bool)
        self._dirty = np.zeros(capacity, bool)
        self._dirty_prev = np.zeros(capacity, bool)
        self._hwm = 0
        self._order = np.zeros(capacity, np.int32)
        self._order_tmp = np.zeros(capacity, np.int32)
        self._n_ranked = 0
        self._rerank = True
        self._rank_scratch = make_rank_scratch(capacity)
        self._counted_epoch = -1  # registry_epoch of the last node count
        self._holder: dict[bytes, int] = {}  # node id -> the mirror slot holding it
        self.epoch = 0
        self.publishes_pending = False
        self.stats_bad = 0
        self._feedback_held = False  # some in-flight count forwarded is not 0

    # -------------------------------------------------------------- close --
    def close(self, unlink: bool = True) -> None:
        for seg in (self.mseg, self.claims, self.seg):
            if seg is None:
                continue
            seg.close()
            if unlink:
                seg.unlink()
        self.mseg = self.claims = None

    # --------------------------------------------------------------- apply --
    def apply(self, i: int, fr: ff.ScoreFrame, now: float) -> str:
        """Apply frame ``fr`` of upstream ``i`` received at ``now``; returns
        ``"applied"``, ``"ignored"`` (a delta while unsynced: a full frame
        is wanted) or ``"gap"`` (a sequence gap or a new stream: ask for
        a full frame)."""
        up = self.ups[i]
        mv = self.mv
        mv.up.frames[i] += 1
        mv.up.bytes[i] += fr.nbytes
        result = "applied"
        if fr.stream != up.stream:
            if up.stream:
                log_event(
                    "INFO", "mirror_new_stream", zone=up.zone, feed_stream=f"{fr.stream:016x}"
                )
            up.stream, up.synced = fr.stream, False
            mv.up.stream[i] = fr.stream
            result = "gap"
        elif up.synced and fr.seq != up.seq + 1:
            up.synced = False
            mv.up.gaps[i] += 1
            result = "gap"
        up.seq = fr.seq
        if fr.kind != ff.KIND_FULL and not up.synced:
            return result if result == "gap" else "ignored"
        if fr.engine_run != up.engine_run:
            # Another run of the engine: its registrations are new ones even
            # where slot and generation repeat, so none is carried over.
            self.ident_up_gen[up.base : up.base + up.span] = _NONE
            up.engine_run = fr.engine_run
        if not up.zone:
            up.zone = fr.engine
            mv.write_up_str("zone", i, up.zone)
        mv.write_up_str("engine", i, fr.engine)
        if fr.kind == ff.KIND_FULL:
            self._apply_full(up, fr)
            up.synced = True
            mv.up.snapshots[i] += 1
        else:
            self._apply_idents(up, fr.idents)
            self._apply_rows(up, fr.rows)
        up.hwm = min(fr.slot_hwm, up.span)
        up.last_frame = now
        up.tick_wall = fr.tick_wall
        up.pressure, up.weights, up.counts = fr.pressure, fr.weights, fr.counts
        up.live, up.registered, up.ejected = fr.live, fr.registered, fr.ejected
        up.feedback_port = fr.feedback_port
        mv.up.last_frame_mono[i] = now
        up.epoch = fr.epoch  # in the mirror segment once published
        if fr.tick_interval_ms:
            self.views.header.tick_interval_ms[0] = fr.tick_interval_ms
        if up.state != UPSTREAM_FRESH:
            self._set_state(up, UPSTREAM_FRESH)
        self._hwm = max(self._hwm, up.base + up.hwm)
        self.publishes_pending = True
        return "applied"

    def refuse(self, i: int, reason: str) -> None:
        """Count a frame of upstream ``i`` refused for ``reason`` (one of
        `layout.REFUSAL_REASONS`); nothing of it was applied, and the
        upstream's deltas now wait for a full frame."""
        up = self.ups[i]
        self.mv.up.bad_frames[i] += 1
        self.mv.up.refused[i, _REASON_INDEX[reason]] += 1
        up.synced = False
        if reason not in up.refusals_logged:  # once per reason: a flood logs nothing more
            up.refusals_logged.add(reason)
            log_event(
                "WARN", "mirror_frame_refused", zone=up.zone, endpoint=up.endpoint, why=reason
            )

    def _local(self, up: Upstream, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the ``records`` of upstream slots within the span, their mirror
        slots); the others are counted as overflow."""
        slots = records["slot"].astype(np.int64)
        inside = slots < up.span
        if inside.all():  # the rule: no copy of the records
            return records, slots + up.base
        self.mv.up.overflow[up.index] += int((~inside).sum())
        return records[inside], slots[inside] + up.base

    def _apply_full(self, up: Upstream, fr: ff.ScoreFrame) -> None:
        listed = np.zeros(up.span, bool)
        at = fr.idents["slot"].astype(np.int64)
        listed[at[at < up.span]] = True  # (overflow is counted by _apply_idents)
        reg = self.reg.registered[up.base : up.base + up.span]
        for s in np.flatnonzero((reg != 0) & ~listed).tolist():
            self._free(up.base + s)
        self._apply_idents(up, fr.idents)
        hwm = min(fr.slot_hwm, up.span)
        # Rows beyond the upstream's hwm hold no node any more.
        tail = np.arange(up.base + hwm, up.base + max(up.hwm, hwm))
        self.state[tail] = UNREGISTERED
        self._dirty[tail] = True
        self._apply_rows(up, fr.rows)

    def _apply_idents(self, up: Upstream, idents: np.ndarray) -> None:
        if not len(idents):
            return
        idents, mslots = self._local(up, idents)
        reg = self.reg
        label = up.zone.encode("utf-8")[: ZONE_BYTES - 1]
        changed = False
        # Releases first: an id that moves between slots is free again
        # before its new slot registers it.  (Vectorised: a full frame lists
        # every node, and few of them change.)
        ends = (reg.registered[mslots] != 0) & (
            (idents["registered"] == 0) | (self.ident_up_gen[mslots] != idents["gen"])
        )
        for j in np.flatnonzero(ends).tolist():
            rec, m = idents[j], int(mslots[j])
            if not rec["registered"] or _id_at(reg, m) != bytes(rec["node"]).rstrip(b"\0"):
                self._free(m)
                changed = True
        for rec, m in zip(idents, mslots.tolist(), strict=True):
            if not rec["registered"]:
                continue
            g = np.uint64(rec["gen"])
            node = bytes(rec["node"]).rstrip(b"\0")
            zone = bytes(rec["zone"]).rstrip(b"\0") or label
            if not node:
                self.stats_bad += 1
                continue
            if reg.registered[m] and self.ident_up_gen[m] == g:
                if bytes(reg.zone[m]).rstrip(b"\0") != zone:
                    slot_change_begin(reg.meta_version, m)
                    _put(reg.zone[m], zone)
                    slot_change_end(reg.meta_version, m)
                    changed = True
                continue
            holder = self._holder.get(node)
            if holder is not None and holder != m:
                # Another slot (another zone's node) holds the id: it keeps it.
                self.mv.up.duplicates[up.index] += 1
                if len(up.duplicates_logged) < 16 and node not in up.duplicates_logged:
                    up.duplicates_logged.add(node)  # the first few ids, each once
                    log_event(
                        "WARN",
                        "mirror_duplicate_node",
                        zone=up.zone,
                        node=node.decode("utf-8", "replace"),
                        held_by_zone=self.ups[int(self.mv.zone_index[holder])].zone,
                    )
                continue
            slot_change_begin(reg.slot_gen, m)
            reg.registered[m] = 1
            _put(reg.node_id[m], node)
            _put(reg.zone[m], zone)
            reg.labels_len[m] = 0
            slot_change_end(reg.slot_gen, m)
            self._holder[node] = m
            self.ident_up_gen[m] = g
            self._regen(m)
            changed = True
        if changed:
            h = self.views.header
            h.registry_epoch[0] += 1
            h.slot_hwm[0] = max(int(h.slot_hwm[0]), int(mslots.max()) + 1 if len(mslots) else 0)

    def _free(self, m: int) -> None:
        reg = self.reg
        node = _id_at(reg, m)
        if self._holder.get(node) == m:
            del self._holder[node]
        slot_change_begin(reg.slot_gen, m)
        reg.registered[m] = 0
        reg.node_id[m] = 0
        reg.zone[m] = 0
        slot_change_end(reg.slot_gen, m)
        self.ident_up_gen[m] = _NONE
        self.views.header.registry_epoch[0] += 1
        self._regen(m)

    def _regen(self, m: int) -> None:
        ok = self.reg.registered[m] and self.row_up_gen[m] == self.ident_up_gen[m]
        self.gen_pub[m] = self.reg.slot_gen[m] if ok else 0
        self._dirty[m] = True

    def _apply_rows(self, up: Upstream, rows: np.ndarray) -> None:
        if not len(rows):
            return
        r, m = self._local(up, rows)
        if not len(m):
            return  # every row beyond the span (counted)
        _slots, states, gens, floats = ff.unpack_rows(r)
        for i, c in enumerate(_FLOATS):
            self.cols[c][m] = floats[i]
        self.views.table.slots[m] = floats[len(_FLOATS)]
        self.state[m] = states
        self.row_up_gen[m] = gens
        match = (gens == self.ident_up_gen[m]) & (self.reg.registered[m] != 0)
        self.gen_pub[m] = np.where(match, self.reg.slot_gen[m], np.uint64(0))
        self._dirty[m] = True
        h = self.views.header
        top = int(m.max()) + 1
        if top > int(h.slot_hwm[0]):
            h.slot_hwm[0] = top

    # ----------------------------------------------------------- freshness --
    def _set_state(self, up: Upstream, state: int) -> None:
        up.state = state
        self.mv.up.state[up.index] = state
        stale = state != UPSTREAM_FRESH
        sl = slice(up.base, up.base + up.span)
        self.excluded[sl] = stale
        self.mv.excluded[sl] = 1 if stale else 0
        self._rerank = True
        self.publishes_pending = True
        if state == UPSTREAM_STALE:
            log_event("WARN", "mirror_zone_stale", zone=up.zone, endpoint=up.endpoint)
        elif state == UPSTREAM_FRESH:
            log_event("INFO", "mirror_zone_fresh", zone=up.zone, endpoint=up.endpoint)

    def check_fresh(self, now: float) -> None:
        """Mark upstreams silent for ``stale_after_s`` stale."""
        for up in self.ups:
            if up.state == UPSTREAM_FRESH and now - up.last_frame > self.stale_after_s:
                up.synced = False  # its next frames must start from a full one
                self._set_state(up, UPSTREAM_STALE)

    # ------------------------------------------------------------- publish --
    def publish(self, now: float) -> int:
        """Publish the mirrored state as the next epoch; returns it."""
        v = self.views
        h = v.header
        latch = h.latch_seq
        epoch = write_begin(latch)
        buf = v.buffers[epoch & 1]
        bv = buf.views
        # The buffer holds epoch - 2: bring it up to date with the rows
        # changed by both publishes since.
        rows = np.flatnonzero(self._dirty | self._dirty_prev)
        for c in _FLOATS:
            bv[c][rows] = self.cols[c][rows]
        bv["state"][rows] = self.state[rows]
        bv["gen"][rows] = self.gen_pub[rows]
        hwm = self._hwm
        changed = np.flatnonzero(self._dirty[:hwm])
        # Unranked: a stale zone's slots, and rows whose registration is not
        # mirrored (a refused duplicate id, an identity still to come).
        blocked = self.excluded | (self.gen_pub == 0)
        if self._rerank or len(changed) * RERANK_FULL_SHARE > max(self._n_ranked, 1):
            # The engine's own ranking (SCORING.md step 14): score descending,
            # then slot ascending, from the candidates in slot order.
            st, sc = self.state[:hwm], self.cols["score"][:hwm]
            elig = np.flatnonzero((st <= 1) & (sc > 0) & ~blocked[:hwm])
            m = len(elig)
            self._order[:m] = elig
            radix_ranked(self.cols["score"], self._order, m, self._rank_scratch)
            self._n_ranked = m
            self._rerank = False
        elif len(changed):
            # A few rows moved: take them out of the ranking and merge them
            # back in where they now belong (the same order, in O(n)).
            self._n_ranked = rerank(
                self._order,
                self._n_ranked,
                changed,
                self.cols["score"],
                self.state,
                blocked,
                self._dirty,
                self._order_tmp,
            )
            self._order, self._order_tmp = self._order_tmp, self._order
        order = self._order[: self._n_ranked]
        bv["ranked"][: len(order)] = order
        fresh = [u for u in self.ups if u.state == UPSTREAM_FRESH] or [
            u for u in self.ups if u.last_frame > 0
        ]
        live = sum(u.live for u in fresh)
        if len(fresh) == 1:
            pressure, weights = fresh[0].pressure, np.array(fresh[0].weights)
        elif fresh:
            wts = np.array([max(u.live, 1) for u in fresh], float)
            pressure = float(np.dot(wts, [u.pressure for u in fresh]) / wts.sum())
            weights = np.average(np.array([u.weights for u in fresh]), axis=0, weights=wts)
        else:
            pressure, weights = 0.0, np.zeros(8)
        counts = np.zeros(8, np.int64)
        for u in self.ups:
            if u.counts:
                counts += np.array(u.counts, np.int64)
        buf.weights[:] = weights
        buf.counts[:] = counts
        buf.epoch[0] = epoch
        buf.tick_mono[0] = max((u.last_frame for u in self.ups), default=now)
        buf.tick_wall[0] = max((u.tick_wall for u in self.ups), default=0.0)
        buf.pressure[0] = pressure
        buf.n_ranked[0] = len(order)
        buf.live[0] = live
        buf.registered[0] = sum(u.registered for u in self.ups)
        buf.slot_hwm[0] = hwm
        buf.ejected[0] = sum(u.ejected for u in self.ups)
        # Every buffer store above stays before this one (x86-64 TSO, as in
        # the tick worker). Pairs with read_begin in the readers.
        write_end(latch)
        for u in self.ups:
            self.mv.up.epoch[u.index] = u.epoch  # what readers now see of each zone
        self._dirty_prev, self._dirty = self._dirty, self._dirty_prev
        self._dirty[:] = False
        h.ticks[0] += 1
        h.ticker_alive_mono[0] = now
        registry_epoch = int(h.registry_epoch[0])
        recount = registry_epoch != self._counted_epoch  # a node came or went
        self._counted_epoch = registry_epoch
        if recount:
            h.registered[0] = int(np.count_nonzero(self.reg.registered[: max(hwm, 1)]))
        mh = self.mv.header
        mh.publishes[0] += 1
        wall = time.time()
        for u in self.ups:
            if recount:
                self.mv.up.nodes[u.index] = int(
                    np.count_nonzero(self.reg.registered[u.base : u.base + u.span])
                )
            if u.last_frame == now and u.tick_wall:
                u.lags[u.n_lag % LAG_WINDOW] = (wall - u.tick_wall) * 1e6
                u.n_lag += 1
                if u.n_lag % 32 == 0:
                    p = np.percentile(u.lags[: min(u.n_lag, LAG_WINDOW)], (50.0, 99.0))
                    self.mv.up.lag_us_p50[u.index], self.mv.up.lag_us_p99[u.index] = p
        self.publishes_pending = False
        self.epoch = epoch
        return epoch

    # ------------------------------------------------------------ feedback --
    def feedback_frames(self, now: float) -> list[tuple[int, bytes]]:
        """(upstream, frame) for every upstream whose claims on this mirror
        changed since the last call (or whose full resend is due)."""
        if self.claims is None or not any(u.feedback_port and u.synced for u in self.ups):
            return []
        cv = self.claims.views
        if not cv.lease_ident.any() and not self._feedback_held:
            return []  # no scheduler here, nothing forwarded: nothing to say
        reg = self.reg
        hwm = int(self.views.header.slot_hwm[0])
        if hwm == 0:
            return []
        in_flight = in_flight_by_slot(cv, reg.slot_gen, reg.registered, hwm)
        gens = reg.slot_gen[:hwm]
        tags = (gens >> np.uint64(1)) & _LOW32
        okw = cv.outcomes[:hwm, OUT_OK]
        errw = cv.outcomes[:hwm, OUT_ERR]
        ok_now = np.where((okw >> np.uint64(32)) == tags, okw & _LOW32, 0).astype(np.int64)
        err_now = np.where((errw >> np.uint64(32)) == tags, errw & _LOW32, 0).astype(np.int64)
        out = []
        held = False
        for up in self.ups:
            if not up.feedback_port or not up.synced:
                continue
            a, b = up.base, min(up.base + up.span, hwm)
            if b <= a:
                continue
            if up.sent_in_flight is None:
                up.sent_in_flight = np.zeros(up.span, np.int64)
                up.seen_ok = np.zeros(up.span, np.int64)
                up.seen_err = np.zeros(up.span, np.int64)
                up.seen_gen = np.zeros(up.span, np.uint64)
            assert up.seen_ok is not None and up.seen_err is not None and up.seen_gen is not None
            n = b - a
            inf = in_flight[a:b]
            g = gens[a:b]
            new_reg = up.seen_gen[:n] != g
            up.seen_ok[:n][new_reg] = 0
            up.seen_err[:n][new_reg] = 0
            up.seen_gen[:n] = g
            d_ok = (ok_now[a:b] - up.seen_ok[:n]) % (1 << 32)
            d_err = (err_now[a:b] - up.seen_err[:n]) % (1 << 32)
            up.seen_ok[:n] = ok_now[a:b]
            up.seen_err[:n] = err_now[a:b]
            mapped = self.ident_up_gen[a:b] != _NONE
            full = now - up.feedback_full_at >= FEEDBACK_FULL_S
            if full:
                send_if = np.flatnonzero(mapped & (inf > 0))
                up.feedback_full_at = now
            else:
                send_if = np.flatnonzero(mapped & (inf != up.sent_in_flight[:n]))
            up.sent_in_flight[:n] = np.where(mapped, inf, 0)
            held = held or bool(up.sent_in_flight[:n].any())
            send_out = np.flatnonzero(mapped & ((d_ok > 0) | (d_err > 0)))
            if not full and not len(send_if) and not len(send_out):
                continue
            rec_if = np.zeros(len(send_if), ff.IN_FLIGHT_DTYPE)
            rec_if["slot"] = send_if
            rec_if["gen"] = self.ident_up_gen[a + send_if]
            rec_if["count"] = inf[send_if]
            rec_out = np.zeros(len(send_out), ff.OUTCOME_DTYPE)
            rec_out["slot"] = send_out
            rec_out["gen"] = self.ident_up_gen[a + send_out]
            rec_out["ok"] = d_ok[send_out]
            rec_out["err"] = d_err[send_out]
            up.feedback_seq += 1
            out.append(
                (
                    up.index,
                    ff.encode_feedback(
                        flags=ff.FEEDBACK_FULL if full else 0,
                        mirror=self.mirror_id,
                        stream=up.stream,
                        seq=up.feedback_seq,
                        in_flight=rec_if,
                        outcomes=rec_out,
                    ),
                )
            )
        self._feedback_held = held
        return out

    def feedback_active(self) -> bool:
        """True while schedulers here hold leases or forwarded claims are
        outstanding (the loop then wakes every `FEEDBACK_INTERVAL_S`)."""
        return self.claims is not None and (
            self._feedback_held or bool(self.claims.views.lease_ident.any())
        )

    def reap(self, now: float) -> None:
        """Return the claims of dead schedulers on this host (the mirror is
        its claims segment's tick worker)."""
        if self.claims is not None:
            reap_dead_leases(self.claims.views, int(self.views.header.slot_hwm[0]), now)


@njit(cache=True)
def rerank(order, n, changed, score, state, excluded, is_changed, out):
    """The ranking ``order[:n]`` (score descending, then slot ascending) after
    the slots ``changed`` (ascending; ``is_changed`` marks them) moved, into
    ``out``; returns its length.  The unchanged entries keep their order;
    the changed ones that are eligible (state healthy or degraded, score > 0,
    not ``excluded``: the mirror passes its stale zones' slots and those whose
    registration it does not mirror) are sorted and merged in: the order a
    full sort gives."""
    k = 0
    moved = np.empty(changed.shape[0], np.int32)
    for j in range(changed.shape[0]):
        s = changed[j]
        if state[s] <= 1 and score[s] > 0.0 and not excluded[s]:
            # insertion sort: few rows move at a time
            i = k
            while i > 0 and _ranks_before(score, s, moved[i - 1]):
                moved[i] = moved[i - 1]
                i -= 1
            moved[i] = s
            k += 1
    m = 0
    a = 0
    b = 0
    while True:
        while a < n and is_changed[order[a]]:
            a += 1  # its old place is gone
        if a < n and (b >= k or _ranks_before(score, order[a], moved[b])):
            out[m] = order[a]
            a += 1
        elif b < k:
            out[m] = moved[b]
            b += 1
        else:
            break
        m += 1
    return m


@njit(cache=True, inline="always")
def _ranks_before(score, a, b):
    sa, sb = score[a], score[b]
    return sa > sb or (sa == sb and a < b)


def warm_up() -> None:
    """Compile (or load from numba's cache) the ranking the mirror publishes
    with, before its first frame."""
    score = np.array([0.5, 0.25])
    order, out = np.array([0, 1], np.int32), np.zeros(2, np.int32)
    state, excluded = np.zeros(2, np.uint8), np.zeros(2, bool)
    rerank(order, 2, np.array([1], np.int64), score, state, excluded, excluded, out)
    radix_ranked(score, order, 2, make_rank_scratch(2))


def _id_at(reg, m: int) -> bytes:
    """The node id mirror slot ``m`` holds (the mirror is its only writer)."""
    return bytes(reg.node_id[m]).split(b"\0", 1)[0]


def _put(row: np.ndarray, data: bytes) -> None:
    row[:] = 0
    row[: len(data)] = np.frombuffer(data, np.uint8)


# ------------------------------------------------------------------- run --
@dataclass
class CurveClient:
    """The mirror's CURVE keys: the feed's public key, this mirror's pair."""

    server_public: bytes
    public: bytes
    secret: bytes


def _curve(sock: zmq.Socket, curve: CurveClient | None) -> None:
    if curve is not None:
        sock.curve_serverkey = curve.server_public
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret


def _host(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


def run(mirror: Mirror, should_stop, curve: CurveClient | None = None, on_ready=None) -> None:
    """The mirror loop: receive, apply, publish, forward feedback, until
    ``should_stop()``."""
    warm_up()
    ctx = zmq.Context()
    subs: list[zmq.Socket] = []
    monitors: list[zmq.Socket] = []
    pushes: dict[int, tuple[int, zmq.Socket]] = {}
    h = mirror.views.header
    mh = mirror.mv.header
    max_frame = ff.score_frame_bound(mirror.capacity) + ff.WIRE_SLACK
    try:
        poller = zmq.Poller()
        for up in mirror.ups:
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 100)  # a backlog beyond is a gap: a full frame repairs it
            s.setsockopt(zmq.MAXMSGSIZE, max_frame)
            _curve(s, curve)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            mon = s.get_monitor_socket(_WATCHED)
            monitors.append(mon)
            s.connect(up.endpoint)
            subs.append(s)
            poller.register(s, zmq.POLLIN)
            poller.register(mon, zmq.POLLIN)
        ready = False
        next_feedback = next_reap = 0.0
        while not should_stop():
            now = time.monotonic()
            h.supervisor_alive_mono[0] = now
            h.ingest_alive_mono[0] = now
            mh.alive_mono[0] = now
            events = dict(poller.poll(2 if mirror.feedback_active() else IDLE_POLL_MS))
            now = time.monotonic()
            for up, s, mon in zip(mirror.ups, subs, monitors, strict=True):
                if mon in events:
                    _connection_events(up, mon, now)
                wait = HANDSHAKE_RETRY_S if up.handshake_failed else RECONNECT_GRACE_S
                if up.dropped_at and now - up.dropped_at >= wait:
                    # ZeroMQ gave the connection up: a refused handshake, or
                    # else a protocol error (with MAXMSGSIZE set, a frame over
                    # it: counted).  Connect again.
                    up.dropped_at = 0.0
                    if not up.handshake_failed:
                        mirror.refuse(up.index, "oversize")
                    _reconnect(up, s)
                if s not in events:
                    continue
                for _ in range(256):
                    try:
                        msg = s.recv(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    fr = ff.decode_score_frame(msg.buffer)
                    if isinstance(fr, str):
                        mirror.refuse(up.index, fr)
                        _ask_snapshot(up, s, now, force=False)
                        continue
                    if mirror.drop_frame is not None and mirror.drop_frame(up.index, fr.seq):
                        continue
                    result = mirror.apply(up.index, fr, now)
                    if result != "applied":
                        _ask_snapshot(up, s, now, force=result == "gap")
                    elif up.snapshot_topic is not None and up.synced:
                        s.setsockopt(zmq.UNSUBSCRIBE, up.snapshot_topic)
                        up.snapshot_topic = None
                if mirror.publishes_pending:
                    mirror.publish(now)
            mirror.check_fresh(now)
            for up, s in zip(mirror.ups, subs, strict=True):
                if not up.synced and up.state != UPSTREAM_NEVER:
                    _ask_snapshot(up, s, now, force=False)
            if mirror.publishes_pending and any(u.last_frame > 0 for u in mirror.ups):
                mirror.publish(now)
            if not ready and mirror.epoch > 0:
                ready = True
                if on_ready is not None:
                    on_ready()
            if now >= next_feedback:
                next_feedback = now + FEEDBACK_INTERVAL_S
                for i, data in mirror.feedback_frames(now):
                    up = mirror.ups[i]
                    have = pushes.get(i)
                    if have is None or have[0] != up.feedback_port:
                        if have is not None:
                            have[1].close(0)
                        p = ctx.socket(zmq.PUSH)
                        p.setsockopt(zmq.LINGER, 0)
                        p.setsockopt(zmq.SNDHWM, 1000)
                        _curve(p, curve)
                        p.connect(f"{_host(up.endpoint)}:{up.feedback_port}")
                        pushes[i] = have = (up.feedback_port, p)
                    try:
                        have[1].send(data, zmq.NOBLOCK)
                        mh.feedback_sent[0] += 1
                    except zmq.Again:
                        pass  # the engine is unreachable: the next full set repairs it
            if now >= next_reap:
                next_reap = now + LEASE_CHECK_S
                mirror.reap(now)
    finally:
        for s in subs:
            s.disable_monitor()
            s.close(0)
        for mon in monitors:
            mon.close(0)
        for _port, p in pushes.values():
            p.close(0)
        ctx.term()


def _connection_events(up: Upstream, mon: zmq.Socket, now: float) -> None:
    """Read the monitor of ``up``'s socket: a disconnection stays unexplained
    (``dropped_at``) until ZeroMQ announces its own reconnection."""
    from zmq.utils.monitor import recv_monitor_message

    while True:
        try:
            ev = recv_monitor_message(mon, zmq.NOBLOCK)
        except zmq.Again:
            return
        event = ev["event"]
        if event == zmq.EVENT_DISCONNECTED:
            up.dropped_at = now
        elif event == zmq.EVENT_CONNECT_RETRIED:
            up.dropped_at = 0.0  # a peer's close: ZeroMQ reconnects by itself
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            up.handshake_failed = False
        elif event & _HANDSHAKE_FAILED:
            if not up.handshake_failed:
                log_event(
                    "WARN",
                    "mirror_handshake_failed",
                    zone=up.zone,
                    endpoint=up.endpoint,
                    event=int(event),
                    code=int(ev["value"]),
                )
            up.handshake_failed = True


def _reconnect(up: Upstream, sock: zmq.Socket) -> None:
    """Connect ``up`` anew; the new connection's subscriptions (every
    topic, and a pending snapshot request) make the feed send a full frame."""
    up.synced = False
    try:
        sock.disconnect(up.endpoint)
    except zmq.ZMQError:
        pass  # the dropped connection's endpoint is already gone
    sock.connect(up.endpoint)


def _ask_snapshot(up: Upstream, sock: zmq.Socket, now: float, *, force: bool) -> None:
    """Subscribe to a new snapshot topic: the feed answers with a full frame."""
    if not force and now - up.snapshot_asked < SNAPSHOT_RETRY_S:
        return
    if up.snapshot_topic is not None:
        sock.setsockopt(zmq.UNSUBSCRIBE, up.snapshot_topic)
    up.snapshot_topic = ff.SNAPSHOT_TOPIC + os.urandom(8)
    sock.setsockopt(zmq.SUBSCRIBE, up.snapshot_topic)
    up.snapshot_asked = now


# ---------------------------------------------------------------- status --
def read_mirror_status(name: str, owner=None) -> dict | None:
    """The ``mirror`` part of ``status`` (None when ``name`` is no mirror)."""
    from shm_engine.core.errors import EngineNotRunning, LayoutMismatch

    try:
        seg = MirrorSegment.attach(name, owner=owner)
    except (EngineNotRunning, LayoutMismatch):
        return None
    with seg:
        v = seg.views
        now = time.monotonic()
        n = int(v.header.n_upstreams[0])
        names = {UPSTREAM_NEVER: "never", UPSTREAM_FRESH: "fresh", UPSTREAM_STALE: "stale"}
        zones = []
        for i in range(min(n, MAX_UPSTREAMS)):
            last = float(v.up.last_frame_mono[i])
            zones.append(
                {
                    "zone": v.read_up_str("zone", i),
                    "endpoint": v.read_up_str("endpoint", i),
                    "engine": v.read_up_str("engine", i),
                    "state": names.get(int(v.up.state[i]), "unknown"),
                    "age_s": max(0.0, now - last) if last else None,
                    "epoch": int(v.up.epoch[i]),
                    "nodes": int(v.up.nodes[i]),
                    "slots": [int(v.up.base[i]), int(v.up.base[i] + v.up.span[i])],
                    "frames": int(v.up.frames[i]),
                    "gaps": int(v.up.gaps[i]),
                    "snapshots": int(v.up.snapshots[i]),
                    "bad_frames": int(v.up.bad_frames[i]),
                    "refused": {r: int(v.up.refused[i, k]) for k, r in enumerate(REFUSAL_REASONS)},
                    "duplicates": int(v.up.duplicates[i]),
                    "bytes": int(v.up.bytes[i]),
                    "overflow": int(v.up.overflow[i]),
                    "lag_us": {"p50": float(v.up.lag_us_p50[i]), "p99": float(v.up.lag_us_p99[i])},
                }
            )
        return {
            "stale_after_s": float(v.header.stale_after_s[0]),
            "publishes": int(v.header.publishes[0]),
            "feedback_sent": int(v.header.feedback_sent[0]),
            "zones": zones,
        }


def read_excluded(name: str, owner=None) -> np.ndarray | None:
    """A copy of mirror ``name``'s per-slot ``excluded`` flags (1: the
    slot's zone is stale; placement must not use it), None for an engine."""
    from shm_engine.core.errors import EngineNotRunning, LayoutMismatch

    try:
        seg = MirrorSegment.attach(name, owner=owner)
    except (EngineNotRunning, LayoutMismatch):
        return None
    with seg:
        return seg.views.excluded.copy()


# -------------------------------------------------------------------- cli --
def parse_from(items: list[str]) -> list[tuple[str, str]]:
    """``[ZONE=]tcp://host:port`` -> (zone or "", endpoint)."""
    out = []
    for item in items:
        zone, sep, ep = item.partition("=")
        if not sep:
            zone, ep = "", item
        if not ep.startswith("tcp://") or ":" not in ep[len("tcp://") :]:
            raise ConfigError(f"--from {item!r} must look like [ZONE=]tcp://host:port")
        if len(zone.encode("utf-8")) >= ZONE_BYTES or "\0" in zone:
            raise ConfigError(f"--from {item!r}: zone must be under {ZONE_BYTES} bytes, no NUL")
        out.append((zone, ep))
    return out


def _load_curve(args) -> CurveClient | None:
    if not args.curve_server_key and not args.curve_client_key:
        return None
    if not (args.curve_server_key and args.curve_client_key):
        raise ConfigError("--curve-server-key and --curve-client-key go together")
    import zmq.auth

    server_public, _ = zmq.auth.load_certificate(args.curve_server_key)
    public, secret = zmq.auth.load_certificate(args.curve_client_key)
    if not secret:
        raise ConfigError(f"--curve-client-key {args.curve_client_key!r} holds no secret key")
    return CurveClient(server_public, public, secret)


def cmd_mirror(args) -> int:
    """``shm-engine mirror --from [ZONE=]tcp://host:port [--from ...] --name NAME``."""
    endpoints = parse_from(args.sources)
    curve = _load_curve(args)
    stop = {"sig": 0}

    def on_signal(signum, _frame):
        stop["sig"] = signum

    # A hangup (the terminal went away) stops it cleanly too: segments unlinked.
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    old = {s: signal.signal(s, on_signal) for s in stops}
    try:
        mirror = Mirror(
            args.name,
            endpoints,
            capacity=args.capacity,
            zone_slots=args.zone_slots,
            stale_after_s=args.stale_after,
            max_schedulers=args.max_schedulers,
        )
        try:
            log_event(
                "INFO", "mirror_starting", name=args.name, pid=os.getpid(), upstreams=len(endpoints)
            )

            def ready():
                print("ready", flush=True)
                log_event("INFO", "ready", name=args.name, epoch=mirror.epoch)

            run(mirror, lambda: stop["sig"] != 0, curve, ready)
            log_event("INFO", "mirror_stopped", name=args.name)
        finally:
            h = mirror.views.header
            h.stopping[0] = 1
            mirror.close()
        return 0
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        sys.stdout.flush()
