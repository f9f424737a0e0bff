"""The kernels against the independent reference (tests/reference.py).

Random traces are replayed twice: through `reference.run_reference` and through
`kernels.tick` driven like replay (forgetting first, then the tick's
heartbeats, lowest free slot, ages `((k - a) * 50) / 1000`).  Every published
value of every node on every tick must agree to 1e-9.  Short liveness and
forgetting times and a touchy quarantine make deaths, re-registrations,
quarantines and releases common in short traces.
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import default_params
from reference import STATE_NAMES, run_reference
from support.kernel_sim import Sim

SCORE = dict(
    suspect_after_s=0.1,
    dead_after_s=0.5,
    max_flaps=2,
    flap_window=5,
    probation_ticks=3,
    quarantine_memory=10,
    max_backoff=3,
)
FORGET_AFTER_S = 1.0
CAPACITY = 6


def random_trace(rng, n_nodes, ticks):
    hb_prob = {f"n{i}": rng.choice([0.15, 0.6, 0.95]) for i in range(n_nodes)}
    lines = []
    for k in range(ticks):
        for node, p in hb_prob.items():
            if rng.random() >= p:
                continue
            hb = {
                "tick": k,
                "node": node,
                "cpu": rng.choice([0.0, 0.2, 0.5, 0.85, rng.random(), 0.99]),
                "mem": rng.choice([0.1, rng.random(), 0.96]),
                "queue": rng.choice([0.0, 3.0, rng.uniform(0, 120)]),
                "avg_job_s": rng.choice([0.0, 0.5, rng.uniform(0, 4)]),
            }
            if rng.random() < 0.5:
                hb["throughput"] = rng.choice([0.0, rng.uniform(0, 500)])
            if rng.random() < 0.5:
                hb["ok"] = rng.randint(0, 30)
                hb["err"] = rng.randint(0, 30)
            if rng.random() < 0.5:
                hb["io"] = rng.random()
            if rng.random() < 0.5:
                p50 = rng.uniform(1, 100)
                hb["p50_ms"] = p50
                hb["p95_ms"] = p50 * rng.uniform(1, 4)
            lines.append(hb)
        if rng.random() < 0.1:
            lines.append({"tick": k})
    return lines


def kernel_replay(lines, ticks):
    """Replay `lines` through the kernels; records shaped like the reference's."""
    sim = Sim(capacity=CAPACITY, params=default_params(**{k: float(v) for k, v in SCORE.items()}))
    slot_of = {}
    records = []
    by_tick = {}
    for line in lines:
        by_tick.setdefault(line["tick"], []).append(line)
    for k in range(ticks):
        for node, slot in sorted(slot_of.items(), key=lambda kv: kv[1]):
            if ((k - sim.last[slot]) * 50) / 1000 >= FORGET_AFTER_S:
                sim.forget(slot)
                del slot_of[node]
        for line in by_tick.get(k, []):
            if "node" not in line:
                continue
            node = line["node"]
            if node not in slot_of:
                free = [s for s in range(CAPACITY) if s not in slot_of.values()]
                slot_of[node] = free[0]
            fields = {key: v for key, v in line.items() if key not in ("tick", "node")}
            sim.hb(slot_of[node], **fields)
        _, pressure, _ = sim.step()
        rank = {slot: i + 1 for i, slot in enumerate(sim.ranked)}
        for node, slot in sorted(slot_of.items(), key=lambda kv: kv[1]):
            records.append(
                {
                    "tick": k,
                    "node": node,
                    "slot": slot,
                    "score": sim.out.score[slot],
                    "raw": sim.out.raw[slot],
                    "state": STATE_NAMES[int(sim.state.state[slot])],
                    "wait": sim.out.wait[slot],
                    "qema": sim.state.qema[slot],
                    "liveness": sim.out.liveness[slot],
                    "pressure": pressure,
                    "rank": rank.get(slot),
                }
            )
    return records


def assert_same(expected, got):
    assert len(expected) == len(got)
    for e, g in zip(expected, got, strict=True):
        where = f"tick {e['tick']} node {e['node']}"
        for key in ("tick", "node", "slot", "state", "rank"):
            assert e[key] == g[key], f"{where}: {key} {e[key]!r} != {g[key]!r}"
        for key in ("score", "raw", "wait", "qema", "liveness", "pressure"):
            assert g[key] == pytest.approx(e[key], abs=1e-9, rel=0), f"{where}: {key}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, CAPACITY), st.integers(1, 120))
def test_kernels_match_reference_on_random_traces(seed, n_nodes, ticks):
    lines = random_trace(random.Random(seed), n_nodes, ticks)
    params = {"engine": {"capacity": CAPACITY, "forget_after_s": FORGET_AFTER_S}, "score": SCORE}
    expected = run_reference(lines, params, ticks=ticks).records
    assert_same(expected, kernel_replay(lines, ticks))


def test_long_trace_exercises_every_state():
    rng = random.Random(7)
    lines = random_trace(rng, CAPACITY, 600)
    params = {"engine": {"capacity": CAPACITY, "forget_after_s": FORGET_AFTER_S}, "score": SCORE}
    expected = run_reference(lines, params, ticks=600).records
    got = kernel_replay(lines, 600)
    assert_same(expected, got)
    assert {r["state"] for r in got} == set(STATE_NAMES.values())
