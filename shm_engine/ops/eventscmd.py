"""`shm-engine events`: print the event log (node state changes, and why).

Reads the events segment like any client (`clients.events.EventReader`):
read-only, never slowing the tick.  Without ``--follow`` it prints what the
ring holds and exits; with it, it keeps printing new events until Ctrl-C.
Events the reader lost (the ring overwrote them first) are reported on
stderr with their count.
"""

from __future__ import annotations

import json
import sys

from clients.events import EventReader, format_event

__all__ = ["cmd_events"]


def _emit(batch, as_json: bool, out, err) -> None:
    if batch.lost:
        err.write(f"shm-engine events: {batch.lost} events lost (overwritten before read)\n")
    for ev in batch.events:
        out.write(json.dumps(ev.as_dict()) + "\n" if as_json else format_event(ev) + "\n")
    out.flush()


def cmd_events(args) -> int:
    """``shm-engine events [--follow] [--node N] [--json] [--since SEQ]``."""
    out, err = sys.stdout, sys.stderr
    with EventReader.attach(args.name, owner=args.owner) as reader:
        batch = reader.read(args.since, node=args.node)
        _emit(batch, args.json, out, err)
        if not args.follow:
            return 0
        try:
            for b in reader.follow(batch.next_seq, node=args.node):
                _emit(b, args.json, out, err)
        except (KeyboardInterrupt, BrokenPipeError):
            return 0
    return 0
