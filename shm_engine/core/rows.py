"""Writing heartbeat rows (ingest, replay) and gathering a consistent tick input (tick worker).

A row is one slot of the heartbeat table: 113 bytes in the 15 columns of
`layout.TABLE_COLUMNS` (``row_version`` u8; ``recv_time`` and the 12 metrics
cpu .. ts, slots, f8 each; ``reported`` u1).  A heartbeat reaches the writer as a
validated 384-byte wire record (``wire.RECORD_DTYPE``); the row keeps its
metrics, the receive time, which optional metrics it carried, and ``slots``
(1 when the heartbeat does not report it).  The allocatable capacity of
the configured placement resources (``alloc``, fixed point) is written by
`write_alloc` just after the row, outside the row protocol: its only
readers (placement) read it word by word and never need it consistent
with the metrics; each word is one aligned 8-byte store.

Invariant: the tick never uses a half-written row or a slot whose
registration is changing.  The ingest, the only writer of the shared table and
registry, writes each row between two increments of ``row_version`` and
changes a slot's registration between two increments of ``slot_gen`` (odd
while in progress).  The gather copies a row and re-checks both counters.

Rules for callers:
- `write_rows` is the one row writer: the ingest calls it once per frame (a
  frame of one heartbeat is a batch of one) or per coalesced run of frames;
  replay calls it on its private mapping.  Only the ingest calls it on a
  shared segment, and only the ingest calls `slot_change_begin`/`slot_change_end`.
- `gather_inputs` runs in the tick worker; a slot that stays inconsistent for
  ``MAX_SPINS`` attempts (its writer died mid-write) keeps the inputs of the
  previous tick and is counted in the return value; the restarted ingest
  repairs such slots when its `NodeRegistry` adopts the segment.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from kernels.params import UNREGISTERED
from shm_engine.core.ordering import (
    fence_acquire,
    fence_release,
    load_acquire_u64,
    load_relaxed_u64,
    store_relaxed_u64,
    store_release_u64,
)
from shm_engine.wire.format import (
    FLAGS_WORD,
    HAS_IO,
    HAS_OKERR,
    HAS_RESOURCES,
    HAS_SLOTS,
    HAS_TAIL,
    HAS_THROUGHPUT,
    HAS_TS,
    MAX_RESOURCES,
    REPORTED_BITS,
    WORD,
)

MAX_SPINS = 10_000
_ONE = np.uint64(1)
_TWO = np.uint64(2)

# The table columns in the order `write_rows` indexes ``columns``, with the
# dtype it writes them as (`column_addresses` checks the table against both).
_ROW_COLUMNS = (
    ("row_version", np.uint64),
    ("recv_time", np.float64),
    ("cpu", np.float64),
    ("mem", np.float64),
    ("queue", np.float64),
    ("avg_job_s", np.float64),
    ("throughput", np.float64),
    ("ok", np.float64),
    ("err", np.float64),
    ("io", np.float64),
    ("p50_ms", np.float64),
    ("p95_ms", np.float64),
    ("ts", np.float64),
    ("slots", np.float64),
    ("reported", np.uint8),
)


@intrinsic
def address_pointer(typingctx, address):
    """A ``voidptr`` from an integer address (numba has no cast for it)."""

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.intp), codegen


@njit(cache=True, nogil=True)
def write_rows(columns, capacity, slots, records, now):
    """Write validated heartbeat ``records[j]`` (a ``wire.RECORD_DTYPE``
    array) into row ``slots[j]`` of the table whose column addresses are
    ``columns`` (`column_addresses`), received at ``now``.  A slot outside
    ``[0, capacity)`` is skipped.  Returns the rows written.

    Each row replaces the whole previous row: a metric whose presence bit is
    clear in the record's ``flags`` is written 0 and its ``reported`` bit is
    clear, so it reads as "not reported".  The same slot twice in a batch:
    the later record wins, each write a full protocol round.

    Why these arguments: a numba call costs about a quarter microsecond per
    array it unboxes; this one unboxes three, whatever the batch size (the
    table's columns as arrays would be 15), and reads the records where the
    decoder left them, so a batch of one costs no more than a scalar call."""
    row_version = carray(address_pointer(columns[0]), capacity, np.uint64)
    written = 0
    for j in range(slots.shape[0]):
        s = slots[j]
        if s < 0 or s >= capacity:
            continue
        r = records[j]
        f = r.flags
        v = load_relaxed_u64(row_version, s)
        store_relaxed_u64(row_version, s, v + _ONE)  # odd: row being written
        # The odd version is visible before any field; pairs with fence_acquire in gather_inputs.
        fence_release()
        carray(address_pointer(columns[1]), capacity, np.float64)[s] = now
        carray(address_pointer(columns[2]), capacity, np.float64)[s] = r.cpu
        carray(address_pointer(columns[3]), capacity, np.float64)[s] = r.mem
        carray(address_pointer(columns[4]), capacity, np.float64)[s] = r.queue
        carray(address_pointer(columns[5]), capacity, np.float64)[s] = r.avg_job_s
        carray(address_pointer(columns[6]), capacity, np.float64)[s] = (
            r.throughput if f & HAS_THROUGHPUT else 0.0
        )
        carray(address_pointer(columns[7]), capacity, np.float64)[s] = (
            r.ok if f & HAS_OKERR else 0.0
        )
        carray(address_pointer(columns[8]), capacity, np.float64)[s] = (
            r.err if f & HAS_OKERR else 0.0
        )
        carray(address_pointer(columns[9]), capacity, np.float64)[s] = r.io if f & HAS_IO else 0.0
        carray(address_pointer(columns[10]), capacity, np.float64)[s] = (
            r.p50_ms if f & HAS_TAIL else 0.0
        )
        carray(address_pointer(columns[11]), capacity, np.float64)[s] = (
            r.p95_ms if f & HAS_TAIL else 0.0
        )
        carray(address_pointer(columns[12]), capacity, np.float64)[s] = r.ts if f & HAS_TS else 0.0
        carray(address_pointer(columns[13]), capacity, np.float64)[s] = (
            r.slots if f & HAS_SLOTS else 1.0
        )
        carray(address_pointer(columns[14]), capacity, np.uint8)[s] = f & REPORTED_BITS
        # Even: done; pairs with load_acquire in gather_inputs.
        store_release_u64(row_version, s, v + _TWO)
        written += 1
    return written


def column_addresses(table) -> np.ndarray:
    """The addresses of ``table``'s columns for `write_rows` (setup: raises
    ValueError on a column of another dtype, length or layout).

    The caller must keep ``table`` (its views) alive while it uses the
    addresses: the views are what keeps the segment mapped (``mmap.close``
    refuses while they exist)."""
    capacity = len(table.row_version)
    out = []
    for name, dtype in _ROW_COLUMNS:
        col = getattr(table, name)
        if (
            col.dtype != dtype
            or col.shape != (capacity,)
            or not col.flags.c_contiguous
            or col.ctypes.data % col.dtype.itemsize
        ):
            raise ValueError(
                f"table column {name!r} is {col.dtype}{col.shape}, not an aligned "
                f"contiguous {np.dtype(dtype)}[{capacity}]"
            )
        out.append(col.ctypes.data)
    return np.array(out, np.intp)


_RES_NAME_WORD = WORD["res_name0"]  # entry i's name: words +2i, +2i+1
_RES_VALUE_WORD = WORD["res_value0"]  # entry i's value: word +i
_U32_MAX = 0xFFFF_FFFF


@njit(cache=True, nogil=True)
def write_alloc(alloc, slots, words, values, names, scales, n_res):
    """Set ``alloc[slots[j], k]`` from validated record j for each
    configured resource k < ``n_res``: ``round(amount * scales[k])``
    clamped to 2**32 - 1 when the record's resources name it (``names[k]``:
    its two NUL-padded 8-byte words), else 0 (an accepted heartbeat
    replaces the whole row).  ``words``/``values``: the records as (n,
    WORDS) u8 and f8.  A slot outside ``alloc`` is skipped."""
    cap = alloc.shape[0]
    for j in range(slots.shape[0]):
        s = slots[j]
        if s < 0 or s >= cap:
            continue
        has = (words[j, FLAGS_WORD] & np.uint64(0xFF)) & np.uint64(HAS_RESOURCES)
        for k in range(n_res):
            units = np.uint64(0)
            if has:
                for i in range(MAX_RESOURCES):
                    w0 = words[j, _RES_NAME_WORD + 2 * i]
                    if w0 == 0:
                        break  # the entries come first
                    if w0 == names[k, 0] and words[j, _RES_NAME_WORD + 2 * i + 1] == names[k, 1]:
                        x = np.floor(values[j, _RES_VALUE_WORD + i] * scales[k] + 0.5)
                        units = np.uint64(min(x, _U32_MAX))
                        break
            alloc[s, k] = units


def alloc_names(header) -> tuple[np.ndarray, np.ndarray, int]:
    """(names as (N, 2) u8 words, scales as f8, count) of the placement
    resources in a scores segment's header, for `write_alloc`."""
    n = int(header.place_resources[0])
    names = header.place_names.view(np.uint64).reshape(-1, 2).copy()
    return names, header.place_scale.astype(np.float64), n


@njit(cache=True, nogil=True)
def slot_change_begin(slot_gen, slot):
    """Mark ``slot``'s registration as changing (odd generation)."""
    g = load_relaxed_u64(slot_gen, slot)
    if g & _ONE == 0:
        store_relaxed_u64(slot_gen, slot, g + _ONE)
    # The odd gen is visible before the id/registered stores. Pairs with
    # fence_acquire in gather_inputs and the re-read in registry.read_node_id.
    fence_release()


@njit(cache=True, nogil=True)
def slot_change_end(slot_gen, slot):
    """Publish ``slot``'s new registration (even generation)."""
    g = load_relaxed_u64(slot_gen, slot)
    # Pairs with load_acquire in gather_inputs and the first load in
    # registry.read_node_id.
    store_release_u64(slot_gen, slot, g + _ONE)


@njit(cache=True, nogil=True)
def gather_range(
    slot_gen,
    registered,
    table,
    prev_gen,
    prev_hb_seen,
    prev_state,
    inp,
    nxt_gen,
    nxt_hb_seen,
    now,
    age_mul,
    age_div,
    held_gen,
    held_version,
    held_recv,
    lo,
    hi,
):
    """`gather_inputs` for slots ``[lo, hi)`` (hi <= hwm), ``table`` the
    heartbeat table's columns and ``inp`` the `kernels.TickInputs`; returns
    the number of slots that stayed inconsistent.  `gather_inputs` calls it
    over every slot; the threaded tick once per range of slots, each on its
    own thread (`shm_engine.tick.epoch`)."""
    # Columns as locals, once (not a tuple access per slot).
    t_row_version = table.row_version
    t_io = table.io
    t_recv_time = table.recv_time
    t_cpu = table.cpu
    t_mem = table.mem
    t_queue = table.queue
    t_avg_job_s = table.avg_job_s
    t_throughput = table.throughput
    t_ok = table.ok
    t_err = table.err
    t_p50_ms = table.p50_ms
    t_p95_ms = table.p95_ms
    t_slots = table.slots
    t_reported = table.reported
    i_io = inp.io
    i_fresh = inp.fresh
    i_active = inp.active
    i_new_hb = inp.new_hb
    i_age = inp.age
    i_cpu = inp.cpu
    i_mem = inp.mem
    i_queue = inp.queue
    i_avg_job_s = inp.avg_job_s
    i_throughput = inp.throughput
    i_ok = inp.ok
    i_err = inp.err
    i_p50_ms = inp.p50_ms
    i_p95_ms = inp.p95_ms
    i_slots = inp.slots
    i_reported = inp.reported
    torn = 0
    for s in range(lo, hi):
        g1 = load_acquire_u64(slot_gen, s)  # pairs with store_release in slot_change_end
        v1 = load_acquire_u64(t_row_version, s)  # pairs with store_release in write_rows
        if v1 == held_version[s] and g1 == held_gen[s]:
            # Unchanged since the copy the inputs hold (held values are even).
            fresh = prev_state[s] == UNREGISTERED or prev_gen[s] != g1
            i_active[s] = 1
            i_fresh[s] = 1 if fresh else 0
            i_new_hb[s] = 1 if (fresh or prev_hb_seen[s] != v1) else 0
            i_age[s] = ((now - held_recv[s]) * age_mul) / age_div
            nxt_gen[s] = g1
            nxt_hb_seen[s] = v1
            continue
        done = False
        for _ in range(MAX_SPINS):
            g1 = load_acquire_u64(slot_gen, s)  # pairs with store_release in slot_change_end
            if g1 & _ONE:
                continue
            reg = registered[s]
            v1 = load_acquire_u64(t_row_version, s)  # pairs with store_release in write_rows
            if v1 & _ONE:
                continue
            r_recv = t_recv_time[s]
            r_cpu = t_cpu[s]
            r_mem = t_mem[s]
            r_queue = t_queue[s]
            r_avg = t_avg_job_s[s]
            r_tp = t_throughput[s]
            r_ok = t_ok[s]
            r_err = t_err[s]
            r_io = t_io[s]
            r_p50 = t_p50_ms[s]
            r_p95 = t_p95_ms[s]
            r_slots = t_slots[s]
            r_rep = t_reported[s]
            # Field loads complete before the re-check; pairs with fence_release in write_rows.
            fence_acquire()
            if load_relaxed_u64(t_row_version, s) != v1 or load_relaxed_u64(slot_gen, s) != g1:
                continue
            done = True
            break
        if not done:
            # Writer died mid-write: keep last tick's view of this slot (and
            # the held_* of that view).
            i_new_hb[s] = 0
            nxt_gen[s] = prev_gen[s]
            nxt_hb_seen[s] = prev_hb_seen[s]
            i_fresh[s] = 0
            i_active[s] = 1 if prev_state[s] != UNREGISTERED else 0
            torn += 1
            continue
        if reg == 0:
            i_active[s] = 0
            i_fresh[s] = 0
            i_new_hb[s] = 0
            nxt_gen[s] = g1
            nxt_hb_seen[s] = 0
            held_version[s] = _ONE
            continue
        fresh = prev_state[s] == UNREGISTERED or prev_gen[s] != g1
        i_active[s] = 1
        i_fresh[s] = 1 if fresh else 0
        i_new_hb[s] = 1 if (fresh or prev_hb_seen[s] != v1) else 0
        i_age[s] = ((now - r_recv) * age_mul) / age_div
        i_cpu[s] = r_cpu
        i_mem[s] = r_mem
        i_queue[s] = r_queue
        i_avg_job_s[s] = r_avg
        i_throughput[s] = r_tp
        i_ok[s] = r_ok
        i_err[s] = r_err
        i_io[s] = r_io
        i_p50_ms[s] = r_p50
        i_p95_ms[s] = r_p95
        i_slots[s] = r_slots
        i_reported[s] = r_rep
        nxt_gen[s] = g1
        nxt_hb_seen[s] = v1
        held_gen[s] = g1
        held_version[s] = v1
        held_recv[s] = r_recv
    return torn


@njit(cache=True, nogil=True)
def gather_inputs(
    slot_gen,
    registered,
    table,
    prev_gen,
    prev_hb_seen,
    prev_state,
    inp,
    nxt_gen,
    nxt_hb_seen,
    now,
    age_mul,
    age_div,
    hwm,
    limit,
    held_gen,
    held_version,
    held_recv,
):
    """Copy a consistent view of slots ``[0, hwm)`` into the tick inputs.

    ``fresh`` marks a node whose generation differs from the one the
    previous epoch scored (a new registration); ``new_hb`` marks a row
    written since the previous epoch.  ``age = ((now - recv_time) * age_mul)
    / age_div``: (1, 1) live, (tick_interval_ms, 1000) in replay, where times
    are tick numbers, so ages are exact in ticks.  Slots from ``hwm`` on are
    inactive: those below ``limit`` are marked so, those from ``limit`` on
    (``hwm`` <= ``limit`` <= capacity) are left alone, for a caller whose
    inputs already read inactive there.  Returns the number of slots that
    stayed inconsistent.

    ``held_*`` (one per slot, owned by the caller with the inputs) say which
    row the inputs already hold: slot_gen, row_version and recv_time of the
    last consistent copy of a registered row (``held_version`` odd: nothing
    held).  A row whose counters still read exactly those values has not
    been written since (both only grow, and an even pair means no write or
    registration change is in progress), so its fields are not read again;
    only the flags and the age are recomputed.  Every other row goes through
    the full read protocol."""
    torn = gather_range(
        slot_gen,
        registered,
        table,
        prev_gen,
        prev_hb_seen,
        prev_state,
        inp,
        nxt_gen,
        nxt_hb_seen,
        now,
        age_mul,
        age_div,
        held_gen,
        held_version,
        held_recv,
        0,
        hwm,
    )
    for s in range(hwm, limit):
        inp.active[s] = 0
        inp.fresh[s] = 0
        inp.new_hb[s] = 0
    return torn


class GatherCache(NamedTuple):
    """Which heartbeat row the tick inputs hold, per slot (see `gather_inputs`).

    Belongs with one `TickInputs` and must change only through `gather`
    into those inputs; `make_gather_cache` starts with nothing held."""

    gen: np.ndarray  # u8
    version: np.ndarray  # u8, odd = nothing held
    recv_time: np.ndarray  # f8


def make_gather_cache(capacity: int) -> GatherCache:
    return GatherCache(
        np.zeros(capacity, np.uint64), np.ones(capacity, np.uint64), np.zeros(capacity, np.float64)
    )


def gather(
    views,
    prev,
    nxt,
    inp,
    now: float,
    age_mul: float = 1.0,
    age_div: float = 1.0,
    hwm: int | None = None,
    cache: GatherCache | None = None,
) -> int:
    """`gather_inputs` over `SegmentViews` ``views`` from buffer ``prev`` into
    tick inputs ``inp`` and buffer ``nxt``'s gen/hb_seen columns.

    ``cache``: the `GatherCache` of ``inp``, kept by the caller from one
    gather to the next, so unchanged rows are not copied again; without
    one every row is copied."""
    t, reg = views.table, views.registry
    if hwm is None:
        hwm = int(views.header.slot_hwm[0])
    if cache is None:
        cache = make_gather_cache(inp.active.shape[0])
    return gather_inputs(
        reg.slot_gen,
        reg.registered,
        t,
        prev.gen,
        prev.hb_seen,
        prev.state.state,
        inp,
        nxt.gen,
        nxt.hb_seen,
        float(now),
        float(age_mul),
        float(age_div),
        min(hwm, inp.active.shape[0]),
        inp.active.shape[0],
        cache.gen,
        cache.version,
        cache.recv_time,
    )
