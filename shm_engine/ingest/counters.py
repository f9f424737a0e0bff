"""The ingest's header counters, read in the order that makes them agree.

The ingest counts every frame after it has counted everything the frame
did (`shm_engine.ingest.process`): the rejects by reason, the refusals per
sender, leaves and reclaimed slots, then ``ingest_heartbeats``,
``ingest_accepted`` and ``ingest_bytes``, and ``ingest_frames`` last.  So a
reader that loads ``ingest_frames`` *first* and the other counters after it
sees, in each of them, at least the part of the first ``frames`` frames;
loading ``ingest_heartbeats`` next and the rejects and ``ingest_accepted``
after it keeps ``accepted + sum(rejected) >= heartbeats`` (x86-64 TSO keeps
the loads in program order, as it keeps the writer's stores:
`shm_engine.core.ordering`).  A reader that loads a counter before
``ingest_frames`` may pair an old count with a newer ``frames``: its caller,
waiting until every frame it sent is counted, then reads the rejects of
fewer frames than it sent.

Rule for callers: take the ingest counters from `read_ingest_counters`, and
read any other counter of the ingest's frames (`admission.read_senders`)
after it.  While frames keep arriving, the counters may also hold part of a
frame not yet in ``frames``; once the ingest is idle, they are exact.
"""

from __future__ import annotations

from shm_engine.wire.format import REJECT_REASONS

__all__ = ["read_ingest_counters"]


def read_ingest_counters(header) -> dict:
    """The ingest's frame counters of scores header ``header``, as ``status``
    shows them: ``frames`` (loaded first: see the module docstring),
    ``heartbeats``, ``accepted``, ``bytes``, ``rejected`` (reason -> count),
    ``left`` (leaves accepted) and ``reclaimed_dead`` (DEAD slots given to
    new nodes)."""
    # frames first, heartbeats next (see the module docstring): the ingest
    # stores them last (`Ingest._count_frames`).
    frames = int(header.ingest_frames[0])
    heartbeats = int(header.ingest_heartbeats[0])
    accepted = int(header.ingest_accepted[0])
    nbytes = int(header.ingest_bytes[0])
    rejects = header.rejects.tolist()
    return {
        "frames": frames,
        "heartbeats": heartbeats,
        "accepted": accepted,
        "bytes": nbytes,
        "rejected": {reason: int(rejects[i]) for i, reason in enumerate(REJECT_REASONS)},
        "left": int(header.ingest_left[0]),
        "reclaimed_dead": int(header.ingest_reclaimed[0]),
    }
