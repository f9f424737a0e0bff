"""Steps 1-2 of SCORING.md: the queue EMA, the load and the sojourn time.

Invariant: `qema` moves at most one EMA step per tick, whatever the number of
heartbeats that arrived (only the latest one is used), and starts at the
reported queue on a node's first tick.  `load` counts the jobs waiting on the
node as the larger of what it reports (`qema`) and what the schedulers have
in flight beyond its slots (`rif - slots`), so claims a heartbeat has not yet
seen still count.  All three values are >= 0 when the inputs are in range
(queue >= 0, avg_job_s >= 0, rif >= 0, slots >= 1, 0 <= alpha_queue <= 1).
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
def load(qema, rif, slots):
    """Step 2: `max(qema, rif - slots, 0)`, jobs waiting for a slot."""
    return max(qema, rif - slots, 0.0)


@njit(cache=True, error_model="numpy")
def sojourn(load, avg_job_s, slots):
    """Step 2: expected wait in seconds, `load * avg_job_s / slots` (evaluated
    left to right; may be +inf on overflow, and every consumer saturates it)."""
    return load * avg_job_s / slots
