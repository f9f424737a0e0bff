"""Independent reference for the desirability score and ``shm-engine replay``.

Written from SCORING.md and docs/scoring-notes.md alone, never from the engine,
so that a disagreement between the two points at a bug in one of them. It is
deliberately slow and plain: one ``Node`` object per registered node, one
function per step, every expression in the order SCORING.md writes it (the
notes require float64 left-to-right evaluation, and results are compared to
1e-9).

Invariants this module keeps, and callers may rely on:
- a rejected heartbeat changes nothing (not even liveness); it is only counted
  in ``ReplayResult.rejections`` under its reason;
- records come out ticks ascending, slots ascending within a tick, with exactly
  the keys of a replay line.

Readings of SCORING.md that neither the page nor the notes settle are marked
``READING:`` below; they only affect which reason a rejection is counted under,
or inputs that the comparison traces avoid.
"""

from __future__ import annotations

import copy
import heapq
import json
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

HEALTHY, DEGRADED, OVERLOADED, QUARANTINED, DEAD = 0, 1, 2, 3, 4
STATE_NAMES = {
    HEALTHY: "healthy",
    DEGRADED: "degraded",
    OVERLOADED: "overloaded",
    QUARANTINED: "quarantined",
    DEAD: "dead",
}
_SCORED_STATES = (HEALTHY, DEGRADED, OVERLOADED)

RECORD_KEYS = ("tick", "node", "slot", "score", "raw", "state", "wait", "qema",
               "liveness", "pressure", "rank")

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
        "weights": {
            "cpu": 0.20,
            "mem": 0.15,
            "io": 0.05,
            "wait": 0.25,
            "throughput": 0.15,
            "success": 0.15,
            "tail": 0.05,
        },
        "k1": 0.5,
        "k2": 0.3,
        "max_queue": 100.0,
        "limit_critical": 50.0,
        "min_requests": 20,
        "max_error_rate": 0.5,
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

# Order of the metrics in `core` (notes: cpu, mem, io, wait, throughput,
# success, tail) with the weight key each one uses.
METRIC_ORDER = ("cpu", "mem", "io", "wait", "throughput", "success", "tail")

REQUIRED_FIELDS = ("node", "cpu", "mem", "queue", "avg_job_s")
OPTIONAL_FIELDS = ("throughput", "ok", "err", "io", "p50_ms", "p95_ms", "ts",
                   "zone", "labels")
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)
U32_MAX = 2**32 - 1


def merge_params(params: dict | None) -> dict:
    """DEFAULT_PARAMS with ``params`` laid over it (nested dicts merge)."""
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


def _finite_float(hb: dict, key: str, lo: float | None = None,
                  hi: float | None = None, lo_open: bool = False) -> float:
    value = hb[key]
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


def _valid_node_id(value: Any) -> bool:
    # READING: a non-string id is "malformed" (bad_node_id), not a wrong-typed
    # field; "control characters" are Unicode category Cc (C0, DEL, C1).
    if not isinstance(value, str):
        return False
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    if not 1 <= size <= 63:
        return False
    return not any(unicodedata.category(ch) == "Cc" for ch in value)


def validate_heartbeat(hb: dict) -> dict:
    """Return the heartbeat's row (numbers as float64, counts as int).

    Raises ``Rejected`` with the reason. READING: the checks run in this order
    and the first failure names the reason: unknown key, node (missing /
    malformed), required fields missing, a pair with one half missing
    (``missing_field``), then each value (``bad_field``).
    """
    for key in hb:
        if key not in KNOWN_FIELDS:
            raise Rejected("unknown_field", f"unknown key {key!r}")
    if "node" not in hb:
        raise Rejected("missing_field", "node")
    if not _valid_node_id(hb["node"]):
        raise Rejected("bad_node_id", repr(hb["node"]))
    for key in REQUIRED_FIELDS:
        if key not in hb:
            raise Rejected("missing_field", key)
    for a, b in (("ok", "err"), ("p50_ms", "p95_ms")):
        if (a in hb) != (b in hb):
            raise Rejected("missing_field", f"{a} and {b} come together")

    row: dict[str, Any] = {"node": hb["node"]}
    row["cpu"] = _finite_float(hb, "cpu", 0.0, 1.0)
    row["mem"] = _finite_float(hb, "mem", 0.0, 1.0)
    row["queue"] = _finite_float(hb, "queue", 0.0)
    row["avg_job_s"] = _finite_float(hb, "avg_job_s", 0.0)
    if "throughput" in hb:
        row["throughput"] = _finite_float(hb, "throughput", 0.0)
    if "ok" in hb:
        for key in ("ok", "err"):
            value = hb[key]
            # READING: an integral float such as 3.0 is still not an int.
            if not (isinstance(value, int) and not isinstance(value, bool)
                    and 0 <= value <= U32_MAX):
                raise Rejected("bad_field", f"{key}={value!r}")
            row[key] = value
    if "io" in hb:
        row["io"] = _finite_float(hb, "io", 0.0, 1.0)
    if "p50_ms" in hb:
        row["p50_ms"] = _finite_float(hb, "p50_ms", 0.0, lo_open=True)
        row["p95_ms"] = _finite_float(hb, "p95_ms", 0.0, lo_open=True)
        if not row["p95_ms"] >= row["p50_ms"]:
            raise Rejected("bad_field", "p95_ms < p50_ms")
    if "ts" in hb:
        # READING: ts is informational but still a float; non-finite rejects.
        _finite_float(hb, "ts")
    if "zone" in hb:
        zone = hb["zone"]
        try:
            ok = isinstance(zone, str) and len(zone.encode("utf-8")) <= 31
        except UnicodeEncodeError:
            ok = False
        if not ok:
            raise Rejected("bad_field", f"zone={zone!r}")
    if "labels" in hb:
        labels = hb["labels"]
        if not (isinstance(labels, dict)
                and all(isinstance(k, str) and isinstance(v, str)
                        for k, v in labels.items())):
            raise Rejected("bad_field", f"labels={labels!r}")
    return row


# ---------------------------------------------------------------- the engine

@dataclass
class Node:
    """Everything the engine remembers about one registered node."""

    node_id: str
    slot: int
    row: dict               # the latest accepted heartbeat, validated
    last_receive: int       # tick of the latest accepted heartbeat
    new: bool = True        # a heartbeat arrived since the previous tick
    first_tick: bool = True
    qema: float = 0.0
    s: float = 0.0
    state: int | None = None  # None until the first tick is computed
    flap: float = 0.0
    n: int = 0              # quarantines entered
    probation: int = 0      # consecutive good ticks while quarantined
    memory: int = 0         # consecutive ticks neither QUARANTINED nor DEAD
    # per-tick scratch
    wait: float = 0.0
    liveness: float = 0.0
    tripped: bool = False
    raw: float = 0.0
    score: float = 0.0
    rank: int | None = None


@dataclass
class ReplayResult:
    records: list[dict]
    rejections: Counter = field(default_factory=Counter)


class ReferenceEngine:
    """The tick of SCORING.md on a logical clock, one node at a time."""

    def __init__(self, params: dict | None = None) -> None:
        self.p = merge_params(params)
        self.eng = self.p["engine"]
        self.sc = self.p["score"]
        capacity = int(self.eng["capacity"])
        self.free_slots = list(range(capacity))  # a heap: lowest slot first
        self.by_id: dict[str, Node] = {}
        self.rejections: Counter = Counter()

    # -- registry

    def _age(self, node: Node, tick: int) -> float:
        # Notes: integer k - a first, then the product, then the division.
        return ((tick - node.last_receive) * self.eng["tick_interval_ms"]) / 1000

    def forget(self, tick: int) -> None:
        for node in sorted(self.by_id.values(), key=lambda n: n.slot):
            if self._age(node, tick) >= self.eng["forget_after_s"]:
                del self.by_id[node.node_id]
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

    # -- the tick

    def tick(self, tick: int) -> list[dict]:
        """Compute tick ``tick`` (forgetting and heartbeats already applied)."""
        sc = self.sc
        nodes = sorted(self.by_id.values(), key=lambda n: n.slot)

        # Steps 1-4.
        for node in nodes:
            self._queue_ema(node)
            node.wait = node.qema * node.row["avg_job_s"]
            node.liveness = self._liveness(self._age(node, tick))
            node.tripped = self._tripped(node)
        live = [node for node in nodes if node.liveness > 0]

        # T for g_tput: largest throughput among live reporting nodes.
        big_t = 0.0
        for node in live:
            if "throughput" in node.row:
                big_t = max(big_t, node.row["throughput"])

        # Step 5, once, before step 6.
        pressure = 0.0
        if live:
            total = 0.0
            for node in live:
                total = total + min(node.wait / sc["max_wait_s"], 1.0)
            pressure = total / len(live)

        # Steps 6-11, flap, probation and release, in slot order.
        weights = dict(sc["weights"])
        weights["wait"] = weights["wait"] + sc["k1"] * pressure
        weights["throughput"] = weights["throughput"] + sc["k2"] * pressure
        for node in nodes:
            self._score_and_state(node, weights, big_t)

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
            records.append({
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
            })
            node.new = False
            node.first_tick = False
        return records

    def _queue_ema(self, node: Node) -> None:
        queue = node.row["queue"]
        if node.first_tick:
            node.qema = queue
        elif node.new:
            a = self.sc["alpha_queue"]
            node.qema = a * queue + (1 - a) * node.qema

    def _liveness(self, age: float) -> float:
        sc = self.sc
        if age <= sc["suspect_after_s"]:
            return 1.0
        if age >= sc["dead_after_s"]:
            return 0.0
        return (sc["dead_after_s"] - age) / (sc["dead_after_s"] - sc["suspect_after_s"])

    def _tripped(self, node: Node) -> bool:
        sc, row = self.sc, node.row
        if node.qema >= sc["max_queue"] or node.wait >= sc["max_wait_s"]:
            return True
        if row["cpu"] >= sc["max_cpu"] or row["mem"] >= sc["max_mem"]:
            return True
        if "ok" in row:
            total = row["ok"] + row["err"]
            # READING: total > 0 guards err/0 should min_requests be set to 0.
            if total >= sc["min_requests"] and total > 0 \
                    and row["err"] / total >= sc["max_error_rate"]:
                return True
        return False

    def _goodness(self, node: Node, big_t: float) -> dict[str, float]:
        sc, row = self.sc, node.row
        g = {
            "cpu": 1 - min(row["cpu"] / sc["max_cpu"], 1.0),
            "mem": 1 - min(row["mem"] / sc["max_mem"], 1.0),
        }
        if "io" in row:
            g["io"] = 1 - row["io"]
        g["wait"] = 1 - min(node.wait / sc["max_wait_s"], 1.0)
        if "throughput" in row:
            # READING: T only counts live nodes, so for a node that is not live
            # throughput / T can exceed 1, or overflow to inf (1e300 / 1e-10),
            # and then raw = 0 * B * inf = NaN. "Each in [0, 1]" settles it:
            # the ratio is capped at 1. Live nodes are never affected
            # (their own throughput is <= T), and a non-live node's raw is
            # then 0 as L = 0 requires.
            g["throughput"] = 1.0 if big_t == 0 else min(row["throughput"] / big_t, 1.0)
        if "ok" in row:
            g["success"] = (row["ok"] + 1) / (row["ok"] + row["err"] + 2)
        if "p50_ms" in row:
            ratio = row["p95_ms"] / row["p50_ms"]
            g["tail"] = 1 - min(max(ratio - 1, 0.0) / (sc["max_tail_ratio"] - 1), 1.0)
        return g

    def _score_and_state(self, node: Node, weights: dict, big_t: float) -> None:
        sc = self.sc
        g = self._goodness(node, big_t)
        num = 0.0
        den = 0.0
        for m in METRIC_ORDER:
            if m in g:
                num = num + weights[m] * g[m]
                den = den + weights[m]
        core = num / den

        # Step 7-9.
        b = (sc["max_queue"] - node.qema) / (sc["max_queue"] - sc["limit_critical"])
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
        c = 1 if (before in _SCORED_STATES and after in _SCORED_STATES
                  and before != after) else 0
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
        parsed.append(line)
    return parsed


def run_reference(lines: Iterable[str | dict], params: dict | None = None,
                  ticks: int | None = None) -> ReplayResult:
    """Replay a trace; the records plus the rejections counted by reason.

    READING: every trace line names its tick, so a rejected heartbeat line
    (or a ``{"tick": k}`` line) still extends the run to k.
    """
    parsed = _parse_lines(lines)
    if ticks is None:
        ticks = parsed[-1]["tick"] + 1 if parsed else 0
    engine = ReferenceEngine(params)
    records: list[dict] = []
    i = 0
    for k in range(ticks):
        engine.forget(k)
        while i < len(parsed) and parsed[i]["tick"] == k:
            hb = {key: v for key, v in parsed[i].items() if key != "tick"}
            if hb:
                engine.receive(hb, k)
            i += 1
        records.extend(engine.tick(k))
    return ReplayResult(records=records, rejections=engine.rejections)


def reference_replay(lines: Iterable[str | dict], params: dict | None = None,
                     ticks: int | None = None) -> list[dict]:
    """The replay lines (as dicts) SCORING.md prescribes for this trace."""
    return run_reference(lines, params, ticks).records
