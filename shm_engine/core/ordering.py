"""Ordered loads, stores and fences for ``@njit`` code over shared memory.

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
    instruction) prevents that, and the seqlock does not need it.

What a weakly ordered CPU (aarch64, POWER) would need:
    The same source is correct there because LLVM emits the instructions:
    acquire load -> ``ldar``, release store -> ``stlr``, ``fence_acquire`` ->
    ``dmb ishld``, ``fence_release`` / ``fence_seq_cst`` -> ``dmb ish``
    (POWER: ``lwsync``/``sync``). Nothing here may be weakened to a plain
    access "because x86 does not need it".

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
