"""``python -m benchmarks run``: the performance harness, one module per section.

Every comparison is measured in the same run, interleaved where the two
sides share a machine state, and reported as medians (and p99) of many
repetitions, because the machines this runs on are shared.  Sections (keys
of ``latest.json``), in the order they run:

- `tick`: `Ticker.tick` as the tick worker runs it, the kernels alone, the
  parts of a tick, and the NumPy and Python baselines, at each node count;
- `read`: `ScoreReader` from another process, against Redis and a
  ``multiprocessing.Manager`` dict, and ``pick()`` with the claims discount;
- `claims`: a claim + release pair from Python (`benchmarks.claims`);
- `ingest`: heartbeats/s into the segment over a real PULL socket, and the
  ceilings of the same sender;
- `freshness`: heartbeat sent -> effect visible, real ingest and tick
  processes;
- `memory`: bytes per node and the RSS of each process;
- `scaling`: the slopes of the tick curves, and their plot.

`common` holds what they share, `report` the tables and the RESULTS.md
record, `driver` the command line (where a run writes: see there).
"""

from benchmarks.harness.driver import main

__all__ = ["main"]
