"""Steps 13-14 of SCORING.md: the published score and the ranking.

`published(state, s)` is s for HEALTHY/DEGRADED nodes and 0 otherwise.
The ranking is every slot with score > 0, by score descending and then slot
ascending.  The key (score, slot) is unique, so any correct comparison sort
gives the one valid order.

Three entry points; callers fill ``ranked[:m]`` with the candidate slots:
  * `sort_ranked(score, idx, m)`: in-place introsort (quicksort with
    median-of-3, heapsort past a depth limit, insertion sort for short runs):
    O(m log m) worst case; its only allocation is a 66x3 range stack.
  * `rerank(score, ranked, m, prev_ranked, n_prev)`: the same order, seeded
    by the previous tick's ranking.  From one tick to the next most nodes keep
    their place or move a few places (smoothing moves every score a little),
    so the seed is nearly sorted and an insertion sort finishes it in
    O(m + moves); past `RERANK_MOVES_PER_NODE` * m moves it falls back to
    `sort_ranked`.  Allocates O(slots) scratch.  The seed never changes the
    result, only the work.  Measured in the tick harness (10K nodes, 5% new
    heartbeats per tick): every score moves a little each tick (smoothing,
    and the ~13% of nodes older than suspect_after_s lose liveness every
    tick), so the budget is exceeded on most ticks, and a fallback costs the
    wasted insertion work plus the full sort: not used by the tick worker.

  * `radix_ranked(score, ranked, m, scratch)`: a radix sort on the
    score's IEEE-754 bits, O(m) whatever the previous order.  Every
    candidate's score is > 0 (and finite), and the bits of positive doubles
    order like unsigned integers, so the key ``~bits`` ascending is score
    descending; the candidates arrive in slot order and every step is
    stable, so ties stay by slot ascending: the same order as `sort_ranked`.
    One counting pass on a first digit of about log2(m) bits, taken from
    ``key - min(key)`` so that it spreads over the keys' actual range,
    leaves each key in its bucket (a few keys each, for scores spread over
    [0, 1]); then one insertion sort over the whole range finishes when no
    bucket is larger than `RADIX_SMALL`, and otherwise each larger bucket
    gets an LSD radix sort of its low bits (so ties and tight clusters stay
    O(m) per pass).  The earlier version, an LSD sort over every digit (5
    or 6 passes of 11 bits), took about 3x as long at 10K candidates.  All
    scratch comes from a `RankScratch` (`make_rank_scratch(capacity)`), so
    it allocates nothing.

Comparisons take scalars (score, slot) rather than the arrays: numba would
incref/decref an array argument on every call, which used to cost more than
the comparison itself.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from kernels.params import DEGRADED

_SHORT = 16
# rerank gives up on the seed after RERANK_MOVES_PER_NODE * m shifts (a
# shift is much cheaper than a quicksort comparison, but unbounded).
RERANK_MOVES_PER_NODE = 8


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


@njit(cache=True, error_model="numpy")
def _sift_down(score, idx, lo, root, end):
    # Max-heap on "ranks later" over idx[lo:end], node k at idx[lo + k].
    while True:
        child = 2 * root + 1
        if child >= end - lo:
            return
        c = idx[lo + child]
        if child + 1 < end - lo:
            c1 = idx[lo + child + 1]
            if _before(score[c], c, score[c1], c1):
                child += 1
                c = c1
        r = idx[lo + root]
        if _before(score[r], r, score[c], c):
            idx[lo + root] = c
            idx[lo + child] = r
            root = child
        else:
            return


@njit(cache=True, error_model="numpy")
def _heapsort(score, idx, lo, hi):
    m = hi - lo
    for start in range(m // 2 - 1, -1, -1):
        _sift_down(score, idx, lo, start, hi)
    for end in range(hi - 1, lo, -1):
        t = idx[lo]
        idx[lo] = idx[end]
        idx[end] = t
        _sift_down(score, idx, lo, 0, end)


@njit(cache=True, error_model="numpy")
def _partition(score, idx, lo, hi):
    """Hoare partition of idx[lo:hi] (hi - lo >= 3) around a median of three;
    returns p with lo < p < hi, idx[lo:p] ranking before idx[p:hi]."""
    mid = (lo + hi - 1) // 2
    last = hi - 1
    a = idx[lo]
    b = idx[mid]
    c = idx[last]
    if _before(score[b], b, score[a], a):
        a, b = b, a
    if _before(score[c], c, score[b], b):
        b, c = c, b
        if _before(score[b], b, score[a], a):
            a, b = b, a
    idx[lo] = a
    idx[mid] = b
    idx[last] = c
    pivot = b
    sp = score[pivot]
    i = lo - 1
    j = hi
    while True:
        i += 1
        x = idx[i]
        while _before(score[x], x, sp, pivot):
            i += 1
            x = idx[i]
        j -= 1
        y = idx[j]
        while _before(sp, pivot, score[y], y):
            j -= 1
            y = idx[j]
        if i >= j:
            return j + 1
        idx[i] = y
        idx[j] = x


@njit(cache=True, error_model="numpy")
def sort_ranked(score, idx, m):
    """Sort idx[:m] (distinct slots) by score descending, then slot ascending."""
    limit = 2
    k = m
    while k > 1:  # depth limit 2*log2(m) + 2 before falling back to heapsort
        limit += 2
        k >>= 1
    # Pending ranges (lo, hi, depth).  The larger side is pushed and the
    # smaller one processed first, so at most log2(m) + 1 ranges wait at once.
    # Explicit rather than recursive: numba's cache cannot reload recursive
    # functions safely.
    stack = np.empty((66, 3), np.int64)
    top = 0
    stack[0, 0] = 0
    stack[0, 1] = m
    stack[0, 2] = limit
    top = 1
    while top > 0:
        top -= 1
        lo = stack[top, 0]
        hi = stack[top, 1]
        depth = stack[top, 2]
        while hi - lo > _SHORT:
            if depth == 0:
                _heapsort(score, idx, lo, hi)
                lo = hi
                break
            depth -= 1
            p = _partition(score, idx, lo, hi)
            if p - lo < hi - p:
                stack[top, 0] = p
                stack[top, 1] = hi
                stack[top, 2] = depth
                hi = p
            else:
                stack[top, 0] = lo
                stack[top, 1] = p
                stack[top, 2] = depth
                lo = p
            top += 1
        _insertion(score, idx, lo, hi)


@njit(cache=True, error_model="numpy")
def rerank(score, ranked, m, prev_ranked, n_prev):
    """Sort ranked[:m] (distinct candidate slots, any order) exactly as
    `sort_ranked` does, using prev_ranked[:n_prev] as a hint.

    The hint may be anything: slots out of range, slots no longer candidates
    and repeats are skipped; candidates it lacks are appended in slot order.
    Returns the number of shifts the insertion sort made, or -1 when it
    fell back to `sort_ranked`."""
    nslots = score.shape[0]
    if m <= _SHORT:
        sort_ranked(score, ranked, m)
        return -1
    # 1 = candidate not yet placed in the seed, 2 = placed.
    mark = np.zeros(nslots, np.uint8)
    for j in range(m):
        mark[ranked[j]] = 1
    seq = np.empty(m, ranked.dtype)
    k = 0
    for j in range(min(n_prev, prev_ranked.shape[0])):
        s = prev_ranked[j]
        if s >= 0 and s < nslots and mark[s] == 1:
            mark[s] = 2
            seq[k] = s
            k += 1
    for j in range(m):
        s = ranked[j]
        if mark[s] == 1:
            seq[k] = s
            k += 1
    # Insertion sort of the seed, bounded: most nodes moved a few places at
    # most, and each shift is one step of one node.
    budget = RERANK_MOVES_PER_NODE * m
    moves = 0
    for i in range(1, m):
        v = seq[i]
        sv = score[v]
        j = i - 1
        while j >= 0:
            u = seq[j]
            if not _before(sv, v, score[u], u):
                break
            seq[j + 1] = u
            j -= 1
        seq[j + 1] = v
        moves += i - 1 - j
        if moves > budget:
            sort_ranked(score, ranked, m)
            return -1
    for j in range(m):
        ranked[j] = seq[j]
    return moves


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
    keys: np.ndarray      # u8[capacity]
    keys_tmp: np.ndarray  # u8[capacity]
    idx_tmp: np.ndarray   # i4[capacity]
    hist: np.ndarray      # i4[2**b]: the first digit's buckets
    sub_hist: np.ndarray  # i4[2**RADIX_SUB_BITS]: one pass of a large bucket's sort


def _first_digit_bits(m: int) -> int:
    return min(max(int(m).bit_length(), RADIX_MIN_BITS), RADIX_MAX_BITS)


def make_rank_scratch(capacity: int) -> RankScratch:
    return RankScratch(np.zeros(capacity, np.uint64), np.zeros(capacity, np.uint64),
                       np.zeros(capacity, np.int32),
                       np.zeros(1 << _first_digit_bits(capacity), np.int32),
                       np.zeros(1 << RADIX_SUB_BITS, np.int32))


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

    Same result as `sort_ranked` under those preconditions (the candidates
    of a tick satisfy them).  ``score`` must be C-contiguous (its bits are
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
