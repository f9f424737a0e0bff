"""The HTTP API: one route table, its handlers, errors, auth and limits.

Every endpoint is one `Endpoint` row of the table `build_app` turns into
routes *and* into the OpenAPI document (``GET /openapi.json``), so the
document cannot drift from the code.  A new endpoint is a handler and a
row: ``mutating=True`` puts it behind the rules for mutations below,
``body=True`` behind the body limit.

Errors.  Every error is a JSON object ``{"error": {"status", "code",
"message", "field", "value"}}``: ``field`` names the query parameter, path
parameter, header or body field at fault and ``value`` the bad value as
sent (both null when no single field is at fault).  Bad input is a 4xx, never a
500; an engine that has not published yet or is gone is a 503.

Security (``[http]``):
- GET endpoints are open to whoever reaches the bind address.
- Mutating endpoints (POST) need ``Authorization: Bearer TOKEN`` when
  ``token_file`` is set (401 without or with a wrong token; the comparison
  takes constant time).  Without a token file they are allowed only when
  the server is bound to loopback, and refused (403) otherwise.
- A request body over ``max_body_bytes`` is refused with 413 from its
  Content-Length, or once the bytes read pass the limit: never read whole.
- Browsers: a POST whose ``Origin`` is not the server's own is refused
  (403), and bodies must be ``application/json``, which a page of another
  origin can only send after a CORS preflight this server never grants: a
  web page cannot post through a browser on the engine's host.  On a
  loopback bind the ``Host`` header must name a loopback host
  (`LOOPBACK_HOSTS`; else 421), so a page cannot read the API through DNS
  rebinding either.

Placement (``POST /v1/place``, ``/v1/release``): placements are held for
remote clients under leases, `shm_engine.http.place`.

Dispatch: paths without parameters skip Starlette's router (`_Exact`).

Rules for handlers: they run on the event loop, so they never block (every
read here is a copy from shared memory, microseconds to a millisecond at
10K nodes; a placement is a compiled scan and a compare-and-swap, tens of
microseconds); the heartbeat forwarder's send does not block either, and
the reload, which waits for the supervisor, runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from shm_engine.core.config import Config
from shm_engine.core.errors import (
    EngineNotRunning,
    LayoutMismatch,
    LeaseRevoked,
    NothingPublished,
    ReadContention,
    ReservationLimitReached,
    SchedulerLimitReached,
    Unschedulable,
)
from shm_engine.http.view import SORT_KEYS, STATE_BY_NAME, EngineView, Frame, state_name
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.jsondecode import check_mapping, json_array_items, parse_json
from shm_engine.wire.result import Reject

__all__ = [
    "ApiError",
    "Endpoint",
    "Settings",
    "build_app",
    "config_error_field",
    "openapi",
    "MAX_LIMIT",
]

API_VERSION = "1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # nodes per page
MAX_EXPLAINED = 20  # rejected heartbeats explained one by one in a reply
READY_MAX_AGE_TICKS = 10  # /readyz: the latest tick is at most this many intervals old
READY_MIN_AGE_S = 0.5  # ... or this many seconds, whichever is longer
STREAM_KEEPALIVE_S = 15.0
DEFAULT_EVENTS = 100  # events per GET /v1/events reply
MAX_EVENTS = 1000
STREAM_EVENTS = 500  # events per message of GET /v1/events/stream, at most
MAX_SEQ = (1 << 63) - 1
MAX_RELEASES = 1000  # placements released by one POST /v1/release
JOB_CACHE = 1024  # distinct jobs of place requests kept parsed
MAX_PLACE_BATCH = 256  # jobs placed by one POST /v1/place
RELOAD_TIMEOUT_S = 10.0  # the supervisor's reload, awaited by POST /v1/reload
_FIELD_VALUE = re.compile(
    r"^(?P<field>[a-z_0-9]+)=(?P<value>.*?)(?: (?:is|out|must|<|>|overflows).*)?$"
)


_orjson: Any
try:  # 5-10x faster encoding of the larger replies (a page of nodes)
    import orjson as _orjson
except ImportError:  # pragma: no cover - the http extra installs it
    _orjson = None


class JSONResponse(_StarletteJSON):
    """Starlette's JSONResponse, encoded by orjson when it is installed
    (NaN and infinities become null, as the API documents)."""

    def render(self, content: Any) -> bytes:
        if _orjson is not None:
            return _orjson.dumps(content)
        return super().render(content)


class ApiError(Exception):
    """A request the API refuses: the status and the JSON error body
    (``extra``: more members of it, e.g. an Unschedulable's counts)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        value: Any = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.value = field, value
        self.extra = extra

    def body(self) -> dict:
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "value": self.value,
            **self.extra,
        }

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.code, self.message, self.field, self.value, **self.extra
        )


def error_response(
    status: int, code: str, message: str, field: str | None = None, value: Any = None, **extra
) -> JSONResponse:
    body = {
        "error": {
            "status": status,
            "code": code,
            "message": message,
            "field": field,
            "value": value,
            **extra,
        }
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass(frozen=True)
class Settings:
    """What the app needs besides the view: from ``[http]`` and the bind."""

    token: str | None  # None: no token file
    loopback: bool  # bound to loopback: mutating endpoints allowed without a token
    max_body_bytes: int
    max_frame_bytes: int  # ingest.max_frame_bytes
    max_message_bytes: int  # what the ingest socket receives at all
    max_heartbeats: int  # ingest.max_heartbeats_per_frame
    stream_interval_s: float
    max_streams: int
    tick_interval_s: float
    allowed_hosts: tuple[str, ...] = ()  # Host header names accepted; empty: any
    reload_timeout_s: float = RELOAD_TIMEOUT_S  # POST /v1/reload waits this long
    place_ttl_s: float = 60.0  # http.place_ttl_s: a placement's lease by default
    max_place_ttl_s: float = 3600.0  # http.max_place_ttl_s

    @classmethod
    def from_config(cls, config: Config, token: str | None, loopback: bool) -> Settings:
        hc, ic = config.http, config.ingest
        return cls(
            token=token,
            loopback=loopback,
            max_body_bytes=hc.max_body_bytes,
            max_frame_bytes=ic.max_frame_bytes,
            max_message_bytes=ic.max_message_bytes,
            max_heartbeats=ic.max_heartbeats_per_frame,
            stream_interval_s=hc.stream_interval_ms / 1000.0,
            max_streams=hc.max_streams,
            tick_interval_s=config.engine.tick_interval_ms / 1000.0,
            allowed_hosts=LOOPBACK_HOSTS if loopback else (),
            place_ttl_s=hc.place_ttl_s,
            max_place_ttl_s=hc.max_place_ttl_s,
        )


Handler = Callable[["Api", Request], Awaitable[Response]]
#: Host names a loopback-bound server answers to (with any port).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class Endpoint:
    """One row of the route table: the route and its OpenAPI operation."""

    method: str
    path: str
    handler: Handler
    summary: str
    mutating: bool = False
    body: bool = False  # reads a request body (size-limited)
    params: tuple[dict, ...] = ()  # OpenAPI parameter objects
    request: dict | None = None  # OpenAPI requestBody
    responses: dict = field(default_factory=dict)  # status -> description
    content: str = "application/json"  # media type of the 200 response
    route: str | None = None  # the Starlette path when it differs (converters)


# ----------------------------------------------------------------- helpers --
def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer", name, raw) from None
    if not low <= value <= high:
        raise ApiError(400, "bad_parameter", f"{name} must be in {low}..{high}", name, raw)
    return value


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# A key and its value in a ConfigError message: "FILE: score.beta = 1.5 must ...".
_CONFIG_KEY_VALUE = re.compile(
    r"(?:^|: )(?P<key>[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)+) = "
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|\[[^\]]*\]|[^\s:,;()]+)"
)
_CONFIG_KEY_ONLY = re.compile(
    r"(?:^|: )(?:unknown (?:top-level )?(?:key|section) \[?(?P<unknown>[^\s\]]+)\]?"
    r"|(?P<renamed>[a-z_][\w.]*) was renamed)"
)


def config_error_field(message: str) -> tuple[str | None, Any]:
    """The key and the value a configuration error names (`ConfigError`
    messages write ``KEY = VALUE`` with the value as TOML shows it): the
    value decoded as JSON when it is a number, boolean, string or array,
    else as written; (None, None) when the message names no key."""
    m = _CONFIG_KEY_VALUE.search(message)
    if m is not None:
        text = m.group("value")
        try:
            return m.group("key"), json.loads(text)
        except ValueError:
            return m.group("key"), text
    m = _CONFIG_KEY_ONLY.search(message)
    if m is not None:
        return m.group("unknown") or m.group("renamed"), None
    return None, None


def _loads(raw: bytes) -> Any:
    """A request body's JSON (400 naming the parser's reason if it is not)."""
    try:
        return _orjson.loads(raw) if _orjson is not None else json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {err}", "body") from None


def _dumps(obj: Any) -> str:
    """Compact JSON text (orjson when installed), for a stream's data line."""
    if _orjson is not None:
        return _orjson.dumps(obj).decode()
    return json.dumps(obj, separators=(",", ":"))


def _encode_cursor(obj: list) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str, sort: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        got = json.loads(raw)
        key, value, name = got
        if key != sort or not isinstance(name, str):
            raise ValueError
        return float(value), name
    except (ValueError, TypeError, RecursionError):
        raise ApiError(
            400,
            "bad_parameter",
            "cursor is not one this endpoint returned for this sort order",
            "cursor",
            text[:200],
        ) from None


def _after(values: np.ndarray, names: np.ndarray, key: str, desc: bool, cv: float, cn: str) -> int:
    """Index of the first entry of a sorted order past the cursor (value,
    name): keyset paging, so a page never repeats or skips an entry that
    kept its place (see `Frame.order` for the order)."""
    if key == "node":
        if not desc:
            return int(np.searchsorted(names, cn, side="right"))
        return len(names) - int(np.searchsorted(names[::-1], cn, side="left"))
    lo = int(np.searchsorted(values, cv, side="left"))
    hi = int(np.searchsorted(values, cv, side="right"))
    return lo + int(np.searchsorted(names[lo:hi], cn, side="right"))


def _explain(reason: str, detail: str) -> dict:
    """A rejected heartbeat as the API reports it: the ingest's reason, the
    node, and the field and value when the detail names one."""
    node = None
    rest = detail
    m = re.match(r"^node (?P<node>'(?:[^'\\]|\\.)*'|\?)(?:: )?(?P<rest>.*)$", detail, re.S)
    if m:
        node = m.group("node").strip("'") if m.group("node") != "?" else None
        rest = m.group("rest")
    fld: str | None = None
    value: str | None = None
    fv = _FIELD_VALUE.match(rest)
    if fv:
        fld, value = fv.group("field"), fv.group("value")
    else:
        for pattern in (
            r"^missing (\w+)$",
            r"^unknown field '([^']*)'$",
            r"^field '([^']*)' given",
        ):
            mm = re.match(pattern, rest)
            if mm:
                fld = mm.group(1)
                break
        else:
            # "node id 'x y' has a character ...", "zone 'x' contains NUL"
            mm = re.match(r"^(\w+)(?: id)? ('(?:[^'\\]|\\.)*') ", rest)
            if mm:
                fld, value = mm.group(1), mm.group(2)
            else:
                mm = re.match(r"^(\w+) (?:without|is) ", rest)
                if mm and mm.group(1) != "heartbeat":
                    fld = mm.group(1)
    if value is not None and len(value) >= 2 and value[0] == value[-1] == "'":
        value = value[1:-1]  # a string, as it was sent
    return {"reason": reason, "node": node, "field": fld, "value": value, "detail": rest}


# ------------------------------------------------------------------- the API --
class Api:
    """The handlers over one `EngineView`; ``forward(frame) -> str | None``
    sends a heartbeat frame to the ingest (None when sent, else why not)."""

    def __init__(
        self,
        view: EngineView,
        settings: Settings,
        forward: Callable[[bytes], str | None] | None,
        endpoints: list[Endpoint],
    ):
        self.view = view
        self.settings = settings
        self.forward = forward
        self.endpoints = endpoints
        self.streams = 0
        self._summary: dict | None = None
        self._summary_epoch = -1
        self._metrics: Any = None  # a prometheus_client registry, made on first use
        self._leases: Any = None  # shm_engine.http.place.Leases, made on first use
        self._jobs: dict[bytes, tuple] = {}  # place body -> parsed (`parsed_job`)

    def beat(self) -> None:
        """Periodic work (the server calls it every beat): leases that ran out."""
        if self._leases is not None:
            self._leases.sweep()

    def close(self) -> None:
        """Abandon the placements still held (the server is stopping)."""
        if self._leases is not None:
            self._leases.close()
            self._leases = None

    # ------------------------------------------------------------- guards --
    def frame(self) -> Frame:
        try:
            return self.view.frame()
        except NothingPublished:
            raise ApiError(
                503, "nothing_published", "the engine has not published a tick yet"
            ) from None
        except EngineNotRunning as err:  # EngineStopped too
            raise ApiError(503, "engine_stopped", str(err)) from None
        except ReadContention as err:
            raise ApiError(503, "read_contention", str(err)) from None

    def check_token(self, request: Request) -> None:
        """The rules for mutating endpoints (module docstring)."""
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise ApiError(
                403,
                "cross_origin",
                "a mutating request from a page of another origin is refused",
                "Origin",
                origin,
            )
        token = self.settings.token
        if token is None:
            if self.settings.loopback:
                return
            raise ApiError(
                403,
                "mutations_disabled",
                "mutating endpoints are disabled: the server is not bound to loopback "
                "and http.token_file is not set",
            )
        got = request.headers.get("authorization")
        if got is None:
            raise ApiError(401, "token_missing", "this endpoint needs Authorization: Bearer TOKEN")
        scheme, _, given = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(401, "token_invalid", "the bearer token is not the engine's")

    async def body(self, request: Request, limit: int) -> bytes:
        """The request body, refused with 413 past ``limit`` bytes."""
        length = request.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise ApiError(
                    400, "bad_header", "Content-Length is not a number", "Content-Length", length
                ) from None
            if n > limit:
                raise ApiError(
                    413, "body_too_large", f"the body is {n} bytes, more than {limit}", "body", n
                )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, "body_too_large", f"the body is more than {limit} bytes", "body", size
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------- health --
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        v = self.view
        if not v.reader.engine_alive():
            return error_response(503, "engine_stopped", f"engine {v.name!r} is stopping or gone")
        if v.epoch == 0:
            return error_response(503, "nothing_published", "no tick published yet")
        age = v.reader.age_s
        limit = max(READY_MIN_AGE_S, READY_MAX_AGE_TICKS * self.settings.tick_interval_s)
        if age > limit:
            return error_response(
                503,
                "stale",
                f"the latest tick is {age:.3f} s old, more than {limit:g} s",
                age_s=age,
            )
        return JSONResponse({"status": "ready", "epoch": v.epoch, "age_s": age})

    # -------------------------------------------------------------- nodes --
    def _filters(self, request: Request, f: Frame) -> np.ndarray:
        """The slots the query's filters keep (bool per slot)."""
        q = request.query_params
        keep = f.present.copy()
        states = q.getlist("state")
        if states:
            wanted = []
            for part in ",".join(states).split(","):
                part = part.strip().lower()
                if part not in STATE_BY_NAME:
                    raise ApiError(
                        400,
                        "bad_parameter",
                        "state must be one of " + ", ".join(STATE_BY_NAME),
                        "state",
                        part,
                    )
                wanted.append(STATE_BY_NAME[part])
            keep &= np.isin(f.snap.state, wanted)
        zone = q.get("zone")
        labels = q.getlist("label")
        if zone is not None or labels:
            zones, labs = self.view.meta()
            n = len(keep)
            zs = (zones + [""] * n)[:n]
            ls = (labs + [{}] * n)[:n]
            if zone is not None:
                keep &= np.array([z == zone for z in zs], bool)
            for item in labels:
                k, sep, val = item.partition("=")
                if not sep or not k:
                    raise ApiError(
                        400, "bad_parameter", "label must look like KEY=VALUE", "label", item
                    )
                keep &= np.array([lab.get(k) == val for lab in ls], bool)
        prefix = q.get("prefix")
        if prefix:
            keep &= np.char.startswith(f.names, prefix)
        return keep

    def node_item(self, f: Frame, slot: int) -> dict:
        s = f.snap
        rank = int(f.rank[slot])
        zone, labels = self.view.zone_labels(slot)
        return {
            "node": s.nodes[slot],
            "state": state_name(s.state[slot]),
            "score": float(s.score[slot]),
            "raw": float(s.raw[slot]),
            "wait": _finite(s.wait[slot]),
            "liveness": float(s.liveness[slot]),
            "rank": rank if rank >= 0 else None,
            "zone": zone or None,
            "labels": labels,
        }

    async def nodes(self, request: Request) -> Response:
        f = self.frame()
        q = request.query_params
        limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        sort = q.get("sort", "-score")
        desc = sort.startswith("-")
        key = sort.lstrip("-")
        if key not in SORT_KEYS:
            raise ApiError(
                400,
                "bad_parameter",
                "sort must be one of " + ", ".join(SORT_KEYS) + " (prefix - for descending)",
                "sort",
                sort,
            )
        history = q.get("history", "0")
        if history not in ("0", "1"):
            raise ApiError(400, "bad_parameter", "history must be 0 or 1", "history", history)
        keep = self._filters(request, f)
        slots, values, names = f.order(key, desc)
        start = 0
        cursor = q.get("cursor")
        if cursor:
            cv, cn = _decode_cursor(cursor, sort)
            start = _after(values, names, key, desc, cv, cn)
        rest = slots[start:]
        sel_idx = np.flatnonzero(keep[rest])[: limit + 1] + start
        page = sel_idx[:limit]
        items = [self.node_item(f, int(slots[i])) for i in page]
        if history == "1":
            for item, h in zip(items, self.view.score_history(slots[page]), strict=True):
                item["history"] = h
        nxt = None
        if len(sel_idx) > limit:
            last = page[-1]
            nxt = _encode_cursor([sort, float(values[last]), str(names[last])])
        return JSONResponse(
            {
                "epoch": int(f.snap.epoch),
                "total": int(keep.sum()),
                "sort": sort,
                "limit": limit,
                "next_cursor": nxt,
                "nodes": items,
            }
        )

    async def node(self, request: Request) -> Response:
        f = self.frame()
        node = request.path_params["id"]
        slot = f.slot_of.get(node)
        gen = None if slot is None else self.view.registration(slot, node)
        if slot is None or gen is None:
            raise ApiError(
                404, "unknown_node", f"node {node!r} has no score in the latest tick", "id", node
            )
        item = self.node_item(f, slot)
        item["qema"] = float(f.snap.qema[slot])
        item["epoch"] = int(f.snap.epoch)
        item["in_flight"] = self.view.in_flight(slot, gen)
        item["heartbeat"] = self.view.heartbeat(slot, gen)
        item["history"] = self.view.score_history(np.array([slot]))[0]
        recent = self.view.recent.of_node(node)
        item["events"] = None if recent is None else [ev._asdict() for ev in recent]
        return JSONResponse(item)

    # -------------------------------------------------------------- stats --
    async def stats(self, request: Request) -> Response:
        from shm_engine.ops.status import read_status

        f = self.frame()
        try:
            st = read_status(self.view.name, owner=self.view.seg.owner_uid)
        except EngineNotRunning as err:
            raise ApiError(503, "engine_stopped", str(err)) from None
        s = f.snap
        return JSONResponse(
            {
                "engine": st["name"],
                "epoch": int(s.epoch),
                "tick_wall": float(s.tick_time),
                "age_s": st["last_tick_age_s"],
                "counts": {k: int(v) for k, v in s.counts.items()},
                "registered": st["nodes"]["registered"],
                "ranked": len(s.ranked),
                "live": st["live"],
                "ejected": int(s.ejected),
                "pressure": float(s.pressure),
                "weights": {k: float(v) for k, v in s.weights.items()},
                "tick": {
                    "interval_ms": st["tick_interval_ms"],
                    "ticks": st["ticks"],
                    "overruns": st["overruns"],
                    "us": st["tick_us"],
                },
                "ingest": st["ingest"],
                "claims": st["claims"],
                "children": st["children"],
                "config": st["config"],
                "events": st["events"],
            }
        )

    # ------------------------------------------------------------ metrics --
    async def metrics(self, request: Request) -> Response:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
            from prometheus_client.core import CollectorRegistry
        except ImportError:
            raise ApiError(
                501,
                "not_installed",
                "GET /metrics needs prometheus_client: pip install 'shm-engine[http]'",
            ) from None
        from shm_engine.ops.metrics import EngineCollector

        if self._metrics is None:
            reg = CollectorRegistry(auto_describe=False)
            reg.register(EngineCollector(self.view.name, owner=self.view.seg.owner_uid))
            self._metrics = reg
        return Response(generate_latest(self._metrics), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------- stream --
    def current_summary(self) -> dict:
        """The stream's summary of the latest tick (made once per epoch)."""
        epoch = self.view.epoch
        if self._summary is None or epoch != self._summary_epoch:
            self._summary = self.view.summary(self.frame())
            self._summary_epoch = epoch
        return self._summary

    async def stream(self, request: Request) -> Response:
        self._open_stream()
        self.frame()  # 503 before the stream starts, not inside it

        async def events():
            self.streams += 1
            try:
                history = {"summaries": self.view.summaries()}
                yield f"event: history\ndata: {json.dumps(history)}\n\n"
                sent = -1
                quiet = 0.0
                while True:  # ends when the client goes: Starlette cancels it
                    try:
                        summary = self.current_summary()
                    except ApiError as err:
                        yield f"event: error\ndata: {json.dumps({'code': err.code})}\n\n"
                        return
                    if summary["epoch"] != sent:
                        sent = summary["epoch"]
                        quiet = 0.0
                        yield f"event: tick\ndata: {json.dumps(summary)}\n\n"
                    elif quiet >= STREAM_KEEPALIVE_S:
                        quiet = 0.0
                        yield ": keep-alive\n\n"
                    await asyncio.sleep(self.settings.stream_interval_s)
                    quiet += self.settings.stream_interval_s
            finally:
                self.streams -= 1

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def history(self, request: Request) -> Response:
        return JSONResponse({"summaries": self.view.summaries()})

    # ------------------------------------------------------------- events --
    def event_log(self):
        log = self.view.events
        if log is None:
            raise ApiError(
                503, "no_event_log", f"engine {self.view.name!r} has no readable event log"
            )
        return log

    def _open_stream(self) -> None:
        if self.streams >= self.settings.max_streams:
            raise ApiError(
                503,
                "too_many_streams",
                f"{self.settings.max_streams} streams are open (http.max_streams)",
            )

    async def events(self, request: Request) -> Response:
        log = self.event_log()
        q = request.query_params
        limit = _query_int(request, "limit", DEFAULT_EVENTS, 1, MAX_EVENTS)
        node = q.get("node") or None
        head = log.head
        if "after" in q:
            after = _query_int(request, "after", 0, 0, MAX_SEQ)
            batch = log.read(after, node=node, limit=limit)
            events, lost, nxt = batch.events, batch.lost, batch.next_seq
        elif node is None:  # the newest `limit` events
            batch = log.read(max(0, head - limit), limit=limit)
            events, lost, nxt = batch.events, batch.lost, batch.next_seq
        else:  # the node's newest `limit` events: the whole ring, filtered
            batch = log.read(max(0, head - log.capacity), node=node)
            events, lost, nxt = batch.events[-limit:], batch.lost, batch.next_seq
        return JSONResponse(
            {
                "events": [ev._asdict() for ev in events],
                "lost": lost,
                "next_seq": nxt,
                "head": head,
                "capacity": log.capacity,
            }
        )

    async def events_stream(self, request: Request) -> Response:
        log = self.event_log()
        node = request.query_params.get("node") or None
        resume = request.headers.get("last-event-id")
        if resume is not None and resume.strip():
            try:
                seq = int(resume)
                if not 0 <= seq <= MAX_SEQ:
                    raise ValueError
            except ValueError:
                raise ApiError(
                    400,
                    "bad_header",
                    "Last-Event-ID must be an event number this stream sent",
                    "Last-Event-ID",
                    resume[:200],
                ) from None
        elif "after" in request.query_params:
            seq = _query_int(request, "after", 0, 0, MAX_SEQ)
        else:
            seq = log.head  # only what comes next
        self._open_stream()
        interval = self.settings.stream_interval_s
        reader = self.view.reader

        async def messages():
            nonlocal seq
            self.streams += 1
            try:
                # The cursor first: a client that reconnects before any event
                # resumes here, not at the head of its reconnection.
                yield f"retry: 1000\nid: {seq}\n\n"
                sent_id, quiet = seq, 0.0
                while True:  # ends when the client goes: Starlette cancels it
                    # While this waits in a send to a slow client, the ring
                    # moves on: the next read counts what it overwrote as lost.
                    batch = log.read(seq, node=node, limit=STREAM_EVENTS)
                    seq = batch.next_seq
                    if batch.events or batch.lost:
                        body = {
                            "events": [ev._asdict() for ev in batch.events],
                            "lost": batch.lost,
                            "next_seq": seq,
                        }
                        yield f"id: {seq}\nevent: events\ndata: {_dumps(body)}\n\n"
                        sent_id, quiet = seq, 0.0
                    if seq < log.head:  # more is waiting: let other requests in first
                        await asyncio.sleep(0)
                        continue
                    if quiet >= STREAM_KEEPALIVE_S:
                        if not reader.engine_alive():
                            yield 'event: error\ndata: {"code": "engine_stopped"}\n\n'
                            return
                        # The cursor moves past other nodes' events too.
                        cursor = f"id: {seq}\n" if seq != sent_id else ""
                        yield f"{cursor}: keep-alive\n\n"
                        sent_id, quiet = seq, 0.0
                    await asyncio.sleep(interval)
                    quiet += interval
            finally:
                self.streams -= 1

        return StreamingResponse(
            messages(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------- reload --
    async def reload(self, request: Request) -> Response:
        from shm_engine.ops.reload import ReloadTimeout, request_reload

        view = self.view
        try:
            # In a thread: the call signals the supervisor and polls for its result.
            result = await asyncio.to_thread(
                request_reload,
                view.name,
                timeout=self.settings.reload_timeout_s,
                owner=view.seg.owner_uid,
            )
        except ReloadTimeout as err:
            raise ApiError(504, "reload_timeout", str(err)) from None
        except EngineNotRunning as err:
            raise ApiError(503, "engine_not_running", str(err)) from None
        body = result.as_dict()
        if result.status == "invalid":
            message = result.error or "the configuration file is invalid"
            key, value = config_error_field(message)
            return error_response(422, "invalid_config", message, key, value, reload=body)
        return JSONResponse(body)

    # ------------------------------------------------------------ placement --
    async def json_raw(self, request: Request) -> bytes:
        """The request's body, checked to be application/json and at most
        max_body_bytes."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(
                415,
                "unsupported_media_type",
                "send the body as application/json",
                "Content-Type",
                ctype or None,
            )
        return await self.body(request, self.settings.max_body_bytes)

    async def json_body(self, request: Request) -> Any:
        """The request's JSON body (application/json, at most max_body_bytes)."""
        return _loads(await self.json_raw(request))

    def parsed_job(self, body: Any, key: bytes):
        """(job, ttl_s, explain, zones) of one job of a place request, from
        a cache of the last `JOB_CACHE` distinct ones by ``key`` (their
        JSON: schedulers send the same few job shapes over and over, and a
        Job is immutable); ApiError 422 for an invalid one."""
        from shm_engine.http.place import BadJob, parse_place

        got = self._jobs.get(key)
        if got is None:
            st = self.settings
            try:
                got = parse_place(body, st.place_ttl_s, st.max_place_ttl_s)
            except BadJob as err:
                raise ApiError(422, "invalid_job", str(err), err.field, err.value) from None
            if len(self._jobs) >= JOB_CACHE:
                self._jobs.clear()
            self._jobs[key] = got
        return got

    def leases(self):
        if self._leases is None:
            from clients.placer import Placer
            from shm_engine.http.place import Leases

            view = self.view
            self._leases = Leases(lambda: Placer.attach(view.name, owner=view.seg.owner_uid))
        return self._leases

    def place_one(self, job, ttl_s: float, explain: bool, zones) -> dict:
        """Place one parsed job; its placement as the API returns it.
        ApiError for what the client must hear (409 unschedulable, ...)."""
        from shm_engine.http.place import explanation_json

        leases = self.leases()
        try:
            try:
                lease = leases.place(job, ttl_s, explain, zones)
            except LeaseRevoked:  # the engine reaped this process's lease: take a new one
                lease = leases.place(job, ttl_s, explain, zones)
        except Unschedulable as err:
            raise ApiError(
                409,
                "unschedulable",
                str(err),
                counts=err.counts,
                explain=explanation_json(err.explain),
            ) from None
        except ReservationLimitReached as err:
            raise ApiError(503, "reservation_limit", str(err)) from None
        except (SchedulerLimitReached, LeaseRevoked) as err:
            raise ApiError(503, "scheduler_limit", str(err)) from None
        except NothingPublished:
            raise ApiError(
                503, "nothing_published", "the engine has not published a tick yet"
            ) from None
        except (EngineNotRunning, LayoutMismatch) as err:
            raise ApiError(503, "engine_stopped", str(err)) from None
        except ValueError as err:  # a resource the engine does not place, or too much of one
            m = re.match(r"request '?([^'=:]+)'?", str(err))
            name = m.group(1) if m else None
            raise ApiError(
                422,
                "invalid_job",
                str(err),
                f"requests.{name}" if name else "requests",
                job.requests.get(name) if name else None,
            ) from None
        return lease.as_dict()

    async def place(self, request: Request) -> Response:
        raw = await self.json_raw(request)
        if raw.lstrip()[:1] != b"[":  # one job (the common case: parsed from the cache)
            job = self._jobs.get(raw) or self.parsed_job(_loads(raw), raw)
            return JSONResponse(self.place_one(*job))
        body = _loads(raw)
        if not isinstance(body, list) or not 1 <= len(body) <= MAX_PLACE_BATCH:
            n = len(body) if isinstance(body, list) else None
            raise ApiError(422, "bad_batch", f"a batch places 1..{MAX_PLACE_BATCH} jobs", "body", n)
        results = []
        for i, item in enumerate(body):
            try:
                key = _orjson.dumps(item) if _orjson is not None else json.dumps(item).encode()
                results.append(self.place_one(*self.parsed_job(item, key)))
            except ApiError as err:
                if err.code in ("engine_stopped", "nothing_published"):
                    raise  # the engine, not this job: the whole request fails
                if err.field is not None and err.field != "body":
                    err.field = f"[{i}].{err.field}"
                results.append({"error": err.body()})
        return JSONResponse({"results": results})

    async def release(self, request: Request) -> Response:
        from shm_engine.http.place import LeaseExpired, UnknownPlacement

        body = await self.json_body(request)
        batch = isinstance(body, list)
        items = body if batch else [body]
        if batch and not 1 <= len(items) <= MAX_RELEASES:
            raise ApiError(
                422,
                "bad_batch",
                f"a batch releases 1..{MAX_RELEASES} placements",
                "body",
                len(items),
            )
        checked = []
        for i, item in enumerate(items):
            at = f"[{i}]." if batch else ""
            if not isinstance(item, dict):
                raise ApiError(
                    422, "bad_field", "a release is an object {id, ok}", "body", type(item).__name__
                )
            unknown = set(item) - {"id", "ok"}
            if unknown:
                name = sorted(unknown)[0]
                raise ApiError(422, "bad_field", f"unknown field {name!r}", at + name, item[name])
            pid, ok = item.get("id"), item.get("ok")
            if not isinstance(pid, str) or not pid:
                raise ApiError(
                    422, "bad_field", "id must be the id POST /v1/place returned", at + "id", pid
                )
            if not isinstance(ok, bool):
                raise ApiError(
                    422, "bad_field", "ok must be true (the job succeeded) or false", at + "ok", ok
                )
            checked.append((pid, ok))
        leases = self.leases()
        results = []
        for pid, ok in checked:
            try:
                lease, held = leases.release(pid, ok)
            except LeaseExpired:
                err = ApiError(
                    410,
                    "lease_expired",
                    "the placement's lease ran out: its reservation was returned",
                    "id",
                    pid,
                )
            except UnknownPlacement:
                err = ApiError(
                    404, "unknown_placement", "no placement held with this id", "id", pid
                )
            else:
                results.append({"id": pid, "node": lease.placement.node, "ok": ok, "held": held})
                continue
            if not batch:
                raise err
            e = {"status": err.status, "code": err.code, "message": err.message}
            results.append({"id": pid, "error": e})
        if batch:
            return JSONResponse({"results": results})
        return JSONResponse(results[0])

    # ---------------------------------------------------------- heartbeat --
    async def heartbeat(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(
                415,
                "unsupported_media_type",
                "send the heartbeat as application/json",
                "Content-Type",
                ctype or None,
            )
        st = self.settings
        limit = min(st.max_body_bytes, st.max_message_bytes)
        frame = await self.body(request, limit)
        if self.forward is None:
            raise ApiError(
                503,
                "heartbeats_unavailable",
                "POST /v1/heartbeat is off: the ingest uses CURVE and "
                "http.curve_client_key_file is not set",
            )
        # The ingest decodes it again and counts every reject (the counters
        # of ZeroMQ senders); this decode, by the same function, is for the
        # reply.  A frame over max_frame_bytes is forwarded too: the ingest
        # counts it frame_too_large, as it does one sent over ZeroMQ.
        dec = decode_frame(frame, st.max_frame_bytes)
        why = self.forward(frame)
        if why is not None:
            raise ApiError(503, "ingest_unavailable", why)
        if len(frame) <= st.max_frame_bytes and json_array_items(frame) > st.max_heartbeats:
            raise ApiError(  # the ingest refuses it whole, undecoded (and counts it)
                413,
                "too_many_heartbeats",
                f"more than ingest.max_heartbeats_per_frame ({st.max_heartbeats}) heartbeats",
                "body",
                json_array_items(frame),
            )
        accepted = len(dec.records)
        if not dec.rejects:
            return JSONResponse({"accepted": accepted, "rejected": {}}, status_code=202)
        if "frame_too_large" in dec.rejects:
            raise ApiError(
                413,
                "frame_too_large",
                f"the heartbeat is {len(frame)} bytes, more than ingest.max_frame_bytes "
                f"({st.max_frame_bytes})",
                "body",
                len(frame),
            )
        errors = _explain_all(frame)
        first: dict[str, Any] = (
            errors[0] if errors else {"field": None, "value": None, "reason": "malformed_frame"}
        )
        body = {
            "accepted": accepted,
            "rejected": dict(dec.rejects),
            "errors": errors,
        }
        if accepted:
            return JSONResponse(body, status_code=202)
        return error_response(
            400,
            first["reason"],
            first.get("detail") or "the heartbeat was rejected",
            first.get("field"),
            first.get("value"),
            node=first.get("node"),
            rejected=body["rejected"],
            errors=errors,
        )

    # ------------------------------------------------------------ openapi --
    async def openapi_json(self, request: Request) -> Response:
        return JSONResponse(openapi(self.endpoints))

    async def index(self, request: Request) -> Response:
        html = resources.files("shm_engine.http").joinpath("static/index.html").read_bytes()
        return Response(
            html,
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache"},
        )


def _explain_all(frame: bytes) -> list[dict]:
    """Each rejected heartbeat of a JSON frame, explained (first
    `MAX_EXPLAINED`), by the checks the decoder runs."""
    try:
        value = parse_json(frame)
    except Reject as rej:
        return [
            {"reason": rej.reason, "node": None, "field": None, "value": None, "detail": rej.detail}
        ]
    items = value if isinstance(value, list) else [value]
    if not isinstance(value, (list, dict)):
        return [
            {
                "reason": "malformed_frame",
                "node": None,
                "field": None,
                "value": None,
                "detail": f"top level is {type(value).__name__}, not object or array",
            }
        ]
    out: list[dict[str, Any]] = []
    for i, obj in enumerate(items):
        e: dict[str, Any]
        if not isinstance(obj, dict):
            e = {
                "reason": "malformed_heartbeat",
                "node": None,
                "field": None,
                "value": None,
                "detail": f"array element is {type(obj).__name__}, not an object",
            }
        else:
            try:
                check_mapping(obj)
                continue
            except Reject as rej:
                e = _explain(rej.reason, rej.detail)
                node = obj.get("node")
                e["node"] = node if isinstance(node, str) else e["node"]
        e["index"] = i
        out.append(e)
        if len(out) >= MAX_EXPLAINED:
            break
    return out


# --------------------------------------------------------------- the table --
def _p(name: str, where: str, desc: str, schema: dict | None = None, required: bool = False):
    return {
        "name": name,
        "in": where,
        "description": desc,
        "required": required or where == "path",
        "schema": schema or {"type": "string"},
    }


_STRINGS = {"type": "array", "items": {"type": "string"}}
PLACE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0},
            "description": "resource -> amount, in the resource's unit ([placement] resources)",
        },
        "selector": {"type": "object", "additionalProperties": {"type": "string"}},
        "affinity": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "key": {"type": "string"},
                    "op": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": _STRINGS,
                    "weight": {"type": "number", "minimum": 0},
                },
                "required": ["key", "op"],
            },
        },
        "tolerations": _STRINGS,
        "zone": {"oneOf": [{"type": "string"}, _STRINGS]},
        "prefer_zones": _STRINGS,
        "data": _STRINGS,
        "group": {"type": "string"},
        "spread": {"type": "integer", "minimum": 0},
        "ttl_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "the lease (default http.place_ttl_s, at most http.max_place_ttl_s)",
        },
        "explain": {"type": "boolean"},
        "zones": {"oneOf": [{"type": "string"}, _STRINGS], "description": "scope: only these"},
    },
}
_RELEASE_ONE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"id": {"type": "string"}, "ok": {"type": "boolean"}},
    "required": ["id", "ok"],
}
RELEASE_SCHEMA = {
    "oneOf": [_RELEASE_ONE, {"type": "array", "items": _RELEASE_ONE, "maxItems": MAX_RELEASES}]
}


def endpoints() -> list[Endpoint]:
    """The route table (module docstring)."""
    state_enum = {"type": "string", "enum": list(STATE_BY_NAME)}
    return [
        Endpoint("GET", "/healthz", Api.healthz, "The HTTP server is up", responses={200: "up"}),
        Endpoint(
            "GET",
            "/readyz",
            Api.readyz,
            "Ready: the engine runs, has published, and its latest tick is fresh",
            responses={200: "ready", 503: "not ready: code says why"},
        ),
        Endpoint(
            "GET",
            "/v1/nodes",
            Api.nodes,
            "Nodes of the latest tick, filtered, sorted and paged (keyset cursor)",
            params=(
                _p("state", "query", "keep these states (comma-separated or repeated)", state_enum),
                _p("zone", "query", "keep nodes of this zone"),
                _p("label", "query", "keep nodes with label KEY=VALUE (repeat: all must match)"),
                _p("prefix", "query", "keep node ids starting with this"),
                _p(
                    "sort",
                    "query",
                    "score, raw, wait, liveness or node; prefix - for "
                    "descending (default -score: the ranking)",
                ),
                _p(
                    "limit",
                    "query",
                    f"nodes per page, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                ),
                _p("cursor", "query", "next_cursor of the previous page"),
                _p(
                    "history",
                    "query",
                    "1: each node's score once a second for the last minute",
                    {"type": "integer", "enum": [0, 1]},
                ),
            ),
            responses={
                200: "a page of nodes",
                400: "a bad parameter (field names it)",
                503: "nothing published yet, or the engine is gone",
            },
        ),
        Endpoint(
            "GET",
            "/v1/nodes/{id}",
            Api.node,
            "One node: score, raw, state, wait, liveness, rank, in-flight claims, its "
            "latest heartbeat, score history and latest events (null: no event log)",
            params=(_p("id", "path", "node id (it may contain /)"),),
            responses={200: "the node", 404: "no such node in the latest tick"},
            route="/v1/nodes/{id:path}",
        ),
        Endpoint(
            "GET",
            "/v1/stats",
            Api.stats,
            "Counts per state, pressure, weights in effect, tick, ingest and claims "
            "counters, the configuration in effect (version, latest reload), the event log",
            responses={200: "the engine's numbers"},
        ),
        Endpoint(
            "GET",
            "/v1/stats/history",
            Api.history,
            "One summary per second for the last ten minutes",
            responses={200: "summaries, oldest first"},
        ),
        Endpoint(
            "GET",
            "/v1/stream",
            Api.stream,
            "Server-sent events: `history` once, then `tick` (a compact summary) "
            "at most every http.stream_interval_ms",
            responses={200: "an event stream", 503: "too many streams"},
            content="text/event-stream",
        ),
        Endpoint(
            "GET",
            "/v1/events",
            Api.events,
            "The event log: node state changes and why, oldest first. With after: "
            "the events numbered above it (pass next_seq next time; lost counts those "
            "the ring overwrote first); without: the newest limit events",
            params=(
                _p(
                    "after",
                    "query",
                    "the next_seq of the previous reply (0: all the ring keeps)",
                    {"type": "integer", "minimum": 0},
                ),
                _p("node", "query", "only this node's events (the cursor moves past others')"),
                _p(
                    "limit",
                    "query",
                    f"events considered, 1..{MAX_EVENTS} (default {DEFAULT_EVENTS})",
                    {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
                ),
            ),
            responses={
                200: "events, lost, next_seq, head, capacity",
                400: "a bad parameter (field names it)",
                503: "the engine has no readable event log",
            },
        ),
        Endpoint(
            "GET",
            "/v1/events/stream",
            Api.events_stream,
            "Server-sent events of the event log: `events` messages (events, lost, "
            "next_seq) whose id is the cursor; a reconnecting client's Last-Event-ID "
            "resumes there. A client too slow to take them loses the oldest, counted "
            "in lost; the engine never waits for it",
            params=(
                _p(
                    "after",
                    "query",
                    "start after this event number (default: the newest; Last-Event-ID wins)",
                    {"type": "integer", "minimum": 0},
                ),
                _p("node", "query", "only this node's events"),
            ),
            responses={
                200: "an event stream",
                400: "a bad parameter or Last-Event-ID",
                503: "no event log, or too many streams",
            },
            content="text/event-stream",
        ),
        Endpoint(
            "POST",
            "/v1/heartbeat",
            Api.heartbeat,
            "Send heartbeats (one JSON object or an array), checked as the ZeroMQ ingest "
            "checks them and counted in the same reject counters",
            mutating=True,
            body=True,
            request={
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"type": "object"},
                                {"type": "array", "items": {"type": "object"}},
                            ]
                        }
                    }
                },
            },
            responses={
                202: "forwarded to the ingest; accepted: the valid ones, which the ingest "
                "may still refuse on admission (allow_nodes, the API key's bindings, the "
                "registration budget, a full registry), counted like any sender's",
                400: "every heartbeat rejected: reason, field and value",
                401: "token missing or wrong",
                403: "mutations disabled",
                413: "body too large",
                415: "not application/json",
                503: "the ingest cannot take it now",
            },
        ),
        Endpoint(
            "POST",
            "/v1/place",
            Api.place,
            "Place a job (a Job as JSON) on a node that can take it, its capacity "
            "reserved there and held for ttl_s seconds (a lease): release it with "
            "POST /v1/release, or it is returned when the lease runs out. An array "
            f"places up to {MAX_PLACE_BATCH} jobs, each on its own",
            mutating=True,
            body=True,
            request={
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                PLACE_SCHEMA,
                                {
                                    "type": "array",
                                    "items": PLACE_SCHEMA,
                                    "maxItems": MAX_PLACE_BATCH,
                                },
                            ]
                        }
                    }
                },
            },
            responses={
                200: "the placement: id, node, zone, reserved, score, parts, ttl_s, "
                "expires_at (unix time), explain (when asked); for a batch, results in "
                "order, each a placement or {error} as the single request would have it",
                400: "the body is not JSON",
                401: "token missing or wrong",
                403: "mutations disabled",
                409: "no node can take the job now: counts per filter (and explain)",
                413: "body too large",
                415: "not application/json",
                422: "an invalid job: field and value name what is wrong",
                503: "the engine is not running or has not published, or this server "
                "holds as many placements as it may ([placement] max_reservations)",
            },
        ),
        Endpoint(
            "POST",
            "/v1/release",
            Api.release,
            "Release a placement with the job's outcome ({id, ok}), or a batch of "
            f"them (an array of up to {MAX_RELEASES}; each answered in results)",
            mutating=True,
            body=True,
            request={
                "required": True,
                "content": {"application/json": {"schema": RELEASE_SCHEMA}},
            },
            responses={
                200: "released: node, ok, held (false if the engine had returned the "
                "reservation already); for a batch, results in order",
                400: "the body is not JSON",
                401: "token missing or wrong",
                403: "mutations disabled",
                404: "no placement held with this id",
                410: "the placement's lease ran out (it was returned)",
                422: "a bad field (field and value name it)",
            },
        ),
        Endpoint(
            "POST",
            "/v1/reload",
            Api.reload,
            "Re-read the engine's configuration file (as SIGHUP does): the whole file "
            "is validated first; [score] keys take effect at the next tick; other "
            "changed keys are reported in restart_needed, not applied",
            mutating=True,
            responses={
                200: "the reload's result: status (applied or unchanged), config_version, "
                "config_hash, applied, restart_needed",
                401: "token missing or wrong",
                403: "mutations disabled",
                422: "the file is invalid and nothing changed: field and value name the "
                "key and its value; reload holds the result",
                503: "the engine (its supervisor) is not running",
                504: "no reload finished within the timeout (the supervisor is busy or hung)",
            },
        ),
        Endpoint(
            "GET",
            "/metrics",
            Api.metrics,
            "Prometheus metrics (the exporter's)",
            responses={200: "text exposition format"},
            content="text/plain",
        ),
        Endpoint(
            "GET",
            "/openapi.json",
            Api.openapi_json,
            "This document",
            responses={200: "OpenAPI 3.1"},
        ),
        Endpoint(
            "GET", "/", Api.index, "The web dashboard", responses={200: "HTML"}, content="text/html"
        ),
    ]


def openapi(table: list[Endpoint]) -> dict:
    """The OpenAPI 3.1 document of a route table."""
    from shm_engine.core.layout import LAYOUT_VERSION

    error = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                    "value": {},
                },
                "required": ["status", "code", "message", "field", "value"],
            }
        },
    }
    paths: dict[str, dict] = {}
    for ep in table:
        op: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
            "responses": {},
        }
        if ep.params:
            op["parameters"] = list(ep.params)
        if ep.request:
            op["requestBody"] = ep.request
        if ep.mutating:
            op["security"] = [{"bearer": []}]
        for status, desc in sorted((ep.responses or {200: "OK"}).items()):
            resp: dict[str, Any] = {"description": desc}
            if status < 300:
                resp["content"] = {ep.content: {}}
            else:
                resp["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                }
            op["responses"][str(status)] = resp
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shm-engine",
            "version": f"{API_VERSION} (layout {LAYOUT_VERSION})",
            "description": "Node scores of one engine, read from its shared memory.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": error},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


# ------------------------------------------------------------------- the app --
def _endpoint(api: Api, ep: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            if ep.mutating:
                api.check_token(request)
            return await ep.handler(api, request)
        except ApiError as err:
            return err.response()

    endpoint.__name__ = ep.handler.__name__
    return endpoint


def _route(api: Api, ep: Endpoint) -> Route:
    path = ep.route or ep.path
    return Route(path, _endpoint(api, ep), methods=[ep.method], name=ep.handler.__name__)


class _Exact:
    """ASGI: requests for a path of the table without parameters go straight
    to its endpoint (a dict lookup, not Starlette's route-by-route match and
    middleware: about a third of a small request's cost in the server); any
    other request, a wrong method included, goes to ``app``."""

    def __init__(self, app, table: dict[tuple[str, str], Callable]):
        self.app = app
        self.table = table

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            endpoint = self.table.get((scope["method"], scope["path"]))
            if endpoint is not None:
                try:
                    response = await endpoint(Request(scope, receive))
                except Exception as exc:  # noqa: BLE001 - as Starlette's handler would
                    response = await _internal_error(Request(scope), exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {
        404: f"no endpoint {request.url.path} (GET /openapi.json lists them)",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message)


async def _internal_error(request: Request, exc: Exception) -> Response:
    from shm_engine.core.runtime import log_event

    log_event("ERROR", "http_internal_error", path=request.url.path, error=repr(repr(exc)))
    return error_response(500, "internal_error", f"{type(exc).__name__}: the server failed")


class _HostCheck:
    """ASGI middleware: 421 unless the Host header names one of ``hosts``."""

    def __init__(self, app, hosts: tuple[str, ...]):
        self.app = app
        self.hosts = frozenset(hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = ""
            for k, v in scope["headers"]:
                if k == b"host":
                    host = v.decode("latin-1")
                    break
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.hosts:
                resp = error_response(
                    421,
                    "misdirected_request",
                    "this server answers only to a loopback host name",
                    "Host",
                    host,
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    view: EngineView,
    settings: Settings,
    forward: Callable[[bytes], str | None] | None = None,
    extra: list[Endpoint] | None = None,
) -> tuple[Any, Api]:
    """The ASGI app over ``view`` (and the `Api` behind it): Starlette for
    every route, behind `_Exact` for the paths without parameters and, on a
    loopback bind, `_HostCheck` in front of both.  ``extra``: more rows for
    the route table."""
    table = endpoints() + list(extra or ())
    api = Api(view, settings, forward, table)
    static = StaticFiles(packages=[("shm_engine.http", "static")])
    routes: list[Route | Mount] = [_route(api, ep) for ep in table]
    routes.append(Mount("/static", app=static, name="static"))
    starlette = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    exact = {(ep.method, ep.path): _endpoint(api, ep) for ep in table if ep.route is None}
    app: Any = _Exact(starlette, exact)
    if settings.allowed_hosts:
        app = _HostCheck(app, hosts=settings.allowed_hosts)
    return app, api
