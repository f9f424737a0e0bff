"""A small driver for kernel tests: slots, heartbeats, feedback and ticks on a logical clock.

`Sim` plays the role of the engine around `kernels.tick`: it keeps the input
columns, marks fresh/new slots, computes ages and error ages exactly as
replay does (`((k - a) * tick_interval_ms) / 1000`), applies scheduler
feedback with the trace's semantics (rif and consec replace, ok/err add to
this tick's releases, an error makes this tick the latest error), resets a
forgotten slot's feedback, swaps the state buffers after each tick and
poisons the buffers the tick must overwrite, so a field the kernel forgets to
write shows up as garbage.  ``test_kernel_sim.py`` checks the driver itself
and `warm_up`.
"""

import math

import numpy as np

from kernels import (
    HAS_IO,
    HAS_OKERR,
    HAS_TAIL,
    HAS_THROUGHPUT,
    default_params,
    make_inputs,
    make_outputs,
    make_scratch,
    make_state,
    tick,
)

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
        self.scratch = make_scratch(capacity)
        self.last = [0] * capacity
        self.err_tick = [None] * capacity
        self.k = 0
        self.rng = np.random.default_rng(seed)
        self.result = None

    def hb(
        self,
        slot,
        cpu=0.0,
        mem=0.0,
        queue=0.0,
        avg_job_s=0.0,
        throughput=None,
        ok=None,
        err=None,
        io=None,
        p50_ms=None,
        p95_ms=None,
        slots=None,
    ):
        """A heartbeat arriving just before the next tick (registers the slot)."""
        inp = self.inp
        if not inp.active[slot]:
            inp.active[slot] = 1
            inp.fresh[slot] = 1
        inp.new_hb[slot] = 1
        inp.cpu[slot], inp.mem[slot] = cpu, mem
        inp.queue[slot], inp.avg_job_s[slot] = queue, avg_job_s
        inp.slots[slot] = 1.0 if slots is None else slots
        rep = 0
        if throughput is not None:
            rep |= HAS_THROUGHPUT
            inp.throughput[slot] = throughput
        if ok is not None:
            rep |= HAS_OKERR
            inp.ok[slot], inp.err[slot] = ok, err
        if io is not None:
            rep |= HAS_IO
            inp.io[slot] = io
        if p50_ms is not None:
            rep |= HAS_TAIL
            inp.p50_ms[slot], inp.p95_ms[slot] = p50_ms, p95_ms
        inp.reported[slot] = rep
        self.last[slot] = self.k

    def fb(self, slot, rif=None, ok=0, err=0, consec=None):
        """Scheduler feedback for the next tick (a registered slot only)."""
        inp = self.inp
        assert inp.active[slot], "feedback for an unregistered slot is ignored"
        if rif is not None:
            inp.rif[slot] = rif
        if consec is not None:
            inp.consec[slot] = consec
        inp.fb_ok[slot] += ok
        inp.fb_err[slot] += err
        if err > 0:
            self.err_tick[slot] = self.k

    def forget(self, slot):
        inp = self.inp
        inp.active[slot] = 0
        inp.fresh[slot] = 0
        inp.new_hb[slot] = 0
        inp.rif[slot] = inp.fb_ok[slot] = inp.fb_err[slot] = inp.consec[slot] = 0.0
        inp.err_age[slot] = math.inf
        self.err_tick[slot] = None

    def step(self):
        """Compute tick k; afterwards `self.state` is the new TickState."""
        for slot in range(self.capacity):
            self.inp.age[slot] = ((self.k - self.last[slot]) * TICK_MS) / 1000
            e = self.err_tick[slot]
            self.inp.err_age[slot] = math.inf if e is None else ((self.k - e) * TICK_MS) / 1000
        poison(self.nxt, self.rng)
        poison(self.out, self.rng)
        self.result = tick(self.params, self.inp, self.prev, self.nxt, self.out, self.scratch)
        self.prev, self.nxt = self.nxt, self.prev
        self.inp.fresh[:] = 0
        self.inp.new_hb[:] = 0
        self.inp.fb_ok[:] = 0.0
        self.inp.fb_err[:] = 0.0
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
