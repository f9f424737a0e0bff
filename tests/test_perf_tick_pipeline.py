"""The two-pass pipeline's deferred quarantine admissions.

`kernels.tick` decides a step-12 admission candidate after the whole second
pass (the cap counts every node's state), and merges the candidates that
were not admitted back into the slot-ordered ranking candidates.  Worlds
where many nodes flap at once, with a cap that admits only some of them,
are checked against the vectorised NumPy baseline, which applies SCORING.md's
order literally (admissions in slot order after every node's step 11-12):
states, n, probation, memory, scores and the ranking must be identical.
"""

import numpy as np
import pytest

from benchmarks.baselines.numpy_tick import numpy_tick
from kernels import (
    HEALTHY,
    QUARANTINED,
    default_params,
    make_inputs,
    make_outputs,
    make_scratch,
    make_state,
    tick,
)

CARRIED = ("qema", "s", "state", "flap", "n", "probation", "memory", "e_ok", "e_err")


def _world(rng, n, flapping):
    inp = make_inputs(n)
    inp.active[:] = 1
    inp.new_hb[:] = 1
    inp.cpu[:] = rng.uniform(0.0, 0.9, n)
    inp.mem[:] = rng.uniform(0.0, 0.9, n)
    inp.queue[:] = rng.uniform(0.0, 20.0, n)
    inp.avg_job_s[:] = rng.uniform(0.01, 1.0, n)
    inp.age[:] = rng.uniform(0.0, 3.0, n)
    prev = make_state(n)
    prev.state[:] = rng.choice([0, 0, 1, 2, 3], n).astype(np.uint8)
    prev.s[:] = rng.uniform(0.0, 1.0, n)
    prev.qema[:] = inp.queue
    prev.n[:] = rng.integers(0, 3, n)
    prev.memory[:] = rng.integers(0, 1000, n)  # some reach quarantine_memory
    prev.flap[:] = np.where(rng.random(n) < flapping, rng.uniform(6.0, 12.0, n), 0.5)
    return inp, prev


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("flapping", [0.2, 0.9])
def test_capped_admissions_match_the_literal_order(seed, fraction, flapping):
    rng = np.random.default_rng(seed)
    n = 300
    params = default_params(max_quarantined_fraction=fraction)
    inp, prev = _world(rng, n, flapping)
    ours, theirs = make_state(n), make_state(n)
    out, ref = make_outputs(n), make_outputs(n)
    m, P, live = tick(params, inp, prev, ours, out, make_scratch(n))
    m_ref, P_ref, live_ref = numpy_tick(params, inp, prev, theirs, ref)
    assert (m, P, live) == (m_ref, P_ref, live_ref)
    for name in CARRIED:
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), err_msg=name)
    for name in ("score", "raw", "wait", "liveness", "counts"):
        np.testing.assert_array_equal(getattr(out, name), getattr(ref, name), err_msg=name)
    np.testing.assert_array_equal(out.ranked[:m], ref.ranked[:m])
    # The worlds do exercise the deferred path: some candidates were refused
    # (kept HEALTHY and ranked) whenever the cap is below the candidates.
    cap = int(np.floor(fraction * live))
    assert int((ours.state == QUARANTINED).sum()) <= max(cap, int((prev.state == 3).sum()))
    if fraction == 0.0:
        assert int((ours.state == QUARANTINED).sum()) <= int((prev.state == 3).sum())
        refused = (ours.flap >= 6.0) & (ours.state == HEALTHY) & (out.score > 0)
        assert refused.any()
