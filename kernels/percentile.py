"""Step 3 of SCORING.md: R, the reference rate of `g_rate`.

R is the 90th percentile, nearest rank, of the rates `slots / avg_job_s` of
the live nodes with `avg_job_s > 0`: with those m rates sorted ascending as
r_0..r_(m-1), `R = r_(ceil(0.9*m) - 1)` (the maximum when m < 10).  Using a
percentile rather than the maximum means one node claiming an absurd rate
moves R only once it is one of the fastest tenth of the cluster.

The pipeline writes the m rates into scratch (any order) during its first
pass; `rate_reference` finds the k-th smallest without sorting:
  * `select`: quickselect on a median of three with a branch-free
    partition (a compare-and-branch per value mispredicts half the time on
    random data: measured about 6x slower at 1M values), heapsort of the
    range left past a depth limit of about 2*log2(m): O(m) expected,
    O(m log m) at worst;
  * `sample_select`, from `SAMPLE_FROM` rates on: a sample brackets the
    answer, one branch-free pass keeps the values between the brackets, and
    `select` finishes on those few (about 4*m**(2/3)); it falls back to
    `select` over everything when the brackets miss.
Any correct selection gives the same value, so R is exact whatever the
order the rates arrive in.  Both reorder the scratch and allocate nothing.
m = 0 gives R = 0, which `goodness.g_rate` reads as "no reference"
(g_rate = 1).

Preconditions: every rate > 0 and not NaN (+inf is allowed: a tiny avg_job_s).
"""

import math

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
def _partition_lt(a, lo, hi, pivot):
    """Move the values < pivot to the front of a[lo:hi]; returns where the
    rest begins.  Branch-free (a swap every step, the position advancing by
    the comparison): random data would mispredict a branch on every value."""
    s = lo
    for i in range(lo, hi):
        v = a[i]
        a[i] = a[s]
        a[s] = v
        s += v < pivot
    return s


@njit(cache=True, error_model="numpy")
def _partition_le(a, lo, hi, pivot):
    """`_partition_lt` for the values <= pivot."""
    s = lo
    for i in range(lo, hi):
        v = a[i]
        a[i] = a[s]
        a[s] = v
        s += v <= pivot
    return s


@njit(cache=True, error_model="numpy")
def select(a, m, k):
    """The k-th smallest (0-based, 0 <= k < m) of a[:m]; reorders a[:m] so
    that a[:k] <= a[k] <= a[k + 1:m]."""
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
        x = a[lo]
        y = a[(lo + hi) >> 1]
        z = a[hi - 1]
        pivot = max(min(x, y), min(max(x, y), z))  # median of three
        s = _partition_lt(a, lo, hi, pivot)
        # a[lo:s] < pivot <= a[s:hi], and s < hi (the pivot is in the range)
        if k < s:
            hi = s
        elif s > lo:
            lo = s
        else:
            # the pivot is the range's minimum: split off its copies
            e = _partition_le(a, lo, hi, pivot)
            if k < e:
                return pivot
            lo = e
    _insertion(a, lo, hi)
    return a[k]


# From this many rates on, `rate_reference` narrows the search with a sample
# first (below it, introselect on everything is as fast).
SAMPLE_FROM = 4096


@njit(cache=True, error_model="numpy")
def sample_select(a, m, k, window):
    """The k-th smallest of a[:m], like `select`, in about one pass.

    Floyd-Rivest style: a strided sample of about m**(2/3) values (moved to
    the front of `a`) gives two bounds that bracket position k with high
    probability; one branch-free pass counts the values below the lower
    bound and copies those between the bounds into `window` (capacity >= m),
    and the answer is selected among those few.  If the bounds miss (an
    unlucky sample) it falls back to `select` over a[:m], which the pass left
    intact, so the result is exact either way."""
    s = min(int(math.ceil(m ** (2.0 / 3.0))), m)
    step = m // s
    for t in range(s):  # the sample: a[0], a[step], a[2*step], ...
        j = t * step
        v = a[t]
        a[t] = a[j]
        a[j] = v
    # Position of k in the sample, and a margin g = 2*sqrt(s): the sampled
    # rank of the k-th value has a standard deviation of about
    # sqrt(s * 0.9 * 0.1) = 0.3*sqrt(s), so for rates in no special order
    # the bounds miss (and the fallback runs) far less than once in 1e9 ticks.
    ks = (k * s) // m
    g = int(math.ceil(2.0 * math.sqrt(s)))
    lo_i = max(ks - g, 0)
    hi_i = min(ks + g, s - 1)
    lo = select(a, s, lo_i)
    # select() leaves a[lo_i + 1:s] >= lo, so hi is found among a[lo_i:s]
    hi = select(a[lo_i:], s - lo_i, hi_i - lo_i)
    below = 0
    w = 0
    for i in range(m):
        v = a[i]
        below += v < lo
        window[w] = v
        w += (v >= lo) & (v <= hi)
    if k < below or k >= below + w:
        return select(a, m, k)
    if lo == hi:
        return lo
    return select(window, w, k - below)


@njit(cache=True, error_model="numpy")
def rate_reference(rates, m, window):
    """R from the m rates in rates[:m] (reordered; `window` is work space of
    the same capacity); 0.0 when m = 0."""
    if m == 0:
        return 0.0
    if m < SAMPLE_FROM:
        return select(rates, m, nearest_rank(m))
    return sample_select(rates, m, nearest_rank(m), window)
