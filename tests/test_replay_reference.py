"""The engine's replay against the independent reference (tests/reference.py).

Every trace of tests/traces/build.py (feedback, slots and rate-percentile
traces included), a few ``--ticks`` variants, the CLI in a subprocess, and
random small traces from hypothesis (heartbeats with every field, scheduler
feedback lines, corrupt heartbeats) must give the same records: keys equal,
floats within 1e-9 absolute, everything else exactly. Both sides follow
SCORING.md version 2.
A failure names the first differing record and field; the reference's own
arithmetic is checked by hand in test_reference_selfcheck.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference import RECORD_KEYS, reference_replay
from traces import build  # tests/traces/build.py

TESTS_DIR = Path(__file__).resolve().parent
TRACES_DIR = TESTS_DIR / "traces"
REPO = TESTS_DIR.parent
FLOAT_KEYS = ("score", "raw", "wait", "qema", "liveness", "pressure")
TOLERANCE = 1e-9


TRACES = {t.name: t for t in build.all_traces()}

# Skip only while the engine module is absent; once it exists, an import
# error inside it must fail these tests, not skip them.
needs_engine = pytest.mark.skipif(
    importlib.util.find_spec("shm_engine.tick.replay") is None
    or importlib.util.find_spec("shm_engine.core.config") is None,
    reason="shm_engine.tick.replay / shm_engine.core.config not written yet",
)


def engine_replay(lines, params, ticks=None) -> list[dict]:
    from shm_engine.core.config import Config
    from shm_engine.tick.replay import replay

    config = Config.from_dict(params or {})
    return list(replay(list(lines), config, ticks=ticks))


def _describe(rec: dict) -> str:
    return f"tick {rec.get('tick')} node {rec.get('node')!r} slot {rec.get('slot')}"


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    """Engine records ``got`` equal reference records ``want``."""
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        where = f"record {i} (reference: {_describe(w)}; engine: {_describe(g)})"
        assert set(g) == set(w) == set(RECORD_KEYS), f"{where}: keys {sorted(g)} != {sorted(w)}"
        for key in RECORD_KEYS:
            gv, wv = g[key], w[key]
            if key in FLOAT_KEYS:
                ok = (
                    isinstance(gv, (int, float))
                    and not isinstance(gv, bool)
                    and math.isfinite(gv)
                    and abs(gv - wv) <= TOLERANCE
                )
            else:
                ok = gv == wv and type(gv) is type(wv)
            assert ok, (
                f"{where}: {key} engine={gv!r} reference={wv!r}\n  engine:    {g}\n  reference: {w}"
            )
    assert len(got) == len(want), (
        f"engine gave {len(got)} records, reference {len(want)}; first extra: "
        f"{(got[len(want)] if len(got) > len(want) else want[len(got)])}"
    )


# ------------------------------------------------------------ committed traces


@needs_engine
@pytest.mark.parametrize("name", sorted(TRACES))
def test_trace_matches_reference(name):
    trace = TRACES[name]
    want = reference_replay(trace.lines, trace.params, trace.ticks)
    got = engine_replay(trace.lines, trace.params, trace.ticks)
    assert_same_records(got, want)


@needs_engine
@pytest.mark.parametrize("name", sorted(TRACES))
def test_trace_file_lines_match_reference(name):
    """The committed .jsonl, fed as text lines the way the CLI reads them."""
    trace = TRACES[name]
    text_lines = (TRACES_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    want = reference_replay(text_lines, trace.params, trace.ticks)
    got = engine_replay(text_lines, trace.params, trace.ticks)
    assert_same_records(got, want)


@needs_engine
@pytest.mark.parametrize(
    "name, ticks",
    [
        ("tick_lines", 0),
        ("tick_lines", 1),
        ("tick_lines", 5),  # stops before the heartbeat at tick 6
        ("tick_lines", 7),
        ("tick_lines", 60),  # runs past the last named tick
        ("liveness_registry", 30),
        ("quarantine_memory", 52),
        ("feedback_ejection", 105),  # stops inside an ejection
        ("feedback_registry", 7),  # stops on the registry_full tick
        ("feedback_window", 30),  # runs past the last named tick
    ],
)
def test_ticks_argument_matches_reference(name, ticks):
    trace = TRACES[name]
    want = reference_replay(trace.lines, trace.params, ticks)
    assert len({r["tick"] for r in want}) <= ticks
    got = engine_replay(trace.lines, trace.params, ticks)
    assert_same_records(got, want)


@needs_engine
def test_dead_node_raw_stays_finite_when_rate_ratio_overflows():
    """A DEAD node must publish raw = 0, never NaN.

    R counts live nodes only, so a dead node's rate / R is unbounded: here
    (1 / 1e-300) / (1 / 1e10) = 1e300 / 1e-10 = inf, which ``min(rate / R, 1)``
    caps at 1; raw = L * B * core = 0 * 1 * core = 0.
    """
    g = {"cpu": 0.1, "mem": 0.1, "queue": 0.0}
    lines = [
        {"tick": 0, "node": "a", **g, "avg_job_s": 1e-300},
        {"tick": 0, "node": "b", **g, "avg_job_s": 1e10},
        {"tick": 10, "node": "b", **g, "avg_job_s": 1e10},
    ]
    params = {"engine": {"tick_interval_ms": 1000}}  # "a" is dead at tick 10
    want = reference_replay(lines, params)
    assert want[-2]["node"] == "a" and want[-2]["state"] == "dead"
    assert want[-2]["raw"] == 0.0
    assert_same_records(engine_replay(lines, params), want)


# ------------------------------------------------------------ the CLI


def _cli_command() -> list[str]:
    exe = Path(sys.executable).parent / "shm-engine"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "shm_engine"]


@pytest.mark.skipif(
    importlib.util.find_spec("shm_engine.ops.cli") is None,
    reason="shm_engine.ops.cli not written yet",
)
@pytest.mark.parametrize(
    "name, ticks",
    [
        ("quarantine_memory", None),  # with --config
        ("tick_lines", 12),  # with --config and --ticks
        ("breakers", None),  # defaults, no --config
        ("feedback_window", None),  # feedback lines, with --config
        ("feedback_ejection", 120),  # feedback lines at defaults, with --ticks
    ],
)
def test_cli_replay_matches_reference(name, ticks):
    trace = TRACES[name]
    args = [*_cli_command(), "replay", str(TRACES_DIR / f"{name}.jsonl")]
    if trace.params:
        args += ["--config", str(TRACES_DIR / f"{name}.toml")]
    if ticks is not None:
        args += ["--ticks", str(ticks)]
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    want = reference_replay(trace.lines, trace.params, ticks)
    assert_same_records(got, want)


# ------------------------------------------------------------ random traces

# A small world: capacity 3 for registry_full, 1 s ticks with dead at 6 s and
# forget at 12 s so random gaps reach every liveness zone, quarantine knobs
# small enough to trigger in a few dozen ticks, and an error window, ejection
# and min_requests that feedback reaches often.
RANDOM_PARAMS = {
    "engine": {"capacity": 3, "tick_interval_ms": 1000, "forget_after_s": 12},
    "score": {
        "dead_after_s": 6.0,
        "max_flaps": 2,
        "probation_ticks": 2,
        "flap_window": 8,
        "quarantine_memory": 5,
        "beta": 0.7,
        "error_half_life_s": 2.0,
        "max_consecutive_errors": 3,
        "ejection_s": 3.0,
        "min_requests": 6,
    },
}
# n0..n3 compete for 3 slots; "ghost" only ever gets feedback.
NODES = ["n0", "n1", "n2", "n3"]
FEEDBACK_NODES = NODES + ["ghost"]

unit = st.one_of(st.sampled_from([0.0, 0.5, 0.95, 0.98, 1.0]), st.floats(0.0, 1.0, allow_nan=False))
nonneg = st.one_of(
    st.sampled_from([0.0, 10.0, 50.0, 100.0]), st.floats(0.0, 150.0, allow_nan=False)
)
# No tiny job times: slots / avg_job_s must stay finite (its own test above).
job_s = st.one_of(st.just(0.0), st.floats(1e-3, 4.0, allow_nan=False))


@st.composite
def heartbeats(draw) -> dict:
    msg = {
        "node": draw(st.sampled_from(NODES)),
        "cpu": draw(unit),
        "mem": draw(unit),
        "queue": draw(nonneg),
        "avg_job_s": draw(job_s),
    }
    if draw(st.booleans()):
        msg["throughput"] = draw(st.floats(0.0, 50.0, allow_nan=False))
    if draw(st.booleans()):
        msg["ok"] = draw(st.integers(0, 40))
        msg["err"] = draw(st.integers(0, 40))
    if draw(st.booleans()):
        msg["io"] = draw(unit)
    if draw(st.booleans()):
        p50 = draw(st.floats(0.5, 100.0, allow_nan=False))
        msg["p50_ms"] = p50
        msg["p95_ms"] = p50 * draw(st.floats(1.0, 5.0, allow_nan=False))
    if draw(st.booleans()):
        msg["slots"] = draw(st.sampled_from([1, 2, 4, 16, 65535]))
    if draw(st.integers(0, 3)) == 0:
        msg["resources"] = {
            "cpu": draw(st.floats(0.0, 64.0, allow_nan=False)),
            "gpu": float(draw(st.integers(0, 8))),
        }
    return msg


@st.composite
def feedback_lines(draw) -> dict:
    line = {"feedback": draw(st.sampled_from(FEEDBACK_NODES))}
    if draw(st.booleans()):
        line["rif"] = draw(st.sampled_from([0, 1, 3, 20, 70, 120]))
    if draw(st.booleans()):
        line["ok"] = draw(st.integers(0, 6))
    if draw(st.booleans()):
        line["err"] = draw(st.integers(0, 6))
    if draw(st.booleans()):
        line["consec"] = draw(st.integers(0, 5))
    return line


# Invalid on purpose, and with a reason every reading of SCORING.md agrees on.
CORRUPTIONS = [
    lambda m: {k: v for k, v in m.items() if k != "cpu"},
    lambda m: {**m, "mem": 1.5},
    lambda m: {**m, "queue": -2.0},
    lambda m: {**m, "cpu": float("nan")},
    lambda m: {**m, "extra": 1},
    lambda m: {**{k: v for k, v in m.items() if k not in ("ok", "err")}, "ok": 3},
    lambda m: {**m, "p50_ms": 10.0, "p95_ms": 5.0},
    lambda m: {**m, "node": ""},
    lambda m: {**m, "node": m["node"] + " x"},
    lambda m: {**m, "cpu": True},
    lambda m: {**m, "slots": 0},
    lambda m: {**m, "resources": {"gpu": -1.0}},
]


@st.composite
def random_traces(draw) -> list[dict]:
    lines: list[dict] = []
    tick = 0
    for _ in range(draw(st.integers(1, 40))):
        tick += draw(st.sampled_from([0, 0, 0, 1, 1, 1, 2, 4, 7, 13]))
        kind = draw(st.integers(0, 9))
        if kind == 0:
            # a burst of flapping (tripped / clean on alternate ticks), so that
            # quarantine, probation and the cap come up often
            node = draw(st.sampled_from(NODES))
            for _ in range(draw(st.integers(2, 12))):
                cpu = 0.99 if tick % 2 else 0.0
                lines.append(
                    {
                        "tick": tick,
                        "node": node,
                        "cpu": cpu,
                        "mem": 0.0,
                        "queue": 0.0,
                        "avg_job_s": 0.0,
                    }
                )
                tick += 1
            continue
        if kind <= 3:
            lines.append({"tick": tick, **draw(feedback_lines())})
            continue
        msg = draw(heartbeats())
        if draw(st.integers(0, 9)) == 0:
            msg = draw(st.sampled_from(CORRUPTIONS))(msg)
        lines.append({"tick": tick, **msg})
    # READING-neutral end: the run's last tick is named by a plain tick line.
    lines.append({"tick": tick + draw(st.integers(0, 8))})
    return lines


@needs_engine
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_traces())
def test_random_traces_match_reference(lines):
    want = reference_replay(lines, RANDOM_PARAMS)
    got = engine_replay(lines, RANDOM_PARAMS)
    assert_same_records(got, want)


@needs_engine
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_traces())
def test_random_traces_at_defaults_match_reference(lines):
    want = reference_replay(lines)
    got = engine_replay(lines, {})
    assert_same_records(got, want)
