"""An engine driven in-process for the placement tests and benchmark.

`PlaceEngine` owns a scores segment (created with placement resources) and a
claims segment under one name, feeds heartbeats through the real ingest
(`shm_engine.ingest.process.Ingest`: validation, registry, zone, labels,
taints, the row writer and the capacity writer) and publishes ticks with the
real `Ticker`.  Nodes are described as heartbeat mappings.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np

from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.config import Config
from shm_engine.core.segment import Segment
from shm_engine.ingest.process import Ingest
from shm_engine.tick.ticker import Ticker

RESOURCES = (("cpu", 1000), ("mem_gb", 1000), ("gpu", 1))


def node_heartbeat(node: str, **kw) -> dict:
    """A healthy node's heartbeat with ``kw`` added (resources, labels, ...)."""
    hb = dict(node=node, cpu=0.2, mem=0.3, queue=0.0, avg_job_s=1.0)
    hb.update(kw)
    return hb


class PlaceEngine:
    """Both segments of engine ``name``, the ingest and the tick worker, in
    this process (the placers may run here or in children)."""

    def __init__(
        self,
        name: str,
        capacity: int = 64,
        max_schedulers: int = 8,
        max_reservations: int = 256,
        config: Config | None = None,
    ):
        self.name = name
        self.config = config or Config()
        self.seg = Segment.create(
            name,
            capacity,
            resources=self.config.placement.resources,
            placement=json.dumps(self.config.placement.to_dict()),
        )
        try:
            self.claims = ClaimsSegment.create(
                name, capacity, max_schedulers, max_reservations=max_reservations
            )
        except BaseException:
            self.seg.close()
            self.seg.unlink()
            raise
        self.views = self.seg.views
        self.ingest = Ingest(self.views, self.config)
        self.ticker = Ticker(self.views, self.config, self.claims.views)

    def send(self, *heartbeats: dict, now: float | None = None) -> int:
        """Apply heartbeats (one JSON frame each); returns how many were accepted."""
        t = time.monotonic() if now is None else now
        return sum(self.ingest.handle_frame(json.dumps(hb).encode(), t) for hb in heartbeats)

    def send_batch(self, heartbeats: list[dict], now: float | None = None) -> int:
        """Apply heartbeats as one JSON array frame."""
        t = time.monotonic() if now is None else now
        return self.ingest.handle_frame(json.dumps(heartbeats).encode(), t)

    def tick(self, now: float | None = None):
        return self.ticker.tick(time.monotonic() if now is None else now)

    def close(self) -> None:
        self.ticker = None  # type: ignore[assignment]
        self.ingest = None  # type: ignore[assignment]
        for seg in (self.claims, self.seg):
            seg.close()
            seg.unlink()


# ------------------------------------------------------- racing placers --
#: Units of cpu (scale 1000) and mem_gb (scale 1000) one racing job holds.
JOB_UNITS = (1000, 1000)


def placer_main(
    name: str,
    slots: int,
    attempts: int,
    max_held: int,
    seed: int,
    go,
    barrier,
    arrived,
    every: int,
    log,
    results,
) -> None:
    """Make ``attempts`` placement attempts (1 cpu, 1 GB each), holding up to
    ``max_held`` placements and releasing one at random otherwise; put
    ``(pid, placed, unschedulable, stale releases, attempts)`` on
    ``results``.

    ``log`` (shared int64, ``slots + 2`` words, this process's alone): the
    cpu units it holds per slot, then placements held, then attempts made,
    updated after every operation, so the test knows what it holds at any
    checkpoint (and, once it is killed, at its death but for the one
    operation it was in).  Every ``every`` attempts it bumps ``arrived`` and
    waits on ``barrier``: the test checks the totals while every placer
    stands still."""
    from clients import Job, Placer, Unschedulable

    rng = np.random.default_rng(seed)
    job = Job(requests={"cpu": JOB_UNITS[0] / 1000, "mem_gb": JOB_UNITS[1] / 1000})
    held: list = []
    placed = unschedulable = stale = 0
    with Placer.attach(name, rng=np.random.default_rng(seed + 1000)) as placer:
        placer._ensure_lease()  # the lease is taken before the start
        go.wait(120)
        draws = rng.random(attempts)
        for i in range(attempts):
            if held and (len(held) >= max_held or draws[i] < 0.4):
                j = int(rng.integers(len(held)))
                p = held[j]
                held[j] = held[-1]
                held.pop()
                log[p.slot] -= JOB_UNITS[0]
                log[slots] = len(held)
                if not p.release(ok=bool(draws[i] < 0.3)):
                    stale += 1
            else:
                try:
                    p = placer.place(job)
                except Unschedulable:
                    unschedulable += 1
                else:
                    held.append(p)
                    log[p.slot] += JOB_UNITS[0]
                    log[slots] = len(held)
                    placed += 1
            log[slots + 1] = i + 1
            if every and (i + 1) % every == 0:
                with arrived.get_lock():
                    arrived.value += 1
                barrier.wait(300)
        for p in held:
            log[p.slot] -= JOB_UNITS[0]
            if not p.release():
                stale += 1
        log[slots] = 0
    results.put((os.getpid(), placed, unschedulable, stale, attempts))


def holder_main(name: str, slots: int, n: int, go, log) -> None:
    """Hold ``n`` placements (1 cpu, 1 GB each), log them as `placer_main`
    does, set ``go`` and wait to be killed."""
    from clients import Job, Placer

    job = Job(requests={"cpu": JOB_UNITS[0] / 1000, "mem_gb": JOB_UNITS[1] / 1000})
    with Placer.attach(name) as placer:
        held = []
        for _ in range(n):
            p = placer.place(job)
            held.append(p)
            log[p.slot] += JOB_UNITS[0]
            log[slots] = len(held)
        go.set()
        while True:
            signal.pause()  # until SIGKILL
