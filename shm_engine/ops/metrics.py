"""`shm-engine metrics`: a Prometheus exporter that reads the engine's segment.

One process, one custom collector: every scrape maps the segment read-only,
copies the header counters and the latest published tick (through the
latch, like any reader) and unmaps it.  Re-attaching per scrape means an
engine restart (a new segment) is picked up without restarting the
exporter, and a stopped engine shows as ``shm_engine_up 0`` instead of
stale numbers.  We deliberately do not use prometheus_client's
multiprocess mode: the engine's processes already publish everything in
shared memory.

Per-node series (score, state) are off by default: their cardinality is the
fleet size.  Turn them on with ``--per-node`` for small fleets.
"""

from __future__ import annotations

import sys
import time

from shm_engine.core.errors import (
    EngineNotRunning,
    LayoutMismatch,
    NothingPublished,
    ReadContention,
    UntrustedSegment,
)
from shm_engine.core.states import STATE_NAMES, UNREGISTERED

__all__ = ["EngineCollector", "cmd_metrics"]


class EngineCollector:
    """prometheus_client collector for engine ``name``."""

    def __init__(self, name: str, per_node: bool = False, owner: int | str | None = None):
        self.name = name
        self.per_node = per_node
        self.owner = owner

    def describe(self):
        return []  # unchecked collector: the series depend on the engine's state

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from shm_engine.ops.status import read_status

        up = GaugeMetricFamily(
            "shm_engine_up", "1 if the engine's segment is attached and live", labels=["engine"]
        )
        try:
            s = read_status(self.name, owner=self.owner)
        except (EngineNotRunning, LayoutMismatch, UntrustedSegment):
            up.add_metric([self.name], 0.0)
            yield up
            return
        e = [self.name]
        up.add_metric(e, 1.0)
        yield up

        def gauge(metric, doc, value):
            g = GaugeMetricFamily(metric, doc, labels=["engine"])
            g.add_metric(e, float(value))
            return g

        def counter(metric, doc, value):
            c = CounterMetricFamily(metric, doc, labels=["engine"])
            c.add_metric(e, float(value))
            return c

        yield counter("shm_engine_ticks", "ticks published", s.get("ticks", s["epoch"]))
        yield gauge("shm_engine_epoch", "latest published epoch", s["epoch"])
        yield counter(
            "shm_engine_tick_overruns", "ticks longer than the tick interval", s["overruns"]
        )
        age = s["last_tick_age_s"]
        yield gauge(
            "shm_engine_last_tick_age_seconds",
            "seconds since the latest tick",
            age if age is not None else float("inf"),
        )
        yield gauge(
            "shm_engine_tick_interval_seconds",
            "configured tick interval",
            s["tick_interval_ms"] / 1000.0,
        )
        tick = GaugeMetricFamily(
            "shm_engine_tick_duration_microseconds",
            "tick duration over a rolling window",
            labels=["engine", "stat"],
        )
        for stat in ("last", "p50", "p99", "max"):
            tick.add_metric(e + [stat], float(s["tick_us"][stat]))
        yield tick
        nodes = GaugeMetricFamily(
            "shm_engine_nodes", "nodes by state in the latest tick", labels=["engine", "state"]
        )
        for state, n in s["nodes"].items():
            nodes.add_metric(e + [state], float(n))
        yield nodes
        yield gauge(
            "shm_engine_nodes_ejected",
            "nodes ejected for consecutive errors in the latest tick",
            s.get("ejected", 0),
        )
        if s.get("pressure") is not None:
            yield gauge(
                "shm_engine_pressure", "global pressure P of the latest tick", s["pressure"]
            )
        ing = s["ingest"]
        yield counter("shm_engine_frames", "frames received by the ingest", ing["frames"])
        yield counter("shm_engine_heartbeats", "heartbeats seen by the ingest", ing["heartbeats"])
        yield counter("shm_engine_heartbeats_accepted", "heartbeats applied", ing["accepted"])
        rej = CounterMetricFamily(
            "shm_engine_heartbeats_rejected",
            "heartbeats rejected, by reason",
            labels=["engine", "reason"],
        )
        for reason, n in ing["rejected"].items():
            rej.add_metric(e + [reason], float(n))
        yield rej
        cl = s.get("claims")
        if cl is not None:
            yield gauge(
                "shm_engine_claims_in_flight",
                "jobs claimed by schedulers and not yet released",
                cl["in_flight"],
            )
            rel = CounterMetricFamily(
                "shm_engine_claims_released",
                "claims released, by outcome (as counted by the tick)",
                labels=["engine", "outcome"],
            )
            rel.add_metric(e + ["ok"], float(cl["released_ok"]))
            rel.add_metric(e + ["error"], float(cl["released_err"]))
            yield rel
            yield counter(
                "shm_engine_claims_abandoned",
                "claims of dead schedulers returned by the engine",
                cl["abandoned"],
            )
            yield counter(
                "shm_engine_claims_stale_releases",
                "releases of claims whose node was forgotten meanwhile (not counted)",
                cl["stale_releases"],
            )
            yield counter(
                "shm_engine_claims_dropped", "claims garbage collected unreleased", cl["dropped"]
            )
            le = cl["leases"]
            yield gauge("shm_engine_scheduler_leases", "scheduler leases in use", le["in_use"])
            yield gauge("shm_engine_scheduler_leases_max", "[claims] max_schedulers", le["max"])
            yield counter(
                "shm_engine_scheduler_leases_refused",
                "claims refused because every scheduler lease was held",
                le["refused"],
            )
            yield counter(
                "shm_engine_scheduler_leases_reaped",
                "leases of dead schedulers freed",
                le["reaped"],
            )
        yield from self._feed(s, e, gauge, counter)
        pl = s.get("placement")
        if pl is not None:
            yield from self._placement(pl, e)
        restarts = CounterMetricFamily(
            "shm_engine_child_restarts",
            "restarts of the engine's child processes",
            labels=["engine", "child"],
        )
        for child, info in s["children"].items():
            restarts.add_metric(e + [child], float(info["restarts"]))
        yield restarts
        yield counter("shm_engine_heartbeats_left", "leave messages accepted", ing.get("left", 0))
        cfg = s.get("config")
        if cfg is not None:
            yield gauge(
                "shm_engine_config_version",
                "version of the configuration in effect (1 at start, +1 per applied reload)",
                cfg["version"],
            )
            yield counter("shm_engine_config_reloads", "configuration reloads done", cfg["reloads"])
        ev = s.get("events")
        if ev is not None:
            yield counter(
                "shm_engine_events", "node state changes appended to the event log", ev["appended"]
            )
        if self.per_node:
            yield from self._per_node()

    @staticmethod
    def _feed(s: dict, e: list, gauge, counter):
        """The score feed's series (an engine with ``[feed] bind``) and a
        mirror's per-zone series (`shm_engine.feed`)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        f = s.get("feed")
        if f is not None:
            yield counter("shm_engine_feed_frames", "score frames published", f["frames"])
            yield counter("shm_engine_feed_bytes", "bytes of score frames published", f["bytes"])
            yield counter(
                "shm_engine_feed_full_frames", "full score frames published", f["full_frames"]
            )
            yield gauge(
                "shm_engine_feed_lag_p99_microseconds",
                "tick publish to frame sent, p99 over the last frames",
                f["lag_us"]["p99"],
            )
            yield gauge(
                "shm_engine_feed_mirrors", "mirrors sending feedback", f["feedback"]["mirrors"]
            )
            yield counter(
                "shm_engine_feed_abandoned_claims",
                "claims of silent mirrors abandoned",
                f["feedback"]["abandoned"],
            )
        m = s.get("mirror")
        if m is None:
            return
        fresh = GaugeMetricFamily(
            "shm_engine_mirror_zone_fresh",
            "1 while the zone's engine publishes, 0 when stale (left out of pick)",
            labels=["engine", "zone"],
        )
        age = GaugeMetricFamily(
            "shm_engine_mirror_zone_age_seconds",
            "seconds since the zone's latest frame",
            labels=["engine", "zone"],
        )
        gaps = CounterMetricFamily(
            "shm_engine_mirror_zone_gaps",
            "frame sequence gaps seen (each repaired by a full frame)",
            labels=["engine", "zone"],
        )
        for z in m["zones"]:
            label = e + [z["zone"]]
            fresh.add_metric(label, 1.0 if z["state"] == "fresh" else 0.0)
            age.add_metric(label, z["age_s"] if z["age_s"] is not None else float("inf"))
            gaps.add_metric(label, float(z["gaps"]))
        yield fresh
        yield age
        yield gaps

    @staticmethod
    def _placement(pl: dict, e: list):
        """Capacity, reserved and free per resource and zone; placements,
        their rate and the unschedulable reasons (shm_engine.ops.place)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        fams = {
            key: GaugeMetricFamily(
                f"shm_engine_placement_{key}",
                f"{key} per resource (in its unit) over the registered nodes, by zone",
                labels=["engine", "resource", "zone"],
            )
            for key in ("capacity", "reserved", "free")
        }
        for zone, rows in pl["zones"].items():
            for res, r in rows.items():
                for key, fam in fams.items():
                    fam.add_metric(e + [res, zone], r[key])
        yield from fams.values()
        made = CounterMetricFamily(
            "shm_engine_placements", "placements made by schedulers", labels=["engine"]
        )
        made.add_metric(e, float(pl["placements"]))
        yield made
        rate = GaugeMetricFamily(
            "shm_engine_placements_per_second",
            "placements per second at the tick worker's latest check",
            labels=["engine"],
        )
        rate.add_metric(e, pl["placements_per_s"])
        yield rate
        for key, doc in (
            ("conflicts", "reservation CASes lost to another scheduler (the next node was tried)"),
            ("expired", "reservations returned by the engine past their deadline"),
            ("reaped", "reservations of dead schedulers returned by the engine"),
            ("unschedulable", "place() calls that found no node"),
        ):
            c = CounterMetricFamily(f"shm_engine_placement_{key}", doc, labels=["engine"])
            c.add_metric(e, float(pl[key]))
            yield c
        why = CounterMetricFamily(
            "shm_engine_placement_unschedulable_reasons",
            "unschedulable place() calls in which the filter eliminated nodes, by filter",
            labels=["engine", "reason"],
        )
        for reason, n in pl["unschedulable_reasons"].items():
            why.add_metric(e + [reason], float(n))
        yield why

    def _per_node(self):
        from prometheus_client.core import GaugeMetricFamily

        from clients.reader import ScoreReader

        try:
            with ScoreReader.attach(self.name, owner=self.owner) as reader:
                snap = reader.snapshot()
        except (
            EngineNotRunning,
            LayoutMismatch,
            UntrustedSegment,
            NothingPublished,
            ReadContention,
        ):
            return
        score = GaugeMetricFamily(
            "shm_engine_node_score", "published desirability", labels=["engine", "node"]
        )
        state = GaugeMetricFamily(
            "shm_engine_node_state",
            "node state (1 for the current one)",
            labels=["engine", "node", "state"],
        )
        for slot, node in enumerate(snap.nodes):
            if node is None:
                continue
            score.add_metric([self.name, node], float(snap.score[slot]))
            v = int(snap.state[slot])
            st = STATE_NAMES.get(v) if v != UNREGISTERED else None
            if st is not None:
                state.add_metric([self.name, node, st], 1.0)
        yield score
        yield state


def cmd_metrics(args) -> int:
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError:
        print(
            "shm-engine metrics needs prometheus_client: pip install 'shm-engine[metrics]'",
            file=sys.stderr,
        )
        return 2
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit() or not host:
        print(f"shm-engine metrics: --listen {args.listen!r} must be HOST:PORT", file=sys.stderr)
        return 2
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(args.name, per_node=args.per_node, owner=args.owner))
    start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    print(f"metrics for engine {args.name!r} on http://{args.listen}/metrics", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)  # the HTTP server runs in its own thread
    except KeyboardInterrupt:
        return 0
