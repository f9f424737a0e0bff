"""Step 11 of SCORING.md: the node state, with hysteresis on s.

Rules, in order:
  * L = 0: DEAD.
  * first tick, or DEAD before and live now: classified fresh, no hysteresis
    (OVERLOADED if tripped or s < t_overloaded, DEGRADED if s < t_degraded,
    else HEALTHY).
  * QUARANTINED before: stays QUARANTINED (step 12 decides its release).
  * tripped: OVERLOADED.
  * otherwise hysteresis (band `delta` above each threshold to move up).

`changed` gives step 12's c: 1 only when both the state before the tick and
after step 11 are among HEALTHY/DEGRADED/OVERLOADED and differ, so c = 0 on a
first tick, on revival, on death and whenever QUARANTINED is involved.
Thresholds are compared as written (`t_degraded + delta` evaluated in float64).

`transition_reason` names why step 11 changed the state (`kernels.reasons`):
DEATH, REVIVAL, REGISTERED (first tick), the breaker's reason when a trip
moved the node to OVERLOADED, HYSTERESIS otherwise; NONE when it did not change.
"""

from numba import njit

from kernels.params import DEAD, DEGRADED, HEALTHY, OVERLOADED, QUARANTINED
from kernels.reasons import DEATH, HYSTERESIS, NONE, REGISTERED, REVIVAL


@njit(cache=True, error_model="numpy")
def classify_fresh(is_tripped, s, t_degraded, t_overloaded):
    """State of a node with no usable history (first tick or revival)."""
    if is_tripped or s < t_overloaded:
        return OVERLOADED
    if s < t_degraded:
        return DEGRADED
    return HEALTHY


@njit(cache=True, error_model="numpy")
def next_state(prev_state, first, L, is_tripped, s, t_degraded, t_overloaded, delta):
    """The state after step 11.  `prev_state` is ignored when `first`."""
    if L == 0.0:
        return DEAD
    if first or prev_state == DEAD:
        return classify_fresh(is_tripped, s, t_degraded, t_overloaded)
    if prev_state == QUARANTINED:
        return QUARANTINED
    if is_tripped:
        return OVERLOADED
    if prev_state == HEALTHY:
        if s < t_overloaded:
            return OVERLOADED
        if s < t_degraded:
            return DEGRADED
        return HEALTHY
    if prev_state == DEGRADED:
        if s < t_overloaded:
            return OVERLOADED
        if s >= t_degraded + delta:
            return HEALTHY
        return DEGRADED
    # OVERLOADED
    if s >= t_degraded + delta:
        return HEALTHY
    if s >= t_overloaded + delta:
        return DEGRADED
    return OVERLOADED


@njit(cache=True, error_model="numpy")
def changed(prev_state, new_state, first):
    """Step 12's c (0 or 1)."""
    if first or prev_state > OVERLOADED or new_state > OVERLOADED:
        return 0
    return 1 if prev_state != new_state else 0


@njit(cache=True, error_model="numpy")
def transition_reason(prev_state, new_state, first, trip_why):
    """Why step 11 moved a node from ``prev_state`` to ``new_state``
    (``trip_why``: `breaker.trip_reason` of this tick); NONE if it did not."""
    if first:
        return REGISTERED
    if new_state == prev_state:
        return NONE
    if new_state == DEAD:
        return DEATH
    if prev_state == DEAD:
        return REVIVAL
    if new_state == OVERLOADED and trip_why != NONE:
        return trip_why
    return HYSTERESIS
