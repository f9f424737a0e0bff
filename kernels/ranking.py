"""Steps 13-14 of SCORING.md: the published score and the ranking.

`published(state, s)` is s for HEALTHY/DEGRADED nodes and 0 otherwise.
The ranking is every slot with score > 0, by score descending and then slot
ascending.  The key (score, slot) is unique, so any correct comparison sort
gives the one valid order; `sort_ranked` is an in-place introsort (quicksort
with median-of-3, heapsort past a depth limit, insertion sort for short runs):
O(m log m) worst case; its only allocation is a 66x3 range stack.  Callers fill `ranked[:m]` with the
candidate slots (in any order) and sort them in place.
"""

import numpy as np
from numba import njit

from kernels.params import DEGRADED

_SHORT = 16


@njit(cache=True, error_model="numpy")
def published(state, s):
    """Step 13: the desirability a scheduler sees."""
    return s if state <= DEGRADED else 0.0


@njit(cache=True, error_model="numpy")
def _before(score, a, b):
    """Slot a ranks before slot b."""
    sa = score[a]
    sb = score[b]
    return sa > sb or (sa == sb and a < b)


@njit(cache=True, error_model="numpy")
def _swap(idx, a, b):
    t = idx[a]
    idx[a] = idx[b]
    idx[b] = t


@njit(cache=True, error_model="numpy")
def _insertion(score, idx, lo, hi):
    for i in range(lo + 1, hi):
        v = idx[i]
        j = i - 1
        while j >= lo and _before(score, v, idx[j]):
            idx[j + 1] = idx[j]
            j -= 1
        idx[j + 1] = v


@njit(cache=True, error_model="numpy")
def _sift_down(score, idx, lo, root, end):
    # Max-heap on "ranks later" over idx[lo:end], node k at idx[lo + k].
    while True:
        child = 2 * root + 1
        if child >= end - lo:
            return
        if child + 1 < end - lo and _before(score, idx[lo + child], idx[lo + child + 1]):
            child += 1
        if _before(score, idx[lo + root], idx[lo + child]):
            _swap(idx, lo + root, lo + child)
            root = child
        else:
            return


@njit(cache=True, error_model="numpy")
def _heapsort(score, idx, lo, hi):
    m = hi - lo
    for start in range(m // 2 - 1, -1, -1):
        _sift_down(score, idx, lo, start, hi)
    for end in range(hi - 1, lo, -1):
        _swap(idx, lo, end)
        _sift_down(score, idx, lo, 0, end)


@njit(cache=True, error_model="numpy")
def _partition(score, idx, lo, hi):
    """Hoare partition of idx[lo:hi] (hi - lo >= 3) around a median of three;
    returns p with lo < p < hi, idx[lo:p] ranking before idx[p:hi]."""
    mid = (lo + hi - 1) // 2
    last = hi - 1
    if _before(score, idx[mid], idx[lo]):
        _swap(idx, mid, lo)
    if _before(score, idx[last], idx[mid]):
        _swap(idx, last, mid)
        if _before(score, idx[mid], idx[lo]):
            _swap(idx, mid, lo)
    pivot = idx[mid]
    i = lo - 1
    j = hi
    while True:
        i += 1
        while _before(score, idx[i], pivot):
            i += 1
        j -= 1
        while _before(score, pivot, idx[j]):
            j -= 1
        if i >= j:
            return j + 1
        _swap(idx, i, j)


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
