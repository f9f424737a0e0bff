"""Compiled checks of NUL-padded text fields of a binary record, read as
8-byte words (the generated batch check, `_checks`, calls them).

A valid field: text, then NUL padding to the end, at least one NUL; the text
is strict UTF-8 (what Python's decoder accepts: no overlong form, surrogate or
code point above U+10FFFF) and holds no NUL; a ``printable`` field holds no
control character either (C0, DEL, C1).  `ascii_padded_ok` decides fields
whose bytes are all below 0x80, eight bytes at a time; `utf8_padded_ok`
decides any field, byte by byte; `ranges_padded_ok` decides a field whose
bytes must lie in given ASCII ranges (the node id), eight bytes at a time.
`resource_names_ok` checks the names of a record's resource entries.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ONE = np.uint64(1)
_BYTE = np.uint64(0xFF)
# Byte-parallel tests on 8-byte words whose bytes are all < 0x80 (checked
# first): adding 0x7f sets a byte's top bit iff the byte is non-zero; no
# addition carries into the next byte.
_HIGH = np.uint64(0x8080808080808080)
_ADD_NZ = np.uint64(0x7F7F7F7F7F7F7F7F)
_ONES = np.uint64(0x0101010101010101)
# The bytes of an ASCII text: printable (no C0 control, no DEL), or any.
_PRINTABLE = ((0x20, 0x7E),)
_ANY_ASCII = ((0x01, 0x7F),)


@njit(cache=True, nogil=True)
def ascii_padded_ok(words, j, first, last, printable):
    """Whether words ``words[j, first:last]`` are a valid field with every
    byte below 0x80 (False for any byte >= 0x80: `utf8_padded_ok` decides)."""
    return ranges_padded_ok(words, j, first, last, _PRINTABLE if printable else _ANY_ASCII)


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
        return False  # no trailing NUL
    for k in range(n + 1, size):
        if _byte_at(words, j, first, k) != 0:
            return False  # a byte after the padding began
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
        lo, hi = 0x80, 0xBF  # the second byte's range
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
            return False  # U+0080..U+009F: C1 controls
        k += need + 1
    return True


@njit(cache=True, nogil=True)
def ranges_padded_ok(words, j, first, last, ranges):
    """Whether words ``words[j, first:last]`` are a valid field whose text
    bytes all lie in ``ranges``, inclusive (lo, hi) byte pairs within
    0x01..0x7f (so the text is ASCII)."""
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
        # Per byte b < 0x80: b + (0x80 - lo) sets the top bit iff b >= lo,
        # b + (0x7f - hi) iff b > hi; neither carries into the next byte.
        inside = np.uint64(0)
        for lo, hi in ranges:
            ge = (w + np.uint64(0x80 - lo) * _ONES) & _HIGH
            gt = (w + np.uint64(0x7F - hi) * _ONES) & _HIGH
            inside |= ge & ~gt
        if nz & ~inside:
            return False
        if nz != _HIGH:
            z = ~nz & _HIGH
            if nz >= (z & (~z + _ONE)):  # a non-zero byte after the first NUL
                return False
            ended = True
    return ended


@njit(cache=True, nogil=True)
def _same_words(words, j, a, b, n):
    for t in range(n):
        if words[j, a + t] != words[j, b + t]:
            return False
    return True


@njit(cache=True, nogil=True)
def resource_names_ok(words, j, first, per, n, decode):
    """Whether the ``n`` resource names of record j (``per`` words each from
    word ``first``) are entries, then empty: each entry a valid field of at
    least one byte (any UTF-8 without NUL; bytes >= 0x80 decided only with
    ``decode``), distinct from the entries before it; each name after the
    first empty one all zero.  (The values are checked by the caller.)"""
    e = 0
    while e < n:
        at = first + e * per
        if words[j, at] & _BYTE == 0:
            break
        if not (
            ascii_padded_ok(words, j, at, at + per, False)
            or (decode and utf8_padded_ok(words, j, at, at + per, False))
        ):
            return False
        for d in range(e):
            if _same_words(words, j, first + d * per, at, per):
                return False
        e += 1
    for k in range(first + e * per, first + n * per):
        if words[j, k]:
            return False
    return True
