"""Step 3 of SCORING.md: R, the reference rate of `g_rate`.

R is the 90th percentile, nearest rank, of the rates `slots / avg_job_s` of
the live nodes with `avg_job_s > 0`: with those m rates sorted ascending as
r_0..r_(m-1), `R = r_(ceil(0.9*m) - 1)` (the maximum when m < 10).  Using a
percentile rather than the maximum means one node claiming an absurd rate
moves R only once it is one of the fastest tenth of the cluster.

The pipeline writes the m rates into scratch (any order) during its first
pass; `rate_reference` finds the k-th smallest in place by introselect
(quickselect on a median of three, Hoare partition; heapsort of the range
left past a depth limit of about 2*log2(m), so O(m) expected and
O(m log m) at worst).  Any correct selection gives the same value, so R is
exact whatever the order the rates arrive in.  It reorders the scratch and
allocates nothing.  m = 0 gives R = 0, which `goodness.g_rate` reads as "no
reference" (g_rate = 1).

Preconditions: every rate > 0 and not NaN (+inf is allowed: a tiny avg_job_s).
"""

from numba import njit

_SHORT = 16


@njit(cache=True, error_model="numpy")
def nearest_rank(m):
    """The 0-based index `ceil(0.9*m) - 1` of the 90th percentile of m >= 1
    sorted values, in integer arithmetic: ceil(9m/10) = (9m + 9) // 10."""
    return (9 * m + 9) // 10 - 1


@njit(cache=True, error_model="numpy")
def _insertion(a, lo, hi):
    for i in range(lo + 1, hi):
        v = a[i]
        j = i - 1
        while j >= lo and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@njit(cache=True, error_model="numpy")
def _sift_down(a, lo, root, end):
    # Max-heap over a[lo:end], node r at a[lo + r].
    size = end - lo
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and a[lo + child] < a[lo + child + 1]:
            child += 1
        if a[lo + root] < a[lo + child]:
            t = a[lo + root]
            a[lo + root] = a[lo + child]
            a[lo + child] = t
            root = child
        else:
            return


@njit(cache=True, error_model="numpy")
def _heapsort(a, lo, hi):
    for start in range((hi - lo) // 2 - 1, -1, -1):
        _sift_down(a, lo, start, hi)
    for end in range(hi - 1, lo, -1):
        t = a[lo]
        a[lo] = a[end]
        a[end] = t
        _sift_down(a, lo, 0, end)


@njit(cache=True, error_model="numpy")
def select(a, m, k):
    """The k-th smallest (0-based, 0 <= k < m) of a[:m]; reorders a[:m]."""
    lo = 0
    hi = m
    depth = 2
    n = m
    while n > 1:
        depth += 2
        n >>= 1
    while hi - lo > _SHORT:
        if depth == 0:
            _heapsort(a, lo, hi)
            return a[k]
        depth -= 1
        last = hi - 1
        mid = (lo + last) // 2
        # Median of three into a[mid]; a[lo] <= pivot <= a[last] bound the scans.
        if a[mid] < a[lo]:
            t = a[mid]
            a[mid] = a[lo]
            a[lo] = t
        if a[last] < a[mid]:
            t = a[last]
            a[last] = a[mid]
            a[mid] = t
            if a[mid] < a[lo]:
                t = a[mid]
                a[mid] = a[lo]
                a[lo] = t
        pivot = a[mid]
        # Hoare: afterwards a[lo..j] <= pivot <= a[j+1..last], lo <= j < last.
        i = lo - 1
        j = hi
        while True:
            i += 1
            while a[i] < pivot:
                i += 1
            j -= 1
            while a[j] > pivot:
                j -= 1
            if i >= j:
                break
            t = a[i]
            a[i] = a[j]
            a[j] = t
        if k <= j:
            hi = j + 1
        else:
            lo = j + 1
    _insertion(a, lo, hi)
    return a[k]


@njit(cache=True, error_model="numpy")
def rate_reference(rates, m):
    """R from the m rates in rates[:m] (reordered); 0.0 when m = 0."""
    if m == 0:
        return 0.0
    return select(rates, m, nearest_rank(m))
