"""Section ``freshness``: a heartbeat leaving its sender -> its effect visible to a reader.

The real ingest and tick processes run on a segment of ``n`` nodes (10K in
a full run), all heartbeating at 1 Hz from a sender process, the tick
worker in fast-tick mode (``[engine] tick_interval_ms`` = `FAST_TICK_MS`).  Fifty probe
nodes flip their CPU between 0.05 and 0.85 at each of their heartbeats and
the sender logs when each flip left; this process polls ``snapshot()`` and
logs when each probe's ``raw`` moved.  The latency of a flip is the first
matching move after it left.  The first second (registration) is not
counted.  RSS of every process is sampled for the memory section, and the
CPU time of the tick worker and the ingest over the measured window
(``/proc/PID/stat``) gives the share of a core each used.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

from benchmarks.harness.common import bench_config, records, rss_kb, stats, unique_name, verdict

__all__ = ["run", "summary", "GOALS"]

GOALS = {"freshness_p99_ms": 5.0, "ticker_core_share": 0.20}
FAST_TICK_MS = 2
PROBES = 50
READY_TIMEOUT_S = 120.0  # both children compile or load the kernels
POLL_S = 0.0005


def _sender(port: int, n: int, probes: int, duration: float, q) -> None:
    import zmq

    from shm_engine.wire import encode_batch

    recs = records(n, np.random.default_rng(11))
    recs["queue"][:probes] = 0.0
    recs["mem"][:probes] = 0.1
    recs["flags"][:probes] = 0  # probes report only the required metrics
    for f in ("throughput", "io", "p50_ms", "p95_ms", "ok", "err"):
        recs[f][:probes] = 0
    frames = [encode_batch(recs[i : i + 1]) for i in range(n)]
    probe = recs[:1].copy()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(f"tcp://127.0.0.1:{port}")
    level = [0] * probes
    sent = []
    per_ms = max(1, n // 1000)
    t0 = time.monotonic()
    k = 0
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        target = int((now - t0) * 1000) * per_ms
        while k < target:
            j = k % n
            if j < probes:
                level[j] ^= 1
                probe[0] = recs[j]
                probe["cpu"][0] = 0.85 if level[j] else 0.05
                frame = encode_batch(probe)
                sent.append((j, level[j], time.monotonic()))
                sock.send(frame)
            else:
                sock.send(frames[j], copy=False)
            k += 1
        time.sleep(POLL_S)
    q.put((sent, rss_kb(os.getpid())))
    sock.close(linger=1000)
    ctx.term()


def _wait_ready(header, procs, timeout: float) -> None:
    """Until the tick worker has published and the ingest is bound."""
    from shm_engine.ops.status import engine_ready

    deadline = time.monotonic() + timeout
    while not engine_ready(header):
        if any(p.exitcode is not None for p in procs):
            raise RuntimeError(
                f"a child exited before the engine was ready: "
                f"{[(p.name, p.exitcode) for p in procs]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"ingest and tick worker not ready within {timeout:g} s")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(n: int, duration: float, log, tick_ms: int = FAST_TICK_MS) -> dict:
    from clients.reader import ScoreReader
    from shm_engine.core.config import with_overrides
    from shm_engine.core.segment import Segment
    from shm_engine.ingest.process import ingest_main
    from shm_engine.ops.engine_process import free_port
    from shm_engine.tick.ticker import ticker_main

    port = free_port()
    config = with_overrides(bench_config(n, port), {"engine.tick_interval_ms": tick_ms})
    name = unique_name("fresh")
    seg = Segment.create(
        name, n, tick_interval_ms=config.engine.tick_interval_ms, endpoint=config.ingest.bind
    )
    ctx = mp.get_context("spawn")
    procs = []
    try:
        for target in (ingest_main, ticker_main):
            p = ctx.Process(target=target, args=(name, config, os.getpid()), daemon=True)
            p.start()
            procs.append(p)
        _wait_ready(seg.views.header, procs, READY_TIMEOUT_S)
        reader = ScoreReader.attach(name)
        q = ctx.Queue()
        sender = ctx.Process(target=_sender, args=(port, n, PROBES, duration, q), daemon=True)
        sender.start()
        t_cpu = time.monotonic()
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        probe_names = [f"node-{i:07d}" for i in range(PROBES)]
        slot = {}
        last = {}
        detections = []  # (probe, level, t)
        poll_us = []
        end = time.monotonic() + duration + 1.0
        while time.monotonic() < end:
            t0 = time.perf_counter_ns()
            snap = reader.snapshot()
            poll_us.append((time.perf_counter_ns() - t0) / 1e3)
            t = time.monotonic()
            if len(slot) < PROBES:
                for s, nm in enumerate(snap.nodes):
                    if nm in probe_names:
                        slot[nm] = s
            for j, nm in enumerate(probe_names):
                s = slot.get(nm)
                if s is None or s >= len(snap.raw):
                    continue
                raw = float(snap.raw[s])
                prev = last.get(j)
                if prev is not None and abs(raw - prev) > 0.05:
                    detections.append((j, 1 if raw < prev else 0, t))
                last[j] = raw
            time.sleep(POLL_S)
        wall = time.monotonic() - t_cpu
        share = [(cpu_seconds(p.pid) - c0) / wall for p, c0 in zip(procs, cpu0, strict=True)]
        rss_reader = rss_kb(os.getpid())
        sent, rss_sender = q.get(timeout=30)
        sender.join(10)
        rss = {
            "ingest": rss_kb(procs[0].pid),
            "ticker": rss_kb(procs[1].pid),
            "reader_harness": rss_reader,
            "sender": rss_sender,
        }
        h = seg.views.header
        tick_p50, tick_p99 = float(h.tick_us_p50[0]), float(h.tick_us_p99[0])
        overruns = int(h.overruns[0])
        reader.close()
    finally:
        seg.views.header.stopping[0] = 1
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
        seg.close()
        seg.unlink()
    lat = _latencies(sent, detections)
    st = stats(lat) if lat else {"median": float("nan"), "p99": float("nan"), "n": 0}
    out = {
        "nodes": n,
        "rate_hz_per_node": 1.0,
        "tick_interval_ms": config.engine.tick_interval_ms,
        "latency_ms": st,
        "probe_sends": len(sent),
        "matched": len(lat),
        "reader_poll_us": stats(poll_us),
        "ticker_tick_us_p50": tick_p50,
        "ticker_tick_us_p99": tick_p99,
        "overruns": overruns,
        "core_share": {"ingest": share[0], "ticker": share[1]},
        "rss_kb": rss,
    }
    log(
        f"  freshness n={n}, tick {tick_ms} ms: p50 {st['median']:.1f} ms, p99 "
        f"{st['p99']:.1f} ms ({len(lat)} samples); ticker {share[1]:.0%} of a core, "
        f"{overruns} overruns"
    )
    return out


def _latencies(sent: list, detections: list) -> list[float]:
    """ms from each flip leaving to the first matching move seen (cpu 0.85
    lowers raw: level 1 is seen as a drop)."""
    by: dict[tuple, list] = {}
    for j, lvl, t in detections:
        by.setdefault((j, lvl), []).append(t)
    lat = []
    t_first = sent[0][2] + 1.0 if sent else 0.0
    for j, lvl, ts in sent:
        if ts < t_first:
            continue  # the first second registers nodes
        seen = [t for t in by.get((j, lvl), []) if t >= ts]
        if seen:
            lat.append((min(seen) - ts) * 1e3)
    return lat


def summary(fr: dict) -> tuple[list[str], list[str]]:
    """(lines, goal lines) of the freshness section."""
    lat = fr["latency_ms"]
    share = fr["core_share"]
    limit, max_share = GOALS["freshness_p99_ms"], GOALS["ticker_core_share"]
    lines = [
        f"freshness ({fr['nodes']:,} nodes at 1 Hz, tick {fr['tick_interval_ms']} ms): "
        f"p50 {lat['median']:.1f} ms, p99 {lat['p99']:.1f} ms over {lat['n']} probe "
        f"heartbeats; ticker p50 {fr['ticker_tick_us_p50']:.0f} µs, "
        f"{share['ticker']:.0%} of a core (ingest {share['ingest']:.0%}), overruns "
        f"{fr['overruns']}"
    ]
    goals = [
        f"freshness p99 <= {limit:g} ms with the ticker <= {max_share:.0%} of a core: "
        f"{lat['p99']:.1f} ms, {share['ticker']:.0%}, "
        f"{verdict(lat['p99'] <= limit and share['ticker'] <= max_share)}"
    ]
    return lines, goals
