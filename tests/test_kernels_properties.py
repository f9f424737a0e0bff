"""Property tests (hypothesis) of `kernels.tick` over random nodes and histories.

Properties:
  * every output is in range: score, raw, s, L in [0, 1], P in [0, 1], states
    valid, counts add up, the ranking is exactly the scored slots in order;
  * raw never rises when one node's cpu, mem, io, err or p95/p50 worsens, all
    else fixed; the same for queue and avg_job_s once the pressure feedback is
    off (k1 = k2 = 0) -- with it on, SCORING.md lets raw rise (pinned below);
  * a tripped breaker publishes 0 in the same tick;
  * a smoothed score oscillating inside a band narrower than delta never
    changes the state;
  * quarantine admissions never exceed floor(max_quarantined_fraction * live).
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import (DEAD, DEGRADED, HEALTHY, OVERLOADED, QUARANTINED, UNREGISTERED,
                     default_params)
from support.kernel_sim import Sim

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-12

unit = st.floats(0.0, 1.0)


@st.composite
def heartbeats(draw):
    """One valid heartbeat (as Sim.hb keyword arguments), often near a limit."""
    hb = dict(
        cpu=draw(st.one_of(unit, st.floats(0.9, 1.0))),
        mem=draw(st.one_of(unit, st.floats(0.9, 1.0))),
        queue=draw(st.one_of(st.floats(0.0, 20.0), st.floats(0.0, 300.0))),
        avg_job_s=draw(st.floats(0.0, 5.0)),
    )
    if draw(st.booleans()):
        hb["throughput"] = draw(st.floats(0.0, 1000.0))
    if draw(st.booleans()):
        hb["ok"] = draw(st.integers(0, 40))
        hb["err"] = draw(st.integers(0, 40))
    if draw(st.booleans()):
        hb["io"] = draw(unit)
    if draw(st.booleans()):
        p50 = draw(st.floats(0.1, 1000.0))
        hb["p50_ms"] = p50
        hb["p95_ms"] = p50 * draw(st.floats(1.0, 5.0))
    return hb


# A history: per tick, per slot, None (silence) or a heartbeat; plus occasional
# long silences (a jump of the slot's last receive) to reach suspect and dead.
@st.composite
def histories(draw, max_nodes=6, max_ticks=12):
    nodes = draw(st.integers(1, max_nodes))
    ticks = draw(st.integers(1, max_ticks))
    return [[(draw(st.one_of(st.none(), heartbeats(), heartbeats())),
              draw(st.sampled_from([0, 0, 0, 0, 50, 150, 199, 200, 400])))
             for _ in range(nodes)] for _ in range(ticks)]


def play(sim, tick_events):
    for slot, (hb, silence) in enumerate(tick_events):
        if hb is not None:
            sim.hb(slot, **hb)
        elif not sim.inp.active[slot]:
            continue
        if silence:
            sim.last[slot] = sim.k - silence
    return sim.step()


def is_tripped(sim, slot):
    """The breaker of SCORING.md step 8, from the published wait and qema."""
    inp = sim.inp
    if sim.state.qema[slot] >= 100 or sim.out.wait[slot] >= 30:
        return True
    if inp.cpu[slot] >= 0.98 or inp.mem[slot] >= 0.95:
        return True
    if inp.reported[slot] & 2:
        total = inp.ok[slot] + inp.err[slot]
        return total >= 20 and inp.err[slot] / total >= 0.5
    return False


@SETTINGS
@given(histories())
def test_outputs_in_range_and_breaker_publishes_zero(history):
    sim = Sim(capacity=len(history[0]) + 1, seed=len(history))
    for events in history:
        n_ranked, P, live = play(sim, events)
        st_, out = sim.state, sim.out
        active = sim.inp.active.astype(bool)
        assert 0.0 <= P <= 1.0
        assert live == int((out.liveness[active] > 0).sum())
        for arr in (out.score, out.raw, out.liveness, st_.s):
            assert ((arr >= 0.0) & (arr <= 1.0)).all()
        assert set(st_.state[active].tolist()) <= {HEALTHY, DEGRADED, OVERLOADED,
                                                   QUARANTINED, DEAD}
        assert (st_.state[~active] == UNREGISTERED).all()
        assert out.counts.tolist() == [int((st_.state[active] == k).sum()) for k in range(5)]
        assert (st_.flap >= 0).all() and (st_.n >= 0).all()
        scored = [i for i in range(sim.capacity) if out.score[i] > 0]
        expected = sorted(scored, key=lambda i: (-out.score[i], i))
        assert sim.ranked == expected and n_ranked == len(scored)
        for slot in np.flatnonzero(active):
            if out.score[slot] > 0:
                assert st_.state[slot] in (HEALTHY, DEGRADED)
            if is_tripped(sim, slot):
                assert out.raw[slot] == 0.0 and st_.s[slot] == 0.0
                assert out.score[slot] == 0.0
                assert st_.state[slot] in (OVERLOADED, QUARANTINED, DEAD)


# ---- monotonicity of raw

def worsen(hb, metric, amount):
    """A copy of `hb` with one metric made worse by `amount` in [0, 1]."""
    hb = dict(hb)
    if metric in ("cpu", "mem", "io"):
        hb[metric] = hb[metric] + (1.0 - hb[metric]) * amount
    elif metric == "queue":
        hb["queue"] = hb["queue"] + 200.0 * amount
    elif metric == "avg_job_s":
        hb["avg_job_s"] = hb["avg_job_s"] + 10.0 * amount
    elif metric == "err":
        hb["err"] = hb["err"] + int(40 * amount)
    elif metric == "tail":
        hb["p95_ms"] = hb["p95_ms"] * (1.0 + 4.0 * amount)
    return hb


@st.composite
def full_heartbeats(draw):
    """A heartbeat that reports every optional metric."""
    hb = draw(heartbeats())
    hb.setdefault("throughput", draw(st.floats(0.0, 1000.0)))
    hb.setdefault("ok", draw(st.integers(0, 40)))
    hb.setdefault("err", draw(st.integers(0, 40)))
    hb.setdefault("io", draw(unit))
    if "p50_ms" not in hb:
        hb["p50_ms"] = 10.0
        hb["p95_ms"] = 10.0 * draw(st.floats(1.0, 5.0))
    return hb


LOCAL = ["cpu", "mem", "io", "err", "tail"]   # no effect on P or T
GLOBAL = ["queue", "avg_job_s"]               # move P, hence the weights


def raw_after(hbs_per_tick, params):
    sim = Sim(capacity=len(hbs_per_tick[0]), params=params)
    for hbs in hbs_per_tick:
        for slot, hb in enumerate(hbs):
            sim.hb(slot, **hb)
        sim.step()
    return sim.out.raw.copy()


@SETTINGS
@given(st.lists(full_heartbeats(), min_size=1, max_size=5),
       st.sampled_from(LOCAL + GLOBAL), st.floats(0.0, 1.0),
       st.integers(0, 4), st.booleans(), st.integers(0, 3))
def test_raw_never_rises_when_a_metric_worsens(hbs, metric, amount, pick, feedback, history):
    target = pick % len(hbs)
    params = default_params()
    if metric in GLOBAL or not feedback:
        params = default_params(k1=0.0, k2=0.0)
    # `history` identical ticks first (0: the worsened tick is the first tick)
    before = [list(hbs)] * history
    base = raw_after(before + [hbs], params)
    worse_hbs = list(hbs)
    worse_hbs[target] = worsen(hbs[target], metric, amount)
    worse = raw_after(before + [worse_hbs], params)
    assert worse[target] <= base[target] + TOL


def test_pressure_feedback_can_raise_raw_when_queue_worsens():
    """SCORING.md as written: a lone node whose only good metric is wait gains
    from its own queue growing, because P moves weight onto wait.  Pinned so
    that a change here is a deliberate change of the definition."""
    hb = dict(cpu=0.97, mem=0.94, io=1.0, ok=0, err=19, p50_ms=10.0, p95_ms=30.0, avg_job_s=1.0)
    low = raw_after([[dict(hb, queue=0.0)]], default_params())[0]
    high = raw_after([[dict(hb, queue=3.0)]], default_params())[0]
    # g_cpu = 1 - 0.97/0.98 = 0.0102, g_mem = 1 - 0.94/0.95 = 0.0105, g_io = 0,
    # g_succ = 1/21 = 0.0476, g_tail = 0 (ratio 3); "rest" = 0.2*0.0102 + 0.15*0.0105
    # queue 0: P = 0, w_wait = 0.25, g_wait = 1
    #   core = (0.0036 + 0.25*1 + 0.15*0.0476) / 0.85 = 0.2607/0.85 = 0.3067
    # queue 3: wait 3, P = 3/30 = 0.1, w_wait = 0.25 + 0.5*0.1 = 0.30, g_wait = 0.9
    #   core = (0.0036 + 0.30*0.9 + 0.15*0.0476) / 0.90 = 0.2807/0.90 = 0.3119 > 0.3067
    g = [1 - 0.97 / 0.98, 1 - 0.94 / 0.95, 0.0, None, None, 1 / 21, 0.0]
    rest = 0.2 * g[0] + 0.15 * g[1] + 0.05 * g[2]
    core_low = (rest + 0.25 * 1.0 + 0.15 * g[5] + 0.05 * g[6]) / (0.2 + 0.15 + 0.05 + 0.25 + 0.15 + 0.05)
    w = 0.25 + 0.5 * 0.1
    core_high = (rest + w * 0.9 + 0.15 * g[5] + 0.05 * g[6]) / (0.2 + 0.15 + 0.05 + w + 0.15 + 0.05)
    assert low == pytest.approx(core_low, abs=1e-12)
    assert high == pytest.approx(core_high, abs=1e-12)
    assert high > low


# ---- hysteresis: oscillation inside delta

CONTROL = dict(max_cpu=1.0, weights_mem=0.0, weights_wait=0.0, k1=0.0, k2=0.0)


@SETTINGS
@given(st.sampled_from([0.4, 0.2]), st.floats(0.001, 0.099), st.floats(0.001, 0.099),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), st.sampled_from([0.5, 1.0, 0.2]))
def test_score_oscillating_inside_delta_never_changes_state(t, below, width, points, beta):
    # band [lo, lo + width) starts below threshold t and is narrower than
    # delta = 0.1, so it never reaches t + delta: the lower state holds
    lo = t - below
    hi = lo + width
    sim = Sim(capacity=1, beta=beta, **CONTROL)
    sim.hb(0, cpu=1.0 - lo)                  # start at the bottom: the lower state
    sim.step()
    start = sim.state.state[0]
    assert start == (DEGRADED if t == 0.4 else OVERLOADED)
    for x in points:
        s = lo + (hi - lo) * x * 0.999
        sim.hb(0, cpu=1.0 - s)
        sim.step()
        assert sim.state.state[0] == start
        assert sim.state.flap[0] == 0.0


# ---- the quarantine cap

@SETTINGS
@given(st.integers(2, 8), st.integers(5, 40), st.floats(0.0, 1.0), st.data())
def test_quarantine_admissions_respect_the_cap(nodes, ticks, fraction, data):
    sim = Sim(capacity=nodes, max_cpu=1.0, weights_mem=0.0, weights_wait=0.0, k1=0.0,
              k2=0.0, beta=1.0, max_flaps=2.0, probation_ticks=3.0,
              max_quarantined_fraction=fraction)
    for _ in range(ticks):
        for slot in range(nodes):
            choice = data.draw(st.sampled_from(["good", "bad", "bad", "silent", "die"]))
            if choice == "good":
                sim.hb(slot, cpu=0.0)
            elif choice == "bad":
                sim.hb(slot, cpu=0.9)
            elif choice == "die" and sim.inp.active[slot]:
                sim.last[slot] = sim.k - 200
        prev_state = sim.state.state.copy()
        _, _, live = sim.step()
        state = sim.state.state
        cap = math.floor(fraction * live)
        n_q = int(sim.out.counts[QUARANTINED])
        admitted = int(((state == QUARANTINED) & (prev_state != QUARANTINED)).sum())
        if admitted:
            assert n_q <= cap
        left_out = [i for i in range(nodes) if state[i] <= OVERLOADED
                    and sim.state.flap[i] >= 2.0]
        if left_out:
            assert n_q >= cap
