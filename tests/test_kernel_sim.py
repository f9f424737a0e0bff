"""The kernel-test driver (`support.kernel_sim.Sim`) and `kernels.warm_up`."""

import kernels
from kernels import UNREGISTERED
from support.kernel_sim import Sim


def test_warm_up_compiles_and_leaves_nothing_behind():
    kernels.warm_up()  # twice: the second call must be a cache hit, not an error
    kernels.warm_up()


def test_sim_poisons_then_tick_overwrites_empty_slots():
    sim = Sim(capacity=3)
    sim.hb(1, cpu=0.5)
    sim.step()
    st, out = sim.state, sim.out
    for slot in (0, 2):
        assert st.state[slot] == UNREGISTERED
        assert (st.qema[slot], st.s[slot], st.flap[slot]) == (0.0, 0.0, 0.0)
        assert (st.n[slot], st.probation[slot], st.memory[slot]) == (0, 0, 0)
        assert (out.score[slot], out.raw[slot], out.wait[slot], out.liveness[slot]) == (0, 0, 0, 0)
