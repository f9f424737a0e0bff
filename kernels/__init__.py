"""Numba kernels of the score pipeline (SCORING.md steps 1-14).

Public API:
  * `tick(params, inputs, prev, nxt, out) -> (n_ranked, P, live)`: one tick,
    a pure function over the column groups below (see `kernels.pipeline`).
  * `TickInputs`, `NodeState`, `TickOutputs` and `make_inputs`,
    `make_state`, `make_outputs`: the column groups and their allocators.
  * `default_params()`: SCORING.md's defaults as a parameter vector.
  * the node states `HEALTHY` .. `DEAD`, `UNREGISTERED`, and the `HAS_*` bits.
  * `warm_up()`: compile `tick` for the contract's dtypes before the first tick.

One module per stage: queue (1-2), goodness (3), liveness (4), pressure (5),
weights (6), backpressure (7), breaker (8), smoothing (9-10), hysteresis (11),
quarantine (12), ranking (13-14); `pipeline` fuses them into three passes.
"""

import importlib

from kernels.params import (DEAD, DEGRADED, HAS_IO, HAS_OKERR, HAS_TAIL,
                            HAS_THROUGHPUT, HEALTHY, N_STATES, OVERLOADED,
                            QUARANTINED, UNREGISTERED, WEIGHT_NAMES)

__all__ = [
    "tick", "warm_up", "default_params",
    "TickInputs", "NodeState", "TickOutputs",
    "make_inputs", "make_state", "make_outputs",
    "HEALTHY", "DEGRADED", "OVERLOADED", "QUARANTINED", "DEAD", "UNREGISTERED",
    "N_STATES", "HAS_THROUGHPUT", "HAS_OKERR", "HAS_IO", "HAS_TAIL", "WEIGHT_NAMES",
]

# Names backed by numba (or by modules that import it) resolve on first use, so
# that `kernels.params` (constants only) can be imported by light clients
# (heartbeat senders) without loading numba.
_LAZY = {"tick": "pipeline", "default_params": "defaults",
         "TickInputs": "columns", "NodeState": "columns", "TickOutputs": "columns",
         "make_inputs": "columns", "make_state": "columns", "make_outputs": "columns"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"kernels.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")


def warm_up() -> None:
    """Compile `tick` (or load it from numba's cache) for the exact dtypes of
    `kernels.columns`, by running two ticks over two tiny slots."""
    from kernels.columns import make_inputs, make_outputs, make_state
    from kernels.defaults import default_params
    from kernels.pipeline import tick

    inp = make_inputs(2)
    prev, nxt = make_state(2), make_state(2)
    out = make_outputs(2)
    params = default_params()
    inp.active[0] = 1
    inp.fresh[0] = 1
    inp.new_hb[0] = 1
    inp.cpu[0] = 0.5
    inp.mem[0] = 0.5
    inp.queue[0] = 1.0
    inp.avg_job_s[0] = 0.1
    tick(params, inp, prev, nxt, out)
    inp.fresh[0] = 0
    tick(params, inp, nxt, prev, out)
