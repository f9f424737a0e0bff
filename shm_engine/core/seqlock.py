"""The seqcount latch: one writer publishes into two buffers, readers never wait.

Shape (the "seqcount latch" of Linux ``include/linux/seqlock.h``)::

    seq (uint64, 8-byte aligned, starts at 0)     buffer 0      buffer 1
    +-----------------------------------------+  +----------+  +----------+
    | epoch << 1 | 1 while writing epoch + 1  |  | even     |  | odd      |
    +-----------------------------------------+  | epochs   |  | epochs   |
                                                 +----------+  +----------+

Invariant. ``epoch = seq >> 1`` is the last published epoch; it only grows.
Published epoch ``E >= 1`` lives in buffer ``E & 1``; nothing is published at
epoch 0. While ``seq`` is odd the writer is filling epoch ``(seq >> 1) + 1``,
which is the *other* buffer, so the buffer of the published epoch is never
written while it is the newest. A copy of epoch ``E`` is consistent unless,
by the time it finished, the writer had begun the epoch after next -- the one
that reuses its buffer: ``seq >= 2E + 3``.

Sequence, by value of seq (epoch E published, buffer b = E & 1)::

    2E      readers use b           writer may begin E+1 (buffer 1-b)
    2E+1    readers still use b     writer fills 1-b
    2E+2    readers use 1-b         E+1 published
    2E+3    writer fills b again:   a copy of b begun at 2E or 2E+1 retries

Rules for callers:
  * Exactly one writer at a time. Two concurrent writers corrupt silently;
    ownership (a pid file, the engine's create-exclusive segment) is the
    caller's job. A writer that died mid-write leaves seq odd; the next writer's
    ``write_begin`` sees that and rewrites the same epoch into the same buffer.
  * The writer touches only buffer ``E & 1`` of the epoch ``E`` that
    ``write_begin`` returned, until ``write_end``, and never the other one.
  * The protected data holds no pointers, and a reader must not trust any value
    (a length, an offset, a slot) of a copy until the latch accepted it
    (``read_retry`` or ``still_newest``): a torn copy is garbage that is thrown
    away, so the copy itself must tolerate garbage (bounded loops,
    range-checked indexing).
  * A reader copies (never keeps a view of) the buffer, and never writes seq.
  * The sequence word is zeroed by whoever creates the segment, before any
    reader or writer attaches.

Reading. ``read_consistent`` is the retry loop, the only one: ``read_begin``
gives the epoch E, the caller's copy reads buffer ``E & 1``, ``read_retry``
says whether to copy again. A reader that keeps the epoch of its last
consistent read may skip ``read_begin`` on a hot path: copy from that epoch's
buffer, then ``still_newest(seq, E)`` (one load instead of two, and current,
not only consistent); when it is False, read through ``read_consistent`` and
keep the epoch it returns. Callers never loop themselves.

Memory ordering. These functions are plain Python over numpy (writer) and
``memoryview`` (reader): each access is one opaque call into C that no
compiler moves, and x86-64 TSO keeps loads in order with loads and stores with
stores (``shm_engine.core.ordering`` gives the argument, and what a weakly
ordered CPU would need instead). Each ordered access below names its partner.

Sequence numbers and epochs are Python ints (2**62 epochs is beyond reach).
Hot-path calls return status codes and never raise; only
``check_sequence_word`` (setup) raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

__all__ = [
    "READ_OK",
    "READ_NOTHING_PUBLISHED",
    "READ_RETRIES_EXHAUSTED",
    "DEFAULT_MAX_RETRIES",
    "check_sequence_word",
    "write_begin",
    "write_end",
    "read_begin",
    "read_retry",
    "read_consistent",
    "still_newest",
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
    unaligned word may be torn by a plain load).
    """
    if not isinstance(seq_arr, np.ndarray) or seq_arr.dtype != np.uint64 or seq_arr.ndim != 1:
        raise TypeError(
            f"sequence word must be a 1-D uint64 array, got {type(seq_arr).__name__} "
            f"dtype={getattr(seq_arr, 'dtype', None)} "
            f"ndim={getattr(seq_arr, 'ndim', None)}"
        )
    if not 0 <= seq_index < seq_arr.shape[0]:
        raise ValueError(f"seq_index={seq_index} out of range for {seq_arr.shape[0]} words")
    address = seq_arr.ctypes.data + seq_index * seq_arr.strides[0]
    if address % 8:
        raise ValueError(
            f"sequence word at seq_index={seq_index} is not 8-byte aligned "
            f"(address % 8 == {address % 8})"
        )


# --------------------------------------------------------------------------
# Writer (``seq_arr``: the uint64 array holding the word).


def write_begin(seq_arr: np.ndarray, seq_index: int = 0) -> int:
    """Start writing; returns the epoch E being written (into buffer ``E & 1``).

    If seq is odd, a previous writer died mid-write: seq is left as it is and
    E is the epoch it was writing, so the same buffer is rewritten.
    """
    s = seq_arr.item(seq_index)
    if (s & 1) == 0:
        s += 1
        # The odd value is visible before the caller's first buffer store
        # (TSO: stores stay in order). Pairs with the loads in read_retry
        # and still_newest.
        seq_arr[seq_index] = s
    return (s >> 1) + 1


def write_end(seq_arr: np.ndarray, seq_index: int = 0) -> int:
    """Publish the epoch begun by ``write_begin``; returns it.

    Returns 0 and leaves seq alone if no write was in progress (a caller bug).
    """
    s = seq_arr.item(seq_index)
    if (s & 1) == 0:
        return 0
    # Every buffer store of the caller is visible before the even value
    # (TSO: stores stay in order). Pairs with the load in read_begin.
    seq_arr[seq_index] = s + 1
    return (s + 1) >> 1


# --------------------------------------------------------------------------
# Reader (``seq``: ``memoryview`` of that array, made once; indexing one
# yields a Python int in ~30 ns, where numpy yields a numpy scalar in ~100 ns).


def read_begin(seq: memoryview, seq_index: int = 0) -> int:
    """The last published epoch E (0: none yet); copy buffer ``E & 1``, then
    ask ``read_retry(seq, E)`` whether the copy may be used."""
    # The copy's loads come after this one (TSO: loads stay in order).
    # Pairs with the store in write_end: a copy that began after it sees
    # every buffer store of epoch E.
    return seq[seq_index] >> 1


def read_retry(seq: memoryview, epoch: int, seq_index: int = 0) -> bool:
    """True if the copy made since ``read_begin`` returned ``epoch`` must not
    be used: nothing was published (epoch 0), or the writer has begun the
    epoch after next, which reuses the copied buffer."""
    # The copy's loads come before this one (TSO: loads stay in order).
    # Pairs with the store in write_begin: if the copy saw any store of a
    # later write into its buffer, this load sees that write's odd value.
    return epoch == 0 or seq[seq_index] >= (epoch << 1) + 3


T = TypeVar("T")


def read_consistent(
    seq: memoryview,
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
        epoch = read_begin(seq, seq_index)
        if epoch == 0:
            return READ_NOTHING_PUBLISHED, 0, None
        result = copy_fn(epoch & 1)
        if not read_retry(seq, epoch, seq_index):
            return READ_OK, epoch, result
    return READ_RETRIES_EXHAUSTED, epoch, None


def still_newest(seq: memoryview, epoch: int, seq_index: int = 0) -> bool:
    """True if ``epoch`` (from an earlier read) is still the newest published
    epoch; False for 0.

    Then a copy of buffer ``epoch & 1`` made since that read is consistent and
    current: while E is the newest epoch, the writer fills only the other
    buffer.
    """
    # The copy's loads come before this one (TSO: loads stay in order).
    # Pairs with the store in write_begin: a copy that saw any store of a
    # later write into its buffer (epoch E + 2) sees seq >= 2E + 3 here.
    return epoch != 0 and seq[seq_index] >> 1 == epoch
