"""Step 5 of SCORING.md: global pressure P, and T for step 3's g_tput.

Both are reductions over the live nodes (L > 0) in slot order, computed once
per tick after steps 1-4 of every node and before step 6 of any node:

    P = (sum over live i of min(wait_i / max_wait_s, 1)) / live,  0 when live = 0
    T = max over live i that report throughput of throughput_i,   0 when none

The pipeline fuses the accumulation into its first pass over the slots; the
functions here are the per-node term and the final division, so the pipeline
and the tests share one definition.  P is in [0, 1].
"""

from numba import njit


@njit(cache=True, error_model="numpy")
def pressure_term(wait, max_wait_s):
    """One live node's contribution to the sum: `min(wait / max_wait_s, 1)`."""
    return min(wait / max_wait_s, 1.0)


@njit(cache=True, error_model="numpy")
def pressure(term_sum, live):
    """P from the slot-order sum of `pressure_term` over the `live` nodes."""
    if live == 0:
        return 0.0
    return term_sum / live
