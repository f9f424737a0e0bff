"""A self-describing fleet and the processes that send and read it.

Used by the fault and load tests against a real engine (`support.engine`):

- A *self-describing fleet*: node ``sd-<i>`` always sends cpu, mem and
  avg_job_s that are functions of ``i`` (`node_params`), and a queue that
  changes every send.  From a published snapshot alone a checker can then
  recompute every node's ``wait`` and ``raw`` (`check_snapshot`): a snapshot
  whose columns come from different epochs, or whose names do not match
  their slots, fails the check.  The nodes are chosen far from every
  breaker and threshold, so no node trips, flaps or is quarantined.
- Sender and reader *processes* (``spawn``): `sender_main` sends the fleet in
  binary batch frames at a fixed rate; `reader_main` calls ``snapshot()``
  and ``score()`` in a loop, checks every snapshot, and reports counts.
- `rss_bytes`, `pid_gone`: process probes via psutil.
"""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import psutil

from shm_engine.core.config import ScoreConfig
from shm_engine.wire.format import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    RECORD_DTYPE,
    RECORD_SIZE,
    VERSION,
)

SPAWN = multiprocessing.get_context("spawn")
PREFIX = "sd-"
QUEUE_LEVELS = 5  # queue cycles through 0 .. 4

# ------------------------------------------------------------------ fleet --


def node_params(i):
    """(cpu, mem, avg_job_s) of node ``sd-<i>`` (scalar or array ``i``).

    cpu <= 0.20, mem <= 0.17, wait <= 4 * 2.25 = 9 s: g_cpu, g_mem >= 0.8 and
    g_wait >= 0.7; rates 1/avg_job_s in [0.44, 2], so g_rate >= 0.22; no
    outcomes, so g_succ = 1: core >= 0.7, B = 1 (qema <= 4 << limit_critical)
    and every node stays HEALTHY however its queue moves."""
    i = np.asarray(i)
    return 0.05 + (i % 16) * 0.01, 0.05 + (i % 13) * 0.01, 0.5 + (i % 8) * 0.25


def node_name(i: int) -> str:
    return f"{PREFIX}{i:05d}"


def fleet_records(ids: np.ndarray) -> np.ndarray:
    """RECORD_DTYPE rows of nodes ``ids`` (queue 0; set it per send)."""
    rec = np.zeros(len(ids), RECORD_DTYPE)
    cpu, mem, avg = node_params(ids)
    rec["cpu"], rec["mem"], rec["avg_job_s"] = cpu, mem, avg
    rec["node"] = [node_name(int(i)).encode() for i in ids]
    return rec


def set_queue(rec: np.ndarray, ids: np.ndarray, k: int) -> None:
    """The queue of send number ``k``: different per node and per send."""
    rec["queue"] = (ids + k) % QUEUE_LEVELS


def batch_frames(rec: np.ndarray, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> list:
    """Binary v1 frames holding ``rec`` (already valid), each within the limit."""
    per = (max_frame_bytes - HEADER_SIZE) // RECORD_SIZE
    out = []
    for a in range(0, len(rec), per):
        chunk = rec[a : a + per]
        out.append(HEADER.pack(MAGIC, VERSION, RECORD_SIZE, len(chunk), 0) + chunk.tobytes())
    return out


_P = ScoreConfig()
_W = _P.weights


def check_snapshot(snap, expect_nodes: int | None = None) -> list[str]:
    """Problems of one snapshot of a self-describing fleet (empty: consistent).

    Recomputes, per node, from the node's id and the snapshot's own columns:
    ``wait == qema * avg_job_s`` and ``raw == L * B * core`` with each node's
    weights at the pressure of the other live nodes (docs/scoring.md, steps
    E-G); and across the snapshot: the published weights match the pressure,
    a published score is > 0 exactly when the state is HEALTHY or DEGRADED,
    and the ranking lists those slots by score descending.  Columns mixed from two epochs, or a
    name read
    against another node's slot, break at least one of these."""
    problems: list[str] = []
    slots = np.array([s for s, n in enumerate(snap.nodes) if n is not None], np.int64)
    if expect_nodes is not None and len(slots) != expect_nodes:
        problems.append(f"epoch {snap.epoch}: {len(slots)} nodes, expected {expect_nodes}")
    if not len(slots):
        return problems
    names = [snap.nodes[s] for s in slots.tolist()]
    if not all(n.startswith(PREFIX) for n in names):
        problems.append(f"epoch {snap.epoch}: foreign node names")
        return problems
    ids = np.array([int(n[len(PREFIX) :]) for n in names])
    cpu, mem, avg = node_params(ids)
    qema, wait, L = snap.qema[slots], snap.wait[slots], snap.liveness[slots]
    P = snap.pressure
    w = snap.weights
    if (
        abs(w["wait"] - (_W.wait + _P.k1 * P)) > 1e-12
        or abs(w["rate"] - (_W.rate + _P.k2 * P)) > 1e-12
    ):
        problems.append(f"epoch {snap.epoch}: weights {w} do not match pressure {P}")
    if not ((qema >= 0) & (qema <= QUEUE_LEVELS - 1)).all():
        problems.append(f"epoch {snap.epoch}: qema out of [0, {QUEUE_LEVELS - 1}]")
    # No claims, one slot each: load = qema, wait = qema * avg_job_s / 1.
    bad = np.abs(wait - qema * avg) > 1e-9 * np.maximum(1.0, np.abs(wait))
    if bad.any():
        s = int(slots[bad][0])
        problems.append(
            f"epoch {snap.epoch}: slot {s} ({snap.nodes[s]}) wait {snap.wait[s]!r} "
            f"!= qema {snap.qema[s]!r} * avg_job_s"
        )
    # Each node is weighted with the pressure of the other live nodes, and
    # its rate (1 / avg_job_s) judged against the live nodes' 90th percentile.
    live = L > 0
    p = np.minimum(wait / _P.max_wait_s, 1.0)
    n_live = int(live.sum())
    total = float(p[live].sum())
    P_i = np.where(live, (total - p) / (n_live - 1) if n_live > 1 else 0.0, P)
    rate = 1.0 / avg
    rates = np.sort(rate[live])
    R = (
        (rates[-1] if len(rates) < 10 else rates[(9 * len(rates) + 9) // 10 - 1])
        if len(rates)
        else None
    )
    g_rate = np.minimum(rate / R, 1.0) if R is not None else np.ones_like(rate)
    w_wait = _W.wait + _P.k1 * P_i
    w_rate = _W.rate + _P.k2 * P_i
    g_cpu = 1.0 - np.minimum(cpu / _P.max_cpu, 1.0)
    g_mem = 1.0 - np.minimum(mem / _P.max_mem, 1.0)
    g_wait = 1.0 - np.minimum(wait / _P.max_wait_s, 1.0)
    core = (_W.cpu * g_cpu + _W.mem * g_mem + w_wait * g_wait + w_rate * g_rate + _W.success) / (
        _W.cpu + _W.mem + w_wait + w_rate + _W.success
    )
    B = np.clip((_P.max_queue - qema) / (_P.max_queue - _P.limit_critical), 0.0, 1.0)
    raw = L * B * core
    bad = np.abs(snap.raw[slots] - raw) > 1e-9
    if bad.any():
        s = int(slots[bad][0])
        problems.append(
            f"epoch {snap.epoch}: slot {s} ({snap.nodes[s]}) raw {snap.raw[s]!r}, "
            f"recomputed {float(raw[bad][0])!r}"
        )
    score, state = snap.score[slots], snap.state[slots]
    if not ((score >= 0) & (score <= 1)).all():
        problems.append(f"epoch {snap.epoch}: score out of [0, 1]")
    ranked_ok = (state <= 1) & (score > 0)
    if ((score > 0) != (state <= 1)).any():
        problems.append(f"epoch {snap.epoch}: score > 0 does not match HEALTHY/DEGRADED")
    r = snap.ranked
    if len(r) != int(ranked_ok.sum()) or set(r.tolist()) != set(slots[ranked_ok].tolist()):
        problems.append(
            f"epoch {snap.epoch}: ranking holds {len(r)} slots, {int(ranked_ok.sum())} have a score"
        )
    elif len(r) > 1 and (np.diff(snap.score[r]) > 0).any():
        problems.append(f"epoch {snap.epoch}: ranking not by score descending")
    return problems


# -------------------------------------------------------------- processes --


def sender_main(
    endpoint: str,
    first: int,
    count: int,
    period_s: float,
    stop,
    pause,
    sent_counter=None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> None:
    """Send nodes ``first .. first+count-1`` every ``period_s`` until ``stop``
    is set; nothing while ``pause`` is set.  Blocking sends: none is dropped
    by this side (ZeroMQ may still drop what was queued to a dead peer)."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.connect(endpoint)
    ids = np.arange(first, first + count)
    rec = fleet_records(ids)
    k = 0
    t0 = time.monotonic()
    try:
        while not stop.is_set():
            deadline = t0 + k * period_s
            now = time.monotonic()
            if now < deadline:
                time.sleep(min(deadline - now, 0.05))
                continue
            if deadline < now - 1.0:  # fell far behind: skip, do not burst
                t0 = now - k * period_s
            k += 1
            if pause.is_set():
                continue
            set_queue(rec, ids, k)
            for frame in batch_frames(rec, max_frame_bytes):
                while not stop.is_set():
                    try:
                        sock.send(frame, zmq.NOBLOCK)
                        break
                    except zmq.Again:
                        time.sleep(0.005)
            if sent_counter is not None:
                with sent_counter.get_lock():
                    sent_counter.value += count
    finally:
        sock.close(0)
        ctx.term()


def reader_main(name: str, stop, results, expect_nodes: int | None, seed: int, warm=None) -> None:
    """Read snapshots and single scores until ``stop``; put one result dict
    on ``results``: snapshots, scores, torn (snapshots failing
    `check_snapshot`, or a node count other than ``expect_nodes`` once the
    whole fleet was seen), backwards (epoch went down), first problems.
    ``warm`` (a queue, optional) gets this pid once the first full snapshot
    was read."""
    from clients import NothingPublished, ReadContention, ScoreReader, UnknownNode

    rng = np.random.default_rng(seed)
    out = {
        "snapshots": 0,
        "scores": 0,
        "torn": 0,
        "backwards": 0,
        "problems": [],
        "errors": 0,
        "max_epoch": 0,
        "retries_exhausted": 0,
        "pid": os.getpid(),
    }
    reader = ScoreReader.attach(name)
    last_epoch = 0
    full = False  # the node count is checked once the whole fleet was seen
    try:
        while not stop.is_set():
            try:
                snap = reader.snapshot()
            except (NothingPublished, ReadContention):
                time.sleep(0.01)
                continue
            out["snapshots"] += 1
            if snap.epoch < last_epoch:
                out["backwards"] += 1
            last_epoch = max(last_epoch, snap.epoch)
            probs = check_snapshot(snap, expect_nodes if full else None)
            if not full and sum(n is not None for n in snap.nodes) == expect_nodes:
                full = True
                if warm is not None:
                    warm.put(os.getpid())
            if probs:
                out["torn"] += 1
                if len(out["problems"]) < 5:
                    out["problems"].extend(probs[:2])
            names = [n for n in snap.nodes if n is not None]
            for n in rng.choice(names, size=min(20, len(names)), replace=False) if names else ():
                try:
                    v = reader.score(str(n))
                except (UnknownNode, ReadContention):
                    out["errors"] += 1
                    continue
                out["scores"] += 1
                if not 0.0 <= v <= 1.0:
                    out["torn"] += 1
                    out["problems"].append(f"score({n}) = {v!r}")
        out["max_epoch"] = last_epoch
        out["retries_exhausted"] = reader.retries_exhausted
    finally:
        reader.close()
        results.put(out)


def start_procs(target, args_list) -> list:
    procs = [SPAWN.Process(target=target, args=args, daemon=True) for args in args_list]
    for p in procs:
        p.start()
    return procs


# ----------------------------------------------------------------- probes --


def rss_bytes(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def pid_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
