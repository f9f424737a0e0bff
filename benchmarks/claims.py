"""Claims benchmark: what a claim costs a scheduler, and what the feedback costs the tick.

    python -m benchmarks.claims [--nodes N] [--samples S] [--batch K] [--out DIR]

Sections (each on an engine driven in this process: both segments, the real
registry and row writer, no sockets):

- ``pair``: ``reader.claim(node).release(ok=True)`` from Python, timed in
  batches of K pairs on a random node each; the figure is the median over S
  batches of the mean time per pair (the goal: <= 1 us), with p10/p90 of the
  batch means.  Also the error release, the ``with`` form,
  ``reader.in_flight``, and an empty Python call in the same loop, which
  says how fast the machine was running.
- ``gather``: `shm_engine.core.claims.gather_feedback` over N registered
  nodes with 4 leases in use and claims open on every node (what each tick
  adds), and one `reap_dead_leases` check of 4 live leases.

A batch mean hides no outlier that matters here: a scheduler pays the mean.
Batches absorb the timer's own cost (~50 ns a read) and preemption shows up
as a slow batch, which the median ignores and p90 reports.  Nothing is
written unless ``--out`` is given (``DIR/claims.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from clients.reader import ScoreReader
from shm_engine.core import claims as C
from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.core.segment import Segment
from shm_engine.wire import check_heartbeat

GOAL_PAIR_NS = 1000.0


class _Engine:
    """Scores and claims segments of a throwaway engine with ``n`` nodes."""

    def __init__(self, n: int, leases: int = 8):
        self.name = f"bench-claims-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.seg = Segment.create(self.name, n)
        self.claims = ClaimsSegment.create(self.name, n, leases)
        reg = NodeRegistry(self.seg.views)
        self.nodes = [f"node-{i:05d}" for i in range(n)]
        recs = []
        for node in self.nodes:
            rec, labels, _r, _d = check_heartbeat(
                dict(node=node, cpu=0.2, mem=0.3, queue=1.0, avg_job_s=1.0)
            )
            reg.register(node.encode(), b"", labels)
            recs.append(rec)
        table = self.seg.views.table
        write_rows(
            column_addresses(table),
            table.row_version.shape[0],
            np.arange(n, dtype=np.int64),
            np.array(recs),
            time.monotonic(),
        )

    def close(self) -> None:
        for s in (self.claims, self.seg):
            s.close()
            s.unlink()


def _batches(fn, samples: int, batch: int) -> np.ndarray:
    """Mean ns per call of ``fn(i)`` over ``samples`` batches of ``batch`` calls."""
    out = np.empty(samples)
    clock = time.perf_counter_ns
    for s in range(samples):
        t0 = clock()
        for i in range(batch):
            fn(i)
        out[s] = (clock() - t0) / batch
    return out


def _stats(ns: np.ndarray) -> dict:
    p10, p50, p90 = np.percentile(ns, (10, 50, 90))
    return {
        "median_ns": float(p50),
        "p10_ns": float(p10),
        "p90_ns": float(p90),
        "samples": int(ns.size),
    }


def bench_pairs(nodes: int, samples: int, batch: int, seed: int = 1) -> dict:
    eng = _Engine(nodes)
    try:
        with ScoreReader.attach(eng.name) as reader:
            rng = np.random.default_rng(seed)
            order = [eng.nodes[i] for i in rng.integers(0, nodes, batch)]
            claim = reader.claim
            for node in order:  # take the lease, load the compiled code
                claim(node).release()
                claim(node).release(ok=False)
                reader.in_flight(node)

            def pair(i):
                claim(order[i]).release(ok=True)

            def pair_err(i):
                claim(order[i]).release(ok=False)

            def pair_with(i):
                with claim(order[i]):
                    pass

            def in_flight(i):
                reader.in_flight(order[i])

            def noop(a, b, c):
                return a

            def reference(i):  # the machine's speed: one empty Python call
                noop(order[i], i, i)

            res = {
                "ok": _stats(_batches(pair, samples, batch)),
                "error": _stats(_batches(pair_err, samples, batch)),
                "with": _stats(_batches(pair_with, samples, batch)),
                "in_flight": _stats(_batches(in_flight, samples, batch)),
                "python_call": _stats(_batches(reference, samples, batch)),
            }
            assert all(reader.in_flight(n) == 0 for n in eng.nodes[:50])
        return res
    finally:
        eng.close()


def bench_gather(nodes: int, reps: int) -> dict:
    eng = _Engine(nodes)
    try:
        v, cv = eng.seg.views, eng.claims.views
        gens = v.registry.slot_gen[:nodes].copy()
        tags = (gens >> np.uint64(1)) & np.uint64(0xFFFF_FFFF)
        me = C.own_ident()
        for k in range(4):  # four live leases (this process's ident, four times)
            cv.lease_ident[k] = me
            cv.in_flight[k, :nodes] = (tags << np.uint64(32)) | np.uint64(k + 1)
        cv.outcomes[:nodes, 2] = (tags << np.uint64(32)) | np.uint64(5)
        active = np.ones(nodes, np.uint8)
        fresh = np.zeros(nodes, np.uint8)
        prev = np.zeros(nodes, np.uint64)
        cols = [np.zeros(nodes) for _ in range(10)]
        seen = [np.zeros(nodes, np.uint64) for _ in range(2)]

        def run():
            return C.gather_feedback(
                gens,
                active,
                fresh,
                cv.lease_ident,
                cv.in_flight_flat,
                cv.row_words,
                cv.outcomes,
                prev,
                prev,
                nodes,
                time.monotonic(),
                5.0,
                5.0,
                *cols,
                *seen,
            )

        sums = run()
        assert sums[0] == nodes * (1 + 2 + 3 + 4)
        ts = np.empty(reps)
        for r in range(reps):
            t0 = time.perf_counter_ns()
            run()
            ts[r] = (time.perf_counter_ns() - t0) / 1000.0
        t0 = time.perf_counter_ns()
        C.reap_dead_leases(cv, nodes, time.monotonic())
        check_us = (time.perf_counter_ns() - t0) / 1000.0
        cv.lease_ident[:4] = 0
        return {
            "nodes": nodes,
            "leases": 4,
            "gather_us_median": float(np.median(ts)),
            "gather_us_p90": float(np.percentile(ts, 90)),
            "lease_check_us": check_us,
        }
    finally:
        eng.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.claims", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--nodes", type=int, default=10_000, help="registered nodes (default 10000)")
    ap.add_argument("--samples", type=int, default=2000, help="batches per figure (default 2000)")
    ap.add_argument("--batch", type=int, default=100, help="pairs per batch (default 100)")
    ap.add_argument("--out", default=None, help="write DIR/claims.json")
    args = ap.parse_args(argv)
    pairs = bench_pairs(args.nodes, args.samples, args.batch)
    gather = bench_gather(args.nodes, 200)
    load = os.getloadavg()
    res = {
        "pairs": pairs,
        "gather": gather,
        "cpus": os.cpu_count(),
        "loadavg_1m": load[0],
        "goal_pair_ns": GOAL_PAIR_NS,
    }
    p = pairs["ok"]
    print(
        f"claim + release(ok)   median {p['median_ns']:7.0f} ns  (p10 {p['p10_ns']:.0f}, "
        f"p90 {p['p90_ns']:.0f})  goal <= {GOAL_PAIR_NS:.0f} ns: "
        f"{'met' if p['median_ns'] <= GOAL_PAIR_NS else 'NOT met'}"
    )
    for key, label in (
        ("error", "claim + release(err)"),
        ("with", "with reader.claim()"),
        ("in_flight", "reader.in_flight()"),
        ("python_call", "(a Python call)"),
    ):
        q = pairs[key]
        print(
            f"{label:<21} median {q['median_ns']:7.0f} ns  (p10 {q['p10_ns']:.0f}, "
            f"p90 {q['p90_ns']:.0f})"
        )
    print(
        f"tick feedback gather  {gather['nodes']} nodes, {gather['leases']} leases: "
        f"median {gather['gather_us_median']:.0f} us (p90 {gather['gather_us_p90']:.0f}); "
        f"lease check {gather['lease_check_us']:.0f} us"
    )
    print(f"(load average {load[0]:.2f} on {os.cpu_count()} CPUs)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "claims.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
