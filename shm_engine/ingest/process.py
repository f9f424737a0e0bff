"""The ingest process: heartbeat frames from a ZeroMQ PULL socket into the segment.

Invariant: the ingest is the only writer of the registry and the heartbeat
table.  Every frame is decoded and validated whole (`wire.decode.decode_frame`)
before anything of it is applied; a rejected heartbeat leaves no trace but its
counter, and never costs the good heartbeats of the same frame.  After each
frame the header counters satisfy::

    ingest_accepted + sum(rejects) == ingest_heartbeats

and ``ingest_frames`` is bumped last, so a reader that sees ``ingest_frames ==
k`` also sees the rows and the other counters of those k frames (x86-64 TSO:
the stores retire in program order, see `shm_engine.core.ordering`).

Registration follows SCORING.md: a node's first accepted heartbeat takes the
lowest free slot; a full registry rejects it (``registry_full``).  Nodes are
forgotten every `FORGET_PERIOD_S` (`NodeRegistry.forget_older_than`), and
also on arrival: a heartbeat for a registered node whose age is already
>= ``forget_after_s`` frees the slot and registers the node anew, as replay
does when forgetting runs at the start of the tick the heartbeat arrives in.

Cost model (the reason for the shape of `Ingest.handle_frame`): every frame,
and every run of frames handled as one batch, goes through one apply path
(`Ingest._apply`): find the records' slots, then write every row with one
`rows.write_rows` call.  The per-record Python work is at most one dict
lookup, done in C (``map(dict.get, keys)``); a batch that repeats an earlier
one's node list (batching senders do) skips even that: its remembered slots
are verified against the registry's ids in bulk.  That check, the age check
and the zone/labels change check are one compiled pass
(`ingest._checks.check_slots`).  A batch of one (the common frame) finds its
slot by one dict lookup instead, keyed by the node id the decoder already
holds as bytes (`wire.DecodedFrame.one`), and checks age and metadata on
table and registry cells (memoryviews): for one record the compiled pass and
the word view it reads cost more than the rest of the frame's apply.  The
row writer takes the records as the decoder left them, whatever their
number (`rows.write_rows`).  The process loop drains the socket in chunks
(`drain`) and hands each chunk to `Ingest.handle_frames`, which decodes and
applies a run of 1-record binary frames as one batch: the same rows,
registrations and counts as frame by frame, for a few list operations per
frame.  Only registrations, re-registrations and metadata changes go record
by record.

New registrations stay unpublished (odd ``slot_gen``) until the frame's rows
are written (`NodeRegistry.register(publish=False)`, then
`publish_pending()`), so a tick never scores a new node on the previous
occupant's row.

Rules for callers: one `Ingest` per segment at a time (the supervisor starts
a new ingest only after the old one exited); ``now`` is ``time.monotonic()``,
the clock the tick worker ages rows with.  `Ingest` keeps a copy of the
registry's id -> slot map, so the registry must change only through it.

Socket limits: ``ZMQ_MAXMSGSIZE`` is `HARD_LIMIT_FACTOR` x
``ingest.max_frame_bytes``.  A frame above ``max_frame_bytes`` but under the
hard limit is received and counted ``frame_too_large`` without being decoded;
one above the hard limit makes ZeroMQ drop the sender's connection (it is
never counted: ZeroMQ does not deliver it).  The hard limit only bounds the
memory one frame can take.  Beyond the socket's queue (``rcvhwm`` frames) the
loop holds one drained chunk: at most `DRAIN_CHUNK` frames, `LARGE_CHUNK`
once frames are above `RECV_COPY_MAX` bytes (`next_drain`).
"""

from __future__ import annotations

import mmap
import os
import signal
import time
import traceback

import numpy as np
import zmq

from shm_engine.ingest._checks import AGED, META, STALE, check_slots
from shm_engine.core.config import Config
from shm_engine.core.errors import LayoutMismatch
from shm_engine.core.layout import N_REJECT_SLOTS, SegmentViews, layout_for
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.segment import Segment
from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.core.runtime import EXIT_FAILED, EXIT_FATAL, EXIT_OK, log_event
from shm_engine.wire.binary import batch_faults, decode_one_record_frames
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.format import (FIELD_INDEX, ONE_FRAME_SIZE, RECORD_DTYPE, RECORD_SIZE,
                                    REJECT_REASONS, V1_ONE_FRAME_SIZE, WORDS, ZONE_WORDS)
from shm_engine.wire.jsondecode import decode_json_objects

__all__ = ["Ingest", "drain", "next_drain", "ingest_main", "run_standalone", "warm_up",
           "FORGET_PERIOD_S", "HARD_LIMIT_FACTOR"]

FORGET_PERIOD_S = 0.1
HARD_LIMIT_FACTOR = 64
SAMPLE_MAX = 3           # sample details per reject log line

_REJECT_INDEX = {reason: i for i, reason in enumerate(REJECT_REASONS)}
assert len(REJECT_REASONS) <= N_REJECT_SLOTS
_MALFORMED_FRAME = _REJECT_INDEX["malformed_frame"]
_REGISTRY_FULL = _REJECT_INDEX["registry_full"]
MEMO_MIN_RECORDS = 8      # smaller frames go through the dict directly
MEMO_MAX_FRAMES = 4096    # remembered frame shapes; cleared when full
DRAIN_CHUNK = 256         # small frames received before they are handled: bounds the wait
LARGE_CHUNK = 4           # the same for frames above RECV_COPY_MAX
# `drain` receives a frame as bytes (recv(copy=True)) while the frames come
# small: measured 2-3x the frames/s of zmq.Frame objects at 208 bytes.  A large
# frame is cheaper as a zmq.Frame (no copy into a new bytes object): 1000-record
# frames went at about twice the rate.  The last frame's size picks the mode for
# the next chunk (`next_drain`).
RECV_COPY_MAX = 16 * 1024
COALESCE_MIN = 8          # fewer 1-record frames in a row are handled one by one
_ONE_FRAME = ONE_FRAME_SIZE   # bytes of a 1-record binary frame
_V1_ONE_FRAME = V1_ONE_FRAME_SIZE   # the same in wire version 1 (still accepted)
# `DecodedFrame.one`: the record's values in RECORD_DTYPE order, text unpadded.
_NODE, _ZONE = FIELD_INDEX["node"], FIELD_INDEX["zone"]
_OTHER, _BINARY1, _JSON1 = 0, 1, 2   # frame kinds for `Ingest.handle_frames`


def _cells(view: np.ndarray) -> memoryview:
    """A header field as a native-format memoryview: ``c[0] += n`` on it is a
    plain Python number update, several times cheaper than on a numpy view."""
    return memoryview(view).cast("B").cast("Q" if view.dtype.kind == "u" else "d")


class RejectLog:
    """Counts rejections since the last log line; at most one line per interval."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self.samples: list[tuple[str, str]] = []
        self._last = time.monotonic()

    def add(self, reason: str, count: int, sample: tuple[str, str] | None = None) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + count
        if sample is not None and len(self.samples) < SAMPLE_MAX:
            self.samples.append(sample)

    def add_samples(self, samples: list[tuple[str, str]]) -> None:
        room = SAMPLE_MAX - len(self.samples)
        if room > 0:
            self.samples.extend(samples[:room])

    def maybe_flush(self, now: float, force: bool = False) -> bool:
        """Log the summary if there is one and the interval has passed."""
        if not self.counts or (not force and now - self._last < self.interval_s):
            return False
        window = now - self._last
        total = sum(self.counts.values())
        parts = " ".join(f"{r}={c}" for r, c in sorted(self.counts.items(),
                                                        key=lambda rc: _REJECT_INDEX[rc[0]]))
        # Details hold untrusted bytes; repr() keeps the line one line.
        samples = " | ".join(f"{r}: {d}" for r, d in self.samples)
        log_event("WARN", "ingest_rejects", window_s=f"{window:.3f}", total=total,
             reasons=repr(parts), samples=repr(samples))
        self.counts = {}
        self.samples = []
        self._last = now
        return True


class Ingest:
    """The intake state over `SegmentViews` ``views``; no sockets.

    `handle_frame` applies one frame; `forget` frees nodes that went silent.
    Both return status and never raise on bad input."""

    def __init__(self, views: SegmentViews, config: Config):
        self.views = views
        self.config = config
        self.registry = NodeRegistry(views)
        self._slot_of: dict[bytes, int] = dict(self.registry.items())
        self._table = views.table
        self._reg = views.registry
        self._recv_time = views.table.recv_time
        # Scalar reads for a batch of one: a memoryview item is a Python
        # float/int, several times cheaper to get than a numpy scalar.
        self._recv_cells = memoryview(views.table.recv_time)
        self._zone_first_cells = memoryview(views.registry.zone[:, 0])
        self._labels_len_cells = memoryview(views.registry.labels_len)
        self._row_columns = column_addresses(views.table)   # self._table keeps them mapped
        self._capacity = len(views.table.recv_time)
        # The padded zone column as 8-byte words, and its first byte alone.
        self._zone_words = views.registry.zone.view(np.uint64)
        self._zone_first = views.registry.zone[:, 0]
        self._node_words = views.registry.node_id.view(np.uint64)
        self._registered = views.registry.registered
        self._labels_len = views.registry.labels_len
        self._memo: dict[tuple[int, bytes], np.ndarray] = {}
        self._one_slot = np.zeros(1, np.int64)   # reused: write_rows does not keep it
        self._one_slot_cell = memoryview(self._one_slot)
        self._max_frame_bytes = config.ingest.max_frame_bytes
        self._coalesce = _ONE_FRAME <= self._max_frame_bytes
        self._forget_after_s = config.engine.forget_after_s
        self.log = RejectLog(config.ingest.reject_log_interval_s)
        h = views.header
        self._frames = _cells(h.ingest_frames)
        self._heartbeats = _cells(h.ingest_heartbeats)
        self._accepted = _cells(h.ingest_accepted)
        self._bytes = _cells(h.ingest_bytes)
        self._alive = _cells(h.ingest_alive_mono)
        self._rejects = _cells(h.rejects)
        self._internal_errors = 0
        self._full_in_frame = 0

    # ----------------------------------------------------------- frames --
    def handle_frame(self, frame, now: float) -> int:
        """Decode ``frame`` (bytes-like) received at monotonic ``now`` and apply
        its valid heartbeats.  Returns the number of heartbeats written.

        An unexpected exception (a bug, not bad input) is counted under
        ``malformed_frame`` for the heartbeats it cost, logged, and swallowed:
        one frame must not stop the intake."""
        nbytes = memoryview(frame).nbytes
        seen, accepted, rejected = 1, 0, 0
        self._full_in_frame = 0
        try:
            dec = decode_frame(frame, self._max_frame_bytes)
            seen = dec.seen
            if dec.rejects:
                rejected = self._count_rejects(dec)
            if len(dec.records):
                accepted = self._apply(dec, now)
        except Exception as err:  # noqa: BLE001 - see the docstring; Ctrl-C etc. pass
            lost = seen - accepted - rejected - self._full_in_frame
            self._internal_error(err, max(lost, 0))
        finally:
            # After the rows: see "New registrations" in the module docstring.
            self.registry.publish_pending()
        self._count_frames(1, seen, accepted, nbytes)
        return accepted

    def _count_rejects(self, dec) -> int:
        """Count a decoded frame's (or run's) rejects by reason, in the
        header and the reject log; returns how many there were."""
        log, rej = self.log, self._rejects
        rejected = 0
        for reason, count in dec.rejects.items():
            rej[_REJECT_INDEX[reason]] += count
            log.add(reason, count)
            rejected += count
        log.add_samples(dec.sample)
        return rejected

    def _count_frames(self, frames: int, seen: int, accepted: int, nbytes: int) -> None:
        self._heartbeats[0] += seen
        self._accepted[0] += accepted
        self._bytes[0] += nbytes
        self._frames[0] += frames  # last: see the module docstring

    def handle_frames(self, frames: list, now: float) -> int:
        """`handle_frame` for each of ``frames`` in order, all received by
        ``now``; returns the heartbeats written.

        The same rows, registrations, counters and log lines as frame by
        frame (the counters move once per run of frames, ``ingest_frames``
        last).  Why: a run of 1-record binary frames (what most senders
        send) is decoded and applied as one batch, so its per-frame cost is
        a few list operations instead of a decode and a row write each; a
        run of JSON objects is decoded frame by frame and applied as one
        batch."""
        n = len(frames)
        if n < COALESCE_MIN or not self._coalesce:
            return sum([self.handle_frame(f, now) for f in frames])
        sizes = list(map(len, frames))
        for one in (_ONE_FRAME, _V1_ONE_FRAME):
            if sizes.count(one) == n:
                return self._handle_run(frames, now, decode_one_record_frames, n * one)
        most = self._max_frame_bytes
        kinds = [_BINARY1 if size == _ONE_FRAME or size == _V1_ONE_FRAME else
                 _JSON1 if size <= most and type(f) is bytes and f[:1] == b"{" else _OTHER
                 for f, size in zip(frames, sizes)]
        accepted, i = 0, 0
        while i < n:
            kind, j = kinds[i], i + 1
            while j < n and kinds[j] == kind:
                j += 1
            if kind != _OTHER and j - i >= COALESCE_MIN:
                decode = decode_one_record_frames if kind == _BINARY1 else decode_json_objects
                accepted += self._handle_run(frames[i:j], now, decode, sum(sizes[i:j]))
            else:
                for f in frames[i:j]:
                    accepted += self.handle_frame(f, now)
            i = j
        return accepted

    def _handle_run(self, frames: list, now: float, decode, nbytes: int) -> int:
        """`handle_frames` for a run of frames of one kind: ``decode`` is
        `wire.binary.decode_one_record_frames` (which may refuse the run: then
        frame by frame) or `wire.jsondecode.decode_json_objects`."""
        k = len(frames)
        seen, accepted, rejected = k, 0, 0
        self._full_in_frame = 0
        try:
            dec = decode(frames)
            if dec is None:    # not all 1-record binary frames (a JSON one, say)
                return sum([self.handle_frame(f, now) for f in frames])
            if dec.rejects:
                rejected = self._count_rejects(dec)
            if len(dec.records):
                accepted = self._apply(dec, now, remember=False)
        except Exception as err:  # noqa: BLE001 - as in handle_frame
            lost = seen - accepted - rejected - self._full_in_frame
            self._internal_error(err, max(lost, 0))
        finally:
            self.registry.publish_pending()
        self._count_frames(k, seen, accepted, nbytes)
        return accepted

    def _apply(self, dec, now: float, remember: bool = True) -> int:
        """Apply the valid heartbeats of decoded frame (or run) ``dec``:
        register new nodes, update zones and labels, write every row.
        Returns rows written.

        ``remember``: the batch may be a sender's repeated node list (not a
        coalesced run of frames)."""
        records = dec.records
        if len(records) == 1:
            slots = self._slot_of_one(dec, now)
        else:
            slots = self._slots_of(records, dec.labels, now, remember)
        return int(write_rows(self._row_columns, self._capacity, slots, records, float(now)))

    def _slot_of_one(self, dec, now: float) -> np.ndarray:
        """`_slots_of` for a batch of one, on scalars (see the module docstring)."""
        records, labels, one = dec.records, dec.labels, dec.one
        if one is not None:   # the decoder's copy: node and zone as bytes, no padding
            key, zone = one[_NODE], one[_ZONE]
        else:
            key, zone = records["node"].tolist()[0], bytes(records["zone"][0])
        s = self._slot_of.get(key, -1)
        if s < 0 or now - self._recv_cells[s] >= self._forget_after_s:
            slots = np.full(1, -1, np.int64)
            self._resolve_slow(records, labels, [key], slots, now)
            return slots
        lab = labels[0] if labels is not None else None
        if zone or lab or self._zone_first_cells[s] or self._labels_len_cells[s]:
            self.registry.set_meta(s, zone, lab)   # compares before writing
        self._one_slot_cell[0] = s
        return self._one_slot

    def _slots_of(self, records: np.ndarray, labels, now: float, remember: bool) -> np.ndarray:
        """The slot of each record (-1: not written, the registry is full),
        after registering new nodes and updating changed zones and labels."""
        n = len(records)
        # Senders that batch usually list the same nodes in the same order
        # every time: the slots of such a frame are remembered, keyed by its
        # length and first node, and checked against the registry's ids (and
        # ages and zones) in one compiled pass (ids are unique among
        # registered slots).
        words = np.ascontiguousarray(records).view(np.uint64).reshape(n, -1)
        # A run of coalesced 1-record frames is not a sender's batch: never
        # remembered (the memo would fill with one-off node lists).
        memo_key = (n, bytes(records["node"][0])) if remember else None
        slots = self._memo.get(memo_key) if remember else None
        status = STALE if slots is None else self._check(slots, words, now)
        keys = None
        if status == STALE:
            keys = records["node"].tolist()   # S64 -> bytes without padding = node_key()
            try:
                # The one per-record Python step: dict lookups, in C.  An
                # unknown node maps to None, which np.fromiter refuses.
                slots = np.fromiter(map(self._slot_of.get, keys), np.int64, n)
            except TypeError:
                slots = None
            else:
                if remember:
                    self._remember(memo_key, slots)
                status = self._check(slots, words, now)
        # Known nodes: the check found those to forget on arrival (AGED).
        if slots is None or status & AGED:
            if keys is None:
                keys = records["node"].tolist()
            slots = np.full(n, -1, np.int64) if slots is None else slots.copy()
            self._resolve_slow(records, labels, keys, slots, now)
            if remember and not self._full_in_frame:
                self._remember(memo_key, slots)
            self._update_meta(records, labels, slots, words)
        elif status & META or labels is not None:
            self._update_meta(records, labels, slots, words)
        return slots

    def _check(self, slots: np.ndarray, words: np.ndarray, now: float) -> int:
        """`check_slots` over this segment: STALE, or AGED/META bits."""
        return check_slots(slots, words, self._node_words, self._registered,
                           self._labels_len, self._zone_words, self._recv_time, float(now),
                           float(self._forget_after_s))

    def _remember(self, memo_key, slots: np.ndarray) -> None:
        if len(slots) < MEMO_MIN_RECORDS:
            return
        if len(self._memo) >= MEMO_MAX_FRAMES:
            self._memo.clear()
        self._memo[memo_key] = slots

    def _resolve_slow(self, records, labels, keys, slots, now) -> None:
        """Registrations and re-registrations, record by record in frame order
        (the order decides who gets the lowest free slot)."""
        registry, slot_of, recv = self.registry, self._slot_of, self._recv_time
        forget_after = self._forget_after_s
        zones = records["zone"].tolist()
        done: dict[bytes, int] = {}   # nodes settled earlier in this frame
        for j, key in enumerate(keys):
            s = done.get(key)
            if s is not None:
                slots[j] = s
                continue
            s = slot_of.get(key, -1)
            if s >= 0 and now - recv[s] >= forget_after:
                registry.free(s)      # forgotten: registered anew just below
                del slot_of[key]
                s = -1
            if s < 0:
                s = registry.register(key, zones[j], labels[j] if labels is not None else None,
                                      publish=False)
                if s < 0:
                    self._full_in_frame += 1
                    self._rejects[_REGISTRY_FULL] += 1
                    self.log.add("registry_full", 1, (
                        "registry_full", f"node {key.decode('utf-8', 'backslashreplace')!r}: "
                        f"all {registry.capacity} slots taken"))
                    slots[j] = -1
                    continue          # not settled: a slot freed later in the frame may take it
                slot_of[key] = s
            done[key] = s
            slots[j] = s

    def _update_meta(self, records, labels, slots, words) -> None:
        """Apply changed zones/labels.  The common case (no zone on either
        side, no labels) costs two small gathers; a zone comparison works on
        8-byte words of the padded fields."""
        reg = self._reg
        if self._full_in_frame:
            keep = np.flatnonzero(slots >= 0)
            if not len(keep):
                return
            sl, new_zone = slots[keep], words[keep, ZONE_WORDS]
            labs = None if labels is None else [labels[i] for i in keep.tolist()]
        else:
            sl, new_zone, labs = slots, words[:, ZONE_WORDS], labels
        # A zone has no inner NUL, so it is empty iff its first word is 0.
        if new_zone[:, 0].any() or self._zone_first[sl].any():
            changed = (self._zone_words[sl] != new_zone).any(axis=1)
        else:
            changed = np.zeros(len(sl), bool)
        cur_len = reg.labels_len[sl]
        if labs is None:
            changed |= cur_len != 0
        else:
            new_len = np.fromiter((len(b) if b else 0 for b in labs), np.int64, len(labs))
            changed |= cur_len != new_len
            for i in np.flatnonzero(~changed & (new_len > 0)).tolist():
                if bytes(reg.labels[sl[i], :new_len[i]]) != labs[i]:
                    changed[i] = True
        if not changed.any():
            return
        # Apply every heartbeat of the changed nodes in frame order, so the
        # last one wins even when a node repeats within the frame.
        targets = set(sl[changed].tolist())
        zones = records["zone"].tolist()
        registry = self.registry
        for j, s in enumerate(slots.tolist()):
            if s in targets:
                registry.set_meta(s, zones[j], labels[j] if labels is not None else None)

    def _internal_error(self, err: Exception, lost: int) -> None:
        self._rejects[_MALFORMED_FRAME] += lost
        detail = f"internal error {type(err).__name__}: {str(err)[:200]}"
        self.log.add("malformed_frame", lost, ("malformed_frame", detail))
        self._internal_errors += 1
        if self._internal_errors == 1:  # the first one in full; later ones in the summary
            log_event("ERROR", "ingest_internal_error", error=repr(detail),
                 traceback=repr(traceback.format_exc()))

    # --------------------------------------------------------- upkeep --
    def forget(self, now: float) -> list[int]:
        """Free every node whose age is >= ``engine.forget_after_s``; the slots."""
        freed = self.registry.forget_older_than(now, self._forget_after_s)
        if freed:
            self._slot_of = dict(self.registry.items())
        return freed

    def mark_alive(self, now: float) -> None:
        self._alive[0] = now

    def warm_up(self) -> None:
        """Load (or compile) the row writer, the batch check and the decoder's
        compiled check, for the argument types the frames bring, without
        writing: every slot is -1."""
        write_rows(self._row_columns, self._capacity, np.full(1, -1, np.int64),
                   np.zeros(1, RECORD_DTYPE), 0.0)
        self._check(np.zeros(0, np.int64), np.zeros((0, WORDS), np.uint64),
                    0.0)
        _warm_up_decode()


# ------------------------------------------------------------------ process --
def warm_up() -> None:
    """Load the row writer's compiled code, on a private mapping of the live
    layout, before any segment is attached (what a warm spare does first)."""
    layout = layout_for(2)
    mm = mmap.mmap(-1, layout.size)
    ingest = Ingest(SegmentViews(mm, layout), Config())
    ingest.warm_up()
    ingest = None   # releases the views: the mapping can close
    mm.close()


def _warm_up_decode() -> None:
    """Load the compiled check of `decode_frame`'s batch path (5+ records)."""
    batch_faults(np.zeros((0, RECORD_SIZE), np.uint8))


class _StopFlag:
    def __init__(self):
        self.signal = 0

    def __call__(self, signum, _frame):
        self.signal = signum


def _open_socket(ctx: zmq.Context, config: Config):
    """(socket, authenticator or None, "") bound and ready, or (None, None,
    reason) when the configuration cannot work."""
    ic = config.ingest
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, ic.rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, min(ic.max_frame_bytes * HARD_LIMIT_FACTOR, 2**62))
    auth = None
    try:
        if ic.curve.enabled:
            auth = _enable_curve(ctx, sock, config)
        sock.bind(ic.bind)
    except (zmq.ZMQError, OSError, ValueError) as err:
        sock.close(0)
        if auth is not None:
            auth.stop()
        return None, None, str(err)
    return sock, auth, ""


def _enable_curve(ctx: zmq.Context, sock: zmq.Socket, config: Config):
    """Make ``sock`` a CURVE server admitting the keys in authorized_keys_dir;
    returns the running authenticator (stop it before terminating ``ctx``)."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    cc = config.ingest.curve
    if not zmq.has("curve"):
        raise ValueError("ingest.curve is set but this libzmq has no CURVE support")
    if not os.path.isdir(cc.authorized_keys_dir):
        raise ValueError(f"ingest.curve.authorized_keys_dir = {cc.authorized_keys_dir!r} "
                         "is not a directory")
    public, secret = zmq.auth.load_certificate(cc.server_secret_key_file)
    if not secret:
        raise ValueError(f"ingest.curve.server_secret_key_file = {cc.server_secret_key_file!r} "
                         "holds no secret key")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=cc.authorized_keys_dir)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def ingest_main(name: str, config: Config, parent_pid: int) -> int:
    """The ingest process: attach segment ``name``, bind ``ingest.bind``, apply
    frames until the parent (``parent_pid``) dies, the header's ``stopping``
    is set, or SIGTERM (SIGINT too, unless it is ignored, as the supervisor
    arranges).  Returns the exit code (`shm_engine.core.runtime`): `EXIT_OK`
    stopped, `EXIT_FAILED` attach failed (restartable), `EXIT_FATAL` a segment
    of another layout, or bind or CURVE setup failed."""
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, stop)
    try:
        seg = Segment.attach(name, readonly=False)
    except LayoutMismatch as err:
        log_event("ERROR", "ingest_attach_failed", name=name, error=repr(str(err)))
        return EXIT_FATAL
    except Exception as err:  # noqa: BLE001 - reported as an exit code
        log_event("ERROR", "ingest_attach_failed", name=name, error=repr(str(err)))
        return EXIT_FAILED
    ctx = zmq.Context()
    sock = auth = None
    try:
        sock, auth, why = _open_socket(ctx, config)
        if sock is None:
            log_event("ERROR", "ingest_bind_failed", endpoint=config.ingest.bind, error=repr(why))
            return EXIT_FATAL
        ingest = Ingest(seg.views, config)
        ingest.warm_up()
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        # The bound endpoint (a `*` port resolved) replaces the configured
        # one in the header, so `status` and clients see where to connect.
        seg.views.header.write_str("endpoint", endpoint)
        log_event("INFO", "ingest_started", pid=os.getpid(), endpoint=endpoint,
             registered=len(ingest.registry))
        _run(ingest, sock, config, parent_pid, stop)
        ingest.log.maybe_flush(time.monotonic(), force=True)
        h = seg.views.header
        why = (f"signal_{stop.signal}" if stop.signal else
               "stopping" if h.stopping[0] else "parent_exited")
        log_event("INFO", "ingest_stopped", pid=os.getpid(), reason=why,
             frames=int(h.ingest_frames[0]), accepted=int(h.ingest_accepted[0]))
        return EXIT_OK
    finally:
        if sock is not None:
            sock.close(0)
        if auth is not None:
            auth.stop()
        ctx.term()
        ingest = None
        seg.close()


def drain(sock: zmq.Socket, limit: int, copy: bool = True) -> list:
    """Up to ``limit`` frames already queued on ``sock``, without waiting:
    bytes with ``copy``, else zmq.Frame objects (see `RECV_COPY_MAX`)."""
    frames: list = []
    recv, append, noblock = sock.recv, frames.append, zmq.NOBLOCK
    try:
        for _ in range(limit):
            append(recv(noblock, copy=copy))
    except zmq.Again:
        pass
    return frames


def next_drain(frames: list) -> tuple[bool, int]:
    """``(copy, limit)`` for the next `drain` after one returned ``frames``:
    small frames as bytes, `DRAIN_CHUNK` at a time; large ones as zmq.Frame,
    `LARGE_CHUNK` at a time, so the frames the loop holds beyond the socket's
    queue (``rcvhwm``) stay few when frames are large."""
    if not frames or len(frames[-1]) <= RECV_COPY_MAX:
        return True, DRAIN_CHUNK
    return False, LARGE_CHUNK


def _run(ingest: Ingest, sock: zmq.Socket, config: Config, parent_pid: int,
         stop: _StopFlag) -> None:
    """The loop: wait (bounded), drain a batch, upkeep; until told to stop."""
    h = ingest.views.header
    poll_ms = max(1, int(1000 * min(config.engine.parent_check_interval_s, FORGET_PERIOD_S)))
    drain_batch = config.ingest.drain_batch
    handle, monotonic = ingest.handle_frames, time.monotonic
    copy, chunk = True, DRAIN_CHUNK
    next_forget = 0.0
    while True:
        now = monotonic()
        ingest.mark_alive(now)
        if stop.signal or h.stopping[0] or os.getppid() != parent_pid:
            return
        if now >= next_forget:
            ingest.forget(now)
            next_forget = now + FORGET_PERIOD_S
        ingest.log.maybe_flush(now)
        if not sock.poll(poll_ms, zmq.POLLIN):
            continue
        left = drain_batch
        while left > 0:
            frames = drain(sock, min(chunk, left), copy)
            if not frames:
                break
            copy, chunk = next_drain(frames)
            handle(frames, monotonic())
            left -= len(frames)


def run_standalone(name: str, config: Config) -> int:
    """Create segment ``name`` and run an ingest on it in this process, with no
    tick worker (for benchmarks); unlinks the segment on the way out."""
    seg = Segment.create(name, config.engine.capacity, mode=config.engine.shm_mode,
                         tick_interval_ms=config.engine.tick_interval_ms,
                         endpoint=config.ingest.bind)
    try:
        return ingest_main(name, config, os.getppid())
    finally:
        seg.close()
        seg.unlink()
