"""Independent reference for the desirability score (version 2) and replay.

Written from SCORING.md (version 2) and the readings in docs/scoring.md alone,
never from the engine, so that a disagreement between the two points at a bug
in one of them. It is deliberately slow and plain: one ``Node`` object per
registered node, one method per step, every expression in the order the
definition writes it (float64, left to right; results are compared to 1e-9).

Invariants this module keeps, and callers may rely on:
- a rejected heartbeat changes nothing (not even liveness); it is only counted
  in ``ReplayResult.rejections`` under its reason;
- feedback for a node that is not registered when it is applied changes
  nothing; it is only counted in ``ReplayResult.ignored_feedback``;
- everything a node accumulated (queue EMA, smoothing, error window, feedback,
  quarantine history) lives on its ``Node``, which is dropped when the node is
  forgotten: a later registration starts from zero;
- records come out ticks ascending, slots ascending within a tick, with exactly
  the keys of a replay line.

Readings that SCORING.md does not settle are marked ``READING:`` below (and
listed in docs/scoring.md); they only affect which reason a rejection is
counted under, or inputs that the comparison traces avoid.
"""

from __future__ import annotations

import copy
import heapq
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HEALTHY, DEGRADED, OVERLOADED, QUARANTINED, DEAD = 0, 1, 2, 3, 4
STATE_NAMES = {
    HEALTHY: "healthy",
    DEGRADED: "degraded",
    OVERLOADED: "overloaded",
    QUARANTINED: "quarantined",
    DEAD: "dead",
}
_SCORED_STATES = (HEALTHY, DEGRADED, OVERLOADED)

RECORD_KEYS = (
    "tick",
    "node",
    "slot",
    "score",
    "raw",
    "state",
    "wait",
    "qema",
    "liveness",
    "pressure",
    "rank",
)

# SCORING.md defaults, in its own key names and sections.
DEFAULT_PARAMS: dict[str, Any] = {
    "engine": {
        "capacity": 16384,
        "tick_interval_ms": 50,
        "forget_after_s": 300.0,
    },
    "score": {
        "alpha_queue": 0.3,
        "max_cpu": 0.98,
        "max_mem": 0.95,
        "max_wait_s": 30.0,
        "max_tail_ratio": 3.0,
        "suspect_after_s": 2.0,
        "dead_after_s": 10.0,
        "error_half_life_s": 10.0,
        "weights": {
            "cpu": 0.20,
            "mem": 0.15,
            "io": 0.05,
            "wait": 0.25,
            "rate": 0.15,
            "success": 0.15,
            "tail": 0.05,
        },
        "k1": 0.5,
        "k2": 0.3,
        "max_queue": 100.0,
        "limit_critical": 50.0,
        "min_requests": 10,
        "max_error_rate": 0.5,
        "max_consecutive_errors": 5,
        "ejection_s": 5.0,
        "beta": 0.5,
        "t_degraded": 0.40,
        "t_overloaded": 0.20,
        "delta": 0.10,
        "flap_window": 50,
        "max_flaps": 6,
        "max_quarantined_fraction": 0.5,
        "quarantine_memory": 1000,
        "probation_ticks": 30,
        "max_backoff": 8,
    },
}

# Order of the terms in `core`, each named by its weight key.
METRIC_ORDER = ("cpu", "mem", "io", "wait", "rate", "success", "tail")

REQUIRED_FIELDS = ("node", "cpu", "mem", "queue", "avg_job_s")
OPTIONAL_FIELDS = (
    "throughput",
    "ok",
    "err",
    "io",
    "p50_ms",
    "p95_ms",
    "slots",
    "resources",
    "ts",
    "zone",
    "labels",
)
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)
U32_MAX = 2**32 - 1
SLOTS_MAX = 65535
MAX_RESOURCES = 8
RESOURCE_NAME_BYTES = (1, 15)

NODE_ID = re.compile(r"[A-Za-z0-9._:/-]{1,63}", re.ASCII)

FEEDBACK_KEY = "feedback"
FEEDBACK_VALUES = ("rif", "ok", "err", "consec")
FEEDBACK_KEYS = frozenset(("tick", FEEDBACK_KEY) + FEEDBACK_VALUES)


def merge_params(params: dict | None) -> dict:
    """DEFAULT_PARAMS with ``params`` laid over it (nested dicts merge).

    An unknown key raises ``KeyError`` naming it, so a version 1 config that
    still sets ``weights.throughput`` is refused, not silently ignored.
    """
    merged = copy.deepcopy(DEFAULT_PARAMS)

    def lay(dst: dict, src: dict, where: str) -> None:
        for key, value in src.items():
            if key not in dst:
                raise KeyError(f"unknown parameter {where}{key}")
            if isinstance(dst[key], dict):
                lay(dst[key], value, f"{where}{key}.")
            else:
                dst[key] = value

    lay(merged, params or {}, "")
    return merged


# ---------------------------------------------------------------- validation


class Rejected(Exception):
    """A heartbeat is invalid; ``reason`` is the counter it is filed under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _is_number(value: Any) -> bool:
    # Booleans are ints in Python but not numbers in a heartbeat.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    # READING: a count must be a JSON integer; 3.0 is not one.
    return isinstance(value, int) and not isinstance(value, bool)


def _to_float(
    key: str, value: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> float:
    if not _is_number(value):
        raise Rejected("bad_field", f"{key}={value!r} is not a number")
    try:
        x = float(value)
    except OverflowError as err:
        raise Rejected("bad_field", f"{key}={value!r} overflows float64") from err
    if not math.isfinite(x):
        raise Rejected("bad_field", f"{key}={value!r} is not finite")
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise Rejected("bad_field", f"{key}={value!r} below range")
    if hi is not None and x > hi:
        raise Rejected("bad_field", f"{key}={value!r} above range")
    return x


def _utf8_size(text: str) -> int | None:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate has no encoding
        return None


def valid_node_id(value: Any) -> bool:
    """1..63 characters, each an ASCII letter, digit or one of ``. _ : - /``.

    READING: a non-string id is a malformed id (``bad_node_id``), not a
    wrong-typed field.
    """
    return isinstance(value, str) and NODE_ID.fullmatch(value) is not None


def _resources(value: Any) -> dict[str, float]:
    # READING: a name is any string of 1..15 UTF-8 bytes; an empty object is
    # allowed (it reports no resources).
    if not isinstance(value, dict):
        raise Rejected("bad_field", f"resources={value!r} is not an object")
    if len(value) > MAX_RESOURCES:
        raise Rejected("bad_field", f"resources has {len(value)} names, at most {MAX_RESOURCES}")
    out = {}
    lo, hi = RESOURCE_NAME_BYTES
    for name, amount in value.items():
        size = _utf8_size(name) if isinstance(name, str) else None
        if size is None or not lo <= size <= hi:
            raise Rejected("bad_field", f"resource name {name!r}")
        out[name] = _to_float(f"resources.{name}", amount, 0.0)
    return out


def validate_heartbeat(hb: dict) -> dict:
    """Return the heartbeat's row (numbers as float64, counts as int).

    Raises ``Rejected`` with the reason. READING: the checks run in this order
    and the first failure names the reason: unknown key, node (missing /
    malformed), required fields missing, a pair with one half missing
    (``missing_field``), then each value in table order (``bad_field``).
    """
    for key in hb:
        if key not in KNOWN_FIELDS:
            raise Rejected("unknown_field", f"unknown key {key!r}")
    if "node" not in hb:
        raise Rejected("missing_field", "node")
    if not valid_node_id(hb["node"]):
        raise Rejected("bad_node_id", repr(hb["node"]))
    for key in REQUIRED_FIELDS:
        if key not in hb:
            raise Rejected("missing_field", key)
    for a, b in (("ok", "err"), ("p50_ms", "p95_ms")):
        if (a in hb) != (b in hb):
            raise Rejected("missing_field", f"{a} and {b} come together")

    row: dict[str, Any] = {"node": hb["node"]}
    row["cpu"] = _to_float("cpu", hb["cpu"], 0.0, 1.0)
    row["mem"] = _to_float("mem", hb["mem"], 0.0, 1.0)
    row["queue"] = _to_float("queue", hb["queue"], 0.0)
    row["avg_job_s"] = _to_float("avg_job_s", hb["avg_job_s"], 0.0)
    if "throughput" in hb:
        row["throughput"] = _to_float("throughput", hb["throughput"], 0.0)
    if "ok" in hb:
        for key in ("ok", "err"):
            value = hb[key]
            if not (_is_int(value) and 0 <= value <= U32_MAX):
                raise Rejected("bad_field", f"{key}={value!r}")
            row[key] = value
    if "io" in hb:
        row["io"] = _to_float("io", hb["io"], 0.0, 1.0)
    if "p50_ms" in hb:
        row["p50_ms"] = _to_float("p50_ms", hb["p50_ms"], 0.0, lo_open=True)
        row["p95_ms"] = _to_float("p95_ms", hb["p95_ms"], 0.0, lo_open=True)
        if not row["p95_ms"] >= row["p50_ms"]:
            raise Rejected("bad_field", "p95_ms < p50_ms")
    slots = hb.get("slots", 1)
    if not (_is_int(slots) and 1 <= slots <= SLOTS_MAX):
        raise Rejected("bad_field", f"slots={slots!r}")
    row["slots"] = slots
    if "resources" in hb:
        row["resources"] = _resources(hb["resources"])
    if "ts" in hb:
        # READING: ts is informational but still a float; non-finite rejects.
        _to_float("ts", hb["ts"])
    if "zone" in hb:
        zone = hb["zone"]
        size = _utf8_size(zone) if isinstance(zone, str) else None
        if size is None or size > 31:
            raise Rejected("bad_field", f"zone={zone!r}")
    if "labels" in hb:
        labels = hb["labels"]
        if not (
            isinstance(labels, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
        ):
            raise Rejected("bad_field", f"labels={labels!r}")
    return row


def validate_feedback(line: dict) -> dict:
    """Check a feedback trace line; return ``{"node", "rif", "ok", "err",
    "consec"}`` with ``None`` for an absent ``rif`` / ``consec`` and 0 for an
    absent ``ok`` / ``err``.

    READING: a feedback line is the trace's own instruction, not input from a
    node, so a malformed one (unknown key, a node that is not a string, a
    value that is not an integer >= 0) makes the trace invalid: ``ValueError``.
    A string that is not a valid id simply names no registered node.
    """
    unknown = set(line) - FEEDBACK_KEYS
    if unknown:
        raise ValueError(f"feedback line with unknown keys {sorted(unknown)}: {line!r}")
    node = line.get(FEEDBACK_KEY)
    if not isinstance(node, str):
        raise ValueError(f"feedback line without a node id string: {line!r}")
    out: dict[str, Any] = {"node": node}
    for key in FEEDBACK_VALUES:
        value = line.get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            raise ValueError(f"feedback {key}={value!r} is not an integer >= 0: {line!r}")
        out[key] = value
    out["ok"] = out["ok"] or 0
    out["err"] = out["err"] or 0
    return out


# ---------------------------------------------------------------- the engine


@dataclass
class Node:
    """Everything the engine remembers about one registration of a node."""

    node_id: str
    slot: int
    row: dict  # the latest accepted heartbeat, validated
    last_receive: int  # tick of the latest accepted heartbeat
    new: bool = True  # a heartbeat arrived since the previous tick
    first_tick: bool = True
    qema: float = 0.0
    e_ok: float = 0.0  # decayed error window
    e_err: float = 0.0
    s: float = 0.0
    state: int | None = None  # None until the first tick is computed
    flap: float = 0.0
    n: int = 0  # quarantines entered
    probation: int = 0  # consecutive good ticks while quarantined
    memory: int = 0  # consecutive ticks neither QUARANTINED nor DEAD
    # scheduler feedback
    rif: int = 0
    consec: int = 0
    fb_ok: int = 0  # since the previous tick
    fb_err: int = 0
    err_tick: int | None = None  # tick of the latest error release
    # per-tick scratch
    load: float = 0.0
    wait: float = 0.0
    liveness: float = 0.0
    err_age: float | None = None
    tripped: bool = False
    raw: float = 0.0
    score: float = 0.0
    rank: int | None = None


@dataclass
class ReplayResult:
    records: list[dict]
    rejections: Counter = field(default_factory=Counter)
    ignored_feedback: int = 0


class ReferenceEngine:
    """The tick of SCORING.md on a logical clock, one node at a time.

    Drive it per tick k as replay does: ``forget(k)``, then ``receive`` for
    each heartbeat of k, then ``feedback`` for each feedback line of k (file
    order), then ``tick(k)``.
    """

    def __init__(self, params: dict | None = None) -> None:
        self.p = merge_params(params)
        self.eng = self.p["engine"]
        self.sc = self.p["score"]
        capacity = int(self.eng["capacity"])
        self.free_slots = list(range(capacity))  # a heap: lowest slot first
        self.by_id: dict[str, Node] = {}
        self.rejections: Counter = Counter()
        self.ignored_feedback = 0

    # -- registry

    def _seconds(self, ticks: int) -> float:
        # Integer tick difference first, then the product, then the division.
        return (ticks * self.eng["tick_interval_ms"]) / 1000

    def forget(self, tick: int) -> None:
        for node in sorted(self.by_id.values(), key=lambda n: n.slot):
            if self._seconds(tick - node.last_receive) >= self.eng["forget_after_s"]:
                del self.by_id[node.node_id]  # its feedback and window go too
                heapq.heappush(self.free_slots, node.slot)

    def receive(self, hb: dict, tick: int) -> str | None:
        """Apply one heartbeat arriving just before ``tick``; return the
        rejection reason, or None when accepted."""
        try:
            row = validate_heartbeat(hb)
        except Rejected as rej:
            self.rejections[rej.reason] += 1
            return rej.reason
        node = self.by_id.get(row["node"])
        if node is None:
            if not self.free_slots:
                self.rejections["registry_full"] += 1
                return "registry_full"
            slot = heapq.heappop(self.free_slots)
            node = Node(node_id=row["node"], slot=slot, row=row, last_receive=tick)
            self.by_id[node.node_id] = node
        else:
            node.row = row  # the whole row: unreported optionals disappear
            node.last_receive = tick
            node.new = True
        return None

    def feedback(self, fb: dict, tick: int) -> bool:
        """Apply one feedback line (as ``validate_feedback`` returns it) at
        ``tick``, after the tick's heartbeats; False when it was ignored
        because its node is not registered."""
        node = self.by_id.get(fb["node"])
        if node is None:
            self.ignored_feedback += 1
            return False
        if fb["rif"] is not None:
            node.rif = fb["rif"]
        if fb["consec"] is not None:
            node.consec = fb["consec"]
        node.fb_ok = node.fb_ok + fb["ok"]
        node.fb_err = node.fb_err + fb["err"]
        if fb["err"] > 0:
            node.err_tick = tick
        return True

    # -- the tick

    def decay(self) -> float:
        """The error window's per-tick factor d."""
        tick_s = self.eng["tick_interval_ms"] / 1000
        return 0.5 ** (tick_s / self.sc["error_half_life_s"])

    def tick(self, tick: int) -> list[dict]:
        """Compute tick ``tick`` (forgetting, heartbeats and feedback of this
        tick already applied)."""
        sc = self.sc
        nodes = sorted(self.by_id.values(), key=lambda n: n.slot)
        d = self.decay()

        # Steps 1-4 (and the breaker of step 8, which needs only the node).
        for node in nodes:
            self._queue_ema(node)
            self._load_and_wait(node)
            self._error_window(node, d)
            node.liveness = self._liveness(self._seconds(tick - node.last_receive))
            node.err_age = None if node.err_tick is None else self._seconds(tick - node.err_tick)
            node.tripped = self._tripped(node)
        live = [node for node in nodes if node.liveness > 0]
        big_r = rate_normaliser([self._rate(node) for node in live if node.row["avg_job_s"] > 0])

        # Step 5, once, before step 6.
        p_of = {node.slot: min(node.wait / sc["max_wait_s"], 1.0) for node in nodes}
        total = 0.0
        for node in live:
            total = total + p_of[node.slot]
        pressure = total / len(live) if live else 0.0

        # Steps 6-11, flap, probation and release, in slot order.
        for node in nodes:
            if node.liveness <= 0:
                p_i = pressure
            elif len(live) == 1:
                p_i = 0.0
            else:
                p_i = (total - p_of[node.slot]) / (len(live) - 1)
            self._score_and_state(node, p_i, big_r)

        # Step 12 admissions, in slot order, after every node's update.
        cap = math.floor(sc["max_quarantined_fraction"] * len(live))
        quarantined = sum(1 for node in nodes if node.state == QUARANTINED)
        for node in nodes:
            if node.state in _SCORED_STATES and node.flap >= sc["max_flaps"]:
                if quarantined < cap:
                    node.state = QUARANTINED
                    node.n += 1
                    node.probation = 0
                    quarantined += 1

        # `n` memory.
        for node in nodes:
            if node.state not in (QUARANTINED, DEAD):
                node.memory += 1
                if node.memory >= sc["quarantine_memory"]:
                    node.n = 0
            else:
                node.memory = 0

        # Steps 13-14.
        for node in nodes:
            node.score = node.s if node.state in (HEALTHY, DEGRADED) else 0.0
            node.rank = None
        ranked = sorted((n for n in nodes if n.score > 0), key=lambda n: (-n.score, n.slot))
        for i, node in enumerate(ranked, start=1):
            node.rank = i

        records = []
        for node in nodes:
            records.append(
                {
                    "tick": tick,
                    "node": node.node_id,
                    "slot": node.slot,
                    "score": node.score,
                    "raw": node.raw,
                    "state": STATE_NAMES[node.state],
                    "wait": node.wait,
                    "qema": node.qema,
                    "liveness": node.liveness,
                    "pressure": pressure,
                    "rank": node.rank,
                }
            )
            node.new = False
            node.first_tick = False
            node.fb_ok = 0
            node.fb_err = 0
        return records

    def _queue_ema(self, node: Node) -> None:
        queue = node.row["queue"]
        if node.first_tick:
            node.qema = queue
        elif node.new:
            a = self.sc["alpha_queue"]
            node.qema = a * queue + (1 - a) * node.qema

    def _load_and_wait(self, node: Node) -> None:
        slots = node.row["slots"]
        node.load = max(node.qema, float(node.rif - slots), 0.0)
        node.wait = node.load * node.row["avg_job_s"] / slots

    def _error_window(self, node: Node, d: float) -> None:
        new_ok, new_err = node.fb_ok, node.fb_err
        if node.new and "ok" in node.row:
            new_ok = new_ok + node.row["ok"]
            new_err = new_err + node.row["err"]
        node.e_ok = node.e_ok * d + new_ok
        node.e_err = node.e_err * d + new_err

    def _liveness(self, age: float) -> float:
        sc = self.sc
        if age <= sc["suspect_after_s"]:
            return 1.0
        if age >= sc["dead_after_s"]:
            return 0.0
        return (sc["dead_after_s"] - age) / (sc["dead_after_s"] - sc["suspect_after_s"])

    @staticmethod
    def _rate(node: Node) -> float:
        # READING: callers keep avg_job_s large enough that this is finite
        # (slots / 1e-308 overflows; two infinite rates would make g_rate NaN).
        return node.row["slots"] / node.row["avg_job_s"]

    def _tripped(self, node: Node) -> bool:
        sc, row = self.sc, node.row
        if node.load >= sc["max_queue"] or node.wait >= sc["max_wait_s"]:
            return True
        if row["cpu"] >= sc["max_cpu"] or row["mem"] >= sc["max_mem"]:
            return True
        total = node.e_ok + node.e_err
        # READING: total > 0 guards 0/0 should min_requests be set to 0.
        if total >= sc["min_requests"] and total > 0 and node.e_err / total >= sc["max_error_rate"]:
            return True
        if (
            node.consec >= sc["max_consecutive_errors"]
            and node.err_age is not None
            and node.err_age < sc["ejection_s"]
        ):
            return True
        return False

    def _goodness(self, node: Node, big_r: float) -> dict[str, float]:
        sc, row = self.sc, node.row
        g = {
            "cpu": 1 - min(row["cpu"] / sc["max_cpu"], 1.0),
            "mem": 1 - min(row["mem"] / sc["max_mem"], 1.0),
        }
        if "io" in row:
            g["io"] = 1 - row["io"]
        g["wait"] = 1 - min(node.wait / sc["max_wait_s"], 1.0)
        if row["avg_job_s"] > 0:
            g["rate"] = 1.0 if big_r is None else min(self._rate(node) / big_r, 1.0)
        g["success"] = (node.e_ok + 1) / (node.e_ok + node.e_err + 1)
        if "p50_ms" in row:
            ratio = row["p95_ms"] / row["p50_ms"]
            g["tail"] = 1 - min(max(ratio - 1, 0.0) / (sc["max_tail_ratio"] - 1), 1.0)
        return g

    def _score_and_state(self, node: Node, p_i: float, big_r: float | None) -> None:
        sc = self.sc
        weights = dict(sc["weights"])
        weights["wait"] = weights["wait"] + sc["k1"] * p_i
        weights["rate"] = weights["rate"] + sc["k2"] * p_i
        g = self._goodness(node, big_r)
        num = 0.0
        den = 0.0
        for m in METRIC_ORDER:
            if m in g:
                num = num + weights[m] * g[m]
                den = den + weights[m]
        core = num / den

        # Steps 7-9.
        b = (sc["max_queue"] - node.load) / (sc["max_queue"] - sc["limit_critical"])
        b = min(max(b, 0.0), 1.0)
        live = node.liveness > 0
        node.raw = 0.0 if node.tripped else node.liveness * b * core

        # Step 10.
        if node.tripped or not live:
            node.s = 0.0
        else:
            s_prev = node.raw if node.first_tick else node.s
            node.s = sc["beta"] * node.raw + (1 - sc["beta"]) * s_prev

        # Step 11.
        before = node.state
        s = node.s
        if not live:
            after = DEAD
        elif before is None or before == DEAD:
            after = self._classify_fresh(node)
        elif before == QUARANTINED:
            after = QUARANTINED
        elif node.tripped:
            after = OVERLOADED
        elif before == HEALTHY:
            if s < sc["t_overloaded"]:
                after = OVERLOADED
            elif s < sc["t_degraded"]:
                after = DEGRADED
            else:
                after = HEALTHY
        elif before == DEGRADED:
            if s < sc["t_overloaded"]:
                after = OVERLOADED
            elif s >= sc["t_degraded"] + sc["delta"]:
                after = HEALTHY
            else:
                after = DEGRADED
        else:  # OVERLOADED
            if s >= sc["t_degraded"] + sc["delta"]:
                after = HEALTHY
            elif s >= sc["t_overloaded"] + sc["delta"]:
                after = DEGRADED
            else:
                after = OVERLOADED
        node.state = after

        # Step 12: flap, then probation and release.
        c = 1 if (before in _SCORED_STATES and after in _SCORED_STATES and before != after) else 0
        node.flap = node.flap * (1 - 1 / sc["flap_window"]) + c
        if before == QUARANTINED:
            if not live:
                node.probation = 0
            else:
                good = (not node.tripped) and node.raw >= sc["t_degraded"] + sc["delta"]
                node.probation = node.probation + 1 if good else 0
                need = sc["probation_ticks"] * min(node.n, sc["max_backoff"])
                if node.probation >= need:
                    node.state = HEALTHY
                    node.flap = 0.0
                    node.probation = 0

    def _classify_fresh(self, node: Node) -> int:
        sc = self.sc
        if node.tripped or node.s < sc["t_overloaded"]:
            return OVERLOADED
        if node.s < sc["t_degraded"]:
            return DEGRADED
        return HEALTHY


def rate_normaliser(rates: list[float]) -> float | None:
    """R of step 3: the nearest-rank 90th percentile of ``rates`` (the live
    nodes' ``slots / avg_job_s``), the maximum below 10 rates, None for none.

    ``ceil(0.9 * m)`` is computed as ``(9 * m + 9) // 10``: the same integer
    for every m, without a float product.
    """
    m = len(rates)
    if m == 0:
        return None
    ordered = sorted(rates)
    if m < 10:
        return ordered[-1]
    return ordered[(9 * m + 9) // 10 - 1]


# ---------------------------------------------------------------- replay


def _parse_lines(lines: Iterable[str | dict]) -> list[dict]:
    parsed = []
    for line in lines:
        if isinstance(line, str):
            if not line.strip():
                continue
            line = json.loads(line)
        tick = line.get("tick")
        if not (isinstance(tick, int) and not isinstance(tick, bool) and tick >= 0):
            raise ValueError(f"trace line without a valid tick: {line!r}")
        if parsed and tick < parsed[-1]["tick"]:
            raise ValueError(f"trace ticks decrease at {line!r}")
        if FEEDBACK_KEY in line:
            validate_feedback(line)
        parsed.append(line)
    return parsed


def run_reference(
    lines: Iterable[str | dict], params: dict | None = None, ticks: int | None = None
) -> ReplayResult:
    """Replay a trace; the records, the rejections counted by reason, and the
    number of feedback lines ignored (node not registered).

    ``lines`` are JSON text lines or dicts: heartbeats plus ``"tick"``,
    feedback lines (``"feedback": NODE``), or ``{"tick": k}``. Per tick:
    forgetting, the tick's heartbeats, its feedback lines in file order, the
    tick. READING: every trace line names its tick, so a rejected heartbeat
    line, an ignored feedback line or a ``{"tick": k}`` line still extends the
    run to k.
    """
    parsed = _parse_lines(lines)
    if ticks is None:
        ticks = parsed[-1]["tick"] + 1 if parsed else 0
    engine = ReferenceEngine(params)
    records: list[dict] = []
    i = 0
    for k in range(ticks):
        engine.forget(k)
        feedback = []
        while i < len(parsed) and parsed[i]["tick"] == k:
            line = parsed[i]
            if FEEDBACK_KEY in line:
                feedback.append(validate_feedback(line))
            else:
                hb = {key: v for key, v in line.items() if key != "tick"}
                if hb:
                    engine.receive(hb, k)
            i += 1
        for fb in feedback:
            engine.feedback(fb, k)
        records.extend(engine.tick(k))
    return ReplayResult(
        records=records, rejections=engine.rejections, ignored_feedback=engine.ignored_feedback
    )


def reference_replay(
    lines: Iterable[str | dict], params: dict | None = None, ticks: int | None = None
) -> list[dict]:
    """The replay lines (as dicts) SCORING.md prescribes for this trace."""
    return run_reference(lines, params, ticks).records
