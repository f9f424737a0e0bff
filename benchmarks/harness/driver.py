"""``python -m benchmarks run``: the driver that runs the sections in order.

A run writes only into its output folder (``benchmarks/out/`` unless
``--out`` says otherwise; git ignores it): ``latest.json`` and
``tick_scaling.png``, or ``<section>_only.json`` with ``--only``.
``--record`` is the one way to update what is committed: a full run (no
``--quick``, ``--nodes``, ``--skip``, ``--only`` or ``--out``) written to
``benchmarks/results/`` and into the bench span of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.harness import (
    claims,
    events,
    feed,
    freshness,
    http,
    ingest,
    memory,
    place,
    read,
    report,
    scaling,
    tick,
)
from benchmarks.harness.common import machine

__all__ = ["main", "OUT_DIR", "RECORD_DIR", "RESULTS_MD"]

BENCH = Path(__file__).resolve().parents[1]
OUT_DIR = BENCH / "out"
RECORD_DIR = BENCH / "results"
RESULTS_MD = BENCH / "RESULTS.md"
FULL_NODES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_NODES = (1_000, 10_000)
SKIPPABLE = ("read", "claims", "place", "ingest", "freshness", "events", "feed", "http")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks run", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, few reps (< 2 min)")
    ap.add_argument("--nodes", default=None, help="comma-separated node counts for the tick")
    ap.add_argument("--out", default=None, help=f"output folder (default {OUT_DIR})")
    ap.add_argument(
        "--skip", default="", help=f"comma-separated sections to skip ({','.join(SKIPPABLE)})"
    )
    ap.add_argument(
        "--only",
        choices=("tick", "ingest", "freshness", "feed", "http"),
        default=None,
        help="run only this section (tick: no Python baseline; freshness: 30 s, "
        "or 4 s with --quick); prints the "
        "tables and writes <out>/<section>_only.json",
    )
    ap.add_argument(
        "--record",
        action="store_true",
        help="a full run, recorded: benchmarks/results/ and RESULTS.md",
    )
    return ap


def _tick_reps(n: int, quick: bool) -> int:
    if quick:
        return 60 if n <= 10_000 else 12
    return 400 if n <= 10_000 else 60 if n <= 100_000 else 16


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.record and (args.quick or args.nodes or args.skip or args.only or args.out):
        ap.error("--record is a full run: without --quick, --nodes, --skip, --only or --out")
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(SKIPPABLE):
        ap.error(
            f"--skip: unknown section(s) {sorted(skip - set(SKIPPABLE))}; "
            f"choose from {','.join(SKIPPABLE)}"
        )
    try:
        nodes = (
            [int(x) for x in args.nodes.split(",")]
            if args.nodes
            else list(QUICK_NODES if args.quick else FULL_NODES)
        )
    except ValueError:
        ap.error(f"--nodes {args.nodes!r}: give comma-separated whole numbers")
    out_dir = RECORD_DIR if args.record else Path(args.out) if args.out else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    from shm_engine.tick.ticker import warm_up

    warm_up()
    given = sys.argv[2:] if argv is None else list(argv)
    res = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": args.quick,
        "command": " ".join(["python -m benchmarks run", *given]),
    }
    log(f"machine: {res['machine']['cpu']}, {res['machine']['cores']} cores")
    if args.only == "http":
        res["http"] = hp = _http(args.quick, log)
        print("\n".join(http.summary(hp)[0]))
        return _write_json(res, out_dir / "http_only.json", log)
    if args.only == "ingest":
        res["ingest"] = ig = ingest.run(args.quick, log)
        print("\n".join(ingest.summary(ig)[0]))
        return _write_json(res, out_dir / "ingest_only.json", log)
    if args.only == "feed":
        res["feed"] = fd = feed.run(1_000 if args.quick else 10_000, 30 if args.quick else 200, log)
        print("\n".join(feed.summary(fd)[0] + feed.summary(fd)[1]))
        return _write_json(res, out_dir / "feed_only.json", log)
    if args.only == "freshness":
        res["freshness"] = fr = freshness.run(10_000, 4.0 if args.quick else 30.0, log)
        print("\n".join(freshness.summary(fr)[0] + freshness.summary(fr)[1]))
        return _write_json(res, out_dir / "freshness_only.json", log)
    python_max = 1_000 if args.quick else 100_000
    res["tick"] = rows = [
        tick.run(n, _tick_reps(n, args.quick), python_max, log, only_tick=args.only == "tick")
        for n in nodes
    ]
    res["tick_sparse"] = tick.sparse(3_000, 16_384, 60 if args.quick else 300, log)
    if args.only == "tick":
        print("\n".join(tick.tables(rows)))
        print(tick.sparse_line(res["tick_sparse"]).strip())
        return _write_json(res, out_dir / "tick_only.json", log)
    res["read"] = None if "read" in skip else read.run(10_000, 30 if args.quick else 300, log)
    res["claims"] = (
        None
        if "claims" in skip
        else claims.run(1_000 if args.quick else 10_000, 200 if args.quick else 2000, log)
    )
    res["place"] = (
        None
        if "place" in skip
        else place.run(
            1_000 if args.quick else 10_000,
            300 if args.quick else 20_000,
            1.0 if args.quick else 5.0,
            4,
            log,
        )
    )
    res["ingest"] = None if "ingest" in skip else ingest.run(args.quick, log)
    res["freshness"] = (
        None if "freshness" in skip else freshness.run(10_000, 4.0 if args.quick else 30.0, log)
    )
    res["events"] = (
        None if "events" in skip else events.run(10_000, 200 if args.quick else 2000, log)
    )
    res["feed"] = (
        None
        if "feed" in skip
        else feed.run(1_000 if args.quick else 10_000, 30 if args.quick else 200, log)
    )
    # --quick leaves it out (its smoke test runs `--only http --quick`).
    res["http"] = None if "http" in skip or args.quick else _http(False, log)
    res["memory"] = memory.run(res["freshness"])
    res["scaling"] = scaling.run(rows)
    res["plot"] = scaling.plot(rows, out_dir / "tick_scaling.png")
    lines = report.summarise(res)
    print("\n".join(lines))
    _write_json(res, out_dir / "latest.json", log)
    log(f"plot: {res['plot']}")
    if args.record:
        report.record_results_md(res, lines, RESULTS_MD, "tick_scaling.png")
        log(f"wrote {RESULTS_MD}")
    return 0


def _http(quick: bool, log) -> dict:
    return http.run(2_000 if quick else 10_000, 3.0 if quick else 15.0, log)


def _write_json(res: dict, path: Path, log) -> int:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=float) + "\n")
    tmp.replace(path)
    log(f"wrote {path}")
    return 0
