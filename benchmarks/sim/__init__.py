"""Routing-quality simulator: does routing on the desirability score beat the
policies it replaces and its peers?  And placement: do issue 11's filters
and weighted score place better than a kube-scheduler-like baseline, and
does scope escalation move jobs out of a zone whose tail spikes?
``python -m benchmarks sim [--quick] [--scenario NAME] [--policy NAME]
[--seeds N | --seed S ...] [--retries R] [--schedulers K]
[--score-override key=value] [--workers N]``.

The placement scenarios (`PLACEMENT_SCENARIOS`: ``placement``, ``scope``)
run in `placement` with their own policies (`PLACEMENT_POLICIES`; the scope
scenario always runs its two variants, escalating and own-zone); they are
part of the default run, and their tables follow the routing ones.

Each (scenario, seed, policy) triple is one deterministic discrete-event run
(`cluster.run`) over a seeded world (`scenarios.build_world`) that every
policy of that scenario and seed shares.  Scores come from the real kernels.
Every table is over several seeds (5 by default): the JSON keeps each metric's
median under the metric's name and every seed's value under ``by_seed``;
goals are judged on the worst seed.  A run writes its JSON into the ignored
``benchmarks/out/sim.json``; ``--record`` (the full default run only) writes
the "Routing quality" section of benchmarks/RESULTS.md (between its markers,
nothing else) and benchmarks/results/sim.json instead.  ``--json`` / ``--md``
write where they say.

Public API: `main(argv) -> int`, `simulate(...) -> dict`, `SCENARIOS`,
`POLICIES`, `PLACEMENT_SCENARIOS`, `PLACEMENT_POLICIES`; the shipped pick
lives in `clients.pick`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import replace
from functools import lru_cache

import numpy as np

from .place_policies import PLACEMENT_POLICIES
from .placement import PLACEMENT_SCENARIOS, simulate_placement
from .policies import POLICIES
from .report import goal, render, write_section
from .scenarios import SCENARIOS, build_world, quick

__all__ = [
    "main",
    "simulate",
    "SCENARIOS",
    "POLICIES",
    "PLACEMENT_SCENARIOS",
    "PLACEMENT_POLICIES",
]

_HERE = os.path.dirname(os.path.abspath(__file__))
_BENCH = os.path.dirname(_HERE)
DEFAULT_MD = os.path.join(_BENCH, "RESULTS.md")
DEFAULT_JSON = os.path.join(_BENCH, "results", "sim.json")
OUT_JSON = os.path.join(_BENCH, "out", "sim.json")  # ignored by git
DEFAULT_SEEDS = (1, 2, 3, 4, 5)
QUICK_SEEDS = (1,)
_SCALARS = (
    "jobs",
    "mean_s",
    "p50_s",
    "p99_s",
    "p999_s",
    "mean_wait_s",
    "failed",
    "lost",
    "sent_to_dead",
    "attempt_errors",
    "retries",
    "over_limit_pct",
    "jobs_per_s",
    "fallbacks",
    "tail_service_share",
    "tail_wait_share",
    "tail_retry_share",
)


def _params(overrides: tuple, tick_s: float = 0.05) -> np.ndarray:
    """SCORING.md's defaults (`kernels.defaults`, the table the configuration
    reads) with ``overrides`` ((key, value) pairs of [score] keys, with or
    without the ``score.`` prefix) and the scenario's tick interval."""
    from kernels.defaults import DEFAULTS, default_params
    from kernels.params import PARAM_NAMES, TICK_INTERVAL_MS

    vec = default_params()
    for key, value in overrides:
        name = key[len("score.") :] if key.startswith("score.") else key
        if name not in DEFAULTS or name == "tick_interval_ms":
            raise ValueError(
                f"--score-override {key}: not a [score] key "
                f"(one of {', '.join(n for n in PARAM_NAMES if n != 'tick_interval_ms')})"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"--score-override {key}={value!r}: not a finite number")
        vec[PARAM_NAMES.index(name)] = float(value)
    vec[TICK_INTERVAL_MS] = tick_s * 1000.0
    return vec


def _scenario(name: str, is_quick: bool, shape: tuple):
    sc = SCENARIOS[name]
    sc = quick(sc) if is_quick else sc
    return replace(sc, **dict(shape)) if shape else sc


@lru_cache(maxsize=4)
def _world(name: str, is_quick: bool, seed: int, shape: tuple):
    return build_world(_scenario(name, is_quick, shape), seed)


def _run_one(task):
    from .cluster import run

    name, is_quick, seed, policy, overrides, shape = task
    w = _world(name, is_quick, seed, shape)
    rng = np.random.default_rng([seed, sum(map(ord, name)), 7])  # same for every policy
    params = _params(overrides, w.scenario.tick_s)
    return name, seed, policy, w.capacity, run(w, POLICIES[policy], params, rng)


def _init_worker():
    import kernels

    kernels.warm_up()


def _median(xs):
    return float(np.median(np.asarray(xs, float))) if xs else float("nan")


def simulate(
    scenarios=None,
    policies=None,
    seeds=DEFAULT_SEEDS,
    is_quick: bool = False,
    overrides: tuple = (),
    workers: int = 1,
    retries: int | None = None,
    schedulers: int | None = None,
) -> dict:
    """Run every (scenario, seed, policy); return the result document (the JSON).
    ``scenarios`` may name routing and placement scenarios (default: all of
    both); ``policies`` filters each family's own policies."""
    names = list(scenarios or [*SCENARIOS, *PLACEMENT_SCENARIOS])
    for s in names:
        if s not in SCENARIOS and s not in PLACEMENT_SCENARIOS:
            raise ValueError(f"sim: unknown scenario {s!r}")
    placing = [s for s in names if s in PLACEMENT_SCENARIOS]
    scenarios = [s for s in names if s in SCENARIOS]
    wanted = list(policies) if policies else None
    policies = [p for p in policies if p in POLICIES] if policies else list(POLICIES)
    if scenarios and not policies:
        raise ValueError(
            f"sim: --policy {' '.join(wanted or [])} names no routing policy for "
            f"{', '.join(scenarios)} (--scenario placement / scope runs placement alone)"
        )
    if placing and wanted and not any(p in PLACEMENT_POLICIES for p in wanted):
        if any(s for s in placing if PLACEMENT_SCENARIOS[s].kind == "placement"):
            raise ValueError(f"sim: --policy {' '.join(wanted)} names no placement policy")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"sim: seeds = {seeds!r} must be distinct and at least one")
    shape = []
    if retries is not None:
        if retries < 0:
            raise ValueError(f"sim: retries = {retries!r} must be >= 0")
        shape.append(("max_retries", int(retries)))
    if schedulers is not None:
        if schedulers < 1:
            raise ValueError(f"sim: schedulers = {schedulers!r} must be >= 1")
        shape.append(("schedulers", int(schedulers)))
    shape = tuple(shape)
    _params(overrides)  # validate before forking
    # Grouped by world: consecutive tasks reuse a worker's cached world.
    tasks = [
        (s, is_quick, seed, p, tuple(overrides), shape)
        for s in scenarios
        for seed in seeds
        for p in policies
    ]
    t0 = time.perf_counter()
    placement = simulate_placement(placing, seeds, is_quick, workers, wanted) if placing else {}
    if not tasks:
        done = []
    elif workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
            done = list(pool.imap_unordered(_run_one, tasks, chunksize=1))
    else:
        _init_worker()
        done = [_run_one(t) for t in tasks]
    elapsed = time.perf_counter() - t0
    runs = {(name, seed, pol): (cap, m) for name, seed, pol, cap, m in done}
    res = {}
    for name in scenarios:
        sc = _scenario(name, is_quick, shape)
        caps = [runs[(name, s, policies[0])][0] for s in seeds]
        entry = {
            "description": sc.description,
            "nodes": sc.n_nodes,
            "duration_s": sc.duration_s,
            "warmup_s": sc.warmup_s,
            "schedulers": sc.schedulers,
            "max_retries": sc.max_retries,
            "capacity_jobs_s": _median(caps),
            "capacity_by_seed": caps,
            "jobs": 0,
            "policies": {},
        }
        for pol in policies:
            ms = [runs[(name, s, pol)][1] for s in seeds]
            agg = {k: _median([m[k] for m in ms]) for k in _SCALARS}
            for k in (
                "jobs",
                "failed",
                "lost",
                "sent_to_dead",
                "attempt_errors",
                "retries",
                "fallbacks",
            ):
                agg[k] = int(round(agg[k]))
            agg["by_seed"] = {k: [m[k] for m in ms] for k in _SCALARS}
            entry["policies"][pol] = agg
        entry["jobs"] = entry["policies"][policies[0]]["jobs"]
        res[name] = entry
    cmd = "python -m benchmarks sim" + (" --quick" if is_quick else "")
    if scenarios != list(SCENARIOS) or placing != list(PLACEMENT_SCENARIOS):
        cmd += "".join(f" --scenario {s}" for s in names)
    if wanted:
        cmd += "".join(f" --policy {p}" for p in wanted)
    default_seeds = list(QUICK_SEEDS if is_quick else DEFAULT_SEEDS)
    if seeds != default_seeds:
        cmd += "".join(f" --seed {s}" for s in seeds)
    if retries is not None:
        cmd += f" --retries {retries}"
    if schedulers is not None:
        cmd += f" --schedulers {schedulers}"
    cmd += "".join(f" --score-override {k}={v}" for k, v in overrides)
    return {
        "meta": {
            "command": cmd,
            "seeds": seeds,
            "quick": is_quick,
            "score_overrides": dict(overrides),
            "workers": workers,
            "elapsed_s": round(elapsed, 1),
            "runs": len(tasks) + sum(len(r["policies"]) for r in placement.values()) * len(seeds),
        },
        "scenarios": res,
        "goal": goal(res),
        "placement": placement,
    }


def _rounded(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def dumps(result: dict) -> str:
    """The result document as JSON text: floats to 6 significant digits,
    indented, each list of numbers on one line."""
    text = json.dumps(_rounded(result), indent=1, sort_keys=False)
    return (
        re.sub(
            r"\[([^\[\]{}\"]*)\]",
            lambda m: (
                "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"
                if m.group(1).strip()
                else "[]"
            ),
            text,
        )
        + "\n"
    )


def _parse_override(item: str):
    from shm_engine.core.config import ConfigError, parse_override

    try:
        return parse_override(item)
    except ConfigError as e:
        raise ValueError(str(e)) from e


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks sim", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--quick", action="store_true", help="16 nodes, 90 s per run, seed 1 (smoke test)"
    )
    ap.add_argument(
        "--scenario",
        action="append",
        choices=sorted([*SCENARIOS, *PLACEMENT_SCENARIOS]),
        help="run only this scenario (repeatable); placement and scope are the placement ones",
    )
    ap.add_argument(
        "--policy",
        action="append",
        choices=[*POLICIES, *PLACEMENT_POLICIES],
        help="run only this policy (repeatable; each family keeps its own)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        action="append",
        help="run this seed (repeatable; default 1-5, or 1 with --quick)",
    )
    ap.add_argument("--seeds", type=int, help="run seeds 1..N")
    ap.add_argument("--retries", type=int, help="retries of a failed or lost job (default 2)")
    ap.add_argument("--schedulers", type=int, help="independent schedulers (default 4)")
    ap.add_argument(
        "--score-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [score] key for the kernels, e.g. min_requests=5 or weights.cpu=0.1",
    )
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", help="write the result document here")
    ap.add_argument("--md", help="write the Routing quality section into this markdown file")
    ap.add_argument(
        "--record",
        action="store_true",
        help="the full default run, recorded: benchmarks/results/sim.json and RESULTS.md",
    )
    args = ap.parse_args(argv)
    if args.seed and args.seeds:
        ap.error("--seed and --seeds are exclusive")
    if args.record and (
        args.quick
        or args.scenario
        or args.policy
        or args.seed
        or args.seeds
        or args.score_override
        or args.retries is not None
        or args.schedulers is not None
    ):
        ap.error(
            "--record is the full default run: without --quick, --scenario, --policy, "
            "--seed(s), --score-override, --retries or --schedulers"
        )
    if args.seeds is not None and args.seeds < 1:
        ap.error(f"--seeds {args.seeds}: must be >= 1")
    if args.seed:
        seeds = args.seed
    elif args.seeds:
        seeds = list(range(1, args.seeds + 1))
    else:
        seeds = list(QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    try:
        overrides = tuple(_parse_override(x) for x in args.score_override)
        result = simulate(
            args.scenario,
            args.policy,
            seeds,
            args.quick,
            overrides,
            max(1, args.workers),
            args.retries,
            args.schedulers,
        )
    except ValueError as e:
        ap.error(str(e))
    body = render(result)
    print(body)
    json_path = args.json or (DEFAULT_JSON if args.record else OUT_JSON)
    md_path = args.md or (DEFAULT_MD if args.record else None)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path + ".tmp", "w", encoding="utf-8") as f:
            f.write(dumps(result))
        os.replace(json_path + ".tmp", json_path)
    if md_path:
        write_section(md_path, body)
    n_pol = len({p for r in result["scenarios"].values() for p in r["policies"]}) + len(
        {p for r in result["placement"].values() for p in r["policies"]}
    )
    print(
        f"sim: {len(result['scenarios']) + len(result['placement'])} scenarios x "
        f"{len(seeds)} seeds x {n_pol} policies in "
        f"{result['meta']['elapsed_s']} s"
        + (f"; wrote {json_path}" if json_path else "")
        + (f", {md_path}" if md_path else ""),
        file=sys.stderr,
    )
    return 0
