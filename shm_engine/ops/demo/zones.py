"""``shm-engine demo --zones N``: N engines, one per zone, and a federating mirror.

Each zone is a real ``shm-engine run`` (`EngineProcess`) with its score feed
on a loopback port, fed by its own simulated fleet (the demo's `Fleet`, node
ids prefixed with the zone so they are unique across zones); one
``shm-engine mirror --from zone=...`` process follows all of them.  The view
(or the status lines) is the ``top`` view of the *mirror*: every zone's
nodes ranked together, and a line per zone with its freshness.

Invariant: no child outlives the demo.  Every exit path stops the mirror
and every engine (SIGTERM, SIGKILL after a grace), and the demo exits 1 if
a segment is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from shm_engine import wire
from shm_engine.core.config import load_config, render_config, with_overrides
from shm_engine.core.errors import ConfigError
from shm_engine.ops.demo.fleet import HEARTBEAT_INTERVAL_S, Fleet
from shm_engine.ops.engine_process import EngineProcess, free_port, segment_exists
from shm_engine.ops.engine_process import _die_with_parent as die_with_parent

__all__ = ["run_zones", "ZONE_NAMES"]

ZONE_NAMES = ("eu", "us", "ap", "sa", "af", "me", "oc", "an")
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
VIEW_INTERVAL_S = 0.5
STATUS_INTERVAL_S = 3.0
DEMO_TICK_MS = 100


def _configs(args, workdir: Path, zones: list[str], per_zone: int) -> list[tuple[Path, int]]:
    base = load_config(args.config)
    if base.ingest.curve.enabled or base.feed.curve.enabled:
        raise ConfigError("the zones demo runs on loopback without CURVE; give a config without it")
    out = []
    for z in zones:
        feed_port = free_port()
        over: dict = {
            "ingest.bind": "tcp://127.0.0.1:*",
            "feed.bind": f"tcp://127.0.0.1:{feed_port}",
            "feed.feedback_bind": f"tcp://127.0.0.1:{free_port()}",
            "engine.warm_spares": False,  # N engines on one demo host
            # Each engine's HTTP API on a free port: N engines cannot share one.
            "http.bind": "127.0.0.1:0",
        }
        if args.config is None:
            over["engine.tick_interval_ms"] = DEMO_TICK_MS
            over["engine.capacity"] = max(1024, 2 * per_zone)
            over["ingest.registration_burst_per_sender"] = max(1024, per_zone)
        cfg = with_overrides(base, over)
        path = workdir / f"{z}.toml"
        path.write_text(render_config(cfg), encoding="utf-8")
        out.append((path, feed_port))
    return out


def _zone_fleet(zone: str, n: int, seed: int, period: float, dead_after_s: float) -> Fleet:
    fleet = Fleet(n, seed, period, dead_after_s)
    fleet.names = [f"{zone}-{name}" for name in fleet.names]
    fleet.node_bytes = np.array([s.encode() for s in fleet.names], fleet.node_bytes.dtype)
    return fleet


def run_zones(args, view: bool, workdir: str) -> int:
    """The whole zones demo; returns the exit code (1 if a segment is left)."""
    procs: dict = {"mirror": None, "engines": [], "name": ""}
    try:
        code = _drive(args, view, Path(workdir), procs)
    except KeyboardInterrupt:
        print("shm-engine demo: interrupted", file=sys.stderr)
        code = 130
    finally:
        left = _stop_all(procs["mirror"], procs["engines"], procs["name"])
    if left:
        print(f"shm-engine demo: segments left behind: {left}", file=sys.stderr)
        return 1
    return code


def _drive(args, view: bool, work: Path, procs: dict) -> int:
    from clients.heartbeat import HeartbeatClient
    from shm_engine.ops.topview import Watcher, render

    k = args.zones
    zones = list(ZONE_NAMES[:k])
    per_zone = max(1, args.nodes // k)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    mirror_name = procs["name"] = args.name or f"demo-mirror-{tag}"
    configs = _configs(args, work, zones, per_zone)
    engines = procs["engines"] = [
        EngineProcess(f"demo-{z}-{tag}", path, work)
        for z, (path, _p) in zip(zones, configs, strict=True)
    ]
    clients: list = []
    watcher = None
    live = None
    try:
        print(
            f"starting {k} engines ({', '.join(zones)}) and a federating mirror "
            f"{mirror_name!r}; the first run compiles the kernels ...",
            file=sys.stderr,
        )
        for e in engines:
            e.start()
        endpoints = [e.wait_ready(READY_TIMEOUT_S)["ingest_endpoint"] for e in engines]
        cmd = [sys.executable, "-m", "shm_engine", "mirror", "--name", mirror_name]
        cmd += ["--capacity", str(max(1024, 2 * per_zone) * k)]
        for z, (_path, port) in zip(zones, configs, strict=True):
            cmd += ["--from", f"{z}=tcp://127.0.0.1:{port}"]
        with open(work / "mirror.out", "wb") as out, open(work / "mirror.err", "wb") as err:
            mirror = procs["mirror"] = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent,  # never outlives the demo
            )
        cfg = load_config(configs[0][0])
        period = args.duration if args.duration is not None else 60.0
        fleets = [
            _zone_fleet(z, per_zone, args.seed + i, period, cfg.score.dead_after_s)
            for i, z in enumerate(zones)
        ]
        clients = [
            HeartbeatClient(ep, max_frame_bytes=wire.DEFAULT_MAX_FRAME_BYTES) for ep in endpoints
        ]
        t0 = time.monotonic()
        deadline = t0 + READY_TIMEOUT_S
        while b"ready" not in (work / "mirror.out").read_bytes():
            for f, c in zip(fleets, clients, strict=True):
                c.send_batch(f.heartbeats(time.monotonic() - t0)[0])
            if mirror.poll() is not None or time.monotonic() > deadline:
                print(
                    f"shm-engine demo: the mirror did not start:\n"
                    f"{(work / 'mirror.err').read_text(errors='replace')[-2000:]}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(HEARTBEAT_INTERVAL_S)
        watcher = Watcher(mirror_name, rows=25)
        if view:
            from rich.live import Live

            live = Live(auto_refresh=False, redirect_stderr=False)
            live.start()
        next_beat = next_view = time.monotonic()
        next_status = next_view + STATUS_INTERVAL_S
        while True:
            now = time.monotonic()
            t = now - t0
            if args.duration is not None and t >= args.duration:
                break
            if mirror.poll() is not None or not all(e.running() for e in engines):
                print("shm-engine demo: an engine or the mirror exited", file=sys.stderr)
                return 1
            if now >= next_beat:
                for f, c in zip(fleets, clients, strict=True):
                    c.send_batch(f.heartbeats(t)[0])
                next_beat = max(next_beat + HEARTBEAT_INTERVAL_S, now)
            if now >= next_view:
                vs = watcher.poll()
                if live is not None:
                    live.update(render(vs), refresh=True)
                elif now >= next_status:
                    zl = "; ".join(f"{z['zone']} {z['state']} {z['nodes']} nodes" for z in vs.zones)
                    print(
                        f"t={t:6.1f}s mirror epoch {vs.epoch} | {vs.registered} nodes, "
                        f"{vs.ranked} ranked | zones: {zl}",
                        flush=True,
                    )
                    next_status += STATUS_INTERVAL_S
                next_view = now + VIEW_INTERVAL_S
            time.sleep(max(0.0, min(next_beat, next_view) - time.monotonic()))
        if live is not None:
            live.stop()
            live = None
        vs = watcher.poll()
        print(f"shm-engine demo: {k} zones, {vs.registered} nodes on mirror {mirror_name!r}")
        for z in vs.zones:
            print(
                f"  zone {z['zone']}: {z['state']}, {z['nodes']} nodes, {z['frames']} frames "
                f"({z['snapshots']} full), {z['gaps']} gaps, lag p99 {z['lag_us']['p99']:.0f} us"
            )
        return 0
    finally:
        if live is not None:
            live.stop()
        if watcher is not None:
            watcher.close()
        for c in clients:
            c.close()


def _stop_all(mirror, engines: list[EngineProcess], mirror_name: str) -> list[str]:
    """Stop the mirror and every engine, all at once (each takes a few
    seconds: in turn, they would add up); the names whose segment is left."""
    for e in engines:
        e.terminate()
    if mirror is not None and mirror.poll() is None:
        mirror.terminate()
        try:
            mirror.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            mirror.kill()
            mirror.wait()
    for e in engines:
        if e.running():
            e.stop(STOP_TIMEOUT_S)
    return [n for n in [mirror_name] + [e.name for e in engines] if n and segment_exists(n)]
