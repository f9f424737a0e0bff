"""Placement for operators: ``shm-engine place`` and the capacity part of
``status`` and the metrics.

``place`` makes a trial placement on a running engine (the same
`clients.Placer` a scheduler uses): it reserves, prints where the job went
and why, and releases at once.  `capacity_status` is what ``status`` and the
exporter show: per resource and per zone, the capacity the nodes report,
what is reserved on it and what is free; placements made (and their rate,
which the tick worker keeps) and how often a job found no node, by reason.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from shm_engine.core import placement as core_placement
from shm_engine.core.layout import (
    N_PLACE_RESOURCES,
    ClaimsViews,
    SegmentViews,
    read_place_resources,
)
from shm_engine.core.registry import decode_id

__all__ = ["capacity_status", "reason_label", "cmd_place", "render_capacity"]

# Reasons counted in the claims header's unsched_reasons (kernels.placement C_*).
_FIXED_REASONS = {
    0: "not_ready",
    1: "zone",
    2: "selector",
    3: "affinity",
    4: "taint",
    5: "spread",
    6: "taken",  # fitted, but other schedulers took the capacity first
}
_RESOURCE0 = 8


def reason_label(i: int, resources) -> str | None:
    """The name of unschedulable reason slot ``i`` (None if unused)."""
    if i in _FIXED_REASONS:
        return _FIXED_REASONS[i]
    k = i - _RESOURCE0
    if 0 <= k < len(resources):
        return f"insufficient_{resources[k]}"
    return None


def capacity_status(views: SegmentViews, cv: ClaimsViews) -> dict:
    """Capacity, reserved and free per resource (in its own unit) over the
    registered nodes, the same per zone, and the placement counters."""
    res = read_place_resources(views.header)
    names = [n for n, _ in res]
    scale = np.array([s for _, s in res] + [1] * (N_PLACE_RESOURCES - len(res)), np.float64)
    hwm = min(int(views.header.slot_hwm[0]), views.layout.capacity)
    reg = views.registry
    live = reg.registered[:hwm] != 0
    alloc = views.table.alloc[:hwm].astype(np.float64) / scale
    reserved = core_placement.reserved_units(cv, reg.slot_gen, hwm).astype(np.float64) / scale
    alloc[~live] = 0.0
    reserved[~live] = 0.0
    zones = [
        decode_id(reg.zone[s]).decode("utf-8", "replace") if live[s] else "" for s in range(hwm)
    ]

    def block(rows: np.ndarray) -> dict:
        out = {}
        for k, n in enumerate(names):
            cap = float(alloc[rows, k].sum())
            got = float(reserved[rows, k].sum())
            out[n] = {"capacity": cap, "reserved": got, "free": max(cap - got, 0.0)}
        return out

    all_rows = np.flatnonzero(live)
    per_zone = {}
    zone_arr = np.array(zones, dtype=object)
    for z in sorted(set(zones[s] for s in all_rows.tolist())):
        per_zone[z or "(none)"] = block(np.flatnonzero(live & (zone_arr == z)))
    h = cv.header
    reasons = {}
    for i in range(len(h.unsched_reasons)):
        label = reason_label(i, names)
        if label is not None and int(h.unsched_reasons[i]):
            reasons[label] = int(h.unsched_reasons[i])
    return {
        "resources": block(all_rows),
        "zones": per_zone,
        "placements": int(h.placements[0]),
        "placements_per_s": float(h.place_rate[0]),
        "conflicts": int(h.place_conflicts[0]),
        "open": int(core_placement.open_reservations(cv, reg.slot_gen, hwm).sum()),
        "released": int(h.reservations_released[0]),
        "stale": int(h.reservations_stale[0]),
        "expired": int(h.reservations_expired[0]),
        "reaped": int(h.reservations_reaped[0]),
        "unschedulable": int(h.unschedulable[0]),
        "unschedulable_reasons": reasons,
    }


def _num(x: float) -> str:
    return f"{x:g}"


def render_capacity(p: dict | None) -> list[str]:
    """The placement lines of ``status``."""
    if p is None:
        return ["placement (claims segment not readable)"]
    res = "; ".join(
        f"{n} {_num(r['free'])} free of {_num(r['capacity'])} ({_num(r['reserved'])} reserved)"
        for n, r in p["resources"].items()
    )
    lines = [
        f"placement {p['placements']} placed ({p['placements_per_s']:.1f}/s), {p['open']} open, "
        f"{p['conflicts']} CAS lost; returned: {p['expired']} expired, {p['reaped']} of dead "
        f"schedulers; unschedulable {p['unschedulable']}"
        + (
            " (" + ", ".join(f"{k} {v}" for k, v in p["unschedulable_reasons"].items()) + ")"
            if p["unschedulable_reasons"]
            else ""
        ),
        f"capacity {res or '(no resources configured)'}",
    ]
    for z, rows in p["zones"].items():
        free = ", ".join(f"{n} {_num(r['free'])}/{_num(r['capacity'])}" for n, r in rows.items())
        lines.append(f"  zone {z}: free {free}")
    return lines


def _pairs(items, what: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"--{what} {item!r}: write KEY=VALUE")
        out[k] = v
    return out


def _job(args):
    """The `clients.Job` of the command line (ValueError naming the bad flag)."""
    from clients import Job

    requests: dict[str, float] = {}
    for name, value in (("cpu", args.cpu), ("mem_gb", args.mem_gb), ("gpu", args.gpu)):
        if value is not None:
            requests[name] = value
    for k, v in _pairs(args.request, "request").items():
        try:
            requests[k] = float(v)
        except ValueError:
            raise ValueError(f"--request {k}={v!r}: the amount is not a number") from None
    return Job(
        requests=requests,
        selector=_pairs(args.selector, "selector"),
        tolerations=args.toleration or (),
        zone=args.zone or None,
        group=args.group,
        spread=args.spread,
    )


def cmd_place(args) -> int:
    """``shm-engine place --cpu 2 --mem-gb 4 [--selector k=v] [--toleration T]
    [--zone Z] [--group G --spread N] [--explain] [--json]``: a trial
    placement, released at once.  Exit status 1 when no node fits, 2 on a
    bad request."""
    from clients import Placer, Unschedulable

    try:
        job = _job(args)
    except ValueError as err:
        sys.stderr.write(f"shm-engine place: {err}\n")
        return 2
    with Placer.attach(args.name, owner=args.owner) as placer:
        try:
            p = placer.place(job, explain=args.explain)
        except ValueError as err:  # a resource the engine does not place
            sys.stderr.write(f"shm-engine place: {err}\n")
            return 2
        except Unschedulable as err:
            if args.json:
                sys.stdout.write(json.dumps({"placed": False, "reason": str(err)}) + "\n")
            else:
                sys.stdout.write(f"unschedulable: {err}\n")
                if args.explain and err.explain is not None:
                    sys.stdout.write(str(err.explain) + "\n")
            return 1
        try:
            if args.json:
                out = {
                    "placed": True,
                    "node": p.node,
                    "zone": p.zone,
                    "reserved": p.reserved,
                    "score": p.score,
                    "parts": p.parts,
                }
                if p.explain is not None:
                    out["explain"] = {
                        "nodes": p.explain.nodes,
                        "feasible": p.explain.feasible,
                        "eliminated": p.explain.eliminated,
                        "top": [c._asdict() for c in p.explain.top],
                    }
                sys.stdout.write(json.dumps(out) + "\n")
            else:
                parts = " ".join(f"{k}={v:.3f}" for k, v in p.parts.items())
                sys.stdout.write(
                    f"placed on {p.node} (zone {p.zone or '-'}): reserved {p.reserved}, "
                    f"score {p.score:.4f} ({parts}); released\n"
                )
                if p.explain is not None:
                    sys.stdout.write(str(p.explain) + "\n")
        finally:
            p.release(ok=True)
    return 0
