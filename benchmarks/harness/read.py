"""Section ``read``: `ScoreReader` from another process, and what users would use instead.

A segment of ``n`` nodes is ticked by a `Ticker` in a thread of this process
(the writer keeps publishing while the reader reads); a separate Python
process attaches a `ScoreReader` and times ``score(node)``, ``view()``
(the latest tick in place, latch-guarded: taken, then checked), ``snapshot()``
(the stable copy; and the reader's array copies alone, the floor of a copy),
``top(10)`` and ``pick()`` (with the claims discount live: the engine has a
claims segment, the ticker reads it, and the reader holds claims open on a
tenth of the nodes while it picks, so the candidates' in-flight counts are
read and some are non-zero).  For comparison, the same scores in Redis (HGET, HGETALL,
ZREVRANGE), when redis-server and the redis client are installed, and in a
``multiprocessing.Manager`` dict.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.harness.common import (
    TICK_S,
    bench_config,
    records,
    rss_kb,
    send_records,
    stats,
    unique_name,
    verdict,
)

__all__ = ["run", "summary", "reader_child", "GOALS"]

GOALS = {"score_ns": 1000.0, "snapshot_10k_us": 20.0, "top10_us": 5.0, "pick_us": 5.0}
ROOT = Path(__file__).resolve().parents[2]
REDIS_READY_S = 4.0


def reader_child(name: str, n: int, reps: int) -> None:
    """Runs in a separate process: time `ScoreReader` calls, print one JSON line."""
    from clients.reader import ScoreReader

    r = ScoreReader.attach(name)
    rng = np.random.default_rng(0)
    names = [f"node-{i:07d}" for i in rng.integers(0, n, 1000).tolist()]
    for nm in names[:50]:
        r.score(nm)
    score_ns = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for nm in names:
            r.score(nm)
        score_ns.append((time.perf_counter_ns() - t0) / len(names))
    snap, top = [], []
    r.snapshot()
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        r.snapshot()
        t1 = time.perf_counter_ns()
        r.top(10)
        t2 = time.perf_counter_ns()
        snap.append((t1 - t0) / 1e3)
        top.append((t2 - t1) / 1e3)
    view_us = []  # the same tick in place: take a view, check it
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        with r.view():
            pass
        view_us.append((time.perf_counter_ns() - t0) / 1e3)
    copy_us = []  # where snapshot time goes: the copies alone
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        r._copy(0, n)
        copy_us.append((time.perf_counter_ns() - t0) / 1e3)
    held = [r.claim(f"node-{i:07d}") for i in range(0, n, 10)]
    pick_us, picked = [], set()
    for _ in range(3):
        picked.add(r.pick())
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _i in range(100):
            r.pick()
        pick_us.append((time.perf_counter_ns() - t0) / 1e5)
    for c in held:
        c.release(ok=True)
    print(
        json.dumps(
            {
                "score_ns": stats(score_ns),
                "snapshot_us": stats(snap),
                "view_us": stats(view_us),
                "top10_us": stats(top),
                "snapshot_copy_only_us": stats(copy_us),
                "pick_us": stats(pick_us),
                "picked_none": None in picked,
                "retries_exhausted": r.retries_exhausted,
            }
        )
    )
    r.close()


def _redis(scores: dict, reps: int) -> dict:
    from shm_engine.ops.engine_process import free_port

    exe = shutil.which("redis-server")
    if exe is None:
        return {"skipped": "redis-server is not installed (apt-get install redis-server)"}
    try:
        import redis
    except ImportError:
        return {"skipped": "the redis Python client is not installed (pip install redis)"}
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cli = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + REDIS_READY_S
        while True:
            try:
                cli.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    return {"skipped": f"redis-server did not answer within {REDIS_READY_S} s"}
                time.sleep(0.02)
        cli.hset("scores", mapping=scores)
        cli.zadd("ranking", scores)
        names = list(scores)[:1000]
        hget, hgetall, ztop = [], [], []
        for _ in range(max(3, reps // 10)):
            t0 = time.perf_counter_ns()
            for nm in names:
                cli.hget("scores", nm)
            hget.append((time.perf_counter_ns() - t0) / len(names))
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            cli.hgetall("scores")
            t1 = time.perf_counter_ns()
            cli.zrevrange("ranking", 0, 9, withscores=True)
            t2 = time.perf_counter_ns()
            hgetall.append((t1 - t0) / 1e3)
            ztop.append((t2 - t1) / 1e3)
        return {
            "server": os.path.basename(exe),
            "hget_ns": stats(hget),
            "hgetall_us": stats(hgetall),
            "zrevrange10_us": stats(ztop),
            "server_rss_kb": rss_kb(proc.pid),
        }
    finally:
        proc.terminate()
        proc.wait(5)


def _manager(scores: dict, reps: int) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as mgr:
        d = mgr.dict(scores)
        top = sorted(scores.items(), key=lambda kv: -kv[1])[:10]
        meta = mgr.dict({"top10": top})
        names = list(scores)[:1000]
        get, copy, t10 = [], [], []
        for _ in range(max(3, reps // 10)):
            t0 = time.perf_counter_ns()
            for nm in names:
                d[nm]
            get.append((time.perf_counter_ns() - t0) / len(names))
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            d.copy()
            t1 = time.perf_counter_ns()
            meta["top10"]
            t2 = time.perf_counter_ns()
            copy.append((t1 - t0) / 1e3)
            t10.append((t2 - t1) / 1e3)
        return {"get_ns": stats(get), "copy_us": stats(copy), "top10_us": stats(t10)}


def run(n: int, reps: int, log) -> dict:
    from shm_engine.core.claims import ClaimsSegment
    from shm_engine.core.segment import Segment
    from shm_engine.ingest.process import Ingest
    from shm_engine.tick.ticker import Ticker

    rng = np.random.default_rng(5)
    config = bench_config(n)
    name = unique_name("read")
    seg = Segment.create(name, n)
    stop = threading.Event()
    th = claims = None
    try:
        claims = ClaimsSegment.create(name, n, 8)
        send_records(Ingest(seg.views, config), records(n, rng), time.monotonic())
        ticker = Ticker(seg.views, config, claims.views)
        ticker.tick(time.monotonic())

        def publish():
            while not stop.is_set():
                ticker.tick(time.monotonic())
                stop.wait(TICK_S)

        th = threading.Thread(target=publish, daemon=True)
        th.start()
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"from benchmarks.harness.read import reader_child; "
            f"reader_child({name!r}, {n}, {reps})"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(f"reader process failed: {proc.stderr[-2000:]}")
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        stop.set()
        th.join()
        published = seg.views.buffers[ticker.epoch & 1].out.score[:n]
        scores = {f"node-{i:07d}": float(s) for i, s in enumerate(published)}
    finally:
        stop.set()
        if th is not None:
            th.join()
        for s in (claims, seg):
            if s is not None:
                s.close()
                s.unlink()
    out = {
        "nodes": n,
        "ours": ours,
        "redis": _redis(scores, reps),
        "manager": _manager(scores, reps),
    }
    log(
        f"  read n={n}: score {ours['score_ns']['median']:.0f} ns, view "
        f"{ours['view_us']['median']:.1f} us, snapshot (copy) "
        f"{ours['snapshot_us']['median']:.1f} us, top10 {ours['top10_us']['median']:.1f} us, "
        f"pick {ours['pick_us']['median']:.2f} us"
    )
    return out


def summary(rd: dict) -> tuple[list[str], list[str]]:
    """(table lines, goal lines) of the read section."""
    o, rds, mg = rd["ours"], rd["redis"], rd["manager"]

    def red(key: str, fmt: str) -> str:
        return "skipped" if "skipped" in rds else fmt.format(rds[key]["median"])

    lines = [
        f"| read ({rd['nodes']:,} nodes) | ScoreReader | Redis | Manager dict |",
        "|---|---|---|---|",
        f"| one score | {o['score_ns']['median']:.0f} ns | "
        f"{red('hget_ns', '{:.0f} ns (HGET)')} | {mg['get_ns']['median']:.0f} ns |",
        f"| view() (in place) | {o['view_us']['median']:.1f} µs | | |",
        f"| snapshot (copy) | {o['snapshot_us']['median']:.1f} µs | "
        f"{red('hgetall_us', '{:.0f} µs (HGETALL)')} | "
        f"{mg['copy_us']['median']:.0f} µs (copy) |",
        f"| top 10 | {o['top10_us']['median']:.1f} µs | "
        f"{red('zrevrange10_us', '{:.0f} µs (ZREVRANGE)')} | "
        f"{mg['top10_us']['median']:.0f} µs |",
        f"| pick() | {o['pick_us']['median']:.2f} µs | | |",
    ]
    if "skipped" in rds:
        lines.append(f"\nRedis: {rds['skipped']}")
    score, view, snap, top = (
        o["score_ns"]["median"],
        o["view_us"]["median"],
        o["snapshot_us"]["median"],
        o["top10_us"]["median"],
    )
    goals = [
        f"score() <= 1 µs: {score:.0f} ns, {verdict(score <= GOALS['score_ns'])}",
        f"snapshot <= 20 µs at 10K: view() {view:.1f} µs (in place, latch-guarded), "
        f"{verdict(view <= GOALS['snapshot_10k_us'])}; the stable copy snapshot() "
        f"{snap:.1f} µs (array copies alone "
        f"{o['snapshot_copy_only_us']['median']:.1f} µs: memory bandwidth)",
        f"top(10) <= 5 µs: {top:.1f} µs, {verdict(top <= GOALS['top10_us'])}",
        f"pick() <= 5 µs at {rd['nodes']:,} nodes, from another process, claims "
        f"discount on: {o['pick_us']['median']:.2f} µs, "
        f"{verdict(o['pick_us']['median'] <= GOALS['pick_us'])}",
    ]
    return lines, goals
