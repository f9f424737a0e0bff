"""Compiled whole-batch check of binary heartbeat records (`binary.batch_faults`).

GENERATED from `format.RECORD_RULES` by `shm_engine.wire.rulecode`: do not
edit; run ``python -m shm_engine.wire.rulecode`` after changing the table.

Why a kernel: the rules as a dozen numpy whole-batch operations cost about
0.2 ms per 1000 records; one pass over each record in compiled code costs a
few microseconds.  It lives apart from the rest of the wire package so that
senders, which import the package for its encoders, never import numba.

Contract of `check_records`: ``out[j]`` is 0 when record j passes every
rule, else 1 + the index in RECORD_RULES of the first rule it breaks,
exactly as `binary.record_fault` finds it (test_wire and test_wire_fastpath
check the two agree on hostile records).
"""

import numpy as np
from numba import njit

from shm_engine.wire._padded import ascii_padded_ok, utf8_padded_ok

NO_FAULT = 13
_INF = np.inf
_BYTE = np.uint64(0xFF)


@njit(cache=True, nogil=True)
def _check(f8, words, out, decode):
    """Each record's fault into ``out``; returns how many are invalid.  Without
    ``decode``, a text field with a byte >= 0x80 counts as broken (deciding it
    takes the byte-by-byte decoder, which few records need); with it, only
    the records ``out`` marks are checked again.  The rules are written out
    in the loop: a call per record (numba passes arrays with reference
    counting) would cost more than the rules."""
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


def check_records(f8, words, out):
    """Check n records given as float64 and uint64 (n, 24) views of the
    same bytes; ``out`` (n,) uint8 receives each record's fault.  Returns
    how many records are invalid."""
    bad = _check(f8, words, out, False)
    return _check(f8, words, out, True) if bad else bad
