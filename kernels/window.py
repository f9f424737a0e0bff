"""Step 2 of SCORING.md: the decayed error window (`e_ok`, `e_err`).

Every tick, for every registered node (live or not):
    e_ok  = e_ok  * d + new_ok,   e_err = e_err * d + new_err,
    d = 0.5 ** (tick_interval_ms / 1000 / error_half_life_s),
where `new_ok` is the ok releases reported by schedulers since the previous
tick (`fb_ok`) plus the `ok` of this tick's heartbeat, if one arrived and it
reports ok/err (earlier heartbeats of the tick were replaced, so only the
latest counts); `new_err` likewise.  Both are 0 before a node's first tick,
so a reused slot starts from zero.  An outcome's weight halves every
`error_half_life_s` seconds, whatever the tick rate.  Both stay >= 0 and
finite for inputs in range (d in (0, 1] for a positive half-life).
"""

from numba import njit

from kernels.params import HAS_OKERR


@njit(cache=True, error_model="numpy")
def window_decay(tick_interval_ms, error_half_life_s):
    """d, the factor one tick applies to the window."""
    return 0.5 ** (tick_interval_ms / 1000.0 / error_half_life_s)


@njit(cache=True, error_model="numpy")
def outcomes(fb, new_hb, reported, hb):
    """This tick's new outcomes of one kind: feedback `fb` plus the
    heartbeat's count `hb` when a heartbeat arrived and reports ok/err."""
    if new_hb and reported & HAS_OKERR:
        return fb + hb
    return fb


@njit(cache=True, error_model="numpy")
def window_step(first, e_prev, d, new):
    """The window after this tick; `e_prev` is ignored on a first tick."""
    if first:
        e_prev = 0.0
    return e_prev * d + new
