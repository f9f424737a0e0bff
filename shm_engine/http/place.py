"""Placement for remote schedulers: POST /v1/place and POST /v1/release.

A scheduler that is not a Python process on the engine's host places jobs
through the HTTP server, which places them with its own `clients.Placer`
and holds each `Placement` for the client under an id, with a **lease**:

- a request asks for ``ttl_s`` seconds (default ``[http] place_ttl_s``, at
  most ``[http] max_place_ttl_s``); the job is placed with that
  ``deadline_s``, so the engine itself returns the reservation at the
  deadline even if this server dies;
- `Leases.sweep` (the server calls it every beat, and before each place
  and release) abandons every placement whose lease ran out: the
  reservation is returned (if the engine has not already) and the claim is
  closed without an outcome (counted as dropped: the job's fate is
  unknown, so the node is neither credited nor blamed);
- a release after that is answered 410 (the id is remembered for a while,
  `EXPIRED_KEPT`), an id never issued 404.

Rules for callers: one thread (the server's event loop: a Placer is used by
one thread at a time); placement is a compiled scan and a compare-and-swap,
microseconds, so it runs on the loop.  ``close()`` abandons every
placement still held.
"""

from __future__ import annotations

import heapq
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from clients.placer import Affinity, Explanation, Job, Placement, Placer

__all__ = [
    "BadJob",
    "EXPIRED_KEPT",
    "Lease",
    "LeaseExpired",
    "Leases",
    "UnknownPlacement",
    "explanation_json",
    "parse_place",
]

EXPIRED_KEPT = 65536  # expired ids remembered, to answer 410 rather than 404
_JOB_FIELDS = (
    "requests",
    "selector",
    "affinity",
    "tolerations",
    "zone",
    "prefer_zones",
    "data",
    "group",
    "spread",
)
_FIELDS = frozenset(_JOB_FIELDS + ("ttl_s", "explain", "zones"))


class BadJob(ValueError):
    """A place request the API refuses: the field at fault and its value."""

    def __init__(self, message: str, field: str | None, value: Any = None):
        super().__init__(message)
        self.field, self.value = field, value


class UnknownPlacement(KeyError):
    """A release of an id this server never issued (or released already)."""


class LeaseExpired(KeyError):
    """A release of a placement whose lease ran out (it was returned)."""


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadJob(f"{field} must be a number", field, value)
    return float(value)


def _strings(field: str, value: Any, one_allowed: bool = False) -> tuple[str, ...]:
    if one_allowed and isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        what = "a string or an array of strings" if one_allowed else "an array of strings"
        raise BadJob(f"{field} must be {what}", field, value)
    return tuple(value)


def _affinity(i: int, term: Any) -> Affinity:
    field = f"affinity[{i}]"
    if not isinstance(term, dict):
        raise BadJob(f"{field} must be an object {{key, op, values, weight}}", field, term)
    unknown = set(term) - {"key", "op", "values", "weight"}
    if unknown:
        name = sorted(unknown)[0]
        raise BadJob(f"{field} has an unknown field {name!r}", f"{field}.{name}", term[name])
    key, op = term.get("key"), term.get("op")
    if not isinstance(key, str) or not key:
        raise BadJob(f"{field}.key must be a non-empty string", f"{field}.key", key)
    if not isinstance(op, str):
        raise BadJob(f"{field}.op must be a string", f"{field}.op", op)
    values = _strings(f"{field}.values", term.get("values", []))
    weight = _number(f"{field}.weight", term.get("weight", 0))
    try:
        return Affinity(key, op, values, weight).checked()
    except ValueError as err:
        raise BadJob(str(err), field, term) from None


def parse_place(
    body: Any, default_ttl_s: float, max_ttl_s: float
) -> tuple[Job, float, bool, tuple[str, ...] | None]:
    """(job, ttl_s, explain, zones) of a POST /v1/place body (parsed JSON).
    Raises BadJob naming the field and value."""
    if not isinstance(body, dict):
        raise BadJob("the body must be a JSON object (a job)", "body", type(body).__name__)
    unknown = set(body) - _FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise BadJob(
            f"unknown field {name!r}; a job has {', '.join(sorted(_FIELDS))}", name, body[name]
        )
    kw: dict[str, Any] = {}
    requests = body.get("requests", {})
    if not isinstance(requests, dict):
        raise BadJob("requests must be an object: resource -> amount", "requests", requests)
    for name, amount in requests.items():
        x = _number(f"requests.{name}", amount)
        if not (math.isfinite(x) and x >= 0):
            raise BadJob(
                f"requests.{name} must be a finite number >= 0", f"requests.{name}", amount
            )
    kw["requests"] = requests
    selector = body.get("selector", {})
    if not isinstance(selector, dict):
        raise BadJob("selector must be an object: label -> value", "selector", selector)
    for k, v in selector.items():
        if not isinstance(v, str):
            raise BadJob(f"selector.{k} must be a string", f"selector.{k}", v)
    kw["selector"] = selector
    affinity = body.get("affinity", [])
    if not isinstance(affinity, list):
        raise BadJob("affinity must be an array of terms", "affinity", affinity)
    kw["affinity"] = tuple(_affinity(i, t) for i, t in enumerate(affinity))
    for name in ("tolerations", "prefer_zones", "data"):
        if name in body:
            kw[name] = _strings(name, body[name])
    if body.get("zone") is not None:
        kw["zone"] = _strings("zone", body["zone"], one_allowed=True)
    group = body.get("group")
    if group is not None and (not isinstance(group, str) or not group):
        raise BadJob("group must be a non-empty string", "group", group)
    kw["group"] = group
    spread = body.get("spread", 0)
    if isinstance(spread, bool) or not isinstance(spread, int):
        raise BadJob("spread must be an integer", "spread", spread)
    kw["spread"] = spread
    ttl = body.get("ttl_s")
    ttl_s = default_ttl_s if ttl is None else _number("ttl_s", ttl)
    if not (math.isfinite(ttl_s) and 0 < ttl_s <= max_ttl_s):
        raise BadJob(
            f"ttl_s must be > 0 and at most http.max_place_ttl_s ({max_ttl_s:g})", "ttl_s", ttl
        )
    explain = body.get("explain", False)
    if not isinstance(explain, bool):
        raise BadJob("explain must be true or false", "explain", explain)
    zones = None
    if body.get("zones") is not None:
        zones = _strings("zones", body["zones"], one_allowed=True)
    try:
        job = Job(deadline_s=ttl_s, **kw)
    except ValueError as err:
        # Job's own rules (e.g. spread without a group, a bad toleration).
        text = str(err)
        field = next((f for f in _JOB_FIELDS if text.startswith(f.rstrip("s"))), None)
        raise BadJob(text, field, body.get(field) if field else None) from None
    return job, ttl_s, explain, zones


def explanation_json(exp: Explanation | None) -> dict | None:
    if exp is None:
        return None
    return {
        "nodes": exp.nodes,
        "feasible": exp.feasible,
        "eliminated": dict(exp.eliminated),
        "top": [{"node": c.node, "total": c.total, "parts": dict(c.parts)} for c in exp.top],
    }


class Lease:
    """A placement held for a remote client until ``expires_mono``."""

    __slots__ = ("id", "placement", "ttl_s", "expires_mono", "expires_wall")

    def __init__(self, id_: str, placement: Placement, ttl_s: float, now: float, wall: float):
        self.id, self.placement, self.ttl_s = id_, placement, ttl_s
        self.expires_mono, self.expires_wall = now + ttl_s, wall + ttl_s

    def as_dict(self) -> dict:
        p = self.placement
        out = {
            "id": self.id,
            "node": p.node,
            "zone": p.zone,
            "reserved": p.reserved,
            "score": p.score,
            "parts": p.parts,
            "ttl_s": self.ttl_s,
            "expires_at": self.expires_wall,
        }
        if p.explain is not None:
            out["explain"] = explanation_json(p.explain)
        return out


class Leases:
    """The placements this server holds for remote clients (module docstring).

    ``attach()`` makes the `Placer` on first use (so a server whose engine
    places nothing never takes a scheduler lease); its errors propagate."""

    def __init__(self, attach: Callable[[], Placer], clock: Callable[[], float] = time.monotonic):
        self._attach = attach
        self.clock = clock  # monotonic seconds (tests may set their own)
        self._placer: Placer | None = None
        self._held: dict[str, Lease] = {}
        self._heap: list[tuple[float, str]] = []
        self._expired: OrderedDict[str, float] = OrderedDict()
        self.expired = 0  # leases that ran out, since start

    def __len__(self) -> int:
        return len(self._held)

    def placer(self) -> Placer:
        if self._placer is None:
            self._placer = self._attach()
        return self._placer

    def place(
        self, job: Job, ttl_s: float, explain: bool = False, zones: tuple[str, ...] | None = None
    ) -> Lease:
        """Place ``job`` and hold it for ``ttl_s`` seconds.  Raises what
        `Placer.place` raises."""
        self.sweep()
        p = self.placer().place(job, explain=explain, zones=zones)
        lease = Lease(secrets.token_urlsafe(12), p, ttl_s, self.clock(), time.time())
        self._held[lease.id] = lease
        heapq.heappush(self._heap, (lease.expires_mono, lease.id))
        if len(self._heap) > 2 * len(self._held) + 1024:
            # Released leases leave their heap entries behind: rebuild.
            self._heap = [(x.expires_mono, x.id) for x in self._held.values()]
            heapq.heapify(self._heap)
        return lease

    def release(self, id_: str, ok: bool) -> tuple[Lease, bool]:
        """Release placement ``id_`` with the job's outcome: (its lease,
        whether the reservation was still held).  Raises LeaseExpired,
        UnknownPlacement."""
        self.sweep()
        lease = self._held.pop(id_, None)
        if lease is None:
            if id_ in self._expired:
                raise LeaseExpired(id_)
            raise UnknownPlacement(id_)
        return lease, lease.placement.release(ok=ok)

    def sweep(self) -> int:
        """Abandon every placement whose lease ran out; returns how many."""
        now = self.clock()
        heap = self._heap
        n = 0
        while heap and heap[0][0] <= now:
            _t, id_ = heapq.heappop(heap)
            lease = self._held.get(id_)
            if lease is None or lease.expires_mono > now:
                continue  # released already
            del self._held[id_]
            lease.placement.abandon()
            self._expired[id_] = now
            if len(self._expired) > EXPIRED_KEPT:
                self._expired.popitem(last=False)
            n += 1
        self.expired += n
        return n

    def close(self) -> None:
        for lease in self._held.values():
            lease.placement.abandon()
        self._held.clear()
        self._heap.clear()
        if self._placer is not None:
            self._placer.close()
            self._placer = None
