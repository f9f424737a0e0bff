"""An engine driven in-process for the placement tests and benchmark.

`PlaceEngine` owns a scores segment (created with placement resources) and a
claims segment under one name, feeds heartbeats through the real ingest
(`shm_engine.ingest.process.Ingest`: validation, registry, zone, labels,
taints, the row writer and the capacity writer) and publishes ticks with the
real `Ticker`.  Nodes are described as heartbeat mappings.
"""

from __future__ import annotations

import json
import time

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
        self.seg = Segment.create(name, capacity, resources=self.config.placement.resources)
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
