"""The discrete-event run of one policy on one seeded world.

Invariant: the only things a policy changes are where attempts go and the
draws of its own generators; nodes, jobs, noise, deaths and heartbeat
schedules come from the `World` (drawn up front), so every policy of a
scenario faces the same inputs.

Schedulers.  Each job belongs to one of ``scenario.schedulers`` schedulers;
each scheduler has its own policy instance (``policy_cls.build``), so a peer
policy knows only its own requests.  A job is dispatched on arrival; a failed
or lost attempt is released as an error and the job is retried at once on a
node it has not tried (the policy is told which), up to ``max_retries``
times; a job whose last attempt fails is failed.  Response time is counted
end to end, from the job's arrival (its first dispatch) to the completion of
its successful attempt.

Claims.  Score policies (``uses_scores``) route through the engine's claims:
every dispatch claims the node, every attempt's end releases it with its
outcome.  Each tick reads, per node, exactly what the engine's claims segment
gives the kernel: ``rif`` = claims open now over all schedulers, ``fb_ok`` /
``fb_err`` = releases since the previous tick, ``consec`` = error releases
since the node's latest ok release, ``err_age`` = seconds since its latest
error release (+inf when none).  Pick's "claims since the last tick" is the
number of claims made after the latest tick and still open.

Engine.  Scores come from the real `kernels.tick`, run every ``tick_s`` on
the heartbeats received so far, with inputs built the way the engine's
gather builds them: ``age = now - last receive``, ``fresh`` on a node's first
tick after registration, ``new_hb`` when a heartbeat arrived since the
previous tick, nodes forgotten (and their feedback reset) after
``forget_after_s``.  Policies that do not read scores skip the kernel.

Node model: FIFO with ``slots`` workers and service times known at
assignment, so an attempt's start and end are fixed when it is routed
(start = max(now, earliest worker free time)): one heap event per attempt.
An attempt on a node that fails it ends after ``fail_time_s``.  A death bumps
the node's epoch: completions of an older epoch are void, and every attempt
on the node is released as an error ``loss_detect_s`` after the death
("lost").  An attempt sent to a dead node fails after ``connect_timeout_s``.

Heartbeat of node j, sent every ``hb_interval_s`` (phase per node) while up,
received ``delay`` later: cpu = base + per_busy * busy fraction over the
interval (+ noise), mem = base + 1% per job on the node, queue = jobs
waiting (not running: SCORING.md's field), slots, avg_job_s = EMA (weight
0.05 per attempt, about the last 20) of the durations of finished attempts,
ok or failed, throughput = finished / interval, ok / err = finished counts
(when ``hb_reports_okerr``).  The heartbeat also carries the number of jobs
on the node (running + waiting), which only the queue baselines read (the
usual "queue length" of join-shortest-queue).  No io, no latency tail.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

import kernels
from kernels.columns import make_inputs, make_outputs, make_state
from kernels.params import HAS_OKERR, HAS_THROUGHPUT, TICK_INTERVAL_MS

from .scenarios import World

__all__ = ["View", "run", "LEVELS"]

_COMPLETE, _HB_SEND, _HB_RECV, _DIE, _REVIVE, _FAIL = 0, 1, 2, 3, 4, 5
OK, FAILED = 0, 1  # a job's final status
BASELINE_TIMEOUT_S = (
    10.0  # heartbeat-fed policies drop a node after this silence (= default dead_after_s)
)
AVG_JOB_EMA = 0.05  # a node's avg_job_s: EMA over its finished attempts (~ the last 20)
LEVELS = 16  # time at 0 .. LEVELS-1 jobs on a node is tracked (the last level is ">=")
_INF = math.inf


class View:
    """What a policy may read.  Arrays are indexed by node (= engine slot)."""

    def __init__(self, n: int, inp, out, speed: np.ndarray, fail_prob):
        self.n = n
        self.cpu = inp.cpu  # latest received heartbeat fields
        self.mem = inp.mem
        self.avg_job_s = inp.avg_job_s
        self.jobs = np.zeros(n)  # heartbeat: jobs on the node (running + waiting)
        self.slots = np.ones(n)  # heartbeat: workers (1 until the first heartbeat)
        self.alive = np.zeros(n, bool)  # heartbeat younger than 10 s (per tick)
        self.alive_idx = np.zeros(0, np.int64)
        self.score = out.score  # latest tick's published desirability
        self.ranked = out.ranked
        self.n_ranked = 0
        self.claims = np.zeros(n)  # claims made since the latest tick, still open
        # Truth: the oracle, prequal's probes (a server's own RIF), validation policies.
        self.n_out = [0] * n  # jobs on the node now (running + waiting)
        self.free_min = np.zeros(n)  # earliest time a worker is free (inf when down)
        self.speed = speed
        self.fail_prob = np.asarray(fail_prob)
        self.fallbacks = 0  # score policies that found nothing ranked


def run(
    world: World,
    policy_cls,
    params: np.ndarray,
    policy_rng: np.random.Generator,
    forget_after_s: float = 300.0,
) -> dict:
    """Simulate ``world`` routed by ``policy_cls``; return its metrics.  The
    tick runs every ``scenario.tick_s``, which must equal ``params``'s
    ``tick_interval_ms`` (the error window's decay assumes it)."""
    sc = world.scenario
    if abs(params[TICK_INTERVAL_MS] - sc.tick_s * 1000.0) > 1e-9:
        raise ValueError(
            f"run: params tick_interval_ms = {params[TICK_INTERVAL_MS]!r} but "
            f"scenario {sc.name!r} ticks every {sc.tick_s * 1000.0!r} ms"
        )
    n = sc.n_nodes
    slots = world.slots
    speed_l = [float(x) for x in world.speed]
    sigma = world.sigma
    fail_prob = world.fail_prob
    cpu_base, cpu_per_busy = world.cpu_base, world.cpu_per_busy
    mem_base, hb_noise = world.mem_base, world.hb_noise
    qlimit = [sc.queue_limit_per_slot * s for s in slots]
    arr_t, size = world.arr_t.tolist(), world.size.tolist()
    z, u_fail = world.z.tolist(), world.u_fail.tolist()
    sched = world.sched.tolist()
    n_jobs = len(arr_t)
    duration, warm = sc.duration_s, sc.warmup_s
    hb_iv, tick_s = sc.hb_interval_s, sc.tick_s
    fail_time = sc.fail_time_s
    max_att = sc.max_retries + 1
    connect_timeout, loss_detect = sc.connect_timeout_s, sc.loss_detect_s
    hb_okerr = sc.hb_reports_okerr
    dead_after = BASELINE_TIMEOUT_S  # not params: score overrides must not move the baselines

    inp = make_inputs(n)
    st_a, st_b = make_state(n), make_state(n)
    out = make_outputs(n)
    engine = _Engine(params, inp, st_a, st_b, out, n)
    view = View(n, inp, out, world.speed, fail_prob)
    pols = policy_cls.build(view, policy_rng.spawn(sc.schedulers))
    uses_scores = bool(getattr(policy_cls, "uses_scores", False))
    track = bool(getattr(policy_cls, "tracks_requests", False))
    claims = uses_scores

    # Per-node truth (Python lists: scalar access is the hot path).
    up = [True] * n
    epoch = [0] * n
    free_at = [[0.0] * s for s in slots]
    free_min = view.free_min
    n_out = view.n_out
    inflight = [dict() for _ in range(n)]  # job -> (token, claim tick) of its attempt on the node
    last_change = [0.0] * n
    busy_area = [0.0] * n  # worker-seconds busy since the last heartbeat
    over_time = [0.0] * n  # seconds over the queue limit (whole run)
    level_time = [0.0] * LEVELS  # node-seconds at each number of jobs, after warm-up
    up_time_start = [0.0] * n
    up_time = [0.0] * n
    fin_n = [0] * n  # finished attempts since the last heartbeat
    fin_err = [0] * n
    last_send = [0.0] * n
    avg_job = [sc.mean_size / s for s in speed_l]  # a node's own long-run estimate
    hb_k = [0] * n

    # Engine-side heartbeat table and claims segment.
    last_recv = np.zeros(n)
    registered = np.zeros(n, bool)
    fresh_pending = np.zeros(n, np.uint8)
    new_hb = np.zeros(n, np.uint8)
    rif = [0] * n
    fb_ok = [0] * n
    fb_err = [0] * n
    consec = [0] * n
    last_err = [-_INF] * n
    fresh_claims = view.claims
    tick_epoch = 0

    # Per job.
    status = [-1] * n_jobs
    resp = [math.nan] * n_jobs
    qwait = [math.nan] * n_jobs  # queueing delay of the successful attempt
    svc = [math.nan] * n_jobs  # service time of the successful attempt
    n_att = [0] * n_jobs
    tried: list = [()] * n_jobs
    c_err = [0] * n_jobs  # attempts failed by a node
    c_lost = [0] * n_jobs  # attempts on a node when it died
    c_dead = [0] * n_jobs  # attempts sent to a dead node

    heap: list = []
    seq = 0
    for j in range(n):
        heap.append((float(world.hb_phase[j]), seq, _HB_SEND, j, 0, None))
        seq += 1
        for die_t, revive_t in world.downtimes[j]:
            heap.append((die_t, seq, _DIE, j, 0, None))
            heap.append((revive_t, seq + 1, _REVIVE, j, 0, None))
            seq += 2
    heapq.heapify(heap)
    push, pop = heapq.heappush, heapq.heappop

    def advance(j, t):
        if t > duration:
            t = duration  # metrics cover [0, duration]; the drain is not node time
        lc = last_change[j]
        dt = t - lc
        k = n_out[j]
        s = slots[j]
        busy_area[j] += (k if k < s else s) * dt
        if k - s > qlimit[j]:
            over_time[j] += dt
        if t > warm:
            level_time[k if k < LEVELS else LEVELS - 1] += t - (lc if lc > warm else warm)
        last_change[j] = t

    def dispatch(i, t):
        nonlocal seq
        k = n_att[i]
        pol = pols[sched[i]]
        j = pol.choose(t, size[i], tried[i])
        n_att[i] = k + 1
        tried[i] = tried[i] + (j,)
        token = pol.dispatched(j, t) if track else None
        if claims:
            rif[j] += 1
            fresh_claims[j] += 1
        ce = tick_epoch
        if up[j]:
            advance(j, t)
            fa = free_at[j]
            w = fa.index(min(fa))
            start = fa[w] if fa[w] > t else t
            if u_fail[i][k] < fail_prob[j]:
                dur = fail_time
                ok = False
            else:
                sg = sigma[j]
                dur = size[i] / speed_l[j] * math.exp(sg * z[i][k] - 0.5 * sg * sg)
                ok = True
            fa[w] = start + dur
            free_min[j] = min(fa)
            n_out[j] += 1
            inflight[j][i] = (token, ce)
            push(heap, (start + dur, seq, _COMPLETE, j, epoch[j], (i, ok, dur, start - t)))
        else:
            c_dead[i] += 1
            push(heap, (t + connect_timeout, seq, _FAIL, j, 0, (i, token, ce)))
        seq += 1

    def release(i, j, t, ok, token, ce, served):
        if track:
            pols[sched[i]].released(j, t, ok, token, served)
        if claims:
            rif[j] -= 1
            if ce == tick_epoch:
                fresh_claims[j] -= 1
            if ok:
                fb_ok[j] += 1
                consec[j] = 0
            else:
                fb_err[j] += 1
                consec[j] += 1
                last_err[j] = t
        if not ok:
            if n_att[i] < max_att:
                dispatch(i, t)
            else:
                status[i] = FAILED

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
            # ---- arrival: its first dispatch ----
            dispatch(i, next_arr)
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
                keep = inp.age < forget_after_s
                for j in np.flatnonzero(registered & ~keep).tolist():
                    rif[j] = fb_ok[j] = fb_err[j] = consec[j] = (
                        0  # feedback belongs to the registration
                    )
                    last_err[j] = -_INF
                registered &= keep
            alive = registered & (inp.age < dead_after)
            view.alive = alive
            view.alive_idx = np.flatnonzero(alive)
            if uses_scores:
                inp.active[:] = registered
                inp.fresh[:] = fresh_pending
                inp.new_hb[:] = new_hb
                view.n_ranked = engine.tick(t, rif, fb_ok, fb_err, consec, last_err)
                for j in range(n):
                    fb_ok[j] = fb_err[j] = 0
                fresh_claims[:] = 0.0
                tick_epoch += 1
            fresh_pending[:] = 0
            new_hb[:] = 0
            next_tick = t + tick_s
        else:
            t, _s, kind, j, ep, x = pop(heap)
            if kind == _COMPLETE:
                if ep != epoch[j]:
                    continue  # the node died with it; its _FAIL is scheduled
                ji, ok, dur, wait = x
                advance(j, t)
                n_out[j] -= 1
                token, ce = inflight[j].pop(ji)
                fin_n[j] += 1
                avg_job[j] += AVG_JOB_EMA * (dur - avg_job[j])
                if ok:
                    status[ji] = OK
                    resp[ji] = t - arr_t[ji]
                    qwait[ji] = wait
                    svc[ji] = dur
                else:
                    fin_err[j] += 1
                    c_err[ji] += 1
                release(ji, j, t, ok, token, ce, True)
            elif kind == _FAIL:
                ji, token, ce = x
                release(ji, j, t, False, token, ce, False)
            elif kind == _HB_SEND:
                if t > duration:
                    continue
                push(heap, (t + hb_iv, seq, _HB_SEND, j, 0, None))
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
                jobs = n_out[j]
                waiting = jobs - slots[j] if jobs > slots[j] else 0
                hb = (
                    min(max(cpu, 0.0), 1.0),
                    min(max(mem, 0.0), 1.0),
                    float(waiting),
                    avg_job[j],
                    fin_n[j] / el if el > 0 else 0.0,
                    float(fin_n[j] - fin_err[j]),
                    float(fin_err[j]),
                    float(jobs),
                )
                fin_n[j] = fin_err[j] = 0
                push(heap, (t + noise[2], seq, _HB_RECV, j, 0, hb))
                seq += 1
            elif kind == _HB_RECV:
                if not registered[j]:
                    registered[j] = True
                    fresh_pending[j] = 1
                (
                    inp.cpu[j],
                    inp.mem[j],
                    inp.queue[j],
                    inp.avg_job_s[j],
                    inp.throughput[j],
                    inp.ok[j],
                    inp.err[j],
                    view.jobs[j],
                ) = x
                view.slots[j] = slots[j]
                engine.heartbeat(j, slots[j], hb_okerr)
                last_recv[j] = t
                new_hb[j] = 1
            elif kind == _DIE:
                advance(j, t)
                up[j] = False
                epoch[j] += 1
                up_time[j] += t - up_time_start[j]
                for ji, (token, ce) in inflight[j].items():
                    c_lost[ji] += 1
                    push(heap, (t + loss_detect, seq, _FAIL, j, 0, (ji, token, ce)))
                    seq += 1
                inflight[j].clear()
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

    for j in range(n):
        if up[j]:
            up_time[j] += max(duration - up_time_start[j], 0.0)
    return _metrics(
        world,
        status,
        resp,
        qwait,
        svc,
        c_err,
        c_lost,
        c_dead,
        n_att,
        over_time,
        up_time,
        level_time,
        view.fallbacks,
    )


class _Engine:
    """The engine's side of one run: the tick's inputs, state and scratch."""

    def __init__(self, params, inp, prev, nxt, out, n):
        self.params, self.inp, self.prev, self.nxt, self.out = params, inp, prev, nxt, out
        self.scratch = kernels.make_scratch(n)

    def heartbeat(self, j, slots, okerr):
        self.inp.reported[j] = HAS_THROUGHPUT | (HAS_OKERR if okerr else 0)
        self.inp.slots[j] = slots

    def tick(self, t, rif, fb_ok, fb_err, consec, last_err) -> int:
        inp = self.inp
        inp.rif[:] = rif
        inp.fb_ok[:] = fb_ok
        inp.fb_err[:] = fb_err
        inp.consec[:] = consec
        np.subtract(t, last_err, out=inp.err_age)  # +inf when no error release
        n_ranked, _p, _live = kernels.tick(
            self.params, inp, self.prev, self.nxt, self.out, self.scratch
        )
        self.prev, self.nxt = self.nxt, self.prev
        return int(n_ranked)


def _metrics(
    world: World,
    status,
    resp,
    qwait,
    svc,
    c_err,
    c_lost,
    c_dead,
    n_att,
    over_time,
    up_time,
    level_time,
    fallbacks,
) -> dict:
    sc = world.scenario
    m = (world.arr_t >= sc.warmup_s) & (world.arr_t < sc.duration_s)
    st = np.asarray(status, np.int8)[m]
    okm = st == OK
    r = np.asarray(resp)[m][okm]
    w = np.asarray(qwait)[m][okm]
    sv = np.asarray(svc)[m][okm]
    q = np.percentile(r, [50, 99, 99.9]) if r.size else [math.nan] * 3
    tail = r >= q[1] if r.size else r > 0
    tr = r[tail].sum()
    window = sc.duration_s - sc.warmup_s
    lost = np.asarray(c_lost)[m]
    dead = np.asarray(c_dead)[m]
    lt = np.asarray(level_time)
    tot = lt.sum()
    return {
        "jobs": int(m.sum()),
        "mean_s": float(r.mean()) if r.size else math.nan,
        "p50_s": float(q[0]),
        "p99_s": float(q[1]),
        "p999_s": float(q[2]),
        "mean_wait_s": float(w.mean()) if w.size else math.nan,
        "failed": int((st != OK).sum()),
        "lost": int(lost.sum() + dead.sum()),
        "sent_to_dead": int(dead.sum()),
        "attempt_errors": int(np.asarray(c_err)[m].sum()),
        "retries": int((np.asarray(n_att)[m] - 1).sum()),
        "over_limit_pct": float(100.0 * sum(over_time) / max(sum(up_time), 1e-9)),
        "jobs_per_s": float(r.size / window),
        "fallbacks": int(fallbacks),
        # where the slowest 1% of jobs spent their time: the successful
        # attempt's service and queueing, and the failed attempts before it
        "tail_service_share": float(sv[tail].sum() / tr) if tr > 0 else math.nan,
        "tail_wait_share": float(w[tail].sum() / tr) if tr > 0 else math.nan,
        "tail_retry_share": float(1.0 - (sv[tail].sum() + w[tail].sum()) / tr)
        if tr > 0
        else math.nan,
        # fraction of node-time with >= k jobs on the node, k = 0 .. LEVELS-1
        "at_least_k": (np.cumsum(lt[::-1])[::-1] / tot).round(6).tolist() if tot > 0 else [],
    }
