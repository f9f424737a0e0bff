"""Steps 13-14 of SCORING.md: the published score and the ranking.

`published(state, s)` is s for HEALTHY/DEGRADED nodes and 0 otherwise.
The ranking is every slot with score > 0, by score descending and then slot
ascending.  The key (score, slot) is unique, so any correct sort gives the
one valid order.

`radix_ranked(score, ranked, m, scratch)` sorts the candidates, which the
caller leaves in ``ranked[:m]`` in ascending slot order: a radix sort on the
score's IEEE-754 bits, O(m) whatever the previous order.  Every candidate's
score is > 0 (and finite), and the bits of positive doubles order like
unsigned integers, so the key ``~bits`` ascending is score descending; the
candidates arrive in slot order and every step is stable, so ties stay by
slot ascending.  One counting pass on a first digit of about log2(m) bits,
taken from ``key - min(key)`` so that it spreads over the keys' actual
range, leaves each key in its bucket (a few keys each, for scores spread
over [0, 1]); then one insertion sort over the whole range finishes when no
bucket is larger than `RADIX_SMALL`, and otherwise each larger bucket gets
an LSD radix sort of its low bits (so ties and tight clusters stay O(m) per
pass).  An LSD sort over every digit (5 or 6 passes of 11 bits) took about
3x as long at 10K candidates.  All scratch comes from a `RankScratch`
(`make_rank_scratch(capacity)`, part of the tick's scratch), so it
allocates nothing.  It is the only sort: the tests check it against
numpy's lexsort on (slot, -score).

Comparisons take scalars (score, slot) rather than the arrays: numba would
incref/decref an array argument on every call, which used to cost more than
the comparison itself.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from kernels.params import DEGRADED

_SHORT = 16


@njit(cache=True, error_model="numpy")
def published(state, s):
    """Step 13: the desirability a scheduler sees."""
    return s if state <= DEGRADED else 0.0


@njit(cache=True, error_model="numpy")
def _before(sa, a, sb, b):
    """Slot a (score sa) ranks before slot b (score sb)."""
    return sa > sb or (sa == sb and a < b)


@njit(cache=True, error_model="numpy")
def _insertion(score, idx, lo, hi):
    for i in range(lo + 1, hi):
        v = idx[i]
        sv = score[v]
        j = i - 1
        while j >= lo:
            u = idx[j]
            if not _before(sv, v, score[u], u):
                break
            idx[j + 1] = u
            j -= 1
        idx[j + 1] = v


# The first (most significant) digit gets ceil(log2(m)) bits, at least
# RADIX_MIN_BITS and at most RADIX_MAX_BITS (the histogram has 2**bits int32
# entries), so a bucket holds about one key when the keys spread evenly
# (measured: 13 or 14 bits at 10K candidates, and 20 at 1M, beat wider and
# narrower digits).  Buckets up
# to RADIX_SMALL keys are finished by insertion sort, larger ones by an LSD
# radix sort on the bits below the digit, RADIX_SUB_BITS at a time.
RADIX_MAX_BITS = 20
RADIX_MIN_BITS = 8
RADIX_SMALL = 48
RADIX_SUB_BITS = 8
# Kept for callers that pick test sizes around a digit-width boundary: from
# this many candidates on the first digit is wider than RADIX_MIN_BITS.
RADIX_WIDE_FROM = 1 << RADIX_MIN_BITS


class RankScratch(NamedTuple):
    """Work arrays of `radix_ranked`, allocated once per capacity."""

    keys: np.ndarray  # u8[capacity]
    keys_tmp: np.ndarray  # u8[capacity]
    idx_tmp: np.ndarray  # i4[capacity]
    hist: np.ndarray  # i4[2**b]: the first digit's buckets
    sub_hist: np.ndarray  # i4[2**RADIX_SUB_BITS]: one pass of a large bucket's sort


def _first_digit_bits(m: int) -> int:
    return min(max(int(m).bit_length(), RADIX_MIN_BITS), RADIX_MAX_BITS)


def make_rank_scratch(capacity: int) -> RankScratch:
    return RankScratch(
        np.zeros(capacity, np.uint64),
        np.zeros(capacity, np.uint64),
        np.zeros(capacity, np.int32),
        np.zeros(1 << _first_digit_bits(capacity), np.int32),
        np.zeros(1 << RADIX_SUB_BITS, np.int32),
    )


@njit(cache=True, error_model="numpy")
def _insertion_keys(keys, idx, lo, hi):
    """Stable insertion sort of keys[lo:hi] ascending, idx moved alongside."""
    for i in range(lo + 1, hi):
        k = keys[i]
        v = idx[i]
        j = i - 1
        while j >= lo and keys[j] > k:
            keys[j + 1] = keys[j]
            idx[j + 1] = idx[j]
            j -= 1
        keys[j + 1] = k
        idx[j + 1] = v


@njit(cache=True, error_model="numpy")
def _lsd_range(src_k, src_i, dst_k, dst_i, lo, hi, n_bits, hist):
    """Stable LSD radix sort of src_k[lo:hi] by its low ``n_bits`` bits
    (the higher bits are equal across the range), src_i moved alongside.
    Uses dst_*[lo:hi] as the other buffer; the sorted slots end in
    dst_i[lo:hi].  Returns the number of passes made."""
    n_buckets = hist.shape[0]
    width = 0
    while (1 << width) < n_buckets:
        width += 1
    mask = np.uint64(n_buckets - 1)
    size = hi - lo
    passes = 0
    for d in range((n_bits + width - 1) // width):
        shift = np.uint64(d * width)
        for b in range(n_buckets):
            hist[b] = 0
        for j in range(lo, hi):
            hist[(src_k[j] >> shift) & mask] += 1
        if hist[(src_k[lo] >> shift) & mask] == size:
            continue  # every key has this digit: the pass would not move anything
        total = lo
        for b in range(n_buckets):
            c = hist[b]
            hist[b] = total
            total += c
        for j in range(lo, hi):
            k = src_k[j]
            b = (k >> shift) & mask
            pos = hist[b]
            hist[b] = pos + 1
            dst_k[pos] = k
            dst_i[pos] = src_i[j]
        src_k, dst_k = dst_k, src_k
        src_i, dst_i = dst_i, src_i
        passes += 1
    if passes & 1 == 0:
        for j in range(lo, hi):
            dst_i[j] = src_i[j]
    return passes


@njit(cache=True, error_model="numpy")
def radix_ranked(score, ranked, m, scratch):
    """Sort ranked[:m] (distinct slots in ascending slot order, every
    score[slot] > 0 and finite) by score descending, then slot ascending.

    The candidates of a tick satisfy those preconditions.  ``score`` must be C-contiguous (its bits
    are
    read through a uint64 view).  Returns the number of scatter passes over
    all the candidates (0 when every score is the same, else 1)."""
    if m <= _SHORT:
        _insertion(score, ranked, 0, m)
        return 0
    bits = score.view(np.uint64)
    keys = scratch.keys
    keys_tmp = scratch.keys_tmp
    idx_tmp = scratch.idx_tmp
    hist = scratch.hist
    # One read of the scores builds the keys and their range.
    k_min = ~np.uint64(0)
    k_max = np.uint64(0)
    for j in range(m):
        k = ~bits[ranked[j]]
        keys[j] = k
        idx_tmp[j] = ranked[j]
        k_min = min(k_min, k)
        k_max = max(k_max, k)
    if k_min == k_max:
        return 0  # one score: slot order is the ranking
    # First digit: (key - k_min) >> low, in [0, 2**width): monotone in the
    # key, so the buckets are in key order whatever the scores' range.
    width = RADIX_MIN_BITS
    while (1 << width) < m and width < RADIX_MAX_BITS:
        width += 1
    while (1 << width) > hist.shape[0]:
        width -= 1
    span = k_max - k_min
    low = 0
    while (span >> np.uint64(low)) >= np.uint64(1 << width):
        low += 1
    shift = np.uint64(low)
    n_buckets = 1 << width
    for b in range(n_buckets):
        hist[b] = 0
    for j in range(m):
        hist[(keys[j] - k_min) >> shift] += 1
    total = 0
    largest = 0
    for b in range(n_buckets):  # exclusive prefix sums: first position per digit
        c = hist[b]
        hist[b] = total
        total += c
        largest = max(largest, c)
    for j in range(m):  # stable: slot order within a bucket
        k = keys[j] - k_min  # same order; a bucket's keys share their high bits
        b = k >> shift
        pos = hist[b]
        hist[b] = pos + 1
        keys_tmp[pos] = k
        ranked[pos] = idx_tmp[j]
    if largest <= RADIX_SMALL:
        # Keys are out of order only within a bucket: one insertion sort over
        # the whole range moves each key at most RADIX_SMALL - 1 places.
        _insertion_keys(keys_tmp, ranked, 0, m)
        return 1
    # hist[b] is now the end of bucket b; walk the buckets that hold keys.
    lo = 0
    while lo < m:
        hi = hist[keys_tmp[lo] >> shift]
        if hi - lo > RADIX_SMALL:
            for j in range(lo, hi):
                idx_tmp[j] = ranked[j]
            _lsd_range(keys_tmp, idx_tmp, keys, ranked, lo, hi, low, scratch.sub_hist)
        elif hi - lo > 1:
            _insertion_keys(keys_tmp, ranked, lo, hi)
        lo = hi
    return 1
