"""`shm-engine demo`: a real engine, a simulated fleet, the live view, a summary.

The demo runs the product end to end on one machine: it starts ``shm-engine
run`` as a child process (its own segment name, a free loopback port, a
temporary config with the score defaults of SCORING.md), pushes heartbeats for
a simulated fleet through the real ZeroMQ ingest with `HeartbeatClient`
(binary batches), reads the published scores back with `ScoreReader`, and
shows them with the ``top`` view.  At the end it prints what the scores did,
stops the engine with SIGTERM and checks that the segment is gone.

The fleet is made of the node kinds the score exists for (see `KINDS`): nodes
whose CPU is high from garbage collection but serve fast, nodes with a short
queue of huge jobs, nodes flapping across the CPU breaker, nodes that go
silent for longer than ``dead_after_s`` and come back, nodes that fail fast,
and healthy steady nodes.  A traffic spike in the middle grows queues across
the fleet, so global pressure rises.  The timeline scales with ``--duration``;
without one it repeats every `CYCLE_S` seconds until Ctrl-C.

Invariant: the engine child never outlives the demo.  Every exit path goes
through ``finally`` (SIGTERM, then SIGKILL after a grace), and on Linux the
child also gets SIGTERM if the demo itself is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

import numpy as np

from shm_engine.core.config import load_config, render_config, with_overrides
from shm_engine.core.errors import ConfigError, EngineNotRunning, LayoutMismatch
from shm_engine.core.segment import Segment, posix_name, process_alive
from shm_engine.core.segment import unlink as unlink_segment
from shm_engine.core.states import NodeState
from shm_engine.ops.status import engine_ready
from shm_engine.wire.format import (DEFAULT_MAX_FRAME_BYTES, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT,
                                    HAS_TS, NODE_SIZE, RECORD_DTYPE)

__all__ = ["cmd_demo", "Fleet", "KINDS", "EngineProcess"]

HEARTBEAT_INTERVAL_S = 0.2      # every node, every 200 ms, in one binary batch
VIEW_INTERVAL_S = 0.5
STATUS_INTERVAL_S = 3.0         # status lines when there is no live view
CYCLE_S = 60.0                  # timeline period of an unbounded demo
READY_TIMEOUT_S = 90.0          # first start compiles the kernels
STOP_TIMEOUT_S = 20.0
DEMO_TICK_MS = 100


@dataclass(frozen=True)
class Kind:
    key: str
    share: float
    about: str


KINDS = (
    Kind("steady", 0.40, "healthy steady nodes"),
    Kind("gcheavy", 0.15, "CPU high from GC, short fast queue"),
    Kind("bigjobs", 0.10, "queue of 2 huge jobs (40 s each)"),
    Kind("flapping", 0.10, "CPU swings across the breaker (0.98)"),
    Kind("dying", 0.10, "silent > dead_after_s, then back"),
    Kind("failing", 0.15, "fail fast: low CPU, ~90% errors"),
)
_K = {k.key: i for i, k in enumerate(KINDS)}
_FLAGS = HAS_THROUGHPUT | HAS_OKERR | HAS_TAIL | HAS_TS


def _kind_counts(n: int) -> list[int]:
    """Nodes per kind: largest remainder of ``n * share``, each kind at least
    one node when ``n >= len(KINDS)``."""
    raw = [n * k.share for k in KINDS]
    counts = [int(x) for x in raw]
    if n >= len(KINDS):
        counts = [max(c, 1) for c in counts]
    order = sorted(range(len(KINDS)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    i = 0
    while sum(counts) < n:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > n:
        j = max(range(len(counts)), key=lambda i: counts[i])
        counts[j] -= 1
    return counts


# ------------------------------------------------------------------ fleet --
class Fleet:
    """The simulated nodes: per-node constants drawn once from ``seed``,
    heartbeats computed for a time ``t`` (seconds since the fleet started).

    ``period`` is the timeline length (the run's duration, or `CYCLE_S`
    repeating); ``dead_after_s`` sizes the silence of the dying nodes."""

    def __init__(self, n: int, seed: int, period: float, dead_after_s: float):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.period = period
        kinds, names = [], []
        for i, count in enumerate(_kind_counts(n)):
            kinds += [i] * count
            names += [f"{KINDS[i].key}-{j + 1:03d}" for j in range(count)]
        self.n = n
        self.kind = np.array(kinds, np.int64)
        self.names = names
        self.node_bytes = np.array([s.encode() for s in names], f"S{NODE_SIZE}")
        k = self.kind
        u = lambda lo, hi: rng.uniform(lo, hi, n)   # noqa: E731
        is_ = lambda key: k == _K[key]              # noqa: E731
        # Baselines; the kinds override their own columns below.
        self.cpu = u(0.25, 0.55)
        self.mem = u(0.35, 0.60)
        self.queue = u(1.0, 4.0)
        self.job_s = u(0.5, 1.0)
        self.tput = u(6.0, 10.0)
        self.err_rate = u(0.0, 0.02)
        self.p50 = u(40.0, 80.0)
        self.tail = u(1.4, 2.0)                     # p95 / p50
        self.spike_q = np.full(n, 22.0)             # queue added at the spike's peak
        g = is_("gcheavy")
        self.cpu[g] = u(0.88, 0.94)[g]
        self.mem[g] = u(0.50, 0.70)[g]
        self.queue[g] = u(0.0, 1.0)[g]
        self.job_s[g] = u(0.03, 0.06)[g]
        self.tput[g] = u(30.0, 45.0)[g]
        self.p50[g] = u(8.0, 15.0)[g]
        self.tail[g] = u(1.3, 1.6)[g]
        self.spike_q[g] = 3.0
        b = is_("bigjobs")
        self.cpu[b] = u(0.20, 0.35)[b]
        self.mem[b] = u(0.30, 0.50)[b]
        self.queue[b] = 2.0
        self.job_s[b] = 40.0
        self.tput[b] = 0.05
        self.p50[b] = 38_000.0
        self.tail[b] = 1.3
        self.spike_q[b] = 1.0
        f = is_("failing")
        self.cpu[f] = u(0.05, 0.15)[f]
        self.mem[f] = u(0.20, 0.30)[f]
        self.queue[f] = 0.0
        self.job_s[f] = u(0.01, 0.02)[f]
        self.tput[f] = u(150.0, 200.0)[f]
        self.err_rate[f] = u(0.85, 0.95)[f]
        self.p50[f] = u(1.0, 3.0)[f]
        self.tail[f] = 1.2
        self.spike_q[f] = 0.0
        # Flapping nodes cross max_cpu for 2 heartbeats, then stay clear for 2.
        self.flap_phase = rng.integers(0, 4, n)
        # Dying nodes: silent from `die_at` for `silence_s`, staggered.
        d = is_("dying")
        self.silence_s = min(dead_after_s + 2.0, 0.6 * period)
        self.die_at = np.full(n, np.inf)
        self.die_at[d] = 0.15 * period + u(0.0, min(1.0, 0.05 * period))[d]
        self.beat = 0

    # The spike: queues ramp up from 40% of the timeline, hold, ramp down by 65%.
    def spike(self, t: float) -> float:
        x = (t % self.period) / self.period
        ramp = 0.05
        if x < 0.40 or x > 0.65:
            return 0.0
        return min(1.0, (x - 0.40) / ramp, (0.65 - x) / ramp)

    def in_spike(self, t: float) -> bool:
        return self.spike(t) > 0.0

    def silent(self, t: float) -> np.ndarray:
        x = t % self.period
        return (x >= self.die_at) & (x < self.die_at + self.silence_s)

    def heartbeats(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(RECORD_DTYPE batch of the nodes sending at ``t``, their cpu for
        all nodes).  Call once per heartbeat round."""
        rng, n, k = self.rng, self.n, self.kind
        sp = self.spike(t)
        noise = rng.normal(0.0, 1.0, (3, n))
        cpu = np.clip(self.cpu + 0.02 * noise[0] + 0.15 * sp * (self.spike_q > 5), 0.0, 0.97)
        flapping = k == _K["flapping"]
        over = ((self.beat + self.flap_phase) // 2) % 2 == 0
        cpu = np.where(flapping, np.where(over, 0.99, 0.55), cpu)
        mem = np.clip(self.mem + 0.01 * noise[1], 0.0, 0.94)
        queue = np.maximum(0.0, self.queue + 0.5 * noise[2] * (self.queue > 0.5)
                           + self.spike_q * sp)
        queue[k == _K["bigjobs"]] = 2.0 + self.spike_q[k == _K["bigjobs"]] * sp
        requests = rng.poisson(self.tput * HEARTBEAT_INTERVAL_S)
        requests = np.where(k == _K["failing"], np.maximum(requests, 25), requests)
        err = rng.binomial(requests, self.err_rate)
        ok = requests - err
        send = ~self.silent(t)
        m = int(send.sum())
        rec = np.zeros(m, RECORD_DTYPE)
        rec["node"] = self.node_bytes[send]
        rec["cpu"] = cpu[send]
        rec["mem"] = mem[send]
        rec["queue"] = queue[send]
        rec["avg_job_s"] = self.job_s[send]
        rec["throughput"] = self.tput[send]
        rec["ok"] = ok[send]
        rec["err"] = err[send]
        rec["p50_ms"] = self.p50[send]
        rec["p95_ms"] = (self.p50 * self.tail)[send]
        rec["ts"] = time.time()
        rec["flags"] = _FLAGS
        self.beat += 1
        return rec, np.where(send, cpu, np.nan)


# ------------------------------------------------------------ the engine --
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the demo dies (Linux only)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EngineProcess:
    """``shm-engine run`` as a child: start, wait until it publishes, stop."""

    def __init__(self, name: str, config_path: str, log_path: str):
        self.name = name
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "shm_engine", "run", "--name", self.name,
               "--config", self.config_path]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, preexec_fn=_die_with_parent)

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float):
        """Poll the segment until our child is ready (first epoch published,
        ingest socket bound; a segment of the same name made by another
        process does not count), then attach a ``ScoreReader``.  Returns the reader, or None if the child exited first.
        Raises TimeoutError after ``timeout`` seconds."""
        from clients.reader import ScoreReader

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None
            try:
                if self._ready_child():
                    return ScoreReader.attach(self.name)
            except (EngineNotRunning, LayoutMismatch):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"engine {self.name!r} published no tick within {timeout:.0f} s")

    def _ready_child(self) -> bool:
        with Segment.attach(self.name, readonly=True) as seg:
            h = seg.views.header
            return int(h.creator_pid[0]) == self.proc.pid and engine_ready(h)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not exit.  Returns the exit code
        of a clean stop, None if it had to be killed (or never started)."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                return None
        return p.returncode

    def segment_exists(self) -> bool:
        return os.path.exists("/dev/shm" + posix_name(self.name)) if os.path.isdir("/dev/shm") \
            else _segment_exists_posix(self.name)


def _engine_alive(name: str) -> bool:
    try:
        with Segment.attach(name, readonly=True) as seg:
            h = seg.views.header
            return process_alive(int(h.creator_pid[0]), int(h.creator_start[0]))
    except (EngineNotRunning, LayoutMismatch):
        return False


def _segment_exists_posix(name: str) -> bool:
    import posix_ipc
    try:
        posix_ipc.SharedMemory(posix_name(name), 0, read_only=True).close_fd()
    except posix_ipc.ExistentialError:
        return False
    return True


# ------------------------------------------------------------------ stats --
class Stats:
    """What the scores did to each simulated node, sampled from snapshots."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        n = fleet.n
        self.index = {name: i for i, name in enumerate(fleet.names)}
        self.seen = np.zeros((n, len(NodeState)), bool)
        self.samples = 0
        self.pos_sum = np.zeros(n)          # rank by desirability (unranked: last)
        self.cpu_pos_sum = np.zeros(n)      # rank a least-CPU policy would give
        self.score_sum = np.zeros(n)
        self.node_samples = np.zeros(n)
        self.topk = max(1, n // 10)
        self.top_bad = np.zeros(2)          # failing + bigjobs in top-k: desirability
        self.top_bad_cpu = np.zeros(2)      # the same under least-CPU
        self.pressure_before: list[float] = []
        self.pressure_spike: list[tuple[float, float]] = []
        self.pressure_after: list[float] = []
        self.last_epoch = -1

    def add(self, snap, t: float, cpu: np.ndarray) -> None:
        """One snapshot at fleet time ``t``; ``cpu`` per node as last sent
        (NaN for a silent node)."""
        if snap is None or snap.epoch == self.last_epoch:
            return
        self.last_epoch = snap.epoch
        f, n = self.fleet, self.fleet.n
        slot = np.full(n, -1)
        for s, name in enumerate(snap.nodes):
            i = self.index.get(name) if name is not None else None
            if i is not None:
                slot[i] = s
        have = slot >= 0
        if not have.any():
            return
        self.samples += 1
        st = np.where(have, snap.state[np.maximum(slot, 0)], 255).astype(int)
        for s in NodeState:
            self.seen[:, int(s)] |= st == int(s)
        rank_of = {int(s): r for r, s in enumerate(snap.ranked.tolist(), 1)}
        pos = np.array([rank_of.get(int(s), n) if s >= 0 else n for s in slot], float)
        live = ~np.isnan(cpu)
        order = np.argsort(np.where(live, cpu, np.inf), kind="stable")
        cpu_pos = np.empty(n)
        cpu_pos[order] = np.arange(1, n + 1)
        cpu_pos[~live] = n
        self.pos_sum[have] += pos[have]
        self.cpu_pos_sum[have] += cpu_pos[have]
        self.score_sum[have] += snap.score[slot[have]]
        self.node_samples[have] += 1
        bad = [(f.kind == _K["failing"]), (f.kind == _K["bigjobs"])]
        for j, mask in enumerate(bad):
            self.top_bad[j] += int((mask & have & (pos <= self.topk)).sum())
            self.top_bad_cpu[j] += int((mask & have & (cpu_pos <= self.topk)).sum())
        x = (t % f.period) / f.period
        if f.in_spike(t):
            self.pressure_spike.append((snap.pressure, t))
        elif x < 0.40:
            self.pressure_before.append(snap.pressure)
        else:
            self.pressure_after.append(snap.pressure)

    def summary(self, *, name: str, ran_s: float, tick_ms: int, dead_after_s: float,
                sent: int, dropped: int, accepted: int | None, rejected: int | None) -> str:
        f = self.fleet
        ns = np.maximum(self.node_samples, 1)
        mean_pos = self.pos_sum / ns
        mean_cpu_pos = self.cpu_pos_sum / ns
        mean_score = self.score_sum / ns
        out = [f"shm-engine demo: {f.n} nodes for {ran_s:.1f} s on engine {name!r} "
               f"(tick {tick_ms} ms), {self.samples} snapshots", ""]
        hdr = (f"{'kind':<9} {'nodes':>5} {'quarantined':>11} {'dead':>5} {'overloaded':>10} "
               f"{'mean score':>10} {'mean rank':>9}  what it is")
        out += [hdr, "-" * len(hdr)]
        for i, kind in enumerate(KINDS):
            m = (f.kind == i) & (self.node_samples > 0)
            cnt = int((f.kind == i).sum())
            if cnt == 0:
                continue
            q = int(self.seen[m, NodeState.QUARANTINED].sum())
            d = int(self.seen[m, NodeState.DEAD].sum())
            o = int(self.seen[m, NodeState.OVERLOADED].sum())
            sc = mean_score[m].mean() if m.any() else 0.0
            rk = mean_pos[m].mean() if m.any() else float("nan")
            out.append(f"{kind.key:<9} {cnt:>5} {q:>11} {d:>5} {o:>10} {sc:>10.3f} "
                       f"{rk:>9.1f}  {kind.about}")
        out.append(f"(nodes of the kind seen in that state at least once; rank 1 is best, "
                   f"unranked counts as {f.n})")
        if f.silence_s < dead_after_s:
            out.append(f"(the dying nodes were silent {f.silence_s:.1f} s < dead_after_s "
                       f"{dead_after_s:g} s: run longer, e.g. --duration 30, to see them die)")
        out.append("")
        sampled = self.node_samples > 0
        if sampled.any():
            best = [i for i in np.argsort(mean_pos, kind="stable") if sampled[i]][:5]
            out.append("best ranked on average: " + ", ".join(
                f"{f.names[i]} ({mean_pos[i]:.1f})" for i in best))
        g = (f.kind == _K["gcheavy"]) & sampled
        if g.any():
            a, b = mean_pos[g].mean(), mean_cpu_pos[g].mean()
            verdict = "higher" if a < b else "not higher"
            out.append(f"GC-heavy nodes: mean rank {a:.1f} by desirability vs {b:.1f} under a "
                       f"least-CPU policy (of {f.n}): desirability ranks them {verdict}")
        if self.samples:
            tb, tc = self.top_bad / self.samples, self.top_bad_cpu / self.samples
            out.append(f"top {self.topk}, on average: least-CPU holds {tc[0]:.1f} failing and "
                       f"{tc[1]:.1f} huge-job nodes; desirability holds {tb[0]:.1f} and "
                       f"{tb[1]:.1f}")

        def mean(xs):
            return f"{sum(xs) / len(xs):.3f}" if xs else "-"
        if self.pressure_spike:
            peak, at = max(self.pressure_spike)
            out.append(f"pressure: {mean(self.pressure_before)} before the spike, peak "
                       f"{peak:.3f} during it (t={at:.1f} s), {mean(self.pressure_after)} after")
        else:
            out.append(f"pressure: {mean(self.pressure_before)} (the run ended before the spike)")
        acc = "?" if accepted is None else f"{accepted:,}"
        rej = "?" if rejected is None else f"{rejected:,}"
        out.append(f"heartbeats: {sent:,} sent, {acc} accepted by the engine, {rej} rejected, "
                   f"{dropped:,} dropped by the client")
        return "\n".join(out)


# ------------------------------------------------------------------- main --
def _write_config(args, directory: str, port: int, n: int):
    cfg = load_config(args.config)
    if cfg.ingest.curve.enabled:
        raise ConfigError("ingest.curve: the demo's simulated fleet cannot use CURVE; "
                          "give a config without [ingest.curve]")
    over = {"ingest.bind": f"tcp://127.0.0.1:{port}"}
    if args.config is None:
        over["engine.tick_interval_ms"] = DEMO_TICK_MS
        over["engine.capacity"] = max(1024, 2 * n)
    elif cfg.engine.capacity < n:
        raise ConfigError(f"engine.capacity = {cfg.engine.capacity} is smaller than "
                          f"--nodes {n}")
    cfg = with_overrides(cfg, over)
    path = os.path.join(directory, "engine.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_config(cfg))
    return cfg, path


def _status_line(t: float, vs, sent: int) -> str:
    c = vs.counts
    states = " ".join(f"{k} {c.get(k, 0)}" for k in
                      ("healthy", "degraded", "overloaded", "quarantined", "dead"))
    return (f"t={t:6.1f}s epoch {vs.epoch:>5} | {vs.registered} nodes: {states} | "
            f"pressure {vs.pressure:.3f} | heartbeats sent {sent:,} accepted {vs.accepted:,}")


def cmd_demo(args) -> int:
    """``shm-engine demo [--nodes N] [--duration S] [--seed N] [--name NAME]
    [--config FILE] [--no-view]``."""
    if args.nodes < 1:
        print("shm-engine demo: --nodes must be >= 1", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("shm-engine demo: --duration must be > 0", file=sys.stderr)
        return 2
    name = args.name or f"demo-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        posix_name(name)
    except ValueError as err:
        print(f"shm-engine demo: --name: {err}", file=sys.stderr)
        return 2
    if _engine_alive(name):
        print(f"shm-engine demo: engine {name!r} is already running; give another --name",
              file=sys.stderr)
        return 2
    view = not args.no_view and sys.stdout.isatty()
    if view:
        try:
            import rich  # noqa: F401
        except ImportError:
            print("shm-engine demo: rich is not installed (pip install 'shm-engine[top]'); "
                  "printing status lines instead", file=sys.stderr)
            view = False

    def on_term(signum, frame):
        raise KeyboardInterrupt
    # SIGTERM, and SIGHUP (the terminal went away), stop the demo like Ctrl-C.
    old_handlers = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGHUP)}
    workdir = tempfile.mkdtemp(prefix="shm-engine-demo-")
    engine = None
    try:
        reader = None
        for attempt in range(3):
            port = _free_port()
            cfg, cfg_path = _write_config(args, workdir, port, args.nodes)
            engine = EngineProcess(name, cfg_path, os.path.join(workdir, "engine.log"))
            print(f"starting engine {name!r} (ingest tcp://127.0.0.1:{port}, "
                  f"tick {cfg.engine.tick_interval_ms} ms); the first run compiles the "
                  "scoring kernels, which can take a minute ...", file=sys.stderr)
            engine.start()
            reader = engine.wait_ready(READY_TIMEOUT_S)
            if reader is not None:
                break
            tail = engine.log_tail()
            if "ingest_bind_failed" in tail and attempt < 2:
                continue  # the port was taken between our probe and the bind
            print(f"shm-engine demo: the engine exited with code {engine.proc.returncode} "
                  f"before it was ready:\n{tail}", file=sys.stderr)
            return 1
        reader.close()
        code = _run(args, name, cfg, port, view, engine)
        return _stop(engine, code)
    except TimeoutError as err:
        print(f"shm-engine demo: {err}\n{engine.log_tail() if engine else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shm-engine demo: interrupted", file=sys.stderr)
        return 130
    finally:
        try:
            if engine is not None and engine.proc is not None and engine.proc.poll() is None:
                engine.stop()
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            shutil.rmtree(workdir, ignore_errors=True)


def _stop(engine: EngineProcess, code: int) -> int:
    rc = engine.stop()
    if rc != 0:
        print(f"shm-engine demo: the engine did not stop cleanly (exit {rc}):\n"
              f"{engine.log_tail()}", file=sys.stderr)
        if engine.segment_exists() and not _engine_alive(engine.name):
            unlink_segment(engine.name)     # ours, and its creator is gone
            print(f"shm-engine demo: removed the stale segment {posix_name(engine.name)}",
                  file=sys.stderr)
        return 1
    if engine.segment_exists():
        print(f"shm-engine demo: segment {posix_name(engine.name)} left behind after the "
              "engine stopped", file=sys.stderr)
        return 1
    print(f"engine stopped cleanly (exit 0), segment {posix_name(engine.name)} removed")
    return code


def _run(args, name: str, cfg, port: int, view: bool, engine: EngineProcess) -> int:
    """Drive the fleet until --duration or Ctrl-C; print the summary."""
    from clients.heartbeat import HeartbeatClient

    from shm_engine.ops.topview import Watcher

    period = args.duration if args.duration is not None else CYCLE_S
    fleet = Fleet(args.nodes, args.seed, period, cfg.score.dead_after_s)
    stats = Stats(fleet)
    watcher = Watcher(name, rows=25)
    client = HeartbeatClient(f"tcp://127.0.0.1:{port}",
                             max_frame_bytes=min(cfg.ingest.max_frame_bytes,
                                                 DEFAULT_MAX_FRAME_BYTES))
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
                    if next_beat < now:          # fell behind: skip, do not burst
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
        settle = time.monotonic() + 2.0
        vs = watcher.poll()
        while (vs.heartbeats < client.sent and time.monotonic() < settle):
            time.sleep(0.05)
            vs = watcher.poll()
        stats.add(watcher.snapshot, t, cpu)
        print(stats.summary(name=name, ran_s=t, tick_ms=cfg.engine.tick_interval_ms,
                            dead_after_s=cfg.score.dead_after_s, sent=client.sent,
                            dropped=client.dropped, accepted=vs.accepted,
                            rejected=sum(vs.rejects.values())), flush=True)
        if interrupted:
            print("(interrupted)", flush=True)
        if lost:
            print(f"shm-engine demo: the engine exited (code {engine.proc.returncode}) "
                  f"while the demo ran:\n{engine.log_tail()}", file=sys.stderr)
            return 1
        return 0
    finally:
        if live is not None:
            live.stop()
        client.close()
        watcher.close()
