"""``python -m benchmarks run [--quick] [--nodes 1000,10000,...]``: the performance harness.

Every comparison is measured in the same run, interleaved where the two
sides share a machine state, and reported as medians (and p99) of many
repetitions, because the machines this runs on are shared.

Sections (keys of ``latest.json``):
  tick       `Ticker.tick` over a real segment (gather + kernels + publish
             through the latch) at each node count, steady state: every node
             heartbeats once a second and a tick runs every 50 ms, so 5% of
             the rows are new at each tick.  Side by side, interleaved on
             the same segment: the ticker as shipped before (full gather,
             introsort), the earlier prototype with step 14 seeded by the
             previous ranking (`kernels.pipeline.tick_ranked`), the kernels
             alone, the vectorised NumPy baseline and the per-node Python
             baseline (sampled on fewer nodes and extrapolated linearly where
             it would take too long; marked "extrapolated").  Then the parts
             of a tick on private copies: gather with and without the row
             cache, the score passes, and step 14 by each sort.
             ``--only tick`` runs just this section, without Python.
  read       `ScoreReader` from another process: score(node), snapshot(),
             top(10); Redis (HGET, HGETALL, ZREVRANGE) when redis-server and
             the redis client are installed; a multiprocessing.Manager dict.
  ingest     sustained heartbeats/s into the segment over a real PULL socket,
             received as the ingest process receives (`ingest.drain`, then
             `Ingest.handle_frames`): single JSON frames, single binary
             frames, batches of 1000; and the ceilings: a bare PULL loop (one
             blocking recv per frame) and the drain loop, doing nothing with
             the bytes.  ``--only ingest`` runs just this section.
  freshness  heartbeat leaving the sender -> its effect visible to a
             ScoreReader, 10K nodes at 1 Hz, real ingest and tick processes.
  memory     segment bytes per node, private per-node arrays, RSS per process.
  scaling    the tick curves (plot ``tick_scaling.png``, needs matplotlib).

Only a full run (no ``--quick``, no ``--out``) rewrites the bench section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"
RESULTS_MD = ROOT / "RESULTS.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

GOALS = {
    "tick_10k_us": 50.0, "tick_1m_us": 10_000.0, "score_ns": 1000.0, "snapshot_10k_us": 20.0,
    "top10_us": 5.0, "single_binary_of_ceiling": 0.60, "batched_hb_s": 5e6,
    "freshness_extra_ms": 2.0, "memory_10k_bytes": 8 * 2**20,
}
TICK_S = 0.05
HB_FRACTION = 0.05          # 1 Hz heartbeats / 20 Hz ticks


# ------------------------------------------------------------------ utils --
def _stats(ns) -> dict:
    a = np.asarray(ns, np.float64)
    return {"median": float(np.median(a)), "p99": float(np.percentile(a, 99)),
            "min": float(a.min()), "n": int(a.size)}


def _unique(tag: str) -> str:
    return f"bench-{os.getpid()}-{tag}-{time.monotonic_ns() % 10**9}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kb(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "RssAnon", "RssFile", "RssShmem")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "platform": platform.platform(),
            "load_avg_1m_at_start": load}


def _config(capacity: int, port: int | None = None):
    from shm_engine.core.config import Config, with_overrides
    over = {"engine.capacity": capacity}
    if port is not None:
        over["ingest.bind"] = f"tcp://127.0.0.1:{port}"
    return with_overrides(Config(), over)


def _records(n: int, rng, start: int = 0):
    from shm_engine.wire.format import HAS_IO, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT, RECORD_DTYPE
    r = np.zeros(n, RECORD_DTYPE)
    r["cpu"] = rng.uniform(0.0, 0.9, n)
    r["mem"] = rng.uniform(0.0, 0.9, n)
    r["queue"] = rng.uniform(0.0, 20.0, n)
    r["avg_job_s"] = rng.uniform(0.01, 1.0, n)
    r["throughput"] = rng.uniform(0.0, 100.0, n)
    r["io"] = rng.uniform(0.0, 1.0, n)
    r["p50_ms"] = rng.uniform(1.0, 10.0, n)
    r["p95_ms"] = r["p50_ms"] * rng.uniform(1.0, 3.0, n)
    r["ok"] = rng.integers(0, 50, n)
    r["err"] = rng.integers(0, 5, n)
    r["flags"] = HAS_THROUGHPUT | HAS_OKERR | HAS_IO | HAS_TAIL
    r["node"] = [b"node-%07d" % i for i in range(start, start + n)]
    return r


def _drift(recs, sel, rng):
    k = len(sel)
    recs["cpu"][sel] = np.clip(recs["cpu"][sel] + rng.normal(0, 0.02, k), 0.0, 0.9)
    recs["mem"][sel] = np.clip(recs["mem"][sel] + rng.normal(0, 0.02, k), 0.0, 0.9)
    recs["queue"][sel] = np.clip(recs["queue"][sel] + rng.normal(0, 1.0, k), 0.0, 40.0)


def _register_all(views, config, recs, now: float) -> "object":
    from shm_engine.ingest.process import Ingest
    from shm_engine.wire.encode import encode_batch
    ing = Ingest(views, config)
    for start in range(0, len(recs), 4000):
        ing.handle_frame(encode_batch(recs[start:start + 4000]), now)
    return ing


# ------------------------------------------------------------------- tick --
class _RankedTicker:
    """`Ticker.tick` with step 14 seeded by the previous published ranking
    (`kernels.pipeline.tick_ranked`) and a full gather: the earlier
    prototype, kept for comparison.  Same publish protocol as `Ticker.tick`.
    ``ranked=False``: the ticker as shipped before the radix sort and the
    gather cache (full gather, `kernels.tick`'s introsort)."""

    def __init__(self, ticker, ranked: bool = True):
        self.t = ticker
        self.ranked = ranked

    def tick(self, now: float) -> float:
        import kernels
        from kernels.pipeline import tick_ranked
        from shm_engine.core.seqlock import write_begin, write_end
        from shm_engine.core.rows import gather
        t = self.t
        t0 = time.perf_counter()
        h = t.header
        epoch = write_begin(t._latch)
        prev = t.views.buffers[(epoch - 1) & 1]
        nxt = t.views.buffers[epoch & 1]
        hwm = min(int(h.slot_hwm[0]), t.inputs.active.shape[0])
        gather(t.views, prev, nxt, t.inputs, now, hwm=hwm)
        if self.ranked:
            n_prev = int(prev.n_ranked[0]) if epoch > 1 else 0
            n_ranked, pressure, live = tick_ranked(t.params, t.inputs, prev.state, nxt.state,
                                                   nxt.out, prev.out.ranked, n_prev)
        else:
            n_ranked, pressure, live = kernels.tick(t.params, t.inputs, prev.state, nxt.state,
                                                    nxt.out)
        nxt.epoch[0] = epoch
        nxt.tick_mono[0] = now
        nxt.tick_wall[0] = time.time()
        nxt.pressure[0] = pressure
        nxt.n_ranked[0] = n_ranked
        nxt.live[0] = live
        nxt.registered[0] = int(nxt.out.counts.sum())
        nxt.slot_hwm[0] = hwm
        write_end(t._latch)
        return (time.perf_counter() - t0) * 1e6


def _components(views, params, hwm, now, c, log_moves) -> dict:
    """Time each part of a tick on private copies of what the ticker just
    read and published (``c``: private arrays of the caller, kept across
    calls), in shuffled order: gather without / with the row cache, the
    score passes, and step 14 by introsort, seeded insertion sort and radix."""
    from kernels.pipeline import _score
    from kernels.ranking import radix_ranked, rerank, sort_ranked
    from shm_engine.core.rows import gather
    epoch = int(views.header.latch_seq[0]) >> 1
    prev = views.buffers[(epoch - 1) & 1]
    nxt = views.buffers[epoch & 1]
    out = {}
    c["cache_full"].version[:] = 1   # nothing held: every row copied

    def g_full():
        gather(views, prev, c["nxt_full"], c["inp_full"], now, hwm=hwm, cache=c["cache_full"])

    def g_cached():
        gather(views, prev, c["nxt_cached"], c["inp"], now, hwm=hwm, cache=c["cache"])

    def passes():
        return _score(params, c["inp"], prev.state, c["state"], c["out"])

    for name, fn in sorted({"gather_full": g_full, "gather_cached": g_cached}.items(),
                           key=lambda _: c["rng"].random()):
        t0 = time.perf_counter_ns()
        fn()
        out[name] = (time.perf_counter_ns() - t0) / 1e3
    t0 = time.perf_counter_ns()
    m, _p, _l = passes()
    out["passes"] = (time.perf_counter_ns() - t0) / 1e3
    score = c["out"].score
    cand = c["out"].ranked[:m].copy()
    prev_ranked = prev.out.ranked
    n_prev = int(prev.n_ranked[0])
    results = {}
    sorts = {"sort_intro": lambda a: sort_ranked(score, a, m),
             "sort_rerank": lambda a: rerank(score, a, m, prev_ranked, n_prev),
             "sort_radix": lambda a: radix_ranked(score, a, m, c["scratch"])}
    for name, fn in sorted(sorts.items(), key=lambda _: c["rng"].random()):
        a = c["work"]
        a[:m] = cand
        t0 = time.perf_counter_ns()
        r = fn(a)
        out[name] = (time.perf_counter_ns() - t0) / 1e3
        results[name] = a[:m].copy()
        if name == "sort_rerank":
            log_moves.append(int(r))
    assert all(np.array_equal(v, results["sort_intro"]) for v in results.values())
    assert np.array_equal(results["sort_intro"], nxt.out.ranked[:m])
    return out


class _PrivateBuffer:
    """The gen/hb_seen columns a gather writes, outside the segment."""

    def __init__(self, n: int):
        self.gen = np.zeros(n, np.uint64)
        self.hb_seen = np.zeros(n, np.uint64)


def _tick_line(out: dict) -> str:
    c = out["components"]
    return (f"  tick n={out['nodes']}: ticker {out['ticker']['median']:.1f} us (before "
            f"{out['ticker_before']['median']:.1f}, tick_ranked proto "
            f"{out['ticker_ranked']['median']:.1f}), kernels {out['kernels']['median']:.1f} us; "
            f"gather full/cached {c['gather_full']['median']:.1f}/"
            f"{c['gather_cached']['median']:.1f}, passes {c['passes']['median']:.1f}, sort "
            f"intro/rerank/radix {c['sort_intro']['median']:.1f}/{c['sort_rerank']['median']:.1f}/"
            f"{c['sort_radix']['median']:.1f} us (rerank fell back "
            f"{c['rerank_fallbacks']['fell_back']}/{c['rerank_fallbacks']['n']})")


def bench_tick(n: int, reps: int, python_max: int, log, only_tick: bool = False) -> dict:
    import kernels
    from benchmarks.baselines.numpy_tick import numpy_tick
    from benchmarks.baselines.python_tick import Node, python_tick
    from kernels.columns import make_outputs, make_state
    from kernels.pipeline import tick_radix
    from kernels.ranking import make_rank_scratch
    from shm_engine.core.segment import Segment
    from shm_engine.core.rows import make_gather_cache, write_batch
    from shm_engine.tick.ticker import Ticker

    rng = np.random.default_rng(n)
    config = _config(n)
    name = _unique("tick")
    seg = Segment.create(name, n)
    try:
        recs = _records(n, rng)
        now = 1000.0
        t_reg = time.perf_counter()
        _register_all(seg.views, config, recs, now)
        t_reg = time.perf_counter() - t_reg
        ticker = Ticker(seg.views, config)
        ranked = _RankedTicker(ticker)
        before = _RankedTicker(ticker, ranked=False)
        params = ticker.params
        # private copies for the kernels-only, component and NumPy measurements
        k_prev, k_nxt, k_out = make_state(n), make_state(n), make_outputs(n)
        np_prev, np_nxt, np_out = make_state(n), make_state(n), make_outputs(n)
        k_inp = kernels.make_inputs(n)
        k_scratch = make_rank_scratch(n)
        comp = {"inp": kernels.make_inputs(n), "inp_full": kernels.make_inputs(n),
                "cache": make_gather_cache(n), "cache_full": make_gather_cache(n),
                "nxt_full": _PrivateBuffer(n), "nxt_cached": _PrivateBuffer(n),
                "state": make_state(n), "out": make_outputs(n), "scratch": k_scratch,
                "work": np.zeros(n, np.int32), "rng": np.random.default_rng(7)}
        moves = []
        warm = 3
        res = {"ticker": [], "ticker_before": [], "ticker_ranked": [], "kernels": [],
               "numpy": []}
        comps: dict[str, list] = {}
        hb = max(1, int(n * HB_FRACTION))
        numpy_every = 1 if n <= 100_000 else 3
        for k in range(warm + reps):
            now += TICK_S
            sel = rng.choice(n, hb, replace=False).astype(np.int64)
            _drift(recs, sel, rng)
            write_batch(seg.views.table, sel, recs[sel], now)
            # interleave: the shipped ticker, the one shipped before, the prototype
            if k % 3 == 0:
                us = ticker.tick(now).duration_us
                res["ticker"].append(us) if k >= warm else None
            elif k % 3 == 1:
                us = before.tick(now)
                res["ticker_before"].append(us) if k >= warm else None
            else:
                us = ranked.tick(now)
                res["ticker_ranked"].append(us) if k >= warm else None
            hwm = int(seg.views.header.slot_hwm[0])
            for key, v in _components(seg.views, params, hwm, now, comp, moves).items():
                comps.setdefault(key, []).append(v) if k >= warm else None
            for dst, src in zip(k_inp, ticker.inputs):
                dst[:] = src
            t0 = time.perf_counter_ns()
            tick_radix(params, k_inp, k_prev, k_nxt, k_out, k_scratch)
            t1 = time.perf_counter_ns()
            k_prev, k_nxt = k_nxt, k_prev
            if k >= warm:
                res["kernels"].append((t1 - t0) / 1e3)
            if k % numpy_every == 0:
                t0 = time.perf_counter_ns()
                numpy_tick(params, k_inp, np_prev, np_nxt, np_out)
                t1 = time.perf_counter_ns()
                np_prev, np_nxt = np_nxt, np_prev
                if k >= warm:
                    res["numpy"].append((t1 - t0) / 1e3)
        out = {"nodes": n, "registration_s": t_reg}
        for key, v in res.items():
            st = _stats(v)
            st["ns_per_node"] = st["median"] * 1e3 / n
            out[key] = st
        out["components"] = {key: _stats(v) for key, v in comps.items()}
        mv = np.asarray(moves[warm:])
        out["components"]["rerank_fallbacks"] = {"n": int(mv.size), "fell_back": int((mv < 0).sum())}
        out["equal_results"] = bool(np.array_equal(np_out.score, k_out.score) or
                                    np.allclose(np_out.score, k_out.score, atol=1e-9))
    finally:
        ticker = ranked = before = None
        seg.close()
        seg.unlink()
    if only_tick:
        log(_tick_line(out))
        return out

    # Python baseline: a dict of Node objects, sampled on <= python_max nodes.
    pn = min(n, python_max)
    nodes = {}
    for i in range(pn):
        nd = Node()
        r = recs[i]
        for f in ("cpu", "mem", "queue", "avg_job_s", "throughput", "io", "p50_ms", "p95_ms"):
            setattr(nd, f, float(r[f]))
        nd.ok, nd.err, nd.reported = float(r["ok"]), float(r["err"]), 15
        nodes[b"node-%07d" % i] = nd
    keys = list(nodes)
    prng = np.random.default_rng(1)
    times = []
    py_reps = max(3, min(reps, int(2e6 // max(pn, 1))))
    for k in range(py_reps + 1):
        for j in prng.choice(pn, max(1, int(pn * HB_FRACTION)), replace=False).tolist():
            nd = nodes[keys[j]]
            nd.cpu = min(max(nd.cpu + prng.normal(0, 0.02), 0.0), 0.9)
            nd.new_hb = True
            nd.age = 0.0
        t0 = time.perf_counter_ns()
        python_tick(nodes, params)
        t1 = time.perf_counter_ns()
        for nd in nodes.values():
            nd.age += TICK_S
        if k:
            times.append((t1 - t0) / 1e3 * (n / pn))
    st = _stats(times)
    st["ns_per_node"] = st["median"] * 1e3 / n
    st["measured_nodes"] = pn
    st["extrapolated"] = pn < n
    out["python"] = st
    log(_tick_line(out) + f"; numpy {out['numpy']['median']:.1f} us, python "
        f"{st['median']:.0f} us" + (" (extrapolated)" if pn < n else ""))
    return out


# ------------------------------------------------------------------- read --
def _reader_child(name: str, n: int, reps: int) -> None:
    """Runs in a separate process: time ScoreReader calls, print JSON."""
    from clients.reader import ScoreReader
    r = ScoreReader.attach(name)
    rng = np.random.default_rng(0)
    names = [f"node-{i:07d}" for i in rng.integers(0, n, 1000).tolist()]
    for nm in names[:50]:
        r.score(nm)
    score_ns = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for nm in names:
            r.score(nm)
        score_ns.append((time.perf_counter_ns() - t0) / len(names))
    snap, top = [], []
    r.snapshot()
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        r.snapshot()
        t1 = time.perf_counter_ns()
        r.top(10)
        t2 = time.perf_counter_ns()
        snap.append((t1 - t0) / 1e3)
        top.append((t2 - t1) / 1e3)
    # Where snapshot time goes: the copies alone vs building the Snapshot.
    bufs = r._bufs
    copy_us = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        r._copy(0, n)
        copy_us.append((time.perf_counter_ns() - t0) / 1e3)
    # Prototype: one float straight from a cached numpy view (the floor of
    # the Python call path, without the latch or the name lookup).
    score0 = bufs[0].views["score"]
    slots = [int(s) for s in rng.integers(0, n, 1000)]
    floor_ns = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for s in slots:
            float(score0[s])
        floor_ns.append((time.perf_counter_ns() - t0) / len(slots))
    print(json.dumps({"score_ns": _stats(score_ns), "snapshot_us": _stats(snap),
                      "top10_us": _stats(top), "snapshot_copy_only_us": _stats(copy_us),
                      "numpy_item_floor_ns": _stats(floor_ns),
                      "retries_exhausted": r.retries_exhausted}))
    r.close()


def _redis_bench(scores: dict, reps: int) -> dict:
    exe = shutil.which("redis-server")
    if exe is None:
        return {"skipped": "redis-server is not installed (apt-get install redis-server)"}
    try:
        import redis
    except ImportError:
        return {"skipped": "the redis Python client is not installed (pip install redis)"}
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        cli = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(200):
            try:
                cli.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        cli.hset("scores", mapping=scores)
        cli.zadd("ranking", scores)
        names = list(scores)[:1000]
        hget, hgetall, ztop = [], [], []
        for _ in range(max(3, reps // 10)):
            t0 = time.perf_counter_ns()
            for nm in names:
                cli.hget("scores", nm)
            hget.append((time.perf_counter_ns() - t0) / len(names))
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            cli.hgetall("scores")
            t1 = time.perf_counter_ns()
            cli.zrevrange("ranking", 0, 9, withscores=True)
            t2 = time.perf_counter_ns()
            hgetall.append((t1 - t0) / 1e3)
            ztop.append((t2 - t1) / 1e3)
        return {"server": os.path.basename(exe), "hget_ns": _stats(hget), "hgetall_us": _stats(hgetall),
                "zrevrange10_us": _stats(ztop), "server_rss_kb": _rss_kb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(5)


def _manager_bench(scores: dict, reps: int) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as mgr:
        d = mgr.dict(scores)
        top = sorted(scores.items(), key=lambda kv: -kv[1])[:10]
        meta = mgr.dict({"top10": top})
        names = list(scores)[:1000]
        get, copy, t10 = [], [], []
        for _ in range(max(3, reps // 10)):
            t0 = time.perf_counter_ns()
            for nm in names:
                d[nm]
            get.append((time.perf_counter_ns() - t0) / len(names))
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            d.copy()
            t1 = time.perf_counter_ns()
            meta["top10"]
            t2 = time.perf_counter_ns()
            copy.append((t1 - t0) / 1e3)
            t10.append((t2 - t1) / 1e3)
        return {"get_ns": _stats(get), "copy_us": _stats(copy), "top10_us": _stats(t10)}


def bench_read(n: int, reps: int, log) -> dict:
    from shm_engine.core.segment import Segment
    from shm_engine.tick.ticker import Ticker
    rng = np.random.default_rng(5)
    config = _config(n)
    name = _unique("read")
    seg = Segment.create(name, n)
    stop = threading.Event()
    try:
        recs = _records(n, rng)
        _register_all(seg.views, config, recs, time.monotonic())
        ticker = Ticker(seg.views, config)
        ticker.tick(time.monotonic())

        def run():   # the writer keeps publishing while the reader reads
            while not stop.is_set():
                ticker.tick(time.monotonic())
                time.sleep(TICK_S)

        th = threading.Thread(target=run, daemon=True)
        th.start()
        code = (f"import sys; sys.path.insert(0, {str(ROOT.parent)!r}); "
                f"from benchmarks.harness import _reader_child; "
                f"_reader_child({name!r}, {n}, {reps})")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"reader process failed: {proc.stderr[-2000:]}")
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        stop.set()
        th.join()
        snap_scores = {f"node-{i:07d}": float(s)
                       for i, s in enumerate(seg.views.buffers[ticker.epoch & 1].out.score[:n])}
    finally:
        stop.set()
        seg.close()
        seg.unlink()
    out = {"nodes": n, "ours": ours, "redis": _redis_bench(snap_scores, reps),
           "manager": _manager_bench(snap_scores, reps)}
    log(f"  read n={n}: score {ours['score_ns']['median']:.0f} ns, snapshot "
        f"{ours['snapshot_us']['median']:.1f} us, top10 {ours['top10_us']['median']:.1f} us")
    return out


# ----------------------------------------------------------------- ingest --
def _sender(port: int, kind: str, count: int, n_nodes: int, ready) -> None:
    import zmq

    from shm_engine.wire.encode import encode_batch, encode_json
    rng = np.random.default_rng(3)
    recs = _records(n_nodes, rng)
    if kind == "json":
        frames = [encode_json(recs[i]) for i in range(min(n_nodes, 5000))]
    elif kind == "binary":
        frames = [encode_batch(recs[i:i + 1]) for i in range(min(n_nodes, 5000))]
    else:
        frames = [encode_batch(recs[s:s + 1000]) for s in range(0, n_nodes, 1000)]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.connect(f"tcp://127.0.0.1:{port}")
    ready.set()
    nf = len(frames)
    send = sock.send
    for i in range(count):
        send(frames[i % nf], copy=False)
    sock.close(linger=-1)
    ctx.term()


def _ingest_run(kind: str, count: int, n_nodes: int, apply: bool, drained: bool = True) -> float:
    """Frames/s received (and applied when ``apply``) from a sender process.

    ``drained``: receive as the ingest process does (`shm_engine.ingest.process.drain`:
    NOBLOCK receives in chunks, bytes or zmq.Frame by the size of the last
    frame (`next_drain`), each chunk handed to `Ingest.handle_frames`);
    otherwise one blocking ``recv(copy=False)`` per frame (the bare PULL
    loop; with ``apply``, one `handle_frame` each)."""
    import zmq

    from shm_engine.ingest.process import DRAIN_CHUNK, drain, next_drain
    from shm_engine.core.segment import Segment
    config = _config(max(n_nodes, 1000))
    port = _free_port()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.bind(f"tcp://127.0.0.1:{port}")
    seg = None
    ing = None
    if apply:
        seg = Segment.create(_unique("ing"), n_nodes)
        ing = _register_all(seg.views, config, _records(n_nodes, np.random.default_rng(3)),
                            time.monotonic())
        ing.warm_up()
    sctx = mp.get_context("spawn")
    ready = sctx.Event()
    p = sctx.Process(target=_sender, args=(port, kind, count, n_nodes, ready), daemon=True)
    p.start()
    try:
        recv = sock.recv
        monotonic = time.monotonic
        frame = recv(copy=False)
        t0 = time.perf_counter()
        if apply:
            ing.handle_frame(frame.buffer, monotonic())
        left = count - 1
        if drained:
            handle = ing.handle_frames if apply else None
            copy, chunk = True, DRAIN_CHUNK
            while left > 0:
                frames = drain(sock, min(chunk, left), copy)
                if not frames:
                    sock.poll(1000)
                    continue
                copy, chunk = next_drain(frames)
                if apply:
                    handle(frames, monotonic())
                left -= len(frames)
        elif apply:
            handle = ing.handle_frame
            for _ in range(left):
                frame = recv(copy=False)
                handle(frame.buffer, monotonic())
        else:
            for _ in range(left):
                recv(copy=False)
        dt = time.perf_counter() - t0
    finally:
        p.join(30)
        sock.close(0)
        ctx.term()
        if seg is not None:
            ing = None
            seg.close()
            seg.unlink()
    return (count - 1) / dt


def bench_ingest(quick: bool, log) -> dict:
    n_nodes = 10_000
    single = 20_000 if quick else 200_000
    batches = 300 if quick else 3_000
    reps = 2 if quick else 3
    rows = {}
    # alternate the receivers rep by rep so load changes hit both
    # The ceilings are the bare PULL loop (one blocking recv per frame);
    # "drained" is the ingest's own receive loop doing nothing with the frames.
    cases = (("ceiling_single_frames", "binary", single, False, 1, False),
             ("ceiling_single_frames_drained", "binary", single, False, 1, True),
             ("single_binary", "binary", single, True, 1, True),
             ("single_json", "json", single // 2, True, 1, True),
             ("ceiling_batched_frames", "batch", batches, False, 1000, False),
             ("batched_binary_1000", "batch", batches, True, 1000, True))
    for name, _, _, _, per, _ in cases:
        rows[name] = {"hb_per_s": [], "heartbeats_per_frame": per}
    for _ in range(reps):
        for name, kind, count, apply, per, drained in cases:
            rows[name]["hb_per_s"].append(
                _ingest_run(kind, count, n_nodes, apply, drained) * per)
    out = {}
    for name, r in rows.items():
        v = r["hb_per_s"]
        out[name] = {"hb_per_s": float(np.median(v)), "runs": [float(x) for x in v],
                     "heartbeats_per_frame": r["heartbeats_per_frame"]}
    ceil = out["ceiling_single_frames"]["hb_per_s"]
    out["single_binary"]["fraction_of_ceiling"] = out["single_binary"]["hb_per_s"] / ceil
    out["single_json"]["fraction_of_ceiling"] = out["single_json"]["hb_per_s"] / ceil
    out["ceiling_single_frames_drained"]["fraction_of_ceiling"] = (
        out["ceiling_single_frames_drained"]["hb_per_s"] / ceil)
    out["batched_binary_1000"]["fraction_of_ceiling"] = (
        out["batched_binary_1000"]["hb_per_s"] / out["ceiling_batched_frames"]["hb_per_s"])
    log(f"  ingest: single binary {out['single_binary']['hb_per_s']:.0f}/s "
        f"({out['single_binary']['fraction_of_ceiling']:.0%} of {ceil:.0f}), json "
        f"{out['single_json']['hb_per_s']:.0f}/s, batched "
        f"{out['batched_binary_1000']['hb_per_s']:.0f}/s")
    return out


# -------------------------------------------------------------- freshness --
def _fresh_sender(port: int, n: int, probes: int, duration: float, q) -> None:
    import zmq

    from shm_engine.wire.encode import encode_batch
    rng = np.random.default_rng(11)
    recs = _records(n, rng)
    recs["queue"][:probes] = 0.0
    recs["mem"][:probes] = 0.1
    recs["flags"][:probes] = 0       # probes report only the required metrics
    for f in ("throughput", "io", "p50_ms", "p95_ms", "ok", "err"):
        recs[f][:probes] = 0
    frames = [encode_batch(recs[i:i + 1]) for i in range(n)]
    lo, hi = recs[:1].copy(), recs[:1].copy()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(f"tcp://127.0.0.1:{port}")
    level = [0] * probes
    log = []
    per_ms = max(1, n // 1000)
    t0 = time.monotonic()
    i = 0
    k = 0
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        target = int((now - t0) * 1000) * per_ms
        while k < target:
            j = k % n
            if j < probes:
                level[j] ^= 1
                r = hi if level[j] else lo
                r[0] = recs[j]
                r["cpu"][0] = 0.85 if level[j] else 0.05
                fr = encode_batch(r)
                log.append((j, level[j], time.monotonic()))
                sock.send(fr)
            else:
                sock.send(frames[j], copy=False)
            k += 1
            i += 1
        time.sleep(0.0005)
    q.put((log, os.getpid(), _rss_kb(os.getpid())))
    sock.close(linger=1000)
    ctx.term()


def bench_freshness(n: int, duration: float, log) -> dict:
    from clients.reader import ScoreReader
    from shm_engine.ingest.process import ingest_main
    from shm_engine.core.segment import Segment
    from shm_engine.tick.ticker import ticker_main
    port = _free_port()
    config = _config(n, port)
    name = _unique("fresh")
    seg = Segment.create(name, n, tick_interval_ms=config.engine.tick_interval_ms,
                         endpoint=config.ingest.bind)
    ctx = mp.get_context("spawn")
    procs = []
    try:
        for target in (ingest_main, ticker_main):
            p = ctx.Process(target=target, args=(name, config, os.getpid()), daemon=True)
            p.start()
            procs.append(p)
        reader = ScoreReader.attach(name)
        deadline = time.monotonic() + 120
        while reader.epoch == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)   # ingest bound
        probes = 50
        q = ctx.Queue()
        sender = ctx.Process(target=_fresh_sender, args=(port, n, probes, duration, q),
                             daemon=True)
        sender.start()
        probe_names = [f"node-{i:07d}" for i in range(probes)]
        slot = {}
        last = {}
        detections = []     # (probe, level, t)
        poll_us = []
        end = time.monotonic() + duration + 1.0
        rss_reader = {}
        while time.monotonic() < end:
            t0 = time.perf_counter_ns()
            snap = reader.snapshot()
            poll_us.append((time.perf_counter_ns() - t0) / 1e3)
            t = time.monotonic()
            if len(slot) < probes:
                for s, nm in enumerate(snap.nodes):
                    if nm in probe_names:
                        slot[nm] = s
            for j, nm in enumerate(probe_names):
                s = slot.get(nm)
                if s is None or s >= len(snap.raw):
                    continue
                raw = float(snap.raw[s])
                prev = last.get(j)
                if prev is not None and abs(raw - prev) > 0.05:
                    detections.append((j, 1 if raw < prev else 0, t))
                last[j] = raw
            time.sleep(0.0005)
        rss_reader = _rss_kb(os.getpid())
        sent, sender_pid, rss_sender = q.get(timeout=30)
        sender.join(10)
        rss = {"ingest": _rss_kb(procs[0].pid), "ticker": _rss_kb(procs[1].pid),
               "reader_harness": rss_reader, "sender": rss_sender}
        h = seg.views.header
        tick_p50 = float(h.tick_us_p50[0])
        tick_p99 = float(h.tick_us_p99[0])
        overruns = int(h.overruns[0])
        reader.close()
    finally:
        seg.views.header.stopping[0] = 1
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
        seg.close()
        seg.unlink()
    # cpu 0.85 lowers raw: level 1 is detected as a drop.
    by = {}
    for j, lvl, t in detections:
        by.setdefault((j, lvl), []).append(t)
    lat = []
    t_first = sent[0][2] + 1.0 if sent else 0.0
    for j, lvl, ts in sent:
        if ts < t_first:
            continue   # the first second registers nodes
        cand = [t for t in by.get((j, lvl), []) if t >= ts]
        if cand:
            lat.append((min(cand) - ts) * 1e3)
    st = _stats(lat) if lat else {"median": float("nan"), "p99": float("nan"), "n": 0}
    out = {"nodes": n, "rate_hz_per_node": 1.0, "tick_interval_ms": config.engine.tick_interval_ms,
           "latency_ms": st, "probe_sends": len(sent), "matched": len(lat),
           "reader_poll_us": _stats(poll_us), "ticker_tick_us_p50": tick_p50,
           "ticker_tick_us_p99": tick_p99, "overruns": overruns, "rss_kb": rss}
    log(f"  freshness n={n}: p50 {st['median']:.1f} ms, p99 {st['p99']:.1f} ms "
        f"({len(lat)} samples)")
    return out


# ----------------------------------------------------------------- memory --
def bench_memory(fresh: dict | None) -> dict:
    from kernels.columns import make_inputs
    from shm_engine.core.layout import layout_for
    out = {}
    for n in (10_000, 1_000_000):
        size = layout_for(n).size
        private = sum(c.nbytes for c in make_inputs(n))
        out[str(n)] = {"segment_bytes": size, "segment_bytes_per_node": size / n,
                       "ticker_private_bytes": private,
                       "engine_bytes_per_node": (size + private) / n}
    if fresh is not None:
        out["rss_kb_at_10k"] = fresh["rss_kb"]
    return out


# ------------------------------------------------------------------- plot --
def plot(tick_rows: list, path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): plot skipped"
    ns = [r["nodes"] for r in tick_rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for key, label, style in (("ticker", "Ticker.tick (shipped)", "o-"),
                              ("ticker_ranked", "Ticker + tick_ranked (prototype)", "s-"),
                              ("kernels", "kernels.tick alone", "^-"),
                              ("numpy", "NumPy baseline", "v--"),
                              ("python", "Python baseline", "x:")):
        ax.plot(ns, [r[key]["median"] for r in tick_rows], style, label=label)
    ax.axhline(50, color="grey", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes")
    ax.set_ylabel("tick, median µs")
    ax.set_title("Tick time vs node count")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path.name)


# ----------------------------------------------------------------- report --
def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def tick_tables(rows: list) -> list[str]:
    """The tick tables: whole ticks side by side, then where a tick's time goes."""
    lines = ["| tick | nodes | Ticker.tick median / p99 µs | ns/node | before (full gather, "
             "introsort) µs | + tick_ranked (proto) µs | kernels only µs | NumPy µs (x) | "
             "Python µs (x) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["nodes"]):
        t = r["ticker"]["median"]
        py = r.get("python")
        py_cell = "not run" if py is None else \
            f"{py['median']:.0f} ({py['median'] / t:.0f}x){' extrap.' if py['extrapolated'] else ''}"
        lines.append(
            f"| | {r['nodes']:,} | {t:.1f} / {r['ticker']['p99']:.1f} | "
            f"{r['ticker']['ns_per_node']:.1f} | {r['ticker_before']['median']:.1f} | "
            f"{r['ticker_ranked']['median']:.1f} | {r['kernels']['median']:.1f} | "
            f"{r['numpy']['median']:.1f} ({r['numpy']['median'] / t:.1f}x) | {py_cell} |")
    lines += ["", "| tick parts (median µs) | nodes | gather: full / row cache | score passes | "
              "step 14: introsort / seeded insertion (fell back) / radix |",
              "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["nodes"]):
        c = r["components"]
        fb = c["rerank_fallbacks"]
        lines.append(
            f"| | {r['nodes']:,} | {c['gather_full']['median']:.1f} / "
            f"{c['gather_cached']['median']:.1f} | {c['passes']['median']:.1f} | "
            f"{c['sort_intro']['median']:.1f} / {c['sort_rerank']['median']:.1f} "
            f"({fb['fell_back']}/{fb['n']}) / {c['sort_radix']['median']:.1f} |")
    return lines


def summarise(res: dict) -> list[str]:
    lines = []
    tick = {r["nodes"]: r for r in res["tick"]}
    lines.extend(tick_tables(res["tick"]))
    goals = []
    if 10_000 in tick:
        t = tick[10_000]["ticker"]["median"]
        goals.append(f"tick 10K <= 50 µs: {t:.1f} µs, {_ok(t <= GOALS['tick_10k_us'])} "
                     f"(prototype {tick[10_000]['ticker_ranked']['median']:.1f} µs)")
    if 1_000_000 in tick:
        t = tick[1_000_000]["ticker"]["median"]
        goals.append(f"tick 1M <= 10 ms: {t / 1e3:.2f} ms, {_ok(t <= GOALS['tick_1m_us'])} "
                     f"(prototype {tick[1_000_000]['ticker_ranked']['median'] / 1e3:.2f} ms)")
    rd = res.get("read")
    if rd:
        o = rd["ours"]
        lines.append("")
        lines.append(f"| read ({rd['nodes']:,} nodes) | ScoreReader | Redis | Manager dict |")
        lines.append("|---|---|---|---|")
        rds = rd["redis"]
        mg = rd["manager"]
        red = (lambda k, f: f.format(rds[k]["median"])) if "skipped" not in rds else \
            (lambda k, f: "skipped")
        lines.append(f"| one score | {o['score_ns']['median']:.0f} ns | "
                     f"{red('hget_ns', '{:.0f} ns (HGET)')} | {mg['get_ns']['median']:.0f} ns |")
        lines.append(f"| snapshot | {o['snapshot_us']['median']:.1f} µs | "
                     f"{red('hgetall_us', '{:.0f} µs (HGETALL)')} | "
                     f"{mg['copy_us']['median']:.0f} µs (copy) |")
        lines.append(f"| top 10 | {o['top10_us']['median']:.1f} µs | "
                     f"{red('zrevrange10_us', '{:.0f} µs (ZREVRANGE)')} | "
                     f"{mg['top10_us']['median']:.0f} µs |")
        if "skipped" in rds:
            lines.append(f"\nRedis: {rds['skipped']}")
        goals.append(f"score() <= 1 µs: {o['score_ns']['median']:.0f} ns, "
                     f"{_ok(o['score_ns']['median'] <= GOALS['score_ns'])}")
        goals.append(f"snapshot() <= 20 µs at 10K: {o['snapshot_us']['median']:.1f} µs, "
                     f"{_ok(o['snapshot_us']['median'] <= GOALS['snapshot_10k_us'])} "
                     f"(array copies alone {o['snapshot_copy_only_us']['median']:.1f} µs)")
        goals.append(f"top(10) <= 5 µs: {o['top10_us']['median']:.1f} µs, "
                     f"{_ok(o['top10_us']['median'] <= GOALS['top10_us'])}")
    ig = res.get("ingest")
    if ig:
        lines.append("")
        lines.append("| ingest | heartbeats/s | of ceiling |")
        lines.append("|---|---|---|")
        for k in ("ceiling_single_frames", "ceiling_single_frames_drained", "single_binary",
                  "single_json", "ceiling_batched_frames", "batched_binary_1000"):
            if k not in ig:
                continue
            f = ig[k].get("fraction_of_ceiling")
            lines.append(f"| {k} | {ig[k]['hb_per_s']:,.0f} | {'' if f is None else f'{f:.0%}'} |")
        fr = ig["single_binary"]["fraction_of_ceiling"]
        note = ""
        if "ceiling_single_frames_drained" in ig:
            # The goal is judged against the lower of the two: a drained
            # ceiling above our rate must not make the goal look met.
            dr = ig["single_binary"]["hb_per_s"] / ig["ceiling_single_frames_drained"]["hb_per_s"]
            note = f" ({dr:.0%} of the drained-loop ceiling)"
            fr = min(fr, dr)
        if fr > 1.0:
            note += ("; above 100% means the ingest keeps up with the one sending process, "
                     "which bounds the ceilings too on this machine: a ratio of about 1")
        goals.append(f"single binary >= 60% of ceiling: "
                     f"{ig['single_binary']['fraction_of_ceiling']:.0%}{note}, "
                     f"{_ok(fr >= GOALS['single_binary_of_ceiling'])}")
        b = ig["batched_binary_1000"]["hb_per_s"]
        goals.append(f"batched >= 5M/s: {b / 1e6:.2f}M/s, {_ok(b >= GOALS['batched_hb_s'])}")
    fr = res.get("freshness")
    if fr:
        lat = fr["latency_ms"]
        lim = fr["tick_interval_ms"] + GOALS["freshness_extra_ms"]
        lines.append("")
        lines.append(f"freshness ({fr['nodes']:,} nodes at 1 Hz, tick {fr['tick_interval_ms']} ms): "
                     f"p50 {lat['median']:.1f} ms, p99 {lat['p99']:.1f} ms over "
                     f"{lat['n']} probe heartbeats; ticker p50 {fr['ticker_tick_us_p50']:.0f} µs, "
                     f"overruns {fr['overruns']}")
        goals.append(f"freshness p99 <= {lim:.0f} ms: {lat['p99']:.1f} ms, "
                     f"{_ok(lat['p99'] <= lim)}")
    mem = res.get("memory")
    if mem:
        m10 = mem["10000"]
        m1m = mem["1000000"]
        lines.append("")
        lines.append(f"memory: segment {m10['segment_bytes_per_node']:.0f} B/node at 10K "
                     f"({m10['segment_bytes'] / 2**20:.2f} MiB), "
                     f"{m1m['segment_bytes_per_node']:.0f} B/node at 1M "
                     f"({m1m['segment_bytes'] / 2**20:.0f} MiB); ticker private inputs "
                     f"{m10['ticker_private_bytes'] / 2**20:.2f} MiB at 10K")
        if "rss_kb_at_10k" in mem:
            lines.append("RSS at 10K (kB): " + ", ".join(
                f"{k} {v.get('VmRSS', 0):,} (anon {v.get('RssAnon', 0):,}, shm "
                f"{v.get('RssShmem', 0):,})" for k, v in mem["rss_kb_at_10k"].items()))
        tot = m10["segment_bytes"] + m10["ticker_private_bytes"]
        goals.append(f"memory <= 8 MB at 10K (segment + per-node private arrays): "
                     f"{tot / 2**20:.2f} MiB, {_ok(tot <= GOALS['memory_10k_bytes'])} "
                     "(process RSS is dominated by the interpreter and numba, see above)")
    if res.get("scaling"):
        lines.append("")
        lines.append(res["scaling"]["sentence"])
    lines.append("")
    lines.append("Goals:")
    lines.extend(f"- {g}" for g in goals)
    return lines


def _scaling(tick_rows: list) -> dict:
    if len(tick_rows) < 2:
        return {"sentence": "scaling: one node count only"}
    ns = np.log([r["nodes"] for r in tick_rows])
    out = {}
    for key in ("ticker", "ticker_ranked", "kernels", "numpy", "python"):
        ts = np.log([r[key]["median"] for r in tick_rows])
        out[key] = float(np.polyfit(ns, ts, 1)[0])
    out["sentence"] = (
        "scaling (log-log slope of median tick time vs nodes; 1 = linear): " +
        ", ".join(f"{k} {v:.2f}" for k, v in out.items()) +
        ". Per-node passes are linear; the fixed cost of a call (~10 µs of dispatch) "
        "flattens the small end, and the ranking sort (n log n, or seeded) and "
        "cache misses steepen the large end.")
    return out


def write_results_md(res: dict, lines: list[str], command: str) -> None:
    m = res["machine"]
    body = [BEGIN, "## Performance harness (latest full run)", "",
            f"Command: `{command}`", "",
            f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy "
            f"{m['numpy']}, numba {m['numba']}; load average at start "
            f"{m['load_avg_1m_at_start']:.1f}.  Date: {res['date']}.", "",
            "All comparisons in a table were measured in the same run; medians of "
            "many repetitions.", ""] + lines + ["", "![tick scaling](results/tick_scaling.png)",
                                                END]
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n\n"
    if BEGIN in text and END in text:
        a = text.index(BEGIN)
        b = text.index(END) + len(END)
        text = text[:a] + "\n".join(body) + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(body) + "\n"
    RESULTS_MD.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks run")
    ap.add_argument("--quick", action="store_true", help="small sizes, few reps (< 2 min)")
    ap.add_argument("--nodes", default=None, help="comma-separated node counts for the tick")
    ap.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip "
                                                "(read,ingest,freshness)")
    ap.add_argument("--only", choices=("tick", "ingest"), default=None,
                    help="run only this section (tick: no Python baseline); prints the "
                         "tables and writes <out>/<section>_only.json, never latest.json "
                         "or RESULTS.md")
    args = ap.parse_args(argv)
    quick = args.quick
    nodes = [int(x) for x in args.nodes.split(",")] if args.nodes else \
        ([1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000])
    skip = set(filter(None, args.skip.split(",")))
    out_dir = Path(args.out) if args.out else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    from shm_engine.tick.ticker import warm_up
    warm_up()
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "quick": quick,
           "command": "python -m benchmarks run " + " ".join(argv if argv is not None
                                                             else sys.argv[2:])}
    log(f"machine: {res['machine']['cpu']}, {res['machine']['cores']} cores")
    if args.only == "ingest":
        res["ingest"] = ig = bench_ingest(quick, log)
        for k, row in ig.items():
            f = row.get("fraction_of_ceiling")
            print(f"{k:32s} {row['hb_per_s']:>14,.0f}/s" + ("" if f is None else f"  {f:.0%}"))
        (out_dir / "ingest_only.json").write_text(json.dumps(res, indent=1, default=float))
        log(f"wrote {out_dir / 'ingest_only.json'}")
        return 0
    rows = []
    for n in nodes:
        reps = (60 if n <= 10_000 else 12) if quick else \
            (400 if n <= 10_000 else 60 if n <= 100_000 else 16)
        rows.append(bench_tick(n, reps, python_max=10_000 if quick else 100_000, log=log,
                               only_tick=args.only == "tick"))
    res["tick"] = rows
    if args.only == "tick":
        print("\n".join(tick_tables(rows)))
        (out_dir / "tick_only.json").write_text(json.dumps(res, indent=1, default=float))
        log(f"wrote {out_dir / 'tick_only.json'}")
        return 0
    res["read"] = None if "read" in skip else bench_read(10_000, 30 if quick else 300, log)
    res["ingest"] = None if "ingest" in skip else bench_ingest(quick, log)
    res["freshness"] = None if "freshness" in skip else \
        bench_freshness(10_000, 4.0 if quick else 30.0, log)
    res["memory"] = bench_memory(res["freshness"])
    res["scaling"] = _scaling(rows)
    res["plot"] = plot(rows, out_dir / "tick_scaling.png")
    lines = summarise(res)
    print("\n".join(lines))
    (out_dir / "latest.json").write_text(json.dumps(res, indent=1, default=float))
    log(f"wrote {out_dir / 'latest.json'}; plot: {res['plot']}")
    if not quick and args.out is None:
        write_results_md(res, lines, res["command"])
        log(f"wrote {RESULTS_MD}")
    return 0
