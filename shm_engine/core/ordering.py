"""Ordered loads, stores, read-modify-writes and fences for ``@njit`` code over shared memory.

Every ordered access to shared memory in this package goes through this module;
no other module spells a barrier. numba has no atomics API, and a plain load
``arr[i]`` in a jitted loop is an ordinary LLVM load: LLVM may merge it with an
earlier load or hoist it out of a loop that does not store to memory, so a spin
on a counter written by another process can become an infinite loop. The
functions here are numba intrinsics that emit LLVM atomic instructions, which
LLVM never merges, hoists or drops.

API (all usable inside ``@njit``, including ``cache=True``; ``arr`` is a
``uint64``/``uint32`` array, ``i`` an integer index that is NOT bounds-checked,
like ``arr[i]`` in numba by default; the element must be naturally aligned,
which a numpy view at an aligned offset of an mmap'ed segment is)::

    load_acquire_u64(arr, i)       load_acquire_u32(arr, i)
    load_relaxed_u64(arr, i)       load_relaxed_u32(arr, i)
    store_release_u64(arr, i, v)   store_release_u32(arr, i, v)
    store_relaxed_u64(arr, i, v)   store_relaxed_u32(arr, i, v)
    fence_acquire()  fence_release()  fence_seq_cst()

Read-modify-write operations (``arr`` a writable ``uint64`` or ``int64``
array; the suffix names the element type; each returns the value the word
held just before, so a caller that loses a race already has the fresh
value)::

    cas_u64(arr, i, expected, new)        cas_i64(arr, i, expected, new)
    fetch_add_u64(arr, i, v)              fetch_add_i64(arr, i, v)
    exchange_u64(arr, i, v)               exchange_i64(arr, i, v)
    cas_pair_u64(arr, i, exp0, exp1, new0, new1) -> bool

``cas_*`` (LLVM ``cmpxchg``) stores ``new`` only if the word holds
``expected``; it succeeded iff the returned value equals ``expected``.
``fetch_add_*`` (``atomicrmw add``, wrapping) and ``exchange_*``
(``atomicrmw xchg``) always store. ``cas_pair_u64`` is one 16-byte
``cmpxchg`` over ``arr[i]`` and ``arr[i + 1]``, whose address must be
16-byte aligned (it faults otherwise); it returns whether it stored.

Every read-modify-write is *acq_rel* (a failed ``cas`` is *acquire*): the
store half releases the caller's earlier accesses to whoever later reads the
word with an acquire load or another read-modify-write, and the load half
acquires what the previous writer of the word released. Their partners are
therefore each other and ``load_acquire_*``; a ``store_release_*`` to a word
that others update by read-modify-write would lose their updates, so such a
word is only ever written by read-modify-writes (or by one party once every
other party is known to be gone, as a reclaimer does).

*relaxed* is LLVM ``monotonic``: one indivisible access, never merged, hoisted
or torn, but no ordering against other addresses. *acquire* loads keep every
later access after them; *release* stores keep every earlier access before
them. ``fence_acquire`` keeps earlier loads before every later access;
``fence_release`` keeps every earlier access before later stores;
``fence_seq_cst`` also orders an earlier store before a later load.

What provides the ordering on x86-64 (the only target we deploy on):
    TSO: the CPU never reorders a load with an older load, nor a store with an
    older store, nor a store with an older load. So acquire loads, release
    stores, relaxed accesses and the acquire/release fences all compile to
    plain ``mov`` instructions (the fences to nothing); their only cost is
    that they stop the *compiler* from moving or merging accesses. The one
    reordering TSO allows is a later load passing an earlier store (the store
    waits in the store buffer); only ``fence_seq_cst`` (``mfence`` or a locked
    instruction) prevents that, and the seqlock does not need it. The
    read-modify-writes are ``lock cmpxchg``, ``lock xadd`` and ``xchg``
    (``lock cmpxchg16b`` for the pair, which numba's host target enables):
    each is a full barrier on x86-64, stronger than the acq_rel promised.

What a weakly ordered CPU (aarch64, POWER) would need:
    The same source is correct there because LLVM emits the instructions:
    acquire load -> ``ldar``, release store -> ``stlr``, ``fence_acquire`` ->
    ``dmb ishld``, ``fence_release`` / ``fence_seq_cst`` -> ``dmb ish``
    (POWER: ``lwsync``/``sync``); the read-modify-writes become ``ldaxr`` /
    ``stlxr`` loops or LSE ``casal``/``ldaddal``/``swpal`` (the pair:
    ``caspal``). Nothing here may be weakened to a plain access "because
    x86 does not need it".

The Python-side read path (``seqlock.read_begin`` and friends: numpy indexing,
``memoryview``, ``ndarray.copy``) uses no atomics and is correct on x86-64
because (1) each access is a separate call into compiled C code that CPython
cannot see into, so no compiler moves one across another, (2) an aligned
8-byte load or store is a single ``mov`` and is not torn, and (3) TSO keeps
the loads (and, on the writer side, the stores) in program order. glibc's
``memcpy`` may use non-temporal stores for very large copies, but ends them
with ``sfence``, and a reader's copy only stores to private memory. On a
weakly ordered CPU (3) fails: the Python path would need real barriers between
the sequence loads and the data copy (a small C extension or a jitted
helper from this module), not just the opaqueness of calls.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "load_acquire_u64",
    "load_relaxed_u64",
    "store_release_u64",
    "store_relaxed_u64",
    "load_acquire_u32",
    "load_relaxed_u32",
    "store_release_u32",
    "store_relaxed_u32",
    "fence_acquire",
    "fence_release",
    "fence_seq_cst",
    "cas_u64",
    "cas_i64",
    "fetch_add_u64",
    "fetch_add_i64",
    "exchange_u64",
    "exchange_i64",
    "cas_pair_u64",
]


def _element_pointer(context, builder, arrty, arr, idxty, idx):
    """Address of ``arr[idx]`` (any layout; negative indices not wrapped)."""
    ary = context.make_array(arrty)(context, builder, arr)
    idx = context.cast(builder, idx, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx])


def _is_array_of(arrty, dtype, *, writable: bool) -> bool:
    return (
        isinstance(arrty, types.Array)
        and arrty.ndim == 1
        and arrty.dtype == dtype
        and (arrty.mutable or not writable)
    )


def _make_load(dtype, ordering: str):
    nbits = dtype.bitwidth

    def load(typingctx, arr, i):
        if not (_is_array_of(arr, dtype, writable=False) and isinstance(i, types.Integer)):
            return None  # numba reports "no matching definition"

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            return builder.load_atomic(ptr, ordering, nbits // 8, typ=ir.IntType(nbits))

        return dtype(arr, i), codegen

    return load


def _make_store(dtype, ordering: str):
    nbits = dtype.bitwidth

    def store(typingctx, arr, i, v):
        if not (
            _is_array_of(arr, dtype, writable=True)
            and isinstance(i, types.Integer)
            and isinstance(v, types.Integer)
        ):
            return None

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            # Converting here, not in the caller, keeps a signed or wider
            # argument from changing the stored width.
            val = context.cast(builder, args[2], sig.args[2], dtype)
            builder.store_atomic(val, ptr, ordering, nbits // 8)
            return context.get_dummy_value()

        return types.void(arr, i, v), codegen

    return store


def _make_fence(ordering: str):
    def fence(typingctx):
        def codegen(context, builder, sig, args):
            builder.fence(ordering)
            return context.get_dummy_value()

        return types.void(), codegen

    return fence


def _named(impl, name: str, doc: str):
    # Typing errors name the intrinsic by its function's name, so give each
    # factory-made function the public one.
    impl.__name__ = impl.__qualname__ = name
    impl.__doc__ = doc
    return intrinsic(impl)


load_acquire_u64 = _named(
    _make_load(types.uint64, "acquire"),
    "load_acquire_u64",
    "Load ``arr[i]`` (uint64); no later access is moved before it.",
)
load_relaxed_u64 = _named(
    _make_load(types.uint64, "monotonic"),
    "load_relaxed_u64",
    "Load ``arr[i]`` (uint64) afresh each time; indivisible, not ordered.",
)
store_release_u64 = _named(
    _make_store(types.uint64, "release"),
    "store_release_u64",
    "Store ``v`` to ``arr[i]`` (uint64); no earlier access is moved after it.",
)
store_relaxed_u64 = _named(
    _make_store(types.uint64, "monotonic"),
    "store_relaxed_u64",
    "Store ``v`` to ``arr[i]`` (uint64); indivisible, never dropped, not ordered.",
)
load_acquire_u32 = _named(
    _make_load(types.uint32, "acquire"),
    "load_acquire_u32",
    "Load ``arr[i]`` (uint32); no later access is moved before it.",
)
load_relaxed_u32 = _named(
    _make_load(types.uint32, "monotonic"),
    "load_relaxed_u32",
    "Load ``arr[i]`` (uint32) afresh each time; indivisible, not ordered.",
)
store_release_u32 = _named(
    _make_store(types.uint32, "release"),
    "store_release_u32",
    "Store ``v`` to ``arr[i]`` (uint32); no earlier access is moved after it.",
)
store_relaxed_u32 = _named(
    _make_store(types.uint32, "monotonic"),
    "store_relaxed_u32",
    "Store ``v`` to ``arr[i]`` (uint32); indivisible, never dropped, not ordered.",
)
fence_acquire = _named(
    _make_fence("acquire"),
    "fence_acquire",
    "Earlier loads stay before every later load and store.",
)
fence_release = _named(
    _make_fence("release"),
    "fence_release",
    "Every earlier load and store stays before later stores.",
)
fence_seq_cst = _named(
    _make_fence("seq_cst"),
    "fence_seq_cst",
    "Full barrier: also keeps earlier stores before later loads (mfence on x86-64).",
)


# --------------------------------------------------------------------------
# Read-modify-writes


def _make_cas(dtype):
    nbits = dtype.bitwidth

    def cas(typingctx, arr, i, expected, new):
        if not (
            _is_array_of(arr, dtype, writable=True)
            and isinstance(i, types.Integer)
            and isinstance(expected, types.Integer)
            and isinstance(new, types.Integer)
        ):
            return None

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            exp = context.cast(builder, args[2], sig.args[2], dtype)
            val = context.cast(builder, args[3], sig.args[3], dtype)
            pair = builder.cmpxchg(ptr, exp, val, "acq_rel", "acquire")
            old = builder.extract_value(pair, 0)
            assert old.type == ir.IntType(nbits)
            return old

        return dtype(arr, i, expected, new), codegen

    return cas


def _make_rmw(dtype, op: str):
    def rmw(typingctx, arr, i, v):
        if not (
            _is_array_of(arr, dtype, writable=True)
            and isinstance(i, types.Integer)
            and isinstance(v, types.Integer)
        ):
            return None

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            val = context.cast(builder, args[2], sig.args[2], dtype)
            return builder.atomic_rmw(op, ptr, val, "acq_rel")

        return dtype(arr, i, v), codegen

    return rmw


def _cas_pair(typingctx, arr, i, exp0, exp1, new0, new1):
    if not (
        _is_array_of(arr, types.uint64, writable=True)
        and isinstance(i, types.Integer)
        and all(isinstance(t, types.Integer) for t in (exp0, exp1, new0, new1))
    ):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        i128 = ir.IntType(128)
        wide = builder.bitcast(ptr, i128.as_pointer())

        def join(lo, lo_ty, hi, hi_ty):
            lo = builder.zext(context.cast(builder, lo, lo_ty, types.uint64), i128)
            hi = builder.zext(context.cast(builder, hi, hi_ty, types.uint64), i128)
            return builder.or_(lo, builder.shl(hi, ir.Constant(i128, 64)))

        t = sig.args
        expected = join(args[2], t[2], args[3], t[3])  # arr[i] is the low half (little-endian)
        new = join(args[4], t[4], args[5], t[5])
        pair = builder.cmpxchg(wide, expected, new, "acq_rel", "acquire")
        return builder.extract_value(pair, 1)

    return types.boolean(arr, i, exp0, exp1, new0, new1), codegen


cas_u64 = _named(
    _make_cas(types.uint64),
    "cas_u64",
    "Compare-and-swap ``arr[i]`` (uint64): store ``new`` if it holds ``expected``; "
    "returns the old value. acq_rel (acquire when it fails).",
)
cas_i64 = _named(
    _make_cas(types.int64),
    "cas_i64",
    "Compare-and-swap ``arr[i]`` (int64); returns the old value. acq_rel.",
)
fetch_add_u64 = _named(
    _make_rmw(types.uint64, "add"),
    "fetch_add_u64",
    "``arr[i] += v`` (uint64, wrapping) as one indivisible step; returns the old value. acq_rel.",
)
fetch_add_i64 = _named(
    _make_rmw(types.int64, "add"),
    "fetch_add_i64",
    "``arr[i] += v`` (int64, wrapping) as one indivisible step; returns the old value. acq_rel.",
)
exchange_u64 = _named(
    _make_rmw(types.uint64, "xchg"),
    "exchange_u64",
    "Store ``v`` to ``arr[i]`` (uint64) and return the old value, indivisibly. acq_rel.",
)
exchange_i64 = _named(
    _make_rmw(types.int64, "xchg"),
    "exchange_i64",
    "Store ``v`` to ``arr[i]`` (int64) and return the old value, indivisibly. acq_rel.",
)
cas_pair_u64 = _named(
    _cas_pair,
    "cas_pair_u64",
    "Compare-and-swap the 16 bytes ``arr[i], arr[i + 1]`` (uint64, 16-byte aligned) "
    "as one word; True if it stored. acq_rel (acquire when it fails).",
)
