"""Section ``http``: the HTTP API of a real engine, and what it costs the tick.

A real ``shm-engine run`` (`EngineProcess`: supervisor, ingest, tick worker
and the one HTTP server process) scores ``n`` nodes (10K in a full run)
that a sender process heartbeats at 1 Hz, each node offering 64 CPUs and
256 GB.  Four phases of ``duration`` seconds each, in this order:

1. quiet: nobody calls the API;
2. hammered: one client process sends ``GET /v1/nodes/{id}`` for random
   nodes back to back over one keep-alive connection (``http.client``, the
   lightest Python client, so the server is what is measured);
3. placing: ``place_clients`` client processes, one keep-alive connection
   each, send ``POST /v1/place`` (one job: 0.5 CPU and 1 GB, a 30 s
   lease) back to back, and release what they placed in batches of
   `RELEASE_BATCH` (``POST /v1/release``); placements per second count
   the placements of all clients over the phase, releases included in its
   time;
4. placing in batches: the same with `PLACE_BATCH` jobs a request.

The server's CPU time per request is read from /proc (what it would take
of an idle core).  In every phase this process records the duration of every tick from the
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
import re
import shutil
import tempfile
import time

import numpy as np

from benchmarks.harness.common import bench_config, records, stats, unique_name, verdict

__all__ = ["run", "summary", "GOALS"]

GOALS = {
    "get_node_p99_ms": 5.0,
    "tick_p99_extra_pct": 10.0,
    "place_p99_ms": 5.0,
    "placements_per_s": 5000.0,
}
PLACE_CLIENTS = 2
PLACE_BATCH = 32  # jobs a request in the batched placing phase
RELEASE_BATCH = 64
PLACE_BODY = b'{"requests": {"cpu": 0.5, "mem_gb": 1}, "ttl_s": 30}'
_ID = re.compile(rb'"id":"([^"]+)"')
READY_TIMEOUT_S = 180.0
TICK_POLL_S = 0.002


def _fleet(n: int):
    """The fleet's heartbeats: `records` with capacity."""
    from shm_engine.wire.format import HAS_RESOURCES

    recs = records(n, np.random.default_rng(5))
    recs["flags"] |= HAS_RESOURCES
    recs["res_name0"], recs["res_value0"] = b"cpu", 64.0
    recs["res_name1"], recs["res_value1"] = b"mem_gb", 256.0
    return recs


def _sender(endpoint: str, n: int, stop_at: float) -> None:
    from clients.heartbeat import HeartbeatClient

    recs = _fleet(n)
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


def _placer(host: str, port: int, duration: float, batch: int, q) -> None:
    """POST /v1/place back to back, ``batch`` jobs a request (1: one job, as
    an object); release in batches (module docstring)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"content-type": "application/json"}
    body = PLACE_BODY if batch == 1 else b"[" + b",".join([PLACE_BODY] * batch) + b"]"
    lat = []
    placed: list[bytes] = []
    errors: dict[int, int] = {}
    n = 0

    def release(ids: list[bytes]) -> None:
        items = b",".join(b'{"id":"%s","ok":true}' % i for i in ids)
        conn.request("POST", "/v1/release", b"[" + items + b"]", headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            errors[resp.status] = errors.get(resp.status, 0) + 1

    for _ in range(20):  # warm: the server's placer attaches and compiles
        conn.request("POST", "/v1/place", body, headers)
        resp = conn.getresponse()
        placed += _ID.findall(resp.read())
    release(placed)
    placed.clear()
    t0 = time.monotonic()
    end = t0 + duration
    while True:
        t = time.perf_counter()
        conn.request("POST", "/v1/place", body, headers)
        resp = conn.getresponse()
        got = resp.read()
        lat.append((time.perf_counter() - t) * 1e3)
        ids = _ID.findall(got)
        n += len(ids)
        if resp.status != 200 or len(ids) != batch:
            errors[resp.status] = errors.get(resp.status, 0) + batch - len(ids)
        placed += ids
        if len(placed) >= RELEASE_BATCH:
            release(placed)
            placed.clear()
        if time.monotonic() >= end:
            break
    if placed:
        release(placed)
    elapsed = time.monotonic() - t0
    conn.close()
    q.put((lat, n, errors, elapsed))


def _place_phase(ctx, host, port, duration, clients, batch, header, server_pid) -> dict:
    """One placing phase (module docstring): its numbers and the tick's."""
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_placer, args=(host, port, duration, batch, q)) for _ in range(clients)
    ]
    cpu0 = _cpu_s(server_pid)
    for p in procs:
        p.start()
    ticks = _ticks(header, duration)
    got = [q.get(timeout=duration + 120) for _ in procs]
    cpu = _cpu_s(server_pid) - cpu0
    for p in procs:
        p.join(10)
    placed = sum(g[1] for g in got)
    errors: dict[str, int] = {}
    for g in got:
        for status, k in g[2].items():
            errors[str(status)] = errors.get(str(status), 0) + k
    return {
        "clients": clients,
        "batch": batch,
        "request_ms": stats([x for g in got for x in g[0]]),
        "placements_per_s": placed / max(g[3] for g in got),
        "errors": errors,
        "server_cpu_us_per_placement": 1e6 * cpu / max(placed, 1),
        "tick_us": stats(ticks),
    }


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


def run(n: int, duration: float, log, place_clients: int = PLACE_CLIENTS) -> dict:
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
        total = 3 * duration + 30.0
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
            # Placing: several clients, one connection each; one job a
            # request, then `PLACE_BATCH` jobs a request.
            place = _place_phase(ctx, host, int(port), duration, place_clients, 1, h, server_pid)
            batched = _place_phase(
                ctx, host, int(port), duration, place_clients, PLACE_BATCH, h, server_pid
            )
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
    out["place"] = place
    out["place_batched"] = batched
    pl = place["request_ms"]
    log(
        f"  http n={n}: GET /v1/nodes/{{id}} p50 {get['median']:.2f} ms, p99 "
        f"{get['p99']:.2f} ms, {out['get_node_rps']:.0f} req/s; POST /v1/place p50 "
        f"{pl['median']:.2f} ms, p99 {pl['p99']:.2f} ms, {place['placements_per_s']:.0f} "
        f"placements/s ({place_clients} clients), {batched['placements_per_s']:.0f}/s in "
        f"batches of {PLACE_BATCH}; tick p99 quiet {out['tick_us_quiet']['p99']:.0f} µs, "
        f"hammered {out['tick_us_hammered']['p99']:.0f} µs, placing "
        f"{place['tick_us']['p99']:.0f} µs"
    )
    return out


def summary(res: dict) -> tuple[list[str], list[str]]:
    """(lines, goal lines) of the http section."""
    g, q, h = res["get_node_ms"], res["tick_us_quiet"], res["tick_us_hammered"]
    one, many = res["place"], res["place_batched"]
    pl, pb = one["request_ms"], many["request_ms"]
    lines = [
        f"HTTP API ({res['nodes']:,} nodes at 1 Hz, one server process, one keep-alive client):",
        "",
        "| | p50 | p99 | rate |",
        "|---|---|---|---|",
        f"| GET /v1/nodes/{{id}} | {g['median']:.2f} ms | {g['p99']:.2f} ms | "
        f"{res['get_node_rps']:,.0f} req/s ({res['get_node_errors']} errors); server CPU "
        f"{res['server_cpu_us_per_request']:.0f} µs/request |",
        f"| POST /v1/place, one job ({one['clients']} clients) | {pl['median']:.2f} ms | "
        f"{pl['p99']:.2f} ms | {one['placements_per_s']:,.0f} placements/s "
        f"({sum(one['errors'].values())} errors); server CPU "
        f"{one['server_cpu_us_per_placement']:.0f} µs/placement |",
        f"| POST /v1/place, {many['batch']} jobs ({many['clients']} clients) | "
        f"{pb['median']:.2f} ms | {pb['p99']:.2f} ms | {many['placements_per_s']:,.0f} "
        f"placements/s ({sum(many['errors'].values())} errors); server CPU "
        f"{many['server_cpu_us_per_placement']:.0f} µs/placement |",
        f"| tick, API quiet | {q['median']:.0f} µs | {q['p99']:.0f} µs | {q['n']} ticks |",
        f"| tick, API hammered | {h['median']:.0f} µs | {h['p99']:.0f} µs | {h['n']} ticks |",
        f"| tick, placing one job a request | {one['tick_us']['median']:.0f} µs | "
        f"{one['tick_us']['p99']:.0f} µs | {one['tick_us']['n']} ticks |",
        f"| tick, placing in batches | {many['tick_us']['median']:.0f} µs | "
        f"{many['tick_us']['p99']:.0f} µs | {many['tick_us']['n']} ticks |",
    ]
    extra = 100.0 * (h["p99"] - q["p99"]) / q["p99"] if q["p99"] > 0 else float("nan")
    goals = [
        f"GET /v1/nodes/{{id}} p99 <= {GOALS['get_node_p99_ms']:g} ms: {g['p99']:.2f} ms, "
        + verdict(g["p99"] <= GOALS["get_node_p99_ms"]),
        f"tick p99 hammered within {GOALS['tick_p99_extra_pct']:g}% of quiet: {extra:+.0f}%, "
        + verdict(extra <= GOALS["tick_p99_extra_pct"]),
        f"POST /v1/place (one job) p99 <= {GOALS['place_p99_ms']:g} ms: {pl['p99']:.2f} ms, "
        + verdict(pl["p99"] <= GOALS["place_p99_ms"]),
        f"placements over HTTP >= {GOALS['placements_per_s']:,.0f}/s: "
        f"{one['placements_per_s']:,.0f}/s one job a request, "
        + verdict(one["placements_per_s"] >= GOALS["placements_per_s"])
        + f"; {many['placements_per_s']:,.0f}/s in batches of {many['batch']}, "
        + verdict(many["placements_per_s"] >= GOALS["placements_per_s"]),
    ]
    return lines, goals
