"""Section ``http``: the HTTP API of a real engine, and what it costs the tick.

A real ``shm-engine run`` (`EngineProcess`: supervisor, ingest, tick worker
and the one HTTP server process) scores ``n`` nodes (10K in a full run)
that a sender process heartbeats at 1 Hz.  Two phases of ``duration``
seconds each, in this order:

1. quiet: nobody calls the API;
2. hammered: one client process sends ``GET /v1/nodes/{id}`` for random
   nodes back to back over one keep-alive connection (``http.client``, the
   lightest Python client, so the server is what is measured).

The server's CPU time per request is read from /proc (what it would take
of an idle core).  In both phases this process records the duration of every tick from the
header (``tick_us_last`` each time ``ticks`` moves; polling costs the same
in both phases).  Reported: the client's latency p50/p99 and requests/s,
and the tick's p50/p99 quiet and hammered.  On 2 cores the hammered phase
runs the client, the server and the tick worker at once: the tick's p99
shows what the server costs it there, scheduling included.
"""

from __future__ import annotations

import http.client
import multiprocessing as mp
import os
import shutil
import tempfile
import time

import numpy as np

from benchmarks.harness.common import bench_config, records, stats, unique_name, verdict

__all__ = ["run", "summary", "GOALS"]

GOALS = {"get_node_p99_ms": 5.0, "tick_p99_extra_pct": 10.0}
READY_TIMEOUT_S = 180.0
TICK_POLL_S = 0.002


def _sender(endpoint: str, n: int, stop_at: float) -> None:
    from clients.heartbeat import HeartbeatClient

    recs = records(n, np.random.default_rng(5))
    with HeartbeatClient(endpoint) as hb:
        next_beat = time.monotonic()
        while time.monotonic() < stop_at:
            hb.send_batch(recs)
            next_beat += 1.0
            time.sleep(max(0.0, next_beat - time.monotonic()))


def _client(host: str, port: int, n: int, duration: float, q) -> None:
    rng = np.random.default_rng(9)
    ids = [f"/v1/nodes/node-{i:07d}" for i in rng.integers(0, n, 200_000)]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    lat = []
    errors = 0
    k = 0
    t0 = time.monotonic()
    end = t0 + duration
    while True:
        t = time.perf_counter()
        conn.request("GET", ids[k % len(ids)])
        resp = conn.getresponse()
        resp.read()
        lat.append((time.perf_counter() - t) * 1e3)
        if resp.status != 200:
            errors += 1
        k += 1
        if time.monotonic() >= end:
            break
    elapsed = time.monotonic() - t0
    conn.close()
    q.put((lat, errors, elapsed))


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ticks(header, duration: float) -> list[float]:
    """Durations (µs) of the ticks published during ``duration`` seconds."""
    out = []
    last = int(header.ticks[0])
    end = time.monotonic() + duration
    while time.monotonic() < end:
        now = int(header.ticks[0])
        if now != last:
            if now == last + 1:  # a tick missed between two polls is not misattributed
                out.append(float(header.tick_us_last[0]))
            last = now
        time.sleep(TICK_POLL_S)
    return out


def run(n: int, duration: float, log) -> dict:
    from shm_engine.core.config import render_config, with_overrides
    from shm_engine.core.segment import Segment
    from shm_engine.ops.engine_process import EngineProcess

    cfg = with_overrides(
        bench_config(max(n, 1024)),
        {"ingest.bind": "tcp://127.0.0.1:*", "http.bind": "127.0.0.1:0"},
    )
    workdir = tempfile.mkdtemp(prefix="bench-http-")
    path = os.path.join(workdir, "engine.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_config(cfg))
    name = unique_name("http")
    engine = EngineProcess(name, path, workdir).start()
    ctx = mp.get_context("spawn")
    sender = None
    try:
        st = engine.wait_ready(READY_TIMEOUT_S)
        url = st["http"]["url"]
        host, port = url.split("//")[1].rsplit(":", 1)
        total = 2 * duration + 10.0
        sender = ctx.Process(
            target=_sender, args=(st["ingest_endpoint"], n, time.monotonic() + total), daemon=True
        )
        sender.start()
        deadline = time.monotonic() + 60
        while engine.status()["nodes"]["registered"] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} nodes not registered within 60 s")
            time.sleep(0.1)
        time.sleep(2.0)  # every node scored a few times
        with Segment.attach(name, readonly=True) as seg:
            h = seg.views.header
            quiet = _ticks(h, duration)
            q = ctx.Queue()
            client = ctx.Process(target=_client, args=(host, int(port), n, duration, q))
            server_pid = engine.status()["children"]["http"]["pid"]
            cpu0 = _cpu_s(server_pid)
            client.start()
            hammered = _ticks(h, duration)
            lat, errors, elapsed = q.get(timeout=duration + 60)
            server_cpu = _cpu_s(server_pid) - cpu0
            client.join(10)
    finally:
        if sender is not None:
            sender.terminate()
            sender.join(5)
        engine.stop(30)
        shutil.rmtree(workdir, ignore_errors=True)
    get = stats(lat)
    out = {
        "nodes": n,
        "duration_s": duration,
        "tick_interval_ms": cfg.engine.tick_interval_ms,
        "get_node_ms": get,
        "get_node_rps": len(lat) / elapsed,
        "get_node_errors": errors,
        # What the server process spent per request (parsing, routing, the
        # handler, the reply): its capacity on an idle core is 1e6 / this.
        "server_cpu_us_per_request": 1e6 * server_cpu / max(len(lat), 1),
        "tick_us_quiet": stats(quiet),
        "tick_us_hammered": stats(hammered),
    }
    log(
        f"  http n={n}: GET /v1/nodes/{{id}} p50 {get['median']:.2f} ms, p99 "
        f"{get['p99']:.2f} ms, {out['get_node_rps']:.0f} req/s; tick p99 quiet "
        f"{out['tick_us_quiet']['p99']:.0f} µs, hammered {out['tick_us_hammered']['p99']:.0f} µs"
    )
    return out


def summary(res: dict) -> tuple[list[str], list[str]]:
    """(lines, goal lines) of the http section."""
    g, q, h = res["get_node_ms"], res["tick_us_quiet"], res["tick_us_hammered"]
    lines = [
        f"HTTP API ({res['nodes']:,} nodes at 1 Hz, one server process, one keep-alive client):",
        "",
        "| | p50 | p99 | rate |",
        "|---|---|---|---|",
        f"| GET /v1/nodes/{{id}} | {g['median']:.2f} ms | {g['p99']:.2f} ms | "
        f"{res['get_node_rps']:,.0f} req/s ({res['get_node_errors']} errors); server CPU "
        f"{res['server_cpu_us_per_request']:.0f} µs/request |",
        f"| tick, API quiet | {q['median']:.0f} µs | {q['p99']:.0f} µs | {q['n']} ticks |",
        f"| tick, API hammered | {h['median']:.0f} µs | {h['p99']:.0f} µs | {h['n']} ticks |",
    ]
    extra = 100.0 * (h["p99"] - q["p99"]) / q["p99"] if q["p99"] > 0 else float("nan")
    goals = [
        f"GET /v1/nodes/{{id}} p99 <= {GOALS['get_node_p99_ms']:g} ms: {g['p99']:.2f} ms, "
        + verdict(g["p99"] <= GOALS["get_node_p99_ms"]),
        f"tick p99 hammered within {GOALS['tick_p99_extra_pct']:g}% of quiet: {extra:+.0f}%, "
        + verdict(extra <= GOALS["tick_p99_extra_pct"]),
    ]
    return lines, goals
