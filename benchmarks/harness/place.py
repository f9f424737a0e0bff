"""Section ``place``: what ``Placer.place()`` costs a scheduler, and how many
placements per second one and four processes make.

The engine (both segments, the real ingest and tick worker code) runs in
this process on ``nodes`` nodes with two resources (cpu, mem_gb), labels
(half the nodes ``disk=ssd``) and a taint on a tenth of them
(``gpu=true:NoSchedule``); the job asks for 0.5 cpu and 1 GB with the
selector ``disk=ssd`` and the toleration, so every pass filters and scores
every node.  Capacity is ample: each placement is released right after it
is made (the pair is what a scheduler's loop does per job), so the numbers
are the steady state of a cluster with free room.

- latency: ``place()`` alone, per call (p50, p99, max), from one process;
- rate: place + release pairs per second, one process, then ``procs``
  processes at once (each with its own lease), on the same engine.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

import numpy as np

from benchmarks.harness.common import verdict

__all__ = ["run", "summary", "GOAL_P99_US", "GOAL_ONE_PER_S", "GOAL_FOUR_PER_S"]

GOAL_P99_US = 50.0
GOAL_ONE_PER_S = 20_000
GOAL_FOUR_PER_S = 50_000


def _job():
    from clients.placer import Job

    return Job(
        requests={"cpu": 0.5, "mem_gb": 1},
        selector={"disk": "ssd"},
        tolerations=["gpu=true:NoSchedule"],
    )


class _Engine:
    def __init__(self, name: str, nodes: int, procs: int):
        from shm_engine.core.claims import ClaimsSegment
        from shm_engine.core.config import Config
        from shm_engine.core.segment import Segment
        from shm_engine.ingest.process import Ingest
        from shm_engine.tick.ticker import Ticker

        cfg = Config.from_dict({"engine": {"capacity": nodes}})
        self.seg = Segment.create(name, nodes, resources=cfg.placement.resources)
        self.claims = ClaimsSegment.create(name, nodes, procs + 2, max_reservations=64)
        ingest = Ingest(self.seg.views, cfg)
        rng = np.random.default_rng(7)
        hbs = []
        for i in range(nodes):
            hb = dict(
                node=f"n{i}",
                cpu=float(rng.uniform(0.05, 0.6)),
                mem=float(rng.uniform(0.05, 0.6)),
                queue=float(rng.integers(0, 5)),
                avg_job_s=0.1,
                slots=8,
                zone=f"z{i % 4}",
                resources={"cpu": 16, "mem_gb": 64},
                labels={"disk": "ssd" if i % 2 else "hdd"},
            )
            if i % 10 == 0:
                hb["taints"] = ["gpu=true:NoSchedule"]
            hbs.append(hb)
        now = time.monotonic()
        for start in range(0, nodes, 1000):
            ingest.handle_frame(json.dumps(hbs[start : start + 1000]).encode(), now)
        self.ticker = Ticker(self.seg.views, cfg, self.claims.views)
        self.ticker.tick(now)

    def close(self) -> None:
        for seg in (self.claims, self.seg):
            seg.close()
            seg.unlink()


def _pairs_per_s(name: str, seconds: float, go, out) -> None:
    from clients.placer import Placer

    with Placer.attach(name) as placer:
        job = _job()
        for _ in range(200):  # warm: compile cache, lease, mask
            placer.place(job).release()
        if go is not None:
            go.wait(60)
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(100):
                placer.place(job).release()
            n += 100
            t = time.perf_counter()
            if t >= end:
                break
        out.put(n / (t - t0))


def run(nodes: int, samples: int, seconds: float, procs: int, log) -> dict:
    from clients.placer import Placer

    name = f"bench_place_{os.getpid()}"
    eng = _Engine(name, nodes, procs)
    try:
        with Placer.attach(name) as placer:
            job = _job()
            for _ in range(200):
                placer.place(job).release()
            lat = np.empty(samples)
            clock = time.perf_counter_ns
            for i in range(samples):
                t0 = clock()
                placed = placer.place(job)
                lat[i] = clock() - t0
                placed.release()
        lat_us = lat / 1000.0
        res: dict = {
            "nodes": nodes,
            "place_us": {
                "p50": float(np.percentile(lat_us, 50)),
                "p99": float(np.percentile(lat_us, 99)),
                "max": float(lat_us.max()),
            },
        }
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        one = ctx.Process(target=_pairs_per_s, args=(name, seconds, None, q))
        one.start()
        res["one_per_s"] = float(q.get(timeout=600))
        one.join(60)
        go = ctx.Event()
        many = [ctx.Process(target=_pairs_per_s, args=(name, seconds, go, q)) for _ in range(procs)]
        for p in many:
            p.start()
        go.set()
        rates = [float(q.get(timeout=600)) for _ in many]
        for p in many:
            p.join(60)
        res["procs"] = procs
        res["many_per_s"] = float(sum(rates))
        log(
            f"  place n={nodes}: p50 {res['place_us']['p50']:.1f} us, p99 "
            f"{res['place_us']['p99']:.1f} us; {res['one_per_s']:.0f}/s one process, "
            f"{res['many_per_s']:.0f}/s {procs} processes"
        )
        return res
    finally:
        eng.close()


def summary(pl: dict) -> tuple[list[str], list[str]]:
    """(table lines, goal lines) of the place section."""
    lat = pl["place_us"]
    lines = [
        f"| place ({pl['nodes']:,} nodes, 2 resources, selector, toleration) | value |",
        "|---|---|",
        f"| place() p50 | {lat['p50']:.1f} µs |",
        f"| place() p99 | {lat['p99']:.1f} µs |",
        f"| place + release, 1 process | {pl['one_per_s']:,.0f} /s |",
        f"| place + release, {pl['procs']} processes | {pl['many_per_s']:,.0f} /s |",
    ]
    goals = [
        f"place() p99 <= {GOAL_P99_US:.0f} µs: {lat['p99']:.1f} µs, "
        f"{verdict(lat['p99'] <= GOAL_P99_US)}",
        f">= {GOAL_ONE_PER_S:,} placements/s from one process: {pl['one_per_s']:,.0f}, "
        f"{verdict(pl['one_per_s'] >= GOAL_ONE_PER_S)}",
        f">= {GOAL_FOUR_PER_S:,} placements/s from {pl['procs']} processes: "
        f"{pl['many_per_s']:,.0f}, {verdict(pl['many_per_s'] >= GOAL_FOUR_PER_S)}",
    ]
    return lines, goals
