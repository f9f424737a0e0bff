"""The column groups a tick reads and writes.

A tick is a pure function: ``tick(params, inputs, prev, nxt, out, scratch)``.
Each group is a NamedTuple of 1-D numpy arrays of one length (the slot
capacity), so the same kernels run over shared-memory views (the live engine)
and over private arrays (replay, tests, benchmarks).  ``make_*`` allocate
groups holding "nothing": zeros, except the columns whose neutral value is
not 0 (`slots` 1, `err_age` +inf, `state` UNREGISTERED).

dtypes and column order are part of the contract: numba compiles one
specialisation per dtype combination, and the tick worker warms up with the
exact dtypes it will use.  The engine keeps `TickState` and `TickOutputs` in
shared memory; `TickInputs` is private to whoever drives the tick.

Rules for the driver (SCORING.md "Feedback from schedulers"): when a slot is
freed and reused, the new node's feedback columns start from their neutral
values (rif = fb_ok = fb_err = consec = 0, err_age = +inf) and its first tick
is flagged `fresh`; the kernel then ignores every `prev` value of the slot.
"""

from typing import NamedTuple

import numpy as np

from kernels.params import UNREGISTERED


class TickInputs(NamedTuple):
    """What the driver hands the tick for each slot."""

    active: np.ndarray  # u1: 1 if a node is registered in the slot
    fresh: np.ndarray  # u1: 1 on the node's first tick since (re)registration
    new_hb: np.ndarray  # u1: 1 if >= 1 heartbeat arrived since the previous tick
    age: np.ndarray  # f8: seconds since the latest heartbeat was received
    cpu: np.ndarray  # f8 in [0, 1]
    mem: np.ndarray  # f8 in [0, 1]
    queue: np.ndarray  # f8 >= 0
    avg_job_s: np.ndarray  # f8 >= 0
    throughput: np.ndarray  # f8 >= 0 (shown, not scored)
    ok: np.ndarray  # f8 integer-valued >= 0 (if reported & HAS_OKERR)
    err: np.ndarray  # f8 integer-valued >= 0 (if reported & HAS_OKERR)
    io: np.ndarray  # f8 in [0, 1] (if reported & HAS_IO)
    p50_ms: np.ndarray  # f8 > 0 (if reported & HAS_TAIL)
    p95_ms: np.ndarray  # f8 >= p50_ms (if reported & HAS_TAIL)
    reported: np.ndarray  # u1: bitmask of kernels.params.HAS_*
    slots: np.ndarray  # f8 >= 1: jobs the node runs at once (1 if not reported)
    rif: np.ndarray  # f8 >= 0: jobs claimed and not released (in flight)
    fb_ok: np.ndarray  # f8 >= 0: ok releases since the previous tick
    fb_err: np.ndarray  # f8 >= 0: error releases since the previous tick
    consec: np.ndarray  # f8 >= 0: error releases since the latest ok release
    err_age: np.ndarray  # f8: seconds since the latest error release, +inf if none


class TickState(NamedTuple):
    """Per-node state carried from one tick to the next."""

    qema: np.ndarray  # f8: queue EMA (step 1)
    s: np.ndarray  # f8: smoothed score (step 10)
    state: np.ndarray  # u1: HEALTHY..DEAD, UNREGISTERED for an empty slot
    flap: np.ndarray  # f8: decayed count of state changes (step 12)
    n: np.ndarray  # i4: quarantines entered (step 12)
    probation: np.ndarray  # i4: consecutive good ticks while quarantined
    memory: np.ndarray  # i4: consecutive ticks neither QUARANTINED nor DEAD
    e_ok: np.ndarray  # f8 >= 0: decayed ok outcomes (step 2's error window)
    e_err: np.ndarray  # f8 >= 0: decayed error outcomes


class TickOutputs(NamedTuple):
    """Everything else a tick publishes."""

    score: np.ndarray  # f8 per slot: published desirability (step 13)
    raw: np.ndarray  # f8 per slot (step 9)
    wait: np.ndarray  # f8 per slot: sojourn seconds (step 2)
    liveness: np.ndarray  # f8 per slot: L (step 4)
    ranked: np.ndarray  # i4 per slot: slots by rank; the first n_ranked are valid
    weights: np.ndarray  # f8[7]: weights at the published P, order params.WEIGHT_NAMES
    counts: np.ndarray  # i8[5]: nodes per state HEALTHY..DEAD after the tick
    reason: np.ndarray  # u1 per slot: why the state changed this tick (kernels.reasons), 0 if not


INPUT_DTYPES = dict(
    active=np.uint8,
    fresh=np.uint8,
    new_hb=np.uint8,
    age=np.float64,
    cpu=np.float64,
    mem=np.float64,
    queue=np.float64,
    avg_job_s=np.float64,
    throughput=np.float64,
    ok=np.float64,
    err=np.float64,
    io=np.float64,
    p50_ms=np.float64,
    p95_ms=np.float64,
    reported=np.uint8,
    slots=np.float64,
    rif=np.float64,
    fb_ok=np.float64,
    fb_err=np.float64,
    consec=np.float64,
    err_age=np.float64,
)
STATE_DTYPES = dict(
    qema=np.float64,
    s=np.float64,
    state=np.uint8,
    flap=np.float64,
    n=np.int32,
    probation=np.int32,
    memory=np.int32,
    e_ok=np.float64,
    e_err=np.float64,
)
OUTPUT_DTYPES = dict(
    score=np.float64,
    raw=np.float64,
    wait=np.float64,
    liveness=np.float64,
    ranked=np.int32,
    reason=np.uint8,
)
assert tuple(INPUT_DTYPES) == TickInputs._fields
assert tuple(STATE_DTYPES) == TickState._fields


def make_inputs(capacity: int) -> TickInputs:
    """Inputs of `capacity` empty slots (slots = 1, err_age = +inf, the rest 0)."""
    inp = TickInputs(**{k: np.zeros(capacity, dt) for k, dt in INPUT_DTYPES.items()})
    inp.slots[:] = 1.0
    inp.err_age[:] = np.inf
    return inp


def make_state(capacity: int) -> TickState:
    """State of `capacity` slots that held no node last tick."""
    st = TickState(**{k: np.zeros(capacity, dt) for k, dt in STATE_DTYPES.items()})
    st.state[:] = UNREGISTERED
    return st


def make_outputs(capacity: int) -> TickOutputs:
    cols = {k: np.zeros(capacity, dt) for k, dt in OUTPUT_DTYPES.items()}
    return TickOutputs(**cols, weights=np.zeros(7, np.float64), counts=np.zeros(5, np.int64))
