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

- latency: ``place()`` alone, per call (p50, p99, max), from one process,
  as wall time and as this thread's CPU time (the difference is time the
  process was not running: on a loaded machine the wall p99 is mostly that);
- rate: place + release pairs per second, one process, then ``procs``
  processes at once (each with its own lease), on the same engine; also per
  CPU-second of the placing processes.
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
        t0, c0 = time.perf_counter(), time.process_time()
        end = t0 + seconds
        while True:
            for _ in range(100):
                placer.place(job).release()
            n += 100
            t = time.perf_counter()
            if t >= end:
                break
        out.put((n / (t - t0), n / max(time.process_time() - c0, 1e-9)))


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
            cpu = np.empty(samples)
            clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
            for i in range(samples):
                t0, c0 = clock(), cpu_clock()
                placed = placer.place(job)
                lat[i] = clock() - t0
                cpu[i] = cpu_clock() - c0
                placed.release()

        def pct(ns: np.ndarray) -> dict:
            us = ns / 1000.0
            return {
                "p50": float(np.percentile(us, 50)),
                "p99": float(np.percentile(us, 99)),
                "max": float(us.max()),
            }

        res: dict = {
            "nodes": nodes,
            "load_avg_1m": os.getloadavg()[0],
            "place_us": pct(lat),
            "place_cpu_us": pct(cpu),
        }
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        one = ctx.Process(target=_pairs_per_s, args=(name, seconds, None, q))
        one.start()
        res["one_per_s"], res["one_per_cpu_s"] = q.get(timeout=600)
        one.join(60)
        go = ctx.Event()
        many = [ctx.Process(target=_pairs_per_s, args=(name, seconds, go, q)) for _ in range(procs)]
        for p in many:
            p.start()
        go.set()
        rates = [q.get(timeout=600) for _ in many]
        for p in many:
            p.join(60)
        res["procs"] = procs
        res["many_per_s"] = float(sum(r[0] for r in rates))
        res["many_per_cpu_s"] = float(np.mean([r[1] for r in rates]))
        log(
            f"  place n={nodes}: p50 {res['place_us']['p50']:.1f} us, p99 "
            f"{res['place_us']['p99']:.1f} us (CPU p99 {res['place_cpu_us']['p99']:.1f} us); "
            f"{res['one_per_s']:.0f}/s one process, {res['many_per_s']:.0f}/s {procs} "
            f"processes; load average {res['load_avg_1m']:.1f}"
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
        f"| place() CPU time p50 / p99 | {pl['place_cpu_us']['p50']:.1f} / "
        f"{pl['place_cpu_us']['p99']:.1f} µs |",
        f"| place + release, 1 process | {pl['one_per_s']:,.0f} /s "
        f"({pl['one_per_cpu_s']:,.0f} per CPU-second) |",
        f"| place + release, {pl['procs']} processes | {pl['many_per_s']:,.0f} /s "
        f"({pl['many_per_cpu_s']:,.0f} per CPU-second each) |",
        f"| load average at the start | {pl['load_avg_1m']:.1f} |",
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
