"""Builders of the replay traces that the reference comparison runs.

Each builder returns a ``Trace``: trace lines (dicts with ``"tick"``: heartbeats,
scheduler feedback lines ``{"tick", "feedback", "rif", "ok", "err", "consec"}``
and bare ``{"tick": k}`` lines), the parameter overrides (SCORING.md key names, nested by section)
and an optional
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


def hb(
    tick: int,
    node: str,
    cpu: float = 0.1,
    mem: float = 0.1,
    queue: float = 0.0,
    avg_job_s: float = 0.1,
    **optional,
) -> dict:
    """A heartbeat line; optional metrics by keyword."""
    return {
        "tick": tick,
        "node": node,
        "cpu": cpu,
        "mem": mem,
        "queue": queue,
        "avg_job_s": avg_job_s,
        **optional,
    }


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
        lines.append(
            hb(
                k,
                "a",
                cpu=0.3 + 0.2 * math.sin(k / 7),
                mem=0.4,
                queue=float(k % 13),
                avg_job_s=0.8,
                throughput=12.0 + k % 5,
                ok=30 + k % 4,
                err=k % 3,
                io=0.2,
                p50_ms=20.0,
                p95_ms=35.0 + k % 11,
            )
        )
        lines.append(
            hb(
                k,
                "b",
                cpu=0.5,
                mem=0.5,
                queue=4.0,
                avg_job_s=1.5,
                throughput=9.0,
                zone="z1",
                labels={"gpu": "no"},
            )
        )
        if k == 3:  # only the latest of a tick's heartbeats is used
            lines.append(hb(k, "b", cpu=0.6, mem=0.5, queue=40.0, avg_job_s=1.5))
        if k < 5 or k >= 240:
            lines.append(hb(k, "c", cpu=0.2, mem=0.3, queue=2.0, avg_job_s=0.5, ts=1.7e9 + k))
        if 100 <= k < 104:  # a twin of "b": equal scores, ranked by slot
            lines.append(hb(k, "twin", cpu=0.5, mem=0.5, queue=4.0, avg_job_s=1.5, throughput=9.0))
    return Trace("defaults_long", lines)


def hysteresis_exact() -> Trace:
    """s = raw = B exactly (see ``level``); one node, so the quarantine cap is
    floor(0.5 * 1) = 0 and the flapping never quarantines it.

    Every transition and the boundaries, with the notes' arithmetic:
    t_degraded + delta = 0.5, t_overloaded + delta = 0.30000000000000004.
    """
    plan = [
        (0, "healthy"),  # s 1.0, first tick: fresh
        (80, "healthy"),  # s 0.4 == t_degraded: stays
        (85, "degraded"),  # s 0.3: H -> D
        (76, "degraded"),  # s 0.48: inside delta, stays
        (75, "healthy"),  # s 0.5 == t_degraded + delta: D -> H
        (90, "degraded"),  # s 0.2 == t_overloaded: H -> D, not O
        (91, "overloaded"),  # s 0.18: D -> O
        (85, "overloaded"),  # s 0.3 < 0.30000000000000004: stays
        (84, "degraded"),  # s 0.32: O -> D
        (95, "overloaded"),  # s 0.1
        (0, "healthy"),  # s 1.0: O -> H directly
        (95, "overloaded"),  # H -> O directly
        (75, "healthy"),  # s 0.5: O -> H at the boundary
        (100, "overloaded"),  # qema >= max_queue: tripped
        (0, "healthy"),
        (60, "healthy"),  # s 0.8
        (99, "overloaded"),  # s 0.02: H -> O
        (83, "degraded"),  # s 0.34: O -> D
        (72, "healthy"),  # s 0.56: D -> H
    ]
    lines = [level(k, "h", q) for k, (q, _) in enumerate(plan)]
    return Trace("hysteresis_exact", lines, {"score": dict(EXACT)})


def hysteresis_smooth() -> Trace:
    """Defaults: s follows raw through beta = 0.5 and qema through alpha 0.3,
    so states move H -> D -> O and back gradually; also a plateau inside the
    hysteresis band."""
    queues = [0] * 5 + [75] * 12 + [88] * 12 + [95] * 12 + [82] * 12 + [76] * 12 + [0] * 12
    lines = [
        hb(k, "g", cpu=0.0, mem=0.0, queue=float(q), avg_job_s=0.0) for k, q in enumerate(queues)
    ]
    return Trace("hysteresis_smooth", lines)


def breakers() -> Trace:
    """Every circuit-breaker condition, each with a near miss, at defaults.

    The error window (d = 0.5 ** 0.005 per 50 ms tick) is fed by heartbeats
    only here: "errs" reaches min_requests with a rate of exactly 0.5 at t4
    and stays above it until t8's oks; "errs_near" misses by one error;
    "decay" trips on its first tick (10 errors == min_requests) and drops
    below min_requests by the next tick's decay; "few" never reaches 10.
    """
    lines = []
    for k in range(12):
        trip = 4 <= k < 8
        if k >= 4:  # first tick qema = queue = 100 exactly: tripped, fresh O
            lines.append(hb(k, "queue", queue=100.0 if trip else 0.0, avg_job_s=0.0))
        lines.append(hb(k, "queue99", queue=99.0, avg_job_s=0.0))  # B tiny, not tripped
        lines.append(hb(k, "wait", queue=10.0, avg_job_s=3.0 if trip else 2.999))
        lines.append(hb(k, "cpu", cpu=0.98 if trip else 0.979))
        lines.append(hb(k, "mem", mem=0.95 if trip else 0.949))
        errs = {4: (5, 5), 5: (0, 1), 6: (0, 1), 7: (0, 1), 8: (10, 0)}.get(k, (0, 0))
        lines.append(hb(k, "errs", ok=errs[0], err=errs[1]))
        lines.append(hb(k, "errs_near", ok=6 if k == 4 else 0, err=5 if k == 4 else 0))
        lines.append(hb(k, "decay", ok=0, err=10 if k == 0 else 0))
        lines.append(hb(k, "few", ok=0, err=9 if k == 0 else 0))
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
        if k <= 2 or 14 <= k <= 15:  # dead at 12, revived at 14
            lines.append(hb(k, "b", cpu=0.3, queue=3.0, avg_job_s=0.5))
        if k <= 1:  # forgotten at tick 21
            lines.append(hb(k, "c", cpu=0.4, queue=5.0, avg_job_s=0.5))
        if k >= 22:  # takes the slot "c" left
            lines.append(hb(k, "d", cpu=0.1, queue=0.0, avg_job_s=0.5))
        if 23 <= k <= 24 or k >= 40:  # registry_full until "b" goes
            lines.append(hb(k, "e", cpu=0.1, queue=0.0, avg_job_s=0.5))
        if k == 23:
            lines.append(hb(k, "f", cpu=0.1, queue=0.0, avg_job_s=0.5))
        if k == 35:  # "b" forgotten and back in one tick
            lines.append(hb(k, "b", cpu=0.3, queue=7.0, avg_job_s=0.5))
        if k >= 55:  # registers as "b" is forgotten
            lines.append(hb(k, "g", cpu=0.3, queue=1.0, avg_job_s=0.5))
    lines.append({"tick": 75})
    params = {"engine": {"capacity": 4, "forget_after_s": 20, **FAST_CLOCK}}
    return Trace("liveness_registry", lines, params)


def optional_metrics() -> Trace:
    """Optional metrics appearing and disappearing with each row, and the rate
    normaliser R: the largest ``slots / avg_job_s`` among live nodes below ten
    of them (a suspect node counts, a dead one does not). ``throughput`` is
    shown, not scored: "zero" changes it at t22 and its score does not move;
    "idle" has ``avg_job_s`` 0, so no rate term at all."""
    lines = []
    for k in range(30):
        full = {"throughput": 10.0, "ok": 50, "err": 5, "io": 0.3, "p50_ms": 10.0, "p95_ms": 45.0}
        lines.append(hb(k, "opt", **(full if k % 6 < 3 else {})))
        if k in (10, 11):
            lines.append(hb(k, "opt2", io=0.9, p50_ms=10.0, p95_ms=10.0))
        elif k < 20:
            lines.append(hb(k, "opt2", ok=4294967295, err=0))
        if k < 8 or 25 <= k:  # the fastest node (rate 40): suspect, dead, back
            lines.append(hb(k, "fast", avg_job_s=0.025, throughput=40.0))
        lines.append(hb(k, "zero", throughput=0.0 if k < 22 else 5.0))
        if k >= 22:
            lines.append(hb(k, "idle", avg_job_s=0.0, throughput=0.0))
    params = {"engine": dict(FAST_CLOCK), "score": {"dead_after_s": 6.0}}
    return Trace("optional_metrics", lines, params)


def pressure() -> Trace:
    """Pressure from several waits (one over max_wait_s, capped at 1), a node
    in the suspect zone counted, a dead one not; each live node weighted by
    the others' pressure P_i; changed k1/k2 and weights (``rate`` too)."""
    lines = []
    for k in range(25):
        lines.append(hb(k, "p1", queue=20.0, avg_job_s=1.0, throughput=5.0))
        lines.append(hb(k, "p2", queue=4.0, avg_job_s=2.0 + k / 10))
        if k < 3:
            lines.append(hb(k, "p3", queue=45.0, avg_job_s=1.0, throughput=8.0))
        lines.append(hb(k, "p4", queue=0.0, avg_job_s=1.0, throughput=3.0, ok=7, err=1))
    params = {
        "engine": dict(FAST_CLOCK),
        "score": {"k1": 0.8, "k2": 0.6, "weights": {"cpu": 0.3, "io": 0.1, "rate": 0.2}},
    }
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
            lines.append(_flapper(k, "q"))  # flaps until quarantined
        elif k == 9:
            lines.append(level(k, "q", 80.0))  # raw 0.4 < 0.5: count restarts
        elif k == 12:
            lines.append(level(k, "q", 100.0))  # tripped: count restarts
        else:
            lines.append(level(k, "q", 0.0))  # raw 1.0: probation ticks
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
            pass  # silent while quarantined
        else:
            lines.append(level(k, "q", 0.0))
    params = {
        "engine": dict(FAST_CLOCK),
        "score": {
            **EXACT,
            "max_flaps": 3,
            "probation_ticks": 3,
            "quarantine_memory": 6,
            "flap_window": 10,
        },
    }
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
                continue  # f4 dies (fast clock)
            if k < 8 + i or (k >= 20 and i >= 2):
                lines.append(_flapper(k, name))
            else:
                lines.append(level(k, name, 0.0))
    params = {"engine": dict(FAST_CLOCK), "score": {**EXACT, "max_flaps": 3, "probation_ticks": 4}}
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
    it goes suspect then DEAD on the fast clock; unknown ids never register.
    Ids are 1..63 ASCII letters, digits and ``. _ : - /``: anything else,
    look-alike letters and invisible characters included, is refused."""
    nan, inf = float("nan"), float("inf")
    bad = [
        {"node": "r", "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},  # missing cpu
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
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "ok": 2**32,
            "err": 0,
        },
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "ok": 1,
            "err": False,
        },
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "p50_ms": 10.0},
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "p50_ms": 10.0,
            "p95_ms": 9.0,
        },
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "p50_ms": 0.0,
            "p95_ms": 9.0,
        },
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "io": 1.01},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "throughput": -1.0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "zone": "z" * 32},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "zone": 7},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "labels": {"a": 1}},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "labels": ["a"]},
        {"cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},  # no node
        {"node": "", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "n" * 64, "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "é" * 32, "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},  # 64 bytes
        {"node": "new\nline", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "tab\there", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": 17, "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "ghost", "cpu": 0.1, "mem": 2.0, "queue": 0.0, "avg_job_s": 0.1},
        # ids outside A-Z a-z 0-9 . _ : - /
        {"node": "nœud-é" + "x" * 55, "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "a b", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "nod\u0435", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},  # Cyrillic e
        {"node": "a\u200bb", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},  # format char
        {
            "node": "\uff4e\uff4f\uff44\uff45",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
        },  # fullwidth
        {"node": "a+b", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        {"node": "a\\b", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        # slots: an integer in [1, 65535]
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "slots": 0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "slots": 65536},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "slots": 2.0},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "slots": True},
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "slots": "4"},
        # resources: at most 8 names of 1..15 bytes, each a float >= 0
        {"node": "r", "cpu": 0.1, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1, "resources": ["gpu"]},
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "resources": {f"r{i}": 1.0 for i in range(9)},
        },
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "resources": {"": 1.0},
        },
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "resources": {"g" * 16: 1.0},
        },
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "resources": {"gpu": -1.0},
        },
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "resources": {"gpu": nan},
        },
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "resources": {"gpu": "1"},
        },
        {
            "node": "r",
            "cpu": 0.1,
            "mem": 0.1,
            "queue": 0.0,
            "avg_job_s": 0.1,
            "resources": {"gpu": True},
        },
    ]
    good = [
        {"node": "e" * 63, "cpu": 0, "mem": 1, "queue": 3, "avg_job_s": 0},  # ints, bounds
        {
            "node": "AZaz09._:-/" + "x" * 52,
            "cpu": 1.0,
            "mem": 0.0,
            "queue": 0.0,
            "avg_job_s": 0.0,
            "slots": 65535,
            "resources": {"g" * 15: 0.0, **{f"r{i}": 1e300 for i in range(7)}},
        },
        {
            "node": "edge",
            "cpu": 0.5,
            "mem": 0.5,
            "queue": 0.0,
            "avg_job_s": 0.0,
            "ok": 4294967295,
            "err": 0,
            "p50_ms": 5.0,
            "p95_ms": 5.0,
            "io": 1.0,
            "throughput": 0.0,
            "zone": "z" * 31,
            "labels": {},
            "ts": -1.5,
        },
        {
            "node": "edge2",
            "cpu": 0.5,
            "mem": 0.5,
            "queue": 0.0,
            "avg_job_s": 0.0,
            "ok": 0,
            "err": 0,
            "p50_ms": 1e-300,
            "p95_ms": 1e300,
            "zone": "",
            "labels": {"k": "v", "é": "ü"},
            "slots": 1,
            "resources": {},
        },
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
    lines = [
        hb(0, "t1"),
        {"tick": 1},
        {"tick": 1},
        hb(4, "t2", queue=7.0),
        {"tick": 6},
        hb(6, "t1", cpu=0.9),
        {"tick": 40},
    ]
    return Trace("tick_lines", lines, {"engine": dict(FAST_CLOCK)})


def fb(tick: int, node: str, **values) -> dict:
    """A feedback line: ``rif``, ``ok``, ``err``, ``consec`` by keyword."""
    return {"tick": tick, "feedback": node, **values}


def feedback_ejection() -> Trace:
    """Ejection at the defaults (max_consecutive_errors 5, ejection_s 5.0 =
    100 ticks of 50 ms). Tripped while ``consec >= 5`` and the latest error
    release is less than 5 s old, counted from the tick of that release.

    "ej": 5 errors at t10, ejected t10..t109; err_age = 5.0 at t110 ends it.
    "ok_ends": the same, ended at t30 by one ok with consec 0; ejected again
    at t50 (one more error, consec 6; the window stays below min_requests);
    an ok line without consec at t60 leaves consec at 6 (the
    schedulers' count is taken as given), consec 0 at t61 ends it.
    "near": consec 4 never ejects; consec 5 with no new error at t40 ejects
    until t110, five seconds after the error of t10.
    "renew": a new error at t80 restarts the five seconds (ejected to t179).
    "noerr": consec 7 but no error release ever: no err_age, never ejected.
    """
    lines = []
    nodes = ("ej", "ok_ends", "near", "renew", "noerr")
    events = {
        10: [
            fb(10, "ej", err=5, consec=5),
            fb(10, "ok_ends", err=5, consec=5),
            fb(10, "near", err=4, consec=4),
            fb(10, "renew", err=5, consec=5),
            fb(10, "noerr", consec=7),
        ],
        30: [fb(30, "ok_ends", ok=1, consec=0)],
        40: [fb(40, "near", consec=5)],
        50: [fb(50, "ok_ends", err=1, consec=6)],
        60: [fb(60, "ok_ends", ok=1)],
        61: [fb(61, "ok_ends", consec=0)],
        80: [fb(80, "renew", err=1, consec=6)],
    }
    for k in range(200):
        for node in nodes:
            lines.append(hb(k, node, cpu=0.2, mem=0.3, queue=1.0, avg_job_s=0.5))
        lines.extend(events.get(k, []))
    return Trace("feedback_ejection", lines)


WINDOW_CLOCK = {
    "engine": {"tick_interval_ms": 1000},
    "score": {"error_half_life_s": 1.0},
}  # d = 0.5 exactly


def feedback_window() -> Trace:
    """The decayed error window with d = 0.5 (1 s ticks, 1 s half-life),
    min_requests 10 and max_error_rate 0.5 (defaults).

    "fbw": heartbeats without ok/err; feedback 4 ok + 6 err at t2 trips it
    by the window alone; by t3 the window has halved to 5: released.
    "sum": 3 ok + 3 err by heartbeat and 2 + 2 by feedback at t2: 10 at
    rate 0.5 trips only if both sources count.
    "near": 5 + 4 (9 < 10) and "rate": 6 + 5 (rate < 0.5): never trip.
    "mix": 2 ok + 3 err per heartbeat approach 10 from below (5, 7.5,
    8.75, 9.375); 2 feedback errors at t4 push it over; two heartbeats in
    t6 (only the latest counts) and one at t7 whose latest carries no
    ok/err; from t9 no outcomes, and the window decays below 10.
    "dead": 12 errors at t0 (tripped), silent from t1 (dead at t10);
    feedback to the dead node at t12 (3 errors) still counts; its window
    decays every dead tick; revived at t14 with 3*0.25 + 12*0.5**14 errors.
    """
    lines = []
    for k in range(20):
        lines.append(hb(k, "fbw"))
        if k == 2:
            lines.append(fb(k, "fbw", ok=4, err=6))
        lines.append(hb(k, "sum", ok=3 if k == 2 else 0, err=3 if k == 2 else 0))
        if k == 2:
            lines.append(fb(k, "sum", ok=2, err=2))
        lines.append(hb(k, "near"))
        lines.append(hb(k, "rate"))
        if k == 2:
            lines.append(fb(k, "near", ok=5, err=4))
            lines.append(fb(k, "rate", ok=6, err=5))
        if k == 6:
            lines.append(hb(k, "mix", ok=50, err=0))
        if k == 7:
            lines.append(hb(k, "mix", ok=2, err=3))
            lines.append(hb(k, "mix"))
        elif k < 9:
            lines.append(hb(k, "mix", ok=2, err=3))
        else:
            lines.append(hb(k, "mix"))
        if k == 4:
            lines.append(fb(k, "mix", err=2))
        if k == 0 or k >= 14:
            lines.append(hb(k, "dead", ok=0, err=12 if k == 0 else 0))
        if k == 12:
            lines.append(fb(k, "dead", err=3))
    return Trace("feedback_window", lines, WINDOW_CLOCK)


def feedback_load() -> Trace:
    """Requests in flight: ``load = max(qema, rif - slots, 0)`` and
    ``wait = load * avg_job_s / slots`` (fast clock, defaults otherwise).

    "rif" (1 slot, queue 2): rif 5 at t3 raises load to 4 above qema; rif 2
    at t6 (2 - 1 < qema) leaves qema in charge; rif 4 at t7; an outcome-only
    line at t8 keeps rif 4; rif 0 at t9.
    "rifs" (4 slots, queue 1): rif 4 at t3 gives rif - slots = 0; rif 10 at
    t5 gives load 6, wait 6 * 2 / 4 = 3.
    "rifq" (1 slot): rif 76 at t2 gives load 75, B = 0.5; rif 101 at t5
    gives load 100 = max_queue: the queue breaker trips; rif 0 at t8.
    "rifw" (2 slots, 1 s jobs): rif 61 at t2 gives wait 29.5 (not tripped),
    rif 62 at t4 gives wait 30 = max_wait_s: tripped.
    Every rif also moves the others' pressure P_i.
    """
    lines = []
    events = {
        2: [fb(2, "rifq", rif=76), fb(2, "rifw", rif=61)],
        3: [fb(3, "rif", rif=5), fb(3, "rifs", rif=4)],
        4: [fb(4, "rifw", rif=62)],
        5: [fb(5, "rifs", rif=10), fb(5, "rifq", rif=101)],
        6: [fb(6, "rif", rif=2)],
        7: [fb(7, "rif", rif=4)],
        8: [fb(8, "rif", ok=3), fb(8, "rifq", rif=0)],
        9: [fb(9, "rif", rif=0)],
    }
    for k in range(12):
        lines.append(hb(k, "rif", queue=2.0, avg_job_s=0.5))
        lines.append(hb(k, "rifs", queue=1.0, avg_job_s=2.0, slots=4))
        lines.append(hb(k, "rifq", queue=0.0, avg_job_s=0.1))
        lines.append(hb(k, "rifw", queue=0.0, avg_job_s=1.0, slots=2))
        lines.extend(events.get(k, []))
    return Trace("feedback_load", lines, {"engine": dict(FAST_CLOCK)})


def feedback_registry() -> Trace:
    """Feedback belongs to a registration (fast clock, dead after 4 s, forget after 5 s,
    capacity 3).

    t0: feedback for "f1" written before its first heartbeat still applies
    (feedback follows the tick's heartbeats); feedback for "ghost" (never
    registered) and for "bad" (only invalid heartbeats) is ignored.
    "f1" and "f2" get rif 50, consec 9 with an error and 20 errors, then
    fall silent after t1 and are forgotten at t6. At t6 "g" registers into
    slot 1 (f1's) and starts from zero; "f2" comes back in the same tick
    into slot 2, fresh, and the feedback line after it applies to the new
    registration; feedback for "f1" at t6 (not registered) is ignored. At
    t7 "f1" meets a full registry: its heartbeat is refused and its
    feedback ignored.
    """
    lines = [
        fb(0, "f1", rif=50, consec=9, err=20),
        hb(0, "keep"),
        hb(0, "f1"),
        hb(0, "f2"),
        fb(0, "f2", rif=50, consec=9, err=20),
        fb(0, "ghost", rif=3, err=30, consec=9),
        {"tick": 0, "node": "bad", "cpu": 2.0, "mem": 0.1, "queue": 0.0, "avg_job_s": 0.1},
        fb(0, "bad", rif=3),
        hb(1, "keep"),
        hb(1, "f1"),
        hb(1, "f2"),
    ]
    for k in range(2, 12):
        lines.append(hb(k, "keep"))
        if k == 6:
            lines.append(fb(k, "f1", rif=40, err=1, consec=9))
            lines.append(hb(k, "g"))
            lines.append(hb(k, "f2"))
            lines.append(fb(k, "f2", rif=2))
        elif k > 6:
            lines.append(hb(k, "g"))
            lines.append(hb(k, "f2"))
        if k == 7:
            lines.append(hb(k, "f1"))
            lines.append(fb(k, "f1", rif=40, err=1, consec=9))
    # dead before forgotten (the configuration requires forget_after_s > dead_after_s)
    params = {
        "engine": {"capacity": 3, "forget_after_s": 5, **FAST_CLOCK},
        "score": {"dead_after_s": 4.0},
    }
    return Trace("feedback_registry", lines, params)


def slots_field() -> Trace:
    """``slots``: wait divides by it, rate is ``slots / avg_job_s``, and a row
    without it means 1 (fast clock, defaults otherwise).

    "s1" (no slots) and "s4" (4) share queue 8 and 1 s jobs: waits 8 and 2;
    rates 1 and 4. "smax" (65535 slots, queue 99, 2 s jobs): a tiny wait but
    load 99 keeps B = 0.02 (the queue is not divided by slots); its rate
    32767.5 sets R. "sdrop" reports 8 slots until t5, then none: its wait
    and rate fall back to one slot's.
    """
    lines = []
    for k in range(10):
        lines.append(hb(k, "s1", queue=8.0, avg_job_s=1.0))
        lines.append(hb(k, "s4", queue=8.0, avg_job_s=1.0, slots=4))
        lines.append(hb(k, "smax", queue=99.0, avg_job_s=2.0, slots=65535))
        if k < 5:
            lines.append(hb(k, "sdrop", queue=4.0, avg_job_s=0.5, slots=8))
        else:
            lines.append(hb(k, "sdrop", queue=4.0, avg_job_s=0.5))
    return Trace("slots", lines, {"engine": dict(FAST_CLOCK)})


def rate_percentile() -> Trace:
    """R, the nearest-rank 90th percentile of the live nodes' rates, with one
    absurd rate (fast clock: suspect after 2 ticks, dead after 10).

    "r01".."r10" run i slots of 1 s jobs (rates 1..10); "wild" claims
    avg_job_s 1e-6 (rate ~1e6). m = 11 from t0: R = r_(ceil(9.9) - 1) = r_9 =
    10. From t4 "r10" reports avg_job_s 0 (no rate): m = 10, R = r_8 = 9.
    From t8 "r09" too: m = 9 < 10, R = the maximum, the absurd rate. "wild"
    goes silent after t11: suspect (still counted) until dead at t21, when
    m = 8 and R = 8.
    """
    lines = []
    for k in range(24):
        for i in range(1, 11):
            gone = (i == 10 and k >= 4) or (i == 9 and k >= 8)
            lines.append(
                hb(
                    k,
                    f"r{i:02d}",
                    cpu=0.0,
                    mem=0.0,
                    queue=0.0,
                    avg_job_s=0.0 if gone else 1.0,
                    slots=i,
                )
            )
        if k <= 11:
            lines.append(hb(k, "wild", cpu=0.0, mem=0.0, queue=0.0, avg_job_s=1e-6))
    return Trace("rate_percentile", lines, {"engine": dict(FAST_CLOCK)})


BUILDERS = [
    defaults_long,
    hysteresis_exact,
    hysteresis_smooth,
    breakers,
    liveness_registry,
    optional_metrics,
    pressure,
    quarantine_backoff,
    quarantine_backoff_cap,
    quarantine_memory,
    quarantine_cap,
    quarantine_defaults,
    rejections,
    tick_lines,
    feedback_ejection,
    feedback_window,
    feedback_load,
    feedback_registry,
    slots_field,
    rate_percentile,
]


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
