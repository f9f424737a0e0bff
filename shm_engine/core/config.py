"""Configuration: one TOML file, validated whole, once, at startup.

Sections: ``[engine]``, ``[ingest]``, ``[ingest.curve]``, ``[claims]``,
``[placement]``, ``[placement.weights]``, ``[score]``, ``[score.weights]``,
``[events]``, ``[feed]``, ``[feed.curve]``, ``[http]``, ``[scope]``.  A missing
key takes its default; ``Config()`` is the all-defaults configuration.

Where the defaults come from
    Every ``[score]`` and ``[score.weights]`` key is a parameter of the score
    defined in docs/scoring.md; its default is read from `kernels.defaults.DEFAULTS`,
    the one table of score defaults (the kernels, tests and benchmarks read it too), and
    ``tests/test_config.py`` checks each against the definition by hand.
    ``[engine] tick_interval_ms`` takes its default from there as well (the
    error window decays per tick).  ``[engine]``, ``[ingest]`` and
    ``[claims]`` are operational settings owned by this module.  Each key's
    meaning, unit and range is written once, as the ``doc`` of its field
    below; ``render_defaults()`` prints those docs as the comments of a
    complete default file, which loads back to ``Config()``.

Validation policy
    A configuration is accepted whole or refused: nothing is clamped, ignored
    or silently defaulted.  Unknown sections and keys are errors (a typo must
    not leave a default in force), with the closest valid key suggested.
    Integer keys take TOML integers only; float keys take floats or integers
    (converted to float); a boolean is never a number; floats must be finite.
    Every integer has a range: its key's own, within ``-(2**31)..2**31 - 1``
    for all (each ends up in an int32 counter, a C ``int`` option of ZeroMQ
    or a 32-bit header field, where a larger value would overflow at run
    time).  Ranges and cross-key rules (also across sections, e.g.
    ``engine.forget_after_s > score.dead_after_s``) are checked in
    ``__post_init__``, so every
    instance is valid however it was made (``from_dict``, ``with_overrides``,
    ``dataclasses.replace`` or a constructor call).  The first problem found
    raises ``ConfigError`` naming the key and the value, e.g.
    ``score.limit_critical = 120 must be < score.max_queue (100)``.
    A file must be UTF-8 TOML of at most `MAX_FILE_BYTES`.

    What the values name outside the file (key files, directories) is
    checked by `check_files`, which ``config --check`` and ``run`` call: a
    `Config` is valid on any machine, a deployment only where its files are.

Rules for callers
    Instances are immutable; derive new ones with ``with_overrides`` or
    ``dataclasses.replace``.  The kernels receive the score parameters only as
    ``Config.to_params()`` (the ``[score]`` keys plus ``[engine]
    tick_interval_ms``), whose positions are those of ``kernels.params``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import textwrap
import tomllib
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from kernels import params as kp
from kernels.defaults import DEFAULTS
from shm_engine.core.errors import ConfigError
from shm_engine.core.layout import (
    DEFAULT_MAX_RESERVATIONS,
    ENDPOINT_BYTES,
    HTTP_ENDPOINT_BYTES,
    MAX_RESERVATIONS,
    MAX_SCHEDULERS,
    N_PLACE_RESOURCES,
    PLACE_NAME_BYTES,
    SCOPE_CONFIG_BYTES,
)
from shm_engine.core.segment import CLAIMS_FORBIDDEN, SCORES_FORBIDDEN, mode_problem

__all__ = [
    "ClaimsConfig",
    "Config",
    "EventsConfig",
    "CurveConfig",
    "EngineConfig",
    "FeedConfig",
    "HARD_LIMIT_FACTOR",
    "HttpConfig",
    "IngestConfig",
    "PlacementConfig",
    "PlacementWeights",
    "ScopeConfig",
    "ScoreConfig",
    "Weights",
    "check_files",
    "http_host_port",
    "is_loopback_endpoint",
    "is_loopback_http",
    "load_config",
    "parse_override",
    "render_config",
    "render_defaults",
    "with_overrides",
]

MAX_CAPACITY = 16_777_216
MIN_FRAME_BYTES = 1024
MAX_FRAME_BYTES = 256 << 20  # 2 x this is ZMQ_MAXMSGSIZE, and must fit a receive budget
#: Longest tick interval: the header keeps it in 32 bits, and a tick rarer
#: than once a minute could not tell a live node from a dead one.
MAX_TICK_INTERVAL_MS = 60_000
MAX_TICK_THREADS = 64
#: Shortest watchdog limit (``hang_timeout_s``) other than 0 (off): a
#: shorter one kills children that are only busy (a restart storm).
MIN_HANG_TIMEOUT_S = 1.0
#: Longest ``ipc://`` path, in bytes: Linux's ``sun_path`` holds 108 with
#: the terminating NUL (libzmq refuses longer ones at bind).
MAX_IPC_PATH_BYTES = 107
#: Largest configuration file read.
MAX_FILE_BYTES = 1 << 20
# Every integer key ends up in an int32 counter, a C int option of ZeroMQ or
# a 32-bit header field (and is exact in the float64 parameter vector).
_MAX_INT = 2**31 - 1
_MAX_ZMQ_INT = _MAX_INT

# Field kinds: how a value is type-checked and written to TOML.
_INT, _FLOAT, _STR, _MODE, _BOOL, _SECTION = "int", "float", "str", "mode", "bool", "section"
_STRS = "strs"  # an array of strings, stored as a tuple
_INTMAP = "intmap"  # a table of name -> integer, stored as a tuple of pairs


def _key(kind: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"kind": kind, "doc": doc})


def _param(kind: str, name: str, doc: str) -> Any:
    """A score parameter: its default from `kernels.defaults.DEFAULTS`."""
    default = DEFAULTS[name]
    if kind == _INT:
        assert float(default).is_integer(), name
        default = int(default)
    return _key(kind, default, doc)


def _section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"kind": _SECTION, "doc": doc})


def _section_type(f: Field) -> type:
    """The class of a section field: its default factory."""
    cls = f.default_factory
    assert isinstance(cls, type), f"section {f.name} has no class as its default factory"
    return cls


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# --------------------------------------------------------------------------
# Showing values in messages


def _show(value: Any) -> str:
    """A value as the user would write it in TOML (floats exactly)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{...}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_show, value)) + "]"
    return repr(value)


def _num(value: Any) -> str:
    """A checked number for a range message: integral floats without ``.0``
    (the user most likely wrote ``120``, which was stored as ``120.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return _show(value)


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "float", str: "string"}


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _type_error(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key} = {_show(value)} has type {_type_name(value)}, expected {expected}")


# --------------------------------------------------------------------------
# Type checks: one per kind; each returns the value as stored.


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(key, value, "a float (an integer is accepted)")
    try:
        result = float(value)
    except OverflowError as err:
        raise ConfigError(f"{key} = {_show(value)} is out of float64 range") from err
    if not math.isfinite(result):
        raise ConfigError(f"{key} = {_show(value)} must be finite")
    return result


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(key, value, "an integer")
    if not -_MAX_INT - 1 <= value <= _MAX_INT:
        raise ConfigError(
            f"{key} = {value} is too large: an integer key is at most "
            f"2**31 - 1 ({_MAX_INT}) in magnitude"
        )
    return value


def _as_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _type_error(key, value, "a boolean (true or false)")
    return value


def _as_str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(key, value, "a string")
    return value


def _as_strs(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _type_error(key, value, "an array of strings")
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(
                f"{key} = {_show(list(value))}: element {_show(item)} has type "
                f"{_type_name(item)}, expected a string"
            )
    return tuple(value)


def _as_intmap(key: str, value: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        value = dict(value)  # already stored: checked again
    if not isinstance(value, Mapping):
        raise _type_error(key, value, "a table of name = integer")
    out = []
    for name, n in value.items():
        if isinstance(n, bool) or not isinstance(n, int):
            raise _type_error(f"{key}.{name}", n, "an integer")
        out.append((str(name), n))
    return tuple(out)


_OCTAL = re.compile(r"(?:0o)?([0-7]{1,4})")


def _as_mode(key: str, value: Any) -> int:
    if isinstance(value, str):
        m = _OCTAL.fullmatch(value.strip())
        if m is None:
            raise ConfigError(
                f'{key} = {_show(value)} is not an octal mode (write 0o640 or "0640")'
            )
        return int(m.group(1), 8)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(key, value, 'an octal integer like 0o640 or a string like "0640"')
    return value


_CHECK = {
    _INT: _as_int,
    _FLOAT: _as_float,
    _STR: _as_str,
    _MODE: _as_mode,
    _BOOL: _as_bool,
    _STRS: _as_strs,
    _INTMAP: _as_intmap,
}


class _Section:
    """Behaviour shared by the section dataclasses: type checks, then the
    section's own range and consistency rules (``_validate``)."""

    PATH: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            kind = f.metadata["kind"]
            key = _join(self.PATH, f.name)
            value = getattr(self, f.name)
            if kind == _SECTION:
                section = _section_type(f)
                if not isinstance(value, section):
                    raise ConfigError(
                        f"{key} must be a {section.__name__}, got {_type_name(value)}"
                    )
                continue
            object.__setattr__(self, f.name, _CHECK[kind](key, value))
        self._validate()

    def _validate(self) -> None:
        pass

    # Rule helpers: the message always names the key and its value.
    def _fail(self, name: str, rule: str) -> None:
        raise ConfigError(f"{_join(self.PATH, name)} = {_num(getattr(self, name))} {rule}")

    def _ref(self, name: str) -> str:
        return f"{_join(self.PATH, name)} ({_num(getattr(self, name))})"

    def _unit_interval(self, *names: str, low_open: bool = True) -> None:
        for name in names:
            v = getattr(self, name)
            if low_open and not 0 < v <= 1:
                self._fail(name, "must be in (0, 1]")
            if not low_open and not 0 <= v <= 1:
                self._fail(name, "must be in [0, 1]")

    def _at_least(self, low: float, *names: str) -> None:
        for name in names:
            if getattr(self, name) < low:
                self._fail(name, f"must be >= {low}")

    def _shm_mode(self, name: str, forbidden: int) -> None:
        """The mode of a segment that may never have the ``forbidden`` write
        bits (`shm_engine.core.segment.mode_problem`, the rule attach checks)."""
        mode = getattr(self, name)
        problem = mode_problem(mode, forbidden)
        if problem is not None:
            hint = ""
            if (
                re.fullmatch(r"[0-7]{3,4}", str(mode))
                and mode_problem(int(str(mode), 8), forbidden) is None
            ):
                # `shm_mode = 600` in TOML is decimal 600 = 0o1130.
                hint = f" (a TOML integer without 0o is decimal: did you mean 0o{mode}?)"
            raise ConfigError(f"{_join(self.PATH, name)} = {mode:#o} {problem}{hint}")

    def _int_range(self, name: str, low: int, high: int) -> None:
        if not low <= getattr(self, name) <= high:
            self._fail(name, f"must be in {low}..{high}")

    def _positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                self._fail(name, "must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """The TOML-shaped nested dict of this section (plain values)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            kind = f.metadata["kind"]
            if kind == _SECTION:
                out[f.name] = value.to_dict()
            elif kind == _STRS:
                out[f.name] = list(value)
            elif kind == _INTMAP:
                out[f.name] = dict(value)
            else:
                out[f.name] = value
        return out


# --------------------------------------------------------------------------
# [engine]


@dataclass(frozen=True)
class EngineConfig(_Section):
    """``[engine]``: the engine process, its segment and its tick."""

    PATH: ClassVar[str] = "engine"

    capacity: int = _key(
        _INT,
        16384,
        "Node slots in the shared-memory segment: the most nodes tracked at "
        "once. A heartbeat from a new node when every slot is taken is rejected "
        f"(registry_full). Integer, 1..{MAX_CAPACITY}.",
    )
    tick_interval_ms: int = _param(
        _INT,
        "tick_interval_ms",
        "Period of the scoring tick, milliseconds. Replay also uses it to turn "
        "tick counts into heartbeat ages, and the error window decays by "
        "0.5 ** (tick_interval_ms / 1000 / score.error_half_life_s) per tick. "
        f"Integer, 1..{MAX_TICK_INTERVAL_MS}.",
    )
    tick_threads: int = _key(
        _INT,
        1,
        "Threads the tick worker splits each tick's per-node work over (the "
        "gather, the feedback and both score passes; step 5, the quarantine "
        "admissions and the ranking stay on one thread, and the scores are "
        "bit-for-bit those of one thread). Each tick hands work to the threads "
        "twice (about 0.1 ms each on a small virtual machine), so threads pay "
        "off only for large fleets: measured on 2 cores, 2 threads cut the tick "
        "at 1M nodes by 10-20% and made it slower at 100K nodes and below. The "
        "threads sleep between ticks. Integer, "
        f"1..{MAX_TICK_THREADS}.",
    )
    forget_after_s: float = _key(
        _FLOAT,
        300.0,
        "A node whose last heartbeat is at least this old is forgotten at the "
        "start of a tick and its slot freed. Seconds, > score.dead_after_s "
        "(a node is DEAD before it is forgotten).",
    )
    shm_mode: int = _key(
        _MODE,
        0o600,
        'Permission bits of the shared-memory segment, octal (0o640 or "0640"). '
        "Must include owner read+write (0o600); only read/write bits (within "
        "0o666) are allowed, and no write bit for group or others: only the "
        "engine writes scores (0o640 lets a group read them, 0o644 everyone).",
    )
    restart_backoff_min_s: float = _key(
        _FLOAT,
        0.5,
        "Shortest delay before a failed child process is restarted; repeated "
        "failures lengthen it up to restart_backoff_max_s. Seconds, > 0.",
    )
    restart_backoff_max_s: float = _key(
        _FLOAT, 10.0, "Longest restart delay. Seconds, >= restart_backoff_min_s."
    )
    parent_check_interval_s: float = _key(
        _FLOAT,
        0.5,
        "How often a child process checks that its parent is still alive "
        "(and exits if not). Seconds, > 0.",
    )
    hang_timeout_s: float = _key(
        _FLOAT,
        10.0,
        "A child that has not beaten (ticked, or turned its ingest loop) for "
        "this long is taken as hung: the supervisor kills and restarts it. "
        "Watched only after the child's first beat, so a slow start is not a "
        "hang. Seconds: 0 turns the watchdog off; otherwise at least "
        f"{MIN_HANG_TIMEOUT_S:g} and at least two tick intervals (the tick worker "
        "beats once per tick).",
    )
    warm_spares: bool = _key(
        _BOOL,
        True,
        "Keep one pre-loaded spare process per child, so a crashed ingest or "
        "tick worker is replaced in well under a second instead of after a "
        "cold start (1-5 s of imports and kernel loading). Costs one more "
        "process per child (about 150 MB resident each). true or false.",
    )

    def _validate(self) -> None:
        self._int_range("capacity", 1, MAX_CAPACITY)
        self._int_range("tick_interval_ms", 1, MAX_TICK_INTERVAL_MS)
        self._int_range("tick_threads", 1, MAX_TICK_THREADS)
        self._positive("forget_after_s", "restart_backoff_min_s", "parent_check_interval_s")
        if self.hang_timeout_s < 0:
            self._fail("hang_timeout_s", "must be >= 0 (0 turns the watchdog off)")
        two_ticks = 2 * self.tick_interval_ms / 1000
        if 0 < self.hang_timeout_s < max(MIN_HANG_TIMEOUT_S, two_ticks):
            self._fail(
                "hang_timeout_s",
                f"must be 0 (watchdog off) or >= {MIN_HANG_TIMEOUT_S:g} "
                f"and >= two ticks ({two_ticks:g} s at "
                f"{self._ref('tick_interval_ms')}): a shorter limit "
                "kills children that are only busy",
            )
        self._shm_mode("shm_mode", SCORES_FORBIDDEN)
        if self.restart_backoff_min_s > self.restart_backoff_max_s:
            self._fail("restart_backoff_min_s", f"must be <= {self._ref('restart_backoff_max_s')}")


# --------------------------------------------------------------------------
# [ingest] and [ingest.curve]

_BIND = re.compile(
    r"tcp://(?P<host>\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\*|[0-9]{1,5})"
    r"|ipc://.+"
    r"|inproc://.+"
)
#: ZMQ_MAXMSGSIZE of the heartbeat socket, in units of ``max_frame_bytes``: a
#: frame up to this size is received and counted ``frame_too_large``; a
#: larger one makes ZeroMQ drop the sender's connection before it is stored.
HARD_LIMIT_FACTOR = 2


def is_loopback_endpoint(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint can be reached from this machine only:
    ``ipc://``, ``inproc://``, or ``tcp://`` on 127.0.0.0/8, ``[::1]`` or
    ``localhost`` (by name: the ingest checks the address it bound too)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    m = _BIND.fullmatch(endpoint)
    if m is None or m.group("host") is None:
        return False
    host = m.group("host")
    if host == "localhost" or host == "[::1]":
        return True
    parts = host.split(".")
    return (
        len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) <= 255 for p in parts)
    )


@dataclass(frozen=True)
class CurveConfig(_Section):
    """``[ingest.curve]``: CURVE security of the heartbeat socket; both keys
    empty means CURVE off, both set means on."""

    PATH: ClassVar[str] = "ingest.curve"

    server_secret_key_file: str = _key(
        _STR,
        "",
        "File holding the server's CURVE secret key (zmq.auth key-file format). "
        "Empty, with authorized_keys_dir empty too: CURVE off. Set both to turn "
        "CURVE on.",
    )
    authorized_keys_dir: str = _key(
        _STR,
        "",
        "Directory of the public key files of the clients allowed to send "
        "heartbeats. Set together with server_secret_key_file.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.server_secret_key_file)

    def _validate(self) -> None:
        secret, keys = self.server_secret_key_file, self.authorized_keys_dir
        if bool(secret) != bool(keys):
            set_name, empty_name = (
                ("server_secret_key_file", "authorized_keys_dir")
                if secret
                else ("authorized_keys_dir", "server_secret_key_file")
            )
            raise ConfigError(
                f"{self.PATH}.{set_name} = {_show(getattr(self, set_name))} is set but "
                f"{self.PATH}.{empty_name} is empty: set both (CURVE on) or neither (CURVE off)"
            )


@dataclass(frozen=True)
class IngestConfig(_Section):
    """``[ingest]``: the heartbeat socket and its intake loop."""

    PATH: ClassVar[str] = "ingest"

    bind: str = _key(
        _STR,
        "tcp://127.0.0.1:7710",
        "ZeroMQ endpoint the heartbeat socket binds: tcp://host:port (port may "
        f"be * for any free port), ipc://path (at most {MAX_IPC_PATH_BYTES} bytes) or "
        f"inproc://name; at most {ENDPOINT_BYTES - 1} bytes in all.",
    )
    max_frame_bytes: int = _key(
        _INT,
        1048576,
        "Largest heartbeat frame accepted; a larger one is rejected unparsed. "
        f"Bytes, integer, {MIN_FRAME_BYTES}..{MAX_FRAME_BYTES}.",
    )
    drain_batch: int = _key(
        _INT,
        1024,
        "Most frames drained from the socket per loop turn before the loop "
        "does its other work. Integer >= 1.",
    )
    max_heartbeats_per_frame: int = _key(
        _INT,
        8192,
        "Most heartbeats one frame may carry; a frame with more is rejected "
        "whole (too_many_heartbeats) before it is decoded (a JSON array is "
        "counted by a scan of its top level). It bounds the work of one "
        "frame. Integer >= 1.",
    )
    max_queue_bytes: int = _key(
        _INT,
        128 << 20,
        "Memory budget of the socket's receive queue, per connected sender: "
        "ZMQ_RCVHWM is set to max_queue_bytes // (2 x max_frame_bytes) "
        "frames (ZeroMQ counts frames, and admits frames of up to 2 x "
        "max_frame_bytes: ZMQ_MAXMSGSIZE; a larger one drops the sender's "
        "connection). Beyond it senders are pushed back (they drop and "
        "count). The loop itself holds one drained chunk more (at most 256 "
        "small frames and one above 16 KiB, or 4 above 16 KiB). Bytes, "
        "integer >= 2 x max_frame_bytes.",
    )
    allow_insecure: bool = _key(
        _BOOL,
        False,
        "Allow a bind that other machines can reach (not 127.0.0.0/8, ::1, "
        "localhost, ipc:// or inproc://) without [ingest.curve]: anyone "
        "who reaches the port can then send heartbeats for any node. false "
        "refuses such a configuration. true or false.",
    )
    allow_nodes: tuple[str, ...] = _key(
        _STRS,
        (),
        "Node ids admitted at all: an array of exact ids or shell globs "
        '(e.g. ["web-*", "db-[0-9]*"]); a heartbeat for any other id is '
        "rejected (node_not_allowed). Empty: every id.",
    )
    peer_nodes_file: str = _key(
        _STR,
        "",
        "Without CURVE: a file binding peer IP addresses to the node ids "
        "they may speak for, one line each: ADDRESS PATTERN... (# starts a "
        "comment); a heartbeat for another id, or from an unlisted address, "
        "is rejected (not_authorized). Reloaded on SIGHUP. Empty: any peer "
        "may speak for any node. With CURVE, keys are bound instead "
        "(NAME.nodes beside NAME.key).",
    )
    registration_rate: float = _key(
        _FLOAT,
        1000.0,
        "New nodes registered per second, all senders together (a token "
        "bucket); a heartbeat that would register one more is rejected "
        "(registration_rate) and its node registers on a later heartbeat. "
        "Per second, > 0.",
    )
    registration_burst: int = _key(
        _INT,
        16384,
        "Size of that bucket: new nodes registered at once after a quiet "
        "time. Integer >= 0; 0 turns the overall budget off.",
    )
    registration_rate_per_sender: float = _key(
        _FLOAT,
        100.0,
        "New nodes registered per second by one sender: a CURVE key, or "
        "without CURVE a peer address. Per second, > 0.",
    )
    registration_burst_per_sender: int = _key(
        _INT,
        1024,
        "Size of each sender's bucket. A sender that registers a larger "
        "fleet at once needs a larger one. Integer >= 0; 0 turns the "
        "per-sender budget off.",
    )
    reject_log_interval_s: float = _key(
        _FLOAT,
        1.0,
        "Rejected heartbeats are logged as a summary at most once per this "
        "interval (the counters are always exact). Seconds, > 0.",
    )
    curve: CurveConfig = _section(
        CurveConfig,
        "CURVE authentication and encryption of the heartbeat socket. Both keys empty: CURVE off.",
    )

    def _validate(self) -> None:
        m = _BIND.fullmatch(self.bind)
        port = m.group("port") if m else None
        if m is None or (port not in (None, "*") and not 1 <= int(port) <= 65535):
            self._fail(
                "bind",
                "must look like tcp://host:port (port 1..65535 or *), ipc://path or inproc://name",
            )
        size = len(self.bind.encode("utf-8"))
        if size > ENDPOINT_BYTES - 1:
            self._fail("bind", f"is {size} bytes long, more than {ENDPOINT_BYTES - 1}")
        if self.bind.startswith("ipc://"):
            path = len(self.bind[len("ipc://") :].encode("utf-8"))
            if path > MAX_IPC_PATH_BYTES:
                self._fail(
                    "bind",
                    f"has an ipc path of {path} bytes, more than the "
                    f"{MAX_IPC_PATH_BYTES} a Unix socket address holds",
                )
        self._int_range("max_frame_bytes", MIN_FRAME_BYTES, MAX_FRAME_BYTES)
        self._at_least(1, "drain_batch", "max_heartbeats_per_frame")
        if self.max_queue_bytes < self.max_message_bytes:
            self._fail(
                "max_queue_bytes",
                f"must be >= {HARD_LIMIT_FACTOR} x {self._ref('max_frame_bytes')}",
            )
        if self.queue_frames > _MAX_ZMQ_INT:
            self._fail(
                "max_queue_bytes",
                f"must be <= {_MAX_ZMQ_INT} x {HARD_LIMIT_FACTOR} x {self._ref('max_frame_bytes')}",
            )
        self._positive("reject_log_interval_s", "registration_rate", "registration_rate_per_sender")
        self._at_least(0, "registration_burst", "registration_burst_per_sender")
        if not (self.curve.enabled or self.allow_insecure or is_loopback_endpoint(self.bind)):
            raise ConfigError(
                f"ingest.bind = {_show(self.bind)} can be reached from other machines and "
                "[ingest.curve] is off: anyone who reaches it could send heartbeats for any "
                "node. Bind a loopback address (127.0.0.1), turn CURVE on, or set "
                "ingest.allow_insecure = true"
            )
        for pattern in self.allow_nodes:
            if (
                not pattern
                or len(pattern.encode("utf-8")) > 255
                or re.search("[\x00-\x1f\x7f]", pattern)
            ):
                raise ConfigError(
                    f"ingest.allow_nodes: pattern {_show(pattern)} must be 1..255 bytes "
                    "without control characters"
                )
        if self.curve.enabled and self.peer_nodes_file:
            raise ConfigError(
                f"ingest.peer_nodes_file = {_show(self.peer_nodes_file)} is set with "
                "[ingest.curve]: with CURVE, bind keys to nodes with NAME.nodes files "
                "beside the keys in authorized_keys_dir"
            )

    @property
    def max_message_bytes(self) -> int:
        """ZMQ_MAXMSGSIZE of the heartbeat socket (`HARD_LIMIT_FACTOR`)."""
        return HARD_LIMIT_FACTOR * self.max_frame_bytes

    @property
    def queue_frames(self) -> int:
        """ZMQ_RCVHWM: the frames of the largest size ``max_queue_bytes`` holds."""
        return self.max_queue_bytes // self.max_message_bytes


# --------------------------------------------------------------------------
# [http]: the HTTP API and dashboard (shm_engine.http)

_HTTP_BIND = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})")
#: Largest ``[http] max_body_bytes``: a request body is held whole in memory.
MAX_HTTP_BODY_BYTES = 64 << 20


def http_host_port(bind: str) -> tuple[str, int]:
    """``(host, port)`` of a valid ``[http] bind`` (brackets of an IPv6
    host removed)."""
    m = _HTTP_BIND.fullmatch(bind)
    if m is None:
        raise ValueError(f"http bind {bind!r} is not HOST:PORT")
    return m.group("host").strip("[]"), int(m.group("port"))


def is_loopback_http(bind: str) -> bool:
    """Whether an ``[http] bind`` can be reached from this machine only."""
    return is_loopback_endpoint("tcp://" + bind)


@dataclass(frozen=True)
class HttpConfig(_Section):
    """``[http]``: the HTTP API and web dashboard, a supervised child."""

    PATH: ClassVar[str] = "http"

    bind: str = _key(
        _STR,
        "127.0.0.1:7720",
        "HOST:PORT the HTTP API and dashboard listen on ([::1]:PORT for IPv6); "
        "port 0 takes any free port (status shows the one bound). Empty: no "
        "HTTP server.",
    )
    token_file: str = _key(
        _STR,
        "",
        "File holding the bearer token that mutating endpoints (POST) require "
        "(Authorization: Bearer TOKEN; surrounding whitespace ignored). It must "
        "not be readable by group or others. Empty: mutating endpoints need no "
        "token on a loopback bind and are disabled on any other.",
    )
    tls_cert: str = _key(
        _STR,
        "",
        "PEM certificate (chain) file: serve HTTPS. Set together with tls_key; "
        "both empty: plain HTTP.",
    )
    tls_key: str = _key(_STR, "", "PEM private key file of tls_cert.")
    max_body_bytes: int = _key(
        _INT,
        1048576,
        "Largest request body accepted; a larger one is refused with 413 "
        "before it is read whole. A heartbeat body is further limited by "
        f"ingest.max_frame_bytes. Bytes, integer, 1..{MAX_HTTP_BODY_BYTES}.",
    )
    stream_interval_ms: int = _key(
        _INT,
        250,
        "Period of the summary pushed to each GET /v1/stream client (server-"
        "sent events) and of the dashboard's live numbers. Milliseconds, "
        "integer, 50..10000.",
    )
    max_streams: int = _key(
        _INT,
        64,
        "Most streaming clients (GET /v1/stream and GET /v1/events/stream) at "
        "once; one more gets 503. Integer, 1..4096.",
    )
    nice: int = _key(
        _INT,
        5,
        "Scheduling niceness added to the HTTP process, so that on a busy "
        "machine the tick worker and the ingest get the CPU first. Integer, 0..19.",
    )
    place_ttl_s: float = _key(
        _FLOAT,
        60.0,
        "Lease of a placement made through POST /v1/place whose request gives "
        "no ttl_s: not released within it, its reservation is returned (by the "
        "server, and by the engine at the same deadline) and its claim closed "
        "without an outcome. Seconds, > 0, <= max_place_ttl_s.",
    )
    max_place_ttl_s: float = _key(
        _FLOAT,
        3600.0,
        "Longest lease a POST /v1/place request may ask for (ttl_s); a longer "
        "one is refused with 422. Seconds, 1..86400.",
    )
    curve_client_key_file: str = _key(
        _STR,
        "",
        "With [ingest.curve]: the secret key file (shm-engine keys) POST "
        "/v1/heartbeat forwards with; its public key must be in "
        "ingest.curve.authorized_keys_dir, bound to the nodes the API may "
        "send for. Empty with CURVE on: POST /v1/heartbeat answers 503.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.bind)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def _validate(self) -> None:
        if self.bind:
            m = _HTTP_BIND.fullmatch(self.bind)
            if m is None or not 0 <= int(m.group("port")) <= 65535:
                self._fail(
                    "bind",
                    "must look like HOST:PORT (port 0..65535, 0 for any), "
                    "[::1]:PORT, or be empty (no HTTP server)",
                )
            if len(self.bind.encode("utf-8")) > HTTP_ENDPOINT_BYTES - len("https://") - 1:
                self._fail(
                    "bind", f"is longer than {HTTP_ENDPOINT_BYTES - len('https://') - 1} bytes"
                )
        if bool(self.tls_cert) != bool(self.tls_key):
            set_name, empty_name = (
                ("tls_cert", "tls_key") if self.tls_cert else ("tls_key", "tls_cert")
            )
            raise ConfigError(
                f"http.{set_name} = {_show(getattr(self, set_name))} is set but "
                f"http.{empty_name} is empty: set both (HTTPS) or neither"
            )
        self._int_range("max_body_bytes", 1, MAX_HTTP_BODY_BYTES)
        self._int_range("stream_interval_ms", 50, 10000)
        self._int_range("max_streams", 1, 4096)
        self._int_range("nice", 0, 19)
        if not 1 <= self.max_place_ttl_s <= 86400:
            self._fail("max_place_ttl_s", "must be in 1..86400")
        self._positive("place_ttl_s")
        if self.place_ttl_s > self.max_place_ttl_s:
            self._fail("place_ttl_s", f"must be <= {self._ref('max_place_ttl_s')}")


# --------------------------------------------------------------------------
# [claims]


@dataclass(frozen=True)
class ClaimsConfig(_Section):
    """``[claims]``: the claims segment, where schedulers record the jobs
    they send (in flight) and how they ended."""

    PATH: ClassVar[str] = "claims"

    shm_mode: int = _key(
        _MODE,
        0o600,
        'Permission bits of the claims segment /NAME.claims, octal (0o660 or "0660"). '
        "Schedulers map it read-write (claiming is writing), so a scheduler group "
        "needs group read+write here and only read on the scores segment "
        "([engine] shm_mode). Must include owner read+write (0o600); only "
        "read/write bits (within 0o666) are allowed, and never write for every "
        "user (0o666, 0o662): group write (0o660) is the most it may grant.",
    )
    max_schedulers: int = _key(
        _INT,
        64,
        "Most scheduler processes that can hold claims at once: each takes one "
        "lease on its first claim and keeps it until it exits. When all are "
        "taken by live processes, claim() raises SchedulerLimitReached. Each "
        "lease reserves 8 bytes per node slot (touched only once used). "
        f"Integer, 1..{MAX_SCHEDULERS}.",
    )

    def _validate(self) -> None:
        self._shm_mode("shm_mode", CLAIMS_FORBIDDEN)
        self._int_range("max_schedulers", 1, MAX_SCHEDULERS)


# --------------------------------------------------------------------------
# [events]

#: Most events the event log can hold.
MAX_EVENTS_CAPACITY = 1 << 24


@dataclass(frozen=True)
class EventsConfig(_Section):
    """``[events]``: the event log, a ring of node state changes in the
    shared-memory segment /NAME.events."""

    PATH: ClassVar[str] = "events"

    capacity: int = _key(
        _INT,
        65536,
        "Events the log keeps: the newest ones; a reader that falls further "
        "behind loses the oldest and is told how many. Each event takes 104 "
        f"bytes of shared memory. Integer, 16..{MAX_EVENTS_CAPACITY}.",
    )

    def _validate(self) -> None:
        self._int_range("capacity", 16, MAX_EVENTS_CAPACITY)


# [feed] and [feed.curve]: the score feed to mirrors (shm_engine.feed)


@dataclass(frozen=True)
class FeedCurveConfig(_Section):
    """``[feed.curve]``: CURVE security of the feed's sockets (the score
    feed and the feedback from mirrors); both keys empty means CURVE off."""

    PATH: ClassVar[str] = "feed.curve"

    server_secret_key_file: str = _key(
        _STR,
        "",
        "File holding the feed's CURVE secret key (zmq.auth key-file format). "
        "Empty, with authorized_keys_dir empty too: CURVE off. Set both to turn "
        "CURVE on.",
    )
    authorized_keys_dir: str = _key(
        _STR,
        "",
        "Directory of the public key files (NAME.key) of the mirrors allowed to "
        "subscribe and to send feedback. Set together with server_secret_key_file.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.server_secret_key_file)

    def _validate(self) -> None:
        secret, keys = self.server_secret_key_file, self.authorized_keys_dir
        if bool(secret) != bool(keys):
            set_name, empty_name = (
                ("server_secret_key_file", "authorized_keys_dir")
                if secret
                else ("authorized_keys_dir", "server_secret_key_file")
            )
            raise ConfigError(
                f"{self.PATH}.{set_name} = {_show(getattr(self, set_name))} is set but "
                f"{self.PATH}.{empty_name} is empty: set both (CURVE on) or neither (CURVE off)"
            )


@dataclass(frozen=True)
class FeedConfig(_Section):
    """``[feed]``: the score feed, which publishes every tick to mirrors on
    other hosts, and the feedback their schedulers send back."""

    PATH: ClassVar[str] = "feed"

    bind: str = _key(
        _STR,
        "",
        "ZeroMQ endpoint the score feed (a PUB socket) binds, tcp://host:port "
        "(port may be *); mirrors subscribe to it (shm-engine mirror --from). "
        "Empty: no feed (the feed child is not started).",
    )
    full_every: int = _key(
        _INT,
        100,
        "A full snapshot is published every this many frames (and whenever a "
        "mirror subscribes or asks for one); the frames between carry only the "
        "rows that changed. Integer >= 1.",
    )
    feedback_bind: str = _key(
        _STR,
        "",
        "ZeroMQ endpoint (tcp://host:port, a PULL socket) where mirrors send "
        "the claims and outcomes of their schedulers; its port is announced in "
        "the feed's full frames. Empty: no feedback from mirrors.",
    )
    mirror_timeout_s: float = _key(
        _FLOAT,
        2.0,
        "A mirror that sent no feedback for this long has its forwarded jobs in "
        "flight abandoned (mirrors send at least every 0.5 s). Seconds, >= 1.",
    )
    allow_insecure: bool = _key(
        _BOOL,
        False,
        "Allow a feed bind other machines can reach without [feed.curve]: anyone "
        "who reaches it could read every score, and send feedback. true or false.",
    )
    curve: FeedCurveConfig = _section(
        FeedCurveConfig,
        "CURVE authentication and encryption of the feed's sockets. Both keys empty: CURVE off.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.bind)

    def _validate(self) -> None:
        for name in ("bind", "feedback_bind"):
            value = getattr(self, name)
            if not value:
                continue
            m = _BIND.fullmatch(value)
            port = m.group("port") if m else None
            if (
                port is None
                or not value.startswith("tcp://")
                or (port != "*" and not 1 <= int(port) <= 65535)
            ):
                self._fail(name, "must look like tcp://host:port (port 1..65535 or *), or be empty")
            if not (self.curve.enabled or self.allow_insecure or is_loopback_endpoint(value)):
                raise ConfigError(
                    f"feed.{name} = {_show(value)} can be reached from other machines and "
                    "[feed.curve] is off. Bind a loopback address, turn CURVE on, or set "
                    "feed.allow_insecure = true"
                )
        if self.feedback_bind and not self.bind:
            self._fail("feedback_bind", "needs feed.bind (its port travels in the feed)")
        if self.feedback_bind.endswith(":*"):
            self._fail("feedback_bind", "needs a fixed port: mirrors learn it from the feed")
        self._at_least(1, "full_every")
        self._at_least(1.0, "mirror_timeout_s")


# [placement] and [placement.weights]: docs/placement.md


#: The fit strategies of ``[placement] fit``.
FIT_STRATEGIES = ("least", "most")
MAX_PLACE_SCALE = 1_000_000_000
MAX_TOP_K = 64
MAX_LABEL_KEY_BYTES = 63


@dataclass(frozen=True)
class PlacementWeights(_Section):
    """``[placement.weights]``: weights of the parts of a node's placement
    score (docs/placement.md); only their ratios matter."""

    PATH: ClassVar[str] = "placement.weights"

    fit: float = _key(_FLOAT, 30.0, "Weight of the resource fit part. >= 0.")
    affinity: float = _key(_FLOAT, 20.0, "Weight of the preferred affinity part. >= 0.")
    load: float = _key(
        _FLOAT,
        20.0,
        "Weight of the load part: the published desirability discounted by the "
        "reservations open on the node now. >= 0.",
    )
    locality: float = _key(
        _FLOAT, 20.0, "Weight of the locality part (preferred zones, data labels). >= 0."
    )
    cost: float = _key(_FLOAT, 10.0, "Weight of the cost part (the node's cost label). >= 0.")

    def _validate(self) -> None:
        names = [f.name for f in fields(self)]
        self._at_least(0, *names)
        if not any(getattr(self, n) > 0 for n in names):
            raise ConfigError(
                " + ".join(self._ref(n) for n in names) + " must be > 0: the score divides by it"
            )


@dataclass(frozen=True)
class PlacementConfig(_Section):
    """``[placement]``: placing jobs on nodes with capacity reservations
    (docs/placement.md)."""

    PATH: ClassVar[str] = "placement"

    resources: tuple = _key(
        _INTMAP,
        (("cpu", 1000), ("mem_gb", 1000), ("gpu", 1)),
        "The resources jobs request and nodes report (heartbeat field resources), "
        "each with its fixed-point scale: an amount x is kept as round(x * scale) "
        "units, so cpu = 1000 counts milli-CPUs. A resource a node does not "
        f"report is 0 there. At most {N_PLACE_RESOURCES} names of 1..15 bytes; "
        f"scales 1..{MAX_PLACE_SCALE}; amounts are held in 32 bits of units per node.",
    )
    fit: str = _key(
        _STR,
        "least",
        'Resource fit: "least" (least-allocated: prefer the emptiest nodes, '
        'spreading) or "most" (most-allocated: fill nodes up, bin-packing).',
    )
    top_k: int = _key(
        _INT,
        4,
        "Choose among this many best-scored feasible nodes, uniformly at random, "
        "so schedulers racing for the same job do not all hit the best node. "
        f"1 = always the best. 1..{MAX_TOP_K}.",
    )
    max_reservations: int = _key(
        _INT,
        DEFAULT_MAX_RESERVATIONS,
        "Most reservations one scheduler process can hold open at once (each "
        "takes 128 bytes of the claims segment per lease, touched only once used). "
        f"1..{MAX_RESERVATIONS}.",
    )
    cost_label: str = _key(
        _STR,
        "cost",
        "Node label whose number is the node's cost (lower is better); nodes "
        "without it, or with a value that is not a number >= 0, cost 0.",
    )
    data_label_prefix: str = _key(
        _STR,
        "data/",
        "A node holds data set D when it has a label named this prefix + D "
        "(what Job(data=[...]) asks for).",
    )
    weights: PlacementWeights = _section(PlacementWeights, "Weights of the placement score.")

    def _validate(self) -> None:
        res = self.resources
        if not 1 <= len(res) <= N_PLACE_RESOURCES:
            raise ConfigError(
                f"placement.resources has {len(res)} names: 1..{N_PLACE_RESOURCES} are allowed"
            )
        for name, scale in res:
            raw = name.encode("utf-8", "replace")
            if not 1 <= len(raw) < PLACE_NAME_BYTES or "\0" in name:
                raise ConfigError(
                    f"placement.resources name {name!r} must be 1..{PLACE_NAME_BYTES - 1} "
                    "bytes of UTF-8 without NUL (as the heartbeat's resource names)"
                )
            if not 1 <= scale <= MAX_PLACE_SCALE:
                raise ConfigError(
                    f"placement.resources.{name} = {scale} must be in 1..{MAX_PLACE_SCALE}"
                )
        if self.fit not in FIT_STRATEGIES:
            self._fail("fit", f"must be one of {', '.join(map(repr, FIT_STRATEGIES))}")
        self._int_range("top_k", 1, MAX_TOP_K)
        self._int_range("max_reservations", 1, MAX_RESERVATIONS)
        for name in ("cost_label", "data_label_prefix"):
            n = len(getattr(self, name).encode("utf-8"))
            if not 1 <= n <= MAX_LABEL_KEY_BYTES:
                raise ConfigError(
                    f"placement.{name} = {_show(getattr(self, name))} must be "
                    f"1..{MAX_LABEL_KEY_BYTES} bytes"
                )


# [scope]: zone scope escalation by tail latency (shm_engine.core.scope)

#: Longest zone name: the wire format's (docs/wire-format.md, ``zone``).
MAX_ZONE_BYTES = 31
#: Most samples kept per zone and source.
MAX_SCOPE_WINDOW = 1_000_000


def _zone_problem(zone: str) -> str | None:
    if not zone:
        return "is empty"
    if "\0" in zone:
        return "contains NUL"
    if len(zone.encode("utf-8")) > MAX_ZONE_BYTES:
        return f"is over {MAX_ZONE_BYTES} bytes of UTF-8"
    if zone != zone.strip() or "," in zone or "=" in zone:
        return "has surrounding blanks, ',' or '='"
    return None


@dataclass(frozen=True)
class ScopeConfig(_Section):
    """``[scope]``: when placement widens a job's zone scope because its
    zone's tail latency grew (`shm_engine.core.scope` has the rule).  Every
    key may change on reload; the samples already kept stay."""

    PATH: ClassVar[str] = "scope"

    enabled: bool = _key(
        _BOOL,
        True,
        "Widen a job's zone scope when its zone's P95/P50 latency ratio "
        "grows. false: every job stays in its own zone's scope. true or false.",
    )
    min_samples: int = _key(
        _INT,
        10,
        "Fewest samples of a zone for its P95/P50 ratio to count; with fewer "
        "the zone is not escalated. Integer, 2..window.",
    )
    interval_s: float = _key(
        _FLOAT,
        2.0,
        "How often the zones' ratios are re-evaluated; between evaluations "
        "the shares of escalated jobs hold. Seconds, > 0.",
    )
    window: int = _key(
        _INT,
        256,
        "Most recent samples kept per zone (outcome durations, and apart "
        f"node heartbeats' p50/p95). Integer, 2..{MAX_SCOPE_WINDOW}.",
    )
    max_age_s: float = _key(
        _FLOAT,
        30.0,
        "Samples older than this are dropped at an evaluation, so a zone "
        "that recovered stops being escalated. Seconds, >= interval_s.",
    )
    federated_soft: float = _key(
        _FLOAT,
        1.5,
        "P95/P50 ratio of a zone above which a share of its jobs may also use "
        "the neighbouring zones: (ratio - soft) / (hard - soft). >= 1, "
        "< federated_hard.",
    )
    federated_hard: float = _key(
        _FLOAT,
        2.5,
        "Ratio at and above which every job of the zone may use the "
        "neighbouring zones. <= centralized_hard.",
    )
    centralized_soft: float = _key(
        _FLOAT,
        1.7,
        "Ratio above which a share of the zone's jobs may use every zone: "
        "(ratio - soft) / (hard - soft). >= federated_soft, < centralized_hard.",
    )
    centralized_hard: float = _key(
        _FLOAT,
        2.7,
        "Ratio at and above which every job of the zone may use every zone.",
    )
    neighbours: tuple[str, ...] = _key(
        _STRS,
        (),
        'Neighbouring zones, one entry per zone: "zone=n1,n2" (e.g. '
        '["eu-1=eu-2", "eu-2=eu-1,eu-3"]); not symmetric unless written so. '
        "A zone without an entry has no neighbours: its federated scope is "
        "itself.",
    )

    def _validate(self) -> None:
        self._int_range("window", 2, MAX_SCOPE_WINDOW)
        self._int_range("min_samples", 2, self.window)
        self._positive("interval_s")
        if self.max_age_s < self.interval_s:
            self._fail("max_age_s", f"must be >= {self._ref('interval_s')}")
        self._at_least(1, "federated_soft", "centralized_soft")
        for tier in ("federated", "centralized"):
            if getattr(self, f"{tier}_soft") >= getattr(self, f"{tier}_hard"):
                self._fail(f"{tier}_soft", f"must be < {self._ref(f'{tier}_hard')}")
        # Centralized thresholds at or above the federated ones: a job that may
        # use every zone may use its neighbours too (the shares are nested).
        if self.centralized_soft < self.federated_soft:
            self._fail("centralized_soft", f"must be >= {self._ref('federated_soft')}")
        if self.centralized_hard < self.federated_hard:
            self._fail("centralized_hard", f"must be >= {self._ref('federated_hard')}")
        self.neighbour_map()
        # The section is recorded in the engine's header for the placers.
        size = len(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")))
        if size >= SCOPE_CONFIG_BYTES:
            self._fail(
                "neighbours",
                f"makes the section {size} bytes as JSON; at most {SCOPE_CONFIG_BYTES - 1} "
                "fit the engine's header",
            )

    def neighbour_map(self) -> dict[str, tuple[str, ...]]:
        """``neighbours`` parsed: zone -> its neighbours in the order written."""
        out: dict[str, tuple[str, ...]] = {}
        key = f"{self.PATH}.neighbours"
        for entry in self.neighbours:
            zone, sep, rest = entry.partition("=")
            where = f"{key} entry {_show(entry)}"
            if not sep:
                raise ConfigError(f'{where} must look like "zone=n1,n2"')
            names = rest.split(",")
            for name in (zone, *names):
                problem = _zone_problem(name)
                if problem is not None:
                    raise ConfigError(f"{where}: zone {_show(name)} {problem}")
            if zone in out:
                raise ConfigError(f"{where}: zone {_show(zone)} has an entry already")
            if zone in names:
                raise ConfigError(f"{where}: zone {_show(zone)} is its own neighbour")
            if len(set(names)) != len(names):
                raise ConfigError(f"{where}: a neighbour is listed twice")
            out[zone] = tuple(names)
        return out


# --------------------------------------------------------------------------
# [score] and [score.weights]: docs/scoring.md, step letters in the docs.


@dataclass(frozen=True)
class Weights(_Section):
    """``[score.weights]``: base weights of the goodness terms in ``core``."""

    PATH: ClassVar[str] = "score.weights"

    cpu: float = _param(_FLOAT, "weights.cpu", "Base weight of g_cpu in core (step G). >= 0.")
    mem: float = _param(_FLOAT, "weights.mem", "Base weight of g_mem. >= 0.")
    io: float = _param(_FLOAT, "weights.io", "Base weight of g_io (nodes that report io). >= 0.")
    wait: float = _param(
        _FLOAT,
        "weights.wait",
        "Base weight of g_wait; the pressure of the other live nodes adds k1*P_i to it. >= 0.",
    )
    rate: float = _param(
        _FLOAT,
        "weights.rate",
        "Base weight of g_rate, what a node can complete (slots / avg_job_s) "
        "against the 90th percentile of the live nodes' rates (nodes with "
        "avg_job_s > 0); the pressure of the other live nodes adds k2*P_i to it. "
        ">= 0. (Called weights.throughput before score version 2.)",
    )
    success: float = _param(
        _FLOAT,
        "weights.success",
        "Base weight of g_succ, from the decayed window of job outcomes "
        "(heartbeats and scheduler releases); always scored. >= 0.",
    )
    tail: float = _param(
        _FLOAT, "weights.tail", "Base weight of g_tail (nodes that report p50/p95). >= 0."
    )

    #: Weights of the terms every node has: at least one must be > 0, or core
    #: would divide by 0 for a node that reports no optional metric.
    ALWAYS: ClassVar[tuple[str, ...]] = ("cpu", "mem", "wait", "success")

    def _validate(self) -> None:
        self._at_least(0, *(f.name for f in fields(self)))
        if not any(getattr(self, name) > 0 for name in self.ALWAYS):
            raise ConfigError(
                " + ".join(self._ref(name) for name in self.ALWAYS)
                + " must be > 0: these terms are scored for every node, so they "
                "are the whole denominator of core for a node that reports no "
                "optional metric"
            )


@dataclass(frozen=True)
class ScoreConfig(_Section):
    """``[score]``: every parameter of the score (docs/scoring.md; the
    letters in the docs name its steps)."""

    PATH: ClassVar[str] = "score"

    alpha_queue: float = _param(
        _FLOAT,
        "alpha_queue",
        "EMA weight of the newest queue length (step A): "
        "qema = alpha_queue*queue + (1-alpha_queue)*qema. In (0, 1].",
    )
    max_cpu: float = _param(
        _FLOAT,
        "max_cpu",
        "CPU busy fraction at which g_cpu reaches 0 and the breaker trips (steps G, H). In (0, 1].",
    )
    max_mem: float = _param(
        _FLOAT,
        "max_mem",
        "Memory used fraction at which g_mem reaches 0 and the breaker trips "
        "(steps G, H). In (0, 1].",
    )
    max_wait_s: float = _param(
        _FLOAT,
        "max_wait_s",
        "Sojourn time (load * avg_job_s / slots) at which g_wait reaches 0 and "
        "the breaker trips; it also scales the pressure (steps F, G, H). "
        "Seconds, > 0.",
    )
    max_tail_ratio: float = _param(
        _FLOAT, "max_tail_ratio", "p95/p50 latency ratio at which g_tail reaches 0 (step G). > 1."
    )
    suspect_after_s: float = _param(
        _FLOAT,
        "suspect_after_s",
        "Heartbeat age up to which liveness L = 1 (step D). Seconds, >= 0, < dead_after_s.",
    )
    dead_after_s: float = _param(
        _FLOAT,
        "dead_after_s",
        "Heartbeat age from which L = 0 and the node is DEAD; L falls linearly "
        "in between (step D). Seconds, > suspect_after_s.",
    )
    error_half_life_s: float = _param(
        _FLOAT,
        "error_half_life_s",
        "Half-life of the error window: every tick the decayed ok and error "
        "counts are multiplied by 0.5 ** (tick_interval_ms / 1000 / "
        "error_half_life_s) before the tick's outcomes (heartbeat ok/err and "
        "scheduler releases) are added (step C). Seconds, > 0.",
    )
    k1: float = _param(
        _FLOAT,
        "k1",
        "Weight added to wait per unit of the other live nodes' pressure: "
        "w_wait = weights.wait + k1*P_i (step G). >= 0.",
    )
    k2: float = _param(
        _FLOAT,
        "k2",
        "Weight added to rate per unit of the other live nodes' pressure: "
        "w_rate = weights.rate + k2*P_i (step G). >= 0.",
    )
    max_queue: float = _param(
        _FLOAT,
        "max_queue",
        "Load (the larger of the queue EMA and the jobs in flight beyond "
        "slots) at which backpressure B reaches 0 and the breaker trips "
        "(steps H, I). Jobs, > 0.",
    )
    limit_critical: float = _param(
        _FLOAT,
        "limit_critical",
        "Load up to which B = 1; B falls linearly to 0 at max_queue "
        "(step I). Jobs, >= 0, < max_queue.",
    )
    min_requests: int = _param(
        _INT,
        "min_requests",
        "Fewest outcomes in the error window (e_ok + e_err) for its error "
        "rate to trip the breaker (step H). Integer >= 1.",
    )
    max_error_rate: float = _param(
        _FLOAT,
        "max_error_rate",
        "Error rate e_err/(e_ok+e_err) of the window at or above which the "
        "breaker trips (step H). In (0, 1].",
    )
    max_consecutive_errors: int = _param(
        _INT,
        "max_consecutive_errors",
        "Error releases in a row (since the node's latest ok release, across "
        "all schedulers) that eject a node: it is tripped until ejection_s "
        "after its latest error (step H). Integer >= 1.",
    )
    ejection_s: float = _param(
        _FLOAT,
        "ejection_s",
        "How long an ejected node stays tripped after its latest error "
        "release; then it is tried again, and one ok release ends the run of "
        "errors (step H). Seconds, > 0.",
    )
    beta: float = _param(
        _FLOAT,
        "beta",
        "Smoothing weight of the newest raw score: s = beta*raw + (1-beta)*s_prev "
        "(step J). In (0, 1]; 1 means no smoothing.",
    )
    t_degraded: float = _param(
        _FLOAT, "t_degraded", "Smoothed score below which a node is DEGRADED (step K). In (0, 1]."
    )
    t_overloaded: float = _param(
        _FLOAT,
        "t_overloaded",
        "Smoothed score below which a node is OVERLOADED (step K). >= 0, < t_degraded.",
    )
    delta: float = _param(
        _FLOAT,
        "delta",
        "Hysteresis margin: a node moves to a better state only at threshold + "
        "delta; a quarantined node's good tick needs raw >= t_degraded + delta "
        "(steps K, L). >= 0.",
    )
    flap_window: int = _param(
        _INT,
        "flap_window",
        "Decay window of the flap counter: flap = flap*(1 - 1/flap_window) + c "
        "(step L). Ticks, integer >= 1.",
    )
    max_flaps: float = _param(
        _FLOAT, "max_flaps", "Flap value at which a node is quarantined (step M). > 0."
    )
    max_quarantined_fraction: float = _param(
        _FLOAT,
        "max_quarantined_fraction",
        "Most nodes quarantined at once, as a fraction of live nodes: "
        "floor(fraction * live) (step M). In [0, 1]; 0 disables quarantine.",
    )
    quarantine_memory: int = _param(
        _INT,
        "quarantine_memory",
        "Consecutive ticks live and out of quarantine after which a node's "
        "quarantine count n resets to 0 (step N). Ticks, integer >= 1.",
    )
    probation_ticks: int = _param(
        _INT,
        "probation_ticks",
        "Consecutive good ticks a quarantined node needs for release, times "
        "min(n, max_backoff) (step L). Ticks, integer >= 1.",
    )
    max_backoff: int = _param(
        _INT,
        "max_backoff",
        "Cap of the probation multiplier min(n, max_backoff) for repeat "
        "offenders (step L). Integer >= 1.",
    )
    weights: Weights = _section(
        Weights,
        "Base weights of the goodness terms in core (docs/scoring.md, "
        "step G). They are relative: core divides by the sum of the weights of "
        "the terms a node has, so they need not sum to 1.",
    )

    def _validate(self) -> None:
        self._unit_interval("alpha_queue", "max_cpu", "max_mem")
        self._positive("max_wait_s")
        if self.max_tail_ratio <= 1:
            self._fail("max_tail_ratio", "must be > 1")
        self._at_least(0, "suspect_after_s")
        if self.suspect_after_s >= self.dead_after_s:
            self._fail("suspect_after_s", f"must be < {self._ref('dead_after_s')}")
        self._at_least(0, "k1", "k2")
        self._positive("max_queue")
        self._at_least(0, "limit_critical")
        if self.limit_critical >= self.max_queue:
            self._fail("limit_critical", f"must be < {self._ref('max_queue')}")
        self._positive("error_half_life_s", "ejection_s")
        self._at_least(1, "min_requests", "max_consecutive_errors")
        self._unit_interval("max_error_rate", "beta", "t_degraded")
        self._at_least(0, "t_overloaded")
        if self.t_overloaded >= self.t_degraded:
            self._fail("t_overloaded", f"must be < {self._ref('t_degraded')}")
        self._at_least(0, "delta")
        self._at_least(1, "flap_window")
        self._positive("max_flaps")
        self._unit_interval("max_quarantined_fraction", low_open=False)
        self._at_least(1, "quarantine_memory", "probation_ticks", "max_backoff")

    def to_params(self, tick_interval_ms: float) -> np.ndarray:
        """The kernels' float64 parameter vector, positions from
        ``kernels.params``; ``tick_interval_ms`` is ``[engine]``'s (use
        `Config.to_params`)."""
        out = np.empty(kp.N_PARAMS, dtype=np.float64)
        for index, name in enumerate(kp.PARAM_NAMES):
            out[index] = tick_interval_ms if name == "tick_interval_ms" else _lookup(self, name)
        return out


def _lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------
# The whole file


@dataclass(frozen=True)
class Config(_Section):
    """The whole configuration: ``.engine``, ``.ingest`` (``.curve``),
    ``.claims``, ``.score`` (``.weights``), ``.scope``."""

    PATH: ClassVar[str] = ""

    engine: EngineConfig = _section(
        EngineConfig, "The engine process: shared-memory segment, tick, supervision."
    )
    ingest: IngestConfig = _section(IngestConfig, "Heartbeat intake over ZeroMQ.")
    claims: ClaimsConfig = _section(
        ClaimsConfig,
        "Scheduler claims: jobs in flight and their outcomes, shared by "
        "every scheduler and read by the tick.",
    )
    score: ScoreConfig = _section(
        ScoreConfig,
        "The desirability score. Every key is a parameter of the "
        "score defined in docs/scoring.md; step letters refer to it.",
    )
    events: EventsConfig = _section(
        EventsConfig, "The event log: node state changes, and why (shm-engine events)."
    )
    feed: FeedConfig = _section(
        FeedConfig, "The score feed to mirrors on other hosts (docs/scale-out.md)."
    )
    http: HttpConfig = _section(
        HttpConfig,
        "The HTTP API and web dashboard (GET endpoints read the segments like "
        "any scheduler; POST endpoints need the token).",
    )
    placement: PlacementConfig = _section(
        PlacementConfig,
        "Placement: node capacity, reservations and the placement score (docs/placement.md).",
    )
    scope: ScopeConfig = _section(
        ScopeConfig,
        "Zone scope escalation: placement widens a job's zones when its "
        "zone's P95/P50 latency ratio grows (docs/placement.md).",
    )

    def to_params(self) -> np.ndarray:
        """The kernels' parameter vector: ``[score]`` with ``[engine]
        tick_interval_ms``."""
        return self.score.to_params(self.engine.tick_interval_ms)

    def _validate(self) -> None:
        forget, dead = self.engine.forget_after_s, self.score.dead_after_s
        if forget <= dead:
            raise ConfigError(
                f"engine.forget_after_s = {_num(forget)} must be > "
                f"score.dead_after_s ({_num(dead)}): a node is DEAD before "
                "it is forgotten"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build from the nested TOML-shaped dict; missing keys take defaults."""
        return _build(cls, data, "")


def _all_keys(cls: type, path: str = "") -> dict[str, str]:
    """Every dotted name of the schema -> its kind (sections included)."""
    out: dict[str, str] = {}
    for f in fields(cls):
        name = _join(path, f.name)
        out[name] = f.metadata["kind"]
        if f.metadata["kind"] == _SECTION:
            out.update(_all_keys(_section_type(f), name))
    return out


_ALL_KEYS = _all_keys(Config)


def _display(dotted: str, is_section: bool) -> str:
    return f"[{dotted}]" if is_section else dotted


# Keys of earlier versions: dotted name -> (new name, why it changed).
_RENAMED = {
    "score.weights.throughput": (
        "score.weights.rate",
        "in score version 2 the throughput term became the rate term, which "
        "judges what a node can complete (slots / avg_job_s) instead of the "
        "traffic it was given",
    ),
}


def _unknown(cls: type, path: str, name: str, value: Any) -> ConfigError:
    renamed = _RENAMED.get(_join(path, str(name)))
    if renamed is not None:
        return ConfigError(
            f"{_join(path, str(name))} was renamed to {renamed[0]}: "
            f"{renamed[1]}; write {renamed[0]} = {_show(value)}"
        )
    is_section = isinstance(value, Mapping)
    what = "section" if is_section else ("key" if path else "top-level key")
    bad = _display(_join(path, str(name)), is_section)
    local = [f.name for f in fields(cls)]
    close = difflib.get_close_matches(str(name), local, n=1, cutoff=0.6)
    if close:
        guess = _join(path, close[0])
    else:
        # Right key, wrong section (e.g. `beta` under [engine]): match by last part.
        by_last: dict[str, str] = {}
        for dotted in _ALL_KEYS:
            by_last.setdefault(dotted.rsplit(".", 1)[-1], dotted)
        close = difflib.get_close_matches(str(name), list(by_last), n=1, cutoff=0.75)
        guess = by_last[close[0]] if close else ""
    if guess:
        hint = f" (did you mean {_display(guess, _ALL_KEYS[guess] == _SECTION)}?)"
    else:
        where = _display(path, True) if path else "the file"
        hint = f"; valid names in {where}: " + ", ".join(local)
    return ConfigError(f"unknown {what} {bad}{hint}")


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path} = {_show(data)} has type {_type_name(data)}, "
            f"expected a table (section [{path}])"
            if path
            else f"configuration must be a table, got {_type_name(data)}"
        )
    by_name = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = by_name.get(name)
        if f is None:
            raise _unknown(cls, path, name, value)
        if f.metadata["kind"] == _SECTION:
            value = _build(_section_type(f), value, _join(path, name))
        kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a TOML file; ``None`` gives ``Config()``.

    Every error (missing file, TOML syntax, bad key or value) is a
    ``ConfigError`` whose message starts with the file name.
    """
    if path is None:
        return Config()
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as err:
        raise ConfigError(f"{name}: config file not found") from err
    except OSError as err:
        raise ConfigError(f"{name}: cannot read config file: {err.strerror or err}") from err
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{name}: config file is larger than {MAX_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"{name}: not UTF-8 text: byte 0x{raw[err.start]:02x} at line {line}, "
            f"column {column} (a TOML file must be UTF-8)"
        ) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{name}: invalid TOML: {err}") from err
    except RecursionError as err:
        raise ConfigError(f"{name}: invalid TOML: arrays or tables nested too deeply") from err
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from err


def check_files(config: Config) -> None:
    """Check that every file and directory ``config`` names exists and is
    readable by this process; raise ConfigError naming the key, the path
    and the problem otherwise.  ``config --check`` and ``run`` call it (the
    engine needs them at start, before it creates anything)."""
    cc, fc, hc = config.ingest.curve, config.feed.curve, config.http
    named = (
        ("ingest.curve.server_secret_key_file", cc.server_secret_key_file, False),
        ("ingest.curve.authorized_keys_dir", cc.authorized_keys_dir, True),
        ("feed.curve.server_secret_key_file", fc.server_secret_key_file, False),
        ("feed.curve.authorized_keys_dir", fc.authorized_keys_dir, True),
        ("http.token_file", hc.token_file if hc.enabled else "", False),
        ("http.tls_cert", hc.tls_cert if hc.enabled else "", False),
        ("http.tls_key", hc.tls_key if hc.enabled else "", False),
        ("http.curve_client_key_file", hc.curve_client_key_file if hc.enabled else "", False),
    )
    for key, path, is_dir in named:
        if not path:
            continue
        what = "directory" if is_dir else "file"
        try:
            if is_dir:
                os.listdir(path)
            else:
                with open(path, "rb") as fh:
                    fh.read(1)
        except FileNotFoundError as err:
            raise ConfigError(f"{key} = {_show(path)}: no such {what}") from err
        except NotADirectoryError as err:
            raise ConfigError(f"{key} = {_show(path)} is not a directory") from err
        except IsADirectoryError as err:
            raise ConfigError(f"{key} = {_show(path)} is a directory, not a key file") from err
        except OSError as err:
            raise ConfigError(
                f"{key} = {_show(path)}: cannot read this {what}: {err.strerror or err}"
            ) from err
    if hc.enabled and hc.token_file:
        _check_token_file(hc.token_file)


def _check_token_file(path: str) -> None:
    """``[http] token_file``: not readable by group or others, not empty."""
    key = "http.token_file"
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"{key} = {_show(path)} has mode {mode:#o}: group or others may read "
            "the token; chmod 600 it"
        )
    with open(path, "rb") as fh:
        if not fh.read(4096).strip():
            raise ConfigError(f"{key} = {_show(path)} is empty: write the token into it")


def with_overrides(config: Config, dotted: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with dotted keys replaced, validated as a whole,
    e.g. ``with_overrides(cfg, {"score.beta": 0.7, "score.weights.cpu": 0.3})``."""
    data = config.to_dict()
    for key, value in dotted.items():
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override key {key!r} is malformed (expected section.key)")
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})  # an unknown section is reported by from_dict
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {key}: {'.'.join(parts[: depth + 1])} is a key, not a section"
                )
            node = child
        node[parts[-1]] = value
    return Config.from_dict(data)


def parse_override(item: str) -> tuple[str, Any]:
    """``"score.beta=0.7"`` -> ``("score.beta", 0.7)``, for command lines.

    The right side is read as a TOML value (``0.7``, ``true``, ``"x"``); text
    that is not one (``tcp://host:1``, ``0640``) is taken as a bare string.
    """
    key, sep, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key, value


# --------------------------------------------------------------------------
# Writing TOML


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(kind: str, value: Any) -> str:
    if kind == _FLOAT:
        return repr(float(value))  # shortest round-tripping form, always has '.' or 'e'
    if kind == _MODE:
        return f"{value:#o}"
    if kind == _STR:
        return _toml_string(value)
    if kind == _BOOL:
        return "true" if value else "false"
    if kind == _STRS:
        return "[" + ", ".join(_toml_string(v) for v in value) + "]"
    if kind == _INTMAP:
        return "{" + ", ".join(f"{_toml_string(k)} = {v}" for k, v in value) + "}"
    return str(value)


def _comment(text: str, width: int = 78) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, width - 2)]


def render_config(config: Config) -> str:
    """``config`` as a complete, commented TOML file; ``load_config`` reads it
    back to an equal ``Config``."""
    lines = _comment(
        "shm-engine configuration. Every key is listed with its meaning, unit "
        "and range. A key left out takes its default; an unknown key is an "
        "error. The [score] keys are defined in docs/scoring.md."
    )

    def emit(section: _Section, path: str, doc: str) -> None:
        lines.extend(["", f"[{path}]"])
        lines.extend(_comment(doc))
        subsections = []
        for f in fields(section):  # type: ignore[arg-type]
            kind = f.metadata["kind"]
            if kind == _SECTION:
                subsections.append(f)
                continue
            lines.append("")
            lines.extend(_comment(f.metadata["doc"]))
            lines.append(f"{f.name} = {_toml_value(kind, getattr(section, f.name))}")
        for f in subsections:
            emit(getattr(section, f.name), _join(path, f.name), f.metadata["doc"])

    for f in fields(config):
        emit(getattr(config, f.name), f.name, f.metadata["doc"])
    return "\n".join(lines) + "\n"


def render_defaults() -> str:
    """The default configuration as a complete, commented TOML file."""
    return render_config(Config())
