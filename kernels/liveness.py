"""Step 4 of SCORING.md: liveness from the age of the latest heartbeat.

`L` is 1 up to `suspect_after_s`, 0 from `dead_after_s` on, and linear in
between: `L = (dead_after_s - age) / (dead_after_s - suspect_after_s)`, so it
is always in [0, 1] and "live" (L > 0) is exactly `age < dead_after_s`.
The age is computed by the caller (engine clock or replay's tick arithmetic)
and used as given.  Precondition: suspect_after_s <= dead_after_s.
"""

from numba import njit


@njit(cache=True, error_model="numpy")
def liveness(age, suspect_after_s, dead_after_s):
    """L in [0, 1] for an age in seconds."""
    if age <= suspect_after_s:
        return 1.0
    if age >= dead_after_s:
        return 0.0
    return (dead_after_s - age) / (dead_after_s - suspect_after_s)
