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

    def __init__(
        self, names, zones=("a",), capacity=64, full_every=1000, zone_slots=None, endpoints=None
    ):
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
                [
                    (z, endpoints[i] if endpoints else f"tcp://127.0.0.1:{7000 + i}")
                    for i, z in enumerate(zones)
                ],
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


class MirrorThread:
    """`mirror.run` over ``mirror`` in a thread of this process (its sockets
    are the product's; ``curve``: a `mirror.CurveClient`); ``error`` holds
    what the loop raised, if anything.
    `stop` ends the loop and joins it."""

    def __init__(self, mirror: Mirror, curve=None):
        import threading

        from shm_engine.feed.mirror import run

        self.error: BaseException | None = None
        self._stop = threading.Event()

        def main():
            try:
                run(mirror, self._stop.is_set, curve)
            except BaseException as err:  # noqa: BLE001 - reported to the test
                self.error = err

        self.thread = threading.Thread(target=main, name="mirror-loop", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the mirror loop did not stop"


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


# ------------------------------------------------------- engines on loopback --
def feed_extra(feed_port: int, feedback_port: int, full_every: int = 50) -> str:
    """The ``[feed]`` section of an engine config (`support.engine.write_config`'s
    ``extra``: it follows the ``[ingest]`` keys)."""
    return (
        f'\n[feed]\nbind = "tcp://127.0.0.1:{feed_port}"\n'
        f'feedback_bind = "tcp://127.0.0.1:{feedback_port}"\n'
        f"full_every = {full_every}\nmirror_timeout_s = 1.0\n"
    )


def beat_frame(zone: str, nodes: int, k: int) -> bytes:
    """Heartbeats of nodes ``ZONE-n<i>`` for round ``k`` (binary batch)."""
    from shm_engine.wire import encode_batch

    return encode_batch(
        [
            dict(
                node=f"{zone}-n{i}",
                cpu=0.05 + 0.01 * ((i + k) % 7),
                mem=0.2,
                queue=float((i + k) % 3),
                avg_job_s=0.5,
            )
            for i in range(nodes)
        ]
    )


def mirror_main(
    name: str, endpoints, drop_every: int, stale_after_s: float, ready, curve=None
) -> None:
    """A mirror process (``spawn`` target) whose ``drop_frame`` hook drops
    every ``drop_every``-th delta frame of upstream 0 (0: none), as a slow
    subscriber's high-water mark would; sets ``ready`` after its first
    publish and runs until SIGTERM.  ``curve``: a `mirror.CurveClient`."""
    import signal as _signal

    from shm_engine.feed import mirror as mirror_mod

    stop = {"now": False}
    _signal.signal(_signal.SIGTERM, lambda *_: stop.__setitem__("now", True))

    def drop(i: int, seq: int) -> bool:
        return drop_every > 0 and i == 0 and seq > 1 and seq % drop_every == 0

    m = mirror_mod.Mirror(
        name, endpoints, capacity=64 * len(endpoints), stale_after_s=stale_after_s, drop_frame=drop
    )
    try:
        mirror_mod.run(m, lambda: stop["now"], curve, on_ready=ready.set)
    finally:
        m.close()


def zone_state(mirror: str, i: int) -> str:
    from shm_engine.feed.mirror import read_mirror_status

    st = read_mirror_status(mirror)
    return st["zones"][i]["state"] if st else "none"


def compare_when_aligned(engine: str, mirror: str, i: int) -> list[str] | None:
    """`compare` when the mirror shows zone ``i`` at the engine's latest
    epoch (before and after the reads); None when they were not aligned."""
    from shm_engine.feed.mirror import MirrorSegment

    with MirrorSegment.attach(mirror) as ms, ScoreReader.attach(engine) as e:
        before = int(ms.views.up.epoch[i])
        epoch = e.snapshot().epoch
        if before != epoch:
            return None
        problems = compare(engine, mirror)
        if int(ms.views.up.epoch[i]) != before or e.snapshot().epoch != epoch:
            return None
        return problems
