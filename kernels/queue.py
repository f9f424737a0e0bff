"""Steps 1-2 of SCORING.md: the queue EMA and the sojourn time.

Invariant: `qema` moves at most one EMA step per tick, whatever the number of
heartbeats that arrived (only the latest one is used), and starts at the
reported queue on a node's first tick.  Both values are >= 0 when the inputs
are (queue >= 0, avg_job_s >= 0, 0 <= alpha_queue <= 1).
"""

from numba import njit


@njit(cache=True, error_model="numpy")
def queue_ema(first, new_hb, queue, qema_prev, alpha_queue):
    """Step 1.  `first`: the node's first tick (prev values are ignored).
    `new_hb`: a heartbeat arrived since the previous tick.  Returns the new qema."""
    if first:
        return queue
    if new_hb:
        return alpha_queue * queue + (1.0 - alpha_queue) * qema_prev
    return qema_prev


@njit(cache=True, error_model="numpy")
def sojourn(qema, avg_job_s):
    """Step 2: expected wait in seconds, `qema * avg_job_s` (may be +inf on
    overflow; every consumer saturates it)."""
    return qema * avg_job_s
