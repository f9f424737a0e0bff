"""Steps 9-10 of SCORING.md: the raw score and the smoothed score.

`raw = 0` if tripped, else `L * B * core`, in [0, 1].
`s = 0` if tripped or L = 0 (safety bypasses smoothing), else
`s = beta*raw + (1-beta)*s_prev`, with `s_prev = raw` on the node's first tick
(so the first s equals raw).  Smoothing continues while a node is
QUARANTINED; step 13 publishes 0 for it.  s is in [0, 1] when s_prev is.
"""

from numba import njit


@njit(cache=True, error_model="numpy")
def raw_score(is_tripped, L, B, core):
    """Step 9: 0 if tripped, else ``L * B * core``.

    A dead node (L = 0) scores exactly 0 without evaluating the product, so
    no value of its other inputs can turn ``0 * core`` into NaN."""
    if is_tripped or L == 0.0:
        return 0.0
    return L * B * core


@njit(cache=True, error_model="numpy")
def smooth(is_tripped, L, raw, s_prev, first, beta):
    """Step 10.  `first`: the node's first tick; `s_prev` is then ignored."""
    if is_tripped or L == 0.0:
        return 0.0
    if first:
        s_prev = raw
    return beta * raw + (1.0 - beta) * s_prev
