"""``shm-engine demo``: drive a simulated fleet into a real engine and report.

The engine is a child ``shm-engine run`` (`EngineProcess`) with its own
segment name and a temporary config: the score defaults of SCORING.md, a
100 ms tick and the ingest on a loopback port the engine picks itself
(``tcp://127.0.0.1:*``; the bound endpoint comes back in its status), and
the HTTP API and dashboard on a free loopback port (printed at start).  The
fleet's heartbeats go through `HeartbeatClient` as binary batches; scores
come back through the ``top`` view's `Watcher` (a `ScoreReader`).

Invariant: the engine child never outlives the demo.  Every exit path goes
through ``finally``: SIGTERM, SIGKILL after a grace (see `EngineProcess`).
A clean stop must remove the segment; the demo exits 1 if it does not.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import uuid

import numpy as np

from shm_engine import wire
from shm_engine.core.config import load_config, render_config, with_overrides
from shm_engine.core.errors import ConfigError
from shm_engine.core.segment import posix_name
from shm_engine.core.segment import unlink as unlink_segment
from shm_engine.core.states import STATE_NAMES, NodeState
from shm_engine.ops.demo.fleet import HEARTBEAT_INTERVAL_S, Fleet
from shm_engine.ops.demo.report import Stats
from shm_engine.ops.engine_process import EngineExited, EngineProcess, engine_running

__all__ = ["cmd_demo", "CYCLE_S", "DEMO_TICK_MS"]

VIEW_INTERVAL_S = 0.5
STATUS_INTERVAL_S = 3.0  # status lines when there is no live view
CYCLE_S = 60.0  # timeline period of an unbounded demo
READY_TIMEOUT_S = 90.0  # first start compiles the kernels
STOP_TIMEOUT_S = 20.0
SETTLE_S = 2.0  # at the end, for the ingest to drain what was sent
DEMO_TICK_MS = 100
BIND = "tcp://127.0.0.1:*"
HTTP_BIND = "127.0.0.1:0"  # the dashboard, on a free port (printed at start)


def _write_config(args, directory: str, n: int):
    cfg = load_config(args.config)
    if cfg.ingest.curve.enabled:
        raise ConfigError(
            "ingest.curve: the demo's simulated fleet cannot use CURVE; "
            "give a config without [ingest.curve]"
        )
    over: dict[str, str | int] = {"ingest.bind": BIND, "http.bind": HTTP_BIND}
    if args.config is None:
        over["engine.tick_interval_ms"] = DEMO_TICK_MS
        over["engine.capacity"] = max(1024, 2 * n)
        # One process sends the whole simulated fleet: it registers at once.
        over["ingest.registration_burst_per_sender"] = max(1024, n)
        over["ingest.registration_burst"] = max(16384, n)
    elif cfg.engine.capacity < n:
        raise ConfigError(f"engine.capacity = {cfg.engine.capacity} is smaller than --nodes {n}")
    cfg = with_overrides(cfg, over)
    path = os.path.join(directory, "engine.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_config(cfg))
    return cfg, path


def _status_line(t: float, vs, sent: int) -> str:
    c = vs.counts
    states = " ".join(f"{STATE_NAMES[s]} {c.get(STATE_NAMES[s], 0)}" for s in NodeState)
    return (
        f"t={t:6.1f}s epoch {vs.epoch:>5} | {vs.registered} nodes: {states} | "
        f"pressure {vs.pressure:.3f} | heartbeats sent {sent:,} accepted {vs.accepted:,}"
    )


def _usage_error(args) -> str | None:
    if args.nodes < 1:
        return "--nodes must be >= 1"
    if not 0 <= args.zones <= 8:
        return "--zones must be in 0..8 (0: one engine, no mirror)"
    if args.duration is not None and args.duration <= 0:
        return "--duration must be > 0"
    if args.name is not None:
        try:
            posix_name(args.name)
        except ValueError as err:
            return f"--name: {err}"
        if engine_running(args.name):
            return f"engine {args.name!r} is already running; give another --name"
    return None


def _live_view_available(args) -> bool:
    if args.no_view or not sys.stdout.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        print(
            "shm-engine demo: rich is not installed (pip install 'shm-engine[top]'); "
            "printing status lines instead",
            file=sys.stderr,
        )
        return False
    return True


def cmd_demo(args) -> int:
    """``shm-engine demo [--nodes N] [--duration S] [--seed N] [--name NAME]
    [--config FILE] [--no-view]``."""
    problem = _usage_error(args)
    if problem is not None:
        print(f"shm-engine demo: {problem}", file=sys.stderr)
        return 2
    name = args.name or f"demo-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    view = _live_view_available(args)
    if args.zones:
        from shm_engine.ops.demo.zones import run_zones  # engines per zone + a mirror

        zdir = tempfile.mkdtemp(prefix="shm-engine-demo-")
        try:
            return run_zones(args, view, zdir)
        finally:
            shutil.rmtree(zdir, ignore_errors=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM, and SIGHUP (the terminal went away), stop the demo like Ctrl-C.
    old_handlers = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGHUP)}
    workdir = tempfile.mkdtemp(prefix="shm-engine-demo-")
    engine = None
    try:
        cfg, cfg_path = _write_config(args, workdir, args.nodes)
        engine = EngineProcess(name, cfg_path, workdir)
        print(
            f"starting engine {name!r} (tick {cfg.engine.tick_interval_ms} ms); the first "
            "run compiles the scoring kernels, which can take a minute ...",
            file=sys.stderr,
        )
        engine.start()
        status = engine.wait_ready(READY_TIMEOUT_S)
        endpoint = status["ingest_endpoint"]
        print(f"engine ready, ingest on {endpoint}", file=sys.stderr)
        if status.get("http"):
            print(f"dashboard and HTTP API on {status['http']['url']}/", file=sys.stderr)
        code = _run(args, name, cfg, endpoint, view, engine)
        return _stop(engine, code)
    except (EngineExited, TimeoutError) as err:
        print(f"shm-engine demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shm-engine demo: interrupted", file=sys.stderr)
        return 130
    finally:
        try:
            if engine is not None and engine.running():
                engine.stop(STOP_TIMEOUT_S)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            shutil.rmtree(workdir, ignore_errors=True)


def _stop(engine: EngineProcess, code: int) -> int:
    rc = engine.stop(STOP_TIMEOUT_S)
    segment = posix_name(engine.name)
    if rc != 0:
        how = "it had to be killed" if rc is None else f"exit {rc}"
        print(
            f"shm-engine demo: the engine did not stop cleanly ({how}):\n{engine.log_tail()}",
            file=sys.stderr,
        )
        if engine.segment_exists() and not engine_running(engine.name):
            unlink_segment(engine.name)  # ours, and its creator is gone
            print(f"shm-engine demo: removed the stale segment {segment}", file=sys.stderr)
        return 1
    if engine.segment_exists():
        print(
            f"shm-engine demo: segment {segment} left behind after the engine stopped",
            file=sys.stderr,
        )
        return 1
    print(f"engine stopped cleanly (exit 0), segment {segment} removed")
    return code


def _run(args, name: str, cfg, endpoint: str, view: bool, engine: EngineProcess) -> int:
    """Drive the fleet until --duration or Ctrl-C; print the summary."""
    from clients.heartbeat import HeartbeatClient
    from shm_engine.ops.topview import Watcher

    period = args.duration if args.duration is not None else CYCLE_S
    fleet = Fleet(args.nodes, args.seed, period, cfg.score.dead_after_s)
    stats = Stats(fleet)
    watcher = Watcher(name, rows=25)
    client = HeartbeatClient(
        endpoint, max_frame_bytes=min(cfg.ingest.max_frame_bytes, wire.DEFAULT_MAX_FRAME_BYTES)
    )
    live = None
    t0 = time.monotonic()
    t = 0.0
    try:
        if view:
            from rich.live import Live

            from shm_engine.ops.topview import render

            live = Live(auto_refresh=False, redirect_stderr=False)
            live.start()
        next_beat = next_view = t0
        next_status = t0 + STATUS_INTERVAL_S
        cpu = np.full(fleet.n, np.nan)
        interrupted = lost = False
        while True:
            now = time.monotonic()
            t = now - t0
            if args.duration is not None and t >= args.duration:
                break
            if not engine.running():
                lost = True
                break
            try:
                if now >= next_beat:
                    batch, cpu = fleet.heartbeats(t)
                    client.send_batch(batch)
                    next_beat += HEARTBEAT_INTERVAL_S
                    if next_beat < now:  # fell behind: skip, do not burst
                        next_beat = now + HEARTBEAT_INTERVAL_S
                    stats.add(watcher.sample(), t, cpu)
                if now >= next_view:
                    vs = watcher.poll()
                    stats.add(watcher.snapshot, t, cpu)
                    if live is not None:
                        live.update(render(vs), refresh=True)
                    elif now >= next_status:
                        print(_status_line(t, vs, client.sent), flush=True)
                        next_status += STATUS_INTERVAL_S
                    next_view = now + VIEW_INTERVAL_S
                time.sleep(max(0.0, min(next_beat, next_view) - time.monotonic()))
            except KeyboardInterrupt:
                interrupted = True
                break
        if live is not None:
            live.stop()
            live = None
        # Let the ingest drain what was queued before counting what it took.
        settle = time.monotonic() + SETTLE_S
        vs = watcher.poll()
        while vs.heartbeats < client.sent and time.monotonic() < settle:
            time.sleep(0.05)
            vs = watcher.poll()
        stats.add(watcher.snapshot, t, cpu)
        print(
            stats.summary(
                name=name,
                ran_s=t,
                tick_ms=cfg.engine.tick_interval_ms,
                dead_after_s=cfg.score.dead_after_s,
                sent=client.sent,
                dropped=client.dropped,
                accepted=vs.accepted,
                rejected=sum(vs.rejects.values()),
            ),
            flush=True,
        )
        if interrupted:
            print("(interrupted)", flush=True)
        if lost:
            print(
                f"shm-engine demo: the engine exited (code {engine.returncode}) "
                f"while the demo ran:\n{engine.log_tail()}",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        if live is not None:
            live.stop()
        client.close()
        watcher.close()
