"""The benchmark baselines compute what the kernels compute.

Random multi-tick worlds (registrations, forgetting and slot reuse, silence,
death, every optional metric on and off, slots, scheduler feedback with
error runs, thresholds crossed) are driven through `kernels.tick`, the
vectorised NumPy baseline and the per-node Python baseline.  The NumPy
baseline repeats the kernel's arithmetic in the same order (see its
docstring), so every value it publishes or carries must be bit-identical;
the Python one must agree within 1e-12; states and rankings exactly.
"""

import math

import numpy as np
import pytest

from benchmarks.baselines.numpy_tick import numpy_tick
from benchmarks.baselines.python_tick import Node, python_tick
from kernels import default_params, make_inputs, make_outputs, make_scratch, make_state, tick
from kernels.params import MIN_REQUESTS

FEEDBACK = ("rif", "fb_ok", "fb_err", "consec", "err_age")


def _random_world(rng, n, k, inp, last, active, err_tick):
    """Mutate inputs for tick k: some heartbeats, feedback, forgets, ages."""
    inp.fb_ok[:] = 0.0
    inp.fb_err[:] = 0.0
    for i in range(n):
        r = rng.random()
        if not active[i]:
            if r < 0.3:
                active[i] = True
                inp.active[i] = 1
                inp.fresh[i] = 1
            else:
                continue
        elif r < 0.03:
            # forgotten: the driver resets the slot's feedback
            active[i] = False
            inp.active[i] = inp.fresh[i] = inp.new_hb[i] = 0
            inp.rif[i] = inp.consec[i] = 0.0
            inp.err_age[i] = math.inf
            err_tick[i] = -1
            continue
        if rng.random() < 0.6 or inp.fresh[i]:
            inp.new_hb[i] = 1
            inp.cpu[i] = rng.choice([rng.random(), 0.98, 0.2])
            inp.mem[i] = rng.choice([rng.random(), 0.95, 0.1])
            inp.queue[i] = rng.choice([rng.uniform(0, 120), 0.0, 50.0])
            inp.avg_job_s[i] = rng.choice([rng.uniform(0, 2), 0.0, 0.5])
            inp.slots[i] = rng.choice([1.0, 1.0, float(rng.integers(2, 16))])
            rep = int(rng.integers(0, 16))
            inp.reported[i] = rep
            inp.throughput[i] = rng.uniform(0, 50) if rep & 1 else 0.0
            inp.ok[i] = float(rng.integers(0, 40)) if rep & 2 else 0.0
            inp.err[i] = float(rng.integers(0, 40)) if rep & 2 else 0.0
            inp.io[i] = rng.random() if rep & 4 else 0.0
            p50 = rng.uniform(1, 10)
            inp.p50_ms[i] = p50 if rep & 8 else 0.0
            inp.p95_ms[i] = p50 * rng.uniform(1, 4) if rep & 8 else 0.0
            last[i] = k - int(rng.integers(0, 3)) * (rng.random() < 0.1) * 100
        if rng.random() < 0.4:
            inp.rif[i] = float(rng.choice([0, rng.integers(0, 30), rng.integers(100, 140)]))
            inp.fb_ok[i] = float(rng.integers(0, 6))
            inp.fb_err[i] = float(rng.integers(0, 6))
            if inp.fb_err[i] > 0:
                err_tick[i] = k
            inp.consec[i] = (
                0.0 if inp.fb_ok[i] > 0 and rng.random() < 0.5 else inp.consec[i] + inp.fb_err[i]
            )
        inp.err_age[i] = math.inf if err_tick[i] < 0 else ((k - err_tick[i]) * 50) / 1000
        inp.age[i] = ((k - last[i]) * 50) / 1000


@pytest.mark.parametrize("seed", range(6))
def test_baselines_match_kernels(seed):
    rng = np.random.default_rng(seed)
    n = 60
    params = default_params(
        max_flaps=1.5 if seed % 2 else 6.0,
        flap_window=5.0,
        probation_ticks=2.0,
        min_requests=10.0 if seed < 3 else 40.0,
    )
    groups = {
        name: (make_inputs(n), make_state(n), make_state(n), make_outputs(n))
        for name in ("k", "np")
    }
    scratch = make_scratch(n)
    ref_inp = groups["k"][0]
    nodes: dict[int, Node] = {}
    last = np.zeros(n, np.int64)
    err_tick = np.full(n, -1, np.int64)
    active = np.zeros(n, bool)
    by_window = by_ejection = 0
    for k in range(40):
        _random_world(rng, n, k, ref_inp, last, active, err_tick)
        for dst, src in zip(groups["np"][0], ref_inp, strict=True):
            dst[:] = src
        inp, prev, nxt, out = groups["k"]
        res_k = tick(params, inp, prev, nxt, out, scratch)
        inp, prev, nxt, out = groups["np"]
        res_np = numpy_tick(params, inp, prev, nxt, out)
        # Python: slot i is node i; dict order must be slot order.
        for i in range(n):
            if not ref_inp.active[i]:
                nodes.pop(i, None)
                continue
            if i not in nodes or ref_inp.fresh[i]:
                nodes.pop(i, None)
            nd = nodes.get(i) or Node()
            for f in (
                "cpu",
                "mem",
                "queue",
                "avg_job_s",
                "throughput",
                "ok",
                "err",
                "io",
                "p50_ms",
                "p95_ms",
                "age",
                "slots",
            ) + FEEDBACK:
                setattr(nd, f, float(getattr(ref_inp, f)[i]))
            nd.reported = int(ref_inp.reported[i])
            nd.new_hb = bool(ref_inp.new_hb[i])
            nodes[i] = nd
        nodes = dict(sorted(nodes.items()))
        py_ranked, py_P, py_live = python_tick(nodes, params)

        _ki, _kp, k_nxt, k_out = groups["k"]
        _ni, _np, np_nxt, np_out = groups["np"]
        m = res_k[0]
        assert res_np[0] == m and res_np[2] == res_k[2]
        assert res_np[1] == res_k[1]
        for a, b in (
            (np_out.score, k_out.score),
            (np_out.raw, k_out.raw),
            (np_out.wait, k_out.wait),
            (np_out.liveness, k_out.liveness),
            (np_nxt.qema, k_nxt.qema),
            (np_nxt.s, k_nxt.s),
            (np_nxt.flap, k_nxt.flap),
            (np_nxt.e_ok, k_nxt.e_ok),
            (np_nxt.e_err, k_nxt.e_err),
            (np_out.weights, k_out.weights),
        ):
            np.testing.assert_array_equal(a, b)
        for a, b in (
            (np_nxt.state, k_nxt.state),
            (np_nxt.n, k_nxt.n),
            (np_nxt.probation, k_nxt.probation),
            (np_nxt.memory, k_nxt.memory),
            (np_out.counts, k_out.counts),
        ):
            np.testing.assert_array_equal(a, b)
        assert np_out.ranked[:m].tolist() == k_out.ranked[:m].tolist()
        assert py_live == res_k[2] and py_P == pytest.approx(res_k[1], rel=0, abs=1e-12)
        assert py_ranked == k_out.ranked[:m].tolist()
        for i, nd in nodes.items():
            assert nd.score == pytest.approx(k_out.score[i], rel=0, abs=1e-12)
            assert nd.raw == pytest.approx(k_out.raw[i], rel=0, abs=1e-12)
            assert nd.e_ok == pytest.approx(k_nxt.e_ok[i], rel=0, abs=1e-12)
            assert nd.e_err == pytest.approx(k_nxt.e_err[i], rel=0, abs=1e-12)
            assert nd.state == k_nxt.state[i]
            total = nd.e_ok + nd.e_err
            window = total >= params[MIN_REQUESTS] and nd.e_err / total >= 0.5
            ejection = nd.consec >= 5 and nd.err_age < 5.0
            if window or ejection:
                assert nd._trip and k_out.raw[i] == 0.0
            by_window += window
            by_ejection += ejection
        for g in groups.values():
            g[0].fresh[:] = 0
            g[0].new_hb[:] = 0
        for name in groups:
            inp, prev, nxt, out = groups[name]
            groups[name] = (inp, nxt, prev, out)
    # the worlds reach the v2 breaker conditions, not only the v1 ones
    assert by_window > 0 and by_ejection > 0
