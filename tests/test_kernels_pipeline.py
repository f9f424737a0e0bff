"""Multi-tick tests of `kernels.tick`: the whole pipeline on a logical clock.

Most scenarios use the "control" parameters below, under which a node that
reports only cpu (mem 0, queue 0, avg_job_s 0: no rate term) has
raw = core = g_cpu = 1 - cpu, and with beta = 1 also s = raw: the test picks
s directly through cpu.  Ticks are 50 ms apart, so a node goes suspect after
40 silent ticks and dead after 200, and the error window decays by
d = 0.5 ** (50/1000/10) per tick.
"""

import math

import pytest

from kernels import DEAD, DEGRADED, HEALTHY, OVERLOADED, QUARANTINED, UNREGISTERED
from support.kernel_sim import Sim

CONTROL = dict(
    max_cpu=1.0, weights_mem=0.0, weights_wait=0.0, weights_success=0.0, k1=0.0, k2=0.0, beta=1.0
)
DECAY = 0.5 ** (50 / 1000 / 10.0)
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
    # qema = 8 (first tick); load = max(8, 0 - 1, 0) = 8; wait = 8 * 1 / 1 = 8
    # P = min(8/30, 1) / 1 = 0.26667 (published); P_0 = 0: the only live node
    assert (live, n_ranked) == (1, 1)
    assert P == pytest.approx(8 / 30)
    # weights at P_0 = 0: the base weights.  g_cpu = 1 - 0.3/0.98 = 0.69388,
    # g_mem = 1, g_wait = 1 - 8/30 = 0.73333; rate = 1/1 = 1, R = 1 (m = 1) ->
    # g_rate = 1; g_succ = (0+1)/(0+0+1) = 1
    num = 0.2 * (1 - 0.3 / 0.98) + 0.15 * 1.0 + 0.25 * (1 - 8 / 30) + 0.15 * 1.0 + 0.15 * 1.0
    core = num / (0.2 + 0.15 + 0.25 + 0.15 + 0.15)
    # B = clamp((100-8)/50, 0, 1) = 1; L = 1; raw = core = 0.8097; s = raw (s_prev = raw)
    assert sim.out.raw[0] == pytest.approx(core, abs=1e-12)
    assert sim.state.s[0] == pytest.approx(core, abs=1e-12)
    assert sim.out.score[0] == pytest.approx(core, abs=1e-12)
    assert sim.out.wait[0] == 8.0
    assert sim.state.state[0] == HEALTHY  # fresh: 0.8097 >= 0.4
    # published weights at P = 8/30
    assert sim.out.weights.tolist() == pytest.approx(
        [0.2, 0.15, 0.05, 0.25 + 0.5 * (8 / 30), 0.15 + 0.3 * (8 / 30), 0.15, 0.05]
    )
    assert sim.out.counts.tolist() == [1, 0, 0, 0, 0]
    assert sim.ranked == [0]


@pytest.mark.parametrize("mark_fresh", [True, False])
def test_first_tick_ignores_previous_occupant(mark_fresh):
    sim = control_sim()
    # garbage left by an earlier occupant of slot 0
    sim.prev.qema[0], sim.prev.s[0], sim.prev.flap[0] = 77.0, 0.01, 40.0
    sim.prev.n[0], sim.prev.probation[0], sim.prev.memory[0] = 5, 29, 999
    sim.prev.e_ok[0], sim.prev.e_err[0] = 3.0, 500.0
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
    assert (st.e_ok[0], st.e_err[0]) == (0.0, 0.0)  # the window starts from zero
    assert st.memory[0] == 1  # the first tick ended neither QUARANTINED nor DEAD


def test_first_tick_low_score_is_classified_fresh_without_flap():
    sim = control_sim()
    s_hb(sim, 0, 0.1)
    sim.step()
    assert sim.state.state[0] == OVERLOADED  # 0.1 < 0.2
    assert sim.state.flap[0] == 0.0  # c = 0 on a first tick


def test_queue_ema_steps_once_per_tick_and_holds_without_heartbeat():
    sim = Sim(capacity=1)
    sim.hb(0, queue=10.0)
    sim.step()
    sim.hb(0, queue=99.0)
    sim.hb(0, queue=0.0)  # only the latest heartbeat counts
    sim.step()
    assert sim.state.qema[0] == pytest.approx(7.0)  # 0.3*0 + 0.7*10
    sim.step()  # no heartbeat
    assert sim.state.qema[0] == pytest.approx(7.0)


# ---- hysteresis


def test_hysteresis_both_directions():
    sim = control_sim()
    steps = [  # (s, expected state)
        (0.9, H),  # fresh: >= 0.4
        (0.45, H),  # H stays while s >= 0.4
        (0.35, D),  # H -> D below 0.4
        (0.45, D),  # D needs 0.5 to go back up
        (0.55, H),  # D -> H at >= 0.5
        (0.15, O),  # H -> O below 0.2
        (0.25, O),  # O needs 0.3 to go to D
        (0.35, D),  # O -> D at >= 0.3
        (0.25, D),  # D stays above 0.2
        (0.15, O),  # D -> O below 0.2
        (0.6, H),  # O -> H directly at >= 0.5
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


# ---- step 2: load, wait and the error window


@pytest.mark.parametrize(
    "queue, rif, slots, avg_job_s, wait, B",
    [
        (4.0, 0.0, 1, 2.0, 8.0, 1.0),  # load = max(4, 0 - 1, 0) = 4; wait = 4*2/1 = 8
        (4.0, 10.0, 2, 2.0, 8.0, 1.0),  # load = max(4, 10 - 2, 0) = 8; wait = 8*2/2 = 8
        (4.0, 3.0, 8, 2.0, 1.0, 1.0),  # load = max(4, 3 - 8, 0) = 4; wait = 4*2/8 = 1
        (60.0, 0.0, 4, 0.5, 7.5, 0.8),  # wait = 60*0.5/4 = 7.5; B = (100-60)/50 = 0.8
        (2.0, 84.0, 4, 0.1, 2.0, 0.4),  # load = 84 - 4 = 80: B = (100-80)/50 = 0.4;
        # wait = 80*0.1/4 = 2
    ],
)
def test_load_counts_requests_in_flight_and_wait_divides_by_slots(
    queue, rif, slots, avg_job_s, wait, B
):
    # weights: only wait counts, no pressure shift -> core = g_wait = 1 - wait/30
    sim = Sim(
        capacity=1,
        weights_cpu=0.0,
        weights_mem=0.0,
        weights_rate=0.0,
        weights_success=0.0,
        k1=0.0,
        k2=0.0,
    )
    sim.hb(0, queue=queue, avg_job_s=avg_job_s, slots=slots)
    sim.fb(0, rif=rif)
    sim.step()
    assert sim.out.wait[0] == pytest.approx(wait, abs=1e-12)
    assert sim.state.qema[0] == queue  # qema stays the reported queue
    assert sim.out.raw[0] == pytest.approx(B * (1 - wait / 30), abs=1e-12)


def test_error_window_adds_heartbeat_and_feedback_outcomes_and_decays():
    sim = Sim(capacity=1)
    sim.hb(0, ok=4, err=1)
    sim.fb(0, ok=2, err=3)
    sim.step()
    # first tick: e_ok = 0*d + (2 + 4) = 6, e_err = 0*d + (3 + 1) = 4
    assert (sim.state.e_ok[0], sim.state.e_err[0]) == (6.0, 4.0)
    sim.step()
    # no heartbeat, no feedback: the last heartbeat's 4/1 is not counted again
    assert sim.state.e_ok[0] == 6.0 * DECAY and sim.state.e_err[0] == 4.0 * DECAY
    sim.hb(0, cpu=0.1)  # a heartbeat without ok/err
    sim.fb(0, ok=1)
    sim.step()
    # e_ok = 6d*d + 1, e_err = 4d*d
    assert sim.state.e_ok[0] == pytest.approx(6.0 * DECAY * DECAY + 1.0, abs=1e-12)
    assert sim.state.e_err[0] == pytest.approx(4.0 * DECAY * DECAY, abs=1e-12)
    sim.hb(0, ok=0, err=2)
    sim.hb(0, ok=7, err=0)  # only the latest heartbeat of a tick counts
    sim.step()
    assert sim.state.e_ok[0] == pytest.approx((6.0 * DECAY * DECAY + 1.0) * DECAY + 7.0, abs=1e-12)
    assert sim.state.e_err[0] == pytest.approx(4.0 * DECAY**3, abs=1e-12)


def test_error_window_halves_every_half_life_and_decays_while_dead():
    sim = Sim(capacity=2)
    sim.hb(0, ok=0, err=8)
    sim.step()
    for _ in range(200):  # 200 ticks * 50 ms = 10 s = one half-life
        sim.hb(1)  # slot 0 stays silent and dies at tick 200
        sim.step()
    assert sim.state.state[0] == DEAD
    assert sim.state.e_err[0] == pytest.approx(4.0, abs=1e-9)  # 8 * 0.5
    assert sim.state.e_ok[0] == 0.0


def test_success_is_always_scored_from_the_window():
    # weights: only success counts -> core = g_succ = (e_ok + 1)/(e_ok + e_err + 1)
    sim = Sim(
        capacity=3,
        weights_cpu=0.0,
        weights_mem=0.0,
        weights_wait=0.0,
        weights_rate=0.0,
        k1=0.0,
        k2=0.0,
    )
    sim.hb(0)  # no outcomes at all: 1/1 = 1
    sim.hb(1, ok=3, err=1)  # (3+1)/(3+1+1) = 0.8
    sim.hb(2)
    sim.fb(2, ok=1, err=2)  # feedback only: (1+1)/(1+2+1) = 0.5
    sim.step()
    assert sim.out.raw.tolist() == pytest.approx([1.0, 0.8, 0.5], abs=1e-12)


# ---- step 3: the rate term against the 90th percentile


def test_rate_term_uses_the_nearest_rank_90th_percentile_of_live_rates():
    # weights: only rate counts -> core = g_rate = min(rate / R, 1)
    sim = Sim(
        capacity=15,
        weights_cpu=0.0,
        weights_mem=0.0,
        weights_wait=0.0,
        weights_success=1e-300,
        k1=0.0,
        k2=0.0,
    )
    for slot in range(12):  # rates 1..12 jobs/s: slots / avg_job_s
        sim.hb(slot, avg_job_s=1.0 / (slot + 1))
    sim.hb(12, avg_job_s=0.5, slots=1000)  # rate 2000: absurd, but only one node
    sim.hb(13, avg_job_s=0.0001)  # rate 10000, dead: not in R
    sim.last[13] = -200
    sim.hb(14)  # avg_job_s = 0: no rate term, not in R
    sim.step()
    # (success weighs 1e-300 so that slot 14's core is defined: 1e-300*1/1e-300 = 1;
    # elsewhere it changes nothing at 1e-12)
    # live rates (m = 13): 1..12 and 2000 -> ceil(0.9*13) - 1 = 11 -> R = r_11 = 12
    # (with slot 14's rate 1/0 = inf counted, m = 14 would give R = r_12 = 2000)
    R = 12.0
    expected = [min((slot + 1) / R, 1.0) for slot in range(12)]
    assert sim.out.raw[:12].tolist() == pytest.approx(expected, abs=1e-12)
    assert sim.out.raw[0] == pytest.approx(1 / 12, abs=1e-12)  # 1/12
    assert sim.out.raw[5] == pytest.approx(0.5, abs=1e-12)  # 6/12
    assert sim.out.raw[12] == 1.0  # min(2000/12, 1)
    assert sim.out.raw[13] == 0.0  # dead
    assert sim.out.raw[14] == 1.0  # g_succ alone


def test_no_rate_term_without_avg_job_s():
    sim = Sim(capacity=2)
    sim.hb(0, cpu=0.49)  # avg_job_s = 0
    sim.hb(1, cpu=0.49, avg_job_s=0.5)  # rate 2 = R: g_rate = 1
    sim.step()
    # slot 0: (0.2*0.5 + 0.15*1 + 0.25*1 + 0.15*1) / (0.2 + 0.15 + 0.25 + 0.15) = 0.65/0.75
    # slot 1: (0.65 + 0.15*1) / 0.9 = 0.8/0.9 (P_i = 0: both waits are 0)
    assert sim.out.raw.tolist() == pytest.approx([0.65 / 0.75, 0.8 / 0.9], abs=1e-12)


def test_rate_reference_is_the_maximum_below_ten_nodes():
    sim = Sim(
        capacity=3,
        weights_cpu=0.0,
        weights_mem=0.0,
        weights_wait=0.0,
        weights_success=0.0,
        k1=0.0,
        k2=0.0,
    )
    sim.hb(0, avg_job_s=1.0)  # rate 1
    sim.hb(1, avg_job_s=0.25)  # rate 4 = R (m = 2 < 10: the maximum)
    sim.hb(2, avg_job_s=1.0, slots=2)  # rate 2
    sim.step()
    assert sim.out.raw.tolist() == pytest.approx([0.25, 1.0, 0.5], abs=1e-12)


# ---- step 5: each node weighs with the rest of the cluster's pressure


def test_weights_use_the_pressure_of_the_rest_of_the_cluster():
    sim = Sim(capacity=4)
    sim.hb(0, queue=3.0, avg_job_s=2.0)  # wait 6  -> p = 0.2
    sim.hb(1, queue=12.0, avg_job_s=1.0)  # wait 12 -> p = 0.4
    sim.hb(2, queue=0.0, avg_job_s=1.0)  # wait 0  -> p = 0
    sim.hb(3, queue=60.0, avg_job_s=0.25)  # wait 15, dead: not in S
    sim.last[3] = -200
    n_ranked, P, live = sim.step()
    # S = 0.2 + 0.4 + 0 = 0.6, live = 3, P = 0.2 (published)
    assert live == 3 and P == pytest.approx(0.2, abs=1e-15)

    # P_0 = (0.6 - 0.2)/2 = 0.2, P_1 = (0.6 - 0.4)/2 = 0.1, P_2 = 0.6/2 = 0.3
    # rates 0.5, 1, 1 (live) -> R = 1; g_rate 0.5, 1, 1
    def core(P_i, g_wait, g_rate):
        w_wait, w_rate = 0.25 + 0.5 * P_i, 0.15 + 0.3 * P_i
        num = 0.2 * 1 + 0.15 * 1 + w_wait * g_wait + w_rate * g_rate + 0.15 * 1
        return num / (0.2 + 0.15 + w_wait + w_rate + 0.15)

    expected = [core(0.2, 0.8, 0.5), core(0.1, 0.6, 1.0), core(0.3, 1.0, 1.0)]
    # B = 1 for all (load <= 50), L = 1
    assert sim.out.raw[:3].tolist() == pytest.approx(expected, abs=1e-12)
    assert sim.out.weights[3] == pytest.approx(0.25 + 0.5 * 0.2)  # at P
    assert sim.out.weights[4] == pytest.approx(0.15 + 0.3 * 0.2)


def test_a_node_alone_weighs_with_zero_pressure():
    sim = Sim(capacity=1)
    sim.hb(0, queue=20.0, avg_job_s=1.0)  # wait 20: p = 2/3, but P_0 = 0
    _, P, _ = sim.step()
    assert P == pytest.approx(2 / 3)
    # base weights; g_wait = 1/3, g_rate = 1 (R = 1), g_succ = 1
    num = 0.2 + 0.15 + 0.25 * (1 / 3) + 0.15 + 0.15
    assert sim.out.raw[0] == pytest.approx(num / 0.9, abs=1e-12)


# ---- step 8: breaker

TRIPS = [  # (heartbeat on a first tick, heartbeat after one tick at queue 0, feedback)
    pytest.param(
        dict(queue=100.0),
        dict(queue=400.0),
        {},  # qema 100; 0.3*400 = 120
        id="load>=max_queue",
    ),
    pytest.param(
        dict(),
        dict(),
        dict(rif=101.0),  # load = 101 - 1 = 100
        id="rif-slots>=max_queue",
    ),
    pytest.param(
        dict(queue=10.0, avg_job_s=3.0),  # wait 10*3 = 30
        dict(queue=10.0, avg_job_s=20.0),
        {},  # qema 0.3*10 = 3, wait 3*20 = 60
        id="wait>=max_wait_s",
    ),
    pytest.param(
        dict(queue=20.0, avg_job_s=3.0, slots=2),  # wait 20*3/2 = 30
        dict(queue=100.0, avg_job_s=1.0, slots=1),
        {},  # qema 30, wait 30
        id="wait>=max_wait_s,slots",
    ),
    pytest.param(dict(cpu=0.98), dict(cpu=0.98), {}, id="cpu>=max_cpu"),
    pytest.param(dict(mem=0.95), dict(mem=0.95), {}, id="mem>=max_mem"),
    pytest.param(
        dict(ok=5, err=5),
        dict(ok=5, err=5),
        {},  # 10 outcomes, 5/10 = 0.5
        id="error_rate",
    ),  # (the window was empty before)
    pytest.param(
        dict(),
        dict(),
        dict(ok=2, err=8),  # feedback alone: 8/10
        id="error_rate,feedback",
    ),
    pytest.param(
        dict(),
        dict(),
        dict(err=1, consec=5),  # 5 in a row, the latest now
        id="ejection",
    ),
]


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("hb_first, hb_later, feedback", TRIPS)
def test_every_breaker_condition_publishes_zero_in_the_same_tick(
    hb_first, hb_later, feedback, first
):
    sim = Sim(capacity=2)
    sim.hb(1, cpu=0.1)  # a healthy neighbour, so P has company
    hb = hb_first
    if not first:
        sim.hb(0, cpu=0.1)
        sim.step()
        assert sim.state.state[0] == HEALTHY and sim.out.score[0] > 0.5
        sim.hb(1, cpu=0.1)
        hb = hb_later
    sim.hb(0, **{"cpu": 0.1, **hb})
    if feedback:
        sim.fb(0, **feedback)
    sim.step()
    assert sim.out.raw[0] == 0.0
    assert sim.state.s[0] == 0.0
    assert sim.out.score[0] == 0.0
    assert sim.state.state[0] == OVERLOADED
    assert sim.ranked == [1]


def test_error_rate_below_threshold_or_volume_does_not_trip():
    sim = Sim(capacity=3)
    sim.hb(0, cpu=0.1, ok=6, err=4)  # 4/10 = 0.4 < 0.5
    sim.hb(1, cpu=0.1, ok=0, err=9)  # 9 < 10 outcomes
    sim.hb(2, cpu=0.1)
    sim.fb(2, err=4, consec=4)  # 4 errors in a row < 5
    sim.step()
    assert sim.state.state.tolist() == [HEALTHY, HEALTHY, HEALTHY]
    assert sim.out.raw[1] > 0.0
    # the next tick's heartbeat adds one error: e_err = 9d + 1 = 9.97 < 10 still
    sim.hb(1, cpu=0.1, ok=0, err=1)
    sim.hb(0, cpu=0.1)
    sim.hb(2, cpu=0.1)
    sim.step()
    assert sim.state.e_err[1] == pytest.approx(9 * DECAY + 1, abs=1e-12)
    assert sim.out.raw[1] > 0.0
    sim.hb(1, cpu=0.1, ok=0, err=1)  # (9d + 1)d + 1 = 10.93 >= 10, all errors: trips
    sim.hb(0, cpu=0.1)
    sim.hb(2, cpu=0.1)
    sim.step()
    assert sim.out.raw[1] == 0.0 and sim.state.state[1] == OVERLOADED


def test_ejection_lasts_ejection_s_after_the_latest_error_and_an_ok_ends_it():
    sim = Sim(capacity=2)
    sim.hb(0, cpu=0.1)
    sim.hb(1, cpu=0.1)
    sim.fb(0, err=5, consec=5)  # tick 0: 5 errors in a row, err_age = 0
    sim.fb(1, err=5, consec=5)
    sim.step()
    assert sim.out.raw.tolist() == [0.0, 0.0]
    sim.fb(1, ok=1, consec=0)  # tick 1: slot 1 has an ok release: the run ends
    sim.step()
    # slot 0: err_age = 0.05 s < 5; slot 1: consec 0, raw > 0 (window 1 ok, 5d err)
    assert sim.out.raw[0] == 0.0 and sim.out.raw[1] > 0.0
    for k in range(2, 100):  # err_age = k * 0.05 < 5 until tick 100
        sim.step()
        assert sim.out.raw[0] == 0.0, k
    sim.step()  # tick 100: err_age = 100*50/1000 = 5.0, not < 5
    assert sim.inp.err_age[0] == 5.0
    assert sim.out.raw[0] > 0.0


# ---- liveness, death and revival


def test_liveness_decays_then_death_then_fresh_revival():
    sim = control_sim(capacity=2)
    s_hb(sim, 1, 0.9)  # slot 1 keeps heartbeating
    s_hb(sim, 0, 0.1)  # slot 0: OVERLOADED, then silent
    sim.step()
    assert sim.state.state[0] == OVERLOADED
    for k in range(1, 201):
        s_hb(sim, 1, 0.9)
        n_ranked, P, live = sim.step()
        age = (k * 50) / 1000
        if k == 40:
            assert sim.out.liveness[0] == 1.0  # age 2.0 <= suspect
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
    assert sim.state.flap[0] == 0.0  # c = 0 on revival
    assert sim.ranked == [1, 0]


def test_revival_smooths_from_zero():
    sim = control_sim(capacity=1, beta=0.5)
    s_hb(sim, 0, 0.8)
    sim.step()
    sim.last[0] = sim.k - 200  # silent for 10 s
    sim.step()
    assert sim.state.state[0] == DEAD
    s_hb(sim, 0, 0.8)
    sim.step()
    # not a first tick: s_prev is the dead node's s = 0 -> s = 0.5*0.8 + 0.5*0 = 0.4
    assert sim.state.s[0] == pytest.approx(0.4)
    assert sim.state.state[0] == HEALTHY  # fresh: 0.4 >= 0.4


def test_dead_nodes_count_nowhere_in_pressure_or_r():
    sim = Sim(
        capacity=3,
        weights_cpu=0.0,
        weights_mem=0.0,
        weights_wait=0.0,
        weights_success=0.0,
        weights_rate=1.0,
        k1=0.0,
        k2=0.0,
    )
    sim.hb(0, queue=5.0, avg_job_s=2.0)  # wait 10, rate 0.5
    sim.hb(1, queue=9.0, avg_job_s=1.0)  # wait 9, rate 1
    sim.hb(2, queue=5.0, avg_job_s=0.001)  # wait 0.005, rate 1000, dead
    sim.last[2] = -200
    n_ranked, P, live = sim.step()
    assert live == 2
    # P = (min(10/30, 1) + min(9/30, 1)) / 2 = (1/3 + 0.3)/2 = 0.31667
    assert P == pytest.approx(19 / 60)
    # R = max(0.5, 1) = 1 (the dead node's 1000 is excluded): core = g_rate = 0.5/1
    assert sim.out.raw[0] == pytest.approx(0.5)
    assert sim.out.raw[1] == pytest.approx(1.0)
    assert sim.state.state.tolist() == [HEALTHY, HEALTHY, DEAD]


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
FLAP_6 = (1 - 0.98**6) / 0.02  # 5.7080 < 6
FLAP_7 = (1 - 0.98**7) / 0.02  # 6.5944 >= 6


def test_quarantine_entry_after_seven_flips():
    sim = control_sim(capacity=2)
    hist = sim.run(7, flapper({0}))  # ticks 0..6: first tick + 6 flips
    assert hist[-1][0] == HEALTHY
    assert sim.state.flap[0] == pytest.approx(FLAP_6)
    sim.run(1, flapper({0}))  # tick 7: 7th flip
    st = sim.state
    assert st.state[0] == QUARANTINED
    assert st.flap[0] == pytest.approx(FLAP_7)  # kept on entry
    assert (st.n[0], st.probation[0], st.memory[0]) == (1, 0, 0)
    assert sim.out.score[0] == 0.0 and sim.ranked == [1]
    assert sim.out.counts.tolist() == [1, 0, 0, 1, 0]


def test_single_live_node_is_never_quarantined():
    sim = control_sim(capacity=1)
    hist = sim.run(20, flapper({0}))  # cap = floor(0.5 * 1) = 0
    assert QUARANTINED not in [h[0] for h in hist]
    assert sim.state.flap[0] > 6


def test_probation_release_with_backoff_and_restart():
    sim = control_sim(capacity=2)
    sim.run(8, flapper({0}))  # quarantined at tick 7, n = 1
    assert sim.state.state[0] == QUARANTINED
    good = flapper(set())  # every slot steady at s = 0.9
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

    sim.run(7, flap_again)  # ticks 51..57: 7 flips
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
    sim.hb(0, cpu=1.0)  # cpu >= max_cpu = 1.0: tripped
    sim.hb(1, cpu=0.1)
    sim.step()
    assert sim.state.state[0] == QUARANTINED and sim.state.probation[0] == 0


def test_death_ends_quarantine_keeps_n():
    sim = control_sim(capacity=3)
    sim.run(8, flapper({0}))
    assert sim.state.state[0] == QUARANTINED
    sim.last[0] = sim.k - 200  # silent for 10 s

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
    assert st.state.tolist() == [Q, Q, O, O, O, DEAD]  # slot order, cap 2
    assert st.flap[2] == pytest.approx(FLAP_7)  # the rest keep their flap
    assert st.n.tolist() == [1, 1, 0, 0, 0, 0]
    sim.run(1, feed_with_dead)  # still candidates, cap reached
    assert sim.state.state.tolist() == [Q, Q, H, H, H, DEAD]
    assert sim.state.flap[2] == pytest.approx(FLAP_7 * 0.98 + 1)


def test_releases_free_room_for_admissions_in_the_same_tick():
    sim = control_sim(capacity=4)
    sim.run(8, flapper({0, 1, 2, 3}))  # slots 0, 1 quarantined (cap 2)
    assert sim.state.state.tolist() == [Q, Q, O, O]

    def feed(sim):
        for slot in (0, 1):
            s_hb(sim, slot, 1.0)  # good probation ticks
        for slot in (2, 3):  # keep flipping
            s_hb(sim, slot, 1.0 if sim.k % 2 == 0 else 0.1)

    sim.run(29, feed)
    assert sim.state.state.tolist()[:2] == [Q, Q]
    sim.run(1, feed)  # tick 37: 30 good ticks
    # slots 0, 1 released first, then slots 2, 3 (flap >= 6) fill the cap
    assert sim.state.state.tolist() == [H, H, Q, Q]
    assert sim.state.flap[0] == 0.0


def test_memory_resets_n():
    sim = control_sim(capacity=2, quarantine_memory=5.0)
    sim.run(8, flapper({0}))
    sim.run(30, flapper(set()))  # released at tick 37
    st = sim.state
    assert st.state[0] == HEALTHY and (st.n[0], st.memory[0]) == (1, 1)
    sim.run(3, flapper(set()))  # memory 4
    assert (sim.state.n[0], sim.state.memory[0]) == (1, 4)
    sim.run(1, flapper(set()))  # memory 5 >= 5: n = 0
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
    assert (st.qema[1], st.s[1], st.flap[1], st.n[1], st.probation[1], st.memory[1]) == (
        0,
        0,
        0,
        0,
        0,
        0,
    )
    assert (st.e_ok[1], st.e_err[1]) == (0.0, 0.0)
    assert (out.score[1], out.raw[1], out.wait[1], out.liveness[1]) == (0, 0, 0, 0)
    assert (n_ranked, live) == (2, 2)
    assert out.counts.sum() == 2


def test_reused_slot_starts_feedback_and_window_from_zero():
    sim = Sim(capacity=2)
    sim.hb(0, cpu=0.1, ok=0, err=30)
    sim.hb(1, cpu=0.1)
    sim.fb(0, rif=40.0, err=20, consec=20)
    sim.step()
    assert sim.state.e_err[0] == 50.0 and sim.out.raw[0] == 0.0  # tripped and ejected
    sim.forget(0)  # forgotten: the driver resets its feedback
    sim.hb(1, cpu=0.1)
    sim.step()
    sim.hb(0, cpu=0.1, ok=2, err=0)  # a new node registers into slot 0
    sim.hb(1, cpu=0.1)
    sim.step()
    st = sim.state
    # e_ok = 0*d + 2, e_err = 0*d + 0: nothing of the earlier 50 errors
    assert (st.e_ok[0], st.e_err[0]) == (2.0, 0.0)
    assert (sim.inp.rif[0], sim.inp.consec[0], sim.inp.err_age[0]) == (0.0, 0.0, math.inf)
    assert sim.out.wait[0] == 0.0 and st.state[0] == HEALTHY
    assert sim.out.raw[0] == pytest.approx(sim.out.raw[1], abs=1e-12)  # same as a twin


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
