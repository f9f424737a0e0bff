"""Step 12 of SCORING.md: flap counting, quarantine, probation and release.

Per node, in slot order, after step 11:
  * `flap = flap * (1 - 1/flap_window) + c` every tick for every registered
    node (c from `hysteresis.changed`).  flap >= 0, bounded by flap_window.
  * a node QUARANTINED before this tick and live now updates its probation
    count (+1 on a live, untripped tick with raw >= t_degraded + delta, else
    0) and is released to HEALTHY with flap = 0 when the count reaches
    `probation_ticks * min(n, max_backoff)`.  The tick of entry does not count.
  * a QUARANTINED node that dies is DEAD; `n` is kept, the count reset.
Then, after every node (admissions, in slot order): HEALTHY/DEGRADED/
OVERLOADED nodes with flap >= max_flaps become QUARANTINED (n += 1, count 0,
flap kept) while the number of QUARANTINED nodes is below
`floor(max_quarantined_fraction * live)`; the rest keep their state and flap.
Then the memory: a node ending the tick neither QUARANTINED nor DEAD counts
+1, and `n = 0` once the count is >= quarantine_memory; others count 0.

The integer counters saturate at 2**31 - 1 instead of wrapping.
"""

import math

from numba import njit

from kernels.params import DEAD, OVERLOADED, QUARANTINED

_I32_MAX = 2147483647


@njit(cache=True, error_model="numpy")
def flap_update(flap_prev, c, flap_window):
    """Decay and add this tick's change (c in {0, 1})."""
    return flap_prev * (1.0 - 1.0 / flap_window) + c


@njit(cache=True, error_model="numpy")
def probation_step(count_prev, is_tripped, raw, t_degraded, delta):
    """New probation count of a node QUARANTINED before this tick and live now."""
    if (not is_tripped) and raw >= t_degraded + delta:
        return count_prev + 1 if count_prev < _I32_MAX else count_prev
    return 0


@njit(cache=True, error_model="numpy")
def release_due(count, n, probation_ticks, max_backoff):
    """True when `count` good ticks complete the probation of the n-th quarantine
    (backoff `min(n, max_backoff)`, so n = 2 needs 2 * probation_ticks)."""
    return count >= probation_ticks * min(float(n), max_backoff)


@njit(cache=True, error_model="numpy")
def quarantine_cap(max_quarantined_fraction, live):
    """Most nodes that may be QUARANTINED at once: floor(fraction * live)."""
    return int(math.floor(max_quarantined_fraction * live))


@njit(cache=True, error_model="numpy")
def is_candidate(state, flap, max_flaps):
    """A node that ends step 11 HEALTHY/DEGRADED/OVERLOADED and flaps too much."""
    return state <= OVERLOADED and flap >= max_flaps


@njit(cache=True, error_model="numpy")
def memory_step(state, memory_prev, n, quarantine_memory):
    """Returns (memory, n) after admissions: counts consecutive ticks ending
    neither QUARANTINED nor DEAD and forgets the quarantines (n = 0) once the
    count is >= quarantine_memory."""
    if state == QUARANTINED or state == DEAD:
        return 0, n
    memory = memory_prev + 1 if memory_prev < _I32_MAX else memory_prev
    if memory >= quarantine_memory:
        n = 0
    return memory, n
