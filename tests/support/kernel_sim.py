"""A small driver for kernel tests: slots, heartbeats and ticks on a logical clock.

`Sim` plays the role of the engine around `kernels.tick`: it keeps the input
columns, marks fresh/new slots, computes ages exactly as replay does
(`((k - a) * tick_interval_ms) / 1000`), swaps the state buffers after each
tick and poisons the buffers the tick must overwrite, so a field the kernel
forgets to write shows up as garbage (checked in ``test_kernel_sim.py``).
"""

import numpy as np

from kernels import (HAS_IO, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT, default_params, make_inputs,
                     make_outputs, make_state, tick)

TICK_MS = 50


def poison(group, rng):
    """Fill every column of a state/output group with garbage."""
    for col in group:
        if col.dtype.kind == "f":
            col[:] = rng.uniform(-5.0, 5.0, col.shape[0])
        else:
            col[:] = rng.integers(0, 200, col.shape[0])


class Sim:
    """Drives `kernels.tick` tick by tick; slot i holds at most one node."""

    def __init__(self, capacity=4, params=None, seed=0, **overrides):
        self.params = default_params(**overrides) if params is None else params
        self.capacity = capacity
        self.inp = make_inputs(capacity)
        self.prev = make_state(capacity)
        self.nxt = make_state(capacity)
        self.out = make_outputs(capacity)
        self.last = [0] * capacity
        self.k = 0
        self.rng = np.random.default_rng(seed)
        self.result = None

    def hb(self, slot, cpu=0.0, mem=0.0, queue=0.0, avg_job_s=0.0, throughput=None,
           ok=None, err=None, io=None, p50_ms=None, p95_ms=None):
        """A heartbeat arriving just before the next tick (registers the slot)."""
        inp = self.inp
        if not inp.active[slot]:
            inp.active[slot] = 1
            inp.fresh[slot] = 1
        inp.new_hb[slot] = 1
        inp.cpu[slot], inp.mem[slot] = cpu, mem
        inp.queue[slot], inp.avg_job_s[slot] = queue, avg_job_s
        # Optional metrics: the bit a heartbeat sets when it carries them.
        optional = ((HAS_THROUGHPUT, {"throughput": throughput}),
                    (HAS_OKERR, {"ok": ok, "err": err}),
                    (HAS_IO, {"io": io}),
                    (HAS_TAIL, {"p50_ms": p50_ms, "p95_ms": p95_ms}))
        rep = 0
        for bit, values in optional:
            if next(iter(values.values())) is not None:
                rep |= bit
                for col, v in values.items():
                    getattr(inp, col)[slot] = v
        inp.reported[slot] = rep
        self.last[slot] = self.k

    def forget(self, slot):
        self.inp.active[slot] = 0
        self.inp.fresh[slot] = 0
        self.inp.new_hb[slot] = 0

    def step(self):
        """Compute tick k; afterwards `self.state` is the new NodeState."""
        for slot in range(self.capacity):
            self.inp.age[slot] = ((self.k - self.last[slot]) * TICK_MS) / 1000
        poison(self.nxt, self.rng)
        poison(self.out, self.rng)
        self.result = tick(self.params, self.inp, self.prev, self.nxt, self.out)
        self.prev, self.nxt = self.nxt, self.prev
        self.inp.fresh[:] = 0
        self.inp.new_hb[:] = 0
        self.k += 1
        return self.result

    def run(self, ticks, feed=None):
        """Step `ticks` times; `feed(sim)` may send heartbeats before each tick.
        Returns the list of states of every slot after each tick."""
        history = []
        for _ in range(ticks):
            if feed is not None:
                feed(self)
            self.step()
            history.append(self.state.state.copy())
        return history

    @property
    def state(self):
        return self.prev

    @property
    def ranked(self):
        return list(self.out.ranked[: self.result[0]])

