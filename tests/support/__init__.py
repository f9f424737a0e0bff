"""What the tests share; test files import from here, never from each other.

- `support.wait`: `wait_until`, the one bounded poll.
- `support.shm`: raw POSIX segments for tests of one primitive.
- `support.engine`: a real ``shm-engine run`` (`Engine`), its config and CLI.
- `support.fleet`: a self-describing fleet, sender and reader processes
  that check every snapshot, process probes.
- `support.kernel_sim`: `Sim`, a driver of `kernels.tick` on a logical clock.
- `support.ticks`: heartbeats written as the ingest writes them (`send`, `node`).
- `support.events`: self-describing events (`put`, `check`) for the event log.
- `support.reload`: a replayable configuration reload scenario.
- `support.http`: the HTTP app on a real uvicorn server in a thread.

Fixtures (unique segment names, process reaping) are in ``conftest.py``.
"""
