"""Creating, attaching and removing an engine's POSIX shared-memory segments.

An engine has three: the scores segment ``/NAME`` (`Segment`), the claims
segment ``/NAME.claims`` (`shm_engine.core.claims.ClaimsSegment`) and the
event log ``/NAME.events`` (`shm_engine.core.events.EventSegment`), the
last two built on the helpers here: `create_exclusive`, `map_existing`.

Invariants:
- The supervisor is the only creator.  It creates with O_CREAT|O_EXCL, so two
  engines can never share a name; a segment whose creator is dead (pid gone,
  a zombie, or the pid now belongs to another process) is stale and is
  reclaimed.
- The creator writes ``magic`` last: a segment without it is still being
  created (or its creator died during creation, which the age check handles).
- Nothing unlinks a segment implicitly.  `Segment.unlink()` is called by the
  supervisor on clean shutdown; attached processes only ``close()``.  A
  creation that fails part-way unlinks what it made: no half-made segment
  (one without ``magic``) is left behind.
- Trust: a segment is the engine's only if it is owned by the engine's user
  and no one else may write it (the scores segment: neither group nor
  others; the claims segment: others never, the group when ``[claims]
  shm_mode`` says so: `SCORES_FORBIDDEN`, `CLAIMS_FORBIDDEN`).  Attach checks
  both on the descriptor it maps (``fstat``: what is checked is what is
  mapped), against the expected owner (default: the caller's effective uid;
  ``owner=`` for an engine that runs as another user).  Creation refuses a name held by a
  segment that fails the same check instead of taking it for an engine:
  another user can create ``/dev/shm/NAME`` first, but never make the
  engine or its readers use it.

Rules for callers: keep the `Segment` (and so its mmap) alive while any numpy
view of it is in use; attach with `Segment.attach`, which never resizes.  We do
not use ``multiprocessing.shared_memory``: its resource tracker unlinks
segments when an attached process exits.
"""

from __future__ import annotations

import mmap
import os
import pwd
import re
import stat
import time
from contextlib import contextmanager
from typing import Any

import numpy as np
import posix_ipc

from shm_engine.core.errors import (
    EngineAlreadyRunning,
    EngineNotRunning,
    LayoutMismatch,
    UntrustedSegment,
)
from shm_engine.core.layout import (
    ENDPOINT_BYTES,
    LAYOUT_VERSION,
    MAGIC,
    MIRROR_LAYOUT_VERSION,
    MIRROR_MAGIC,
    Layout,
    MirrorViews,
    SegmentViews,
    layout_for,
    mirror_layout_for,
    read_capacity,
    write_place_resources,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
# A segment without magic younger than this is assumed to be mid-creation.
_CREATION_GRACE_S = 5.0


CLAIMS_SUFFIX = ".claims"
EVENTS_SUFFIX = ".events"  # the event log (shm_engine.core.events)
MIRROR_SUFFIX = ".mirror"  # a mirror's zones and excluded slots (shm_engine.feed.mirror)
# Where Linux shows POSIX shm objects (to name the owner of one we may not open).
_SHM_DIR = "/dev/shm"

#: Mode bits the scores segment may never have: only the engine writes it.
SCORES_FORBIDDEN = 0o022
#: Mode bits the claims segment may never have: schedulers write it, and may
#: be a group (group write), never every user.
CLAIMS_FORBIDDEN = 0o002


def mode_problem(mode: int, forbidden: int) -> str | None:
    """Why ``mode`` may not be the mode of a segment whose ``forbidden``
    write bits are given (`SCORES_FORBIDDEN`, `CLAIMS_FORBIDDEN`), as the
    end of a sentence; None if it may."""
    if mode & 0o600 != 0o600 or mode & ~0o666:
        return (
            "must include owner read+write (0o600) and no bits outside 0o666 "
            "(no execute, setuid, setgid or sticky)"
        )
    if mode & forbidden & 0o002:
        return "gives every user write access: anyone could forge what readers see"
    if mode & forbidden & 0o020:
        return (
            "gives the group write access: only the engine writes this segment "
            "(readers need read access only, e.g. 0o640)"
        )
    return None


def expected_uid(owner: int | str | None) -> int:
    """The uid an engine's segments must belong to: ``owner`` (a uid or a
    user name), or this process's effective uid when None."""
    if owner is None:
        return os.geteuid()
    if isinstance(owner, int) and not isinstance(owner, bool) and owner >= 0:
        return owner
    if isinstance(owner, str):
        try:
            return pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise ValueError(f"owner {owner!r}: no such user") from None
    raise ValueError(f"owner must be a uid (int >= 0), a user name or None, got {owner!r}")


def describe_user(uid: int) -> str:
    """``uid 65534 (nobody)``, or ``uid N`` for a uid without a name."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def posix_name(name: str) -> str:
    """The POSIX shm name of engine ``name`` (``/dev/shm/<name>`` on Linux)."""
    if not _NAME_RE.match(name) or name.endswith((CLAIMS_SUFFIX, EVENTS_SUFFIX)):
        raise ValueError(
            f"engine name {name!r} must be 1-200 characters of A-Z a-z 0-9 _ . - "
            f"not ending in {CLAIMS_SUFFIX!r} or {EVENTS_SUFFIX!r}"
        )
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
    fields = stat[stat.rindex(b")") + 2 :].split()
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


class MappedSegment:
    """What both segments of an engine share: the mapping and its lifetime.

    Subclasses set ``views`` (numpy views into the mapping) and name their
    POSIX name in ``pname``; ``close`` drops the views and unmaps, ``unlink``
    removes the name."""

    views: Any  # each subclass's own views type

    def __init__(
        self, name: str, pname: str, mm: mmap.mmap, readonly: bool, owner_uid: int | None
    ) -> None:
        self.name = name
        self.pname = pname
        self.readonly = readonly
        #: The user the segment was checked to belong to.
        self.owner_uid = os.geteuid() if owner_uid is None else owner_uid
        self._mmap: mmap.mmap | None = mm

    def close(self) -> None:
        """Unmap.  Views handed out earlier must no longer be used."""
        # Typed as open: a closed segment is never read again, so its users
        # need no None check; dropping the views releases the mapping.
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
        unlink_shm(self.pname)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Segment(MappedSegment):
    """A mapped engine segment and its views (``seg.views``)."""

    views: SegmentViews

    def __init__(
        self, name: str, mm: mmap.mmap, layout: Layout, readonly: bool, owner_uid: int | None = None
    ):
        super().__init__(name, posix_name(name), mm, readonly, owner_uid)
        self.layout = layout
        self.views = SegmentViews(mm, layout)

    # ------------------------------------------------------------ create --
    @classmethod
    def create(
        cls,
        name: str,
        capacity: int,
        *,
        mode: int = 0o600,
        tick_interval_ms: int = 50,
        endpoint: str = "",
        resources: tuple[tuple[str, int], ...] = (),
        placement: str = "",
    ) -> Segment:
        """Create the segment of engine ``name``, reclaiming a stale one.

        Raises EngineAlreadyRunning if a live engine owns the name,
        UntrustedSegment if a segment that is not this user's holds it,
        ValueError for a bad mode or endpoint (nothing created).
        ``resources``: the placement resources as (name, scale) pairs
        (``[placement] resources``; none: the ingest keeps no capacity);
        ``placement``: the ``[placement]`` section as JSON, for schedulers."""
        layout = layout_for(capacity)
        if len(endpoint.encode("utf-8")) >= ENDPOINT_BYTES:
            raise ValueError(f"endpoint {endpoint!r} is longer than {ENDPOINT_BYTES - 1} bytes")
        pname = posix_name(name)
        mm = create_exclusive(name, pname, layout.size, mode, MAGIC, SCORES_FORBIDDEN)
        seg = cls(name, mm, layout, readonly=False)
        with unlink_on_error(seg, pname):
            seg._initialise(capacity, tick_interval_ms, endpoint, resources, placement)
        return seg

    def _initialise(
        self,
        capacity: int,
        tick_interval_ms: int,
        endpoint: str,
        resources: tuple[tuple[str, int], ...] = (),
        placement: str = "",
    ) -> None:
        h = self.views.header
        stamp_identity(h, LAYOUT_VERSION, capacity, self.layout.size)
        h.tick_interval_ms[0] = tick_interval_ms
        for b in self.views.buffers:
            b.state.state[:] = 255
        h.write_str("name", self.name)
        h.write_str("endpoint", endpoint)
        write_place_resources(h, resources)
        h.write_str("place_config", placement)
        h.magic[0] = MAGIC  # last: the segment is now valid

    # ------------------------------------------------------------ attach --
    @classmethod
    def attach(cls, name: str, *, readonly: bool = True, owner: int | str | None = None) -> Segment:
        """Map an existing engine segment.  Never resizes it.

        ``owner``: the engine's user (uid or name; default: this process's
        effective uid).  Raises EngineNotRunning if there is none,
        UntrustedSegment if it belongs to another user or others may write
        it, LayoutMismatch if it was written by another layout version."""
        pname = posix_name(name)
        uid = expected_uid(owner)
        mm, size = map_existing(name, pname, readonly, "engine.shm_mode", uid, SCORES_FORBIDDEN)
        try:
            capacity = check_identity(name, pname, mm, MAGIC, LAYOUT_VERSION, "segment")
            layout = layout_for(capacity)
            if layout.size != size:
                raise LayoutMismatch(
                    f"engine {name!r}: segment is {size} bytes, layout for "
                    f"capacity {capacity} needs {layout.size}"
                )
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, layout, readonly, uid)


def stamp_identity(h, layout_version: int, capacity: int, size: int) -> None:
    """Write the identity fields every segment header starts with (version,
    capacity, creator pid and start time, size, creation time) into header
    ``h`` of a segment this process just created; the caller writes
    ``magic`` last, once the rest of its header is written."""
    h.layout_version[0] = layout_version
    h.capacity[0] = capacity
    h.creator_pid[0] = os.getpid()
    h.creator_start[0] = process_start_time(os.getpid()) or 0
    h.segment_bytes[0] = size
    h.created_wall[0] = time.time()


def check_identity(
    name: str, pname: str, mm: mmap.mmap, want_magic: int, want_version: int, what: str
) -> int:
    """The capacity in the header of mapping ``mm`` (engine ``name``'s
    ``pname``) once its magic and layout version are those expected.
    Raises EngineNotRunning before the creator has finished it (no magic
    yet), LayoutMismatch for another layout version."""
    magic, version, capacity = read_capacity(mm)
    if magic != want_magic:
        raise EngineNotRunning(f"engine {name!r} is starting (segment {pname} not initialised)")
    if version != want_version:
        raise LayoutMismatch(
            f"engine {name!r}: {what} layout version {version}, "
            f"this client reads version {want_version}"
        )
    return capacity


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


@contextmanager
def unlink_on_error(seg, pname: str):
    """``with unlink_on_error(seg, pname):`` the initialisation of segment
    ``seg`` just created as ``pname``; if it raises, ``seg`` is closed and
    ``pname`` unlinked, so no half-made segment stays behind."""
    try:
        yield seg
    except BaseException:
        seg.close()
        unlink_shm(pname)
        raise


def create_exclusive(
    name: str, pname: str, size: int, mode: int, magic: int, forbidden: int
) -> mmap.mmap:
    """Create shm object ``pname`` (O_CREAT|O_EXCL, exactly ``mode``, ``size``
    zero bytes) and map it read-write, reclaiming a stale one whose header
    starts with ``magic`` (see `_reclaim_if_stale`).  ``name`` is the engine's,
    for messages; ``forbidden``: the mode bits this segment may never have.

    Raises ValueError for a bad ``mode``, EngineAlreadyRunning if a live
    engine owns the name, UntrustedSegment if a segment that fails the trust
    check (module docstring) holds it."""
    problem = mode_problem(mode, forbidden)
    if problem is not None:
        raise ValueError(f"engine {name!r}: mode {mode:#o} for {pname} {problem}")
    for _attempt in range(3):
        try:
            shm = posix_ipc.SharedMemory(pname, posix_ipc.O_CREX, mode=mode, size=size)
        except posix_ipc.ExistentialError:
            _reclaim_if_stale(name, pname, magic, forbidden)
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
    raise EngineAlreadyRunning(
        f"engine {name!r}: segment {pname} keeps reappearing; "
        "another engine is starting with the same name"
    )


def map_existing(
    name: str, pname: str, readonly: bool, mode_key: str, owner_uid: int, forbidden: int
) -> tuple[mmap.mmap, int]:
    """Map shm object ``pname`` at its full size; (mapping, size), after the
    trust check (module docstring): owned by ``owner_uid``, none of the
    ``forbidden`` mode bits.  Raises UntrustedSegment if it fails it,
    EngineNotRunning if it does not exist, is not sized yet, or may not be
    mapped (``mode_key`` names the setting that grants access)."""
    try:
        shm = posix_ipc.SharedMemory(pname, 0, read_only=readonly)
    except posix_ipc.ExistentialError as err:
        raise EngineNotRunning(f"engine {name!r} is not running (no segment {pname})") from err
    except posix_ipc.PermissionsError as err:
        st = _stat_by_name(pname)
        if st is not None:
            _check_trust(name, pname, st, owner_uid, forbidden, attach=True)
        raise EngineNotRunning(
            f"engine {name!r}: no permission to map {pname}"
            f"{'' if readonly else ' read-write'}; "
            f"ask for the engine's {mode_key} group access"
        ) from err
    try:
        _check_trust(name, pname, os.fstat(shm.fd), owner_uid, forbidden, attach=True)
        size = shm.size
        if size < 4096:
            raise EngineNotRunning(f"engine {name!r} is starting (segment {pname} not sized yet)")
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        mm = mmap.mmap(shm.fd, size, prot=prot)
    finally:
        shm.close_fd()
    return mm, size


def _stat_by_name(pname: str) -> os.stat_result | None:
    """``stat`` of shm object ``pname`` by its path (Linux), for one we may
    not open; None where there is no such path."""
    try:
        return os.stat(_SHM_DIR + pname)
    except OSError:
        return None


def _check_trust(
    name: str, pname: str, st: os.stat_result, owner_uid: int, forbidden: int, *, attach: bool
) -> None:
    """Raise UntrustedSegment unless ``st`` (of ``pname``) is owned by
    ``owner_uid`` and has none of the ``forbidden`` mode bits."""
    mode = stat.S_IMODE(st.st_mode)
    who = f"segment {pname} (owner {describe_user(st.st_uid)}, mode {mode:#o})"
    if st.st_uid != owner_uid:
        expected = describe_user(owner_uid)
        if attach:
            raise UntrustedSegment(
                f"engine {name!r}: {who} does not belong to {expected}, the engine user "
                "expected; refusing to read it. If the engine runs as that user, attach with "
                "owner= that user (status, top, metrics: --owner); otherwise another user "
                f"created it: remove {_SHM_DIR}{pname}"
            )
        raise UntrustedSegment(
            f"engine {name!r}: the name is taken by {who}, not by {expected} (this engine's "
            f"user): another user created it first. Remove {_SHM_DIR}{pname} if it is not "
            "an engine of yours, or choose another --name"
        )
    if mode & forbidden:
        raise UntrustedSegment(
            f"engine {name!r}: {who} may be written by "
            f"{'every user' if mode & forbidden & 0o002 else 'its group'}, so its contents "
            f"cannot be trusted; stop its engine and remove {_SHM_DIR}{pname}"
        )


def _reclaim_if_stale(name: str, pname: str, magic: int, forbidden: int) -> None:
    """Unlink ``pname`` if it is this user's and its creator is dead; raise
    if its creator is alive, or if it is not this user's (`_check_trust`)."""
    try:
        shm = posix_ipc.SharedMemory(pname, 0, read_only=True)
    except posix_ipc.ExistentialError:
        return  # vanished meanwhile: just retry creation
    except posix_ipc.PermissionsError as err:
        st = _stat_by_name(pname)
        if st is not None:
            _check_trust(name, pname, st, os.geteuid(), forbidden, attach=False)
        raise UntrustedSegment(
            f"engine {name!r}: the name is taken by segment {pname}, "
            "which this user may not even read; another user created "
            "it first"
        ) from err
    try:
        _check_trust(name, pname, os.fstat(shm.fd), os.geteuid(), forbidden, attach=False)
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


def is_mirror(seg: Segment) -> bool:
    """Whether scores segment ``seg`` is a mirror's (``shm-engine
    mirror``): its mirror segment ``/NAME.mirror`` exists and was made by
    the process that made ``seg`` (one left by a killed mirror, under a
    name an engine has taken since, is not its)."""
    pname = posix_name(seg.name) + MIRROR_SUFFIX
    try:
        mm, _size = map_existing(
            seg.name, pname, True, "engine.shm_mode", seg.owner_uid, SCORES_FORBIDDEN
        )
    except EngineNotRunning:
        return False
    try:
        try:
            capacity = check_identity(
                seg.name, pname, mm, MIRROR_MAGIC, MIRROR_LAYOUT_VERSION, "mirror"
            )
        except (EngineNotRunning, LayoutMismatch):
            return False
        views = MirrorViews(mm, mirror_layout_for(capacity))
        made_by = (int(views.header.creator_pid[0]), int(views.header.creator_start[0]))
        del views  # no view may outlive the mapping it closes below
        h = seg.views.header
        return made_by == (int(h.creator_pid[0]), int(h.creator_start[0]))
    finally:
        mm.close()
