"""The benchmark baselines compute what the kernels compute.

Random multi-tick worlds (registrations, forgetting, silence, death, every
optional metric on and off, thresholds crossed) are driven through
`kernels.tick`, the vectorised NumPy baseline and the per-node Python
baseline; every published value must agree within 1e-9 and every state and
the ranking exactly.  `kernels.tick_ranked` (step 14 seeded by the previous
ranking) and `kernels.tick_radix` (radix sort in reused scratch) must equal
`kernels.tick` bit for bit, whatever the seed.
"""

import numpy as np
import pytest

from benchmarks.baselines.numpy_tick import numpy_tick
from benchmarks.baselines.python_tick import Node, python_tick
from kernels import default_params, make_inputs, make_outputs, make_state, tick
from kernels.pipeline import tick_radix, tick_ranked
from kernels.ranking import make_rank_scratch, rerank, sort_ranked


def _random_world(rng, n, k, inp, last, active):
    """Mutate inputs for tick k: some heartbeats, some forgets, ages."""
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
            active[i] = False
            inp.active[i] = inp.fresh[i] = inp.new_hb[i] = 0
            continue
        if rng.random() < 0.6 or inp.fresh[i]:
            inp.new_hb[i] = 1
            inp.cpu[i] = rng.choice([rng.random(), 0.98, 0.2])
            inp.mem[i] = rng.choice([rng.random(), 0.95, 0.1])
            inp.queue[i] = rng.choice([rng.uniform(0, 120), 0.0, 50.0])
            inp.avg_job_s[i] = rng.uniform(0, 2)
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
        inp.age[i] = ((k - last[i]) * 50) / 1000


@pytest.mark.parametrize("seed", range(6))
def test_baselines_match_kernels(seed):
    rng = np.random.default_rng(seed)
    n = 60
    params = default_params(max_flaps=1.5 if seed % 2 else 6.0, flap_window=5.0,
                            probation_ticks=2.0)
    groups = {name: (make_inputs(n), make_state(n), make_state(n), make_outputs(n))
              for name in ("k", "np", "kr", "kx")}
    scratch = make_rank_scratch(n)
    ref_inp = groups["k"][0]
    nodes: dict[int, Node] = {}
    last = np.zeros(n, np.int64)
    active = np.zeros(n, bool)
    prev_ranked, n_prev = np.zeros(n, np.int32), 0
    for k in range(40):
        _random_world(rng, n, k, ref_inp, last, active)
        for name in ("np", "kr", "kx"):
            for dst, src in zip(groups[name][0], ref_inp):
                dst[:] = src
        res = {}
        for name, fn in (("k", tick), ("np", numpy_tick)):
            inp, prev, nxt, out = groups[name]
            res[name] = fn(params, inp, prev, nxt, out)
        inp, prev, nxt, out = groups["kr"]
        res["kr"] = tick_ranked(params, inp, prev, nxt, out, prev_ranked, n_prev)
        inp, prev, nxt, out = groups["kx"]
        res["kx"] = tick_radix(params, inp, prev, nxt, out, scratch)
        # Python: slot i is node i; dict order must be slot order.
        for i in range(n):
            if not ref_inp.active[i]:
                nodes.pop(i, None)
                continue
            if i not in nodes or ref_inp.fresh[i]:
                nodes.pop(i, None)
            nd = nodes.get(i) or Node()
            for f in ("cpu", "mem", "queue", "avg_job_s", "throughput", "ok", "err", "io",
                      "p50_ms", "p95_ms", "age"):
                setattr(nd, f, float(getattr(ref_inp, f)[i]))
            nd.reported = int(ref_inp.reported[i])
            nd.new_hb = bool(ref_inp.new_hb[i])
            nodes[i] = nd
        nodes = dict(sorted(nodes.items()))
        py_ranked, py_P, py_live = python_tick(nodes, params)

        k_out, k_nxt = groups["k"][3], groups["k"][2]
        m = res["k"][0]
        for name in ("np", "kr", "kx"):
            _i, _p, nxt, out = groups[name]
            assert res[name][0] == m and res[name][2] == res["k"][2]
            assert res[name][1] == pytest.approx(res["k"][1], abs=1e-12)
            np.testing.assert_allclose(out.score, k_out.score, atol=1e-9)
            np.testing.assert_allclose(out.raw, k_out.raw, atol=1e-9)
            np.testing.assert_allclose(out.wait, k_out.wait, atol=1e-9)
            np.testing.assert_allclose(out.liveness, k_out.liveness, atol=1e-9)
            np.testing.assert_array_equal(nxt.state, k_nxt.state)
            np.testing.assert_array_equal(nxt.n, k_nxt.n)
            np.testing.assert_array_equal(nxt.probation, k_nxt.probation)
            np.testing.assert_array_equal(nxt.memory, k_nxt.memory)
            np.testing.assert_array_equal(out.counts, k_out.counts)
            assert out.ranked[:m].tolist() == k_out.ranked[:m].tolist()
        assert py_live == res["k"][2] and py_P == pytest.approx(res["k"][1], abs=1e-12)
        assert py_ranked == k_out.ranked[:m].tolist()
        for i, nd in nodes.items():
            assert nd.score == pytest.approx(k_out.score[i], abs=1e-9)
            assert nd.state == k_nxt.state[i]
        # the kernel's exact bits for the tick_ranked variant
        assert np.array_equal(groups["kr"][3].score, k_out.score)
        assert np.array_equal(groups["kx"][3].score, k_out.score)
        assert np.array_equal(groups["kx"][3].ranked[:m], k_out.ranked[:m])
        prev_ranked, n_prev = groups["kr"][3].ranked.copy(), m
        for g in groups.values():
            g[0].fresh[:] = 0
            g[0].new_hb[:] = 0
        for name in groups:
            inp, prev, nxt, out = groups[name]
            groups[name] = (inp, nxt, prev, out)


@pytest.mark.parametrize("n, levels, hint", [(0, 1, "none"), (5, 2, "sorted"), (3000, 7, "sorted"),
                                             (3000, 3000, "shuffled"), (3000, 3000, "garbage"),
                                             (20000, 50, "nearly")])
def test_rerank_equals_sort_whatever_the_hint(n, levels, hint):
    rng = np.random.default_rng(n + levels)
    score = np.zeros(n + 10)
    score[:n] = rng.integers(1, levels + 1, n) / levels
    cand = np.flatnonzero(score > 0).astype(np.int32)
    expected = cand.copy()
    sort_ranked(score, expected, len(cand))
    if hint == "none":
        prev = np.zeros(0, np.int32)
    elif hint == "sorted":
        prev = expected.copy()
    elif hint == "shuffled":
        prev = rng.permutation(expected).astype(np.int32)
    elif hint == "garbage":
        prev = rng.integers(-5, n + 50, n).astype(np.int32)
    else:
        prev = expected.copy()
        for _ in range(n // 20):
            a, b = rng.integers(0, n, 2)
            prev[a], prev[b] = prev[b], prev[a]
    got = cand.copy()
    rerank(score, got, len(cand), prev, len(prev))
    assert got.tolist() == expected.tolist()
