"""In-process feeds: engines driven by hand, their publishers, and a mirror.

`FeedRig` wires one `support.claims.ClaimsEngine` per zone to a
`FeedPublisher` and all of them to one `Mirror`, without sockets: `step`
ticks every engine, encodes each one's frame, decodes it and applies it to
the mirror, then publishes the mirror.  What travels is the real frame
bytes, so the rig tests the format, the diffing and the mirror together.

`compare` lists every difference between what a reader sees on an engine
and on the mirror for that engine's nodes (exact equality of every
published column, the state and the rank order).
"""

from __future__ import annotations

import time

import numpy as np

from clients.reader import ScoreReader
from shm_engine.feed import format as ff
from shm_engine.feed.mirror import Mirror
from shm_engine.feed.publisher import FeedPublisher
from support.claims import ClaimsEngine

COLUMNS = ("score", "raw", "wait", "qema", "liveness", "state")


class FeedRig:
    """``len(zones)`` engines (names from ``names()``) and a mirror of them."""

    def __init__(self, names, zones=("a",), capacity=64, full_every=1000, zone_slots=None):
        self.engines: list[ClaimsEngine] = []
        self.pubs: list[FeedPublisher] = []
        self.mirror: Mirror | None = None
        try:
            for _z in zones:
                eng = ClaimsEngine(names(), capacity=capacity)
                self.engines.append(eng)
                self.pubs.append(FeedPublisher(eng.views, full_every=full_every))
            self.mirror = Mirror(
                names(),
                [(z, f"tcp://127.0.0.1:{7000 + i}") for i, z in enumerate(zones)],
                capacity=capacity * len(zones),
                zone_slots=zone_slots,
            )
        except BaseException:
            self.close()
            raise
        self.sent: list[bytes] = []

    def frame(self, i: int, *, tick: bool = True) -> ff.ScoreFrame:
        """Tick engine ``i`` (unless not ``tick``) and return its next frame, decoded."""
        if tick:
            self.engines[i].tick()
        assert self.pubs[i].capture()
        data = self.pubs[i].frame()
        self.sent.append(data)
        fr = ff.decode_score_frame(data)
        assert not isinstance(fr, str), fr
        return fr

    def step(self, zones=None, now: float | None = None) -> list[str]:
        """One tick of each engine in ``zones`` (default all), applied to the
        mirror, which then publishes; the apply results."""
        assert self.mirror is not None
        now = time.monotonic() if now is None else now
        out = []
        for i in range(len(self.engines)) if zones is None else zones:
            out.append(self.mirror.apply(i, self.frame(i), now))
        self.mirror.publish(now)
        return out

    def close(self) -> None:
        for eng in self.engines:
            eng.close()
        if self.mirror is not None:
            self.mirror.close()


def compare(engine_name: str, mirror_name: str) -> list[str]:
    """Differences between engine ``engine_name``'s latest snapshot and the
    same nodes on mirror ``mirror_name`` (empty: exact)."""
    with ScoreReader.attach(engine_name) as e, ScoreReader.attach(mirror_name) as m:
        a, b = e.snapshot(), m.snapshot()
    where = {n: s for s, n in enumerate(b.nodes) if n is not None}
    problems = []
    for s, node in enumerate(a.nodes):
        if node is None:
            continue
        t = where.get(node)
        if t is None:
            problems.append(f"{node}: not on the mirror")
            continue
        for col in COLUMNS:
            x, y = getattr(a, col)[s], getattr(b, col)[t]
            if not (x == y or (np.isnan(x) and np.isnan(y))):
                problems.append(f"{node}: {col} {x!r} on the engine, {y!r} on the mirror")
    ranked_e = [a.nodes[s] for s in a.ranked]
    mine = {n for n in a.nodes if n is not None}
    ranked_m = [b.nodes[s] for s in b.ranked if b.nodes[s] in mine]
    if ranked_e != ranked_m:
        problems.append(f"rank order {ranked_e} on the engine, {ranked_m} on the mirror")
    return problems
