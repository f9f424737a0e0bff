"""The shared-memory layout: every offset, dtype and size of the segment.

Nothing else in the project computes an offset: code asks this module for
numpy views over a buffer (`SegmentViews`).  Bump `LAYOUT_VERSION` on any
change; attach refuses a segment of another version.

One segment per engine, sized by ``capacity`` (slots).  Every column starts
on a 64-byte boundary, so single-writer fields of different processes never
share a cache line::

    offset 0      +--------------------------------------------------------+
                  | HEADER (4096 bytes)                                    |
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
                  +--------------------------------------------------------+
                  | HEARTBEAT TABLE (ingest writes; struct of arrays)      |
                  |   row_version u8[cap]   odd while the row is written   |
                  |   recv_time f8[cap]     engine monotonic receive time  |
                  |   cpu mem queue avg_job_s throughput ok err io         |
                  |   p50_ms p95_ms ts  f8[cap] each; reported u1[cap]     |
                  +--------------------------------------------------------+
                  | REGISTRY (ingest writes)                               |
                  |   slot_gen u8[cap]      odd while the slot changes     |
                  |   registered u1[cap]    meta_version u8[cap] (zone,    |
                  |                         labels; odd while written)     |
                  |   node_id u1[cap, 64]   UTF-8, NUL padded              |
                  |   zone u1[cap, 32]      labels_len u2[cap]             |
                  |   labels u1[cap, 256]   canonical JSON object          |
                  +--------------------------------------------------------+
                  | SCORE BUFFER 0 (tick worker writes)                    |
                  |   per tick: epoch, tick_mono, tick_wall, pressure,     |
                  |     n_ranked, live, registered, slot_hwm,              |
                  |     weights f8[8], counts i8[8]                        |
                  |   published per slot: score raw wait qema liveness f8, |
                  |     state u1, gen u8, ranked i4                        |
                  |   carried per slot: s flap f8, n probation memory i4,  |
                  |     hb_seen u8                                         |
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from kernels.columns import NodeState, TickOutputs

from shm_engine.wire.format import MAX_LABELS_BYTES, NODE_SIZE, ZONE_SIZE

LAYOUT_VERSION = 1
MAGIC = int.from_bytes(b"SHMENGN1", "little")
ALIGN = 64
HEADER_BYTES = 4096
# Registry columns hold the wire's fields as they arrive (a change there
# changes the layout: bump LAYOUT_VERSION).
NODE_ID_BYTES = NODE_SIZE           # 63 bytes of UTF-8 + at least one NUL
ZONE_BYTES = ZONE_SIZE              # 31 bytes of UTF-8 + at least one NUL
LABELS_BYTES = MAX_LABELS_BYTES     # canonical compact JSON of the labels object
N_REJECT_SLOTS = 32     # room for reject reasons (wire.format.REJECT_REASONS)
N_WEIGHT_SLOTS = 8      # 7 weights in effect, one spare
N_COUNT_SLOTS = 8       # 5 states, one spare each side
NAME_BYTES = 64
ENDPOINT_BYTES = 256

# ---------------------------------------------------------------- header --
# (name, dtype, count, offset).  Offsets are fixed by hand so that they read
# like a spec; _check_header() proves there is no overlap.
_HEADER_FIELDS = (
    # identity: written once by the creator; magic last.
    ("magic", "<u8", 1, 0),
    ("layout_version", "<u4", 1, 8),
    ("capacity", "<u4", 1, 12),
    ("creator_pid", "<i8", 1, 16),
    ("creator_start", "<u8", 1, 24),   # creator's start time (clock ticks since boot)
    ("segment_bytes", "<u8", 1, 32),
    ("created_wall", "<f8", 1, 40),
    ("tick_interval_ms", "<u4", 1, 48),
    # the seqcount latch, alone on its cache line (tick worker writes).
    ("latch_seq", "<u8", 1, 64),
    # registry summary (ingest writes).
    ("registry_epoch", "<u8", 1, 128),   # +1 on every registration and free
    ("registered", "<u8", 1, 136),
    ("slot_hwm", "<u8", 1, 144),         # 1 + highest slot ever used
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
)

# ------------------------------------------------------- per-slot columns --
TABLE_COLUMNS = (
    ("row_version", "<u8"), ("recv_time", "<f8"),
    ("cpu", "<f8"), ("mem", "<f8"), ("queue", "<f8"), ("avg_job_s", "<f8"),
    ("throughput", "<f8"), ("ok", "<f8"), ("err", "<f8"), ("io", "<f8"),
    ("p50_ms", "<f8"), ("p95_ms", "<f8"), ("ts", "<f8"), ("reported", "u1"),
)
REGISTRY_COLUMNS = (
    ("slot_gen", "<u8", ()), ("registered", "u1", ()), ("meta_version", "<u8", ()),
    ("node_id", "u1", (NODE_ID_BYTES,)), ("zone", "u1", (ZONE_BYTES,)),
    ("labels_len", "<u2", ()), ("labels", "u1", (LABELS_BYTES,)),
)
BUFFER_SCALARS = (
    ("epoch", "<u8"), ("tick_mono", "<f8"), ("tick_wall", "<f8"),
    ("pressure", "<f8"), ("n_ranked", "<u8"), ("live", "<u8"),
    ("registered", "<u8"), ("slot_hwm", "<u8"),
)
BUFFER_VECTORS = (("weights", "<f8", N_WEIGHT_SLOTS), ("counts", "<i8", N_COUNT_SLOTS))
# Published columns first: a snapshot copies these.
BUFFER_COLUMNS = (
    ("score", "<f8"), ("raw", "<f8"), ("wait", "<f8"), ("qema", "<f8"),
    ("liveness", "<f8"), ("state", "u1"), ("gen", "<u8"), ("ranked", "<i4"),
    # carried state the next tick starts from
    ("s", "<f8"), ("flap", "<f8"), ("n", "<i4"), ("probation", "<i4"),
    ("memory", "<i4"), ("hb_seen", "<u8"),
)


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
        for region, fields in (("table", self.table), ("registry", self.registry),
                               ("buffer0", self.buffers[0]), ("buffer1", self.buffers[1])):
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
    spans = sorted((off, off + np.dtype(dt).itemsize * count, n)
                   for n, dt, count, off in _HEADER_FIELDS)
    for (a0, a1, an), (b0, _b1, bn) in zip(spans, spans[1:]):
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

    def __init__(self, buf, layout: Layout):
        for name, f in layout.header.items():
            setattr(self, name, _view(buf, f))

    def read_str(self, name: str) -> str:
        raw = bytes(getattr(self, name))
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def write_str(self, name: str, value: str) -> None:
        arr = getattr(self, name)
        data = value.encode("utf-8")
        if len(data) >= arr.size:
            raise ValueError(f"{name} {value!r} longer than {arr.size - 1} bytes")
        arr[:] = 0
        arr[:len(data)] = np.frombuffer(data, np.uint8)


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
    reported: np.ndarray


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

    def __init__(self, buf, fields: dict[str, Field]):
        v = {name: _view(buf, f) for name, f in fields.items()}
        self.views = v
        for name, _dt in BUFFER_SCALARS:
            setattr(self, name, v[name])
        self.weights = v["weights"]
        self.counts = v["counts"]
        self.gen = v["gen"]
        self.hb_seen = v["hb_seen"]
        self.state = NodeState(qema=v["qema"], s=v["s"], state=v["state"], flap=v["flap"],
                               n=v["n"], probation=v["probation"], memory=v["memory"])
        self.out = TickOutputs(score=v["score"], raw=v["raw"], wait=v["wait"],
                               liveness=v["liveness"], ranked=v["ranked"],
                               weights=v["weights"][:7], counts=v["counts"][:5])


class SegmentViews:
    """All views over one mapped segment."""

    def __init__(self, buf, layout: Layout):
        self.layout = layout
        self.header = Header(buf, layout)
        self.table = HeartbeatTable(**{n: _view(buf, f) for n, f in layout.table.items()})
        self.registry = Registry(**{n: _view(buf, f) for n, f in layout.registry.items()})
        self.buffers = (ScoreBuffer(buf, layout.buffers[0]), ScoreBuffer(buf, layout.buffers[1]))


def read_capacity(buf) -> tuple[int, int, int]:
    """(magic, layout_version, capacity) from the start of a mapped segment."""
    hdr = np.ndarray((2,), dtype="<u8", buffer=buf, offset=0)
    return int(hdr[0]), int(hdr[1] & 0xFFFFFFFF), int(hdr[1] >> 32)
