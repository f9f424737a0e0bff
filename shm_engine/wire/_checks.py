"""The compiled batch check of binary records: GENERATED from
`format.RECORD_RULES` by `shm_engine.wire.rulecode`, which says why and
what `check_records` returns.  Do not edit: run ``python -m shm_engine.wire``
after changing the table."""
# ruff: noqa: E501, UP034 (one condition per rule, as rendered)
# _padded.py sha256 82a7331a27a5012e

import numpy as np
from numba import njit

from shm_engine.wire._padded import (ascii_padded_ok, ranges_padded_ok, resource_names_ok,
                                     utf8_padded_ok)

NO_FAULT = 15
_INF = np.inf
_BYTE = np.uint64(0xFF)
_RANGES_node = ((45, 58), (65, 90), (95, 95), (97, 122))


@njit(cache=True, nogil=True)
def check_records(f8, words, out, decode):
    bad = 0
    for j in range(words.shape[0]):
        if decode and not out[j]:
            continue
        flags = words[j, 10] & _BYTE
        if not ((words[j, 11] & _BYTE != 0 and ranges_padded_ok(words, j, 11, 19, _RANGES_node))):  # node id
            fault = 0
        elif not (not flags & 0x00):  # unknown flag bits
            fault = 1
        elif not (0.0 <= f8[j, 0] <= 1.0):  # cpu
            fault = 2
        elif not (0.0 <= f8[j, 1] <= 1.0):  # mem
            fault = 3
        elif not (0.0 <= f8[j, 2] < _INF):  # queue
            fault = 4
        elif not (0.0 <= f8[j, 3] < _INF):  # avg_job_s
            fault = 5
        elif not (((0.0 <= f8[j, 4] < _INF) if flags & 0x01 else f8[j, 4] == 0)):  # throughput
            fault = 6
        elif not (((True) if flags & 0x02 else (words[j, 9] & np.uint64(0xffffffff)) == 0 and (words[j, 9] >> np.uint64(0x20) & np.uint64(0xffffffff)) == 0)):  # ok err
            fault = 7
        elif not (((0.0 <= f8[j, 5] <= 1.0) if flags & 0x04 else f8[j, 5] == 0)):  # io
            fault = 8
        elif not (((0.0 < f8[j, 6] < _INF and 0.0 < f8[j, 7] < _INF and f8[j, 6] <= f8[j, 7]) if flags & 0x08 else f8[j, 6] == 0 and f8[j, 7] == 0)):  # p50_ms p95_ms
            fault = 9
        elif not (((1 <= (words[j, 10] >> np.uint64(0x10) & np.uint64(0xffff)) <= 65535) if flags & 0x40 else (words[j, 10] >> np.uint64(0x10) & np.uint64(0xffff)) == 0)):  # slots
            fault = 10
        elif not (((resource_names_ok(words, j, 24, 2, 8, decode) and ((0.0 <= f8[j, 40] < _INF) if words[j, 24] & _BYTE else f8[j, 40] == 0) and ((0.0 <= f8[j, 41] < _INF) if words[j, 26] & _BYTE else f8[j, 41] == 0) and ((0.0 <= f8[j, 42] < _INF) if words[j, 28] & _BYTE else f8[j, 42] == 0) and ((0.0 <= f8[j, 43] < _INF) if words[j, 30] & _BYTE else f8[j, 43] == 0) and ((0.0 <= f8[j, 44] < _INF) if words[j, 32] & _BYTE else f8[j, 44] == 0) and ((0.0 <= f8[j, 45] < _INF) if words[j, 34] & _BYTE else f8[j, 45] == 0) and ((0.0 <= f8[j, 46] < _INF) if words[j, 36] & _BYTE else f8[j, 46] == 0) and ((0.0 <= f8[j, 47] < _INF) if words[j, 38] & _BYTE else f8[j, 47] == 0)) if flags & 0x80 else (words[j, 24] == 0 and words[j, 25] == 0 and words[j, 26] == 0 and words[j, 27] == 0 and words[j, 28] == 0 and words[j, 29] == 0 and words[j, 30] == 0 and words[j, 31] == 0 and words[j, 32] == 0 and words[j, 33] == 0 and words[j, 34] == 0 and words[j, 35] == 0 and words[j, 36] == 0 and words[j, 37] == 0 and words[j, 38] == 0 and words[j, 39] == 0 and f8[j, 40] == 0 and f8[j, 41] == 0 and f8[j, 42] == 0 and f8[j, 43] == 0 and f8[j, 44] == 0 and f8[j, 45] == 0 and f8[j, 46] == 0 and f8[j, 47] == 0))):  # resources
            fault = 11
        elif not (((-_INF < f8[j, 8] < _INF) if flags & 0x10 else f8[j, 8] == 0)):  # ts
            fault = 12
        elif not (((ascii_padded_ok(words, j, 19, 23, False) or (decode and utf8_padded_ok(words, j, 19, 23, False))) if flags & 0x20 else (words[j, 19] == 0 and words[j, 20] == 0 and words[j, 21] == 0 and words[j, 22] == 0))):  # zone
            fault = 13
        elif not (words[j, 10] & np.uint64(0xffffffff0000ff00) == 0 and words[j, 23] == 0):  # reserved bytes
            fault = 14
        else:
            fault = NO_FAULT
        out[j] = 0 if fault == NO_FAULT else fault + 1
        bad += fault != NO_FAULT
    return bad
