"""Routing-quality simulator: does routing on the desirability score beat the
policies it replaces?  ``python -m benchmarks sim [--quick] [--scenario NAME]
[--seed S] [--score-override key=value] [--workers N]``.

Each (scenario, policy) pair is one deterministic discrete-event run
(`cluster.run`) over a seeded world (`scenarios.build_world`) that every policy
of the scenario shares.  Scores come from the real kernels.  The full default
run writes the "Routing quality" section of benchmarks/RESULTS.md (between its
markers, nothing else) and benchmarks/results/sim.json; other runs print the
tables and write only where ``--json`` / ``--md`` say.

Public API: `main(argv) -> int`, `simulate(...) -> dict`, `SCENARIOS`,
`POLICIES`, `pick` lives in `clients.pick`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import lru_cache

import numpy as np

from .policies import POLICIES
from .report import goal, render, write_section
from .scenarios import SCENARIOS, build_world, quick

__all__ = ["main", "simulate", "SCENARIOS", "POLICIES"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_BENCH = os.path.dirname(_HERE)
DEFAULT_MD = os.path.join(_BENCH, "RESULTS.md")
DEFAULT_JSON = os.path.join(_BENCH, "results", "sim.json")


def _params(overrides: tuple):
    from shm_engine.core.config import Config, with_overrides
    cfg = Config()
    if overrides:
        cfg = with_overrides(cfg, {k if k.startswith("score.") else "score." + k: v
                                   for k, v in overrides})
    return cfg.score.to_params()


@lru_cache(maxsize=4)
def _world(name: str, is_quick: bool, seed: int):
    sc = SCENARIOS[name]
    return build_world(quick(sc) if is_quick else sc, seed)


def _run_one(task):
    from .cluster import run
    name, is_quick, seed, policy, overrides = task
    w = _world(name, is_quick, seed)
    rng = np.random.default_rng([seed, sum(map(ord, name)), 7])   # same for every policy
    return name, policy, run(w, POLICIES[policy], _params(overrides), rng)


def _init_worker():
    import kernels
    kernels.warm_up()


def simulate(scenarios=None, policies=None, seed: int = 1, is_quick: bool = False,
             overrides: tuple = (), workers: int = 1) -> dict:
    """Run every (scenario, policy) pair; return the result document (the JSON)."""
    scenarios = list(scenarios or SCENARIOS)
    policies = list(policies or POLICIES)
    _params(overrides)   # validate before forking
    tasks = [(s, is_quick, seed, p, tuple(overrides)) for s in scenarios for p in policies]
    t0 = time.perf_counter()
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
            done = pool.map(_run_one, tasks, chunksize=1)
    else:
        _init_worker()
        done = [_run_one(t) for t in tasks]
    elapsed = time.perf_counter() - t0
    res = {}
    for name, policy, metrics in done:
        w = _world(name, is_quick, seed)
        sc = w.scenario
        entry = res.setdefault(name, {
            "description": sc.description, "nodes": sc.n_nodes,
            "duration_s": sc.duration_s, "warmup_s": sc.warmup_s,
            "capacity_jobs_s": w.capacity, "policies": {}})
        entry["jobs"] = metrics["jobs"]
        entry["policies"][policy] = metrics
    cmd = "python -m benchmarks sim" + (" --quick" if is_quick else "")
    cmd += "".join(f" --score-override {k}={v}" for k, v in overrides)
    return {
        "meta": {"command": cmd, "seed": seed, "quick": is_quick,
                 "score_overrides": dict(overrides), "workers": workers,
                 "elapsed_s": round(elapsed, 1)},
        "scenarios": res,
        "goal": goal(res),
    }


def _parse_override(item: str):
    from shm_engine.core.config import parse_override
    return parse_override(item)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 nodes, 90 s per run (smoke test)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                    help="run only this scenario (repeatable)")
    ap.add_argument("--policy", action="append", choices=list(POLICIES),
                    help="run only this policy (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--score-override", action="append", default=[], metavar="KEY=VALUE",
                    help="a [score] key for the kernels, e.g. min_requests=5 or weights.cpu=0.1")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", help="write the result document here")
    ap.add_argument("--md", help="write the Routing quality section into this markdown file")
    args = ap.parse_args(argv)
    overrides = tuple(_parse_override(x) for x in args.score_override)
    result = simulate(args.scenario, args.policy, args.seed, args.quick, overrides,
                      max(1, args.workers))
    body = render(result)
    print(body)
    canonical = not (args.quick or args.scenario or args.policy or overrides or args.seed != 1)
    json_path = args.json or (DEFAULT_JSON if canonical else None)
    md_path = args.md or (DEFAULT_MD if canonical else None)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(json_path + ".tmp", json_path)
    if md_path:
        write_section(md_path, body)
    print(f"sim: {len(result['scenarios'])} scenarios x "
          f"{len(next(iter(result['scenarios'].values()))['policies'])} policies in "
          f"{result['meta']['elapsed_s']} s" + (f"; wrote {json_path}" if json_path else "")
          + (f", {md_path}" if md_path else ""), file=sys.stderr)
    return 0
