"""Raw POSIX shared-memory segments for tests, and a bounded wait.

Tests build their own small segments (not the engine's layout) to exercise
one primitive at a time. The creator zero-fills (ftruncate does), the other
processes attach with size 0; the descriptor is closed right after mmap, as
the engine does, so only the mapping keeps the segment alive. Names come from
conftest's ``shm_name`` / ``shm_names`` fixtures, which unlink them.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable

import numpy as np
import posix_ipc


def _path(name: str) -> str:
    return "/" + name.lstrip("/")


def create_segment(name: str, size: int) -> mmap.mmap:
    """Create ``name`` (O_CREX: fails if it exists), ``size`` zero bytes, mapped."""
    shm = posix_ipc.SharedMemory(_path(name), posix_ipc.O_CREX, size=size)
    try:
        return mmap.mmap(shm.fd, size)
    finally:
        shm.close_fd()


def attach_segment(name: str) -> mmap.mmap:
    """Map an existing segment at its full size."""
    shm = posix_ipc.SharedMemory(_path(name))  # no flags, size 0: attach only
    try:
        return mmap.mmap(shm.fd, shm.size)
    finally:
        shm.close_fd()


def unlink_segment(name: str) -> None:
    """Unlink ``name`` if it still exists (mappings stay valid until closed)."""
    try:
        posix_ipc.unlink_shared_memory(_path(name))
    except posix_ipc.ExistentialError:
        pass


def u64_words(mm: mmap.mmap) -> np.ndarray:
    """The whole mapping as a writable uint64 array (mmap is page aligned)."""
    return np.frombuffer(mm, dtype=np.uint64)


def close_quietly(mm: mmap.mmap) -> None:
    """Close a mapping; if numpy views still pin it, leave it to the GC."""
    try:
        mm.close()
    except BufferError:
        pass


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; raise ``TimeoutError`` naming ``what``.

    A busy poll with a deadline: it is a condition wait, never a sleep used
    as synchronisation.
    """
    deadline = time.monotonic() + timeout
    polls = 0
    while not predicate():
        polls += 1
        if polls % 64 == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            os.sched_yield()  # let a process sharing this core run
