"""Goal check, markdown tables and the RESULTS.md section of the simulator.

The simulator owns only the text between ``<!-- sim:begin -->`` and
``<!-- sim:end -->`` in RESULTS.md; `write_section` replaces that span (or
appends it, or creates the file) and leaves everything else byte for byte.
"""

from __future__ import annotations

import math
import os

from .policies import SCORE_POLICIES

__all__ = ["goal", "render", "write_section", "BEGIN", "END"]

BEGIN = "<!-- sim:begin -->"
END = "<!-- sim:end -->"
SHIPPED = "desirability"          # clients.pick.pick with its defaults
FAILURE_SCENARIOS = ("churn", "fail_fast")


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return 0.0 if a == 0 else math.inf
    return a / b


def _check(res: dict, name: str, pol: str) -> dict:
    r = res["policies"]
    p99 = r[pol]["p99_s"]
    lost = r[pol]["failed"] + r[pol]["lost"]
    out = {
        "policy": pol,
        "p99_s": p99,
        "p99_vs_least_cpu": _ratio(p99, r["least_cpu"]["p99_s"]),
        "p99_vs_p2c_queue": _ratio(p99, r["p2c_queue"]["p99_s"]),
        "failures": lost,
        "failures_vs_least_cpu": _ratio(lost, r["least_cpu"]["failed"] + r["least_cpu"]["lost"]),
    }
    met = out["p99_vs_least_cpu"] <= 0.5 and out["p99_vs_p2c_queue"] <= 1.0
    if name in FAILURE_SCENARIOS:
        met = met and out["failures_vs_least_cpu"] <= 0.1
    out["met"] = bool(met)
    return out


def goal(scenarios: dict) -> dict:
    """Per scenario: the goal for the best score policy (lowest p99) and for
    the shipped pick.  Goal: p99 <= 0.5x least_cpu and <= p2c_queue; in churn
    and fail_fast also failed+lost <= 0.1x least_cpu."""
    g = {}
    for name, res in scenarios.items():
        pols = [p for p in SCORE_POLICIES if p in res["policies"]]
        needed = {"least_cpu", "p2c_queue"}
        if not pols or not needed <= res["policies"].keys():
            continue
        best = min(pols, key=lambda p: res["policies"][p]["p99_s"])
        g[name] = {"best": _check(res, name, best)}
        if SHIPPED in res["policies"]:
            g[name]["shipped"] = _check(res, name, SHIPPED)
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


def render(result: dict) -> str:
    """The markdown body: method line, goal summary, one table per scenario."""
    m = result["meta"]
    lines = [
        "## Routing quality",
        "",
        f"Produced by `{m['command']}` (seed {m['seed']}"
        + (", quick" if m["quick"] else "")
        + (", score overrides " + ", ".join(f"`{k}={v}`" for k, v in m["score_overrides"].items())
           if m["score_overrides"] else ", SCORING.md defaults")
        + f"; {m['elapsed_s']:.0f} s on {m['workers']} worker(s)). "
        "Same seeds, nodes, jobs and faults for every policy; scores from the real "
        "`kernels.tick` every 50 ms on heartbeats sent every 1 s. Response times in "
        "seconds over successful jobs arriving after warm-up; `failed` = failed by a "
        "node, `lost` = on a node when it died or sent to a dead one (the latter in "
        "parentheses); `over limit` = share of node-time "
        "with more than 2 waiting jobs per worker. Method and discussion: "
        "[docs/routing.md](../docs/routing.md). JSON: `benchmarks/results/sim.json`.",
        "",
        "Score policies: `desirability` is `clients.pick.pick` as shipped (best of 3 "
        "random ranked nodes); `des_p2c` / `des_p4c` the same with d = 2 / 4; "
        "`des_argmax` the top-ranked node; `des_wrand` / `des_wrand_pow4` weighted "
        "random by score / score^4; `des_topq` uniform among the top quarter. "
        "Baselines: `wrand_*` weighted random by 1-cpu, 1-mem, their mean; `jsq` "
        "join-shortest-queue; `p2c_queue` best of 2 random nodes by queue. "
        "`oracle` sees the true state.",
        "",
        "### Goal: best score policy p99 <= 0.5x least_cpu and <= p2c_queue; "
        "failures <= 0.1x least_cpu in churn and fail_fast",
        "",
        "| scenario | policy | p99 | vs least_cpu | vs p2c_queue | failures vs least_cpu | met |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, g in result["goal"].items():
        for key in ("best", "shipped"):
            if key not in g or (key == "shipped" and g["shipped"]["policy"] == g["best"]["policy"]
                                and key != "best"):
                continue
            c = g[key]
            fr = _f(c["failures_vs_least_cpu"]) if name in FAILURE_SCENARIOS else "-"
            label = c["policy"] + (" (shipped pick)" if c["policy"] == SHIPPED else "")
            lines.append(f"| {name} | {label} | {_f(c['p99_s'])} | {_f(c['p99_vs_least_cpu'])} | "
                         f"{_f(c['p99_vs_p2c_queue'])} | {fr} | {'yes' if c['met'] else 'no'} |")
    for name, res in result["scenarios"].items():
        r = res["policies"]
        lines += [
            "",
            f"### {name}",
            "",
            f"{res['description']}. {res['nodes']} nodes, {res['jobs']} jobs measured, "
            f"capacity {res['capacity_jobs_s']:.0f} jobs/s.",
            "",
            "| policy | mean | p50 | p99 | p99.9 | failed | lost (sent to dead) | over limit % "
            "| jobs/s | p99 / least_cpu | p99 / p2c_queue |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for pol, x in r.items():
            rl = _f(_ratio(x["p99_s"], r["least_cpu"]["p99_s"])) if "least_cpu" in r else "-"
            rq = _f(_ratio(x["p99_s"], r["p2c_queue"]["p99_s"])) if "p2c_queue" in r else "-"
            lines.append(
                f"| {pol} | {_f(x['mean_s'])} | {_f(x['p50_s'])} | {_f(x['p99_s'])} | "
                f"{_f(x['p999_s'])} | {x['failed']} | {x['lost']} ({x['sent_to_dead']}) | "
                f"{x['over_limit_pct']:.1f} | "
                f"{x['jobs_per_s']:.1f} | {rl} | {rq} |")
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
        if text[e:e + 1] == "\n":
            e += 1
        text = text[:b] + block + text[e:]
    else:
        text = text.rstrip("\n") + "\n\n" + block if text.strip() else block
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
