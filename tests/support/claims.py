"""An engine driven in-process for the claims tests, and the scheduler
processes of the stress tests.

`ClaimsEngine` owns a scores segment and a claims segment under one name and
plays the ingest (`send`, `forget`: the real registry and row writer) and,
when asked, the tick worker (`tick`: the real `Ticker` on the claims
segment).  The stress tests instead run the real tick worker process
(`ticker_main`) on such an engine and start `scheduler_main` processes.

A scheduler process claims and releases with random outcomes, keeping up to
`MAX_OPEN` claims open at a time, and reports exactly what it did: per node
ok and error releases and the claims it still holds.  With ``log`` (a shared
int64 array) it also writes that record into shared memory after every
operation, so that when it is killed the test knows everything it completed
except, at most, the one operation it was in.
"""

from __future__ import annotations

import os
import time

import numpy as np

from clients.reader import ScoreReader
from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.config import Config
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.core.segment import Segment
from shm_engine.tick.ticker import Ticker
from shm_engine.wire import check_heartbeat

MAX_OPEN = 8


def heartbeat(node: str, **kw):
    obj = dict(node=node, cpu=0.2, mem=0.3, queue=1.0, avg_job_s=1.0)
    obj.update(kw)
    rec, labels, reason, detail = check_heartbeat(obj)
    assert rec is not None, (reason, detail)
    return rec, labels


class ClaimsEngine:
    """Both segments of engine ``name``, the registry, and a `Ticker`."""

    def __init__(
        self, name: str, capacity: int = 16, max_schedulers: int = 4, config: Config | None = None
    ):
        self.name = name
        self.seg = Segment.create(name, capacity)
        try:
            self.claims = ClaimsSegment.create(name, capacity, max_schedulers)
        except BaseException:
            self.seg.close()
            self.seg.unlink()
            raise
        self.views = self.seg.views
        self.registry = NodeRegistry(self.views)
        self.config = config or Config()
        self._ticker = None

    @property
    def ticker(self) -> Ticker:
        if self._ticker is None:
            self._ticker = Ticker(self.views, self.config, self.claims.views)
        return self._ticker

    def send(self, node: str, now: float | None = None, **kw) -> int:
        rec, labels = heartbeat(node, **kw)
        key = node.encode()
        slot = self.registry.get(key)
        if slot < 0:
            slot = self.registry.register(key, b"", labels)
        table = self.views.table
        write_rows(
            column_addresses(table),
            table.row_version.shape[0],
            np.array([slot], np.int64),
            np.atleast_1d(rec),
            time.monotonic() if now is None else now,
        )
        return slot

    def forget(self, node: str) -> int:
        slot = self.registry.get(node.encode())
        self.registry.free(slot)
        return slot

    def tick(self, now: float | None = None):
        return self.ticker.tick(time.monotonic() if now is None else now)

    def published(self, column: str, slot: int) -> float:
        """``column`` of ``slot`` in the latest published buffer."""
        epoch = int(self.views.header.latch_seq[0]) >> 1
        return float(self.views.buffers[epoch & 1].views[column][slot])

    def close(self) -> None:
        self._ticker = None
        for seg in (self.claims, self.seg):
            seg.close()
            seg.unlink()


def scheduler_main(
    name: str,
    nodes: list[str],
    pairs: int,
    seed: int,
    go,
    results,
    log=None,
    hold: str | None = None,
) -> None:
    """Make ``pairs`` claims on random ``nodes`` (up to `MAX_OPEN` open at a
    time), release each with a random outcome, and put
    ``(pid, ok[n], err[n], still_open, stale releases)`` on ``results``.

    ``go``: an event to wait for.  ``log``: shared int64 array of
    ``2 * len(nodes) + 2`` words (ok per node, err per node, completed
    releases, claims open now), updated after every operation.  ``hold``: a
    node claimed first and never released (so the process always has a claim
    open; it is reported in ``still_open``)."""
    rng = np.random.default_rng(seed)
    n = len(nodes)
    pick = rng.integers(0, n, pairs)
    outcome = rng.random(pairs) < 0.7
    action = rng.random(2 * pairs)
    ok = np.zeros(n, np.int64)
    err = np.zeros(n, np.int64)
    stale = 0
    with ScoreReader.attach(name) as reader:
        held = reader.claim(hold) if hold is not None else None
        go.wait(120)
        open_claims: list = []
        slot_of = {node: i for i, node in enumerate(nodes)}
        made = released = 0
        k = 0
        while released < pairs:
            if made < pairs and (
                not open_claims or (len(open_claims) < MAX_OPEN and action[k % len(action)] < 0.5)
            ):
                open_claims.append(reader.claim(nodes[pick[made]]))
                made += 1
                if log is not None:
                    log[2 * n + 1] = len(open_claims) + (held is not None)
            else:
                j = int(action[k % len(action)] * len(open_claims)) % len(open_claims)
                c = open_claims[j]
                open_claims[j] = open_claims[-1]
                open_claims.pop()
                good = bool(outcome[released])
                if not c.release(ok=good):
                    stale += 1
                i = slot_of[c.node]
                if good:
                    ok[i] += 1
                else:
                    err[i] += 1
                released += 1
                if log is not None:
                    log[i if good else n + i] += 1
                    log[2 * n] = released
                    log[2 * n + 1] = len(open_claims) + (held is not None)
            k += 1
        if held is not None:
            held.release(ok=True)
        results.put((os.getpid(), ok, err, len(open_claims), stale))
