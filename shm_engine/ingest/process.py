"""The ingest process: heartbeat frames from a ZeroMQ PULL socket into the segment.

Invariant: the ingest is the only writer of the registry and the heartbeat
table.  Every frame is decoded and validated whole (`wire.decode.decode_frame`)
before anything of it is applied; a rejected heartbeat leaves no trace but its
counter, and never costs the good heartbeats of the same frame.  After each
frame the header counters satisfy::

    ingest_accepted + sum(rejects) == ingest_heartbeats

and ``ingest_frames`` is bumped last, so a reader that loads ``ingest_frames``
first and sees ``k`` also sees the rows and the other counters of those k
frames (x86-64 TSO: the stores retire in program order, see
`shm_engine.core.ordering`; readers: `shm_engine.ingest.counters`).

Registration follows SCORING.md: a node's first accepted heartbeat takes the
lowest free slot.  Nodes are forgotten every `FORGET_PERIOD_S`
(`NodeRegistry.forget_older_than`), and also on arrival: a heartbeat for a
registered node whose age is already >= ``forget_after_s`` frees the slot
and registers the node anew, as replay does when forgetting runs at the
start of the tick the heartbeat arrives in.  Beyond SCORING.md (replay does
neither): a registration must pass the registration budget
(``registration_rate``), and a full registry first gives the slot of its
longest-silent DEAD node (age >= ``score.dead_after_s``) with no heartbeat
in the frame to the new node (`Ingest._reclaim_dead`); only when every node
is live is the new one rejected (``registry_full``).  A live node is never
evicted.

Admission (`shm_engine.ingest.admission`): every validated heartbeat is
checked against its sender's bindings (``not_authorized``) and ``allow_nodes``
(``node_not_allowed``) before it is applied; a frame whose sender is bound to
no node, or that carries more than ``max_heartbeats_per_frame`` heartbeats,
is refused whole, undecoded.  The sender of a frame comes from the frame's
metadata, which only zmq.Frame objects carry (a few times the cost of
receiving bytes): the loop receives frames with their sender always with
CURVE (the ZAP User-Id) or with ``peer_nodes_file`` (the peer address), and
otherwise only for `IDENTIFY_HOLD_S` after a frame of an unknown sender
tried to register a node: registrations of unknown senders share the
budget of one sender, ``(unidentified)``.

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

Leaves (`shm_engine.wire.leave`): a frame ``{"leave": "NODE"}`` frees the
node's slot at once, after the same admission checks as a heartbeat
(`Ingest._leave`); it counts as one heartbeat, and ``ingest_left`` counts
those accepted.  A run of JSON frames keeps a leave apart, so it is applied
in its place among the heartbeats.

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
never counted: ZeroMQ does not deliver it).  ``ZMQ_RCVHWM`` is
``max_queue_bytes`` // the hard limit, so one connection's queue holds at
most ``max_queue_bytes``.  Beyond the socket's queues the loop holds one
drained chunk: at most `DRAIN_CHUNK` small frames and one above
`RECV_COPY_MAX` bytes (`drain` ends the chunk there), or `LARGE_CHUNK`
frames once frames are large (`next_drain`).

Work per turn of the loop: a round drains at most ``drain_batch`` frames and
ends after the chunk that passes `ROUND_BUDGET_S`; one frame's work is
bounded by ``max_frame_bytes`` and ``max_heartbeats_per_frame``.  The loop
beats after every chunk and after every frame decoded alone, so a busy
ingest beats at least once per frame and the watchdog kills only a hung one.
"""

from __future__ import annotations

import math
import mmap
import os
import signal
import time
import traceback
from typing import Any

import numpy as np
import zmq

from shm_engine.core.config import HARD_LIMIT_FACTOR, Config, is_loopback_endpoint
from shm_engine.core.errors import LayoutMismatch
from shm_engine.core.layout import (
    N_PLACE_RESOURCES,
    N_REJECT_SLOTS,
    SegmentViews,
    layout_for,
    read_place_resources,
)
from shm_engine.core.registry import NodeRegistry, decode_id
from shm_engine.core.rows import alloc_names, column_addresses, write_alloc, write_rows
from shm_engine.core.runtime import EXIT_FAILED, EXIT_FATAL, EXIT_OK, log_event
from shm_engine.core.segment import Segment
from shm_engine.ingest._checks import AGED, META, STALE, check_slots
from shm_engine.ingest.admission import (
    MODE_CURVE,
    MODE_INSECURE,
    MODE_LOOPBACK,
    MODE_NAMES,
    UNIDENTIFIED,
    Admission,
    BindingError,
    Sender,
    SenderCounters,
    load_keys,
    load_peer_bindings,
)
from shm_engine.ingest.zap import ZapHandler
from shm_engine.wire.binary import batch_faults, decode_one_record_frames
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.format import (
    BINARY_VERSIONS,
    FIELD_INDEX,
    HAS_RESOURCES,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    ONE_FRAME_SIZE,
    RECORD_DTYPE,
    RECORD_SIZE,
    REJECT_REASONS,
    RESOURCE_NAMES,
    RESOURCE_VALUES,
    V1_ONE_FRAME_SIZE,
    WORDS,
    ZONE_WORDS,
)
from shm_engine.wire.jsondecode import decode_json_objects, json_array_items
from shm_engine.wire.leave import MAX_LEAVE_FRAME_BYTES, decode_leave, is_leave_frame
from shm_engine.wire.result import DecodedFrame

__all__ = [
    "Ingest",
    "close_socket",
    "drain",
    "next_drain",
    "ingest_main",
    "open_socket",
    "run_standalone",
    "warm_up",
    "FORGET_PERIOD_S",
    "HARD_LIMIT_FACTOR",
    "IDENTIFY_HOLD_S",
    "ROUND_BUDGET_S",
]

FORGET_PERIOD_S = 0.1
SAMPLE_MAX = 3  # sample details per reject log line
ROUND_BUDGET_S = 0.05  # a drain round ends after the chunk that passes this
IDENTIFY_HOLD_S = 2.0  # frames carry their sender this long after a registration

_REJECT_INDEX = {reason: i for i, reason in enumerate(REJECT_REASONS)}
assert len(REJECT_REASONS) <= N_REJECT_SLOTS
_MALFORMED_FRAME = _REJECT_INDEX["malformed_frame"]
_REGISTRY_FULL = _REJECT_INDEX["registry_full"]
_NOT_AUTHORIZED = _REJECT_INDEX["not_authorized"]
_NODE_NOT_ALLOWED = _REJECT_INDEX["node_not_allowed"]
_REGISTRATION_RATE = _REJECT_INDEX["registration_rate"]
_JSON_FIRST = frozenset(b"[ \t\n\r")  # a frame that may be a JSON array
MEMO_MIN_RECORDS = 8  # smaller frames go through the dict directly
MEMO_MAX_FRAMES = 4096  # remembered frame shapes; cleared when full
DRAIN_CHUNK = 256  # small frames received before they are handled: bounds the wait
LARGE_CHUNK = 4  # the same for frames above RECV_COPY_MAX
# `drain` receives a frame as bytes (recv(copy=True)) while the frames come
# small: measured 2-3x the frames/s of zmq.Frame objects at 208 bytes.  A large
# frame is cheaper as a zmq.Frame (no copy into a new bytes object): 1000-record
# frames went at about twice the rate.  The last frame's size picks the mode for
# the next chunk (`next_drain`).
RECV_COPY_MAX = 16 * 1024
COALESCE_MIN = 8  # fewer 1-record frames in a row are handled one by one
_ONE_FRAME = ONE_FRAME_SIZE  # bytes of a 1-record binary frame
_V1_ONE_FRAME = V1_ONE_FRAME_SIZE  # the same in wire version 1 (still accepted)
# `DecodedFrame.one`: the record's values in RECORD_DTYPE order, text unpadded.
_NODE, _ZONE = FIELD_INDEX["node"], FIELD_INDEX["zone"]
_FLAGS = FIELD_INDEX["flags"]
# (name, value) positions of the resource entries in `DecodedFrame.one`.
_RESOURCE_ITEMS = tuple(
    (FIELD_INDEX[n], FIELD_INDEX[v]) for n, v in zip(RESOURCE_NAMES, RESOURCE_VALUES, strict=True)
)
_U32_MAX = 0xFFFF_FFFF
_OTHER, _BINARY1, _JSON1 = 0, 1, 2  # frame kinds for `Ingest.handle_frames`
_LEFT_BRACE = ord("{")  # a leave frame's first byte (shm_engine.wire.leave)


def _cells(view: np.ndarray) -> memoryview[Any]:
    """A header field as a native-format memoryview: ``c[0] += n`` on it is a
    plain Python number update, several times cheaper than on a numpy view."""
    return view.data.cast("B").cast("Q" if view.dtype.kind == "u" else "d")


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
        parts = " ".join(
            f"{r}={c}" for r, c in sorted(self.counts.items(), key=lambda rc: _REJECT_INDEX[rc[0]])
        )
        # Details hold untrusted bytes; repr() keeps the line one line.
        samples = " | ".join(f"{r}: {d}" for r, d in self.samples)
        log_event(
            "WARN",
            "ingest_rejects",
            window_s=f"{window:.3f}",
            total=total,
            reasons=repr(parts),
            samples=repr(samples),
        )
        self.counts = {}
        self.samples = []
        self._last = now
        return True


class Ingest:
    """The intake state over `SegmentViews` ``views``; no sockets.

    `handle_frame` applies one frame; `forget` frees nodes that went silent.
    Both return status and never raise on bad input.  ``admission`` holds
    the sender bindings, ``allow_nodes`` and the registration budget
    (default: those of ``config`` without CURVE keys or peer bindings)."""

    def __init__(self, views: SegmentViews, config: Config, admission: Admission | None = None):
        self.views = views
        self.config = config
        self.admission = admission if admission is not None else Admission(config.ingest)
        self.registry = NodeRegistry(views)
        self._slot_of: dict[bytes, int] = dict(self.registry.items())
        self._table = views.table
        self._reg = views.registry
        self._recv_time = views.table.recv_time
        # Scalar reads for a batch of one: a memoryview item is a Python
        # float/int, several times cheaper to get than a numpy scalar.
        self._recv_cells = views.table.recv_time.data
        self._zone_first_cells = views.registry.zone[:, 0].data
        self._labels_len_cells = views.registry.labels_len.data
        self._row_columns = column_addresses(views.table)  # self._table keeps them mapped
        self._alloc = views.table.alloc
        self._alloc_names, self._alloc_scales, self._n_alloc = alloc_names(views.header)
        self._alloc_cells = views.table.alloc.reshape(-1).data
        self._alloc_scale_list = self._alloc_scales.tolist()
        self._alloc_index = {
            name.encode("utf-8"): k
            for k, (name, _) in enumerate(read_place_resources(views.header))
        }
        # Which rows hold any capacity (a row of zeros needs no rewrite).
        self._has_alloc = bytearray(views.table.alloc.any(axis=1).astype(np.uint8).tobytes())
        self._capacity = len(views.table.recv_time)
        # The padded zone column as 8-byte words, and its first byte alone.
        self._zone_words = views.registry.zone.view(np.uint64)
        self._zone_first = views.registry.zone[:, 0]
        self._node_words = views.registry.node_id.view(np.uint64)
        self._registered = views.registry.registered
        self._labels_len = views.registry.labels_len
        self._memo: dict[tuple[int, bytes], np.ndarray] = {}
        self._one_slot = np.zeros(1, np.int64)  # reused: write_rows does not keep it
        self._one_slot_cell = self._one_slot.data
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
        self._no_slot = 0  # heartbeats of this frame refused a slot
        self._refused = 0  # heartbeats of this frame rejected otherwise
        cap = self._max_heartbeats = config.ingest.max_heartbeats_per_frame
        # The shortest frame over the cap (a JSON array of cap + 1 one-byte
        # items); whether a binary frame can be over it at all.
        self._cap_bytes = 2 * cap + 3
        smallest = min(size for _, size in BINARY_VERSIONS)
        self._binary_over_cap = HEADER_SIZE + (cap + 1) * smallest <= self._max_frame_bytes
        self._restricts = self.admission.restricts_nodes
        self._dead_after_s = config.score.dead_after_s
        self._no_dead_before = 0.0  # no registered node is DEAD before this time
        self._reclaimed = _cells(h.ingest_reclaimed)
        self._left = _cells(h.ingest_left)  # leave messages accepted
        self._by_sender = SenderCounters(h)
        self._not_authorized_column = h.sender_not_authorized
        self._registration_rate_column = h.sender_registration_rate
        #: Until this monotonic time the loop receives frames with their
        #: sender (peer address), set when a frame of an unknown sender
        #: tried to register a node: see `Ingest._register`.
        self.identify_until = 0.0

    # ----------------------------------------------------------- frames --
    def handle_frame(self, frame, now: float, sender: Sender | None = None) -> int:
        """Decode ``frame`` (bytes-like) received at monotonic ``now`` from
        ``sender`` (None: unknown) and apply its valid, admitted heartbeats.
        Returns the number of heartbeats written.

        An unexpected exception (a bug, not bad input) is counted under
        ``malformed_frame`` for the heartbeats it cost, logged, and swallowed:
        one frame must not stop the intake."""
        mv = memoryview(frame)
        nbytes = mv.nbytes
        seen, accepted = 1, 0
        self._no_slot = self._refused = 0
        try:
            if sender is not None and sender.refused:
                self._refuse_frame(_NOT_AUTHORIZED, sender, "bound to no node")
            elif (
                0 < nbytes <= MAX_LEAVE_FRAME_BYTES
                and mv[0] == _LEFT_BRACE
                and is_leave_frame(small := mv.tobytes())
            ):
                accepted = self._leave(small, sender)
            elif self._cap_bytes <= nbytes <= self._max_frame_bytes and self._over_cap(frame, mv):
                self._refuse_frame(
                    _REJECT_INDEX["too_many_heartbeats"],
                    sender,
                    f"more than {self._max_heartbeats} heartbeats",
                )
            else:
                dec = decode_frame(frame, self._max_frame_bytes)
                seen = dec.seen
                accepted = self._take(dec, now, sender, True)
        except Exception as err:  # noqa: BLE001 - see the docstring; Ctrl-C etc. pass
            self._internal_error(err, seen - accepted)
        finally:
            # After the rows: see "New registrations" in the module docstring.
            self.registry.publish_pending()
        self._count_frames(1, seen, accepted, nbytes)
        return accepted

    def _take(self, dec: DecodedFrame, now: float, senders, remember: bool) -> int:
        """Count the rejects of decoded frame (or run) ``dec``, admit and
        apply the rest; returns the heartbeats written.  ``senders`` as in
        `_admit`, ``remember`` as in `_apply`."""
        if dec.rejects:
            self._refused += self._count_rejects(dec)
        if len(dec.records) and self._restricts:
            dec, refused, senders = self._admit(dec, senders)
            self._refused += refused
        return self._apply(dec, now, senders, remember) if len(dec.records) else 0

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

    def _refuse(self, index: int, n: int, sender: Sender | None, detail: str) -> None:
        """Count ``n`` heartbeats refused under reason ``index`` (and per
        sender for the reasons `SenderCounters` keeps)."""
        self._rejects[index] += n
        reason = REJECT_REASONS[index]
        name = sender.name if sender is not None else UNIDENTIFIED
        self.log.add(reason, n, (reason, f"{detail} (sender {name!r})"))
        if index == _NOT_AUTHORIZED:
            self._by_sender.add(name, self._not_authorized_column, n)
        elif index == _REGISTRATION_RATE:
            self._by_sender.add(name, self._registration_rate_column, n)

    def _refuse_frame(self, index: int, sender: Sender | None, detail: str) -> None:
        """Refuse a frame whole, undecoded: it counts as one heartbeat."""
        self._refuse(index, 1, sender, "frame: " + detail)
        self._refused += 1

    def _over_cap(self, frame, mv: memoryview) -> bool:
        """Whether ``frame`` (``mv``: its bytes; at least `_cap_bytes`, at
        most max_frame_bytes) carries more than ``max_heartbeats_per_frame``
        heartbeats, told without decoding it: the top-level items of a JSON
        array (`wire.json_array_items`, run only on a frame with enough
        commas), or a well-formed binary header's count.  Malformed frames
        are left to the decoder."""
        cap = self._max_heartbeats
        if mv[0] in _JSON_FIRST:
            buf = frame if type(frame) is bytes else mv.tobytes()
            return buf.count(b",") >= cap and json_array_items(buf) > cap
        if not self._binary_over_cap:
            return False
        magic, version, size, count, _reserved = HEADER.unpack_from(mv)
        return (
            magic == MAGIC
            and count > cap
            and (version, size) in BINARY_VERSIONS
            and mv.nbytes == HEADER_SIZE + count * size
        )

    def _admit(self, dec: DecodedFrame, senders) -> tuple[DecodedFrame, int, object]:
        """The heartbeats of ``dec`` their senders may speak for and
        ``allow_nodes`` admits; the others are counted (``not_authorized``,
        then ``node_not_allowed``).  ``senders``: one `Sender` (or None) for
        every record, or a list aligned with the records.  Returns the
        admitted part, how many were refused, and ``senders`` for the
        admitted part."""
        records = dec.records
        keys = [dec.one[_NODE]] if dec.one is not None else records["node"].tolist()
        listed = type(senders) is list
        if (
            not listed
            and (senders is None or senders.may_speak_for_all(keys))
            and self.admission.all_allowed(keys)
        ):
            return dec, 0, senders  # the common case: one pass over cached decisions
        node_allowed = self.admission.node_allowed
        keep = []
        refused = 0
        for j, key in enumerate(keys):
            sender = senders[j] if listed else senders
            if sender is not None and not sender.may_speak_for(key):
                index = _NOT_AUTHORIZED
            elif not node_allowed(key):
                index = _NODE_NOT_ALLOWED
            else:
                keep.append(j)
                continue
            refused += 1
            self._refuse(index, 1, sender, f"node {key.decode('utf-8', 'backslashreplace')!r}")
        if not refused:
            return dec, 0, senders
        labels = None if dec.labels is None else [dec.labels[j] for j in keep]
        kept = DecodedFrame(
            records[keep],
            labels,
            {},
            dec.seen,
            [],
            dec.one if keep and dec.one is not None else None,
        )
        return kept, refused, [senders[j] for j in keep] if listed else senders

    def _one_by_one(self, frames: list, now: float, senders: list | None, clock=None) -> int:
        """`handle_frame` for each frame; the loop beats after each one, so
        a chunk of costly frames never looks like a hang.  With ``clock``
        each frame after the first is received at ``clock()`` when its turn
        comes, so costly frames do not age the frames behind them."""
        accepted, alive, monotonic = 0, self._alive, time.monotonic
        for i, f in enumerate(frames):
            accepted += self.handle_frame(f, now, None if senders is None else senders[i])
            alive[0] = monotonic()
            if clock is not None:
                now = clock()
        return accepted

    def handle_frames(
        self, frames: list, now: float, senders: list | None = None, clock=None
    ) -> int:
        """`handle_frame` for each of ``frames`` in order, all received by
        ``now``, from ``senders`` (aligned with the frames; None: unknown);
        returns the heartbeats written.  ``clock`` (the loop passes
        ``time.monotonic``): frames decoded one at a time are received when
        their turn comes (see `_one_by_one`).

        The same rows, registrations, counters and log lines as frame by
        frame (the counters move once per run of frames, ``ingest_frames``
        last).  Why: a run of 1-record binary frames (what most senders
        send) is decoded and applied as one batch, so its per-frame cost is
        a few list operations instead of a decode and a row write each; a
        run of JSON objects is decoded frame by frame and applied as one
        batch."""
        n = len(frames)
        if n < COALESCE_MIN or not self._coalesce:
            return self._one_by_one(frames, now, senders, clock)
        sizes = list(map(len, frames))
        for one in (_ONE_FRAME, _V1_ONE_FRAME):
            if sizes.count(one) == n:
                return self._handle_run(frames, now, decode_one_record_frames, n * one, senders)
        most = self._max_frame_bytes
        kinds = [
            _BINARY1
            if size in (_ONE_FRAME, _V1_ONE_FRAME)
            else _JSON1
            if size <= most and type(f) is bytes and f[:1] == b"{" and not is_leave_frame(f)
            else _OTHER
            for f, size in zip(frames, sizes, strict=True)
        ]
        accepted, i = 0, 0
        while i < n:
            kind, j = kinds[i], i + 1
            while j < n and kinds[j] == kind:
                j += 1
            part = None if senders is None else senders[i:j]
            if kind != _OTHER and j - i >= COALESCE_MIN:
                decode = decode_one_record_frames if kind == _BINARY1 else decode_json_objects
                accepted += self._handle_run(frames[i:j], now, decode, sum(sizes[i:j]), part)
            else:
                accepted += self._one_by_one(frames[i:j], now, part, clock)
            i = j
            if clock is not None:
                now = clock()
        return accepted

    def _handle_run(
        self, frames: list, now: float, decode, nbytes: int, senders: list | None
    ) -> int:
        """`handle_frames` for a run of frames of one kind: ``decode`` is
        `wire.binary.decode_one_record_frames` (which may refuse the run: then frame
        by frame) or `wire.jsondecode.decode_json_objects`.  Frame by frame too when a
        sender is refused, or when senders differ and a record was rejected
        (the records no longer line up with the frames)."""
        k = len(frames)
        seen, accepted = k, 0
        self._no_slot = self._refused = 0
        per: Sender | list | None = None
        if senders is not None:
            first = senders[0]
            per = first if all([s is first for s in senders]) else senders
            if any([s.refused for s in senders]):
                return self._one_by_one(frames, now, senders)
        try:
            dec = decode(frames)
            if dec is None or (per is senders and per is not None and len(dec.records) < k):
                # Not all 1-record binary frames (a JSON one, say), or unaligned.
                return self._one_by_one(frames, now, senders)
            accepted = self._take(dec, now, per, False)
        except Exception as err:  # noqa: BLE001 - as in handle_frame
            self._internal_error(err, seen - accepted)
        finally:
            self.registry.publish_pending()
        self._count_frames(k, seen, accepted, nbytes)
        return accepted

    def _apply(self, dec, now: float, senders, remember: bool = True) -> int:
        """Apply the valid heartbeats of decoded frame (or run) ``dec`` from
        ``senders`` (as in `_admit`): register new nodes, update zones and
        labels, write every row.  Returns rows written.

        ``remember``: the batch may be a sender's repeated node list (not a
        coalesced run of frames)."""
        records = dec.records
        if len(records) == 1:
            slots = self._slot_of_one(dec, now, senders)
        else:
            labels = dec.labels
            if labels is not None and not any(labels):
                labels = None  # no heartbeat has labels: what a binary batch says
            slots = self._slots_of(records, labels, now, remember, senders)
        written = int(write_rows(self._row_columns, self._capacity, slots, records, float(now)))
        if self._n_alloc:
            self._write_alloc(dec, slots)
        return written

    def _write_alloc(self, dec, slots: np.ndarray) -> None:
        """The placement capacity of the rows just written (`rows.write_alloc`).
        A heartbeat of one, on scalars: nothing to do when it carries no
        resources and its row holds none (``_has_alloc``), the common case
        of an engine whose nodes do not report resources."""
        one, has = dec.one, self._has_alloc
        if one is not None and len(slots) == 1:
            s = int(slots[0])
            if s < 0:
                return
            if one[_FLAGS] & HAS_RESOURCES:
                row = [0] * self._n_alloc
                index, scales = self._alloc_index, self._alloc_scale_list
                for name_at, value_at in _RESOURCE_ITEMS:
                    name = one[name_at]
                    if not name:
                        break  # the entries come first
                    k = index.get(name)
                    if k is not None:
                        x = math.floor(one[value_at] * scales[k] + 0.5)
                        row[k] = x if x < _U32_MAX else _U32_MAX
            elif has[s]:
                row = [0] * self._n_alloc
            else:
                return
            cells, base = self._alloc_cells, s * N_PLACE_RESOURCES
            for k, x in enumerate(row):
                cells[base + k] = x
            has[s] = any(row)
            return
        words = np.ascontiguousarray(dec.records).view(np.uint64).reshape(len(slots), -1)
        write_alloc(
            self._alloc,
            slots,
            words,
            words.view(np.float64),
            self._alloc_names,
            self._alloc_scales,
            self._n_alloc,
        )
        ok = slots[(slots >= 0) & (slots < self._capacity)]
        for s, v in zip(ok.tolist(), self._alloc[ok].any(axis=1).tolist(), strict=True):
            has[s] = v

    def _slot_of_one(self, dec, now: float, senders) -> np.ndarray:
        """`_slots_of` for a batch of one, on scalars (see the module docstring)."""
        records, labels, one = dec.records, dec.labels, dec.one
        if one is not None:  # the decoder's copy: node and zone as bytes, no padding
            key, zone = one[_NODE], one[_ZONE]
        else:
            key, zone = records["node"].tolist()[0], bytes(records["zone"][0])
        s = self._slot_of.get(key, -1)
        if s < 0 or now - self._recv_cells[s] >= self._forget_after_s:
            slots = np.full(1, -1, np.int64)
            self._resolve_slow(records, labels, [key], slots, now, senders)
            return slots
        lab = labels[0] if labels is not None else None
        if zone or lab or self._zone_first_cells[s] or self._labels_len_cells[s]:
            self.registry.set_meta(s, zone, lab)  # compares before writing
        self._one_slot_cell[0] = s
        return self._one_slot

    def _slots_of(
        self, records: np.ndarray, labels, now: float, remember: bool, senders
    ) -> np.ndarray:
        """The slot of each record (-1: not written, no slot was given),
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
        slots = self._memo.get(memo_key) if memo_key is not None else None
        status = STALE if slots is None else self._check(slots, words, now)
        keys = None
        if status == STALE:
            keys = records["node"].tolist()  # S64 -> bytes without padding = node_key()
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
            self._resolve_slow(records, labels, keys, slots, now, senders)
            if remember and not self._no_slot:
                self._remember(memo_key, slots)
            self._update_meta(records, labels, slots, words)
        elif status & META or labels is not None:
            self._update_meta(records, labels, slots, words)
        return slots

    def _check(self, slots: np.ndarray, words: np.ndarray, now: float) -> int:
        """`check_slots` over this segment: STALE, or AGED/META bits."""
        return check_slots(
            slots,
            words,
            self._node_words,
            self._registered,
            self._labels_len,
            self._zone_words,
            self._recv_time,
            float(now),
            float(self._forget_after_s),
        )

    def _remember(self, memo_key, slots: np.ndarray) -> None:
        if len(slots) < MEMO_MIN_RECORDS:
            return
        if len(self._memo) >= MEMO_MAX_FRAMES:
            self._memo.clear()
        self._memo[memo_key] = slots

    def _resolve_slow(self, records, labels, keys, slots, now, senders) -> None:
        """Registrations and re-registrations, record by record in frame order
        (the order decides who gets the lowest free slot)."""
        registry, slot_of, recv = self.registry, self._slot_of, self._recv_time
        forget_after = self._forget_after_s
        listed = type(senders) is list
        zones = records["zone"].tolist()
        done: dict[bytes, int] = {}  # nodes settled earlier in this frame
        for j, key in enumerate(keys):
            s = done.get(key)
            if s is not None:
                slots[j] = s
                continue
            s = slot_of.get(key, -1)
            if s >= 0 and now - recv[s] >= forget_after:
                registry.free(s)  # forgotten: registered anew just below
                del slot_of[key]
                s = -1
            if s < 0:
                s = self._register(
                    key,
                    zones[j],
                    labels[j] if labels is not None else None,
                    senders[j] if listed else senders,
                    now,
                    keys,
                )
                if s < 0:
                    self._no_slot += 1
                    slots[j] = -1
                    continue  # not settled: a slot freed later in the frame may take it
                slot_of[key] = s
            done[key] = s
            slots[j] = s

    def _register(
        self,
        key: bytes,
        zone: bytes,
        labels: bytes | None,
        sender: Sender | None,
        now: float,
        frame_keys: list,
    ) -> int:
        """Register ``key`` if the budget admits it and a slot is free or a
        DEAD node's slot can be reclaimed; else count the refusal and return
        -1.  A registration by an unknown sender asks the loop to receive
        frames with their sender for `IDENTIFY_HOLD_S` (see the module
        docstring)."""
        name = sender.name if sender is not None else UNIDENTIFIED
        if sender is None:
            self.identify_until = now + IDENTIFY_HOLD_S
        label = f"node {key.decode('utf-8', 'backslashreplace')!r}"
        budget = self.admission.budget
        if not budget.admits(name, now):
            self._refuse(_REGISTRATION_RATE, 1, sender, f"{label}: over the registration budget")
            return -1
        registry = self.registry
        s = registry.register(key, zone, labels, publish=False)
        if s < 0 and self._reclaim_dead(now, frame_keys):
            s = registry.register(key, zone, labels, publish=False)
        if s < 0:
            self._rejects[_REGISTRY_FULL] += 1
            self.log.add(
                "registry_full",
                1,
                ("registry_full", f"{label}: all {registry.capacity} slots taken by live nodes"),
            )
            return -1
        budget.charge(name)
        return s

    def _reclaim_dead(self, now: float, frame_keys: list) -> bool:
        """Free the slot of the registered node silent the longest, if it is
        DEAD (age >= ``score.dead_after_s``, liveness 0) and has no
        heartbeat in this frame; True if one was freed.  Never a live node.
        Bounded work: one scan of the registry per call, none while no node
        can be DEAD yet (the oldest heartbeat only gets younger)."""
        if now < self._no_dead_before:
            return False
        hwm = self.registry.hwm
        if not hwm:
            return False
        recv = np.where(self._registered[:hwm] != 0, self._recv_time[:hwm], np.inf)
        # Slots this frame writes are no candidates (their time becomes now):
        # new registrations, and the nodes that have a heartbeat in it.
        slot_of = self._slot_of
        recv[self.registry.pending] = np.inf
        recv[[slot_of[k] for k in frame_keys if k in slot_of]] = np.inf
        s = int(np.argmin(recv))
        if now - recv[s] < self._dead_after_s:
            self._no_dead_before = min(float(recv[s]), now) + self._dead_after_s
            return False
        del slot_of[decode_id(self._reg.node_id[s])]
        self.registry.free(s)
        self._reclaimed[0] += 1
        return True

    def _update_meta(self, records, labels, slots, words) -> None:
        """Apply changed zones/labels.  The common case (no zone on either
        side, no labels) costs two small gathers; a zone comparison works on
        8-byte words of the padded fields."""
        reg = self._reg
        if self._no_slot:
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
                if bytes(reg.labels[sl[i], : new_len[i]]) != labs[i]:
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

    def _internal_error(self, err: Exception, unsettled: int) -> None:
        """Count under ``malformed_frame`` the ``unsettled`` heartbeats (not
        written) that the error left neither refused nor without a slot."""
        lost = max(unsettled - self._refused - self._no_slot, 0)
        self._rejects[_MALFORMED_FRAME] += lost
        detail = f"internal error {type(err).__name__}: {str(err)[:200]}"
        self.log.add("malformed_frame", lost, ("malformed_frame", detail))
        self._internal_errors += 1
        if self._internal_errors == 1:  # the first one in full; later ones in the summary
            log_event(
                "ERROR",
                "ingest_internal_error",
                error=repr(detail),
                traceback=repr(traceback.format_exc()),
            )

    def _leave(self, frame: bytes, sender: Sender | None) -> int:
        """A leave frame (`shm_engine.wire.leave`): free the node's slot at
        once, as forgetting does.  Returns 1 if the leave was accepted
        (also for a node that is not registered), 0 if it was rejected."""
        key, reason, detail = decode_leave(frame)
        if key is None:
            assert reason is not None and detail is not None
            self._refuse(_REJECT_INDEX[reason], 1, sender, detail)
            self._refused += 1
            return 0
        shown = f"leave: node {key.decode('ascii')!r}"
        if sender is not None and not sender.may_speak_for(key):
            self._refuse(_NOT_AUTHORIZED, 1, sender, shown)
            self._refused += 1
            return 0
        if self._restricts and not self.admission.node_allowed(key):
            self._refuse(_NODE_NOT_ALLOWED, 1, sender, shown)
            self._refused += 1
            return 0
        slot = self._slot_of.pop(key, -1)
        if slot >= 0:
            self.registry.free(slot)  # remembered node lists are re-verified (_slots_of)
        self._left[0] += 1
        return 1

    # --------------------------------------------------------- upkeep --
    def forget(self, now: float) -> list[int]:
        """Free every node whose age is >= ``engine.forget_after_s``; the slots."""
        freed = self.registry.forget_older_than(now, self._forget_after_s)
        if freed:
            self._slot_of = dict(self.registry.items())
        return freed

    def mark_alive(self, now: float) -> None:
        self._alive[0] = now

    def senders_of(self, frames: list, by_key: bool) -> list:
        """The `Sender` of each frame (zmq.Frame objects): by the ZAP
        User-Id (the CURVE key) with ``by_key``, else by peer address."""
        adm = self.admission
        sender_of = adm.sender_of_key if by_key else adm.sender_of_peer
        prop = "User-Id" if by_key else "Peer-Address"
        out = []
        for f in frames:
            try:
                value = f.get(prop)
            except zmq.ZMQError:  # not set on this connection (e.g. ipc://)
                value = None
            out.append(sender_of(value))
        return out

    def reload(self, keys_dir: str | None, peers_file: str | None) -> None:
        """Load the key and peer bindings again (SIGHUP); a file with a
        problem leaves its entry out (fail closed) and is logged."""
        problems = self.admission.reload(keys_dir, peers_file)
        h = self.views.header
        h.ingest_reloads[0] += 1
        if self.admission.keys is not None:
            h.ingest_keys[0] = len(self.admission.keys)
        for text in problems:
            log_event("ERROR", "ingest_reload_problem", problem=repr(text))
        if problems:
            h.ingest_reload_problems[0] += 1
        log_event(
            "INFO",
            "ingest_reloaded",
            keys=int(h.ingest_keys[0]),
            peers=len(self.admission.peers or ()),
            problems=len(problems),
        )

    def warm_up(self) -> None:
        """Load (or compile) the row writer, the batch check and the decoder's
        compiled check, for the argument types the frames bring, without
        writing: every slot is -1."""
        write_rows(
            self._row_columns,
            self._capacity,
            np.full(1, -1, np.int64),
            np.zeros(1, RECORD_DTYPE),
            0.0,
        )
        words = np.zeros((1, WORDS), np.uint64)
        write_alloc(
            self._alloc,
            np.full(1, -1, np.int64),
            words,
            words.view(np.float64),
            self._alloc_names,
            self._alloc_scales,
            self._n_alloc,
        )
        self._check(np.zeros(0, np.int64), np.zeros((0, WORDS), np.uint64), 0.0)
        _warm_up_decode()


# ------------------------------------------------------------------ process --
def warm_up() -> None:
    """Load the row writer's compiled code, on a private mapping of the live
    layout, before any segment is attached (what a warm spare does first)."""
    layout = layout_for(2)
    mm = mmap.mmap(-1, layout.size)
    ingest = Ingest(SegmentViews(mm, layout), Config())
    ingest.warm_up()
    del ingest  # releases the views: the mapping can close
    mm.close()


def _warm_up_decode() -> None:
    """Load the compiled check of `decode_frame`'s batch path (5+ records)."""
    batch_faults(np.zeros((0, RECORD_SIZE), np.uint8))


class _Signals:
    """What the signal handlers asked for: ``stop`` (the signal number of
    SIGTERM/SIGINT), ``reload`` (SIGHUP, reset by the loop)."""

    def __init__(self):
        self.stop = 0
        self.reload = False

    def __call__(self, signum, _frame):
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = signum


def _admission(config: Config) -> Admission:
    """The admission of ``config``, its key and peer bindings loaded
    (`BindingError` for the first problem: the ingest does not start)."""
    ic = config.ingest
    keys = load_keys(ic.curve.authorized_keys_dir)[0] if ic.curve.enabled else None
    peers = load_peer_bindings(ic.peer_nodes_file)[0] if ic.peer_nodes_file else None
    return Admission(ic, keys, peers)


def open_socket(ctx: zmq.Context, config: Config, admission: Admission):
    """(socket, ZAP handler or None, mode, "") bound and ready, or (None,
    None, 0, reason) when the configuration cannot work."""
    ic = config.ingest
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, ic.queue_frames)
    sock.setsockopt(zmq.MAXMSGSIZE, ic.max_message_bytes)
    zap = None
    try:
        if ic.curve.enabled:
            zap = _enable_curve(ctx, sock, config, admission)
        sock.bind(ic.bind)
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    except (zmq.ZMQError, OSError, ValueError) as err:
        close_socket(sock, zap)
        return None, None, 0, str(err)
    mode = (
        MODE_CURVE
        if zap is not None
        else MODE_LOOPBACK
        if is_loopback_endpoint(endpoint)
        else MODE_INSECURE
    )
    if mode == MODE_INSECURE and not ic.allow_insecure:
        # The configured name resolved to an address other machines reach.
        sock.close(0)
        return (
            None,
            None,
            0,
            (
                f"ingest.bind = {ic.bind!r} bound {endpoint}, which other "
                "machines can reach, without [ingest.curve]; turn CURVE on "
                "or set ingest.allow_insecure = true"
            ),
        )
    return sock, zap, mode, ""


def close_socket(sock: zmq.Socket | None, zap: ZapHandler | None) -> None:
    """Close what `open_socket` returned (either may be None)."""
    if sock is not None:
        sock.close(0)
    if zap is not None:
        zap.close()


def _enable_curve(
    ctx: zmq.Context, sock: zmq.Socket, config: Config, admission: Admission
) -> ZapHandler:
    """Make ``sock`` a CURVE server whose handshakes ``admission``'s keys
    decide (`ZapHandler`); returns the handler (close it before terminating
    ``ctx``)."""
    import zmq.auth

    cc = config.ingest.curve
    if not zmq.has("curve"):
        raise ValueError("ingest.curve is set but this libzmq has no CURVE support")
    public, secret = zmq.auth.load_certificate(cc.server_secret_key_file)
    if not secret:
        raise ValueError(
            f"ingest.curve.server_secret_key_file = {cc.server_secret_key_file!r} "
            "holds no secret key"
        )
    zap = ZapHandler(ctx, lambda: admission.keys)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return zap


def ingest_main(name: str, config: Config, parent_pid: int) -> int:
    """The ingest process: attach segment ``name``, bind ``ingest.bind``, apply
    frames until the parent (``parent_pid``) dies, the header's ``stopping``
    is set, or SIGTERM (SIGINT too, unless it is ignored, as the supervisor
    arranges); SIGHUP reloads the key and peer bindings.  Returns the exit
    code (`shm_engine.core.runtime`): `EXIT_OK` stopped, `EXIT_FAILED` attach
    failed (restartable), `EXIT_FATAL` a segment of another layout, or bind,
    CURVE or binding setup failed."""
    signals = _Signals()
    signal.signal(signal.SIGTERM, signals)
    signal.signal(signal.SIGHUP, signals)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signals)
    try:
        seg = Segment.attach(name, readonly=False)
    except LayoutMismatch as err:
        log_event("ERROR", "ingest_attach_failed", name=name, error=repr(str(err)))
        return EXIT_FATAL
    except Exception as err:  # noqa: BLE001 - reported as an exit code
        log_event("ERROR", "ingest_attach_failed", name=name, error=repr(str(err)))
        return EXIT_FAILED
    ctx = zmq.Context()
    sock = zap = None
    ingest: Ingest | None = None
    try:
        try:
            admission = _admission(config)
        except BindingError as err:
            log_event("ERROR", "ingest_bindings_failed", error=repr(str(err)))
            return EXIT_FATAL
        sock, zap, mode, why = open_socket(ctx, config, admission)
        if sock is None:
            log_event("ERROR", "ingest_bind_failed", endpoint=config.ingest.bind, error=repr(why))
            return EXIT_FATAL
        ingest = Ingest(seg.views, config, admission)
        ingest.warm_up()
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        h = seg.views.header
        # The bound endpoint (a `*` port resolved) replaces the configured
        # one in the header, so `status` and clients see where to connect.
        h.write_str("endpoint", endpoint)
        h.ingest_mode[0] = mode
        h.ingest_keys[0] = len(admission.keys or ())
        h.ingest_rcvhwm[0] = config.ingest.queue_frames
        h.ingest_maxmsgsize[0] = config.ingest.max_message_bytes
        log_event(
            "INFO",
            "ingest_started",
            pid=os.getpid(),
            endpoint=endpoint,
            mode=MODE_NAMES[mode],
            keys=len(admission.keys or ()),
            registered=len(ingest.registry),
        )
        _run(ingest, sock, zap, config, parent_pid, signals)
        ingest.log.maybe_flush(time.monotonic(), force=True)
        why = (
            f"signal_{signals.stop}"
            if signals.stop
            else "stopping"
            if h.stopping[0]
            else "parent_exited"
        )
        log_event(
            "INFO",
            "ingest_stopped",
            pid=os.getpid(),
            reason=why,
            frames=int(h.ingest_frames[0]),
            accepted=int(h.ingest_accepted[0]),
        )
        return EXIT_OK
    finally:
        close_socket(sock, zap)
        ctx.term()
        ingest = None
        seg.close()


def drain(sock: zmq.Socket, limit: int, copy: bool = True) -> list:
    """Up to ``limit`` frames already queued on ``sock``, without waiting:
    bytes with ``copy``, else zmq.Frame objects (see `RECV_COPY_MAX`).  As
    bytes, a frame above `RECV_COPY_MAX` ends the chunk: a chunk holds at
    most ``limit`` small frames and one large one, whatever the mix."""
    frames: list = []
    recv, append, noblock = sock.recv, frames.append, zmq.NOBLOCK
    try:
        if copy:
            for _ in range(limit):
                f = recv(noblock)
                append(f)
                if len(f) > RECV_COPY_MAX:
                    break
        else:
            for _ in range(limit):
                append(recv(noblock, copy=False))
    except zmq.Again:
        pass
    return frames


def next_drain(frames: list) -> tuple[bool, int]:
    """``(copy, limit)`` for the next `drain` after one returned ``frames``:
    small frames as bytes, `DRAIN_CHUNK` at a time; large ones as zmq.Frame,
    `LARGE_CHUNK` at a time, so the frames the loop holds beyond the socket's
    queue (ZMQ_RCVHWM) stay few when frames are large."""
    if not frames or len(frames[-1]) <= RECV_COPY_MAX:
        return True, DRAIN_CHUNK
    return False, LARGE_CHUNK


def _run(
    ingest: Ingest,
    sock: zmq.Socket,
    zap: ZapHandler | None,
    config: Config,
    parent_pid: int,
    signals: _Signals,
) -> None:
    """The loop: wait (bounded), drain a round, upkeep; until told to stop.

    A round ends after ``drain_batch`` frames or the chunk that passes
    `ROUND_BUDGET_S`; the loop beats after every chunk (and `Ingest`
    after every frame it decodes alone), so the watchdog sees a busy
    ingest beat and only a hung one fall silent."""
    h = ingest.views.header
    ic = config.ingest
    poll_ms = max(1, int(1000 * min(config.engine.parent_check_interval_s, FORGET_PERIOD_S)))
    drain_batch = ic.drain_batch
    handle, monotonic = ingest.handle_frames, time.monotonic
    by_key = zap is not None
    always_identify = ingest.admission.identifies_every_frame
    keys_dir = ic.curve.authorized_keys_dir if by_key else None
    peers_file = ic.peer_nodes_file or None
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    if zap is not None:
        poller.register(zap.socket, zmq.POLLIN)
    copy, chunk = True, DRAIN_CHUNK
    next_forget = 0.0
    while True:
        now = monotonic()
        ingest.mark_alive(now)
        if signals.stop or h.stopping[0] or os.getppid() != parent_pid:
            return
        if signals.reload:
            signals.reload = False
            ingest.reload(keys_dir, peers_file)
        if zap is not None:
            refused = zap.refused
            zap.serve()
            h.ingest_handshakes_refused[0] += zap.refused - refused
        if now >= next_forget:
            ingest.forget(now)
            next_forget = now + FORGET_PERIOD_S
        ingest.log.maybe_flush(now)
        if sock not in dict(poller.poll(poll_ms)):
            continue
        left, start = drain_batch, monotonic()
        while left > 0:
            identify = always_identify or monotonic() < ingest.identify_until
            frames = drain(sock, min(chunk, left), copy and not identify)
            if not frames:
                break
            copy, chunk = next_drain(frames)
            senders = ingest.senders_of(frames, by_key) if identify else None
            handle(frames, monotonic(), senders, monotonic)
            left -= len(frames)
            t = monotonic()
            ingest.mark_alive(t)
            if t - start >= ROUND_BUDGET_S:
                break


def run_standalone(name: str, config: Config) -> int:
    """Create segment ``name`` and run an ingest on it in this process, with no
    tick worker (for benchmarks); unlinks the segment on the way out."""
    seg = Segment.create(
        name,
        config.engine.capacity,
        mode=config.engine.shm_mode,
        tick_interval_ms=config.engine.tick_interval_ms,
        endpoint=config.ingest.bind,
    )
    try:
        return ingest_main(name, config, os.getppid())
    finally:
        seg.close()
        seg.unlink()
