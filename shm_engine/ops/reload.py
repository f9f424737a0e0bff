"""Configuration reload without a restart: what the supervisor does on SIGHUP.

`Reloader.reload()` (the supervisor's, on SIGHUP) re-reads the TOML file
the engine was started with (plus the command line's overrides, e.g.
``--bind``) and validates the whole of it first: a file that fails changes
nothing, and the result's error names the key and the value
(`shm_engine.core.config`).  A valid file is compared with the running
configuration, key by key:

  * ``[score]`` keys (`LIVE_SECTIONS`) take effect at the next tick: the new
    parameter vector goes to the scores header (`shm_engine.core.paramsblock`)
    with the next configuration version, the tick worker adopts it, and each
    published epoch carries the vector and version it was computed with;
  * ``[scope]`` keys (also live) go to the same block as JSON with the same
    version; every `clients.Placer` following the engine's section sees the
    version move at its next ``place()`` and adopts the new thresholds;
  * every other changed key (capacity, bind addresses, the tick interval,
    ...) needs a restart: it is reported, not applied.

The ingest keeps the ``score.dead_after_s`` it started with for one
decision of its own (which DEAD slot a new node may take when the registry
is full); everything the tick computes follows the reload.

The result is written to the header (``reload_status``, ``reload_message``
as JSON, then ``reloads_done``), so any process can see it:
`request_reload(name)` (the call an HTTP endpoint makes) signals the
supervisor and waits for the reload that began after its signal, and
`last_reload(header)` reads the latest one (``shm-engine status``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any, NamedTuple

from kernels.params import PARAM_NAMES
from shm_engine.core.config import Config, load_config, with_overrides
from shm_engine.core.errors import ConfigError, EngineNotRunning, ShmEngineError
from shm_engine.core.layout import RELOAD_MESSAGE_BYTES
from shm_engine.core.paramsblock import config_hash, write_pending
from shm_engine.core.segment import Segment, process_alive

__all__ = [
    "LIVE_SECTIONS",
    "ReloadResult",
    "ReloadTimeout",
    "Reloader",
    "STATUS_NAMES",
    "changed_keys",
    "last_reload",
    "request_reload",
]

#: Sections whose keys a reload applies at the next tick.
LIVE_SECTIONS = ("score", "scope")

# reload_status values in the header.
NONE, APPLIED, UNCHANGED, INVALID = 0, 1, 2, 3
STATUS_NAMES = ("none", "applied", "unchanged", "invalid")


class ReloadTimeout(ShmEngineError, TimeoutError):
    """Raised by `request_reload` when the supervisor did not finish a
    reload within the timeout (it is busy or hung).  Look at its log; the
    reload may still happen."""


class ReloadResult(NamedTuple):
    """The outcome of one reload.

    ``status``: ``"applied"`` (live keys changed: new version from the next
    tick), ``"unchanged"`` (nothing live changed), ``"invalid"`` (nothing
    changed; ``error`` says why, naming the key and value).  ``applied``: the
    live keys that changed; ``restart_needed``: the changed keys a reload
    cannot apply (they keep their running value until a restart).
    ``config_version``/``config_hash``: of the configuration in effect after
    the reload."""

    status: str
    config_version: int
    config_hash: int
    applied: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "invalid"

    def as_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["applied"] = list(self.applied)
        d["restart_needed"] = list(self.restart_needed)
        d["config_hash"] = f"{self.config_hash:016x}"
        return d


def _flatten(data: dict, path: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{path}.{k}" if path else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def changed_keys(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """(live keys, restart-needing keys) whose values differ, sorted."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    live = [k for k in changed if k.split(".", 1)[0] in LIVE_SECTIONS]
    return live, [k for k in changed if k not in live]


def _message(result: ReloadResult) -> bytes:
    """The result's lists and error as JSON of at most RELOAD_MESSAGE_BYTES - 1
    bytes (long lists are cut, ending in "...")."""
    applied, restart, error = list(result.applied), list(result.restart_needed), result.error
    while True:
        text = json.dumps({"applied": applied, "restart_needed": restart, "error": error})
        data = text.encode("utf-8")
        if len(data) < RELOAD_MESSAGE_BYTES:
            return data
        if len(restart) > 1:
            restart = restart[: len(restart) // 2] + ["..."]
        elif len(applied) > 1:
            applied = applied[: len(applied) // 2] + ["..."]
        elif error is not None and len(error) > 80:
            error = error[: len(error) // 2] + "..."
        else:
            return data[: RELOAD_MESSAGE_BYTES - 1]


class Reloader:
    """The supervisor's side.  ``path``: the configuration file (None: the
    engine runs on defaults and overrides only); ``overrides``: dotted keys
    the command line set, applied over the file again on every reload."""

    def __init__(
        self, header, config: Config, path: str | None, overrides: dict[str, Any] | None = None
    ):
        self.header = header
        self.path = path
        self.overrides = dict(overrides or {})
        self.config = config  # in effect
        self.version = 1
        self.hash = config_hash(config.to_dict())
        write_pending(header, config.to_params(), self.version, self.hash, config.scope.to_dict())
        header.reload_status[0] = NONE

    def _load(self) -> Config:
        cfg = load_config(self.path)
        return with_overrides(cfg, self.overrides) if self.overrides else cfg

    def reload(self) -> ReloadResult:
        """Re-read, validate, apply the live part; record the result in the
        header (``reloads_done`` last).  Never raises for a bad file."""
        h = self.header
        h.reloads_started[0] += 1
        try:
            new = self._load()
            live, restart = changed_keys(self.config, new)
            effective = self.config
            if live:
                # Only the live sections change; the whole must still be valid
                # (e.g. score.dead_after_s against the running forget_after_s).
                effective = dataclasses.replace(
                    self.config, **{s: getattr(new, s) for s in LIVE_SECTIONS}
                )
        except ConfigError as err:
            result = ReloadResult("invalid", self.version, self.hash, error=str(err))
        else:
            if live:
                self.version += 1
                self.hash = config_hash(effective.to_dict())
                self.config = effective
                write_pending(
                    h, effective.to_params(), self.version, self.hash, effective.scope.to_dict()
                )
            result = ReloadResult(
                "applied" if live else "unchanged",
                self.version,
                self.hash,
                tuple(live),
                tuple(restart),
            )
        msg = _message(result)
        h.reload_message[:] = 0
        h.reload_message[: len(msg)] = bytearray(msg)
        h.reload_status[0] = STATUS_NAMES.index(result.status)
        h.reloads_done[0] += 1  # last: a waiter that sees it sees the result
        return result


def last_reload(header) -> ReloadResult | None:
    """The latest reload's result as the header holds it; None before any."""
    status = int(header.reload_status[0])
    if status == NONE or status >= len(STATUS_NAMES):
        return None
    raw = bytes(header.reload_message).split(b"\0", 1)[0]
    try:
        msg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        msg = {"applied": [], "restart_needed": [], "error": raw.decode("utf-8", "replace")}
    return ReloadResult(
        STATUS_NAMES[status],
        int(header.config_version[0]),
        int(header.config_hash[0]),
        tuple(msg.get("applied") or ()),
        tuple(msg.get("restart_needed") or ()),
        msg.get("error"),
    )


def request_reload(
    name: str, *, timeout: float = 10.0, owner: int | str | None = None
) -> ReloadResult:
    """Ask engine ``name``'s supervisor to reload its configuration file
    (SIGHUP) and wait for the result of a reload that read the file after
    this call began.

    Raises EngineNotRunning if there is no engine (or its supervisor is
    gone), ReloadTimeout if no reload finished within ``timeout`` seconds;
    an invalid file is not an exception: ``status == "invalid"``."""
    with Segment.attach(name, readonly=True, owner=owner) as seg:
        h = seg.views.header
        pid = int(h.supervisor_pid[0])
        if pid <= 0 or not process_alive(int(h.creator_pid[0]), int(h.creator_start[0])):
            raise EngineNotRunning(f"engine {name!r} is not running (no live supervisor)")
        # A reload that starts after this load reads the file after our caller
        # wrote it (reloads_started moves before the file is read).
        want = int(h.reloads_started[0]) + 1
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError as err:
            raise EngineNotRunning(f"engine {name!r}: supervisor pid {pid} is gone") from err
        deadline = time.monotonic() + timeout
        while int(h.reloads_done[0]) < want:
            if time.monotonic() > deadline:
                raise ReloadTimeout(
                    f"engine {name!r}: no reload finished within {timeout:g} s of the request"
                )
            time.sleep(0.005)
        result = last_reload(h)
        assert result is not None  # reloads_done moved after the status was written
        return result


def params_in_effect(vector) -> dict[str, float]:
    """A published parameter vector by `kernels.params.PARAM_NAMES`."""
    return {n: float(vector[i]) for i, n in enumerate(PARAM_NAMES)}
