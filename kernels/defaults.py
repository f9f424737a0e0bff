"""The default of every score parameter: the one table, SCORING.md's brackets.

The configuration reads its defaults from `DEFAULTS` and validates; tests,
benchmarks and `warm_up()` use `default_params()` to run a tick without a
configuration file.  Keep every value equal to the bracketed default of
SCORING.md (version 2); `tick_interval_ms` is the `[engine]` key's default.
Imports no numba (see `kernels.params`).
"""

import numpy as np

from kernels import params as p

DEFAULTS = {
    "alpha_queue": 0.3,
    "max_cpu": 0.98,
    "max_mem": 0.95,
    "max_wait_s": 30.0,
    "max_tail_ratio": 3.0,
    "suspect_after_s": 2.0,
    "dead_after_s": 10.0,
    "weights.cpu": 0.20,
    "weights.mem": 0.15,
    "weights.io": 0.05,
    "weights.wait": 0.25,
    "weights.rate": 0.15,
    "weights.success": 0.15,
    "weights.tail": 0.05,
    "k1": 0.5,
    "k2": 0.3,
    "max_queue": 100.0,
    "limit_critical": 50.0,
    "min_requests": 10.0,
    "max_error_rate": 0.5,
    "beta": 0.5,
    "t_degraded": 0.40,
    "t_overloaded": 0.20,
    "delta": 0.10,
    "flap_window": 50.0,
    "max_flaps": 6.0,
    "max_quarantined_fraction": 0.5,
    "quarantine_memory": 1000.0,
    "probation_ticks": 30.0,
    "max_backoff": 8.0,
    "error_half_life_s": 10.0,
    "max_consecutive_errors": 5.0,
    "ejection_s": 5.0,
    "tick_interval_ms": 50.0,
}
assert tuple(DEFAULTS) == p.PARAM_NAMES


def default_params(**overrides: float) -> np.ndarray:
    """A fresh float64 parameter vector with SCORING.md's defaults; keyword
    overrides use the parameter name with '.' spelled '_' (weights_cpu=0.3).
    An unknown name raises KeyError naming it."""
    vec = np.array([DEFAULTS[name] for name in p.PARAM_NAMES], dtype=np.float64)
    for key, value in overrides.items():
        name = key.replace("weights_", "weights.", 1) if key.startswith("weights_") else key
        if name not in DEFAULTS:
            raise KeyError(f"unknown score parameter {key!r}")
        vec[p.PARAM_NAMES.index(name)] = value
    return vec
