"""`shm-engine run`: the supervisor process and its children.

The supervisor owns the segments' lifetime: it creates the scores segment
``/NAME``, the claims segment ``/NAME.claims`` and the event log
``/NAME.events`` (O_CREAT|O_EXCL each,
reclaiming a stale one; modes ``[engine] shm_mode`` and ``[claims]
shm_mode``), starts the ingest and the tick worker as ``spawn`` children,
restarts a child that dies, and on SIGTERM/SIGINT stops both and unlinks
both segments.  The children hold no state of their own: the registry
and the heartbeat table (ingest) and the carried node state (tick worker) live
in the segment, so a restarted child adopts them.

Invariants:
- At most one tick worker runs at a time: a new one is started only after the
  previous one has exited (its sentinel fired), because the latch allows a
  single writer.  The same holds for the ingest.
- Each segment is unlinked on every exit path of `Supervisor.run` once it
  was created here (``try/finally``); only SIGKILL leaves them behind, and
  the next ``run`` reclaims them as stale (their creator pid is dead).
- A child that exits with `EXIT_FATAL` (`shm_engine.core.runtime`, e.g. the ingest cannot bind) is
  not restarted: the engine shuts down and ``run`` returns 1.

With ``[feed] bind`` a third child, the feed (`shm_engine.feed.publisher`),
follows the latch and publishes every epoch to mirrors on other hosts; it is
supervised like the other two (restarts, watchdog, warm spare) and only reads
the scores (it writes its header words, and the claims of mirrors' leases).

The HTTP child (``[http] bind`` set, and the ``http`` extra installed;
otherwise the engine runs without it and logs ``http_unavailable``) is
supervised like the others (`shm_engine.http.server`): restarted with
the same backoff, watched through ``http_alive_mono``, and a fatal exit of
it (its address taken, its TLS files refused) stops the engine.  Before it
has bound, ``http_endpoint`` holds the configured URL; ``ready`` then also
waits for its first beat, and the line before ``ready`` on stdout is
``http endpoint URL`` with the port it bound.

Restart policy: exponential backoff from ``engine.restart_backoff_min_s``,
doubling up to ``restart_backoff_max_s``; a child that ran for
`STABLE_AFTER_S` before dying starts again from the minimum.

Warm spares: a child's start is dominated by the interpreter importing numpy,
numba and pyzmq and loading the kernels (about a second on a busy machine,
several under heavy load), so each role keeps one *spare* process that has
done all of that and waits, without touching the segment or the socket, for
a ``go`` on its pipe (it says ``warm`` on the pipe when ready; the supervisor
logs ``spare_ready`` with the time it took).  A restart hands the role to
the spare, warm or still warming (once warm, scoring resumes within the
restart delay plus about one tick) and starts a new spare in the background.

SIGHUP reloads the configuration file (`shm_engine.ops.reload`): the
supervisor validates the whole file, hands changed ``[score]`` parameters
to the tick worker through the scores header (from its next tick) and
reports the other changed keys as needing a restart.  Children it starts
later get the configuration in effect.  SIGHUP also reloads the
ingest's key and peer bindings: the supervisor forwards it
to the running ingest once that ingest has beaten (a starting one reads the
files anyway), and ignores it otherwise (a SIGHUP must not stop the engine).
A spare exits when its parent dies or its pipe closes; a dead spare just
means a cold start.  The single-writer invariant is unchanged: the
spare gets ``go`` only after the previous child has exited.

Output: one line per event on stderr (`shm_engine.core.runtime.log_event`); on
stdout the ingest endpoint at start and ``ready`` once the first epoch is
published *and* the ingest socket is bound (for scripts that wait on it); a
``*`` port is printed again, resolved, just before ``ready``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.config import Config, check_files, load_config, with_overrides
from shm_engine.core.events import EventSegment
from shm_engine.core.runtime import EXIT_FATAL, log_event
from shm_engine.core.segment import Segment
from shm_engine.ops.reload import Reloader
from shm_engine.ops.status import engine_ready

__all__ = ["Supervisor", "cmd_run", "STABLE_AFTER_S", "DEFAULT_TARGETS"]

STABLE_AFTER_S = 30.0  # a child that ran this long resets its backoff
STOP_GRACE_S = 3.0  # after setting `stopping`, before SIGTERM
STOP_JOIN_TIMEOUT_S = 5.0  # after SIGTERM, before SIGKILL
SPARE_POLL_S = 0.1  # a waiting spare checks its parent this often
DEFAULT_TARGETS = {
    "ingest": "shm_engine.ingest.process:ingest_main",
    "ticker": "shm_engine.tick.ticker:ticker_main",
    "feed": "shm_engine.feed.publisher:feed_main",  # only with [feed] bind
    "http": "shm_engine.http.server:http_main",
}


def _child_main(target: str, name: str, config: Config, parent_pid: int, gate=None) -> None:
    """Spawn entry of both children: the exit code is ``target``'s return value.

    With ``gate`` (its end of a pipe) the process is a warm spare: it
    imports ``target``'s module, runs the module's ``warm_up()`` if it has
    one, answers ``warm`` on the pipe, and waits for ``go`` before running
    ``target``; anything else on the pipe, its end, or the parent's death
    makes it exit 0."""
    # Ctrl-C reaches the whole process group; the supervisor alone decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    module, _, func = target.partition(":")
    mod = importlib.import_module(module)
    fn = getattr(mod, func)
    if gate is not None:
        if callable(getattr(mod, "warm_up", None)):
            mod.warm_up()
        try:
            gate.send("warm")
        except OSError:
            pass  # its end is closed: a ``go`` may be waiting all the same
        while not gate.poll(SPARE_POLL_S):
            if os.getppid() != parent_pid:
                sys.exit(0)
        try:
            if gate.recv() != "go":
                sys.exit(0)
        except (EOFError, OSError):
            sys.exit(0)
        gate.close()
    sys.exit(int(fn(name, config, parent_pid) or 0))


def _exit_text(code: int | None) -> str:
    """An exit code as logged: ``signal_9`` for a death by signal."""
    return f"signal_{-code}" if code is not None and code < 0 else str(code)


@dataclass
class _Child:
    role: str
    target: str
    proc: multiprocessing.process.BaseProcess | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None
    starts: int = 0
    history: list = field(default_factory=list)
    spare: multiprocessing.process.BaseProcess | None = None
    spare_gate: multiprocessing.connection.Connection | None = None  # our end
    spare_started: float = 0.0
    spare_warm: bool = False  # it said ``warm`` (or died: nothing to wait for)


class Supervisor:
    """Runs engine ``name``.  ``run()`` is the whole lifetime; ``targets``
    maps a role (``ingest``, ``ticker``) to ``"module:function"`` (tests
    substitute their own).  ``config_path`` and ``overrides``: where
    ``config`` came from, read again on SIGHUP (`shm_engine.ops.reload`)."""

    def __init__(
        self,
        name: str,
        config: Config,
        *,
        targets: dict[str, str] | None = None,
        log: TextIO | None = None,
        out: TextIO | None = None,
        config_path: str | None = None,
        overrides: dict | None = None,
    ):
        self.name = name
        self.config = config
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.events: EventSegment | None = None
        self.reloader: Reloader | None = None
        self._config_reload_pending = False
        self._log_stream = log if log is not None else sys.stderr
        self._out = out if out is not None else sys.stdout
        self._ctx = multiprocessing.get_context("spawn")
        tg = dict(DEFAULT_TARGETS, **(targets or {}))
        self._http_missing = _http_missing() if config.http.enabled else None
        roles = (
            ("ingest", "ticker")
            + (("feed",) if config.feed.enabled else ())
            + (("http",) if self._http_wanted() else ())
        )
        self.children = {
            role: _Child(role, tg[role], backoff=config.engine.restart_backoff_min_s)
            for role in roles
        }
        self.seg: Segment | None = None
        self.claims: ClaimsSegment | None = None
        self._stop_signal: int | None = None
        self._reload_pending = False
        self._wake_r = self._wake_w = -1
        self._ready = False

    def _http_wanted(self) -> bool:
        """The HTTP child runs when ``[http] bind`` is set and its packages
        are installed (without them the engine runs and says why)."""
        return self.config.http.enabled and not self._http_missing

    # ------------------------------------------------------------- logging --
    def log(self, level: str, event: str, **kv) -> None:
        log_event(level, event, stream=self._log_stream, **kv)

    def _say(self, line: str) -> None:
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (OSError, ValueError):
            pass

    # -------------------------------------------------------------- signals --
    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGHUP:
            self._reload_pending = True
            self._config_reload_pending = True
        else:
            self._stop_signal = signum

    def _install_signals(self):
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        old_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        old = {
            s: signal.signal(s, self._on_signal)
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        return old_fd, old

    def _restore_signals(self, saved) -> None:
        old_fd, old = saved
        for s, h in old.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(old_fd)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def request_stop(self) -> None:
        """Ask ``run()`` to shut down (as SIGTERM does)."""
        self._stop_signal = signal.SIGTERM
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:
                pass

    # ------------------------------------------------------------- children --
    def _set_pid(self, role: str, pid: int) -> None:
        assert self.seg is not None  # children run only while the segment exists
        getattr(self.seg.views.header, f"{role}_pid")[0] = pid

    def _start_spare(self, child: _Child) -> None:
        if not self.config.engine.warm_spares:
            return  # [engine] warm_spares = false: restarts are cold starts
        theirs, ours = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_child_main,
            name=f"shm-engine-{child.role}",
            args=(child.target, self.name, self.config, os.getpid(), theirs),
            daemon=False,
        )
        proc.start()
        theirs.close()
        child.spare, child.spare_gate = proc, ours
        child.spare_started, child.spare_warm = time.monotonic(), False
        self.log("INFO", "spare_started", role=child.role, pid=proc.pid)

    def _spare_said(self, child: _Child, now: float) -> None:
        """Read what a spare said on its pipe: ``warm`` once it is ready to
        take over, logged with how long it took.  Its end closing means it
        died; `_spare_lost` reports that when its sentinel fires."""
        gate, proc = child.spare_gate, child.spare
        assert gate is not None and proc is not None  # set and cleared together
        try:
            msg = gate.recv()
        except (EOFError, OSError):
            msg = None
        child.spare_warm = True  # either way, nothing more to read
        if msg == "warm":
            self.log(
                "INFO",
                "spare_ready",
                role=child.role,
                pid=proc.pid,
                warm_s=f"{now - child.spare_started:.3f}",
            )

    def _spare_lost(self, child: _Child) -> None:
        """A spare died before it was needed: the role's next restart is a
        cold start (which starts a new spare)."""
        proc, gate = child.spare, child.spare_gate
        child.spare = child.spare_gate = None
        child.spare_warm = False
        assert proc is not None and gate is not None  # its sentinel fired
        gate.close()
        proc.join(1.0)
        self.log(
            "WARN", "spare_lost", role=child.role, pid=proc.pid, code=_exit_text(proc.exitcode)
        )

    def _take_spare(self, child: _Child):
        """The role's spare, told to go; None if there is none alive."""
        proc, gate = child.spare, child.spare_gate
        child.spare = child.spare_gate = None
        child.spare_warm = False
        if proc is None:
            return None
        assert gate is not None  # set and cleared with the spare
        try:
            if proc.is_alive():
                gate.send("go")
                return proc
        except OSError:
            pass  # it died just now: cold start
        finally:
            gate.close()
        proc.join(1.0)
        return None

    def _stop_spares(self) -> None:
        """End every spare.  A spare holds no state and has touched neither
        the segment nor the socket, so SIGTERM is safe at any point."""
        spares = []
        for child in self.children.values():
            proc, gate = child.spare, child.spare_gate
            child.spare = child.spare_gate = None
            if proc is not None:
                assert gate is not None
                gate.close()
                proc.terminate()
                spares.append(proc)
        deadline = time.monotonic() + STOP_JOIN_TIMEOUT_S
        for proc in spares:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)

    def _start(self, child: _Child) -> None:
        proc = self._take_spare(child)
        if proc is None:
            proc = self._ctx.Process(
                target=_child_main,
                name=f"shm-engine-{child.role}",
                args=(child.target, self.name, self.config, os.getpid()),
                daemon=False,
            )
            proc.start()
        child.proc = proc
        child.started = time.monotonic()
        child.restart_at = None
        self._set_pid(child.role, proc.pid)
        if child.starts:
            assert self.seg is not None
            h = self.seg.views.header
            counter = getattr(h, f"{child.role}_restarts")
            counter[0] += 1
            self.log(
                "INFO", "child_restarted", role=child.role, pid=proc.pid, restarts=int(counter[0])
            )
        else:
            self.log("INFO", "child_started", role=child.role, pid=proc.pid)
        child.starts += 1
        self._start_spare(child)

    def _reap(self, child: _Child, now: float) -> bool:
        """Handle an exited child; False if its exit is fatal for the engine."""
        proc = child.proc
        assert proc is not None  # called only for a child that exited
        proc.join()
        code = proc.exitcode
        ran = now - child.started
        child.proc = None
        self._set_pid(child.role, 0)
        if code == EXIT_FATAL:
            self.log(
                "ERROR", "child_fatal", role=child.role, pid=proc.pid, code=code, ran_s=f"{ran:.3f}"
            )
            return False
        if ran >= STABLE_AFTER_S:
            child.backoff = self.config.engine.restart_backoff_min_s
        delay = child.backoff
        child.backoff = min(child.backoff * 2, self.config.engine.restart_backoff_max_s)
        child.restart_at = now + delay
        how = _exit_text(code)
        self.log(
            "WARN",
            "child_exited",
            role=child.role,
            pid=proc.pid,
            code=how,
            ran_s=f"{ran:.3f}",
            restart_in_s=f"{delay:.3f}",
        )
        return True

    def _watchdog(self, h, now: float) -> None:
        """SIGKILL a child that stopped beating (hung, not dead): the exit
        then takes the normal restart path.  A child is watched only after
        its first beat since it started, so a slow start (a cold numba
        compile) is never taken for a hang.  ``hang_timeout_s = 0``: off."""
        limit = self.config.engine.hang_timeout_s
        if limit <= 0:
            return
        for child in self.children.values():
            proc = child.proc
            if proc is None or proc.exitcode is not None:
                continue
            beat = float(getattr(h, f"{child.role}_alive_mono")[0])
            if beat < child.started or now - beat < limit:
                continue
            self.log(
                "WARN",
                "child_hung",
                role=child.role,
                pid=proc.pid,
                silent_s=f"{now - beat:.3f}",
                limit_s=limit,
            )
            proc.kill()

    def _forward_reload(self, h) -> None:
        """Send the pending SIGHUP to the ingest once it has beaten since it
        started; until then it stays pending (the loop wakes at least once
        a second)."""
        child = self.children["ingest"]
        proc = child.proc
        if proc is None or proc.exitcode is not None:
            return
        if float(h.ingest_alive_mono[0]) < child.started:
            return
        assert proc.pid is not None  # a started process has a pid
        self._reload_pending = False
        try:
            os.kill(proc.pid, signal.SIGHUP)
        except ProcessLookupError:
            return  # it just died: its successor reads the files
        self.log("INFO", "reload_forwarded", role="ingest", pid=proc.pid)

    def _terminate_children(self) -> None:
        self._stop_spares()
        live = [(c, c.proc) for c in self.children.values() if c.proc is not None]
        # Both children exit by themselves once `stopping` is set; a short
        # grace lets them finish cleanly before SIGTERM.
        grace_end = time.monotonic() + STOP_GRACE_S
        pending = [proc.sentinel for _, proc in live]
        while pending and time.monotonic() < grace_end:
            done = multiprocessing.connection.wait(pending, grace_end - time.monotonic())
            pending = [p for p in pending if p not in done]
        for _, proc in live:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_JOIN_TIMEOUT_S
        for c, proc in live:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                self.log(
                    "WARN", "child_killed", role=c.role, pid=proc.pid, after_s=STOP_JOIN_TIMEOUT_S
                )
                proc.kill()
                proc.join(5.0)
            self.log("INFO", "child_stopped", role=c.role, pid=proc.pid, code=proc.exitcode)
            c.proc = None
            if self.seg is not None:
                self._set_pid(c.role, 0)

    # ------------------------------------------------------------ lifetime --
    def run(self) -> int:
        """Create the segments, supervise until a stop signal or a fatal child
        exit, then shut down.  Returns 0 after a requested stop, 1 after a
        fatal child exit.  Raises EngineAlreadyRunning or UntrustedSegment
        (for either segment) with nothing left behind: a segment made
        before the failure is unlinked."""
        saved = self._install_signals()
        created = False
        try:
            cfg = self.config
            self.seg = Segment.create(
                self.name,
                cfg.engine.capacity,
                mode=cfg.engine.shm_mode,
                tick_interval_ms=cfg.engine.tick_interval_ms,
                endpoint=cfg.ingest.bind,
                resources=cfg.placement.resources,
                placement=json.dumps(cfg.placement.to_dict()),
            )
            created = True
            self.claims = ClaimsSegment.create(
                self.name,
                cfg.engine.capacity,
                cfg.claims.max_schedulers,
                mode=cfg.claims.shm_mode,
                max_reservations=cfg.placement.max_reservations,
            )
            self.events = EventSegment.create(
                self.name, cfg.events.capacity, mode=cfg.engine.shm_mode
            )
            h = self.seg.views.header
            self.reloader = Reloader(h, cfg, self.config_path, self.overrides)
            h.supervisor_pid[0] = os.getpid()
            h.supervisor_alive_mono[0] = time.monotonic()
            self.log(
                "INFO",
                "engine_starting",
                name=self.name,
                pid=os.getpid(),
                capacity=cfg.engine.capacity,
                tick_ms=cfg.engine.tick_interval_ms,
                endpoint=cfg.ingest.bind,
            )
            self._say(f"ingest endpoint {cfg.ingest.bind}")
            if self._http_missing:
                self.log(
                    "WARN",
                    "http_unavailable",
                    bind=cfg.http.bind,
                    reason=repr(
                        f"{self._http_missing} not installed: pip install 'shm-engine[http]'"
                    ),
                )
            elif self._http_wanted():
                # Until the child has bound it: the configured address.
                h.write_str("http_endpoint", http_url(cfg.http))
            for child in self.children.values():
                self._start(child)
            code = self._loop()
            return code
        finally:
            try:
                if created:
                    self._shutdown()
            finally:
                self._restore_signals(saved)

    def _loop(self) -> int:
        assert self.seg is not None  # run() created it
        h = self.seg.views.header
        while self._stop_signal is None:
            now = time.monotonic()
            h.supervisor_alive_mono[0] = now
            for child in self.children.values():
                if child.proc is not None and child.proc.exitcode is not None:
                    if not self._reap(child, now):
                        self.log(
                            "ERROR",
                            "engine_fatal",
                            name=self.name,
                            reason=f"{child.role}_fatal_exit",
                        )
                        return 1
            for child in self.children.values():
                if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
            self._watchdog(h, now)
            if self._config_reload_pending:
                self._reload_config()
            if self._reload_pending:
                self._forward_reload(h)
            if not self._ready and engine_ready(h):
                self._ready = True
                bound = h.read_str("endpoint")
                self.log(
                    "INFO", "ready", name=self.name, epoch=int(h.latch_seq[0]) >> 1, endpoint=bound
                )
                if bound != self.config.ingest.bind:  # a `*` port, now resolved
                    self._say(f"ingest endpoint {bound}")
                if "http" in self.children:
                    self._say(f"http endpoint {h.read_str('http_endpoint')}")
                self._say("ready")
            timeout = 0.05 if not self._ready or self._reload_pending else 1.0
            for child in self.children.values():
                if child.restart_at is not None:
                    timeout = min(timeout, max(0.0, child.restart_at - now))
            waitables = [c.proc.sentinel for c in self.children.values() if c.proc is not None]
            spares = {c.spare.sentinel: c for c in self.children.values() if c.spare is not None}
            gates = {
                c.spare_gate: c
                for c in self.children.values()
                if c.spare_gate is not None and not c.spare_warm
            }
            ready = multiprocessing.connection.wait(
                waitables + list(spares) + list(gates) + [self._wake_r], timeout
            )
            for r in ready:
                if r in spares:
                    self._spare_lost(spares[r])
            for r in ready:
                if not isinstance(r, multiprocessing.connection.Connection):
                    continue  # a sentinel or the wake pipe
                c = gates.get(r)
                if c is not None and c.spare_gate is r:
                    self._spare_said(c, time.monotonic())
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        self.log("INFO", "stop_requested", signal=signal.Signals(self._stop_signal).name)
        return 0

    def _reload_config(self) -> None:
        """SIGHUP: reload the configuration file (`shm_engine.ops.reload`)."""
        self._config_reload_pending = False
        assert self.reloader is not None  # made with the segments
        r = self.reloader.reload()
        if r.status == "invalid":
            self.log("WARN", "reload_invalid", error=repr(r.error))
            return
        self.config = self.reloader.config  # what children started from now on get
        self.log(
            "INFO",
            "reload_" + r.status,
            config_version=r.config_version,
            applied=",".join(r.applied) or "-",
            restart_needed=",".join(r.restart_needed) or "-",
        )

    def _shutdown(self) -> None:
        seg, claims, events = self.seg, self.claims, self.events
        try:
            if seg is not None and seg.views is not None:
                seg.views.header.stopping[0] = 1
            self._terminate_children()
        finally:
            if events is not None:
                events.close()
                events.unlink()
            if claims is not None:
                claims.close()
                claims.unlink()
            if seg is not None:
                seg.close()
                seg.unlink()
                self.log("INFO", "engine_stopped", name=self.name, segment_unlinked=True)
            self.seg = self.claims = self.events = None


def _http_missing() -> str | None:
    """The packages of the ``http`` extra that cannot be imported, or None."""
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    return " and ".join(missing) or None


def http_url(hc) -> str:
    """The URL of an ``[http]`` section's bind (its port as configured)."""
    return f"{'https' if hc.tls else 'http'}://{hc.bind}"


def cmd_run(args) -> int:
    """``shm-engine run [--config FILE] [--bind ADDR] --name NAME``.  Every
    check that can fail (the configuration, the files it names, the segment
    names) runs before a child starts, and a failure leaves no segment
    behind.  ``--bind`` overrides ``[ingest] bind`` (also on reloads)."""
    overrides = {"ingest.bind": args.bind} if getattr(args, "bind", None) else {}
    config = load_config(args.config)
    if overrides:
        config = with_overrides(config, overrides)
    check_files(config)
    return Supervisor(args.name, config, config_path=args.config, overrides=overrides).run()
