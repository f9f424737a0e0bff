"""The seqcount latch: one writer publishes into two buffers, readers never wait.

Shape (the "seqcount latch" of Linux ``include/linux/seqlock.h``)::

    seq (uint64, 8-byte aligned, starts at 0)     buffer 0      buffer 1
    +-----------------------------------------+  +----------+  +----------+
    | epoch << 1 | 1 while writing epoch + 1  |  | even     |  | odd      |
    +-----------------------------------------+  | epochs   |  | epochs   |
                                                 +----------+  +----------+

Invariant. ``epoch = seq >> 1`` is the last published epoch; it only grows.
Published epoch ``e >= 1`` lives in buffer ``e & 1``; nothing is published at
epoch 0. While ``seq`` is odd the writer is filling epoch ``(seq >> 1) + 1``,
which is the *other* buffer, so the buffer of the published epoch is never
written while it is the newest. A reader that started at ``s1`` copied a
consistent snapshot unless, by the time it finished, the writer had begun the
epoch after next -- the one that reuses its buffer: ``s2 >= (s1 >> 1 << 1) + 3``.

Sequence, by value of seq (epoch E published, buffer b = E & 1)::

    2E      readers use b           writer may begin E+1 (buffer 1-b)
    2E+1    readers still use b     writer fills 1-b
    2E+2    readers use 1-b         E+1 published
    2E+3    writer fills b again:   a copy of b started at 2E or 2E+1 retries

Rules for callers:
  * Exactly one writer at a time. Two concurrent writers corrupt silently;
    ownership (a pid file, the engine's create-exclusive segment) is the
    caller's job. A writer that died mid-write leaves seq odd; the next writer's
    ``write_begin`` sees that and rewrites the same epoch into the same buffer.
  * The writer touches only buffer ``epoch & 1`` between ``write_begin`` and
    ``write_end``, and never the other one.
  * The protected data holds no pointers, and a reader must not trust any value
    (a length, an offset) of a copy until ``read_retry`` says it is consistent:
    a torn copy is garbage that is thrown away, so the copy itself must
    tolerate garbage (bounded loops, no indexing by copied values).
  * A reader copies (never keeps a view of) the buffer, and never writes seq.
  * The sequence word is zeroed by whoever creates the segment, before any
    reader or writer attaches.
  * Use ``read_consistent`` / ``jit_read_consistent``: they are the retry loop.

Two implementations of the same protocol:
  * ``jit_*`` functions are ``@njit(cache=True)`` and use ``ordering``'s atomic
    loads, stores and fences; use them from jitted code (the tick worker).
  * the plain-named functions are ordinary Python over numpy; they rely on the
    x86-64 argument in ``shm_engine.core.ordering`` (opaque C calls + TSO) and are
    for light clients that do not want numba.

Sequence numbers and epochs are int64 on the way out (2**62 epochs is beyond
reach). Hot-path calls return status codes and never raise; only
``check_sequence_word`` (setup) raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numba import njit

from shm_engine.core.ordering import (
    fence_acquire,
    fence_release,
    load_acquire_u64,
    load_relaxed_u64,
    store_relaxed_u64,
    store_release_u64,
)

__all__ = [
    "READ_OK",
    "READ_NOTHING_PUBLISHED",
    "READ_RETRIES_EXHAUSTED",
    "DEFAULT_MAX_RETRIES",
    "buffer_index",
    "check_sequence_word",
    "write_begin",
    "write_end",
    "read_begin",
    "read_retry",
    "read_consistent",
    "jit_write_begin",
    "jit_write_end",
    "jit_read_begin",
    "jit_read_retry",
    "jit_read_consistent",
]

#: The copy is a consistent snapshot of the returned epoch.
READ_OK = 0
#: ``seq >> 1 == 0``: no epoch has been published yet; the result is empty.
READ_NOTHING_PUBLISHED = 1
#: The writer lapped the reader on every attempt; try again later.
READ_RETRIES_EXHAUSTED = 2

#: A reader is lapped only when the writer publishes ~1.5 epochs during one
#: copy; 16 failures in a row mean the reader is starved, not unlucky.
DEFAULT_MAX_RETRIES = 16


def check_sequence_word(seq_arr: np.ndarray, seq_index: int = 0) -> None:
    """Setup check that ``seq_arr[seq_index]`` can carry the sequence.

    Raises ``TypeError`` for a non-uint64 or non-1-D array and ``ValueError``
    for an index out of range or a word that is not 8-byte aligned (an
    unaligned word may be torn by a plain load and makes the atomic ones slow
    or split).
    """
    if not isinstance(seq_arr, np.ndarray) or seq_arr.dtype != np.uint64 or seq_arr.ndim != 1:
        raise TypeError(f"sequence word must be a 1-D uint64 array, got {type(seq_arr).__name__} "
                        f"dtype={getattr(seq_arr, 'dtype', None)} ndim={getattr(seq_arr, 'ndim', None)}")
    if not 0 <= seq_index < seq_arr.shape[0]:
        raise ValueError(f"seq_index={seq_index} out of range for {seq_arr.shape[0]} words")
    address = seq_arr.ctypes.data + seq_index * seq_arr.strides[0]
    if address % 8:
        raise ValueError(f"sequence word at seq_index={seq_index} is not 8-byte aligned "
                         f"(address % 8 == {address % 8})")


@njit(cache=True)
def buffer_index(epoch):
    """The buffer (0 or 1) that holds ``epoch``; usable from Python and jitted code."""
    return epoch & 1


# --------------------------------------------------------------------------
# Jitted implementation (ordered by shm_engine.core.ordering on every CPU).


@njit(cache=True)
def jit_write_begin(seq_arr, seq_index=0):
    """Start writing; returns the epoch E being written (buffer ``E & 1``).

    If seq is odd, a previous writer died mid-write: seq is left as it is and
    E is the epoch it was writing, so the same buffer is rewritten.
    """
    # Relaxed: only this writer stores seq, so it reads back its own value.
    s = np.int64(load_relaxed_u64(seq_arr, seq_index))
    if (s & 1) == 0:
        s += 1
        store_relaxed_u64(seq_arr, seq_index, s)
    # The odd value must be visible before any data store to the buffer.
    # Pairs with fence_acquire() in jit_read_retry / read_retry.
    fence_release()
    return (s >> 1) + 1


@njit(cache=True)
def jit_write_end(seq_arr, seq_index=0):
    """Publish the epoch begun by ``jit_write_begin``; returns it.

    Returns 0 and leaves seq alone if no write was in progress (a caller bug).
    """
    s = np.int64(load_relaxed_u64(seq_arr, seq_index))
    if (s & 1) == 0:
        return np.int64(0)
    # Every data store stays before the even value.
    # Pairs with load_acquire_u64() in jit_read_begin / read_begin.
    store_release_u64(seq_arr, seq_index, s + 1)
    return (s + 1) >> 1


@njit(cache=True)
def jit_read_begin(seq_arr, seq_index=0):
    """Sample seq; the reader copies buffer ``buffer_index(s1 >> 1)``.

    ``s1 >> 1 == 0`` means nothing is published yet.
    """
    # The copy's loads stay after this load.
    # Pairs with store_release_u64() in jit_write_end / write_end.
    return np.int64(load_acquire_u64(seq_arr, seq_index))


@njit(cache=True)
def jit_read_retry(seq_arr, s1, seq_index=0):
    """True if the copy made since ``jit_read_begin`` returned ``s1`` may be torn."""
    # The copy's loads stay before the re-read of seq, so if the copy saw
    # any store the writer made after write_begin, this load sees the odd
    # value. Pairs with fence_release() in jit_write_begin / write_begin.
    fence_acquire()
    s2 = np.int64(load_relaxed_u64(seq_arr, seq_index))
    return s2 >= ((s1 >> 1) << 1) + 3


@njit(cache=True)
def jit_read_consistent(seq_arr, buffers, out, max_retries, seq_index=0):
    """The jitted retry loop: copy the newest published buffer into ``out``.

    ``buffers`` is any array whose first axis (length 2) is the buffer index,
    ``out`` has the shape of ``buffers[0]``. Returns ``(status, epoch,
    attempts)``: ``(READ_OK, E, n)`` with ``out`` holding epoch E after n >= 1
    copies; ``(READ_NOTHING_PUBLISHED, 0, 1)``; ``(READ_RETRIES_EXHAUSTED, E,
    max_retries + 1)``, ``out`` then holding garbage. ``attempts - 1`` is the
    number of retries, for a metrics counter. numba cannot cache a function
    that takes a function argument, hence an array copy, not a callback.
    """
    epoch = np.int64(0)
    attempts = np.int64(0)
    while attempts <= max_retries:
        attempts += 1
        s1 = jit_read_begin(seq_arr, seq_index)
        epoch = s1 >> 1
        if epoch == 0:
            return READ_NOTHING_PUBLISHED, np.int64(0), attempts
        out[...] = buffers[epoch & 1]
        if not jit_read_retry(seq_arr, s1, seq_index):
            return READ_OK, epoch, attempts
    return READ_RETRIES_EXHAUSTED, epoch, attempts


# --------------------------------------------------------------------------
# Python implementation (plain numpy; correct on x86-64, see ordering.py).


def write_begin(seq_arr: np.ndarray, seq_index: int = 0) -> int:
    """Python twin of ``jit_write_begin``; returns the epoch being written."""
    s = seq_arr.item(seq_index)
    if (s & 1) == 0:
        s += 1
        # x86-64: TSO keeps this store before the caller's data stores, and
        # CPython cannot move them. Pairs with fence_acquire() in read_retry.
        seq_arr[seq_index] = s
    return (s >> 1) + 1


def write_end(seq_arr: np.ndarray, seq_index: int = 0) -> int:
    """Python twin of ``jit_write_end``; returns the published epoch or 0."""
    s = seq_arr.item(seq_index)
    if (s & 1) == 0:
        return 0
    # x86-64: TSO keeps the data stores before this one.
    # Pairs with the load in read_begin.
    seq_arr[seq_index] = s + 1
    return (s + 1) >> 1


def read_begin(seq_arr: np.ndarray, seq_index: int = 0) -> int:
    """Python twin of ``jit_read_begin``."""
    # x86-64: TSO keeps the copy's loads after this one.
    # Pairs with the store in write_end.
    return seq_arr.item(seq_index)


def read_retry(seq_arr: np.ndarray, s1: int, seq_index: int = 0) -> bool:
    """Python twin of ``jit_read_retry``."""
    # x86-64: TSO keeps the copy's loads before this one; no fence needed.
    # Pairs with the store in write_begin.
    s2 = seq_arr.item(seq_index)
    return s2 >= ((s1 >> 1) << 1) + 3


T = TypeVar("T")


def read_consistent(
    seq_arr: np.ndarray,
    copy_fn: Callable[[int], T],
    max_retries: int = DEFAULT_MAX_RETRIES,
    seq_index: int = 0,
) -> tuple[int, int, T | None]:
    """The retry loop: ``copy_fn(buffer)`` until it copied a consistent snapshot.

    ``copy_fn`` gets the buffer index (0 or 1) and must return a *copy* (a
    view would be read after the check) and must not raise on garbage.
    Returns ``(status, epoch, result)``: ``(READ_OK, E, copy of epoch E)``,
    ``(READ_NOTHING_PUBLISHED, 0, None)``, or
    ``(READ_RETRIES_EXHAUSTED, E, None)`` after ``max_retries + 1`` attempts.
    """
    epoch = 0
    for _ in range(max_retries + 1):
        s1 = read_begin(seq_arr, seq_index)
        epoch = s1 >> 1
        if epoch == 0:
            return READ_NOTHING_PUBLISHED, 0, None
        result = copy_fn(epoch & 1)
        if not read_retry(seq_arr, s1, seq_index):
            return READ_OK, epoch, result
    return READ_RETRIES_EXHAUSTED, epoch, None
