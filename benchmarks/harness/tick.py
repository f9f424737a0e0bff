"""Section ``tick``: a tick as the tick worker runs it, its parts, and the baselines.

At each node count, steady state: every node heartbeats once a second and a
tick runs every 50 ms, so 5% of the rows are new at each tick (written by
the ingest's apply path).  Measured in the same loop, tick by tick:

- ``ticker``: `Ticker.tick` on the segment (gather, kernels, publish through
  the latch), exactly as the tick worker calls it; ``ticker_threads``: the
  same with ``[engine] tick_threads`` = `THREADS` (the per-node work on
  that many threads).  The two tickers take turns on the same segment, one
  tick each, so both see the same heartbeats and the same work between
  ticks (each gets half the ticks);
- ``kernels``: `Ticker.score` alone (SCORING.md steps 1-14), on private
  buffers of the same layout, over a copy of the inputs the ticker gathered;
- the parts of a tick on private copies: the gather with the row cache and
  without it (every row copied), the score passes, and step 14 (the radix
  ranking the tick uses);
- ``floor``: a copy of the bytes one tick must read and write per node
  (`benchmarks.harness.floor`, derived from the layouts), timed in the same
  loop; every tick size is also reported as a ratio to it;
- ``numpy``: the vectorised NumPy baseline (`benchmarks.baselines`), every
  tick up to 100K nodes, every third tick above;
- ``python``: the per-node Python baseline, sampled on at most
  ``python_max`` nodes and extrapolated linearly (marked ``extrapolated``).

``--only tick`` runs this section alone, without the Python baseline.
"""

from __future__ import annotations

import mmap
import os
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

__all__ = ["run", "sparse", "sparse_line", "line", "tables", "summary", "GOALS"]

GOALS = {
    "tick_10k_us": 150.0,
    "tick_10k_floor": 3.0,
    "tick_1m_us": 30_000.0,
    "tick_1m_floor": 1.5,
    "vs_numpy": 20.0,
}
WARM = 4  # ticks before the first one measured
#: Threads of the threaded ticker (at most the machine's cores).
THREADS = 2
PART_KEYS = ("gather_full", "gather_cached", "feedback", "passes", "step14_radix")


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
        self.fb = [np.zeros(n) for _ in range(10)]
        self.seen = [np.zeros(n, np.uint64) for _ in range(2)]
        self.rng = np.random.default_rng(7)

    def time(self, views, claims, params, hwm: int, now: float) -> dict:
        from kernels.params import EJECTION_S, MAX_CONSECUTIVE_ERRORS
        from kernels.pipeline import _score
        from kernels.ranking import radix_ranked
        from shm_engine.core.claims import gather_feedback
        from shm_engine.core.layout import FEEDBACK_COLUMNS
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
        gather_feedback(
            self.nxt_cached.gen,
            self.inp.active,
            self.inp.fresh,
            claims.lease_ident,
            claims.in_flight_flat,
            claims.row_words,
            claims.outcomes,
            prev.ok_seen,
            prev.err_seen,
            hwm,
            now,
            params[MAX_CONSECUTIVE_ERRORS],
            params[EJECTION_S],
            *self.fb,
            *self.seen,
        )
        out["feedback"] = (time.perf_counter_ns() - t0) / 1e3
        for name, theirs in zip(FEEDBACK_COLUMNS, nxt.feedback, strict=True):
            getattr(self.inp, name)[:] = theirs  # score what the tick scored
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
    from benchmarks.harness.floor import Floor, bytes_per_node
    from shm_engine.core.config import with_overrides
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
        threads = max(1, min(THREADS, os.cpu_count() or 1))
        tickers = (
            Ticker(seg.views, config),
            Ticker(seg.views, with_overrides(config, {"engine.tick_threads": threads})),
        )
        ticker = tickers[0]
        params = ticker.params
        alone = _Alone(n, config)
        parts = _Parts(n)
        np_prev, np_nxt = kernels.make_state(n), kernels.make_state(n)
        np_out = kernels.make_outputs(n)
        moved = bytes_per_node()
        floor = Floor(n, moved["total"])
        res: dict[str, list] = {
            "ticker": [],
            "ticker_threads": [],
            "kernels": [],
            "floor": [],
            "numpy": [],
        }
        part_times: dict[str, list] = {k: [] for k in PART_KEYS}
        hb = max(1, int(n * HB_FRACTION))
        numpy_every = 1 if n <= 100_000 else 3
        for k in range(WARM + 2 * reps):
            keep = k >= WARM
            now += TICK_S
            sel = rng.choice(n, hb, replace=False)
            drift(recs, sel, rng)
            send_records(ingest, recs[sel], now)
            ticker = tickers[k & 1]
            us = ticker.tick(now).duration_us
            hwm = int(seg.views.header.slot_hwm[0])
            for key, v in parts.time(seg.views, ticker.claims, params, hwm, now).items():
                if keep:
                    part_times[key].append(v)
            us_alone = alone.time_score(ticker.inputs)
            us_floor = floor.time()
            if keep:
                res["ticker_threads" if k & 1 else "ticker"].append(us)
                res["kernels"].append(us_alone)
                res["floor"].append(us_floor)
            if k % numpy_every == 0:
                t0 = time.perf_counter_ns()
                numpy_tick(params, alone.ticker.inputs, np_prev, np_nxt, np_out)
                t1 = time.perf_counter_ns()
                np_prev, np_nxt = np_nxt, np_prev
                if keep:
                    res["numpy"].append((t1 - t0) / 1e3)
        del floor  # its buffers: not needed by the Python baseline
        out = {
            "nodes": n,
            "threads": threads,
            "registration_s": t_reg,
            "floor_bytes_per_node": {k: moved[k] for k in ("read", "write", "total")},
        }
        for key, v in res.items():
            st = stats(v)
            st["ns_per_node"] = st["median"] * 1e3 / n
            out[key] = st
        out["parts"] = {key: stats(v) for key, v in part_times.items()}
        out["x_floor"] = {
            k: out[k]["median"] / out["floor"]["median"]
            for k in ("ticker", "ticker_threads", "kernels", "numpy")
        }
        out["equal_results"] = bool(np.allclose(np_out.score, alone.score_out, atol=1e-9))
    finally:
        ticker = tickers = ingest = None
        seg.close()
        seg.unlink()
    if not only_tick:
        out["python"] = _python_baseline(n, recs, params, reps, python_max)
    log(line(out))
    return out


def sparse(n: int, capacity: int, reps: int, log) -> dict:
    """``Ticker.tick`` for ``n`` nodes in a segment of ``capacity`` slots
    (a segment sized for more nodes than it holds, as the default capacity
    16384 is for most fleets), steady state as in `run`; also the same
    ticker made to write every slot each tick, as it did before it skipped
    the slots above the high-water mark.  The two take turns."""
    from shm_engine.core.config import with_overrides
    from shm_engine.core.segment import Segment
    from shm_engine.ingest.process import Ingest
    from shm_engine.tick.ticker import Ticker

    rng = np.random.default_rng(capacity + n)
    config = with_overrides(bench_config(n), {"engine.capacity": capacity})
    seg = Segment.create(unique_name("sparse"), capacity)
    try:
        recs = records(n, rng)
        now = 1000.0
        ingest = Ingest(seg.views, config)
        send_records(ingest, recs, now)
        skipping, whole = Ticker(seg.views, config), Ticker(seg.views, config)
        times: dict[str, list] = {"skipping": [], "whole": []}
        hb = max(1, int(n * HB_FRACTION))
        for k in range(WARM + 2 * reps):
            now += TICK_S
            sel = rng.choice(n, hb, replace=False)
            drift(recs, sel, rng)
            send_records(ingest, recs[sel], now)
            whole._whole_ticks = 0  # never past its first ticks: every slot, every tick
            key = "whole" if k & 1 else "skipping"
            us = (whole if k & 1 else skipping).tick(now).duration_us
            if k >= WARM:
                times[key].append(us)
        out = {"nodes": n, "capacity": capacity, **{k: stats(v) for k, v in times.items()}}
    finally:
        skipping = whole = ingest = None
        seg.close()
        seg.unlink()
    log(sparse_line(out))
    return out


def sparse_line(out: dict) -> str:
    return (
        f"  tick n={out['nodes']} in {out['capacity']} slots: "
        f"{out['skipping']['median']:.1f} us median (p99 {out['skipping']['p99']:.1f}); "
        f"writing every slot each tick {out['whole']['median']:.1f} us"
    )


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
        f"  tick n={out['nodes']}: ticker {out['ticker']['median']:.1f} us "
        f"({out['x_floor']['ticker']:.1f}x floor {out['floor']['median']:.1f} us for "
        f"{out['floor_bytes_per_node']['total']} B/node), {out['threads']} threads "
        f"{out['ticker_threads']['median']:.1f} us ({out['x_floor']['ticker_threads']:.1f}x), "
        "kernels "
        f"{out['kernels']['median']:.1f} us; gather full/cached "
        f"{p['gather_full']['median']:.1f}/{p['gather_cached']['median']:.1f}, feedback "
        f"{p['feedback']['median']:.1f}, passes {p['passes']['median']:.1f}, step 14 "
        f"{p['step14_radix']['median']:.1f} us; numpy {out['numpy']['median']:.1f} us"
    )
    py = out.get("python")
    if py is not None:
        text += f", python {py['median']:.0f} us" + (
            " (extrapolated)" if py["extrapolated"] else ""
        )
    return text


def tables(rows: list) -> list[str]:
    """Whole ticks side by side (each also as a ratio to the floor), then
    where a tick's time goes."""
    rows = sorted(rows, key=lambda r: r["nodes"])
    lines = [
        "| tick | nodes | Ticker.tick median / p99 µs (x floor) | ns/node | "
        "threaded Ticker.tick median / p99 µs (x floor) | "
        "floor µs (B/node) | kernels only µs (x floor) | NumPy µs (x slower; x floor) | "
        "Python µs (x) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["ticker"]["median"]
        xf = r["x_floor"]
        py = r.get("python")
        py_cell = (
            "not run"
            if py is None
            else f"{py['median']:.0f} ({py['median'] / t:.0f}x)"
            + (" extrap." if py["extrapolated"] else "")
        )
        lines.append(
            f"| | {r['nodes']:,} | {t:.1f} / {r['ticker']['p99']:.1f} ({xf['ticker']:.1f}x) | "
            f"{r['ticker']['ns_per_node']:.1f} | {r['threads']} threads: "
            f"{r['ticker_threads']['median']:.1f} / {r['ticker_threads']['p99']:.1f} "
            f"({xf['ticker_threads']:.1f}x) | {r['floor']['median']:.1f} "
            f"({r['floor_bytes_per_node']['total']}) | {r['kernels']['median']:.1f} "
            f"({xf['kernels']:.1f}x) | {r['numpy']['median']:.1f} "
            f"({r['numpy']['median'] / t:.1f}x; {xf['numpy']:.1f}x) | {py_cell} |"
        )
    if rows:
        b = rows[0]["floor_bytes_per_node"]
        lines += [
            "",
            f"Floor: one copy of the {b['total']} bytes per node a tick must move "
            f"({b['read']} read, {b['write']} written; each column once, "
            "`benchmarks/harness/floor.py`), timed in the same loop.",
        ]
    lines += [
        "",
        "| tick parts (median µs) | nodes | gather: full / row cache | feedback | "
        "score passes | step 14 (radix) | Ticker.tick minus these parts |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["parts"]
        rest = r["ticker"]["median"] - sum(
            p[k]["median"] for k in ("gather_cached", "feedback", "passes", "step14_radix")
        )
        lines.append(
            f"| | {r['nodes']:,} | {p['gather_full']['median']:.1f} / "
            f"{p['gather_cached']['median']:.1f} | {p['feedback']['median']:.1f} | "
            f"{p['passes']['median']:.1f} | {p['step14_radix']['median']:.1f} | {rest:.1f} |"
        )
    lines += [
        "",
        "The parts are timed one call each on private copies; the tick worker runs "
        "them as one compiled call, so its time can be below their sum (a negative "
        "last column): what it saves is their separate dispatch and cache refills.",
    ]
    return lines


def summary(rows: list) -> tuple[list[str], list[str]]:
    """(table lines, goal lines) of the tick section."""
    tick = {r["nodes"]: r for r in rows}
    goals = []
    for n, label, us_key, x_key, unit in (
        (10_000, "10K", "tick_10k_us", "tick_10k_floor", 1.0),
        (1_000_000, "1M", "tick_1m_us", "tick_1m_floor", 1e3),
    ):
        if n not in tick:
            continue
        name = "µs" if unit == 1.0 else "ms"
        for key, how in (("ticker", "1 thread"), ("ticker_threads", "threads")):
            t = tick[n][key]["median"]
            x = tick[n]["x_floor"][key]
            if key == "ticker_threads":
                how = f"{tick[n]['threads']} threads"
            goals.append(
                f"tick {label} ({how}) <= {GOALS[us_key] / unit:g} {name} and <= "
                f"{GOALS[x_key]:g}x floor: {t / unit:.{1 if unit == 1.0 else 2}f} {name}, "
                f"{x:.2f}x, {verdict(t <= GOALS[us_key] and x <= GOALS[x_key])}"
            )
    for n in sorted(tick):
        r = tick[n]
        x = r["numpy"]["median"] / r["ticker"]["median"]
        xt = r["numpy"]["median"] / r["ticker_threads"]["median"]
        goals.append(
            f"tick >= {GOALS['vs_numpy']:g}x faster than NumPy at {n:,}: {x:.1f}x "
            f"({xt:.1f}x with {r['threads']} threads), {verdict(max(x, xt) >= GOALS['vs_numpy'])}"
        )
    return tables(rows), goals
