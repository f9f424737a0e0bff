"""Creating, attaching and removing an engine's POSIX shared-memory segments.

An engine has two: the scores segment ``/NAME`` (`Segment`) and the claims
segment ``/NAME.claims`` (`shm_engine.core.claims.ClaimsSegment`, built on the
helpers here: `create_exclusive`, `map_existing`).

Invariants:
- The supervisor is the only creator.  It creates with O_CREAT|O_EXCL, so two
  engines can never share a name; a segment whose creator is dead (pid gone,
  a zombie, or the pid now belongs to another process) is stale and is
  reclaimed.
- The creator writes ``magic`` last: a segment without it is still being
  created (or its creator died during creation, which the age check handles).
- Nothing unlinks a segment implicitly.  `Segment.unlink()` is called by the
  supervisor on clean shutdown; attached processes only ``close()``.

Rules for callers: keep the `Segment` (and so its mmap) alive while any numpy
view of it is in use; attach with `Segment.attach`, which never resizes.  We do
not use ``multiprocessing.shared_memory``: its resource tracker unlinks
segments when an attached process exits.
"""

from __future__ import annotations

import mmap
import os
import re
import time

import numpy as np
import posix_ipc

from shm_engine.core.errors import EngineAlreadyRunning, EngineNotRunning, LayoutMismatch
from shm_engine.core.layout import LAYOUT_VERSION, MAGIC, Layout, SegmentViews, layout_for, read_capacity

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
# A segment without magic younger than this is assumed to be mid-creation.
_CREATION_GRACE_S = 5.0


CLAIMS_SUFFIX = ".claims"


def posix_name(name: str) -> str:
    """The POSIX shm name of engine ``name`` (``/dev/shm/<name>`` on Linux)."""
    if not _NAME_RE.match(name) or name.endswith(CLAIMS_SUFFIX):
        raise ValueError(f"engine name {name!r} must be 1-200 characters of A-Z a-z 0-9 _ . - "
                         f"not ending in {CLAIMS_SUFFIX!r}")
    return "/" + name


def claims_posix_name(name: str) -> str:
    """The POSIX shm name of engine ``name``'s claims segment."""
    return posix_name(name) + CLAIMS_SUFFIX


def process_stat(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of ``pid`` from
    ``/proc/PID/stat``, or None if there is no such process.

    Start time and pid together identify a process across pid reuse; state
    ``Z`` (zombie) or ``X`` means it has exited but was not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')', so split after
    # the last ')': field 3 is the state, field 22 the start time.
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19]), fields[0].decode("ascii", "replace")


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if unknown."""
    st = process_stat(pid)
    return None if st is None else st[0]


def process_alive(pid: int, start_time: int = 0) -> bool:
    """True if ``pid`` is running (not a zombie) and, when ``start_time`` is
    given, is the same process that had that start time."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    st = process_stat(pid)
    if st is None:
        return not os.path.isdir("/proc/self")  # no procfs: kill() is all we know
    if st[1] in ("Z", "X"):
        return False  # exited, waiting to be reaped
    if start_time and st[0] != start_time:
        return False  # the pid was reused
    return True


class Segment:
    """A mapped engine segment and its views (``seg.views``)."""

    def __init__(self, name: str, mm: mmap.mmap, layout: Layout, readonly: bool):
        self.name = name
        self.readonly = readonly
        self.layout = layout
        self._mmap = mm
        self.views = SegmentViews(mm, layout)

    # ------------------------------------------------------------ create --
    @classmethod
    def create(cls, name: str, capacity: int, *, mode: int = 0o600,
               tick_interval_ms: int = 50, endpoint: str = "") -> "Segment":
        """Create the segment of engine ``name``, reclaiming a stale one.

        Raises EngineAlreadyRunning if a live engine owns the name."""
        layout = layout_for(capacity)
        mm = create_exclusive(name, posix_name(name), layout.size, mode, MAGIC)
        seg = cls(name, mm, layout, readonly=False)
        seg._initialise(capacity, tick_interval_ms, endpoint)
        return seg

    def _initialise(self, capacity: int, tick_interval_ms: int, endpoint: str) -> None:
        h = self.views.header
        h.layout_version[0] = LAYOUT_VERSION
        h.capacity[0] = capacity
        h.creator_pid[0] = os.getpid()
        h.creator_start[0] = process_start_time(os.getpid()) or 0
        h.segment_bytes[0] = self.layout.size
        h.created_wall[0] = time.time()
        h.tick_interval_ms[0] = tick_interval_ms
        for b in self.views.buffers:
            b.state.state[:] = 255
        h.write_str("name", self.name)
        h.write_str("endpoint", endpoint)
        h.magic[0] = MAGIC  # last: the segment is now valid

    # ------------------------------------------------------------ attach --
    @classmethod
    def attach(cls, name: str, *, readonly: bool = True) -> "Segment":
        """Map an existing engine segment.  Never resizes it.

        Raises EngineNotRunning if there is none, LayoutMismatch if it was
        written by another layout version."""
        pname = posix_name(name)
        mm, size = map_existing(name, pname, readonly, "engine.shm_mode")
        magic, version, capacity = read_capacity(mm)
        try:
            if magic != MAGIC:
                raise EngineNotRunning(f"engine {name!r} is starting (segment {pname} not initialised)")
            if version != LAYOUT_VERSION:
                raise LayoutMismatch(f"engine {name!r}: segment layout version {version}, "
                                     f"this client reads version {LAYOUT_VERSION}")
            layout = layout_for(capacity)
            if layout.size != size:
                raise LayoutMismatch(f"engine {name!r}: segment is {size} bytes, layout for "
                                     f"capacity {capacity} needs {layout.size}")
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, layout, readonly)

    # ----------------------------------------------------------- release --
    def close(self) -> None:
        """Unmap.  Views handed out earlier must no longer be used."""
        self.views = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                # numpy views still exported (held by a caller); the mapping
                # goes away when the last one is collected.
                pass
            self._mmap = None

    def unlink(self) -> None:
        """Remove the segment name (the creator does this on clean shutdown)."""
        unlink(self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def unlink(name: str) -> bool:
    """Unlink engine ``name``'s segment; False if there was none."""
    return unlink_shm(posix_name(name))


def unlink_shm(pname: str) -> bool:
    """Unlink POSIX shm object ``pname``; False if there was none."""
    try:
        posix_ipc.unlink_shared_memory(pname)
        return True
    except posix_ipc.ExistentialError:
        return False


def create_exclusive(name: str, pname: str, size: int, mode: int, magic: int) -> mmap.mmap:
    """Create shm object ``pname`` (O_CREAT|O_EXCL, exactly ``mode``, ``size``
    zero bytes) and map it read-write, reclaiming a stale one whose header
    starts with ``magic`` (see `_reclaim_if_stale`).  ``name`` is the engine's,
    for messages.  Raises EngineAlreadyRunning if a live engine owns it."""
    for _attempt in range(3):
        try:
            shm = posix_ipc.SharedMemory(pname, posix_ipc.O_CREX, mode=mode, size=size)
        except posix_ipc.ExistentialError:
            _reclaim_if_stale(name, pname, magic)
            continue
        try:
            os.fchmod(shm.fd, mode)  # the umask must not narrow (or widen) the mode
            mm = mmap.mmap(shm.fd, size)
        except BaseException:
            shm.close_fd()
            posix_ipc.unlink_shared_memory(pname)
            raise
        shm.close_fd()
        return mm
    raise EngineAlreadyRunning(f"engine {name!r}: segment {pname} keeps reappearing; "
                               "another engine is starting with the same name")


def map_existing(name: str, pname: str, readonly: bool, mode_key: str) -> tuple[mmap.mmap, int]:
    """Map shm object ``pname`` at its full size; (mapping, size).  Raises
    EngineNotRunning if it does not exist, is not sized yet, or may not be
    mapped (``mode_key`` names the setting that grants access)."""
    try:
        shm = posix_ipc.SharedMemory(pname, 0, read_only=readonly)
    except posix_ipc.ExistentialError as err:
        raise EngineNotRunning(f"engine {name!r} is not running (no segment {pname})") from err
    except posix_ipc.PermissionsError as err:
        raise EngineNotRunning(f"engine {name!r}: no permission to map {pname}"
                               f"{'' if readonly else ' read-write'}; "
                               f"ask for the engine's {mode_key} group access") from err
    try:
        size = shm.size
        if size < 4096:
            raise EngineNotRunning(f"engine {name!r} is starting (segment {pname} not sized yet)")
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        mm = mmap.mmap(shm.fd, size, prot=prot)
    finally:
        shm.close_fd()
    return mm, size


def _reclaim_if_stale(name: str, pname: str, magic: int = MAGIC) -> None:
    """Unlink ``pname`` if its creator is dead; raise if it is alive."""
    try:
        shm = posix_ipc.SharedMemory(pname, 0, read_only=True)
    except posix_ipc.ExistentialError:
        return  # vanished meanwhile: just retry creation
    try:
        size = shm.size
        age = time.time() - os.fstat(shm.fd).st_ctime
        hdr = None
        if size >= 64:
            mm = mmap.mmap(shm.fd, 64, prot=mmap.PROT_READ)
            hdr = np.frombuffer(mm, "<u8", 8).copy()
            mm.close()
    finally:
        shm.close_fd()
    if hdr is None or int(hdr[0]) != magic:
        if age < _CREATION_GRACE_S:
            raise EngineAlreadyRunning(f"engine {name!r} is being created by another process")
        unlink_shm(pname)
        return
    pid, start = int(hdr[2]), int(hdr[3])
    if process_alive(pid, start):
        raise EngineAlreadyRunning(f"engine {name!r} is already running (pid {pid})")
    unlink_shm(pname)
