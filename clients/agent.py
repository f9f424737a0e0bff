"""The node agent: sample this machine, merge the node service's job stats,
send one heartbeat per interval.

Machine metrics come from psutil: ``cpu`` (busy fraction since the previous
sample), ``mem`` (used fraction) and ``io`` (busy fraction of the busiest
disk, from ``busy_time`` deltas; omitted where psutil has no ``busy_time`` and
on the first heartbeat, which has no delta yet).

Queue and job statistics only the node's own service knows.  The service
hands them to the agent through a local API (docs/agent.md): JSON objects on
a ZeroMQ PUSH socket connected to the agent's PULL socket at ``--listen``, or
`report` from Python.  Latest value wins for ``queue``, ``avg_job_s``,
``slots``, ``throughput`` and the ``p50_ms``/``p95_ms`` pair; ``ok``/``err``
add up between heartbeats.  Until the service reports, ``queue`` and
``avg_job_s`` are sent as 0 and ``slots`` is left out (the engine takes 1).

Invariants: a service message never crashes the agent (a bad field is logged,
at a bounded rate, and ignored; the message's good fields are kept); every
heartbeat the agent builds is valid for the engine (it is checked by
`HeartbeatClient` with the engine's own validation); sending never blocks
(a dropped heartbeat is counted, logged at a bounded rate, and its ok/err
counts carry over to the next one).

Who may report.  Whoever can connect to the report socket speaks for the
node's load, so by default it is a Unix socket in a directory only the
agent's user can enter (`private_dir`: created 0700 by the agent, its owner
and mode checked; a directory of that name made by another user is refused,
not used).  An explicit ``--listen`` is the operator's choice: a
``tcp://127.0.0.1`` port is open to every local user.  However fast reports
come, the agent handles at most ``max_reports_per_interval`` of them per
heartbeat interval (the rest wait in the socket's bounded queue), so a flood
costs bounded CPU and never delays a heartbeat.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import zmq

from clients.heartbeat import HeartbeatClient, InvalidHeartbeat
from shm_engine.wire.format import SLOTS_MAX, U32_MAX

__all__ = [
    "Agent",
    "Reporter",
    "report",
    "check_report",
    "default_listen",
    "private_dir",
    "cmd_agent",
    "REPORT_FIELDS",
]

PRIVATE_DIR_NAME = "shm-engine-agent"
LISTEN_SOCKET_NAME = "report.sock"
MAX_IPC_PATH_BYTES = 107  # Linux sun_path holds 108 bytes with the NUL
MAX_REPORT_BYTES = 4096
#: Service reports handled per heartbeat interval at most (a flood waits).
MAX_REPORTS_PER_INTERVAL = 1000
LOG_EVERY_S = 10.0  # at most one line per problem kind per this many seconds

#: Fields a service may report, with their meaning (docs/agent.md).
REPORT_FIELDS = {
    "queue": "jobs waiting on the node (>= 0)",
    "avg_job_s": "mean service time of a job, seconds (>= 0)",
    "slots": f"jobs the node runs at once (integer 1..{SLOTS_MAX})",
    "throughput": "jobs completed per second (>= 0)",
    "ok": "jobs that succeeded since the previous report (integer >= 0)",
    "err": "jobs that failed since the previous report (integer >= 0)",
    "p50_ms": "median job latency, ms (> 0, with p95_ms)",
    "p95_ms": "95th percentile job latency, ms (>= p50_ms, with p50_ms)",
}


def private_dir() -> str:
    """The agent's private directory, created if missing:
    ``$XDG_RUNTIME_DIR/shm-engine-agent`` when a runtime directory is set,
    else ``<temp dir>/shm-engine-agent-<uid>``.

    Raises PermissionError if it exists but is not a directory of this user
    (another user made it first, or it is a symlink); one of ours with a
    wider mode is narrowed to 0700."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime) and os.path.isdir(runtime):
        path = os.path.join(runtime, PRIVATE_DIR_NAME)
    else:
        path = os.path.join(tempfile.gettempdir(), f"{PRIVATE_DIR_NAME}-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)  # never follow a link planted in a shared directory
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(
            f"{path} is not a directory of this user (owner uid {st.st_uid}, "
            f"mode {stat.filemode(st.st_mode)}): another user may have made "
            "it; remove it, or give --listen"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def default_listen() -> str:
    """``ipc://<private_dir()>/report.sock``: only this user can report.

    Raises PermissionError as `private_dir` does, ValueError if the path
    is too long for a Unix socket (give --listen)."""
    path = os.path.join(private_dir(), LISTEN_SOCKET_NAME)
    if len(path.encode()) > MAX_IPC_PATH_BYTES:
        raise ValueError(
            f"report socket path {path!r} is longer than {MAX_IPC_PATH_BYTES} bytes; give --listen"
        )
    return "ipc://" + path


# ------------------------------------------------------------- validation --
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def check_report(obj: Any) -> tuple[dict, list[str]]:
    """Validate one service report.  Returns ``(good, problems)``: the fields
    that may be used, and one message per ignored field.  Never raises."""
    if not isinstance(obj, dict):
        return {}, [f"report is {type(obj).__name__}, not a JSON object"]
    good: dict = {}
    problems: list[str] = []
    for key, value in obj.items():
        if key not in REPORT_FIELDS:
            problems.append(f"unknown field {str(key)[:40]!r}")
            continue
        if key in ("ok", "err", "slots"):
            low, high = (1, SLOTS_MAX) if key == "slots" else (0, U32_MAX)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{key}={value!r:.40} is not an integer in [{low}, {high}]")
            else:
                good[key] = int(value)
            continue
        x = _number(value)
        if x is None:
            problems.append(f"{key}={value!r:.40} is not a finite number")
        elif key in ("p50_ms", "p95_ms") and x <= 0:
            problems.append(f"{key}={x!r} must be > 0")
        elif x < 0:
            problems.append(f"{key}={x!r} must be >= 0")
        else:
            good[key] = x
    if ("p50_ms" in good) != ("p95_ms" in good):
        have = "p50_ms" if "p50_ms" in good else "p95_ms"
        if ("p50_ms" in obj) and ("p95_ms" in obj):
            problems.append(f"{have} ignored: its partner was invalid")
        else:
            problems.append(f"{have} ignored: p50_ms and p95_ms go together")
        good.pop(have)
    elif "p50_ms" in good and good["p95_ms"] < good["p50_ms"]:
        problems.append(f"p95_ms={good['p95_ms']!r} < p50_ms={good['p50_ms']!r}: both ignored")
        del good["p50_ms"], good["p95_ms"]
    return good, problems


# ------------------------------------------------------------ the service --
class Reporter:
    """A service's side of the local API: a PUSH socket to the agent.

    ``report(**stats)`` validates (raises ValueError on a bad field: a bug in
    the caller) and sends without blocking; False if the agent is not taking
    reports (it is not running, or is far behind)."""

    def __init__(self, endpoint: str, *, linger_ms: int = 500):
        self.endpoint = endpoint
        self._pid = os.getpid()
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, 100)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        self._sock.connect(endpoint)

    def report(self, **stats: Any) -> bool:
        good, problems = check_report(stats)
        if problems:
            raise ValueError(f"report to {self.endpoint}: " + "; ".join(problems))
        assert self._sock is not None, "report() after close()"
        try:
            self._sock.send(json.dumps(good).encode(), zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        if self._sock is None:
            return
        if os.getpid() == self._pid:
            self._sock.close()
            self._ctx.term()
        self._sock = None


_reporters: dict[tuple[int, str], Reporter] = {}


def report(endpoint: str, **stats: Any) -> bool:
    """Hand the node's job stats to the agent listening at ``endpoint``, e.g.
    ``report("tcp://127.0.0.1:7711", queue=3, avg_job_s=1.8, ok=120, err=1)``.

    One socket per endpoint and process is kept open between calls."""
    key = (os.getpid(), endpoint)
    rep = _reporters.get(key)
    if rep is None:
        rep = _reporters[key] = Reporter(endpoint)
    return rep.report(**stats)


@atexit.register
def _close_reporters() -> None:
    for rep in _reporters.values():
        rep.close()
    _reporters.clear()


# --------------------------------------------------------------- sampling --
class MachineSampler:
    """psutil samples; ``sample()`` -> ``{"cpu", "mem"[, "io"]}``."""

    def __init__(self):
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(None)  # the first call only starts the interval
        self._io_prev = self._io_busy()

    def _io_busy(self) -> tuple[float, dict] | None:
        try:
            disks = self._psutil.disk_io_counters(perdisk=True)
        except (OSError, RuntimeError):
            return None
        if not disks:
            return None
        busy = {d: c.busy_time for d, c in disks.items() if hasattr(c, "busy_time")}
        return (time.monotonic(), busy) if busy else None

    def sample(self) -> dict:
        ps = self._psutil
        out = {
            "cpu": min(max(ps.cpu_percent(None) / 100.0, 0.0), 1.0),
            "mem": min(max(ps.virtual_memory().percent / 100.0, 0.0), 1.0),
        }
        cur = self._io_busy()
        prev, self._io_prev = self._io_prev, cur
        if cur is not None and prev is not None:
            dt_ms = (cur[0] - prev[0]) * 1000.0
            if dt_ms > 0:
                deltas = [cur[1][d] - prev[1][d] for d in cur[1] if d in prev[1]]
                if deltas:
                    out["io"] = min(max(max(deltas) / dt_ms, 0.0), 1.0)
        return out


# ------------------------------------------------------------------ agent --
class _Throttle:
    """Allow one log line per key per ``every`` seconds; count the rest."""

    def __init__(self, every: float):
        self.every = every
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) >= self.every:
            self._last[key] = now
            return True
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False


def _stderr_log(line: str) -> None:
    t = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
    try:
        sys.stderr.write(f"{stamp} {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Agent:
    """One node's agent.

    ``endpoint``: the engine's ingest.  ``listen``: where the local service
    reports (None: no service API).  ``sampler``: an object with ``sample()
    -> dict`` of ``cpu``/``mem``/``io`` (default: psutil).  ``client``: a
    `HeartbeatClient` to send with (default: one on ``endpoint``).
    """

    def __init__(
        self,
        endpoint: str,
        node_id: str | None = None,
        *,
        listen: str | None = None,
        interval: float = 1.0,
        sampler: Any = None,
        client: HeartbeatClient | None = None,
        curve: Any = None,
        log: Callable[[str], None] = _stderr_log,
        max_reports_per_interval: int = MAX_REPORTS_PER_INTERVAL,
    ):
        if interval <= 0:
            raise ValueError(f"interval={interval!r} must be > 0")
        if max_reports_per_interval < 1:
            raise ValueError(f"max_reports_per_interval={max_reports_per_interval!r} must be >= 1")
        self.max_reports_per_interval = max_reports_per_interval
        self._report_budget = max_reports_per_interval
        self.reports_deferred = 0  # polls that left reports queued for the next interval
        self.node_id = node_id or socket.gethostname()
        self.interval = interval
        self.log = log
        self._throttle = _Throttle(LOG_EVERY_S)
        self.sampler = sampler if sampler is not None else MachineSampler()
        self.client: HeartbeatClient | None = (
            client if client is not None else HeartbeatClient(endpoint, curve=curve)
        )
        self._own_client = client is None
        # Service stats: latest values, and ok/err accumulated since the last
        # heartbeat that was queued.
        self.service: dict = {}
        self.ok = 0
        self.err = 0
        self.okerr_reported = False
        self.reports = 0
        self.bad_reports = 0
        self.heartbeats = 0
        self._ctx = self._pull = None
        self.listen_endpoint = None
        if listen is not None:
            self._ctx = zmq.Context()
            try:
                self._pull = self._ctx.socket(zmq.PULL)
                self._pull.setsockopt(zmq.LINGER, 0)
                self._pull.setsockopt(zmq.RCVHWM, 1000)
                self._pull.setsockopt(zmq.MAXMSGSIZE, MAX_REPORT_BYTES)
                self._pull.bind(listen)
                self.listen_endpoint = self._pull.getsockopt_string(zmq.LAST_ENDPOINT)
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------ service input --
    def _problem(self, key: str, text: str) -> None:
        if self._throttle.allow(key):
            n = self._throttle.suppressed.pop(key, 0)
            more = f" ({n} similar suppressed)" if n else ""
            self.log(f"WARN {text}{more}")

    def handle_report(self, data: bytes) -> None:
        """Merge one raw service message (bad fields logged and ignored)."""
        good: dict
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            problems, good = ["not valid UTF-8 JSON"], {}
        else:
            good, problems = check_report(obj)
        self.reports += 1
        if problems:
            self.bad_reports += 1
            self._problem("report", "service_report_ignored " + "; ".join(problems)[:300])
        if "ok" in good or "err" in good:
            self.okerr_reported = True
            self.ok = min(self.ok + good.pop("ok", 0), U32_MAX)
            self.err = min(self.err + good.pop("err", 0), U32_MAX)
        self.service.update(good)

    def poll_reports(self, timeout_s: float = 0.0) -> int:
        """Drain service messages, waiting up to ``timeout_s`` for the first,
        within what is left of this interval's ``max_reports_per_interval``
        (each heartbeat sent renews it).  Returns how many were handled."""
        if self._pull is None or self._report_budget <= 0:
            if timeout_s > 0:
                time.sleep(timeout_s)
            return 0
        n = 0
        if not self._pull.poll(max(0, int(timeout_s * 1000))):
            return 0
        while n < self._report_budget:
            try:
                data = self._pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.handle_report(data)
            n += 1
        self._report_budget -= n
        if self._report_budget <= 0:
            self.reports_deferred += 1
            self._problem(
                "flood",
                f"service_reports_deferred more than "
                f"{self.max_reports_per_interval} reports in one interval; "
                "the rest wait for the next",
            )
        return n

    # -------------------------------------------------------- heartbeat --
    def build(self) -> dict:
        """The next heartbeat's fields (``node`` included)."""
        hb: dict[str, Any] = {"node": self.node_id}
        hb.update(self.sampler.sample())
        s = self.service
        hb["queue"] = s.get("queue", 0.0)
        hb["avg_job_s"] = s.get("avg_job_s", 0.0)
        if "slots" in s:
            hb["slots"] = s["slots"]
        if "throughput" in s:
            hb["throughput"] = s["throughput"]
        if self.okerr_reported:
            hb["ok"], hb["err"] = self.ok, self.err
        if "p50_ms" in s:
            hb["p50_ms"], hb["p95_ms"] = s["p50_ms"], s["p95_ms"]
        hb["ts"] = time.time()
        return hb

    def send_once(self) -> bool:
        """Build and send one heartbeat; True if queued.  Never blocks."""
        self._report_budget = self.max_reports_per_interval
        hb = self.build()
        node = hb.pop("node")
        self.heartbeats += 1
        client = self.client
        assert client is not None, "send_once() after close()"
        try:
            queued = client.send(node, **hb)
        except InvalidHeartbeat as err:
            # Only a sampler bug can get here (service input is checked).
            self._problem("invalid", f"heartbeat_invalid {err}")
            return False
        if queued:
            self.ok = self.err = 0
        else:
            self._problem(
                "drop",
                f"heartbeats_dropped total={client.dropped} (the engine is unreachable or slow)",
            )
        return queued

    def run(self, count: int | None = None, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Send a heartbeat every ``interval`` (the first after one interval,
        so CPU is measured over a full one), serving service reports in
        between.  Stops after ``count`` heartbeats or when ``should_stop()``.
        Returns the number sent."""
        next_at = time.monotonic() + self.interval
        done = 0
        while (count is None or done < count) and not should_stop():
            wait = next_at - time.monotonic()
            if wait > 0:
                self.poll_reports(min(wait, 0.25))
                continue
            self.poll_reports(0)
            self.send_once()
            done += 1
            next_at += self.interval
            if next_at < time.monotonic():  # fell behind: no burst to catch up
                next_at = time.monotonic() + self.interval
        return done

    def close(self) -> None:
        if self._pull is not None:
            self._pull.close()
            self._pull = None
            # libzmq leaves the socket file of an ipc:// bind behind.
            if self.listen_endpoint and self.listen_endpoint.startswith("ipc://"):
                try:
                    os.unlink(self.listen_endpoint[len("ipc://") :])
                except OSError:
                    pass
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._own_client and self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -------------------------------------------------------------------- cli --
def cmd_agent(args) -> int:
    """``shm-engine agent --endpoint E [--node-id ID] [--interval S]
    [--listen L] [--count N]``."""

    def fail(msg: str) -> int:
        print(f"shm-engine agent: {msg}", file=sys.stderr)
        return 2

    if bool(args.curve_server_key) != bool(args.curve_client_key):
        return fail("give both --curve-server-key and --curve-client-key, or neither")
    curve = None
    if args.curve_server_key:
        from clients.heartbeat import CurveKeys

        try:
            curve = CurveKeys.from_files(args.curve_server_key, args.curve_client_key)
        except (OSError, ValueError) as err:
            return fail(f"cannot load CURVE keys: {err}")
    if args.interval <= 0:
        return fail(f"--interval {args.interval} must be > 0")
    if args.count is not None and args.count < 0:
        return fail(f"--count {args.count} must be >= 0")
    try:
        import psutil  # noqa: F401
    except ImportError:
        return fail("needs psutil (pip install 'shm-engine[agent]')")
    node_id = args.node_id or socket.gethostname()
    from shm_engine.wire.jsondecode import check_heartbeat

    _rec, _labels, reason, detail = check_heartbeat(
        {"node": node_id, "cpu": 0.0, "mem": 0.0, "queue": 0.0, "avg_job_s": 0.0}
    )
    if reason is not None:
        return fail(f"node id {node_id!r} is not valid ({detail}); give --node-id")
    try:
        listen = args.listen or default_listen()
    except (OSError, ValueError) as err:
        return fail(f"no private directory for the report socket: {err}")
    try:
        agent = Agent(args.endpoint, node_id, listen=listen, interval=args.interval, curve=curve)
    except zmq.ZMQError as err:
        return fail(f"cannot use --endpoint {args.endpoint!r} / --listen {listen!r}: {err}")

    stop = []

    def on_term(signum, frame):
        stop.append(signum)

    old = signal.signal(signal.SIGTERM, on_term)
    agent.log(
        f"INFO agent_started node={node_id} endpoint={args.endpoint} "
        f"listen={agent.listen_endpoint} interval_s={args.interval}"
    )
    try:
        agent.run(args.count, should_stop=lambda: bool(stop))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        client = agent.client
        assert client is not None  # the agent is closed only below
        agent.log(
            f"INFO agent_stopped heartbeats={agent.heartbeats} sent={client.sent} "
            f"dropped={client.dropped} reports={agent.reports} "
            f"bad_reports={agent.bad_reports}"
        )
        agent.close()
    return 0
