"""The shared-memory layout: every offset, dtype and size of both segments.

Nothing else in the project computes an offset: code asks this module for
numpy views over a buffer (`SegmentViews`, `ClaimsViews`).  Bump
`LAYOUT_VERSION` (the scores segment) or `CLAIMS_LAYOUT_VERSION` (the claims
segment) on any change to it; attach refuses a segment of another version.

Three segments per engine: the scores segment ``/NAME`` (below), which
schedulers map read-only, and the claims segment ``/NAME.claims`` (further
below), which they map read-write, both sized by ``capacity`` (slots); and
the event log ``/NAME.events`` (at the end), sized by ``[events] capacity``.

The scores segment.  Every column starts on a 64-byte boundary, so
single-writer fields of different processes never share a cache line::

    offset 0      +--------------------------------------------------------+
                  | HEADER (8192 bytes)                                    |
                  |   identity ..... magic, layout_version, capacity,      |
                  |                  creator pid + start time, size        |
                  |   latch ........ latch_seq (own cache line)            |
                  |   registry ..... registry_epoch, registered, slot_hwm  |
                  |   ingest ....... frames, heartbeats, accepted,         |
                  |                  rejects[32], alive time               |
                  |   ticker ....... ticks, overruns, tick_us stats,       |
                  |                  alive time                            |
                  |   supervisor ... pids and restarts of the children     |
                  |   strings ...... engine name, ingest endpoint          |
                  |   admission .... ingest mode, keys, reloads, queue     |
                  |                  limits; per-sender refusals (16 rows) |
                  |   reload ....... reloads started/done, status and      |
                  |                  message, config version + hash,       |
                  |                  pending score params (params_seq)     |
                  |   feed ......... feed child pid/restarts/beat, frames, |
                  |                  bytes, lag, feedback from mirrors     |
                  |   http ......... pid, restarts, alive time, URL        |
                  |   placement .... resources: count, scale[8], name[8];  |
                  |                  the [placement] section as JSON       |
                  +--------------------------------------------------------+
                  | HEARTBEAT TABLE (ingest writes; struct of arrays)      |
                  |   row_version u8[cap]   odd while the row is written   |
                  |   recv_time f8[cap]     engine monotonic receive time  |
                  |   cpu mem queue avg_job_s throughput ok err io         |
                  |   p50_ms p95_ms ts slots  f8[cap] each;                |
                  |   reported u1[cap]                                     |
                  |   alloc u8[cap, 8]      capacity per placement         |
                  |                         resource, fixed point          |
                  +--------------------------------------------------------+
                  | REGISTRY (ingest writes)                               |
                  |   slot_gen u8[cap]      odd while the slot changes     |
                  |   registered u1[cap]    meta_version u8[cap] (zone,    |
                  |                         labels; odd while written)     |
                  |   node_id u1[cap, 64]   UTF-8, NUL padded              |
                  |   zone u1[cap, 32]      labels_len u2[cap]             |
                  |   labels u1[cap, 512]   meta: canonical labels JSON,   |
                  |                         then taints (wire.split_meta)  |
                  +--------------------------------------------------------+
                  | SCORE BUFFER 0 (tick worker writes)                    |
                  |   per tick: epoch, tick_mono, tick_wall, pressure,     |
                  |     n_ranked, live, registered, slot_hwm, ejected,     |
                  |     config_version, weights f8[8], counts i8[8],       |
                  |     params f8[48] (the score parameters of the tick)   |
                  |   published per slot: score raw wait qema liveness f8, |
                  |     state u1, gen u8, ranked i4,                       |
                  |     feedback the tick read: rif fb_ok fb_err consec    |
                  |     err_age f8                                         |
                  |   carried per slot: s flap e_ok e_err f8,              |
                  |     n probation memory i4, hb_seen u8,                 |
                  |     ok_seen err_seen u8 (claims counters),             |
                  |     reason u1 (why the state changed this tick)        |
                  +--------------------------------------------------------+
                  | SCORE BUFFER 1 (same layout)                           |
                  +--------------------------------------------------------+

Rules for the parties (see seqlock.py for the latch itself):
- The heartbeat table and the registry have one writer, the ingest process.
  A row is written between two increments of its ``row_version`` (odd while
  written); a slot's registration changes between two increments of its
  ``slot_gen``.  Readers copy and re-check.
- The score buffers have one writer, the tick worker, which publishes epoch
  ``e`` into buffer ``e & 1`` and then advances ``latch_seq``.  The buffers
  also carry the per-node state the next tick starts from, so a restarted
  tick worker resumes from the last published epoch.
- The data holds no pointers: every reference is a slot number.

The claims segment (``capacity`` slots, ``max_schedulers`` leases; every
region starts on a page, so the in-flight row of a lease that is never taken
is never touched and costs no memory)::

    offset 0      +--------------------------------------------------------+
                  | HEADER (4096 bytes)                                    |
                  |   identity ..... magic, layout_version, capacity,      |
                  |                  max_schedulers, creator pid + start   |
                  |                  time, size, instance id               |
                  |   schedulers ... stale_releases, leases_taken,         |
                  |                  leases_refused, claims_dropped        |
                  |                  (fetch_add only)                      |
                  |   tick worker .. abandoned_claims, leases_reaped,      |
                  |                  lease_check_mono, released_ok,        |
                  |                  released_err, in_flight               |
                  |   placement .... placements, CAS lost, released,       |
                  |                  stale, unschedulable (+ reasons[16])  |
                  |                  (schedulers, fetch_add); expired,     |
                  |                  reaped, rate (tick worker)            |
                  +--------------------------------------------------------+
                  | LEASES (max_schedulers entries, struct of arrays)      |
                  |   lease_ident u8   0 = free, else start_time % 2**32   |
                  |                    << 32 | pid, taken by one CAS       |
                  |   lease_pid i8, lease_start u8, lease_since f8 (wall)  |
                  +--------------------------------------------------------+
                  | OUTCOMES u8[cap, 4]: one 32-byte row per node slot     |
                  |   [0] tag | consec    [1] last_err_ns  (one 16-byte    |
                  |                        pair, changed by cas_pair_u64)  |
                  |   [2] tag | ok        [3] tag | err    (cas_u64)       |
                  +--------------------------------------------------------+
                  | IN FLIGHT u8[max_schedulers, cap]: one row per lease,  |
                  |   each row page-aligned; word = tag | count of the     |
                  |   lease's open claims on the slot's registration       |
                  +--------------------------------------------------------+
                  | RESERVED u8[cap, 8]: tag | units reserved, per         |
                  |   placement resource (CAS against alloc)               |
                  +--------------------------------------------------------+
                  | PLACE u8[cap, 8]: [0] tag | open reservations,         |
                  |   [1..8) group ways tag | group hash << 16 | count     |
                  +--------------------------------------------------------+
                  | RESERVATIONS u8[max_schedulers, max_reservations, 16]: |
                  |   each lease's entries on pages of its own: held bits, |
                  |   tag | slot, deadline ns, group hash, units[8]        |
                  +--------------------------------------------------------+

A *tag* is the upper 32 bits of a word: the registration number
``(slot_gen >> 1) % 2**32`` the lower 32 bits belong to.  The protocol that
keeps these words exact without locks is in `shm_engine.core.claims`; the
placement words follow the same rules (`shm_engine.core.placement`).
"""

from __future__ import annotations

import itertools
import mmap
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from kernels.columns import TickOutputs, TickState
from shm_engine.wire.format import MAX_META_BYTES, MAX_RESOURCES, NODE_SIZE, ZONE_SIZE

# 2: feedback columns; 3: slots, e_ok/e_err, ejected (score v2); 4: admission fields;
# 5: config reload (header), params + config_version per buffer, reason column;
#    the score feed's child and counters (header 768..); the HTTP child's (512.., 896..);
#    placement (alloc column, meta bytes with taints, resource names; header 4096..)
LAYOUT_VERSION = 5
MAGIC = int.from_bytes(b"SHMENGN1", "little")
# 2: placement (reservation counters, RESERVED, PLACE, RESERVATIONS)
CLAIMS_LAYOUT_VERSION = 2
CLAIMS_MAGIC = int.from_bytes(b"SHMCLMS1", "little")
EVENTS_LAYOUT_VERSION = 1
EVENTS_MAGIC = int.from_bytes(b"SHMEVTS1", "little")
PAGE = 4096
ALIGN = 64
HEADER_BYTES = 8192
# Registry columns hold the wire's fields as they arrive (a change there
# changes the layout: bump LAYOUT_VERSION).
NODE_ID_BYTES = NODE_SIZE  # 63 bytes of UTF-8 + at least one NUL
ZONE_BYTES = ZONE_SIZE  # 31 bytes of UTF-8 + at least one NUL
# The node's meta bytes: canonical labels JSON, then taints (wire.split_meta).
LABELS_BYTES = (MAX_META_BYTES + ALIGN - 1) // ALIGN * ALIGN
#: Placement resources an engine can be configured with ([placement]
#: resources); each is one u8 word per node in ``alloc`` (and in the claims
#: segment's RESERVED region).
N_PLACE_RESOURCES = MAX_RESOURCES
PLACE_NAME_BYTES = 16  # a resource name: 1..15 bytes, NUL padded (as on the wire)
PLACE_CONFIG_BYTES = 1024
N_REJECT_SLOTS = 32  # room for reject reasons (wire.format.REJECT_REASONS)
N_WEIGHT_SLOTS = 8  # 7 weights in effect, one spare
N_COUNT_SLOTS = 8  # 5 states, one spare each side
NAME_BYTES = 64
ENDPOINT_BYTES = 256
N_SENDER_SLOTS = 16  # senders with refusals shown by status; the last is "others"
SENDER_NAME_BYTES = 48
N_PARAM_SLOTS = 48  # kernels.params.N_PARAMS (34) and room to grow
RELOAD_MESSAGE_BYTES = 1024
HTTP_ENDPOINT_BYTES = 128  # the HTTP API's URL (config keeps [http] bind shorter)

# ---------------------------------------------------------------- header --
# (name, dtype, count, offset).  Offsets are fixed by hand so that they read
# like a spec; _check_header() proves there is no overlap.
_HEADER_FIELDS = (
    # identity: written once by the creator; magic last.
    ("magic", "<u8", 1, 0),
    ("layout_version", "<u4", 1, 8),
    ("capacity", "<u4", 1, 12),
    ("creator_pid", "<i8", 1, 16),
    ("creator_start", "<u8", 1, 24),  # creator's start time (clock ticks since boot)
    ("segment_bytes", "<u8", 1, 32),
    ("created_wall", "<f8", 1, 40),
    ("tick_interval_ms", "<u4", 1, 48),
    # the seqcount latch, alone on its cache line (tick worker writes).
    ("latch_seq", "<u8", 1, 64),
    # registry summary (ingest writes).
    ("registry_epoch", "<u8", 1, 128),  # +1 on every registration and free
    ("registered", "<u8", 1, 136),
    ("slot_hwm", "<u8", 1, 144),  # 1 + highest slot ever used
    # ingest counters (ingest writes).
    ("ingest_frames", "<u8", 1, 192),
    ("ingest_heartbeats", "<u8", 1, 200),
    ("ingest_accepted", "<u8", 1, 208),
    ("ingest_alive_mono", "<f8", 1, 216),
    ("ingest_bytes", "<u8", 1, 224),
    ("rejects", "<u8", N_REJECT_SLOTS, 256),
    # tick worker counters (tick worker writes).
    ("ticks", "<u8", 1, 576),
    ("overruns", "<u8", 1, 584),
    ("tick_us_last", "<f8", 1, 592),
    ("tick_us_p50", "<f8", 1, 600),
    ("tick_us_p99", "<f8", 1, 608),
    ("tick_us_max", "<f8", 1, 616),
    ("ticker_alive_mono", "<f8", 1, 624),
    # supervisor (supervisor writes).
    ("supervisor_pid", "<i8", 1, 704),
    ("supervisor_alive_mono", "<f8", 1, 712),
    ("ingest_pid", "<i8", 1, 720),
    ("ingest_restarts", "<u8", 1, 728),
    ("ticker_pid", "<i8", 1, 736),
    ("ticker_restarts", "<u8", 1, 744),
    ("stopping", "<u8", 1, 752),
    # strings: name (creator, once); endpoint (creator: as configured, then
    # the ingest: as bound, with a `*` port resolved).
    ("name", "u1", NAME_BYTES, 1024),
    ("endpoint", "u1", ENDPOINT_BYTES, 1088),
    # admission (ingest writes; shm_engine.ingest.admission): the mode
    # (MODE_NAMES), CURVE keys loaded, reloads done and those that dropped
    # an entry, handshakes refused, the socket's limits, DEAD slots reclaimed.
    ("ingest_mode", "<u8", 1, 1344),
    ("ingest_keys", "<u8", 1, 1352),
    ("ingest_reloads", "<u8", 1, 1360),
    ("ingest_reload_problems", "<u8", 1, 1368),
    ("ingest_handshakes_refused", "<u8", 1, 1376),
    ("ingest_rcvhwm", "<u8", 1, 1384),
    ("ingest_maxmsgsize", "<u8", 1, 1392),
    ("ingest_reclaimed", "<u8", 1, 1400),  # DEAD slots given to new nodes
    # Per-sender refusals: row i is named by sender_names[i] (NUL padded)
    # once i < senders_used; a name is written before senders_used counts it.
    ("senders_used", "<u8", 1, 1408),
    ("sender_not_authorized", "<u8", N_SENDER_SLOTS, 1472),
    ("sender_registration_rate", "<u8", N_SENDER_SLOTS, 1600),
    ("sender_names", "u1", N_SENDER_SLOTS * SENDER_NAME_BYTES, 1728),
    # config reload (supervisor writes; shm_engine.ops.reload).  The pending
    # score parameters, changed between two increments of params_seq (odd
    # while written); the tick worker adopts them at its next tick when
    # config_version moved.  reloads_done moves last, after the result.
    ("reloads_started", "<u8", 1, 2560),
    ("reloads_done", "<u8", 1, 2568),
    ("reload_status", "<u8", 1, 2576),  # shm_engine.ops.reload.STATUS_NAMES
    ("config_version", "<u8", 1, 2584),  # 1 at start, +1 per applied reload
    ("config_hash", "<u8", 1, 2592),  # of the effective configuration
    ("params_seq", "<u8", 1, 2600),
    ("pending_params", "<f8", N_PARAM_SLOTS, 2608),
    ("reload_message", "u1", RELOAD_MESSAGE_BYTES, 2992),
    ("ingest_left", "<u8", 1, 4016),  # leave messages accepted (ingest writes)
    # the score feed (shm_engine.feed): its child (supervisor writes pid and
    # restarts; the feed child its beat and counters).
    ("feed_pid", "<i8", 1, 768),
    ("feed_restarts", "<u8", 1, 776),
    ("feed_alive_mono", "<f8", 1, 784),
    ("feed_frames", "<u8", 1, 792),  # frames published (delta and full)
    ("feed_full_frames", "<u8", 1, 800),
    ("feed_bytes", "<u8", 1, 808),
    ("feed_epoch", "<u8", 1, 816),  # engine epoch of the latest frame
    ("feed_snapshot_requests", "<u8", 1, 824),  # subscriptions seen (each asks a full)
    ("feed_skipped_epochs", "<u8", 1, 832),  # epochs published while the feed lagged
    ("feed_lag_us_p50", "<f8", 1, 840),  # tick publish -> frame sent
    ("feed_lag_us_p99", "<f8", 1, 848),
    ("feedback_frames", "<u8", 1, 856),  # feedback frames applied from mirrors
    ("feedback_bad", "<u8", 1, 864),  # refused (malformed, unknown stream)
    ("feedback_mirrors", "<u8", 1, 872),  # mirrors holding a lease now
    ("feedback_abandoned", "<u8", 1, 880),  # claims dropped with a silent mirror
    # HTTP child (shm_engine.http): pid and restarts (supervisor writes);
    # alive time and the bound URL (the HTTP child writes, through a mapping
    # of this header page alone).  An empty URL: no HTTP server configured.
    ("http_pid", "<i8", 1, 512),
    ("http_restarts", "<u8", 1, 520),
    ("http_alive_mono", "<f8", 1, 528),
    ("http_endpoint", "u1", HTTP_ENDPOINT_BYTES, 896),
    # placement (creator, once, before magic): the configured resources
    # ([placement] resources) in order: count, fixed-point scale, name.
    ("place_resources", "<u8", 1, 4096),
    ("place_scale", "<u8", N_PLACE_RESOURCES, 4104),
    ("place_names", "u1", N_PLACE_RESOURCES * PLACE_NAME_BYTES, 4168),
    # the engine's whole [placement] section as JSON (creator, once): what
    # schedulers place with unless they are given their own
    ("place_config", "u1", PLACE_CONFIG_BYTES, 4352),
)

# ------------------------------------------------------- per-slot columns --
TABLE_COLUMNS = (
    ("row_version", "<u8"),
    ("recv_time", "<f8"),
    ("cpu", "<f8"),
    ("mem", "<f8"),
    ("queue", "<f8"),
    ("avg_job_s", "<f8"),
    ("throughput", "<f8"),
    ("ok", "<f8"),
    ("err", "<f8"),
    ("io", "<f8"),
    ("p50_ms", "<f8"),
    ("p95_ms", "<f8"),
    ("ts", "<f8"),
    ("slots", "<f8"),
    ("reported", "u1"),
    # allocatable capacity per configured resource, fixed point (`rows.write_alloc`)
    ("alloc", "<u8", (N_PLACE_RESOURCES,)),
)
REGISTRY_COLUMNS = (
    ("slot_gen", "<u8", ()),
    ("registered", "u1", ()),
    ("meta_version", "<u8", ()),
    ("node_id", "u1", (NODE_ID_BYTES,)),
    ("zone", "u1", (ZONE_BYTES,)),
    ("labels_len", "<u2", ()),
    ("labels", "u1", (LABELS_BYTES,)),
)
BUFFER_SCALARS = (
    ("epoch", "<u8"),
    ("tick_mono", "<f8"),
    ("tick_wall", "<f8"),
    ("pressure", "<f8"),
    ("n_ranked", "<u8"),
    ("live", "<u8"),
    ("registered", "<u8"),
    ("slot_hwm", "<u8"),
    ("ejected", "<u8"),  # nodes the tick found ejected (consecutive errors)
    ("config_version", "<u8"),  # of the score parameters this tick used (`params`)
)
BUFFER_VECTORS = (
    ("weights", "<f8", N_WEIGHT_SLOTS),
    ("counts", "<i8", N_COUNT_SLOTS),
    ("params", "<f8", N_PARAM_SLOTS),  # the kernels' parameter vector of this tick
)
# Published columns first: a snapshot copies these.
BUFFER_COLUMNS = (
    ("score", "<f8"),
    ("raw", "<f8"),
    ("wait", "<f8"),
    ("qema", "<f8"),
    ("liveness", "<f8"),
    ("state", "u1"),
    ("gen", "<u8"),
    ("ranked", "<i4"),
    # scheduler feedback as this tick read it (shm_engine.core.claims.gather_feedback)
    ("rif", "<f8"),
    ("fb_ok", "<f8"),
    ("fb_err", "<f8"),
    ("consec", "<f8"),
    ("err_age", "<f8"),
    # carried state the next tick starts from
    ("s", "<f8"),
    ("flap", "<f8"),
    ("e_ok", "<f8"),
    ("e_err", "<f8"),
    ("n", "<i4"),
    ("probation", "<i4"),
    ("memory", "<i4"),
    ("hb_seen", "<u8"),
    ("ok_seen", "<u8"),
    ("err_seen", "<u8"),
    # why the state changed this tick (kernels.reasons), read by the event append
    ("reason", "u1"),
)
#: The feedback columns of a score buffer, in the order the tick fills them.
FEEDBACK_COLUMNS = ("rif", "fb_ok", "fb_err", "consec", "err_age")


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Field:
    """One array in the segment: ``shape`` already resolved for a capacity."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class Layout:
    """Offsets of every field for one capacity.  Build with `layout_for()`."""

    capacity: int
    header: dict[str, Field]
    table: dict[str, Field]
    registry: dict[str, Field]
    buffers: tuple[dict[str, Field], dict[str, Field]]
    size: int

    def regions(self) -> list[tuple[str, int, int]]:
        """(region, offset, bytes) for reports and docs."""
        out = [("header", 0, HEADER_BYTES)]
        for region, fields in (
            ("table", self.table),
            ("registry", self.registry),
            ("buffer0", self.buffers[0]),
            ("buffer1", self.buffers[1]),
        ):
            start = min(f.offset for f in fields.values())
            end = max(f.offset + f.nbytes for f in fields.values())
            out.append((region, start, _align(end) - start))
        return out


def _place(columns, capacity: int, start: int) -> tuple[dict[str, Field], int]:
    fields, off = {}, start
    for col in columns:
        name, dt = col[0], np.dtype(col[1])
        extra = col[2] if len(col) > 2 else ()
        shape = (capacity,) + tuple(extra) if isinstance(extra, tuple) else (extra,)
        f = Field(name, dt, shape, off)
        fields[name] = f
        off = _align(off + f.nbytes)
    return fields, off


def _place_buffer(capacity: int, start: int) -> tuple[dict[str, Field], int]:
    fields, off = {}, start
    for name, dt in BUFFER_SCALARS:
        fields[name] = Field(name, np.dtype(dt), (1,), off)
        off += 8
    off = _align(off)
    for name, dt, count in BUFFER_VECTORS:
        fields[name] = Field(name, np.dtype(dt), (count,), off)
        off = _align(off + count * 8)
    cols, off = _place(BUFFER_COLUMNS, capacity, off)
    fields.update(cols)
    return fields, off


def layout_for(capacity: int) -> Layout:
    """The layout of a segment with ``capacity`` slots."""
    if not 1 <= capacity <= 1 << 24:
        raise ValueError(f"capacity {capacity} out of range 1..{1 << 24}")
    header = {n: Field(n, np.dtype(dt), (count,), off) for n, dt, count, off in _HEADER_FIELDS}
    table, off = _place(TABLE_COLUMNS, capacity, HEADER_BYTES)
    registry, off = _place(REGISTRY_COLUMNS, capacity, off)
    buf0, off = _place_buffer(capacity, off)
    buf1, off = _place_buffer(capacity, off)
    size = (off + 4095) // 4096 * 4096
    return Layout(capacity, header, table, registry, (buf0, buf1), size)


def _check_header() -> None:
    spans = sorted(
        (off, off + np.dtype(dt).itemsize * count, n) for n, dt, count, off in _HEADER_FIELDS
    )
    for (_a0, a1, an), (b0, _b1, bn) in itertools.pairwise(spans):
        assert a1 <= b0, f"header fields {an} and {bn} overlap"
    assert spans[-1][1] <= HEADER_BYTES
    for n, dt, _count, off in _HEADER_FIELDS:
        assert off % np.dtype(dt).itemsize == 0, f"header field {n} misaligned"


_check_header()


# ------------------------------------------------------------------ views --
def _view(buf, f: Field) -> np.ndarray:
    return np.ndarray(f.shape, dtype=f.dtype, buffer=buf, offset=f.offset)


class Header:
    """Named views of the header fields (1-element arrays: index with [0])."""

    def __init__(self, buf, layout: Layout | ClaimsLayout | EventsLayout | MirrorLayout):
        for name, f in layout.header.items():
            setattr(self, name, _view(buf, f))

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> np.ndarray: ...  # the fields, set above

    def read_str(self, name: str) -> str:
        raw = bytes(getattr(self, name))
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def write_str(self, name: str, value: str) -> None:
        arr = getattr(self, name)
        data = value.encode("utf-8")
        if len(data) >= arr.size:
            raise ValueError(f"{name} {value!r} longer than {arr.size - 1} bytes")
        arr[:] = 0
        arr[: len(data)] = np.frombuffer(data, np.uint8)


class HeartbeatTable(NamedTuple):
    row_version: np.ndarray
    recv_time: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    queue: np.ndarray
    avg_job_s: np.ndarray
    throughput: np.ndarray
    ok: np.ndarray
    err: np.ndarray
    io: np.ndarray
    p50_ms: np.ndarray
    p95_ms: np.ndarray
    ts: np.ndarray
    slots: np.ndarray
    reported: np.ndarray
    alloc: np.ndarray


class Registry(NamedTuple):
    slot_gen: np.ndarray
    registered: np.ndarray
    meta_version: np.ndarray
    node_id: np.ndarray
    zone: np.ndarray
    labels_len: np.ndarray
    labels: np.ndarray


class ScoreBuffer:
    """Views of one score buffer.  ``state``/``out`` are the kernel column
    groups over this buffer; ``meta`` holds the per-tick scalars."""

    # The per-tick scalars (BUFFER_SCALARS), 1-element arrays: index with [0].
    epoch: np.ndarray
    tick_mono: np.ndarray
    tick_wall: np.ndarray
    pressure: np.ndarray
    n_ranked: np.ndarray
    live: np.ndarray
    registered: np.ndarray
    slot_hwm: np.ndarray
    ejected: np.ndarray
    config_version: np.ndarray

    def __init__(self, buf, fields: dict[str, Field]):
        v = {name: _view(buf, f) for name, f in fields.items()}
        self.views = v
        for name, _dt in BUFFER_SCALARS:
            setattr(self, name, v[name])
        self.weights = v["weights"]
        self.counts = v["counts"]
        self.params = v["params"]
        self.gen = v["gen"]
        self.hb_seen = v["hb_seen"]
        self.ok_seen = v["ok_seen"]
        self.err_seen = v["err_seen"]
        self.feedback = tuple(v[c] for c in FEEDBACK_COLUMNS)
        self.state = TickState(**{name: v[name] for name in TickState._fields})
        self.out = TickOutputs(
            score=v["score"],
            raw=v["raw"],
            wait=v["wait"],
            liveness=v["liveness"],
            ranked=v["ranked"],
            weights=v["weights"][:7],
            counts=v["counts"][:5],
            reason=v["reason"],
        )


class SegmentViews:
    """All views over one mapped segment."""

    def __init__(self, buf, layout: Layout):
        self.layout = layout
        self.header = Header(buf, layout)
        self.table = HeartbeatTable(**{n: _view(buf, f) for n, f in layout.table.items()})
        self.registry = Registry(**{n: _view(buf, f) for n, f in layout.registry.items()})
        self.buffers = (ScoreBuffer(buf, layout.buffers[0]), ScoreBuffer(buf, layout.buffers[1]))


def write_place_resources(header: Header, resources: tuple[tuple[str, int], ...]) -> None:
    """Write the placement resources, (name, scale) pairs in order, into a
    header being created (before its magic).  Raises ValueError on more
    than `N_PLACE_RESOURCES` or a name that does not fit."""
    if len(resources) > N_PLACE_RESOURCES:
        raise ValueError(f"{len(resources)} placement resources > {N_PLACE_RESOURCES}")
    names = header.place_names.reshape(N_PLACE_RESOURCES, PLACE_NAME_BYTES)
    names[:] = 0
    header.place_scale[:] = 0
    for k, (name, scale) in enumerate(resources):
        raw = name.encode("utf-8")
        if not 1 <= len(raw) < PLACE_NAME_BYTES or b"\0" in raw or scale < 1:
            raise ValueError(f"placement resource {name!r} (scale {scale}) cannot be stored")
        names[k, : len(raw)] = np.frombuffer(raw, np.uint8)
        header.place_scale[k] = scale
    header.place_resources[0] = len(resources)


def read_place_resources(header: Header) -> tuple[tuple[str, int], ...]:
    """The placement resources a segment was created with: (name, scale)."""
    n = min(int(header.place_resources[0]), N_PLACE_RESOURCES)
    names = header.place_names.reshape(N_PLACE_RESOURCES, PLACE_NAME_BYTES)
    return tuple(
        (bytes(names[k]).split(b"\0", 1)[0].decode("utf-8", "replace"), int(header.place_scale[k]))
        for k in range(n)
    )


def read_capacity(buf) -> tuple[int, int, int]:
    """(magic, layout_version, capacity) from the start of a mapped segment."""
    hdr = np.ndarray((2,), dtype="<u8", buffer=buf, offset=0)
    return int(hdr[0]), int(hdr[1] & 0xFFFFFFFF), int(hdr[1] >> 32)


# ------------------------------------------------------------ claims segment --
CLAIMS_HEADER_BYTES = 4096
#: Words of one node slot's outcome row (OUTCOMES region).
OUTCOME_WORDS = 4
OUT_CONSEC, OUT_LAST_ERR, OUT_OK, OUT_ERR = 0, 1, 2, 3
#: Words of one node slot's placement row (PLACE region): [0] tag | open
#: reservations, [1..8) group ways tag | group hash (16 bits) << 16 | count.
PLACE_WORDS = 8
PLACE_OPEN = 0
GROUP_WAYS = PLACE_WORDS - 1
#: Words of one reservation entry (RESERVATIONS region); see core.placement.
ENTRY_WORDS = 16
ENTRY_HELD, ENTRY_WHERE, ENTRY_DEADLINE, ENTRY_GROUP, ENTRY_AMOUNTS = 0, 1, 2, 3, 4
#: Unschedulable reasons counted in the claims header (core.placement.REASONS).
N_UNSCHED_SLOTS = 16
DEFAULT_MAX_RESERVATIONS = 1024
#: Most open reservations one lease can hold (a config limit, not a layout one).
MAX_RESERVATIONS = 1 << 20

_CLAIMS_HEADER_FIELDS = (
    # identity: written once by the creator; magic last.  magic, creator_pid
    # and creator_start sit where the scores header has them, so one stale
    # check serves both segments.
    ("magic", "<u8", 1, 0),
    ("layout_version", "<u4", 1, 8),
    ("capacity", "<u4", 1, 12),
    ("creator_pid", "<i8", 1, 16),
    ("creator_start", "<u8", 1, 24),
    ("segment_bytes", "<u8", 1, 32),
    ("created_wall", "<f8", 1, 40),
    ("max_schedulers", "<u4", 1, 48),
    ("max_reservations", "<u4", 1, 52),  # entries per lease (RESERVATIONS)
    ("instance", "<u8", 1, 56),  # random: tells this segment from a re-created one
    # counters any scheduler bumps (fetch_add_u64 only).
    ("stale_releases", "<u8", 1, 128),
    ("leases_taken", "<u8", 1, 136),
    ("leases_refused", "<u8", 1, 144),
    ("claims_dropped", "<u8", 1, 152),  # garbage collected unreleased
    # tick worker (single writer).
    ("abandoned_claims", "<u8", 1, 192),
    ("leases_reaped", "<u8", 1, 200),
    ("lease_check_mono", "<f8", 1, 216),
    ("released_ok", "<u8", 1, 224),
    ("released_err", "<u8", 1, 232),
    ("in_flight", "<u8", 1, 240),  # sum of rif at the latest tick
    # placement, by schedulers (fetch_add only): placements made, reservation
    # CASes lost to another scheduler, reservations released and released
    # stale, place() calls that found no node, and those per first reason.
    ("placements", "<u8", 1, 256),
    ("place_conflicts", "<u8", 1, 264),
    ("reservations_released", "<u8", 1, 272),
    ("reservations_stale", "<u8", 1, 280),
    ("unschedulable", "<u8", 1, 288),
    ("unsched_reasons", "<u8", N_UNSCHED_SLOTS, 320),
    # placement, by the tick worker: reservations returned past their
    # deadline, and those of dead leases.
    ("reservations_expired", "<u8", 1, 448),
    ("reservations_reaped", "<u8", 1, 456),
    # placements per second, as the tick worker measured it at its latest
    # lease check (the count it saw then, and when).
    ("placements_seen", "<u8", 1, 464),
    ("place_rate_mono", "<f8", 1, 472),
    ("place_rate", "<f8", 1, 480),
)
LEASE_COLUMNS = (
    ("lease_ident", "<u8"),
    ("lease_pid", "<i8"),
    ("lease_start", "<u8"),
    ("lease_since", "<f8"),
)


def _page(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


@dataclass(frozen=True)
class ClaimsLayout:
    """Offsets of the claims segment for one capacity and lease count.
    Build with `claims_layout_for()`."""

    capacity: int
    max_schedulers: int
    header: dict[str, Field]
    leases: dict[str, Field]
    outcomes: Field  # u8[capacity, OUTCOME_WORDS]
    in_flight: Field  # u8[max_schedulers, capacity], rows `row_bytes` apart
    row_bytes: int
    size: int
    reserved: Field  # u8[capacity, N_PLACE_RESOURCES]
    place: Field  # u8[capacity, PLACE_WORDS]
    reservations: (
        Field  # u8[max_schedulers, max_reservations, ENTRY_WORDS], blocks `block_bytes` apart
    )
    block_bytes: int

    @property
    def max_reservations(self) -> int:
        return self.reservations.shape[1]

    def regions(self) -> list[tuple[str, int, int]]:
        """(region, offset, bytes) for reports and docs."""
        lease0 = min(f.offset for f in self.leases.values())
        return [
            ("header", 0, CLAIMS_HEADER_BYTES),
            ("leases", lease0, self.outcomes.offset - lease0),
            ("outcomes", self.outcomes.offset, self.in_flight.offset - self.outcomes.offset),
            ("in_flight", self.in_flight.offset, self.reserved.offset - self.in_flight.offset),
            ("reserved", self.reserved.offset, self.place.offset - self.reserved.offset),
            ("place", self.place.offset, self.reservations.offset - self.place.offset),
            ("reservations", self.reservations.offset, self.size - self.reservations.offset),
        ]


#: Most leases a claims segment can hold (a config limit, not a layout one).
MAX_SCHEDULERS = 4096


def claims_layout_for(
    capacity: int, max_schedulers: int, max_reservations: int = DEFAULT_MAX_RESERVATIONS
) -> ClaimsLayout:
    """The layout of a claims segment with ``capacity`` slots,
    ``max_schedulers`` leases and ``max_reservations`` reservation entries
    per lease."""
    if not 1 <= capacity <= 1 << 24:
        raise ValueError(f"capacity {capacity} out of range 1..{1 << 24}")
    if not 1 <= max_schedulers <= MAX_SCHEDULERS:
        raise ValueError(f"max_schedulers {max_schedulers} out of range 1..{MAX_SCHEDULERS}")
    if not 1 <= max_reservations <= MAX_RESERVATIONS:
        raise ValueError(f"max_reservations {max_reservations} out of range 1..{MAX_RESERVATIONS}")
    header = {
        n: Field(n, np.dtype(dt), (count,), off) for n, dt, count, off in _CLAIMS_HEADER_FIELDS
    }
    leases, off = {}, CLAIMS_HEADER_BYTES
    for name, dt in LEASE_COLUMNS:
        leases[name] = Field(name, np.dtype(dt), (max_schedulers,), off)
        off = _align(off + max_schedulers * 8)
    off = _page(off)
    outcomes = Field("outcomes", np.dtype("<u8"), (capacity, OUTCOME_WORDS), off)
    off = _page(off + outcomes.nbytes)
    row_bytes = _page(capacity * 8)
    in_flight = Field("in_flight", np.dtype("<u8"), (max_schedulers, capacity), off)
    off += max_schedulers * row_bytes
    reserved = Field("reserved", np.dtype("<u8"), (capacity, N_PLACE_RESOURCES), off)
    off = _page(off + reserved.nbytes)
    place = Field("place", np.dtype("<u8"), (capacity, PLACE_WORDS), off)
    off = _page(off + place.nbytes)
    block_bytes = _page(max_reservations * ENTRY_WORDS * 8)
    reservations = Field(
        "reservations", np.dtype("<u8"), (max_schedulers, max_reservations, ENTRY_WORDS), off
    )
    size = off + max_schedulers * block_bytes
    return ClaimsLayout(
        capacity,
        max_schedulers,
        header,
        leases,
        outcomes,
        in_flight,
        row_bytes,
        size,
        reserved,
        place,
        reservations,
        block_bytes,
    )


def _check_claims_header() -> None:
    spans = sorted(
        (off, off + np.dtype(dt).itemsize * count, n) for n, dt, count, off in _CLAIMS_HEADER_FIELDS
    )
    for (_a0, a1, an), (b0, _b1, bn) in itertools.pairwise(spans):
        assert a1 <= b0, f"claims header fields {an} and {bn} overlap"
    assert spans[-1][1] <= CLAIMS_HEADER_BYTES
    scores = {n: off for n, _dt, _c, off in _HEADER_FIELDS}
    for n in ("magic", "layout_version", "capacity", "creator_pid", "creator_start"):
        assert dict((f[0], f[3]) for f in _CLAIMS_HEADER_FIELDS)[n] == scores[n], n


_check_claims_header()


class ClaimsViews:
    """All views over one mapped claims segment.

    ``header``: named 1-element views (`Header`); ``lease_ident``,
    ``lease_pid``, ``lease_start``, ``lease_since``: one entry per lease;
    ``outcomes``: u8[capacity, 4]; ``in_flight``: u8[max_schedulers,
    capacity] (row k is lease k's, rows `ClaimsLayout.row_bytes` apart), and
    the same words as one flat array ``in_flight_flat`` (lease k's row at
    ``k * row_words``), whose array type does not depend on the capacity."""

    lease_ident: np.ndarray
    lease_pid: np.ndarray
    lease_start: np.ndarray
    lease_since: np.ndarray
    # Placement: ``reserved`` u8[capacity, N_PLACE_RESOURCES], ``place``
    # u8[capacity, PLACE_WORDS], ``reservations`` u8[max_schedulers,
    # max_reservations, ENTRY_WORDS] (lease k's entries in its own pages).
    reserved: np.ndarray
    place: np.ndarray
    reservations: np.ndarray

    def __init__(self, buf, layout: ClaimsLayout):
        self.layout = layout
        self.header = Header(buf, layout)
        for name, f in layout.leases.items():
            setattr(self, name, _view(buf, f))
        self.outcomes = _view(buf, layout.outcomes)
        f = layout.in_flight
        self.in_flight = np.ndarray(
            f.shape, dtype=f.dtype, buffer=buf, offset=f.offset, strides=(layout.row_bytes, 8)
        )
        self.row_words = layout.row_bytes // 8
        flat = (layout.max_schedulers - 1) * self.row_words + layout.capacity
        self.in_flight_flat = np.ndarray((flat,), dtype=f.dtype, buffer=buf, offset=f.offset)
        self.reserved = _view(buf, layout.reserved)
        self.place = _view(buf, layout.place)
        r = layout.reservations
        self.reservations = np.ndarray(
            r.shape,
            dtype=r.dtype,
            buffer=buf,
            offset=r.offset,
            strides=(layout.block_bytes, ENTRY_WORDS * 8, 8),
        )


def private_claims(
    capacity: int, max_schedulers: int = 1, max_reservations: int = 1
) -> ClaimsViews:
    """A zeroed claims segment in private memory (no scheduler ever writes
    it): what the tick reads when an engine has no claims segment."""
    layout = claims_layout_for(capacity, max_schedulers, max_reservations)
    return ClaimsViews(mmap.mmap(-1, layout.size), layout)


# ------------------------------------------------------------ events segment --
# The event log (protocol in shm_engine.core.events)::
#
#     offset 0   +-----------------------------------------------------+
#                | HEADER (4096 bytes): identity as above; head (the   |
#                |   number of the last event appended) on its own line|
#                +-----------------------------------------------------+
#                | ENTRIES (capacity, struct of arrays; event s at     |
#                |   s % capacity): seq u8 (s<<1|1 while written,      |
#                |   (s<<1)+2 once complete), epoch u8, tick_wall f8,  |
#                |   gen u8, slot u4, from_state to_state reason u1,   |
#                |   node u1[64]                                       |
#                +-----------------------------------------------------+
#: Bytes of a node id in an event entry (as in the registry).
EVENT_NODE_BYTES = NODE_ID_BYTES
EVENTS_HEADER_BYTES = 4096

_EVENTS_HEADER_FIELDS = (
    # identity, where the scores header has it (one stale check for all).
    ("magic", "<u8", 1, 0),
    ("layout_version", "<u4", 1, 8),
    ("capacity", "<u4", 1, 12),
    ("creator_pid", "<i8", 1, 16),
    ("creator_start", "<u8", 1, 24),
    ("segment_bytes", "<u8", 1, 32),
    ("created_wall", "<f8", 1, 40),
    # the sequence number of the last event appended (0: none), alone on its
    # cache line (tick worker writes, after the entries it covers).
    ("head", "<u8", 1, 64),
)
#: One event entry, struct of arrays (``capacity`` entries; event ``s`` is at
#: index ``s % capacity``).  ``seq`` is ``s << 1 | 1`` while entry s is
#: written and ``(s << 1) + 2`` once it is complete (0: never written).
EVENT_COLUMNS = (
    ("seq", "<u8", ()),
    ("epoch", "<u8", ()),
    ("tick_wall", "<f8", ()),
    ("gen", "<u8", ()),
    ("slot", "<u4", ()),
    ("from_state", "u1", ()),
    ("to_state", "u1", ()),
    ("reason", "u1", ()),
    ("node", "u1", (EVENT_NODE_BYTES,)),
)


@dataclass(frozen=True)
class EventsLayout:
    """Offsets of the events segment for one capacity (`events_layout_for`)."""

    capacity: int
    header: dict[str, Field]
    entries: dict[str, Field]
    size: int


def events_layout_for(capacity: int) -> EventsLayout:
    """The layout of an events segment holding ``capacity`` events."""
    if not 1 <= capacity <= 1 << 24:
        raise ValueError(f"events capacity {capacity} out of range 1..{1 << 24}")
    header = {
        n: Field(n, np.dtype(dt), (count,), off) for n, dt, count, off in _EVENTS_HEADER_FIELDS
    }
    entries, off = _place(EVENT_COLUMNS, capacity, EVENTS_HEADER_BYTES)
    return EventsLayout(capacity, header, entries, _page(off))


def _check_events_header() -> None:
    scores = {n: off for n, _dt, _c, off in _HEADER_FIELDS}
    mine = {n: off for n, _dt, _c, off in _EVENTS_HEADER_FIELDS}
    for n in ("magic", "layout_version", "capacity", "creator_pid", "creator_start"):
        assert mine[n] == scores[n], n


_check_events_header()


class EventsViews:
    """Views of a mapped events segment: ``header`` (`Header`) and one
    array per entry column (``seq``, ``epoch``, ... ``node`` u1[cap, 64])."""

    seq: np.ndarray
    epoch: np.ndarray
    tick_wall: np.ndarray
    gen: np.ndarray
    slot: np.ndarray
    from_state: np.ndarray
    to_state: np.ndarray
    reason: np.ndarray
    node: np.ndarray

    def __init__(self, buf, layout: EventsLayout):
        self.layout = layout
        self.header = Header(buf, layout)
        for name, f in layout.entries.items():
            setattr(self, name, _view(buf, f))


# ------------------------------------------------------------ mirror segment --
#: Most upstream engines one mirror follows (zones of a federation).
MAX_UPSTREAMS = 16
MIRROR_LAYOUT_VERSION = 1
MIRROR_MAGIC = int.from_bytes(b"SHMMIRR1", "little")
MIRROR_HEADER_BYTES = 8192  # the header and the upstream rows
UPSTREAM_ZONE_BYTES = ZONE_BYTES
UPSTREAM_ENDPOINT_BYTES = ENDPOINT_BYTES
#: `upstream_state` values: never heard from, publishing, silent too long.
UPSTREAM_NEVER, UPSTREAM_FRESH, UPSTREAM_STALE = 0, 1, 2

# The mirror segment ``/NAME.mirror`` (a mirror's own: `shm_engine.feed.mirror`)::
#
#     offset 0  +-----------------------------------------------------------+
#               | HEADER: identity as the scores header (magic, version,    |
#               |   capacity, creator pid + start, size), n_upstreams,      |
#               |   stale_after_s, the mirror's counters                    |
#               | UPSTREAMS (MAX_UPSTREAMS rows, struct of arrays): zone,   |
#               |   endpoint, engine name, slot base + span, state, last    |
#               |   frame time, epoch, stream, frames, gaps, snapshots,     |
#               |   bad frames, bytes, overflow, nodes, lag p50/p99         |
#               +-----------------------------------------------------------+
#               | PER SLOT: excluded u1[cap] (1: its zone is stale: not     |
#               |   ranked, not placeable), zone_index u1[cap] (255: none)  |
#               +-----------------------------------------------------------+
#
# One writer, the mirror process; every field is a monitoring value or a
# per-slot flag read with plain loads (the scores themselves go through the
# scores segment's latch).
_MIRROR_HEADER_FIELDS = (
    ("magic", "<u8", 1, 0),
    ("layout_version", "<u4", 1, 8),
    ("capacity", "<u4", 1, 12),
    ("creator_pid", "<i8", 1, 16),
    ("creator_start", "<u8", 1, 24),
    ("segment_bytes", "<u8", 1, 32),
    ("created_wall", "<f8", 1, 40),
    ("n_upstreams", "<u4", 1, 48),
    ("stale_after_s", "<f8", 1, 56),
    ("publishes", "<u8", 1, 64),  # epochs the mirror published
    ("feedback_sent", "<u8", 1, 72),  # feedback frames sent upstream
    ("alive_mono", "<f8", 1, 80),  # the mirror loop's beat
)
UPSTREAM_COLUMNS = (
    ("zone", "u1", UPSTREAM_ZONE_BYTES),
    ("endpoint", "u1", UPSTREAM_ENDPOINT_BYTES),
    ("engine", "u1", NAME_BYTES),
    ("base", "<u4", 1),  # first mirror slot of the zone
    ("span", "<u4", 1),  # mirror slots reserved for it
    ("state", "u1", 1),  # UPSTREAM_NEVER / FRESH / STALE
    ("last_frame_mono", "<f8", 1),  # the mirror's monotonic time of its latest frame
    ("epoch", "<u8", 1),  # upstream epoch the mirror's latest publish shows
    ("stream", "<u8", 1),  # the upstream feed run it came from
    ("frames", "<u8", 1),
    ("gaps", "<u8", 1),  # sequence gaps seen (each repaired by a full frame)
    ("snapshots", "<u8", 1),  # full frames applied
    ("bad_frames", "<u8", 1),
    ("bytes", "<u8", 1),
    ("overflow", "<u8", 1),  # rows of upstream slots beyond span, dropped
    ("nodes", "<u8", 1),  # registered nodes of the zone now
    ("lag_us_p50", "<f8", 1),  # upstream tick -> mirror publish (wall clocks)
    ("lag_us_p99", "<f8", 1),
)


@dataclass(frozen=True)
class MirrorLayout:
    """Offsets of the mirror segment for one capacity.  Build with
    `mirror_layout_for()`."""

    capacity: int
    header: dict[str, Field]
    upstreams: dict[str, Field]
    excluded: Field
    zone_index: Field
    size: int


def mirror_layout_for(capacity: int) -> MirrorLayout:
    """The layout of a mirror segment for a scores segment of ``capacity`` slots."""
    if not 1 <= capacity <= 1 << 24:
        raise ValueError(f"capacity {capacity} out of range 1..{1 << 24}")
    header = {
        n: Field(n, np.dtype(dt), (count,), off) for n, dt, count, off in _MIRROR_HEADER_FIELDS
    }
    ups, off = {}, 512
    for name, dt, count in UPSTREAM_COLUMNS:
        shape = (MAX_UPSTREAMS, count) if count > 1 else (MAX_UPSTREAMS,)
        ups[name] = Field(name, np.dtype(dt), shape, off)
        off = _align(off + ups[name].nbytes)
    assert off <= MIRROR_HEADER_BYTES, off
    excluded = Field("excluded", np.dtype("u1"), (capacity,), MIRROR_HEADER_BYTES)
    zi = _align(MIRROR_HEADER_BYTES + capacity)
    zone_index = Field("zone_index", np.dtype("u1"), (capacity,), zi)
    size = _page(zi + capacity)
    return MirrorLayout(capacity, header, ups, excluded, zone_index, size)


class MirrorViews:
    """Views over one mapped mirror segment: ``header`` (`Header`), the
    upstream columns as attributes of ``up`` (row i: upstream i), and the
    per-slot ``excluded`` and ``zone_index``."""

    def __init__(self, buf, layout: MirrorLayout):
        self.layout = layout
        self.header = Header(buf, layout)
        self.up = Header.__new__(Header)
        for name, f in layout.upstreams.items():
            setattr(self.up, name, _view(buf, f))
        self.excluded = _view(buf, layout.excluded)
        self.zone_index = _view(buf, layout.zone_index)

    def read_up_str(self, column: str, i: int) -> str:
        raw = bytes(getattr(self.up, column)[i])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def write_up_str(self, column: str, i: int, value: str) -> None:
        arr = getattr(self.up, column)[i]
        data = value.encode("utf-8")[: arr.size - 1]
        arr[:] = 0
        arr[: len(data)] = np.frombuffer(data, np.uint8)
