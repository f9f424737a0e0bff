"""Numba kernels of the score pipeline (SCORING.md version 2, steps 1-14).

Public API:
  * `tick(params, inputs, prev, nxt, out, scratch) -> (n_ranked, P, live)`:
    one tick, a pure function over the column groups below (see
    `kernels.pipeline`); `make_scratch(capacity)` allocates its work arrays.
  * `TickInputs`, `TickState`, `TickOutputs` and `make_inputs`,
    `make_state`, `make_outputs`: the column groups and their allocators.
  * `default_params()` and `DEFAULTS`: SCORING.md's defaults.
  * the node states `HEALTHY` .. `DEAD`, `UNREGISTERED`, the `HAS_*` bits and
    `WEIGHT_NAMES`.
  * `warm_up()`: compile `tick` for the contract's dtypes before the first tick.

One module per stage: queue (steps 1-2), window (2, the error window),
goodness (3), percentile (3, R), liveness (4), pressure (5), weights (6),
backpressure (7), breaker (8), smoothing (9-10), hysteresis (11),
quarantine (12), ranking (13-14); `pipeline` fuses them into two passes.
`reasons` names why a state changed (the per-node `reason` output the
breaker, hysteresis and quarantine stages write); `events` diffs two ticks'
states into the rows of the event log.

Importing this package, `kernels.params` or `kernels.defaults` does not
import numba: every name backed by compiled code is resolved on first use,
so the configuration can read the parameter layout and defaults cheaply.
"""

import importlib

from kernels.params import (
    DEAD,
    DEGRADED,
    HAS_IO,
    HAS_OKERR,
    HAS_TAIL,
    HAS_THROUGHPUT,
    HEALTHY,
    N_STATES,
    OVERLOADED,
    QUARANTINED,
    UNREGISTERED,
    WEIGHT_NAMES,
)

__all__ = [
    "tick",
    "make_scratch",
    "TickScratch",
    "warm_up",
    "default_params",
    "DEFAULTS",
    "TickInputs",
    "TickState",
    "TickOutputs",
    "make_inputs",
    "make_state",
    "make_outputs",
    "HEALTHY",
    "DEGRADED",
    "OVERLOADED",
    "QUARANTINED",
    "DEAD",
    "UNREGISTERED",
    "N_STATES",
    "HAS_THROUGHPUT",
    "HAS_OKERR",
    "HAS_IO",
    "HAS_TAIL",
    "WEIGHT_NAMES",
    "STATE_NAMES",
]

STATE_NAMES = ("healthy", "degraded", "overloaded", "quarantined", "dead")

# name -> module that defines it, imported on first access (PEP 562).
_LAZY = {
    "tick": "kernels.pipeline",
    "make_scratch": "kernels.pipeline",
    "TickScratch": "kernels.pipeline",
    "TickInputs": "kernels.columns",
    "TickState": "kernels.columns",
    "TickOutputs": "kernels.columns",
    "make_inputs": "kernels.columns",
    "make_state": "kernels.columns",
    "make_outputs": "kernels.columns",
    "default_params": "kernels.defaults",
    "DEFAULTS": "kernels.defaults",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def warm_up() -> None:
    """Compile `tick` (or load it from numba's cache) for the exact dtypes of
    `kernels.columns`, by running two ticks over two tiny slots: a first tick
    and a later one, with heartbeat outcomes and scheduler feedback."""
    from kernels.columns import make_inputs, make_outputs, make_state
    from kernels.defaults import default_params
    from kernels.pipeline import make_scratch, tick

    inp = make_inputs(2)
    prev, nxt = make_state(2), make_state(2)
    out = make_outputs(2)
    scratch = make_scratch(2)
    params = default_params()
    inp.active[0] = 1
    inp.fresh[0] = 1
    inp.new_hb[0] = 1
    inp.cpu[0] = 0.5
    inp.mem[0] = 0.5
    inp.queue[0] = 1.0
    inp.avg_job_s[0] = 0.1
    inp.reported[0] = HAS_OKERR
    inp.ok[0] = 1.0
    inp.rif[0] = 2.0
    inp.fb_ok[0] = 1.0
    tick(params, inp, prev, nxt, out, scratch)
    inp.fresh[0] = 0
    tick(params, inp, nxt, prev, out, scratch)
