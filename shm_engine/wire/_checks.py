"""Compiled whole-batch check for binary heartbeat records (`wire._all_valid`).

Why a kernel: the same rules as a dozen numpy whole-batch operations cost
about 0.2 ms per 1000 records (each operation allocates a temporary and
walks the batch again); one pass over each 192-byte record in compiled code
costs a few microseconds.  It lives apart from `shm_engine.wire` so that
senders, which import the wire module for its encoders, do not import numba.

Contract: `all_valid_records` says True only if every record passes every
rule of `wire._validate_binary`; it may say False for valid records (ids or
zones with bytes >= 0x80, which need a real UTF-8 decode), and the caller
then runs the rule-by-rule check.  test_wire checks the two agree.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.params import HAS_IO, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT

# Flag bits as uint64, so no operation mixes signed and unsigned (which numba
# would widen to float64).  HAS_TS and HAS_ZONE as in `wire`.
_TP, _OKERR, _IO, _TAIL = (np.uint64(b) for b in (HAS_THROUGHPUT, HAS_OKERR, HAS_IO, HAS_TAIL))
_TS, _ZONE = np.uint64(16), np.uint64(32)
_UNKNOWN_FLAGS = np.uint64(0xFF ^ (HAS_THROUGHPUT | HAS_OKERR | HAS_IO | HAS_TAIL | 16 | 32))
_INF = np.inf


@njit(cache=True, nogil=True)
def _unit(x):
    return 0.0 <= x <= 1.0          # False for NaN


@njit(cache=True, nogil=True)
def _nonneg(x):
    return 0.0 <= x < _INF          # False for NaN and inf


# Byte-parallel tests on 8-byte words whose bytes are all < 0x80 (checked
# first): adding 0x7f sets a byte's top bit iff the byte is non-zero, adding
# 0x60 iff it is >= 0x20, adding 0x01 iff it is 0x7f; no addition carries
# into the next byte.
_HIGH = np.uint64(0x8080808080808080)
_ADD_NZ = np.uint64(0x7F7F7F7F7F7F7F7F)
_ADD_SP = np.uint64(0x6060606060606060)
_ADD_DEL = np.uint64(0x0101010101010101)
_ONE = np.uint64(1)
_LOW_BYTE = np.uint64(0xFF)
_EIGHT = np.uint64(8)


@njit(cache=True, nogil=True)
def _padded_ok(words, j, first, last, printable):
    """Words ``words[j, first:last]`` as a NUL-padded field: every byte < 0x80,
    non-zero bytes then NULs only, the last byte NUL; with ``printable`` no
    byte in 1..0x1f or 0x7f either.  An all-NUL field passes."""
    ended = False
    for k in range(first, last):
        w = words[j, k]
        if ended:
            if w:
                return False
            continue
        if w & _HIGH:
            return False
        nz = (w + _ADD_NZ) & _HIGH
        if printable and ((~(w + _ADD_SP) & nz) or ((w + _ADD_DEL) & _HIGH)):
            return False
        if nz != _HIGH:
            z = ~nz & _HIGH
            if nz >= (z & (~z + _ONE)):   # a non-zero byte after the first NUL
                return False
            ended = True
    return ended


@njit(cache=True, nogil=True)
def all_valid_records(f8, words):
    """True iff every record passes the rules (see the module docstring).

    ``f8`` and ``words``: float64 and uint64 views (n, 24) of the same n
    records in the wire layout.  n may be 0 (True)."""
    for j in range(words.shape[0]):
        flags = words[j, 10] & _LOW_BYTE
        if flags & _UNKNOWN_FLAGS:
            return False
        if words[j, 10] >> _EIGHT or words[j, 23]:       # reserved bytes 81..87, 184..191
            return False
        if not (_unit(f8[j, 0]) and _unit(f8[j, 1]) and _nonneg(f8[j, 2])
                and _nonneg(f8[j, 3])):
            return False
        # An absent optional value must be exactly 0.0 (NaN != 0.0).
        if flags & _TP:
            if not _nonneg(f8[j, 4]):
                return False
        elif f8[j, 4] != 0.0:
            return False
        if flags & _IO:
            if not _unit(f8[j, 5]):
                return False
        elif f8[j, 5] != 0.0:
            return False
        p50 = f8[j, 6]
        p95 = f8[j, 7]
        if flags & _TAIL:
            if not (0.0 < p50 < _INF and p50 <= p95 < _INF):
                return False
        elif p50 != 0.0 or p95 != 0.0:
            return False
        ts = f8[j, 8]
        if flags & _TS:
            if not -_INF < ts < _INF:
                return False
        elif ts != 0.0:
            return False
        if not flags & _OKERR and words[j, 9] != 0:   # ok, err: bytes 72..79
            return False
        if not words[j, 11] & _LOW_BYTE or not _padded_ok(words, j, 11, 19, True):
            return False                             # node: bytes 88..151
        if flags & _ZONE:
            if not _padded_ok(words, j, 19, 23, False):
                return False                         # zone: bytes 152..183
        elif words[j, 19] or words[j, 20] or words[j, 21] or words[j, 22]:
            return False
    return True
