"""Clients of the engine: schedulers read scores, nodes send heartbeats.

- `ScoreReader`, `Snapshot`, `SnapshotView`: read published scores straight
  from shared memory (needs numpy and numba); a view reads them in place,
  valid until the engine rewrites its buffer (`SnapshotExpired`).
- `HeartbeatClient`, `CurveKeys`, `InvalidHeartbeat`: send heartbeats to the
  ingest (never blocks the caller; needs numpy and pyzmq only).
- `NodeState`: the published node states.
- What `ScoreReader` calls raise, all `ShmEngineError`: `EngineNotRunning`,
  `UntrustedSegment`, `LayoutMismatch` (attach), `EngineStopped` (an
  `EngineNotRunning`: the engine went away), `NothingPublished`,
  `UnknownNode` (also a ``KeyError``), `ReadContention`, `SnapshotExpired`.
- `EventReader`, `Event`, `EventBatch`: the engine's event log (node state
  changes and why), read from shared memory; attach raises as
  `ScoreReader.attach` does (``read`` raises ValueError for a negative
  ``after_seq``).
- `Claim`, `NodeFeedback`: a job in flight (``reader.claim(node)``) and what
  the schedulers have recorded about a node (``reader.feedback(node)``).
- What ``claim()`` and ``release()`` raise: `SchedulerLimitReached`,
  `LeaseRevoked`, `ClaimAlreadyReleased`.
- `Placer`, `Job`, `Affinity`, `Placement`: place a job on a node that can
  take it, with its capacity reserved (``Placer.attach(name).place(job)``);
  what ``place()`` raises: `Unschedulable` (says why, per filter),
  `ReservationLimitReached`.

Senders run on every node of a fleet, so `from clients import HeartbeatClient`
stays light: the reader side is imported on first use.
"""

import importlib

from clients.heartbeat import CurveKeys, HeartbeatClient, InvalidHeartbeat
from shm_engine.core.errors import (
    ClaimAlreadyReleased,
    EngineNotRunning,
    EngineStopped,
    LayoutMismatch,
    LeaseRevoked,
    NothingPublished,
    ReadContention,
    ReservationLimitReached,
    SchedulerLimitReached,
    ShmEngineError,
    SnapshotExpired,
    UnknownNode,
    Unschedulable,
    UntrustedSegment,
)
from shm_engine.core.states import NodeState

__all__ = [
    "ScoreReader",
    "Snapshot",
    "SnapshotView",
    "Claim",
    "NodeFeedback",
    "HeartbeatClient",
    "InvalidHeartbeat",
    "CurveKeys",
    "NodeState",
    "ShmEngineError",
    "EngineNotRunning",
    "EngineStopped",
    "UntrustedSegment",
    "LayoutMismatch",
    "NothingPublished",
    "UnknownNode",
    "ReadContention",
    "SnapshotExpired",
    "SchedulerLimitReached",
    "LeaseRevoked",
    "ClaimAlreadyReleased",
    "EventReader",
    "Event",
    "EventBatch",
    "Placer",
    "Job",
    "Affinity",
    "Placement",
    "Unschedulable",
    "ReservationLimitReached",
]

_LAZY = {
    "ScoreReader": "clients.reader",
    "Snapshot": "clients.reader",
    "SnapshotView": "clients.view",
    "Claim": "clients.claims",
    "NodeFeedback": "clients.claims",
    "EventReader": "clients.events",
    "Event": "clients.events",
    "EventBatch": "clients.events",
    "Placer": "clients.placer",
    "Job": "clients.placer",
    "Affinity": "clients.placer",
    "Placement": "clients.placer",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clients' has no attribute {name!r}")
