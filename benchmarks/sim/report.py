"""Goal check, markdown tables and the RESULTS.md section of the simulator.

Goals are judged per seed (both policies of a ratio ran on the same world)
and on the worst seed; tables show medians over seeds with the range
(min-max) where it matters.  The simulator owns only the text between
``<!-- sim:begin -->`` and ``<!-- sim:end -->`` in RESULTS.md; `write_section`
replaces that span (or appends it, or creates the file) and leaves
everything else byte for byte.
"""

from __future__ import annotations

import math
import os

__all__ = [
    "goal",
    "render",
    "render_placement",
    "write_section",
    "BEGIN",
    "END",
    "SHIPPED",
    "PEER_NAMES",
]

BEGIN = "<!-- sim:begin -->"
END = "<!-- sim:end -->"
SHIPPED = "desirability"  # clients.pick.pick with its defaults, fed the claims
PEER_NAMES = ("least_request", "peak_ewma", "prequal")
ORACLE_TARGET = 1.3


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return 0.0 if a == 0 else math.inf
    return a / b


def _seeds(res: dict, pol: str, key: str) -> list:
    return res["policies"][pol]["by_seed"][key]


def _check(values: list, limit: float, strict: bool = False) -> dict:
    worst = max(values)
    met = worst < limit if strict else worst <= limit
    return {
        "by_seed": values,
        "min": min(values),
        "max": worst,
        "limit": limit,
        "strict": strict,
        "met": bool(met),
    }


def goal(scenarios: dict) -> dict:
    """Per scenario, the goals of the shipped pick, judged on the worst seed:
    p99 below each peer's (least_request, peak_ewma, prequal) and <= 0.5x
    p2c_queue's; in fail_fast, failed jobs <= 0.1x least_cpu's and <= every
    peer's; in churn, attempts sent to dead nodes <= 0.1x least_cpu's.  The
    ratio to the oracle's p99 is reported against its target (1.3x) apart."""
    g = {}
    for name, res in scenarios.items():
        pols = res["policies"]
        if SHIPPED not in pols:
            continue
        p99 = _seeds(res, SHIPPED, "p99_s")
        checks = {}
        for ref in PEER_NAMES:
            if ref in pols:
                checks[f"p99_vs_{ref}"] = _check(
                    [_ratio(a, b) for a, b in zip(p99, _seeds(res, ref, "p99_s"), strict=True)],
                    1.0,
                    strict=True,
                )
        if "p2c_queue" in pols:
            checks["p99_vs_p2c_queue"] = _check(
                [_ratio(a, b) for a, b in zip(p99, _seeds(res, "p2c_queue", "p99_s"), strict=True)],
                0.5,
            )
        failed = _seeds(res, SHIPPED, "failed")
        if name == "fail_fast" and "least_cpu" in pols:
            checks["failed_vs_least_cpu"] = _check(
                [
                    _ratio(a, b)
                    for a, b in zip(failed, _seeds(res, "least_cpu", "failed"), strict=True)
                ],
                0.1,
            )
        peers_here = [p for p in PEER_NAMES if p in pols]
        if name == "fail_fast" and peers_here:
            best_peer = [
                min(v) for v in zip(*(_seeds(res, p, "failed") for p in peers_here), strict=True)
            ]
            c = _check([a - b for a, b in zip(failed, best_peer, strict=True)], 0.0)
            c["shipped"] = failed
            c["fewest_of_peers"] = best_peer
            checks["failed_minus_fewest_peer"] = c
        if name == "churn" and "least_cpu" in pols:
            checks["sent_to_dead_vs_least_cpu"] = _check(
                [
                    _ratio(a, b)
                    for a, b in zip(
                        _seeds(res, SHIPPED, "sent_to_dead"),
                        _seeds(res, "least_cpu", "sent_to_dead"),
                        strict=True,
                    )
                ],
                0.1,
            )
        entry = {
            "policy": SHIPPED,
            "p99_s": {"by_seed": p99, "min": min(p99), "max": max(p99)},
            "checks": checks,
            "met": all(c["met"] for c in checks.values()),
        }
        if "oracle" in pols:
            entry["vs_oracle"] = _check(
                [_ratio(a, b) for a, b in zip(p99, _seeds(res, "oracle", "p99_s"), strict=True)],
                ORACLE_TARGET,
            )
        g[name] = entry
    return g


def _f(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _rng(c: dict | None, mark: bool = True) -> str:
    if c is None:
        return "-"
    s = _f(c["min"]) if c["min"] == c["max"] else f"{_f(c['min'])}-{_f(c['max'])}"
    return s + ("" if not mark or c["met"] else " **x**")


def _span(xs: list) -> str:
    lo, hi = min(xs), max(xs)
    return _f(lo) if lo == hi else f"{_f(lo)}-{_f(hi)}"


def render(result: dict) -> str:
    """The markdown body: the routing section (method line, goal table, one
    table per scenario) when routing scenarios ran, then the placement one."""
    parts = []
    if result["scenarios"]:
        parts.append(_render_routing(result))
    if result.get("placement"):
        parts.append(render_placement(result))
    return "\n".join(parts)


def _render_routing(result: dict) -> str:
    m = result["meta"]
    seeds = m["seeds"]
    any_res = next(iter(result["scenarios"].values()), None)
    k_sched = any_res["schedulers"] if any_res else 0
    k_retry = any_res["max_retries"] if any_res else 0
    lines = [
        "## Routing quality",
        "",
        f"Produced by `{m['command']}` (seeds {', '.join(map(str, seeds))}"
        + (", quick" if m["quick"] else "")
        + (
            ", score overrides " + ", ".join(f"`{k}={v}`" for k, v in m["score_overrides"].items())
            if m["score_overrides"]
            else ", SCORING.md defaults"
        )
        + f"; {m['runs']} runs in {m['elapsed_s']:.0f} s on {m['workers']} worker(s)). "
        f"{k_sched} schedulers each route their share of the jobs; a failed or lost attempt "
        f"is retried on another node (up to {k_retry} retries) and response time counts "
        "from the job's first dispatch. Same nodes, jobs and faults for every policy of a "
        "seed; scores from the real `kernels.tick` every 50 ms on heartbeats sent every 1 s "
        "and the schedulers' claims. Response times in seconds over successful jobs arriving "
        "after warm-up: the median over seeds, with the range (min-max) for p99; `failed` = "
        "jobs whose every attempt failed; `lost` = attempts on a node when it died or sent "
        "to a dead one (the latter in parentheses); `over limit` = share of node-time with "
        "more than 2 waiting jobs per worker. Method and discussion: "
        "[docs/routing.md](../docs/routing.md). JSON: `benchmarks/results/sim.json`.",
        "",
        "Policies: `desirability` is `clients.pick.pick` as shipped (best of 4 random ranked "
        "nodes, each score discounted by the claims made on the node since the tick); "
        "`des_noclaims` the same without the claims; `des_p2c` / `des_p3c` / `des_p6c` "
        "d = 2 / 3 / 6 with the claims; `des_argmax` the top-ranked "
        "node; `des_wrand` / `des_wrand_pow4` weighted random by score / score^4; `des_topq` "
        "uniform among the top quarter. Peers, each with only its own state: "
        "`least_request` (Envoy), `peak_ewma` (Finagle / Linkerd), `prequal` (Google). "
        "Heartbeat baselines: `wrand_*` weighted random by 1-cpu, 1-mem, their mean; `jsq` "
        "join-shortest-queue; `p2c_queue` best of 2 by jobs on the node; `p2c_wait` best of "
        "2 by jobs x avg_job_s / slots. `oracle` sees the true state.",
        "",
        "### Goals of the shipped pick, judged on the worst seed",
        "",
        "Ratios are per seed (same world for both policies), shown as min-max over seeds; "
        "**x** marks a goal missed on at least one seed. Goals: p99 below each peer's "
        "(ratio < 1) and <= 0.5x p2c_queue's; in fail_fast failed jobs <= 0.1x least_cpu's "
        "and no more than any peer's; in churn attempts sent to dead nodes <= 0.1x "
        "least_cpu's. The oracle ratio has a target of 1.3x.",
        "",
        "| scenario | p99 s | / least_request | / peak_ewma | / prequal | / p2c_queue "
        "| / oracle | failures | all goals met |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, g in result["goal"].items():
        c = g["checks"]
        fail = "-"
        if "failed_vs_least_cpu" in c:
            fl = c["failed_vs_least_cpu"]
            fp = c.get("failed_minus_fewest_peer")
            fail = f"failed {_rng(fl, False)}x least_cpu" + ("" if fl["met"] else " **x**")
            if fp:
                fail += (
                    f"; {_span(fp['shipped'])} vs the fewest of the peers' "
                    f"{_span(fp['fewest_of_peers'])}" + ("" if fp["met"] else " **x**")
                )
        elif "sent_to_dead_vs_least_cpu" in c:
            sd = c["sent_to_dead_vs_least_cpu"]
            fail = f"sent to dead {_rng(sd, False)}x least_cpu" + ("" if sd["met"] else " **x**")
        lines.append(
            f"| {name} | {_span(g['p99_s']['by_seed'])} | {_rng(c.get('p99_vs_least_request'))} | "
            f"{_rng(c.get('p99_vs_peak_ewma'))} | {_rng(c.get('p99_vs_prequal'))} | "
            f"{_rng(c.get('p99_vs_p2c_queue'))} | {_rng(g.get('vs_oracle'))} | {fail} | "
            f"{'yes' if g['met'] else 'no'} |"
        )
    for name, res in result["scenarios"].items():
        r = res["policies"]
        lines += [
            "",
            f"### {name}",
            "",
            f"{res['description']}. {res['nodes']} nodes, {res['jobs']} jobs measured "
            f"(median), capacity {_span(res['capacity_by_seed'])} jobs/s.",
            "",
            "| policy | mean | p50 | p99 (min-max) | p99.9 | wait | failed | lost (sent to dead) "
            "| retries | over limit % | jobs/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for pol, x in r.items():
            p99s = x["by_seed"]["p99_s"]
            lines.append(
                f"| {pol} | {_f(x['mean_s'])} | {_f(x['p50_s'])} | {_f(x['p99_s'])} "
                f"({_span(p99s)}) | {_f(x['p999_s'])} | {_f(x['mean_wait_s'])} | {x['failed']} | "
                f"{x['lost']} ({x['sent_to_dead']}) | {x['retries']} | "
                f"{x['over_limit_pct']:.1f} | {x['jobs_per_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def write_section(path: str, body: str) -> None:
    """Replace the sim section of ``path`` (create / append as needed), atomically."""
    block = f"{BEGIN}\n{body}{END}\n"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmark results\n\n"
    b, e = text.find(BEGIN), text.find(END)
    if b >= 0 and e > b:
        e += len(END)
        if text[e : e + 1] == "\n":
            e += 1
        text = text[:b] + block + text[e:]
    else:
        text = text.rstrip("\n") + "\n\n" + block if text.strip() else block
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ------------------------------------------------------------- placement --
def _pspan(xs: list, fmt=None) -> str:
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "n/a"
    f = fmt or _f
    lo, hi = min(xs), max(xs)
    return f(lo) if f(lo) == f(hi) else f"{f(lo)}-{f(hi)}"


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.0f}%"


def render_placement(result: dict) -> str:
    """Markdown of the placement scenarios (``result["placement"]``)."""
    m = result["meta"]
    seeds = m["seeds"]
    lines = [
        "## Placement quality",
        "",
        f"Produced by `{m['command']}` (seeds {', '.join(map(str, seeds))}"
        + (", quick" if m["quick"] else "")
        + "). Same cluster and jobs for every policy of a seed. Each cell is the median "
        "over seeds; (min-max) is the range over seeds. Latency = completion - arrival "
        "(pending + run); stretch = latency / the job's run time alone on its node; "
        "node queueing = run time / run time alone (1: the node's cores were never "
        "oversubscribed while it ran; background CPU the reservations do not see makes "
        "it grow); unschedulable = still pending 120 s after arrival; utilization = "
        "reserved / allocatable of ready nodes, time-averaged after warm-up; zone local = "
        "share of the jobs free to leave their home zone that stayed in it; data local = "
        "share of the jobs bound to a data set placed on a node holding it; price / core "
        "= mean price of the chosen nodes per requested core (on-demand z0 = 1). Every run "
        "checks that no node was ever reserved beyond its allocatable and that all "
        "reservations were returned.",
        "",
        "Policies (`benchmarks/sim/place_policies.py`): `ours` issue 11's filters and "
        "weighted score (fit least-allocated 30%, preferred affinity 20%, load 20%, "
        "locality 20%, cost 10%), uniformly among the 4 best; `ours_argmax` the best; "
        "`ours_near` uniformly among the nodes within 0.02 of the best; "
        "`kube_like` the same filters, then kube-scheduler's LeastAllocated on cpu and "
        "memory, best node (no load awareness, no preferences); `random_feasible` "
        "uniform among feasible nodes.",
    ]
    for name, res in result["placement"].items():
        pols = res["policies"]
        lines += ["", f"### {name}", "", f"{res['description']}. {res['nodes']} nodes, "
                  f"{res['jobs']} jobs measured (median)."]  # fmt: skip
        if res["kind"] == "scope":
            lines += _render_scope(res)
            continue
        lines += [
            "",
            "| policy | p50 s | p99 s (min-max) | p99 stretch (min-max) "
            "| p99 node queueing (min-max) | pending mean s | unschedulable (min-max) "
            "| cpu % (min-max) | mem % | gpu % | zone local % | data local % | price / core |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for pol, x in pols.items():
            b = x["by_seed"]
            lines.append(
                f"| {pol} | {_f(x['p50_s'])} | {_f(x['p99_s'])} ({_pspan(b['p99_s'])}) | "
                f"{_f(x['stretch_p99'])} ({_pspan(b['stretch_p99'])}) | "
                f"{_f(x['contention_p99'])} ({_pspan(b['contention_p99'])}) | "
                f"{_f(x['pending_mean_s'])} | {x['unschedulable']} "
                f"({_pspan(b['unschedulable'], lambda v: f'{v:.0f}')}) | "
                f"{x['util_cpu_pct']:.1f} ({_pspan(b['util_cpu_pct'], lambda v: f'{v:.1f}')}) | "
                f"{x['util_mem_pct']:.1f} | {x['util_gpu_pct']:.1f} | "
                f"{x['zone_local_pct']:.0f} | {x['data_local_pct']:.0f} | "
                f"{x['price_per_core']:.3f} |"
            )
        lines += [
            "",
            "Unschedulable jobs by the filter that removed the last candidates (all seeds): "
            + "; ".join(
                f"`{pol}` "
                + (
                    ", ".join(f"{k} {v}" for k, v in x["unschedulable_by_all_seeds"].items())
                    or "none"
                )
                for pol, x in pols.items()
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def _render_scope(res: dict) -> list:
    pols = res["policies"]
    esc = pols.get("escalating")
    own = pols.get("own_zone")
    out = [
        "",
        "Jobs of the spiking zone (z1) by arrival time. `ratio` = the P95/P50 ratio the "
        "rule saw (`shm_engine.core.scope`, defaults of `[scope]`: 1.5/2.5 to the "
        "neighbours, 1.7/2.7 to every zone, >= 10 samples, every 2 s); `widened` = share "
        "of jobs the rule let out of their zone (`every`: to every zone); `out of zone` = "
        "share placed outside z1. A widened job prefers the other zones of its scope and "
        "keeps z1 as a fallback. `own_zone` keeps every job in its zone.",
        "",
        "| arrivals s | spike factor | ratio | widened (min-max) | every zone "
        "| out of zone (min-max) | p99 s | p99 s own_zone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if esc is None:
        return out[:1] + ["", "(the `escalating` variant was not run)"]
    for b, row in enumerate(esc["bins"]):
        own_p99 = own["bins"][b]["p99_s"] if own else math.nan
        out.append(
            f"| {row['t0']:.0f}-{row['t1']:.0f} | {row['factor']:.2f} | {_f(row['ratio'])} | "
            f"{_pct(row['widened'])} ({_pspan(row['widened_by_seed'], _pct)}) | "
            f"{_pct(row['every'])} | {_pct(row['out_of_zone'])} "
            f"({_pspan(row['out_of_zone_by_seed'], _pct)}) | {_f(row['p99_s'])} | {_f(own_p99)} |"
        )
    summary = (
        f"p99 latency of z1's jobs arriving during the spike: escalating "
        f"{_f(esc['spike_zone_p99_s'])} s ({_pspan(esc['by_seed']['spike_zone_p99_s'])})"
    )
    if own:
        summary += (
            f", own_zone {_f(own['spike_zone_p99_s'])} s "
            f"({_pspan(own['by_seed']['spike_zone_p99_s'])}); unschedulable "
            f"{esc['unschedulable']} vs {own['unschedulable']}"
        )
    out += ["", summary + "."]
    return out
