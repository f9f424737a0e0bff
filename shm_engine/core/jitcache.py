"""Where numba caches compiled code, when its own choices are all read-only.

Every compiled function of the project is declared ``@njit(cache=True)``.
Numba looks for a writable cache directory when the *declaration* runs (at
import): ``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` beside the source
file, else the user's cache directory (``~/.cache/numba``).  If none is
writable -- a package installed read-only, a service user with a read-only
or missing home -- the import fails with numba's "cannot cache function ...:
no locator available".  A scheduler that only wants to read scores must not
fail that way.

`ensure` (run once, when ``shm_engine.core`` is imported, so before any
declaration of ours) checks the same places numba does, with the same test
(create the directory, write a temporary file in it).  Only if none of them
is writable does it point numba at a directory of this user under the
system's temporary directory, ``<tmp>/shm-engine-numba-<uid>`` (created
0700; one that is not a private directory of this user is never used), or a
fresh ``mkdtemp`` directory failing that.  It sets ``NUMBA_CACHE_DIR`` in
``os.environ`` (numba re-reads it when it compiles, and child processes
inherit it) and in ``numba.core.config`` if numba is loaded already.  It
never imports numba itself: a heartbeat sender does not load it.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile

__all__ = ["ensure", "PRIVATE_PREFIX"]

PRIVATE_PREFIX = "shm-engine-numba-"
# The packages whose modules declare cached functions (relative to the root
# that holds shm_engine).
_PACKAGES = (
    "kernels",
    "shm_engine/core",
    "shm_engine/wire",
    "shm_engine/ingest",
    "shm_engine/tick",
    "clients",
)
_done = False


def _writable(path: str) -> bool:
    """Numba's own test: the directory can be created and written."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _user_cache_dir() -> str:
    # numba's appdirs on Linux: $XDG_CACHE_HOME or ~/.cache, then "numba".
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "numba")


def _private_dir() -> str | None:
    """``<tmp>/shm-engine-numba-<uid>`` if it is (or can be made) a
    directory of this user that no one else can write; else a new
    ``mkdtemp`` directory; None if the temporary directory is not writable."""
    path = os.path.join(tempfile.gettempdir(), f"{PRIVATE_PREFIX}{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
        if (
            stat.S_ISDIR(st.st_mode)
            and st.st_uid == os.geteuid()
            and not st.st_mode & 0o022
            and _writable(path)
        ):
            return path
        return tempfile.mkdtemp(prefix=PRIVATE_PREFIX)
    except OSError:
        return None


def ensure() -> str | None:
    """Point numba at a private cache directory if none of its own is
    writable for our packages; the directory chosen, or None if numba's own
    choice stands.  Idempotent.  Raises ImportError, naming the fix, if no
    directory at all can be written."""
    global _done
    if _done:
        return None
    _done = True
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    configured = os.environ.get("NUMBA_CACHE_DIR", "")
    if configured and _writable(configured):
        return None
    in_tree = all(
        _writable(os.path.join(root, pkg, "__pycache__"))
        for pkg in _PACKAGES
        if os.path.isdir(os.path.join(root, pkg))
    )
    if in_tree or _writable(_user_cache_dir()):
        return None
    path = _private_dir()
    if path is None:
        raise ImportError(
            "no writable directory for numba's compiled-code cache "
            f"(NUMBA_CACHE_DIR={configured!r}, the package's __pycache__, "
            f"{_user_cache_dir()}, {tempfile.gettempdir()}): set NUMBA_CACHE_DIR "
            "to a directory this user can write"
        )
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None:
        # numba's config module sets its attributes at import; its stubs do not list them
        config.CACHE_DIR = path  # type: ignore[attr-defined]
    return path
