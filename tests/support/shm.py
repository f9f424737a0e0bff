"""Raw POSIX shared-memory segments for tests.

Tests build their own small segments (not the engine's layout) to exercise
one primitive at a time. The creator zero-fills (ftruncate does), the other
processes attach with size 0; the descriptor is closed right after mmap, as
the engine does, so only the mapping keeps the segment alive. Names come from
conftest's ``shm_name`` / ``shm_names`` fixtures, which unlink them with
`unlink_segment`.
"""

from __future__ import annotations

import mmap

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
    """Unlink ``name`` and its claims segment ``name.claims`` if they still
    exist (mappings stay valid until closed)."""
    for path in (_path(name), _path(name) + ".claims", _path(name) + ".events"):
        try:
            posix_ipc.unlink_shared_memory(path)
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
