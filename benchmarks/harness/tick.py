"""Section ``tick``: a tick as the tick worker runs it, its parts, and the baselines.

At each node count, steady state: every node heartbeats once a second and a
tick runs every 50 ms, so 5% of the rows are new at each tick (written by
the ingest's apply path).  Measured in the same loop, tick by tick:

- ``ticker``: `Ticker.tick` on the segment (gather, kernels, publish through
  the latch), exactly as the tick worker calls it;
- ``kernels``: `Ticker.score` alone (SCORING.md steps 1-14), on private
  buffers of the same layout, over a copy of the inputs the ticker gathered;
- the parts of a tick on private copies: the gather with the row cache and
  without it (every row copied), the score passes, and step 14 (the radix
  ranking the tick uses);
- ``numpy``: the vectorised NumPy baseline (`benchmarks.baselines`), every
  tick up to 100K nodes, every third tick above;
- ``python``: the per-node Python baseline, sampled on at most
  ``python_max`` nodes and extrapolated linearly (marked ``extrapolated``).

``--only tick`` runs this section alone, without the Python baseline.
"""

from __future__ import annotations

import mmap
import time

import numpy as np

from benchmarks.harness.common import (
    HB_FRACTION,
    TICK_S,
    bench_config,
    drift,
    records,
    send_records,
    stats,
    unique_name,
    verdict,
)

__all__ = ["run", "line", "tables", "summary", "GOALS"]

GOALS = {"tick_10k_us": 50.0, "tick_1m_us": 10_000.0}
WARM = 3  # ticks before the first one measured
PART_KEYS = ("gather_full", "gather_cached", "passes", "step14_radix")


class _Alone:
    """A `Ticker` over a private mapping of the segment's layout: `Ticker.score`
    there is the kernels alone, on the same array kinds as the live ticker."""

    def __init__(self, capacity: int, config):
        from shm_engine.core.layout import SegmentViews, layout_for
        from shm_engine.core.states import UNREGISTERED
        from shm_engine.tick.ticker import Ticker

        layout = layout_for(capacity)
        self._mm = mmap.mmap(-1, layout.size)
        views = SegmentViews(self._mm, layout)
        for b in views.buffers:
            b.state.state[:] = UNREGISTERED  # no node yet, as in a new segment
        self.buffers = views.buffers
        self.ticker = Ticker(views, config)
        self.k = 0

    def time_score(self, inputs) -> float:
        """Copy ``inputs`` in, run the kernels once; µs."""
        for dst, src in zip(self.ticker.inputs, inputs, strict=True):
            dst[:] = src
        prev, nxt = self.buffers[self.k & 1], self.buffers[(self.k + 1) & 1]
        self.k += 1
        t0 = time.perf_counter_ns()
        self.ticker.score(prev, nxt)
        return (time.perf_counter_ns() - t0) / 1e3

    @property
    def score_out(self):
        return self.buffers[self.k & 1].out.score


class _Parts:
    """Times the parts of a tick on private copies of what the ticker just
    read and published, in shuffled order, and checks the ranking against
    the published one."""

    def __init__(self, n: int):
        import kernels
        from shm_engine.core.rows import make_gather_cache

        self.inp = kernels.make_inputs(n)
        self.inp_full = kernels.make_inputs(n)
        self.cache = make_gather_cache(n)
        self.cache_full = make_gather_cache(n)
        self.nxt_cached = _GatherTarget(n)
        self.nxt_full = _GatherTarget(n)
        self.state = kernels.make_state(n)
        self.out = kernels.make_outputs(n)
        self.scratch = kernels.make_scratch(n)
        self.rng = np.random.default_rng(7)

    def time(self, views, params, hwm: int, now: float) -> dict:
        from kernels.pipeline import _score
        from kernels.ranking import radix_ranked
        from shm_engine.core.rows import gather

        epoch = int(views.header.latch_seq[0]) >> 1
        prev = views.buffers[(epoch - 1) & 1]
        nxt = views.buffers[epoch & 1]
        self.cache_full.version[:] = 1  # nothing held: every row copied
        gathers = {
            "gather_full": lambda: gather(
                views, prev, self.nxt_full, self.inp_full, now, hwm=hwm, cache=self.cache_full
            ),
            "gather_cached": lambda: gather(
                views, prev, self.nxt_cached, self.inp, now, hwm=hwm, cache=self.cache
            ),
        }
        out = {}
        for name in sorted(gathers, key=lambda _: self.rng.random()):
            t0 = time.perf_counter_ns()
            gathers[name]()
            out[name] = (time.perf_counter_ns() - t0) / 1e3
        t0 = time.perf_counter_ns()
        m, _p, _live = _score(params, self.inp, prev.state, self.state, self.out, self.scratch)
        out["passes"] = (time.perf_counter_ns() - t0) / 1e3
        t0 = time.perf_counter_ns()
        radix_ranked(self.out.score, self.out.ranked, m, self.scratch.rank)
        out["step14_radix"] = (time.perf_counter_ns() - t0) / 1e3
        if not np.array_equal(self.out.ranked[:m], nxt.out.ranked[:m]):
            raise AssertionError(f"epoch {epoch}: the parts rank otherwise than the tick")
        return out


class _GatherTarget:
    """The gen/hb_seen columns a gather writes, outside the segment."""

    def __init__(self, n: int):
        self.gen = np.zeros(n, np.uint64)
        self.hb_seen = np.zeros(n, np.uint64)


def run(n: int, reps: int, python_max: int, log, only_tick: bool = False) -> dict:
    """The tick section at ``n`` nodes, ``reps`` measured ticks."""
    import kernels
    from benchmarks.baselines.numpy_tick import numpy_tick
    from shm_engine.core.segment import Segment
    from shm_engine.ingest.process import Ingest
    from shm_engine.tick.ticker import Ticker

    rng = np.random.default_rng(n)
    config = bench_config(n)
    seg = Segment.create(unique_name("tick"), n)
    try:
        recs = records(n, rng)
        now = 1000.0
        ingest = Ingest(seg.views, config)
        t_reg = time.perf_counter()
        send_records(ingest, recs, now)
        t_reg = time.perf_counter() - t_reg
        ticker = Ticker(seg.views, config)
        params = ticker.params
        alone = _Alone(n, config)
        parts = _Parts(n)
        np_prev, np_nxt = kernels.make_state(n), kernels.make_state(n)
        np_out = kernels.make_outputs(n)
        res: dict[str, list] = {"ticker": [], "kernels": [], "numpy": []}
        part_times: dict[str, list] = {k: [] for k in PART_KEYS}
        hb = max(1, int(n * HB_FRACTION))
        numpy_every = 1 if n <= 100_000 else 3
        for k in range(WARM + reps):
            keep = k >= WARM
            now += TICK_S
            sel = rng.choice(n, hb, replace=False)
            drift(recs, sel, rng)
            send_records(ingest, recs[sel], now)
            us = ticker.tick(now).duration_us
            hwm = int(seg.views.header.slot_hwm[0])
            for key, v in parts.time(seg.views, params, hwm, now).items():
                if keep:
                    part_times[key].append(v)
            us_alone = alone.time_score(ticker.inputs)
            if keep:
                res["ticker"].append(us)
                res["kernels"].append(us_alone)
            if k % numpy_every == 0:
                t0 = time.perf_counter_ns()
                numpy_tick(params, alone.ticker.inputs, np_prev, np_nxt, np_out)
                t1 = time.perf_counter_ns()
                np_prev, np_nxt = np_nxt, np_prev
                if keep:
                    res["numpy"].append((t1 - t0) / 1e3)
        out = {"nodes": n, "registration_s": t_reg}
        for key, v in res.items():
            st = stats(v)
            st["ns_per_node"] = st["median"] * 1e3 / n
            out[key] = st
        out["parts"] = {key: stats(v) for key, v in part_times.items()}
        out["equal_results"] = bool(np.allclose(np_out.score, alone.score_out, atol=1e-9))
    finally:
        ticker = ingest = None
        seg.close()
        seg.unlink()
    if not only_tick:
        out["python"] = _python_baseline(n, recs, params, reps, python_max)
    log(line(out))
    return out


def _python_baseline(n: int, recs, params, reps: int, python_max: int) -> dict:
    """The per-node Python tick on a dict of nodes, sampled on <= ``python_max``."""
    from benchmarks.baselines.python_tick import Node, python_tick

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
    st = stats(times)
    st["ns_per_node"] = st["median"] * 1e3 / n
    st["measured_nodes"] = pn
    st["extrapolated"] = pn < n
    return st


def line(out: dict) -> str:
    """One progress line of a node count."""
    p = out["parts"]
    text = (
        f"  tick n={out['nodes']}: ticker {out['ticker']['median']:.1f} us, kernels "
        f"{out['kernels']['median']:.1f} us; gather full/cached "
        f"{p['gather_full']['median']:.1f}/{p['gather_cached']['median']:.1f}, passes "
        f"{p['passes']['median']:.1f}, step 14 {p['step14_radix']['median']:.1f} us; numpy "
        f"{out['numpy']['median']:.1f} us"
    )
    py = out.get("python")
    if py is not None:
        text += f", python {py['median']:.0f} us" + (
            " (extrapolated)" if py["extrapolated"] else ""
        )
    return text


def tables(rows: list) -> list[str]:
    """Whole ticks side by side, then where a tick's time goes."""
    lines = [
        "| tick | nodes | Ticker.tick median / p99 µs | ns/node | kernels only µs | "
        "NumPy µs (x) | Python µs (x) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["nodes"]):
        t = r["ticker"]["median"]
        py = r.get("python")
        py_cell = (
            "not run"
            if py is None
            else f"{py['median']:.0f} ({py['median'] / t:.0f}x)"
            + (" extrap." if py["extrapolated"] else "")
        )
        lines.append(
            f"| | {r['nodes']:,} | {t:.1f} / {r['ticker']['p99']:.1f} | "
            f"{r['ticker']['ns_per_node']:.1f} | {r['kernels']['median']:.1f} | "
            f"{r['numpy']['median']:.1f} ({r['numpy']['median'] / t:.1f}x) | {py_cell} |"
        )
    lines += [
        "",
        "| tick parts (median µs) | nodes | gather: full / row cache | score passes | "
        "step 14 (radix) |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["nodes"]):
        p = r["parts"]
        lines.append(
            f"| | {r['nodes']:,} | {p['gather_full']['median']:.1f} / "
            f"{p['gather_cached']['median']:.1f} | {p['passes']['median']:.1f} | "
            f"{p['step14_radix']['median']:.1f} |"
        )
    return lines


def summary(rows: list) -> tuple[list[str], list[str]]:
    """(table lines, goal lines) of the tick section."""
    tick = {r["nodes"]: r for r in rows}
    goals = []
    if 10_000 in tick:
        t = tick[10_000]["ticker"]["median"]
        goals.append(f"tick 10K <= 50 µs: {t:.1f} µs, {verdict(t <= GOALS['tick_10k_us'])}")
    if 1_000_000 in tick:
        t = tick[1_000_000]["ticker"]["median"]
        goals.append(f"tick 1M <= 10 ms: {t / 1e3:.2f} ms, {verdict(t <= GOALS['tick_1m_us'])}")
    return tables(rows), goals
