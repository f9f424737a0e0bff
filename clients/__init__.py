"""Clients of the engine: schedulers read scores, nodes send heartbeats.

- `ScoreReader`: read published scores straight from shared memory.
- `HeartbeatClient`: send heartbeats to the ingest (never blocks the caller).
- `NodeState`: the published node states.
"""

from clients.heartbeat import CurveKeys, HeartbeatClient, InvalidHeartbeat
from clients.reader import NothingPublished, ScoreReader, Snapshot
from shm_engine.core.states import NodeState

__all__ = ["ScoreReader", "Snapshot", "NothingPublished", "HeartbeatClient",
           "InvalidHeartbeat", "CurveKeys", "NodeState"]
