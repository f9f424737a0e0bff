"""The discrete-event run of one policy on one seeded world.

Invariant: the only things a policy changes are where jobs go and the draws
of its own generator; nodes, jobs, noise, deaths and heartbeat schedules come
from the `World` (drawn up front), so every policy of a scenario faces the
same inputs.  Scores come from the real `kernels.tick`, run every
``tick_s`` on the heartbeats received so far, with inputs built the way the
engine's gather builds them (`shm_engine.core.rows.gather_inputs`; replay does the
same on a logical clock): ``age = now - last receive``, ``fresh`` on a
node's first tick after registration, ``new_hb`` when a heartbeat arrived since
the previous tick, nodes forgotten after ``forget_after_s``.

Node model: FIFO with ``slots`` workers and service times known at
assignment, so a job's start and end are fixed when it is routed (start =
max(now, earliest worker free time)): one heap event per job.  A death bumps
the node's epoch; completions of an older epoch are lost jobs.

Heartbeat of node j, sent every ``hb_interval_s`` (phase per node) while up,
received ``delay`` later: cpu = base + per_busy * busy fraction over the
interval (+ noise), mem = base + 1% per outstanding job, queue = outstanding
jobs (running + waiting), avg_job_s = EMA (weight 0.05 per job, about the last
20) of the durations of finished jobs, ok or failed, throughput =
finished / interval, ok / err = finished counts.  No io, no latency tail.

What policies see (`View`): the latest received heartbeat fields, an
``alive`` mask (heartbeat younger than 10 s, the default ``dead_after_s``,
updated each tick: the usual heartbeat timeout of a naive scheduler), the latest
tick's published scores and ranking, and, for the oracle only, the truth.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

import kernels
from kernels.columns import make_inputs, make_outputs, make_state
from kernels.params import HAS_OKERR, HAS_THROUGHPUT

from .scenarios import World

__all__ = ["View", "run"]

_COMPLETE, _HB_SEND, _HB_RECV, _DIE, _REVIVE = 0, 1, 2, 3, 4
OK, FAILED, LOST, SENT_DEAD = 0, 1, 2, 3   # LOST: on a node when it died
BASELINE_TIMEOUT_S = 10.0   # baselines drop a node after this heartbeat silence (= default dead_after_s)
AVG_JOB_EMA = 0.05     # a node's avg_job_s: EMA over its finished jobs (~ the last 20)
_INF = math.inf


class View:
    """What a policy may read.  Arrays are indexed by node (= engine slot)."""

    def __init__(self, n: int, inp, out, speed: np.ndarray, fail_prob):
        self.n = n
        self.cpu = inp.cpu                  # latest received heartbeat fields
        self.mem = inp.mem
        self.queue = inp.queue
        self.alive = np.zeros(n, bool)      # heartbeat younger than dead_after_s (per tick)
        self.alive_idx = np.zeros(0, np.int64)
        self.score = out.score              # latest tick's published desirability
        self.ranked = out.ranked
        self.n_ranked = 0
        # Truth, for the oracle only.
        self.free_min = np.zeros(n)         # earliest time a worker is free (inf when down)
        self.speed = speed
        self.fail_prob = np.asarray(fail_prob)
        self.fallbacks = 0                  # score policies that found nothing ranked


def run(world: World, policy_cls, params: np.ndarray, policy_rng: np.random.Generator,
        forget_after_s: float = 300.0) -> dict:
    """Simulate ``world`` routed by ``policy_cls(view, rng)``; return its metrics."""
    sc = world.scenario
    n = sc.n_nodes
    slots = world.slots
    speed_l = [float(x) for x in world.speed]
    sigma = world.sigma
    fail_prob = world.fail_prob
    cpu_base, cpu_per_busy = world.cpu_base, world.cpu_per_busy
    mem_base, hb_noise = world.mem_base, world.hb_noise
    qlimit = [sc.queue_limit_per_slot * s for s in slots]
    # Lists, not arrays: the loop reads one element at a time.
    arr_t, size = world.arr_t.tolist(), world.size.tolist()
    z, u_fail = world.z.tolist(), world.u_fail.tolist()
    n_jobs = len(arr_t)
    duration, hb_iv, tick_s = sc.duration_s, sc.hb_interval_s, sc.tick_s
    fail_time = sc.fail_time_s
    dead_after = BASELINE_TIMEOUT_S   # not params: score overrides must not move the baselines

    inp = make_inputs(n)
    st_a, st_b = make_state(n), make_state(n)
    out = make_outputs(n)
    view = View(n, inp, out, world.speed, fail_prob)
    policy = policy_cls(view, policy_rng)
    choose = policy.choose
    tick = kernels.tick

    # Per-node truth (Python lists: scalar access is the hot path).
    up = [True] * n
    epoch = [0] * n
    free_at = [[0.0] * s for s in slots]
    free_min = view.free_min
    n_out = [0] * n
    last_change = [0.0] * n
    busy_area = [0.0] * n       # worker-seconds busy since the last heartbeat
    over_time = [0.0] * n       # seconds spent over the queue limit (whole run)
    up_time_start = [0.0] * n
    up_time = [0.0] * n
    fin_n = [0] * n             # finished since the last heartbeat
    fin_err = [0] * n
    last_send = [0.0] * n
    avg_job = [sc.mean_size / s for s in speed_l]   # a node's own long-run estimate
    hb_k = [0] * n

    # Engine-side heartbeat table.
    last_recv = np.zeros(n)
    registered = np.zeros(n, bool)
    fresh_pending = np.zeros(n, np.uint8)
    new_hb = np.zeros(n, np.uint8)

    status = [LOST] * n_jobs     # overwritten when a job finishes
    resp = [math.nan] * n_jobs

    heap: list = []
    seq = 0
    for j in range(n):
        heap.append((float(world.hb_phase[j]), seq, _HB_SEND, j, 0, 0.0))
        seq += 1
        for die_t, revive_t in world.downtimes[j]:
            heap.append((die_t, seq, _DIE, j, 0, 0.0))
            heap.append((revive_t, seq + 1, _REVIVE, j, 0, 0.0))
            seq += 2
    heapq.heapify(heap)
    push, pop = heapq.heappush, heapq.heappop

    def advance(j, t):
        if t > duration:
            t = duration      # metrics cover [0, duration]; the drain is not node time
        dt = t - last_change[j]
        k = n_out[j]
        s = slots[j]
        busy_area[j] += (k if k < s else s) * dt
        if k - s > qlimit[j]:
            over_time[j] += dt
        last_change[j] = t

    prev, nxt = st_a, st_b
    next_tick = 0.0
    i = 0
    next_arr = arr_t[0] if n_jobs else _INF
    while True:
        if not heap:
            if next_arr == _INF and next_tick == _INF:
                break
            th = _INF
        else:
            th = heap[0][0]
        if next_arr <= th and next_arr <= next_tick:
            # ---- arrival: route it ----
            t = next_arr
            j = choose(t, size[i])
            if up[j]:
                advance(j, t)
                fa = free_at[j]
                k = fa.index(min(fa))
                start = fa[k] if fa[k] > t else t
                if u_fail[i] < fail_prob[j]:
                    dur = fail_time
                    ok = False
                else:
                    sg = sigma[j]
                    dur = size[i] / speed_l[j] * math.exp(sg * z[i] - 0.5 * sg * sg)
                    ok = True
                fa[k] = start + dur
                free_min[j] = min(fa)
                n_out[j] += 1
                push(heap, (start + dur, seq, _COMPLETE, j, epoch[j], (i, dur, ok)))
                seq += 1
            else:
                status[i] = SENT_DEAD
            i += 1
            next_arr = arr_t[i] if i < n_jobs else _INF
        elif next_tick <= th:
            # ---- engine tick ----
            t = next_tick
            if t > duration:
                next_tick = _INF
                continue
            np.subtract(t, last_recv, out=inp.age)
            if t >= forget_after_s:
                registered &= inp.age < forget_after_s
            inp.active[:] = registered
            inp.fresh[:] = fresh_pending
            inp.new_hb[:] = new_hb
            n_ranked, _P, _live = tick(params, inp, prev, nxt, out)
            prev, nxt = nxt, prev
            fresh_pending[:] = 0
            new_hb[:] = 0
            view.n_ranked = int(n_ranked)
            alive = registered & (inp.age < dead_after)
            view.alive = alive
            view.alive_idx = np.flatnonzero(alive)
            next_tick = t + tick_s
        else:
            t, _s, kind, j, ep, x = pop(heap)
            if kind == _COMPLETE:
                ji, dur, ok = x
                if ep != epoch[j]:
                    continue          # the node died with the job on it: LOST
                advance(j, t)
                n_out[j] -= 1
                fin_n[j] += 1
                avg_job[j] += AVG_JOB_EMA * (dur - avg_job[j])
                if ok:
                    status[ji] = OK
                    resp[ji] = t - arr_t[ji]
                else:
                    status[ji] = FAILED
                    fin_err[j] += 1
            elif kind == _HB_SEND:
                if t > duration:
                    continue
                push(heap, (t + hb_iv, seq, _HB_SEND, j, 0, 0.0))
                seq += 1
                k = hb_k[j]
                hb_k[j] = k + 1
                if not up[j]:
                    continue
                advance(j, t)
                el = t - last_send[j]
                last_send[j] = t
                busy = busy_area[j] / (slots[j] * el) if el > 0 else 0.0
                busy_area[j] = 0.0
                noise = hb_noise[j, k]
                cpu = cpu_base[j] + cpu_per_busy[j] * busy + noise[0]
                mem = mem_base[j] + 0.01 * n_out[j] + noise[1]
                hb = (min(max(cpu, 0.0), 1.0), min(max(mem, 0.0), 1.0), float(n_out[j]),
                      avg_job[j], fin_n[j] / el if el > 0 else 0.0,
                      float(fin_n[j] - fin_err[j]), float(fin_err[j]))
                fin_n[j] = fin_err[j] = 0
                push(heap, (t + noise[2], seq, _HB_RECV, j, 0, hb))
                seq += 1
            elif kind == _HB_RECV:
                if not registered[j]:
                    registered[j] = True
                    fresh_pending[j] = 1
                (inp.cpu[j], inp.mem[j], inp.queue[j], inp.avg_job_s[j], inp.throughput[j],
                 inp.ok[j], inp.err[j]) = x
                inp.reported[j] = HAS_THROUGHPUT | HAS_OKERR
                last_recv[j] = t
                new_hb[j] = 1
            elif kind == _DIE:
                advance(j, t)
                up[j] = False
                epoch[j] += 1
                up_time[j] += t - up_time_start[j]
                n_out[j] = 0
                free_min[j] = _INF
            elif kind == _REVIVE:
                up[j] = True
                free_at[j] = [t] * slots[j]
                free_min[j] = t
                last_change[j] = t
                last_send[j] = t
                busy_area[j] = 0.0
                fin_n[j] = fin_err[j] = 0
                avg_job[j] = sc.mean_size / speed_l[j]
                up_time_start[j] = t

    end_t = duration
    for j in range(n):
        if up[j]:
            up_time[j] += max(end_t - up_time_start[j], 0.0)
    return _metrics(world, np.array(status, np.int8), np.array(resp), over_time, up_time,
                    view.fallbacks)


def _metrics(world: World, status, resp, over_time, up_time, fallbacks) -> dict:
    sc = world.scenario
    m = (world.arr_t >= sc.warmup_s) & (world.arr_t < sc.duration_s)
    st = status[m]
    r = resp[m][st == OK]
    q = np.percentile(r, [50, 99, 99.9]) if r.size else [math.nan] * 3
    window = sc.duration_s - sc.warmup_s
    return {
        "jobs": int(m.sum()),
        "mean_s": float(r.mean()) if r.size else math.nan,
        "p50_s": float(q[0]),
        "p99_s": float(q[1]),
        "p999_s": float(q[2]),
        "failed": int((st == FAILED).sum()),
        "lost": int(((st == LOST) | (st == SENT_DEAD)).sum()),
        "sent_to_dead": int((st == SENT_DEAD).sum()),
        "over_limit_pct": float(100.0 * sum(over_time) / max(sum(up_time), 1e-9)),
        "jobs_per_s": float(r.size / window),
        "fallbacks": int(fallbacks),
    }
