"""The routing simulator reproduces queueing theory (so its tables can be trusted).

Both checks run the simulator's own code path (`build_world` + `cluster.run`)
on worlds of identical exponential servers, and compare with closed forms at
the realized input (arrival rate and mean job size of the measured jobs), so
that what is tested is the queue, not the sampling of its input:

* M/M/c (Erlang C).  One node with c workers, Poisson arrivals, exponential
  service, FIFO: the mean wait in queue is
  ``W_q = C(c, a) / (c*mu - lambda)``, ``a = lambda / mu``,
  ``C(c, a) = (a^c / c! * c / (c - a)) / (sum_{k<c} a^k / k! + a^c / c! * c / (c - a))``.
  c = 2, rho = 0.5: W_q = (1/3)/(2-1) = 1/3 s with mu = 1.  Over 10 seeds
  at 60K jobs the relative error had a standard deviation of 2.4%, so 600K
  jobs give about 0.8%: 2% is 2.5 sigma.
* The supermarket model (Mitzenmacher): n single-worker nodes, arrivals at
  rate lambda*n, each job to the shorter of 2 uniformly random queues (true
  lengths), exponential service of mean 1.  As n grows the fraction of queues
  with at least k jobs tends to ``s_k = lambda^(2^k - 1)``: at lambda = 0.9,
  s_1 = 0.9, s_2 = 0.729, s_3 = 0.478 (random routing would give
  lambda^k: 0.81, 0.729 for k = 2, 3).  At n = 300 over 6 seeds the errors of
  k = 1..3 stayed within 0.6% (k = 4, s_4 = 0.206, within 3.5%: the finite-n
  correction and noise; not asserted).
"""

import math

import numpy as np
import pytest

from benchmarks.sim.cluster import run
from benchmarks.sim.policies import Random, TrueTwoChoices
from benchmarks.sim.scenarios import Scenario, build_world
from kernels.defaults import default_params


def erlang_c_wait(c: int, lam: float, mu: float) -> float:
    a = lam / mu
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top) / (c * mu - lam)


def _identical_servers(name, n, c, load, duration, warmup):
    # Heartbeats and ticks are irrelevant to these policies: make them rare.
    return Scenario(
        name,
        name,
        n_nodes=n,
        duration_s=duration,
        warmup_s=warmup,
        load=((0.0, load), (1.0, load)),
        sizes="exp",
        node_slots=(c,),
        speed_sd=0.0,
        noise_sigma=(0.0, 0.0),
        schedulers=1,
        max_retries=0,
        hb_interval_s=duration / 10,
        tick_s=duration / 10,
    )


def _realized(world):
    sc = world.scenario
    m = (world.arr_t >= sc.warmup_s) & (world.arr_t < sc.duration_s)
    lam = m.sum() / (sc.duration_s - sc.warmup_s)
    return lam, world.size[m].mean()


def test_erlang_c_formula():
    # M/M/1 is the c = 1 case: W_q = rho / (mu - lambda); c = 2, rho = 0.5: 1/3.
    assert erlang_c_wait(1, 0.5, 1.0) == pytest.approx(1.0)
    assert erlang_c_wait(2, 1.0, 1.0) == pytest.approx(1 / 3)


def test_mmc_mean_wait_matches_erlang_c():
    c, rho = 2, 0.5
    sc = _identical_servers("mmc", 1, c, rho, duration=600_000 / (c * rho), warmup=200.0)
    w = build_world(sc, 11)
    m = run(w, Random, default_params(tick_interval_ms=sc.tick_s * 1000), np.random.default_rng(11))
    assert m["jobs"] > 590_000 and m["failed"] == 0
    lam, mean_size = _realized(w)
    expected = erlang_c_wait(c, lam, 1.0 / mean_size)
    assert abs(expected / (1 / 3) - 1) < 0.02  # the realized input is close to nominal
    assert m["mean_wait_s"] == pytest.approx(expected, rel=0.02)
    # response = wait + service: the node model adds no time of its own
    assert m["mean_s"] == pytest.approx(expected + mean_size, rel=0.01)


def test_supermarket_model_matches_fixed_point():
    n, lam_nominal = 300, 0.9
    sc = _identical_servers("supermarket", n, 1, lam_nominal, duration=600.0, warmup=60.0)
    w = build_world(sc, 5)
    m = run(
        w,
        TrueTwoChoices,
        default_params(tick_interval_ms=sc.tick_s * 1000),
        np.random.default_rng(5),
    )
    lam_arr, mean_size = _realized(w)
    lam = lam_arr * mean_size / n  # offered load per server, realized
    s = m["at_least_k"]
    assert s[0] == pytest.approx(1.0)
    for k in (1, 2, 3):
        assert s[k] == pytest.approx(lam ** (2**k - 1), rel=0.02), k
    # far from random routing's geometric tail (M/M/1: lambda^k)
    assert s[3] < 0.75 * lam**3
