"""Step 5 of SCORING.md: the global pressure P and each node's P_i.

With p_j = min(wait_j / max_wait_s, 1), S the sum of p_j over the live nodes
(L > 0) in slot order and `live` their count:

    P   = S / live                       (0 when live = 0; published)
    P_i = (S - p_i) / (live - 1)         for a live node i (0 if it is the only one)
    P_i = P                              for a node that is not live

Node i's weights use P_i, the pressure of the rest of the cluster, so a
node's own wait never shifts weight onto its own terms: its raw score never
rises when its own load worsens.  S is computed once per tick, after steps
1-4 of every node and before step 6 of any node; P_i is evaluated exactly as
written (S - p_i, not a separate sum of the others).  P and P_i are in [0, 1]
up to rounding.
"""

from numba import njit


@njit(cache=True, error_model="numpy")
def pressure_term(wait, max_wait_s):
    """p_i, one node's contribution: `min(wait / max_wait_s, 1)`."""
    return min(wait / max_wait_s, 1.0)


@njit(cache=True, error_model="numpy")
def pressure(term_sum, live):
    """P from S, the slot-order sum of `pressure_term` over the `live` nodes."""
    if live == 0:
        return 0.0
    return term_sum / live


@njit(cache=True, error_model="numpy")
def node_pressure(term_sum, live, is_live, p_i, P):
    """P_i: the rest of the cluster's pressure for a live node, P otherwise."""
    if not is_live:
        return P
    if live <= 1:
        return 0.0
    return (term_sum - p_i) / (live - 1)
