"""The feed child: follows the latch and publishes every epoch to mirrors.

A supervised child of the engine (role ``feed``, started when ``[feed] bind``
is set), beside the ingest and the tick worker, so the tick does no work for
the feed.  It maps the scores segment read-only and, after each epoch the
tick worker publishes, sends one score frame (`shm_engine.feed.format`) on a
ZeroMQ XPUB socket: the rows that changed since its previous frame, or all of
them in a full frame every ``[feed] full_every`` frames and whenever a
subscription arrives (a new or reconnected mirror, or a mirror's explicit
request after a gap, `format.SNAPSHOT_TOPIC`: the "last value cache" idiom
of XPUB).

Invariants:
- A frame describes one consistent epoch: its rows are copied through the
  latch (`seqlock.read_consistent`, the one retry loop), and the differences
  are taken against the copy the previous frame described, so applying the
  frames of a stream in order to the state of its latest full frame gives
  exactly the published columns of the frame's epoch.  ``seq`` counts the
  frames of a stream (a run of this child, ``stream`` a random id): a mirror
  that misses one knows it and asks for a full frame.
- Epochs the child could not keep up with are skipped, not queued: a frame
  always describes the newest epoch (counted in ``feed_skipped_epochs``).
- Node ids and zones travel as identities (`format.IDENT_DTYPE`) when a
  slot's registration generation or zone version moved; they are read
  consistently (`registry.read_node_id` and the zone's ``meta_version``)
  and cached, so a full frame costs no registry reads.

Waiting for an epoch: the child sleeps (in ``zmq.poll``, serving its sockets)
until 2 ms before the next tick is due, then polls the latch every 0.1 ms,
so a new epoch is seen within about 0.2 ms at a cost of a few hundred wakes
per tick interval's last 2 ms.

Feedback from mirrors (`FeedbackSink`): with ``[feed] feedback_bind`` the
child also binds a PULL socket where mirrors send the claims and outcomes of
their schedulers.  Each mirror gets one lease of the claims segment, held
under this child's own lease identity (so if the child dies, the tick
worker's reaper returns every forwarded claim, as for any dead scheduler);
its in-flight counts are written into the lease's row as absolute values and
its outcomes recorded like a local release.  A mirror silent for ``[feed]
mirror_timeout_s`` has its row cleared (counted ``feedback_abandoned``) and
its lease freed.  A feedback frame larger than the largest legitimate one
(`format.feedback_frame_bound` of the engine's capacity) never reaches the
child (``ZMQ_MAXMSGSIZE``); a malformed one is refused and counted
(``feedback_bad``).
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import zmq
from numba import njit

from shm_engine.core import claims as claims_mod
from shm_engine.core.claims import ClaimsSegment, tag_of
from shm_engine.core.config import Config
from shm_engine.core.errors import EngineNotRunning
from shm_engine.core.layout import OUTCOME_WORDS, ClaimsViews, SegmentViews
from shm_engine.core.ordering import cas_u64, exchange_u64, load_acquire_u64, load_relaxed_u64
from shm_engine.core.registry import read_node_id
from shm_engine.core.runtime import EXIT_FAILED, EXIT_FATAL, EXIT_OK, log_event
from shm_engine.core.segment import Segment
from shm_engine.core.seqlock import READ_OK, read_consistent
from shm_engine.feed import format as ff

__all__ = [
    "FeedPublisher",
    "FeedbackSink",
    "feed_main",
    "feedback_socket",
    "warm_up",
    "FINE_POLL_S",
]

FINE_POLL_S = 0.0001  # latch poll period once the next tick is due
FINE_WINDOW_S = 0.002  # poll finely from this long before the next tick is due
MAX_COARSE_MS = 50  # longest sleep between two checks of stop and the latch
LAG_WINDOW = 1024  # frames the lag percentiles are taken over
EXPIRE_EVERY_S = 0.1
SNDHWM_FRAMES = 100  # frames queued per subscriber (5 s of ticks at 50 ms)
_ZERO = np.uint64(0)
_32 = np.uint64(32)


class FeedPublisher:
    """Builds score frames from engine segment ``views`` (mapped read-only is
    enough).  `capture` copies the newest epoch; `frame` encodes what
    changed since the previous frame (or everything).  No sockets: the
    child, the tests and the benchmark drive it."""

    def __init__(
        self,
        views: SegmentViews,
        *,
        full_every: int = 100,
        feedback_port: int = 0,
        stream: int | None = None,
    ):
        self.views = views
        self.capacity = cap = views.layout.capacity
        self.full_every = full_every
        self.feedback_port = feedback_port
        self.stream = stream if stream is not None else int.from_bytes(os.urandom(8), "little")
        self.seq = 0
        h = views.header
        self.engine = h.read_str("name")
        # Tells a restarted engine (a new segment) from a restarted feed child.
        self.engine_run = (int(h.creator_start[0]) << 32 ^ int(h.creator_pid[0])) ^ int(
            np.float64(h.created_wall[0]).view(np.uint64)
        )
        self._seq_mv = views.header.latch_seq.data
        # Float columns as u8 bit patterns, [column, slot]: cur is filled by
        # capture, last holds what the previous frame described; swapped.
        self._cur = np.zeros((len(ff.ROW_FLOATS), cap), np.uint64)
        self._last = np.zeros((len(ff.ROW_FLOATS), cap), np.uint64)
        self._cur_state = np.full(cap, 255, np.uint8)
        self._last_state = np.full(cap, 255, np.uint8)
        self._cur_gen = np.zeros(cap, np.uint64)
        self._last_gen = np.zeros(cap, np.uint64)
        self._hwm = 0
        self._meta: tuple = ()
        self.epoch = 0  # of the latest capture
        # Identity cache: what the last frames sent per slot.
        self._ident = np.zeros(cap, ff.IDENT_DTYPE)
        self._ident_gen = np.full(cap, np.iinfo(np.uint64).max, np.uint64)  # buffer gen sent for
        self._ident_meta = np.zeros(cap, np.uint64)
        self._since_full = 0
        self.full_pending = True  # the first frame of a stream is full
        self.last_was_full = False

    # ------------------------------------------------------------ capture --
    def _copy(self, b: int):
        buf = self.views.buffers[b]
        v = buf.views
        hwm = min(int(buf.slot_hwm[0]), self.capacity)
        cur = self._cur
        for i, col in enumerate(ff.ROW_FLOATS[:-1]):  # "slots" is the table's
            np.copyto(cur[i, :hwm], v[col][:hwm].view(np.uint64))
        np.copyto(self._cur_state[:hwm], v["state"][:hwm])
        np.copyto(self._cur_gen[:hwm], v["gen"][:hwm])
        meta = (
            int(buf.epoch[0]),
            float(buf.tick_wall[0]),
            float(buf.tick_mono[0]),
            float(buf.pressure[0]),
            int(buf.n_ranked[0]),
            int(buf.live[0]),
            int(buf.registered[0]),
            int(buf.ejected[0]),
            buf.weights.tolist(),
            buf.counts.tolist(),
        )
        return hwm, meta

    def capture(self) -> int:
        """Copy the newest published epoch; returns it (0: nothing yet, or
        the writer lapped every attempt)."""
        st, epoch, got = read_consistent(self._seq_mv, self._copy)
        if st != READ_OK or got is None:
            return 0
        hwm, self._meta = got
        # The worker count is the heartbeat table's (outside the latch: each
        # 8-byte load is whole, and it changes only with a heartbeat).
        slots = self.views.table.slots
        np.copyto(self._cur[len(ff.ROW_FLOATS) - 1, :hwm], slots[:hwm].view(np.uint64))
        self._hwm = hwm
        self.epoch = epoch
        return epoch

    # -------------------------------------------------------------- frame --
    def _refresh_idents(self, hwm: int) -> np.ndarray:
        """Re-read the identities whose generation or zone version moved;
        returns the slots re-read."""
        reg = self.views.registry
        gens = self._cur_gen[:hwm]
        metas = reg.meta_version[:hwm]
        todo = np.flatnonzero((gens != self._ident_gen[:hwm]) | (metas != self._ident_meta[:hwm]))
        done = []
        for s in todo.tolist():
            got = _read_ident(reg, s)
            if got is None:
                continue  # mid-change: the next frame tries again
            done.append(s)
            gen, registered, node, zone, meta = got
            rec = self._ident[s]
            rec["slot"] = s
            rec["registered"] = registered
            rec["gen"] = gen
            rec["node"] = node
            rec["zone"] = zone
            self._ident_gen[s] = self._cur_gen[s]
            self._ident_meta[s] = meta
        return np.array(done, np.int64)

    def frame(self, sent_wall: float | None = None, *, full: bool | None = None) -> bytes:
        """The frame of the latest `capture` (full when due, asked for, or
        ``full``); advances ``seq`` and the state later frames differ from."""
        hwm = self._hwm
        if full is None:
            full = self.full_pending or self._since_full + 1 >= self.full_every
        moved = self._refresh_idents(hwm)
        if full:
            rows_at = np.arange(hwm)
            idents = self._ident[:hwm][self._ident["registered"][:hwm] != 0]
            self._since_full = 0
            self.full_pending = False
        else:
            changed = (self._cur[:, :hwm] != self._last[:, :hwm]).any(axis=0)
            changed |= self._cur_state[:hwm] != self._last_state[:hwm]
            changed |= self._cur_gen[:hwm] != self._last_gen[:hwm]
            rows_at = np.flatnonzero(changed)
            idents = self._ident[moved]
            self._since_full += 1
        self.last_was_full = bool(full)
        words = np.empty((len(rows_at), ff.ROW_DTYPE.itemsize // 8), np.uint64)
        _pack_words(rows_at, self._cur_state, self._cur_gen, self._cur, words)
        rows = words.view(ff.ROW_DTYPE).reshape(len(rows_at))
        self.seq += 1
        (epoch, tick_wall, _mono, pressure, n_ranked, live, registered, ejected) = self._meta[:8]
        weights, counts = self._meta[8:]
        data = ff.encode_score_frame(
            kind=ff.KIND_FULL if full else ff.KIND_DELTA,
            stream=self.stream,
            seq=self.seq,
            epoch=epoch,
            tick_wall=tick_wall,
            sent_wall=time.time() if sent_wall is None else sent_wall,
            pressure=pressure,
            capacity=self.capacity,
            slot_hwm=hwm,
            n_ranked=n_ranked,
            live=live,
            registered=registered,
            ejected=ejected,
            tick_interval_ms=int(self.views.header.tick_interval_ms[0]),
            feedback_port=self.feedback_port,
            weights=weights,
            counts=counts,
            engine=self.engine,
            engine_run=self.engine_run,
            rows=rows,
            idents=idents,
        )
        # What this frame described is what the next one differs from.
        np.copyto(self._last[:, :hwm], self._cur[:, :hwm])
        np.copyto(self._last_state[:hwm], self._cur_state[:hwm])
        np.copyto(self._last_gen[:hwm], self._cur_gen[:hwm])
        return data


@njit(cache=True)
def _pack_words(at, state, gen, cur, out):
    """Rows of slots ``at`` as `format.ROW_DTYPE` words into ``out`` [k, 9]
    (what `format.pack_rows` builds, without its transpose): ``slot | state
    << 32``, ``gen``, then the float columns' bits ``cur[:, slot]``."""
    n_floats = cur.shape[0]
    for j in range(at.shape[0]):
        s = at[j]
        out[j, 0] = np.uint64(s) | (np.uint64(state[s]) << np.uint64(32))
        out[j, 1] = gen[s]
        for i in range(n_floats):
            out[j, 2 + i] = cur[i, s]


_ID_ATTEMPTS = 100


def _read_ident(reg, slot: int):
    """(gen, registered, node id, zone, meta_version) of ``slot``, read
    consistently; None while it is changing."""
    for _ in range(_ID_ATTEMPTS):
        meta = int(reg.meta_version[slot])
        if meta & 1:
            continue
        got = read_node_id(reg, slot)
        if got is None:
            return None
        zone = bytes(reg.zone[slot]).split(b"\0", 1)[0]
        if int(reg.meta_version[slot]) != meta or int(reg.slot_gen[slot]) != got[0]:
            continue
        gen, node = got
        return gen, 1 if node else 0, node, zone, meta
    return None


# --------------------------------------------------------------- feedback --
@njit(cache=True)
def _take_lease(idents, ident):
    """A free lease taken for ``ident`` (one CAS from 0), or -1."""
    for k in range(idents.shape[0]):
        if load_relaxed_u64(idents, k) == _ZERO:
            # Pairs with the reaper's freeing CAS (the row is zero by then).
            if cas_u64(idents, k, _ZERO, np.uint64(ident)) == _ZERO:
                return k
    return -1


@njit(cache=True)
def _set_in_flight(row, gens, slots, ups_gens, counts):
    """Write ``tag | count`` for each forwarded (slot, gen, count) whose
    registration is still current; returns how many were stale."""
    stale = 0
    for j in range(slots.shape[0]):
        s = np.intp(slots[j])
        g = np.uint64(ups_gens[j])
        # Pairs with store_release in rows.slot_change_end.
        if load_acquire_u64(gens, s) != g:
            stale += 1
            continue
        exchange_u64(row, s, (tag_of(g) << _32) | np.uint64(counts[j]))
    return stale


@njit(cache=True)
def _clear(row, slots):
    """Zero the words of ``slots``; the claims they held."""
    total = 0
    for j in range(slots.shape[0]):
        old = exchange_u64(row, np.intp(slots[j]), _ZERO)
        total += np.int64(old & np.uint64(0xFFFF_FFFF))
    return total


@njit(cache=True)
def _record(out, gens, slots, ups_gens, oks, errs, now_ns):
    """Count forwarded releases as local ones would be; returns stale ones."""
    stale = 0
    for j in range(slots.shape[0]):
        s = np.intp(slots[j])
        g = np.uint64(ups_gens[j])
        tag = tag_of(g)
        for _ in range(oks[j]):
            if not claims_mod._record_outcome(out, s * OUTCOME_WORDS, tag, gens, s, g, True, 0):
                stale += 1
        for _ in range(errs[j]):
            if not claims_mod._record_outcome(
                out, s * OUTCOME_WORDS, tag, gens, s, g, False, now_ns
            ):
                stale += 1
    return stale


class _MirrorLease:
    __slots__ = ("lease", "last_seen", "held")

    def __init__(self, lease: int, now: float, capacity: int):
        self.lease = lease
        self.last_seen = now
        self.held = np.zeros(capacity, bool)  # slots whose word we wrote nonzero


class FeedbackSink:
    """Applies mirrors' feedback frames to claims segment ``claims`` of the
    engine whose registry ``slot_gen`` is given (`shm_engine.core.claims`).
    ``stream``: this feed's stream id (frames about another are refused)."""

    def __init__(self, claims: ClaimsViews, slot_gen: np.ndarray, stream: int, timeout_s: float):
        self.claims = claims
        self.slot_gen = slot_gen
        self.stream = stream
        self.timeout_s = timeout_s
        self.ident = claims_mod.own_ident()
        self.mirrors: dict[int, _MirrorLease] = {}
        self.abandoned = 0
        self.refused = 0
        self.applied = 0
        self._out_flat = claims.outcomes.reshape(-1)

    def apply(self, fr: ff.FeedbackFrame, now: float) -> bool:
        """Apply one frame received at ``now`` (monotonic); False if refused."""
        if fr.stream != self.stream:
            self.refused += 1
            return False
        m = self.mirrors.get(fr.mirror)
        if m is None:
            k = int(_take_lease(self.claims.lease_ident, self.ident))
            if k < 0:
                self.refused += 1
                return False
            v = self.claims
            v.lease_pid[k] = os.getpid()
            v.lease_start[k] = self.ident >> 32
            v.lease_since[k] = time.time()
            claims_mod.bump(v.header.leases_taken, 1)
            m = self.mirrors[fr.mirror] = _MirrorLease(k, now, self.claims.layout.capacity)
        m.last_seen = now
        row = self.claims.in_flight[m.lease]
        inf = fr.in_flight
        slots = inf["slot"].astype(np.int64)
        if fr.flags & ff.FEEDBACK_FULL:
            listed = np.zeros_like(m.held)
            listed[slots] = True
            gone = np.flatnonzero(m.held & ~listed)
            if len(gone):
                _clear(row, gone.astype(np.int64))
            m.held[:] = False
        _set_in_flight(row, self.slot_gen, slots, inf["gen"], inf["count"])
        m.held[slots] = inf["count"] != 0
        out = fr.outcomes
        if len(out):
            _record(
                self._out_flat,
                self.slot_gen,
                out["slot"].astype(np.int64),
                out["gen"],
                out["ok"].astype(np.int64),
                out["err"].astype(np.int64),
                time.monotonic_ns(),
            )
        self.applied += 1
        return True

    def expire(self, now: float) -> int:
        """Drop the mirrors silent for ``timeout_s``; returns how many."""
        gone = [mid for mid, m in self.mirrors.items() if now - m.last_seen >= self.timeout_s]
        for mid in gone:
            self._drop(mid)
        return len(gone)

    def _drop(self, mid: int) -> None:
        m = self.mirrors.pop(mid)
        held = np.flatnonzero(m.held).astype(np.int64)
        self.abandoned += int(_clear(self.claims.in_flight[m.lease], held))
        v = self.claims
        v.lease_pid[m.lease] = 0
        v.lease_start[m.lease] = 0
        v.lease_since[m.lease] = 0.0
        # After the row is zero: a new holder starts from a zero row.
        claims_mod._free_lease(v.lease_ident, m.lease, self.ident)

    def close(self) -> None:
        """Return every mirror's claims and free their leases."""
        for mid in list(self.mirrors):
            self._drop(mid)


# ------------------------------------------------------------------ child --
def warm_up() -> None:
    """Compile (or load) the feedback kernels before the first frame."""
    from shm_engine.core.layout import private_claims

    v = private_claims(2, 2)
    gens = np.zeros(2, np.uint64)
    i8 = np.zeros(1, np.int64)
    u8 = np.zeros(1, np.uint64)
    _take_lease(v.lease_ident, 0)
    _set_in_flight(v.in_flight[0], gens, i8, u8, u8)
    _clear(v.in_flight[0], i8)
    _record(v.outcomes.reshape(-1), gens, i8, u8, i8, i8, 0)
    cur = np.zeros((len(ff.ROW_FLOATS), 2), np.uint64)
    _pack_words(i8, np.zeros(2, np.uint8), gens, cur, np.zeros((1, 9), np.uint64))


def feedback_socket(ctx: zmq.Context, capacity: int) -> zmq.Socket:
    """The PULL socket mirrors' feedback frames arrive on, for an engine of
    ``capacity`` slots.  A message over the largest feedback frame about
    those slots (plus the transport's `format.WIRE_SLACK`) is never
    allocated: ZeroMQ drops the connection that carried it, and the
    mirror's PUSH connects again."""
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.MAXMSGSIZE, ff.feedback_frame_bound(capacity) + ff.WIRE_SLACK)
    return pull


def _curve_server(ctx: zmq.Context, sockets, config: Config):
    """Make ``sockets`` CURVE servers admitting ``[feed.curve]``'s keys; the
    ZAP handler (close it before the context)."""
    import zmq.auth

    from shm_engine.ingest.admission import load_keys
    from shm_engine.ingest.zap import ZapHandler

    cc = config.feed.curve
    if not zmq.has("curve"):
        raise ValueError("feed.curve is set but this libzmq has no CURVE support")
    public, secret = zmq.auth.load_certificate(cc.server_secret_key_file)
    if not secret:
        raise ValueError(
            f"feed.curve.server_secret_key_file = {cc.server_secret_key_file!r} holds no secret key"
        )
    keys = load_keys(cc.authorized_keys_dir)[0]
    zap = ZapHandler(ctx, lambda: keys)
    for sock in sockets:
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
    return zap


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def feed_main(name: str, config: Config, parent_pid: int) -> int:
    """The feed process: attach ``name``, bind ``[feed] bind`` (and
    ``feedback_bind``), publish every epoch until the parent dies, the
    header's ``stopping`` is set, or SIGTERM.  Returns the exit code:
    `EXIT_FATAL` when a socket cannot be set up."""
    stop = {"signal": False}

    def on_term(_sig, _frame):
        stop["signal"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # Read-write only for the header's feed words: nothing else is written.
        seg = Segment.attach(name, readonly=False)
    except Exception as err:  # noqa: BLE001 - reported as an exit code
        log_event("ERROR", "feed_attach_failed", name=name, error=repr(str(err)))
        return EXIT_FAILED
    fc = config.feed
    claims_seg = None
    if fc.feedback_bind:
        try:
            claims_seg = ClaimsSegment.attach(name, readonly=False)
        except EngineNotRunning as err:
            log_event("WARN", "feed_claims_absent", name=name, error=repr(str(err)))
    h = seg.views.header
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    # A slow mirror holds at most this many frames here; beyond, its frames
    # are dropped, it sees the gap and takes a full frame.
    pub.setsockopt(zmq.SNDHWM, SNDHWM_FRAMES)
    pull = None
    if claims_seg is not None:
        pull = feedback_socket(ctx, claims_seg.views.layout.capacity)
    zap = None
    try:
        try:
            if fc.curve.enabled:
                zap = _curve_server(ctx, [s for s in (pub, pull) if s is not None], config)
            pub.bind(fc.bind)
            if pull is not None:
                pull.bind(fc.feedback_bind)
        except (zmq.ZMQError, OSError, ValueError) as err:
            log_event("ERROR", "feed_bind_failed", endpoint=fc.bind, error=repr(str(err)))
            return EXIT_FATAL
        warm_up()
        publisher = FeedPublisher(
            seg.views,
            full_every=fc.full_every,
            feedback_port=_port(fc.feedback_bind) if pull is not None else 0,
        )
        sink = (
            FeedbackSink(
                claims_seg.views,
                seg.views.registry.slot_gen,
                publisher.stream,
                fc.mirror_timeout_s,
            )
            if claims_seg is not None
            else None
        )
        log_event(
            "INFO",
            "feed_started",
            pid=os.getpid(),
            endpoint=pub.getsockopt_string(zmq.LAST_ENDPOINT),
            feed_stream=f"{publisher.stream:016x}",
        )

        def should_stop() -> bool:
            return stop["signal"] or bool(h.stopping[0]) or os.getppid() != parent_pid

        try:
            _run(publisher, sink, pub, pull, zap, h, should_stop)
        finally:
            if sink is not None:
                sink.close()
        log_event("INFO", "feed_stopped", pid=os.getpid(), frames=publisher.seq)
        return EXIT_OK
    finally:
        for s in (pub, pull):
            if s is not None:
                s.close(0)
        if zap is not None:
            zap.close()
        ctx.term()
        seg.close()
        if claims_seg is not None:
            claims_seg.close()


def _run(publisher: FeedPublisher, sink, pub, pull, zap, h, should_stop) -> None:
    poller = zmq.Poller()
    poller.register(pub, zmq.POLLIN)
    if pull is not None:
        poller.register(pull, zmq.POLLIN)
    if zap is not None:
        poller.register(zap.socket, zmq.POLLIN)
    seq = h.latch_seq.data
    interval = max(int(h.tick_interval_ms[0]), 1) / 1000.0
    last_epoch = 0
    anchor = time.monotonic()
    lags = np.zeros(LAG_WINDOW)
    n_lag = 0
    next_expire = 0.0
    while not should_stop():
        now = time.monotonic()
        h.feed_alive_mono[0] = now
        epoch = seq[0] >> 1
        if epoch != last_epoch and epoch > 0:
            got = publisher.capture()
            if got:
                if last_epoch and got > last_epoch + 1:
                    h.feed_skipped_epochs[0] += got - last_epoch - 1
                data = publisher.frame()
                pub.send(data, copy=False)
                last_epoch = got
                h.feed_frames[0] += 1
                h.feed_bytes[0] += len(data)
                h.feed_epoch[0] = got
                if publisher.last_was_full:
                    h.feed_full_frames[0] += 1
                tick_wall, tick_mono = publisher._meta[1], publisher._meta[2]
                # The next tick starts about one interval after this one did
                # (the worker keeps a fixed schedule); a tick time on another
                # clock (a replayed one) falls back to when we saw it.
                anchor = tick_mono if abs(now - tick_mono) < 2 * interval else now
                lags[n_lag % LAG_WINDOW] = (time.time() - tick_wall) * 1e6
                n_lag += 1
                if n_lag % 64 == 0:
                    p50, p99 = np.percentile(lags[: min(n_lag, LAG_WINDOW)], (50.0, 99.0))
                    h.feed_lag_us_p50[0], h.feed_lag_us_p99[0] = p50, p99
            continue
        # Serve the sockets; sleep in the poll while the next tick is far.
        due = anchor + interval - FINE_WINDOW_S
        if now < due:
            timeout = min(MAX_COARSE_MS, max(1, int((due - now) * 1000)))
        elif now > anchor + 3 * interval:
            timeout = 1  # the tick is late (or stopped): check every ms
        else:
            timeout = 0
        events = dict(poller.poll(timeout))
        if pub in events:
            _subscriptions(pub, publisher, h)
        if pull is not None and pull in events:
            _feedback(pull, sink, h)
        if zap is not None and zap.socket in events:
            zap.serve()
        if sink is not None and now >= next_expire:
            next_expire = now + EXPIRE_EVERY_S
            sink.expire(now)
            h.feedback_mirrors[0] = len(sink.mirrors)
            h.feedback_abandoned[0] = sink.abandoned
            h.feedback_bad[0] = sink.refused
        if timeout == 0:
            time.sleep(FINE_POLL_S)


def _subscriptions(pub, publisher: FeedPublisher, h) -> None:
    while True:
        try:
            msg = pub.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        if msg[:1] == b"\x01":  # a subscription: a new mirror, or a request
            publisher.full_pending = True
            h.feed_snapshot_requests[0] += 1


def _feedback(pull, sink, h) -> None:
    cap = sink.claims.layout.capacity
    for _ in range(1024):
        try:
            msg = pull.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        fr = ff.decode_feedback(msg.buffer, cap)
        if isinstance(fr, str):
            sink.refused += 1
            h.feedback_bad[0] = sink.refused
            continue
        if sink.apply(fr, time.monotonic()):
            h.feedback_frames[0] += 1
            h.feedback_mirrors[0] = len(sink.mirrors)
