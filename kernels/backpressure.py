"""Step 7 of SCORING.md: backpressure from the queue EMA.

`B = clamp((max_queue - qema) / (max_queue - limit_critical), 0, 1)`: 1 while
qema <= limit_critical, falling linearly to 0 at qema = max_queue.
Precondition (enforced by the configuration): limit_critical < max_queue.
"""

from numba import njit


@njit(cache=True, error_model="numpy")
def backpressure(qema, max_queue, limit_critical):
    """B in [0, 1]."""
    b = (max_queue - qema) / (max_queue - limit_critical)
    return min(max(b, 0.0), 1.0)
