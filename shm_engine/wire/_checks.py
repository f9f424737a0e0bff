"""The compiled batch check of binary records: GENERATED from
`format.RECORD_RULES` by `shm_engine.wire.rulecode`, which says why and
what `check_records` returns.  Do not edit: run ``python -m shm_engine.wire``
after changing the table."""
# ruff: noqa: E501, UP034 (one condition per rule, as rendered)
# _padded.py sha256 f9bb7c8ff477bb7a

import numpy as np
from numba import njit

from shm_engine.wire._padded import ascii_padded_ok, utf8_padded_ok

NO_FAULT = 13
_INF = np.inf
_BYTE = np.uint64(0xFF)


@njit(cache=True, nogil=True)
def check_records(f8, words, out, decode):
    bad = 0
    for j in range(words.shape[0]):
        if decode and not out[j]:
            continue
        flags = words[j, 10] & _BYTE
        if not ((words[j, 11] & _BYTE != 0 and (ascii_padded_ok(words, j, 11, 19, True) or (decode and utf8_padded_ok(words, j, 11, 19, True))))):  # node id
            fault = 0
        elif not (not flags & 0xc0):  # unknown flag bits
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
        elif not (((-_INF < f8[j, 8] < _INF) if flags & 0x10 else f8[j, 8] == 0)):  # ts
            fault = 10
        elif not (((ascii_padded_ok(words, j, 19, 23, False) or (decode and utf8_padded_ok(words, j, 19, 23, False))) if flags & 0x20 else (words[j, 19] == 0 and words[j, 20] == 0 and words[j, 21] == 0 and words[j, 22] == 0))):  # zone
            fault = 11
        elif not (words[j, 10] & np.uint64(0xffffffffffffff00) == 0 and words[j, 23] == 0):  # reserved bytes
            fault = 12
        else:
            fault = NO_FAULT
        out[j] = 0 if fault == NO_FAULT else fault + 1
        bad += fault != NO_FAULT
    return bad
