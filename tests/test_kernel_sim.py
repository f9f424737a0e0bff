"""The kernel-test driver (`support.kernel_sim.Sim`) and `kernels.warm_up`."""

import math
import subprocess
import sys

import pytest

import kernels
from kernels import UNREGISTERED, make_inputs, make_state
from support.kernel_sim import Sim


def test_warm_up_compiles_and_leaves_nothing_behind():
    kernels.warm_up()  # twice: the second call must be a cache hit, not an error
    kernels.warm_up()


def test_import_of_params_and_defaults_does_not_import_numba():
    code = (
        "import sys, kernels.params, kernels.defaults, kernels; "
        "kernels.default_params(); kernels.HEALTHY; "
        "assert 'numba' not in sys.modules, 'numba imported'; "
        "kernels.tick; assert 'numba' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_unknown_public_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'tick_ranked'"):
        kernels.tick_ranked  # noqa: B018 (removed with the introsort prototypes)


def test_sim_poisons_then_tick_overwrites_empty_slots():
    sim = Sim(capacity=3)
    sim.hb(1, cpu=0.5)
    sim.step()
    st, out = sim.state, sim.out
    for slot in (0, 2):
        assert st.state[slot] == UNREGISTERED
        assert (st.qema[slot], st.s[slot], st.flap[slot]) == (0.0, 0.0, 0.0)
        assert (st.n[slot], st.probation[slot], st.memory[slot]) == (0, 0, 0)
        assert (st.e_ok[slot], st.e_err[slot]) == (0.0, 0.0)
        assert (out.score[slot], out.raw[slot], out.wait[slot], out.liveness[slot]) == (0, 0, 0, 0)


def test_make_inputs_holds_neutral_feedback():
    inp = make_inputs(3)
    assert inp.slots.tolist() == [1.0] * 3
    assert inp.err_age.tolist() == [math.inf] * 3
    assert inp.rif.tolist() == inp.fb_ok.tolist() == inp.consec.tolist() == [0.0] * 3
    assert make_state(3).state.tolist() == [UNREGISTERED] * 3
