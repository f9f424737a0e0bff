"""Acting as another local user, for the tests of what such a user can do.

`as_other_user(fn)` forks, drops to the ``nobody`` user in the child and
runs ``fn()`` there; the child exits 0 if it returned, 1 if it raised (the
exception is printed).  Only root can switch users: `skip_unless_root`
marks the tests that need it, with the reason in the skip message.

The child is a bare ``fork()`` of the test process: it may use only what is
imported already (the interpreter's own library may be unreadable to
``nobody``, e.g. under ``/root``), so ``fn`` sticks to posix_ipc, mmap,
struct and os.  `OTHER_USER` is the user's ``pwd`` entry, None where there
is no ``nobody``.
"""

from __future__ import annotations

import os
import pwd
import select
import time
import traceback
from collections.abc import Callable

import pytest

__all__ = ["OTHER_USER", "as_other_user", "skip_unless_root", "Held"]

try:
    OTHER_USER: pwd.struct_passwd | None = pwd.getpwnam("nobody")
except KeyError:
    OTHER_USER = None

skip_unless_root = pytest.mark.skipif(
    os.geteuid() != 0 or OTHER_USER is None,
    reason="acting as another user (nobody) needs root and a 'nobody' user; "
    "run the suite as root to check what another local user can do",
)


def _become_other_user() -> None:
    assert OTHER_USER is not None
    os.setgroups([])
    os.setgid(OTHER_USER.pw_gid)
    os.setuid(OTHER_USER.pw_uid)


def as_other_user(fn: Callable[[], object], timeout: float = 30.0) -> int:
    """Run ``fn()`` in a forked child as ``nobody``; its exit code (0: fn
    returned).  The child is killed after ``timeout`` seconds."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _become_other_user()
            fn()
            code = 0
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
        finally:
            os._exit(code)
    return _wait(pid, timeout)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise TimeoutError(f"child {pid} acting as another user did not finish in {timeout}s")
        time.sleep(0.01)


class Held:
    """``fn()`` run as ``nobody`` in a forked child that then stays alive
    until `release` (or the end of a ``with`` block), so that what it made
    has a live creator.  `ready` waits until ``fn`` returned."""

    def __init__(self, fn: Callable[[], object]):
        r_ready, w_ready = os.pipe()
        r_go, w_go = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r_ready)
                os.close(w_go)
                _become_other_user()
                fn()
                os.write(w_ready, b"1")
                os.read(r_go, 1)  # until the parent releases (or dies)
                code = 0
            except BaseException:  # noqa: BLE001 - reported through the exit code
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(w_ready)
        os.close(r_go)
        self.pid = pid
        self._ready_fd, self._go_fd = r_ready, w_go

    def ready(self, timeout: float = 30.0) -> None:
        got, _, _ = select.select([self._ready_fd], [], [], timeout)
        if not got or os.read(self._ready_fd, 1) != b"1":
            self.release()
            raise RuntimeError("the child acting as another user failed (see its output)")

    def release(self) -> int:
        if self._go_fd >= 0:
            os.close(self._go_fd)
            os.close(self._ready_fd)
            self._go_fd = -1
            return _wait(self.pid, 30.0)
        return 0

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
