"""Steps 13-14 of SCORING.md: the published score and the ranking.

`published(state, s)` is s for HEALTHY/DEGRADED nodes and 0 otherwise.
The ranking is every slot with score > 0, by score descending and then slot
ascending.  The key (score, slot) is unique, so any correct comparison sort
gives the one valid order.

Two entry points; callers fill ``ranked[:m]`` with the candidate slots:
  * `sort_ranked(score, idx, m)`: in-place introsort (quicksort with
    median-of-3, heapsort past a depth limit, insertion sort for short runs):
    O(m log m) worst case; its only allocation is a 66x3 range stack.
  * `rerank(score, ranked, m, prev_ranked, n_prev)`: the same order, seeded
    by the previous tick's ranking.  From one tick to the next most nodes keep
    their place or move a few places (smoothing moves every score a little),
    so the seed is nearly sorted and an insertion sort finishes it in
    O(m + moves); past `RERANK_MOVES_PER_NODE` * m moves it falls back to
    `sort_ranked`.  Allocates O(slots) scratch.  The seed never changes the
    result, only the work.

Comparisons take scalars (score, slot) rather than the arrays: numba would
incref/decref an array argument on every call, which used to cost more than
the comparison itself.
"""

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
