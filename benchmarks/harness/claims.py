"""Section ``claims``: what a claim + release pair costs a scheduler, from Python.

The measurement is `benchmarks.claims.bench_pairs` (an engine with both
segments driven in this process; batches of pairs on random nodes, the
median of the batch means): ``reader.claim(node).release(ok=True)``, the
error release, the ``with`` form, ``reader.in_flight`` and an empty Python
call in the same loop, which says how fast the machine ran meanwhile.
``pick()``, the other call on a job's path, is timed from another process
in the ``read`` section.
"""

from __future__ import annotations

from benchmarks.claims import GOAL_PAIR_NS, bench_pairs
from benchmarks.harness.common import verdict

__all__ = ["run", "summary"]


def run(nodes: int, samples: int, log) -> dict:
    res = {"nodes": nodes, "batch": 100, **bench_pairs(nodes, samples, 100)}
    log(
        f"  claims n={nodes}: claim + release {res['ok']['median_ns']:.0f} ns "
        f"(a Python call {res['python_call']['median_ns']:.0f} ns)"
    )
    return res


def summary(cl: dict) -> tuple[list[str], list[str]]:
    """(table lines, goal lines) of the claims section."""
    rows = (
        ("ok", "claim + release(ok=True)"),
        ("error", "claim + release(ok=False)"),
        ("with", "with reader.claim(node)"),
        ("in_flight", "reader.in_flight(node)"),
        ("python_call", "an empty Python call"),
    )
    lines = [f"| claims ({cl['nodes']:,} nodes) | median | p10 | p90 |", "|---|---|---|---|"]
    lines += [
        f"| {label} | {cl[k]['median_ns']:.0f} ns | {cl[k]['p10_ns']:.0f} ns | "
        f"{cl[k]['p90_ns']:.0f} ns |"
        for k, label in rows
    ]
    pair = cl["ok"]["median_ns"]
    return lines, [f"claim + release <= 1 µs: {pair:.0f} ns, {verdict(pair <= GOAL_PAIR_NS)}"]
