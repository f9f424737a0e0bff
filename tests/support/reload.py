"""A configuration reload scenario, replayable: a trace of heartbeats, the
file before (`BASE`) and the file written at tick `RELOAD_AT` (`NEW`).

A test feeds ``TRACE[k]`` before tick ``k`` (time ``k * 0.1``), reloads at
`RELOAD_AT`, and compares the published scores with `shm_engine.tick.replay`
switched to the new parameters from that tick on.
"""

from __future__ import annotations

from support.ticks import node

__all__ = ["BASE", "NEW", "RELOAD_AT", "TRACE"]

BASE = """
[engine]
capacity = 8
tick_interval_ms = 100
"""
# beta 0.5 -> 0.9 changes the smoothing at once; max_cpu 0.98 -> 0.6 trips
# node "a" (cpu 0.7) on its cpu breaker from the tick of the reload on.
NEW = (
    BASE
    + """
[score]
beta = 0.9
max_cpu = 0.6
"""
)
TRACE = [[node("a", cpu=0.7, queue=float(k % 3)), node("b", cpu=0.2 + 0.05 * k)] for k in range(8)]
RELOAD_AT = 4
