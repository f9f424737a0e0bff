"""`shm-engine demo`: a real engine, a simulated fleet, the live view, a summary.

The demo runs the product end to end on one machine, as an operator tool
beside it (nothing in the engine depends on it):

- `fleet`: the simulated nodes (the kinds the score exists for) and their
  heartbeats at a time ``t``;
- `report`: what the published scores did to each kind, printed at the end;
- `cli`: ``cmd_demo``, which starts ``shm-engine run`` as a child through
  `shm_engine.ops.engine_process`, sends the fleet's heartbeats through the
  real ZeroMQ ingest with `HeartbeatClient`, shows the ``top`` view (or
  status lines), prints the summary, and stops the engine, checking that
  its segment is gone.

The timeline scales with ``--duration``; without one it repeats every
`CYCLE_S` seconds until Ctrl-C.
"""

from shm_engine.ops.demo.cli import CYCLE_S, cmd_demo
from shm_engine.ops.demo.fleet import KINDS, Fleet, Kind, kind_counts
from shm_engine.ops.demo.report import Stats

__all__ = ["cmd_demo", "CYCLE_S", "Fleet", "KINDS", "Kind", "kind_counts", "Stats"]
