"""Multi-tick tests of `kernels.tick`: the whole pipeline on a logical clock.

Most scenarios use the "control" parameters below, under which a node that
reports only cpu (mem 0, queue 0) has raw = core = g_cpu = 1 - cpu, and with
beta = 1 also s = raw: the test picks s directly through cpu.  Ticks are 50 ms
apart, so a node goes suspect after 40 silent ticks and dead after 200.
"""

import pytest

from kernels import DEAD, DEGRADED, HEALTHY, OVERLOADED, QUARANTINED, UNREGISTERED
from support.kernel_sim import Sim

CONTROL = dict(max_cpu=1.0, weights_mem=0.0, weights_wait=0.0, k1=0.0, k2=0.0, beta=1.0)
H, D, O, Q, X = HEALTHY, DEGRADED, OVERLOADED, QUARANTINED, DEAD


def control_sim(capacity=2, **overrides):
    return Sim(capacity, **{**CONTROL, **overrides})


def s_hb(sim, slot, s):
    """A heartbeat giving raw = s under CONTROL (cpu = 1 - s)."""
    sim.hb(slot, cpu=1.0 - s)


# ---- first tick

def test_first_tick_default_params_arithmetic():
    sim = Sim(capacity=2)
    sim.hb(0, cpu=0.3, mem=0.0, queue=8.0, avg_job_s=1.0)
    n_ranked, P, live = sim.step()
    # qema = 8 (first tick); wait = 8 * 1 = 8; P = min(8/30, 1) / 1 = 0.26667
    assert (live, n_ranked) == (1, 1)
    assert P == pytest.approx(8 / 30)
    # w_wait = 0.25 + 0.5*P = 0.38333; g_cpu = 1 - 0.3/0.98 = 0.69388
    # g_mem = 1; g_wait = 1 - 8/30 = 0.73333
    w_wait = 0.25 + 0.5 * (8 / 30)
    core = (0.2 * (1 - 0.3 / 0.98) + 0.15 * 1.0 + w_wait * (1 - 8 / 30)) / (0.2 + 0.15 + w_wait)
    # B = clamp((100-8)/50, 0, 1) = 1; L = 1; raw = core = 0.7745; s = raw (s_prev = raw)
    assert sim.out.raw[0] == pytest.approx(core, abs=1e-12)
    assert sim.state.s[0] == pytest.approx(core, abs=1e-12)
    assert sim.out.score[0] == pytest.approx(core, abs=1e-12)
    assert sim.state.state[0] == HEALTHY  # fresh: 0.7745 >= 0.4
    assert sim.out.weights.tolist() == pytest.approx(
        [0.2, 0.15, 0.05, w_wait, 0.15 + 0.3 * (8 / 30), 0.15, 0.05])
    assert sim.out.counts.tolist() == [1, 0, 0, 0, 0]
    assert sim.ranked == [0]


@pytest.mark.parametrize("mark_fresh", [True, False])
def test_first_tick_ignores_previous_occupant(mark_fresh):
    sim = control_sim()
    # garbage left by an earlier occupant of slot 0
    sim.prev.qema[0], sim.prev.s[0], sim.prev.flap[0] = 77.0, 0.01, 40.0
    sim.prev.n[0], sim.prev.probation[0], sim.prev.memory[0] = 5, 29, 999
    sim.prev.state[0] = QUARANTINED if mark_fresh else UNREGISTERED
    sim.hb(0, cpu=0.3, queue=4.0)
    if not mark_fresh:
        sim.inp.fresh[0] = 0  # an empty slot last tick is a first tick anyway
    sim.step()
    st = sim.state
    # qema = queue = 4; s = raw = 1 - 0.3 = 0.7 -> HEALTHY, nothing carried over
    assert st.qema[0] == 4.0
    assert st.s[0] == pytest.approx(0.7)
    assert st.state[0] == HEALTHY
    assert (st.flap[0], st.n[0], st.probation[0]) == (0.0, 0, 0)
    assert st.memory[0] == 1  # the first tick ended neither QUARANTINED nor DEAD


def test_first_tick_low_score_is_classified_fresh_without_flap():
    sim = control_sim()
    s_hb(sim, 0, 0.1)
    sim.step()
    assert sim.state.state[0] == OVERLOADED  # 0.1 < 0.2
    assert sim.state.flap[0] == 0.0          # c = 0 on a first tick


def test_queue_ema_steps_once_per_tick_and_holds_without_heartbeat():
    sim = Sim(capacity=1)
    sim.hb(0, queue=10.0)
    sim.step()
    sim.hb(0, queue=99.0)
    sim.hb(0, queue=0.0)   # only the latest heartbeat counts
    sim.step()
    assert sim.state.qema[0] == pytest.approx(7.0)   # 0.3*0 + 0.7*10
    sim.step()                                        # no heartbeat
    assert sim.state.qema[0] == pytest.approx(7.0)


# ---- hysteresis

def test_hysteresis_both_directions():
    sim = control_sim()
    steps = [  # (s, expected state)
        (0.9, H),    # fresh: >= 0.4
        (0.45, H),   # H stays while s >= 0.4
        (0.35, D),   # H -> D below 0.4
        (0.45, D),   # D needs 0.5 to go back up
        (0.55, H),   # D -> H at >= 0.5
        (0.15, O),   # H -> O below 0.2
        (0.25, O),   # O needs 0.3 to go to D
        (0.35, D),   # O -> D at >= 0.3
        (0.25, D),   # D stays above 0.2
        (0.15, O),   # D -> O below 0.2
        (0.6, H),    # O -> H directly at >= 0.5
    ]
    flaps = 0.0
    prev_state = None
    for s, expected in steps:
        s_hb(sim, 0, s)
        sim.step()
        assert sim.state.state[0] == expected, (s, expected)
        c = 1 if prev_state is not None and prev_state != expected else 0
        flaps = flaps * (1 - 1 / 50) + c
        assert sim.state.flap[0] == pytest.approx(flaps)
        assert sim.out.score[0] == (pytest.approx(s) if expected in (H, D) else 0.0)
        prev_state = expected


def test_smoothing_delays_the_drop():
    sim = control_sim(beta=0.5)
    s_hb(sim, 0, 0.8)
    sim.step()
    s_hb(sim, 0, 0.2)
    sim.step()
    # s = 0.5*0.2 + 0.5*0.8 = 0.5 -> still HEALTHY although raw = 0.2
    assert sim.state.s[0] == pytest.approx(0.5)
    assert sim.state.state[0] == HEALTHY
    s_hb(sim, 0, 0.2)
    sim.step()
    # s = 0.5*0.2 + 0.5*0.5 = 0.35 -> DEGRADED
    assert sim.state.s[0] == pytest.approx(0.35)
    assert sim.state.state[0] == DEGRADED


# ---- breaker

TRIPS = [  # (heartbeat on a first tick, heartbeat after one tick at queue 0)
    pytest.param(dict(queue=100.0), dict(queue=400.0),   # qema 100; 0.3*400 + 0.7*0 = 120
                 id="qema>=max_queue"),
    pytest.param(dict(queue=10.0, avg_job_s=3.0),        # wait 10*3 = 30
                 dict(queue=10.0, avg_job_s=20.0),       # qema 0.3*10 = 3, wait 3*20 = 60
                 id="wait>=max_wait_s"),
    pytest.param(dict(cpu=0.98), dict(cpu=0.98), id="cpu>=max_cpu"),
    pytest.param(dict(mem=0.95), dict(mem=0.95), id="mem>=max_mem"),
    pytest.param(dict(ok=10, err=10), dict(ok=10, err=10),   # 20 jobs, 10/20 = 0.5
                 id="error_rate"),
]


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("hb_first, hb_later", TRIPS)
def test_every_breaker_condition_publishes_zero_in_the_same_tick(hb_first, hb_later, first):
    sim = Sim(capacity=2)
    sim.hb(1, cpu=0.1)          # a healthy neighbour, so P has company
    hb = hb_first
    if not first:
        sim.hb(0, cpu=0.1)
        sim.step()
        assert sim.state.state[0] == HEALTHY and sim.out.score[0] > 0.5
        sim.hb(1, cpu=0.1)
        hb = hb_later
    sim.hb(0, **{"cpu": 0.1, **hb})
    sim.step()
    assert sim.out.raw[0] == 0.0
    assert sim.state.s[0] == 0.0
    assert sim.out.score[0] == 0.0
    assert sim.state.state[0] == OVERLOADED
    assert sim.ranked == [1]


def test_error_rate_below_threshold_or_volume_does_not_trip():
    sim = Sim(capacity=2)
    sim.hb(0, cpu=0.1, ok=11, err=9)   # 9/20 = 0.45 < 0.5
    sim.hb(1, cpu=0.1, ok=0, err=19)   # 19 < 20 jobs
    sim.step()
    assert sim.state.state.tolist() == [HEALTHY, HEALTHY]
    assert sim.out.raw[1] > 0.0


# ---- liveness, death and revival

def test_liveness_decays_then_death_then_fresh_revival():
    sim = control_sim(capacity=2)
    s_hb(sim, 1, 0.9)           # slot 1 keeps heartbeating
    s_hb(sim, 0, 0.1)           # slot 0: OVERLOADED, then silent
    sim.step()
    assert sim.state.state[0] == OVERLOADED
    for k in range(1, 201):
        s_hb(sim, 1, 0.9)
        n_ranked, P, live = sim.step()
        age = (k * 50) / 1000
        if k == 40:
            assert sim.out.liveness[0] == 1.0                      # age 2.0 <= suspect
        if k == 41:
            # age 2.05: L = (10 - 2.05)/8 = 0.99375; raw = L*B*core = 0.99375*1*0.1
            assert sim.out.liveness[0] == pytest.approx(0.99375)
            assert sim.out.raw[0] == pytest.approx(0.099375)
        if k == 199:
            assert sim.out.liveness[0] == pytest.approx((10 - age) / 8)  # 0.00625
            assert sim.state.state[0] == OVERLOADED and live == 2
    # tick 200: age 10 -> L = 0 -> DEAD, not live, s = 0
    assert sim.out.liveness[0] == 0.0
    assert sim.state.state[0] == DEAD and sim.state.s[0] == 0.0
    assert live == 1
    assert sim.out.counts.tolist() == [1, 0, 0, 0, 1]
    # revival with s = 0.45: fresh classification gives HEALTHY
    # (hysteresis from OVERLOADED would have said DEGRADED)
    s_hb(sim, 0, 0.45)
    s_hb(sim, 1, 0.9)
    sim.step()
    assert sim.state.state[0] == HEALTHY
    assert sim.state.flap[0] == 0.0          # c = 0 on revival
    assert sim.ranked == [1, 0]


def test_revival_smooths_from_zero():
    sim = control_sim(capacity=1, beta=0.5)
    s_hb(sim, 0, 0.8)
    sim.step()
    sim.last[0] = sim.k - 200               # silent for 10 s
    sim.step()
    assert sim.state.state[0] == DEAD
    s_hb(sim, 0, 0.8)
    sim.step()
    # not a first tick: s_prev is the dead node's s = 0 -> s = 0.5*0.8 + 0.5*0 = 0.4
    assert sim.state.s[0] == pytest.approx(0.4)
    assert sim.state.state[0] == HEALTHY    # fresh: 0.4 >= 0.4


def test_dead_nodes_count_nowhere_in_pressure_or_t():
    sim = Sim(capacity=3, weights_cpu=0.0, weights_mem=0.0, weights_wait=0.0,
              weights_throughput=1.0, k1=0.0, k2=0.0)
    sim.hb(0, throughput=50.0, queue=5.0, avg_job_s=2.0)     # wait 10
    sim.hb(1, throughput=100.0, queue=9.0, avg_job_s=5.0)    # wait 45 (tripped)
    sim.hb(2, throughput=1000.0, queue=5.0, avg_job_s=6.0)   # wait 30, dead
    sim.last[2] = -200
    n_ranked, P, live = sim.step()
    assert live == 2
    # P = (min(10/30, 1) + min(45/30, 1)) / 2 = (1/3 + 1)/2 = 0.6667
    assert P == pytest.approx(2 / 3)
    # T = 100 (the dead node's 1000 is excluded): core = g_tput = 50/100 = 0.5
    assert sim.out.raw[0] == pytest.approx(0.5)
    assert sim.state.state.tolist() == [HEALTHY, OVERLOADED, DEAD]


# ---- quarantine

def flapper(slots, until=None):
    """Feed: the given slots alternate s = 1.0 (even ticks) and 0.1 (odd),
    i.e. HEALTHY <-> OVERLOADED every tick; other slots stay at 0.9."""
    def feed(sim):
        for slot in range(sim.capacity):
            if slot in slots and (until is None or sim.k < until):
                s_hb(sim, slot, 1.0 if sim.k % 2 == 0 else 0.1)
            else:
                s_hb(sim, slot, 0.9 if slot not in slots else 1.0)
    return feed


# flap after the j-th consecutive change: sum_{i<j} 0.98^i = (1 - 0.98^j)/0.02
FLAP_6 = (1 - 0.98 ** 6) / 0.02   # 5.7080 < 6
FLAP_7 = (1 - 0.98 ** 7) / 0.02   # 6.5944 >= 6


def test_quarantine_entry_after_seven_flips():
    sim = control_sim(capacity=2)
    hist = sim.run(7, flapper({0}))          # ticks 0..6: first tick + 6 flips
    assert hist[-1][0] == HEALTHY
    assert sim.state.flap[0] == pytest.approx(FLAP_6)
    sim.run(1, flapper({0}))                 # tick 7: 7th flip
    st = sim.state
    assert st.state[0] == QUARANTINED
    assert st.flap[0] == pytest.approx(FLAP_7)   # kept on entry
    assert (st.n[0], st.probation[0], st.memory[0]) == (1, 0, 0)
    assert sim.out.score[0] == 0.0 and sim.ranked == [1]
    assert sim.out.counts.tolist() == [1, 0, 0, 1, 0]


def test_single_live_node_is_never_quarantined():
    sim = control_sim(capacity=1)
    hist = sim.run(20, flapper({0}))        # cap = floor(0.5 * 1) = 0
    assert QUARANTINED not in [h[0] for h in hist]
    assert sim.state.flap[0] > 6


def test_probation_release_with_backoff_and_restart():
    sim = control_sim(capacity=2)
    sim.run(8, flapper({0}))                 # quarantined at tick 7, n = 1
    assert sim.state.state[0] == QUARANTINED
    good = flapper(set())                    # every slot steady at s = 0.9
    # ticks 8..19 good (count 12), tick 20 raw 0.45 < 0.5 restarts the count
    sim.run(12, good)
    assert sim.state.probation[0] == 12
    s_hb(sim, 0, 0.45)
    s_hb(sim, 1, 0.9)
    sim.step()
    assert sim.state.probation[0] == 0 and sim.state.state[0] == QUARANTINED
    # 30 * min(1, 8) = 30 good ticks: 21..50, released on tick 50
    sim.run(29, good)
    assert sim.k == 50 and sim.state.state[0] == QUARANTINED
    assert sim.state.probation[0] == 29
    sim.run(1, good)
    st = sim.state
    assert st.state[0] == HEALTHY
    assert (st.flap[0], st.probation[0], st.n[0]) == (0.0, 0, 1)
    assert sim.out.score[0] == pytest.approx(0.9)
    # flap again -> second quarantine, n = 2 -> 30 * min(2, 8) = 60 ticks
    def flap_again(sim):
        s_hb(sim, 1, 0.9)
        s_hb(sim, 0, 0.1 if (sim.k - 51) % 2 == 0 else 1.0)
    sim.run(7, flap_again)                   # ticks 51..57: 7 flips
    assert sim.state.state[0] == QUARANTINED and sim.state.n[0] == 2
    entry = sim.k - 1
    sim.run(59, good)
    assert sim.state.state[0] == QUARANTINED and sim.state.probation[0] == 59
    sim.run(1, good)
    assert sim.k - 1 == entry + 60
    assert sim.state.state[0] == HEALTHY


def test_tripped_tick_restarts_probation():
    sim = control_sim(capacity=2)
    sim.run(8, flapper({0}))
    sim.run(5, flapper(set()))
    assert sim.state.probation[0] == 5
    sim.hb(0, cpu=1.0)                       # cpu >= max_cpu = 1.0: tripped
    sim.hb(1, cpu=0.1)
    sim.step()
    assert sim.state.state[0] == QUARANTINED and sim.state.probation[0] == 0


def test_death_ends_quarantine_keeps_n():
    sim = control_sim(capacity=3)
    sim.run(8, flapper({0}))
    assert sim.state.state[0] == QUARANTINED
    sim.last[0] = sim.k - 200                # silent for 10 s
    def others(sim):
        s_hb(sim, 1, 0.9)
        s_hb(sim, 2, 0.9)
    sim.run(1, others)
    st = sim.state
    assert st.state[0] == DEAD
    assert (st.n[0], st.probation[0], st.memory[0]) == (1, 0, 0)


def test_quarantine_cap_and_admission_order():
    # 5 live flapping nodes + 1 dead one: cap = floor(0.5 * 5) = 2
    sim = control_sim(capacity=6)
    feed = flapper({0, 1, 2, 3, 4})
    def feed_with_dead(sim):
        feed(sim)
        if sim.k == 0:
            return
        sim.inp.new_hb[5] = 0
        sim.last[5] = sim.k - 200
    sim.run(8, feed_with_dead)
    st = sim.state
    assert sim.result[2] == 5
    assert st.state.tolist() == [Q, Q, O, O, O, DEAD]   # slot order, cap 2
    assert st.flap[2] == pytest.approx(FLAP_7)           # the rest keep their flap
    assert st.n.tolist() == [1, 1, 0, 0, 0, 0]
    sim.run(1, feed_with_dead)                           # still candidates, cap reached
    assert sim.state.state.tolist() == [Q, Q, H, H, H, DEAD]
    assert sim.state.flap[2] == pytest.approx(FLAP_7 * 0.98 + 1)


def test_releases_free_room_for_admissions_in_the_same_tick():
    sim = control_sim(capacity=4)
    sim.run(8, flapper({0, 1, 2, 3}))                # slots 0, 1 quarantined (cap 2)
    assert sim.state.state.tolist() == [Q, Q, O, O]
    def feed(sim):
        for slot in (0, 1):
            s_hb(sim, slot, 1.0)                      # good probation ticks
        for slot in (2, 3):                           # keep flipping
            s_hb(sim, slot, 1.0 if sim.k % 2 == 0 else 0.1)
    sim.run(29, feed)
    assert sim.state.state.tolist()[:2] == [Q, Q]
    sim.run(1, feed)                                  # tick 37: 30 good ticks
    # slots 0, 1 released first, then slots 2, 3 (flap >= 6) fill the cap
    assert sim.state.state.tolist() == [H, H, Q, Q]
    assert sim.state.flap[0] == 0.0


def test_memory_resets_n():
    sim = control_sim(capacity=2, quarantine_memory=5.0)
    sim.run(8, flapper({0}))
    sim.run(30, flapper(set()))                      # released at tick 37
    st = sim.state
    assert st.state[0] == HEALTHY and (st.n[0], st.memory[0]) == (1, 1)
    sim.run(3, flapper(set()))                       # memory 4
    assert (sim.state.n[0], sim.state.memory[0]) == (1, 4)
    sim.run(1, flapper(set()))                       # memory 5 >= 5: n = 0
    assert (sim.state.n[0], sim.state.memory[0]) == (0, 5)
    # the next quarantine is the first again: 30 * min(1, 8) = 30 ticks
    def flap_again(sim):
        s_hb(sim, 1, 0.9)
        s_hb(sim, 0, 0.1 if (sim.k - 42) % 2 == 0 else 1.0)
    sim.run(7, flap_again)
    assert sim.state.state[0] == QUARANTINED and sim.state.n[0] == 1
    sim.run(30, flapper(set()))
    assert sim.state.state[0] == HEALTHY


# ---- slots, outputs, ranking

def test_forgotten_slot_is_cleared_and_counts_nowhere():
    sim = control_sim(capacity=3)
    for slot in range(3):
        s_hb(sim, slot, 0.9)
    sim.step()
    sim.forget(1)
    s_hb(sim, 0, 0.9)
    s_hb(sim, 2, 0.9)
    n_ranked, P, live = sim.step()
    st, out = sim.state, sim.out
    assert st.state[1] == UNREGISTERED
    assert (st.qema[1], st.s[1], st.flap[1], st.n[1], st.probation[1], st.memory[1]) == (0, 0, 0, 0, 0, 0)
    assert (out.score[1], out.raw[1], out.wait[1], out.liveness[1]) == (0, 0, 0, 0)
    assert (n_ranked, live) == (2, 2)
    assert out.counts.sum() == 2


def test_ranking_by_score_then_slot():
    sim = control_sim(capacity=6)
    for slot, s in enumerate([0.5, 0.9, 0.5, 0.1, 0.9, 0.7]):
        s_hb(sim, slot, s)
    n_ranked, _, _ = sim.step()
    # slot 3 is OVERLOADED (0.1 < 0.2): score 0, unranked; ties by slot
    assert n_ranked == 5
    assert sim.ranked == [1, 4, 5, 0, 2]


def test_empty_table():
    sim = Sim(capacity=4)
    assert sim.step() == (0, 0.0, 0)
    assert sim.out.counts.tolist() == [0, 0, 0, 0, 0]
    assert sim.out.weights.tolist() == pytest.approx([0.2, 0.15, 0.05, 0.25, 0.15, 0.15, 0.05])
