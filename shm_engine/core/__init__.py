"""core: layout, segments, ordering, latch, rows, registry, configuration.

Imported before any module that declares a compiled function, so it first
makes sure numba has a writable cache directory (`jitcache`): a reader
installed read-only, run by a user without a writable home, must still
import.
"""

from shm_engine.core import jitcache as _jitcache

_jitcache.ensure()
