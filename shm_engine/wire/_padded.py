"""Compiled checks of one NUL-padded text field of a binary record, read as
8-byte words (the generated batch check, `_checks`, calls them).

A valid field: text, then NUL padding to the end, at least one NUL; the text
is strict UTF-8 (what Python's decoder accepts: no overlong form, surrogate or
code point above U+10FFFF) and holds no NUL; a ``printable`` field holds no
control character either (C0, DEL, C1).  `ascii_padded_ok` decides fields
whose bytes are all below 0x80, eight bytes at a time; `utf8_padded_ok`
decides any field, byte by byte.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ONE = np.uint64(1)
_BYTE = np.uint64(0xFF)
# Byte-parallel tests on 8-byte words whose bytes are all < 0x80 (checked
# first): adding 0x7f sets a byte's top bit iff the byte is non-zero, adding
# 0x60 iff it is >= 0x20, adding 0x01 iff it is 0x7f; no addition carries
# into the next byte.
_HIGH = np.uint64(0x8080808080808080)
_ADD_NZ = np.uint64(0x7F7F7F7F7F7F7F7F)
_ADD_SP = np.uint64(0x6060606060606060)
_ADD_DEL = np.uint64(0x0101010101010101)


@njit(cache=True, nogil=True)
def ascii_padded_ok(words, j, first, last, printable):
    """Whether words ``words[j, first:last]`` are a valid field with every
    byte below 0x80 (False for any byte >= 0x80: `utf8_padded_ok` decides)."""
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
def _byte_at(words, j, first, k):
    return np.int64((words[j, first + (k >> 3)] >> np.uint64(8 * (k & 7))) & _BYTE)


@njit(cache=True, nogil=True)
def utf8_padded_ok(words, j, first, last, printable):
    """Whether words ``words[j, first:last]`` are a valid field."""
    size = (last - first) * 8
    n = 0
    while n < size and _byte_at(words, j, first, n) != 0:
        n += 1
    if n == size:
        return False                          # no trailing NUL
    for k in range(n + 1, size):
        if _byte_at(words, j, first, k) != 0:
            return False                      # a byte after the padding began
    k = 0
    while k < n:
        c = _byte_at(words, j, first, k)
        if c < 0x80:
            if printable and (c < 0x20 or c == 0x7F):
                return False
            k += 1
            continue
        if c < 0xC2 or c > 0xF4:
            return False
        need = 1 if c < 0xE0 else 2 if c < 0xF0 else 3
        if k + need >= n:
            return False
        lo, hi = 0x80, 0xBF                   # the second byte's range
        if c == 0xE0:
            lo = 0xA0
        elif c == 0xED:
            hi = 0x9F
        elif c == 0xF0:
            lo = 0x90
        elif c == 0xF4:
            hi = 0x8F
        b1 = _byte_at(words, j, first, k + 1)
        if b1 < lo or b1 > hi:
            return False
        for t in range(2, need + 1):
            if _byte_at(words, j, first, k + t) & 0xC0 != 0x80:
                return False
        if printable and c == 0xC2 and b1 < 0xA0:
            return False                      # U+0080..U+009F: C1 controls
        k += need + 1
    return True
