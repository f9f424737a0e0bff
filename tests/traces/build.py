"""Builders of the replay traces that the reference comparison runs.

Each builder returns a ``Trace``: heartbeat lines (dicts with ``"tick"``), the
parameter overrides (SCORING.md key names, nested by section) and an optional
``--ticks`` value. ``python tests/traces/build.py`` writes every trace next to
this file as ``NAME.jsonl`` plus ``NAME.toml`` (the overrides, for
``--config``) when it has overrides; the committed files must equal what the
builders produce (a test checks it), so edit the builders, never the files.

Traces are small on purpose; several shrink the clock (``tick_interval_ms``
1000 makes suspect/dead/forget ages 2/10/20 ticks) or the quarantine knobs
(``probation_ticks``, ``max_flaps``, ``quarantine_memory``) so that a path of
SCORING.md fits in tens of ticks. ``defaults_long`` runs at the defaults.
What each trace is meant to exercise is asserted against the reference in
tests/test_reference_selfcheck.py, so a builder edit cannot quietly lose a path.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Trace:
    name: str
    lines: list[dict]
    params: dict = field(default_factory=dict)
    ticks: int | None = None


def hb(tick: int, node: str, cpu: float = 0.1, mem: float = 0.1, queue: float = 0.0,
       avg_job_s: float = 0.1, **optional) -> dict:
    """A heartbeat line; optional metrics by keyword."""
    return {"tick": tick, "node": node, "cpu": cpu, "mem": mem, "queue": queue,
            "avg_job_s": avg_job_s, **optional}


def level(tick: int, node: str, queue: float) -> dict:
    """A heartbeat whose only imperfection is its queue: cpu = mem = 0 and
    avg_job_s = 0 make every goodness 1 (so core = 1.0 exactly) and wait 0 (so
    P = 0); with alpha_queue = beta = 1, s = raw = B = (100 - queue) / 50."""
    return hb(tick, node, cpu=0.0, mem=0.0, queue=queue, avg_job_s=0.0)


EXACT = {"alpha_queue": 1.0, "beta": 1.0}
FAST_CLOCK = {"tick_interval_ms": 1000}  # suspect at 2 ticks, dead at 10


# ---------------------------------------------------------------- traces

def defaults_long() -> Trace:
    """All defaults (50 ms ticks: suspect after 40 ticks, dead after 200).

    Three nodes with optional metrics, pressure from real waits, two
    heartbeats for one node in one tick, a tie in score, and node "c" silent
    from tick 5 to 240: suspect zone, DEAD, then revived and classified fresh.
    """
    lines = []
    for k in range(260):
        lines.append(hb(k, "a", cpu=0.3 + 0.2 * math.sin(k / 7), mem=0.4,
                        queue=float(k % 13), avg_job_s=0.8, throughput=12.0 + k % 5,
                        ok=30 + k % 4, err=k % 3, io=0.2,
                        p50_ms=20.0, p95_ms=35.0 + k % 11))
        lines.append(hb(k, "b", cpu=0.5, mem=0.5, queue=4.0, avg_job_s=1.5,
                        throughput=9.0, zone="z1", labels={"gpu": "no"}))
        if k == 3:  # only the latest of a tick's heartbeats is used
            lines.append(hb(k, "b", cpu=0.6, mem=0.5, queue=40.0, avg_job_s=1.5))
        if k < 5 or k >= 240:
            lines.append(hb(k, "c", cpu=0.2, mem=0.3, queue=2.0, avg_job_s=0.5, ts=1.7e9 + k))
        if 100 <= k < 104:  # a twin of "b": equal scores, ranked by slot
            lines.append(hb(k, "twin", cpu=0.5, mem=0.5, queue=4.0, avg_job_s=1.5,
                            throughput=9.0))
    return Trace("defaults_long", lines)


def hysteresis_exact() -> Trace:
    """s = raw = B exactly (see ``level``); one node, so the quarantine cap is
    floor(0.5 * 1) = 0 and the flapping never quarantines it.

    Every transition and the boundaries, with the notes' arithmetic:
    t_degraded + delta = 0.5, t_overloaded + delta = 0.30000000000000004.
    """
    plan = [
        (0, "healthy"),       # s 1.0, first tick: fresh
        (80, "healthy"),      # s 0.4 == t_degraded: stays
        (85, "degraded"),     # s 0.3: H -> D
        (76, "degraded"),     # s 0.48: inside delta, stays
        (75, "healthy"),      # s 0.5 == t_degraded + delta: D -> H
        (90, "degraded"),     # s 0.2 == t_overloaded: H -> D, not O
        (91, "overloaded"),   # s 0.18: D -> O
        (85, "overloaded"),   # s 0.3 < 0.30000000000000004: stays
        (84, "degraded"),     # s 0.32: O -> D
        (95, "overloaded"),   # s 0.1
        (0, "healthy"),       # s 1.0: O -> H directly
        (95, "overloaded"),   # H -> O directly
        (75, "healthy"),      # s 0.5: O -> H at the boundary
        (100, "overloaded"),  # qema >= max_queue: tripped
        (0, "healthy"),
        (60, "healthy"),      # s 0.8
        (99, "overloaded"),   # s 0.02: H -> O
        (83, "degraded"),     # s 0.34: O -> D
        (72, "healthy"),      # s 0.56: D -> H
    ]
    lines = [level(k, "h", q) for k, (q, _) in enumerate(plan)]
    return Trace("hysteresis_exact", lines, {"score": dict(EXACT)})


def hysteresis_smooth() -> Trace:
    """Defaults: s follows raw through beta = 0.5 and qema through alpha 0.3,
    so states move H -> D -> O and back gradually; also a plateau inside the
    hysteresis band."""
    queues = [0] * 5 + [75] * 12 + [88] * 12 + [95] * 12 + [82] * 12 + [76] * 12 + [0] * 12
    lines = [hb(k, "g", cpu=0.0, mem=0.0, queue=float(q), avg_job_s=0.0)
             for k, q in enumerate(queues)]
    return Trace("hysteresis_smooth", lines)


def breakers() -> Trace:
    """Every circuit-breaker condition, each with a near miss, at defaults."""
    lines = []
    for k in range(12):
        trip = 4 <= k < 8
        if k >= 4:  # first tick qema = queue = 100 exactly: tripped, fresh O
            lines.append(hb(k, "queue", queue=100.0 if trip else 0.0, avg_job_s=0.0))
        lines.append(hb(k, "queue99", queue=99.0, avg_job_s=0.0))  # B tiny, not tripped
        lines.append(hb(k, "wait", queue=10.0, avg_job_s=3.0 if trip else 2.999))
        lines.append(hb(k, "cpu", cpu=0.98 if trip else 0.979))
        lines.append(hb(k, "mem", mem=0.95 if trip else 0.949))
        lines.append(hb(k, "errs", ok=10 if trip else 11, err=10))
        lines.append(hb(k, "few", ok=0, err=19))  # rate 1 but below min_requests
        lines.append(hb(k, "many", ok=0, err=20 + k))
        lines.append(hb(k, "ema", queue=150.0 if k >= 2 else 0.0, avg_job_s=0.0))
    return Trace("breakers", lines)


def liveness_registry() -> Trace:
    """Fast clock (1 tick = 1 s): suspect zone, DEAD at age 10, revival with a
    fresh classification, forgetting at age 20, re-registration in the lowest
    free slot (also on the very tick of forgetting), registry_full at
    capacity 4, and heartbeats for an unknown node that fill a freed slot."""
    lines = []
    for k in range(70):
        lines.append(hb(k, "a", cpu=0.2, queue=1.0, avg_job_s=0.5))
        if k <= 2 or 14 <= k <= 15:          # dead at 12, revived at 14
            lines.append(hb(k, "b", cpu=0.3, queue=3.0, avg_job_s=0.5))
        if k <= 1:                            # forgotten at tick 21
            lines.append(hb(k, "c", cpu=0.4, queue=5.0, avg_job_s=0.5))
        if k >= 22:                           # takes the slot "c" left
            lines.append(hb(k, "d", cpu=0.1, queue=0.0, avg_job_s=0.5))
        if 23 <= k <= 24 or k >= 40:          # registry_full until "b" goes
            lines.append(hb(k, "e", cpu=0.1, queue=0.0, avg_job_s=0.5))
        if k == 23:
            lines.append(hb(k, "f", cpu=0.1, queue=0.0, avg_job_s=0.5))
        if k == 35:                           # "b" forgotten and back in one tick
            lines.append(hb(k, "b", cpu=0.3, queue=7.0, avg_job_s=0.5))
        if k >= 55:                           # registers as "b" is forgotten
            lines.append(hb(k, "g", cpu=0.3, queue=1.0, avg_job_s=0.5))
    lines.append({"tick": 75})
    params = {"engine": {"capacity": 4, "forget_after_s": 20, **FAST_CLOCK}}
    return Trace("liveness_registry", lines, params)


def optional_metrics() -> Trace:
    """Optional metrics appearing and disappearing with each row, and the
    throughput normaliser T: the largest among live reporters (a suspect node
    counts, a dead one does not), and T = 0."""
    lines = []
    for k in range(30):
        full = {"throughput": 10.0, "ok": 50, "err": 5, "io": 0.3,
                "p50_ms": 10.0, "p95_ms": 45.0}
        lines.append(hb(k, "opt", **(full if k % 6 < 3 else {})))
        if k in (10, 11):
            lines.append(hb(k, "opt2", io=0.9, p50_ms=10.0, p95_ms=10.0))
        elif k < 20:
            lines.append(hb(k, "opt2", ok=4294967295, err=0))
        if k < 8 or 25 <= k:  # the biggest producer: suspect, dead, back
            lines.append(hb(k, "fast", throughput=40.0))
        lines.append(hb(k, "zero", throughput=0.0 if k < 22 else 5.0))
        if k >= 22:
            lines.append(hb(k, "idle", throughput=0.0))
    params = {"engine": dict(FAST_CLOCK), "score": {"dead_after_s": 6.0}}
    return Trace("optional_metrics", lines, params)


def pressure() -> Trace:
    """Pressure P from several waits (one over max_wait_s, capped at 1), a
    node in the suspect zone counted, a dead one not; changed k1/k2 and
    weights."""
    lines = []
    for k in range(25):
        lines.append(hb(k, "p1", queue=20.0, avg_job_s=1.0, throughput=5.0))
        lines.append(hb(k, "p2", queue=4.0, avg_job_s=2.0 + k / 10))
        if k < 3:
            lines.append(hb(k, "p3", queue=45.0, avg_job_s=1.0, throughput=8.0))
        lines.append(hb(k, "p4", queue=0.0, avg_job_s=1.0, throughput=3.0, ok=7, err=1))
    params = {"engine": dict(FAST_CLOCK),
              "score": {"k1": 0.8, "k2": 0.6, "weights": {"cpu": 0.3, "io": 0.1}}}
    return Trace("pressure", lines, params)


def _flapper(k: int, node: str) -> dict:
    return level(k, node, 0.0 if k % 2 == 0 else 95.0)


def quarantine_backoff() -> Trace:
    """Entry, probation restarted by a bad and by a tripped tick, release to
    HEALTHY with flap 0, and a second quarantine needing 2 x probation_ticks.
    Node "s" is steady so that the cap is floor(0.5 * 2) = 1."""
    lines = []
    for k in range(70):
        lines.append(level(k, "s", 10.0))
        if k < 6 or 22 <= k < 28:
            lines.append(_flapper(k, "q"))       # flaps until quarantined
        elif k == 9:
            lines.append(level(k, "q", 80.0))     # raw 0.4 < 0.5: count restarts
        elif k == 12:
            lines.append(level(k, "q", 100.0))    # tripped: count restarts
        else:
            lines.append(level(k, "q", 0.0))      # raw 1.0: probation ticks
    params = {"score": {**EXACT, "max_flaps": 3, "probation_ticks": 5}}
    return Trace("quarantine_backoff", lines, params)


def quarantine_memory() -> Trace:
    """quarantine_memory 6: a node that stays six ticks live and out of
    quarantine has n reset, so its next quarantine needs probation_ticks * 1;
    one that re-flaps sooner needs 2x. A quarantined node that dies (fast
    clock) ends DEAD, keeps n, and is classified fresh on revival."""
    lines = []
    flapping = [range(0, 6), range(15, 21), range(23, 29), range(45, 50), range(62, 70)]
    for k in range(100):
        lines.append(level(k, "s", 10.0))
        if any(k in r for r in flapping):
            lines.append(_flapper(k, "q"))
        elif 50 <= k < 62:
            pass                                  # silent while quarantined
        else:
            lines.append(level(k, "q", 0.0))
    params = {"engine": dict(FAST_CLOCK),
              "score": {**EXACT, "max_flaps": 3, "probation_ticks": 3,
                        "quarantine_memory": 6, "flap_window": 10}}
    return Trace("quarantine_memory", lines, params)


def quarantine_backoff_cap() -> Trace:
    """max_backoff 2: quarantines need probation_ticks * min(n, 2) ticks, so
    the third (n = 3) needs 2x like the second, not 3x."""
    lines = []
    flapping = [range(0, 5), range(12, 17), range(26, 31)]
    for k in range(50):
        lines.append(level(k, "s", 0.0))
        if any(k in r for r in flapping):
            lines.append(_flapper(k, "q"))
        else:
            lines.append(level(k, "q", 0.0))
    params = {"score": {**EXACT, "max_flaps": 2, "probation_ticks": 3, "max_backoff": 2}}
    return Trace("quarantine_backoff_cap", lines, params)


def quarantine_cap() -> Trace:
    """Five flapping nodes and one steady: cap = floor(0.5 * live), admitted in
    slot order, the rest keep state and flap; releases let the next in; a
    death lowers the cap."""
    lines = []
    names = ["f0", "f1", "f2", "f3", "f4"]
    for k in range(60):
        lines.append(level(k, "steady", 0.0))
        for i, name in enumerate(names):
            if name == "f4" and 30 <= k < 42:
                continue                          # f4 dies (fast clock)
            if k < 8 + i or (k >= 20 and i >= 2):
                lines.append(_flapper(k, name))
            else:
                lines.append(level(k, name, 0.0))
    params = {"engine": dict(FAST_CLOCK),
              "score": {**EXACT, "max_flaps": 3, "probation_ticks": 4}}
    return Trace("quarantine_cap", lines, params)


def quarantine_defaults() -> Trace:
    """Quarantine at the default knobs: max_flaps 6, probation 30 ticks."""
    lines = []
    for k in range(90):
        lines.append(level(k, "s1", 0.0))
        lines.append(level(k, "s2", 20.0))
        # a tripped tick (cpu >= max_cpu) zeroes s; the next one, with raw 1,
        # smooths to s = 0.5 * 1 + 0.5 * 0 = 0.5 >= t_degraded + delta: O <-> H
        cpu = 0.99 if k < 12 and k % 2 == 1 else 0.0
        lines.append(hb(k, "fl", cpu=cpu, mem=0.0, queue=0.0, avg_job_s=0.0))
    return Trace("quarantine_defaults", lines)


def rejections() -> Trace:
    """Invalid heartbeats that must change nothing, next to valid edge cases
    that must be accepted. "r" sends only invalid heartbeats from tick 2, so
    it goes suspect then DEAD on the fast clock; unknown ids never register."""
    nan, inf = float("nan"), float("inf")
    bad = [
        {"node": "r", "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},            # missing cpu
        {"node": "r", "cpu": 1.5, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "r", "cpu": nan, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "r", "cpu": 0.1, "mem": inf, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "r", "cpu": "0.1", "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "r", "cpu": True, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": -1.0, "avg_job_s": 0.1},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": -0.5},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "colour": 1},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "ok": 3},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "ok": -1, "err": 0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1,
         "ok": 2**32, "err": 0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "ok": 1, "err": False},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "p50_ms": 10.0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1,
         "p50_ms": 10.0, "p95_ms": 9.0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1,
         "p50_ms": 0.0, "p95_ms": 9.0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "io": 1.01},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "throughput": -1.0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "zone": "z" * 32},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "zone": 7},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "labels": {"a": 1}},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "labels": ["a"]},
        {"cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},              # no node
        {"node": "", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "n" * 64, "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "é" * 32, "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},  # 64 bytes
        {"node": "new\nline", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "tab\there", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": 17, "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "ghost", "cpu": 0.1, "mem": 2.0, "queue": 0.0, "avg_job_s": 0.1},
    ]
    good = [
        {"node": "e" * 63, "cpu": 0, "mem": 1, "queue": 3, "avg_job_s": 0},     # ints, bounds
        {"node": "nœud-é" + "x" * 55, "cpu": 1.0, "mem": 0.0, "queue": 0.0, "avg_job_s": 0.0},
        {"node": "edge", "cpu": 0.5, "mem": 0.5, "queue": 0.0, "avg_job_s": 0.0,
         "ok": 4294967295, "err": 0, "p50_ms": 5.0, "p95_ms": 5.0, "io": 1.0,
         "throughput": 0.0, "zone": "z" * 31, "labels": {}, "ts": -1.5},
        {"node": "edge2", "cpu": 0.5, "mem": 0.5, "queue": 0.0, "avg_job_s": 0.0,
         "ok": 0, "err": 0, "p50_ms": 1e-300, "p95_ms": 1e300, "zone": "",
         "labels": {"k": "v", "é": "ü"}},
    ]
    lines = []
    for k in range(20):
        if k < 2:
            lines.append(hb(k, "r", cpu=0.3, queue=2.0))
        lines.append(hb(k, "keep", cpu=0.2, queue=1.0))
        for j, bad_hb in enumerate(bad):
            if (j + k) % 4 == 0:
                lines.append({"tick": k, **bad_hb})
        if k in (3, 7):
            for g in good:
                lines.append({"tick": k, **g})
    return Trace("rejections", lines, {"engine": dict(FAST_CLOCK)})


def tick_lines() -> Trace:
    """``{"tick": k}`` lines extend the run past the last heartbeat; gaps in
    tick numbers are computed too; the replay is also run with ``--ticks``
    shorter and longer than the trace (see the tests)."""
    lines = [hb(0, "t1"), {"tick": 1}, {"tick": 1}, hb(4, "t2", queue=7.0),
             {"tick": 6}, hb(6, "t1", cpu=0.9), {"tick": 40}]
    return Trace("tick_lines", lines, {"engine": dict(FAST_CLOCK)})


BUILDERS = [defaults_long, hysteresis_exact, hysteresis_smooth, breakers,
            liveness_registry, optional_metrics, pressure, quarantine_backoff,
            quarantine_backoff_cap, quarantine_memory, quarantine_cap,
            quarantine_defaults, rejections, tick_lines]


def all_traces() -> list[Trace]:
    return [build() for build in BUILDERS]


# ---------------------------------------------------------------- files

def to_jsonl(trace: Trace) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in trace.lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def to_toml(params: dict) -> str:
    """The overrides as a TOML config file (sections [engine], [score],
    [score.weights])."""
    out: list[str] = []

    def table(name: str, values: dict) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
        if scalars:
            out.append(f"[{name}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
            out.append("")
        for k, v in values.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for section, values in params.items():
        table(section, values)
    return "\n".join(out)


def expected_files() -> dict[str, str]:
    files = {}
    for trace in all_traces():
        files[f"{trace.name}.jsonl"] = to_jsonl(trace)
        if trace.params:
            files[f"{trace.name}.toml"] = to_toml(trace.params)
    return files


def main() -> int:
    for name, text in expected_files().items():
        (HERE / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
