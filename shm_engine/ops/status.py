"""`shm-engine status`: a running engine's health, read from its segment.

Read-only: the segments are mapped ``PROT_READ``, nothing is written, no socket
is opened.  The claims part (jobs in flight, outcomes, scheduler leases) comes
from the claims segment; it is None when that segment is missing or not
readable by the caller (``[claims] shm_mode``).  Per-tick numbers (epoch,
node counts per state, nodes ejected for consecutive errors) come from the
latest published buffer through the latch (`seqlock.read_consistent`, the
one retry loop); counters (ticks, overruns, tick durations, ingest counters,
children) are single header words, each read once.

A segment whose supervisor is gone (killed with SIGKILL) is reported as not
running: the next ``shm-engine run`` reclaims it.
"""

from __future__ import annotations

import json
import sys
import time

from shm_engine.core.claims import ClaimsSegment, claims_status
from shm_engine.core.errors import EngineNotRunning, LayoutMismatch
from shm_engine.core.segment import Segment, process_alive
from shm_engine.core.seqlock import READ_OK, read_consistent
from shm_engine.core.states import STATE_NAMES, NodeState
from shm_engine.ingest.admission import MODE_NAMES, read_senders
from shm_engine.ingest.counters import read_ingest_counters
from shm_engine.ops.place import capacity_status, render_capacity

__all__ = ["cmd_status", "engine_ready", "read_status"]


def engine_ready(h) -> bool:
    """True once the children are up: the tick worker has published an
    epoch and the ingest process has beaten, which it does only after its
    socket is bound and the resolved endpoint is in the header; and, when
    the supervisor runs an HTTP child (it writes ``http_endpoint``), that
    child has beaten, which it does once it listens."""
    return (
        int(h.latch_seq[0]) >> 1 > 0
        and float(h.ingest_alive_mono[0]) > 0.0
        and (float(h.http_alive_mono[0]) > 0.0 or not h.http_endpoint[0])
    )


def _copy_meta(buf) -> tuple:
    return (
        int(buf.epoch[0]),
        float(buf.tick_mono[0]),
        float(buf.tick_wall[0]),
        float(buf.pressure[0]),
        int(buf.n_ranked[0]),
        int(buf.live[0]),
        int(buf.registered[0]),
        buf.counts[:5].copy(),
        int(buf.ejected[0]),
    )


def read_status(name: str, owner: int | str | None = None) -> dict:
    """The status object of engine ``name`` (what ``--json`` prints);
    ``owner``: the engine's user, as for `Segment.attach`.

    Raises EngineNotRunning if there is no segment, or its supervisor is
    dead; UntrustedSegment if the segment is not the engine's."""
    with Segment.attach(name, readonly=True, owner=owner) as seg:
        v = seg.views
        h = v.header
        # Before any other read: the rejects and accepted of every frame it counts.
        ingest = read_ingest_counters(h)
        pid = int(h.supervisor_pid[0])
        creator = int(h.creator_pid[0])
        if not process_alive(creator, int(h.creator_start[0])):
            raise EngineNotRunning(
                f"engine {name!r} is not running (stale segment of dead "
                f"pid {creator}; the next run reclaims it)"
            )
        seq = memoryview(h.latch_seq)
        st, epoch, meta = read_consistent(seq, lambda b: _copy_meta(v.buffers[b]))
        now = time.monotonic()
        if st == READ_OK:
            assert meta is not None  # READ_OK comes with the copy
            (_e, tick_mono, tick_wall, pressure, n_ranked, live, registered, counts, ejected) = meta
            age = max(0.0, now - tick_mono)
        else:
            epoch, tick_wall, pressure, n_ranked, live, registered = 0, None, 0.0, 0, 0, 0
            counts, ejected, age = [0] * 5, 0, None
        nodes = {"registered": registered}
        nodes.update({STATE_NAMES[s]: int(counts[s]) for s in NodeState})
        claims = placement = None
        try:
            with ClaimsSegment.attach(name, readonly=True, owner=owner) as cs:
                claims = claims_status(
                    cs.views, v.registry.slot_gen, v.registry.registered, int(h.slot_hwm[0])
                )
                placement = capacity_status(v, cs.views)
        except (EngineNotRunning, LayoutMismatch):
            pass
        config = _config_status(v)
        events = _events_status(name, owner)
        ingest_alive = float(h.ingest_alive_mono[0])
        ticker_alive = float(h.ticker_alive_mono[0])
        return {
            "name": h.read_str("name") or name,
            "pid": pid,
            "ingest_endpoint": h.read_str("endpoint"),
            "capacity": int(h.capacity[0]),
            "stopping": bool(h.stopping[0]),
            "ready": engine_ready(h),
            "epoch": int(epoch),
            "tick_interval_ms": int(h.tick_interval_ms[0]),
            "last_tick_age_s": age,
            "last_tick_wall": tick_wall,
            "ticks": int(h.ticks[0]),
            "tick_us": {
                "last": float(h.tick_us_last[0]),
                "p50": float(h.tick_us_p50[0]),
                "p99": float(h.tick_us_p99[0]),
                "max": float(h.tick_us_max[0]),
            },
            "overruns": int(h.overruns[0]),
            "pressure": pressure,
            "ranked": n_ranked,
            "live": live,
            "nodes": nodes,
            "ejected": ejected,
            "ingest": {
                "frames": ingest["frames"],
                "heartbeats": ingest["heartbeats"],
                "accepted": ingest["accepted"],
                "bytes": ingest["bytes"],
                "rejected": ingest["rejected"],
                "registered_now": int(h.registered[0]),
                "alive_age_s": max(0.0, now - ingest_alive) if ingest_alive else None,
                "reclaimed_dead": ingest["reclaimed_dead"],
                "left": ingest["left"],
            },
            "security": {
                "mode": MODE_NAMES[min(int(h.ingest_mode[0]), len(MODE_NAMES) - 1)] or None,
                "keys": int(h.ingest_keys[0]),
                "reloads": int(h.ingest_reloads[0]),
                "reloads_with_problems": int(h.ingest_reload_problems[0]),
                "handshakes_refused": int(h.ingest_handshakes_refused[0]),
                "queue_frames": int(h.ingest_rcvhwm[0]),
                "max_message_bytes": int(h.ingest_maxmsgsize[0]),
                "refused_by_sender": read_senders(h),
            },
            "ticker": {"alive_age_s": max(0.0, now - ticker_alive) if ticker_alive else None},
            "claims": claims,
            "config": config,
            "events": events,
            "feed": _feed_status(h, now),
            "mirror": _mirror_status(name, owner),
            "placement": placement,
            "children": {
                "ingest": {"pid": int(h.ingest_pid[0]), "restarts": int(h.ingest_restarts[0])},
                "ticker": {"pid": int(h.ticker_pid[0]), "restarts": int(h.ticker_restarts[0])},
                **_http_child(h),
            },
            "http": _http_status(h, now),
        }


def _config_status(v) -> dict:
    """The configuration in effect: its version and hash (header), the
    version and score parameters the latest epoch was computed with
    (through the latch), and the latest reload's result."""
    from kernels.params import N_PARAMS
    from shm_engine.ops.reload import last_reload, params_in_effect

    h = v.header
    st, _epoch, got = read_consistent(
        memoryview(h.latch_seq),
        lambda b: (int(v.buffers[b].config_version[0]), v.buffers[b].params[:N_PARAMS].copy()),
    )
    last = last_reload(h)
    return {
        "version": int(h.config_version[0]),
        "hash": f"{int(h.config_hash[0]):016x}",
        "epoch_version": got[0] if st == READ_OK and got is not None else None,
        "score": params_in_effect(got[1]) if st == READ_OK and got is not None else None,
        "reloads": int(h.reloads_done[0]),
        "last_reload": None if last is None else last.as_dict(),
    }


def _events_status(name: str, owner) -> dict | None:
    """The event log's size and how many events it has taken (None when
    its segment is missing or not readable)."""
    from shm_engine.core.events import EventSegment

    try:
        with EventSegment.attach(name, readonly=True, owner=owner) as es:
            return {"appended": int(es.views.header.head[0]), "capacity": es.layout.capacity}
    except (EngineNotRunning, LayoutMismatch):
        return None


def _config_line(c: dict) -> str:
    last = c["last_reload"]
    text = f"config   version {c['version']} (hash {c['hash']}), {c['reloads']} reloads"
    if last is not None:
        text += f"; last {last['status']}"
        if last["error"]:
            text += f": {last['error']}"
        if last["restart_needed"]:
            text += "; needs restart: " + ", ".join(last["restart_needed"])
    return text


def _feed_status(h, now: float) -> dict | None:
    """The score feed's counters (`shm_engine.feed.publisher`); None when the
    engine runs no feed."""
    if not int(h.feed_pid[0]) and not int(h.feed_frames[0]):
        return None
    alive = float(h.feed_alive_mono[0])
    return {
        "pid": int(h.feed_pid[0]),
        "restarts": int(h.feed_restarts[0]),
        "alive_age_s": max(0.0, now - alive) if alive else None,
        "frames": int(h.feed_frames[0]),
        "full_frames": int(h.feed_full_frames[0]),
        "bytes": int(h.feed_bytes[0]),
        "epoch": int(h.feed_epoch[0]),
        "snapshot_requests": int(h.feed_snapshot_requests[0]),
        "skipped_epochs": int(h.feed_skipped_epochs[0]),
        "lag_us": {"p50": float(h.feed_lag_us_p50[0]), "p99": float(h.feed_lag_us_p99[0])},
        "feedback": {
            "frames": int(h.feedback_frames[0]),
            "refused": int(h.feedback_bad[0]),
            "mirrors": int(h.feedback_mirrors[0]),
            "abandoned": int(h.feedback_abandoned[0]),
        },
    }


def _mirror_status(name: str, owner) -> dict | None:
    """The zones a mirror follows (`shm_engine.feed.mirror`); None for an engine."""
    from shm_engine.feed.mirror import read_mirror_status

    return read_mirror_status(name, owner)


def _feed_lines(s: dict) -> list[str]:
    out = []
    f = s.get("feed")
    if f is not None:
        fb = f["feedback"]
        out.append(
            f"feed     {f['frames']} frames ({f['full_frames']} full), {f['bytes']} bytes, "
            f"epoch {f['epoch']}, lag p50 {f['lag_us']['p50']:.0f} us p99 "
            f"{f['lag_us']['p99']:.0f} us; feedback from {fb['mirrors']} mirrors, "
            f"{fb['frames']} frames, {fb['abandoned']} abandoned"
        )
    m = s.get("mirror")
    if m is not None:
        for z in m["zones"]:
            age = "never" if z["age_s"] is None else f"{z['age_s']:.3f}s ago"
            out.append(
                f"zone     {z['zone'] or '?'} {z['state'].upper()} from {z['endpoint']}: "
                f"{z['nodes']} nodes, epoch {z['epoch']}, last frame {age}, "
                f"{z['gaps']} gaps, {z['snapshots']} snapshots" + _refusals(z)
            )
    return out


def _refusals(z: dict) -> str:
    """``, refused: 2 length, 1 oversize; 3 duplicate ids`` (empty when none)."""
    why = ", ".join(f"{n} {r}" for r, n in z["refused"].items() if n)
    out = f", refused: {why}" if why else ""
    if z["duplicates"]:
        out += f"; {z['duplicates']} duplicate ids refused"
    return out


def _http_child(h) -> dict:
    """The HTTP child's entry of ``children``; none when it is not configured."""
    if not h.http_endpoint[0]:
        return {}
    return {"http": {"pid": int(h.http_pid[0]), "restarts": int(h.http_restarts[0])}}


def _http_status(h, now: float) -> dict | None:
    """Where the HTTP API listens (None: no HTTP server configured)."""
    if not h.http_endpoint[0]:
        return None
    alive = float(h.http_alive_mono[0])
    return {
        "url": h.read_str("http_endpoint"),
        "alive_age_s": max(0.0, now - alive) if alive else None,
    }


def _fmt_age(age) -> str:
    return "never" if age is None else f"{age:.3f}s ago"


def render(s: dict) -> str:
    """The compact human-readable block."""
    t, n, i, c = s["tick_us"], s["nodes"], s["ingest"], s["children"]
    rejected = {k: v for k, v in i["rejected"].items() if v}
    rej = " ".join(f"{k}={v}" for k, v in rejected.items()) or "none"
    return "\n".join(
        [
            f"engine   {s['name']}  pid {s['pid']}  ingest {s['ingest_endpoint']}"
            + ("  (stopping)" if s["stopping"] else "" if s["ready"] else "  (starting)"),
            f"tick     epoch {s['epoch']}  every {s['tick_interval_ms']} ms  "
            f"last {_fmt_age(s['last_tick_age_s'])}  overruns {s['overruns']}",
            f"tick us  last {t['last']:.0f}  p50 {t['p50']:.0f}  p99 {t['p99']:.0f}  "
            f"max {t['max']:.0f}",
            f"nodes    {n['registered']} registered: {n['healthy']} healthy, "
            f"{n['degraded']} degraded, {n['overloaded']} overloaded, "
            f"{n['quarantined']} quarantined, {n['dead']} dead; "
            f"{s['ranked']} ranked, {s['ejected']} ejected, pressure {s['pressure']:.3f}",
            f"ingest   {i['frames']} frames, {i['heartbeats']} heartbeats, "
            f"{i['accepted']} accepted; rejected: {rej}",
            _security_line(s["security"]),
            _claims_line(s["claims"]),
            _config_line(s["config"]),
            "events   (event log not readable)"
            if s["events"] is None
            else f"events   {s['events']['appended']} appended, the newest "
            f"{s['events']['capacity']} kept (shm-engine events)",
            *_feed_lines(s),
            *_http_lines(s.get("http")),
            *render_capacity(s["placement"]),
            f"children ingest pid {c['ingest']['pid']} ({c['ingest']['restarts']} restarts), "
            f"ticker pid {c['ticker']['pid']} ({c['ticker']['restarts']} restarts)",
        ]
    )


def _http_lines(http: dict | None) -> list[str]:
    if http is None:
        return []
    state = "" if http["alive_age_s"] is not None else " (starting)"
    return [f"http     {http['url']}{state}"]


def _security_line(sec: dict) -> str:
    mode = sec["mode"] or "(not bound yet)"
    keys = f", {sec['keys']} keys" if sec["mode"] == "curve" else ""
    refused = "; ".join(
        f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        for name, counts in sec["refused_by_sender"].items()
    )
    return (
        f"security {mode}{keys}, {sec['reloads']} reloads"
        + (
            f" ({sec['reloads_with_problems']} with problems)"
            if sec["reloads_with_problems"]
            else ""
        )
        + (f", {sec['handshakes_refused']} handshakes refused" if sec["handshakes_refused"] else "")
        + f"; queue {sec['queue_frames']} frames of <= {sec['max_message_bytes']} bytes"
        + (f"; refused by sender: {refused}" if refused else "")
    )


def _claims_line(cl: dict | None) -> str:
    if cl is None:
        return "claims   (claims segment not readable)"
    le = cl["leases"]
    return (
        f"claims   {cl['in_flight']} in flight; released {cl['released_ok']} ok, "
        f"{cl['released_err']} error; {cl['abandoned']} abandoned, "
        f"{cl['stale_releases']} stale; schedulers {le['in_use']}/{le['max']}"
        + (f" ({le['refused']} refused)" if le["refused"] else "")
    )


def cmd_status(args) -> int:
    """``shm-engine status --name NAME [--json]``."""
    s = read_status(args.name, owner=args.owner)
    if args.json:
        sys.stdout.write(json.dumps(s, sort_keys=False) + "\n")
    else:
        sys.stdout.write(render(s) + "\n")
    return 0
