"""Step 7 of SCORING.md: backpressure from the load.

`B = clamp((max_queue - load) / (max_queue - limit_critical), 0, 1)`: 1 while
load <= limit_critical, falling linearly to 0 at load = max_queue (`load` is
step 2's `max(qema, rif - slots, 0)`).
Precondition (enforced by the configuration): limit_critical < max_queue.
"""

from numba import njit


@njit(cache=True, error_model="numpy")
def backpressure(load, max_queue, limit_critical):
    """B in [0, 1]."""
    b = (max_queue - load) / (max_queue - limit_critical)
    return min(max(b, 0.0), 1.0)
