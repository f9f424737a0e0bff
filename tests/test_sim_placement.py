"""Tests of the placement simulator (`benchmarks.sim.placement`,
`benchmarks.sim.place_policies`) and of its wiring into the sim CLI.

Invariants checked on traced runs, independently of the simulator's own
accounting: no node is ever reserved beyond its allocatable (a sweep over
every placement and completion), every placement passed every filter (a
plain-Python reading of the job's constraints), releases balance, and in the
scope scenario every job's scope level is the linear rule applied to the
ratio and draw it saw.  Plus table tests of the filters and score parts with
the arithmetic written out, determinism, and the CLI's output and errors.
"""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from benchmarks.sim import main
from benchmarks.sim.place_policies import (
    FILTERS,
    PLACEMENT_POLICIES,
    WEIGHTS,
    Cluster,
    JobSpec,
    filter_nodes,
    score_parts,
)
from benchmarks.sim.placement import (
    GPU_TAINT,
    PLACEMENT_SCENARIOS,
    SCOPE_VARIANTS,
    SPOT_TAINT,
    build_world,
    quick,
    run,
)
from shm_engine.core.scope import EVERY, NEIGHBOURS, OWN, escalation_share

SHORT = replace(quick(PLACEMENT_SCENARIOS["placement"]), duration_s=500.0, warmup_s=100.0)


@pytest.fixture(scope="module")
def traced():
    w = build_world(SHORT, 3)
    return w, {p: run(w, p, np.random.default_rng(3), trace=True) for p in PLACEMENT_POLICIES}


# --------------------------------------------------------------------------
# Invariants of traced runs


def test_capacity_never_exceeded_and_releases_balance(traced):
    w, runs = traced
    for pol, m in runs.items():
        assert m["max_fill"] <= 1.0 + 1e-12, pol
        assert m["reserved_left"] == 0.0, pol
        placed = [i for i, _j, _t in m["placements"]]
        assert len(set(placed)) == len(placed), pol  # a job is placed once
        measured = [i for i in placed if SHORT.warmup_s <= w.arr_t[i] < SHORT.duration_s]
        assert len(measured) == m["placed"] == m["jobs"] - m["unschedulable"], pol
        # Independent sweep: +request at start, -request at end (ends first at a tie).
        events = []
        for i, j, t in m["placements"]:
            assert math.isfinite(m["end"][i]) and m["end"][i] >= t, (pol, i)
            events.append((t, 1, j, w.jobs[i].req))
            events.append((m["end"][i], 0, j, -w.jobs[i].req))
        events.sort(key=lambda e: (e[0], e[1]))
        reserved = np.zeros_like(w.alloc)
        worst = 0.0
        for _t, _k, j, delta in events:
            reserved[j] += delta
            assert np.all(reserved[j] <= w.alloc[j] + 1e-9), (pol, j, reserved[j], w.alloc[j])
            worst = max(worst, float(np.max(reserved[j] - w.alloc[j])))
        assert np.all(np.abs(reserved) < 1e-9), pol
        # the cluster was really under pressure: some node was full on some resource
        assert m["max_fill"] == pytest.approx(1.0), pol


def _passes(w, job, j) -> list:
    """The filters (other than resources and spread) node j fails for job,
    read from the world's labels by plain Python."""
    bad = []
    if not w.ready[j]:
        bad.append("ready")
    for key, value in job.selector:
        if w.labels[key][j] != value:
            bad.append("selector")
    for key, op, values in job.affinity:
        v = int(w.labels[key][j])
        ok = {
            "In": v in values,
            "NotIn": v not in values,
            "Exists": v >= 0,
            "DoesNotExist": v < 0,
        }[op]
        if not ok:
            bad.append("affinity")
    if int(w.taints[j]) & ~job.tolerations:
        bad.append("taints")
    if job.zones is not None and int(w.zone[j]) not in job.zones:
        bad.append("zone")
    return bad


def test_every_placement_passes_every_filter(traced):
    w, runs = traced
    for pol, m in runs.items():
        per_group: dict = {}
        events = []
        for i, j, t in m["placements"]:
            job = w.jobs[i]
            assert _passes(w, job, j) == [], (pol, i, j)
            if job.group >= 0:
                events.append((t, 1, job.group, j, job.spread))
                events.append((m["end"][i], 0, job.group, j, job.spread))
        # group spread: never more than `spread` jobs of a group on a node at once
        for _t, k, g, j, spread in sorted(events, key=lambda e: (e[0], e[1])):
            per_group[(g, j)] = per_group.get((g, j), 0) + (1 if k else -1)
            assert per_group[(g, j)] <= spread, (pol, g, j)
        assert events, "no grouped job: the spread filter went untested"


def test_policies_meet_the_same_world_and_differ(traced):
    w, runs = traced
    jobs = {m["jobs"] for m in runs.values()}
    assert jobs == {int(((w.arr_t >= 100) & (w.arr_t < 500)).sum())}
    # ours prefers the home zone (locality 20%); kube_like and random do not look
    r = {p: runs[p]["zone_local_pct"] for p in runs}
    assert r["ours_argmax"] > r["kube_like"] + 10 and r["ours_argmax"] > r["random_feasible"] + 10
    assert len({runs[p]["p99_s"] for p in runs}) > 1


def test_same_seed_same_metrics():
    sc = replace(SHORT, n_nodes=24, duration_s=300.0, warmup_s=50.0)
    a = run(build_world(sc, 5), "ours", np.random.default_rng(9))
    b = run(build_world(sc, 5), "ours", np.random.default_rng(9))
    assert a == b
    c = run(build_world(sc, 6), "ours", np.random.default_rng(9))
    assert c["p99_s"] != a["p99_s"]


# --------------------------------------------------------------------------
# Scope escalation in the simulator


@pytest.fixture(scope="module")
def scope_runs():
    sc = quick(PLACEMENT_SCENARIOS["scope"])
    w = build_world(sc, 2)
    return w, {v: run(w, v, np.random.default_rng(2), trace=True) for v in SCOPE_VARIANTS}


def test_scope_levels_follow_the_linear_rule(scope_runs):
    _w, runs = scope_runs
    decisions = runs["escalating"]["decisions"]
    assert len(decisions) > 1000
    levels = {OWN: 0, NEIGHBOURS: 0, EVERY: 0}
    for _i, _t, ratio, wide, every, u, lvl in decisions:
        if ratio is None:
            assert (wide, every, lvl) == (0.0, 0.0, OWN)
            continue
        # the shares are the ramps of the default thresholds at the ratio seen
        assert every == pytest.approx(escalation_share(ratio, 1.7, 2.7))
        assert wide == pytest.approx(max(escalation_share(ratio, 1.5, 2.5), every))
        assert lvl == (EVERY if u < every else NEIGHBOURS if u < wide else OWN)
        levels[lvl] += 1
    assert all(v > 50 for v in levels.values()), levels  # every level was exercised
    # own_zone never widens
    assert all(d[6] == OWN for d in runs["own_zone"]["decisions"])


def test_jobs_move_out_during_the_spike_and_come_back(scope_runs):
    _w, runs = scope_runs
    esc = {(b["t0"], b["t1"]): b for b in runs["escalating"]["bins"]}
    own = {(b["t0"], b["t1"]): b for b in runs["own_zone"]["bins"]}
    before, peak, after = (0.0, 100.0), (500.0, 600.0), (800.0, 900.0)
    assert esc[before]["widened"] == 0.0 and esc[before]["out_of_zone"] == 0.0
    assert esc[peak]["widened"] > 0.9 and esc[peak]["out_of_zone"] > 0.5
    assert esc[after]["widened"] < 0.05 and esc[after]["out_of_zone"] < 0.05
    assert all(b["out_of_zone"] == 0.0 for b in own.values())
    # moving out shortens the spiking zone's tail
    assert runs["escalating"]["spike_zone_p99_s"] < runs["own_zone"]["spike_zone_p99_s"]


# --------------------------------------------------------------------------
# Filters and score parts, as tables


def _cluster():
    # node:     0        1         2          3
    # alloc:  8/32/0   16/64/0   32/256/4   8/32/0 (not ready)
    # labels: disk ssd, hdd, ssd, ssd; arch amd64, arm64, amd64, amd64
    return Cluster(
        alloc=np.array([[8, 32, 0], [16, 64, 0], [32, 256, 4], [8, 32, 0]], float),
        reserved=np.array([[6, 8, 0], [4, 16, 0], [0, 0, 0], [0, 0, 0]], float),
        ready=np.array([True, True, True, False]),
        zone=np.array([0, 1, 0, 1]),
        labels={
            "disk": np.array([0, 1, 0, 0]),
            "arch": np.array([0, 1, 0, 0]),
            "data": np.array([3, -1, 3, 5]),
        },
        taints=np.array([0, SPOT_TAINT, GPU_TAINT, 0]),
        price=np.array([1.0, 0.5, 2.0, 1.0]),
        hb_cpu=np.array([0.9, 0.25, 0.0, 0.0]),
        hb_reserved_cpu=np.array([6.0, 2.0, 0.0, 0.0]),
        group_count={7: np.array([0, 2, 0, 0])},
    )


@pytest.mark.parametrize(
    "job, fits, eliminated",
    [
        # 3 cpu: node 0 has 8 - 6 = 2 free (out), node 3 is not ready, node 2's gpu taint
        (JobSpec(req=np.array([3.0, 4.0, 0.0]), tolerations=SPOT_TAINT), [1],
         {"ready": 1, "resources": 1, "taints": 1}),
        # the spot taint of node 1 is not tolerated either
        (JobSpec(req=np.array([1.0, 4.0, 0.0])), [0],
         {"ready": 1, "taints": 2}),
        (JobSpec(req=np.array([1.0, 4.0, 1.0]), tolerations=GPU_TAINT), [2],
         {"ready": 1, "resources": 2}),
        (JobSpec(req=np.array([1.0, 1.0, 0.0]), selector=(("disk", 1),), tolerations=3), [1],
         {"ready": 1, "selector": 2}),
        (JobSpec(req=np.array([1.0, 1.0, 0.0]), affinity=(("arch", "NotIn", (1,)),),
                 tolerations=3), [0, 2], {"ready": 1, "affinity": 1}),
        (JobSpec(req=np.array([1.0, 1.0, 0.0]), affinity=(("data", "DoesNotExist", ()),),
                 tolerations=3), [1], {"ready": 1, "affinity": 2}),
        (JobSpec(req=np.array([1.0, 1.0, 0.0]), tolerations=3, zones=(1,)), [1],
         {"ready": 1, "zone": 2}),
        # group 7 has 2 jobs on node 1 already: spread 2 is full there
        (JobSpec(req=np.array([1.0, 1.0, 0.0]), tolerations=3, group=7, spread=2), [0, 2],
         {"ready": 1, "spread": 1}),
    ],
)  # fmt: skip
def test_filters_table(job, fits, eliminated):
    c = _cluster()
    counts: dict = {}
    assert np.flatnonzero(filter_nodes(c, job, counts)).tolist() == fits
    assert {k: v for k, v in counts.items() if v} == eliminated
    assert set(counts) == set(FILTERS) and sum(counts.values()) == 4 - len(fits)


def test_score_parts_table():
    c = _cluster()
    job = JobSpec(
        req=np.array([2.0, 8.0, 0.0]),
        preferred=((3.0, "disk", "In", (0,)), (1.0, "arch", "In", (1,))),
        prefer_zones=(0,),
        data=3,
    )
    p = score_parts(c, job, np.array([0, 1, 2]))
    # fit: mean over cpu and mem of (alloc - reserved - request) / alloc (gpu not requested)
    #   node 0: ((8-6-2)/8 + (32-8-8)/32) / 2 = (0 + 0.5) / 2 = 0.25
    #   node 1: ((16-4-2)/16 + (64-16-8)/64) / 2 = (0.625 + 0.625) / 2 = 0.625
    #   node 2: ((32-0-2)/32 + (256-0-8)/256) / 2 = (0.9375 + 0.96875) / 2 = 0.953125
    np.testing.assert_allclose(p[0], [0.25, 0.625, 0.953125])
    # affinity: matched weight / 4: node 0 ssd+amd64 3/4, node 1 hdd+arm64 1/4, node 2 3/4
    np.testing.assert_allclose(p[1], [0.75, 0.25, 0.75])
    # load: 1 - clip(hb_cpu + (reserved cpu - reserved at heartbeat) / cores)
    #   node 0: 1 - (0.9 + 0/8) = 0.1; node 1: 1 - (0.25 + 2/16) = 0.625; node 2: 1 - 0 = 1
    np.testing.assert_allclose(p[2], [0.1, 0.625, 1.0])
    # locality: mean of zone part (zone 0 preferred) and data part (data set 3)
    #   node 0: (1 + 1) / 2 = 1; node 1: (0 + 0) / 2 = 0; node 2: (1 + 1) / 2 = 1
    np.testing.assert_allclose(p[3], [1.0, 0.0, 1.0])
    # cost: cheapest price (0.5) / price: 0.5, 1, 0.25
    np.testing.assert_allclose(p[4], [0.5, 1.0, 0.25])
    # total, weights 0.3 / 0.2 / 0.2 / 0.2 / 0.1:
    #   node 0: 0.075 + 0.15 + 0.02 + 0.2 + 0.05 = 0.495
    #   node 1: 0.1875 + 0.05 + 0.125 + 0 + 0.1 = 0.4625
    #   node 2: 0.2859375 + 0.15 + 0.2 + 0.2 + 0.025 = 0.8609375
    np.testing.assert_allclose(np.asarray(WEIGHTS) @ p, [0.495, 0.4625, 0.8609375])
    rng = np.random.default_rng(0)
    idx = np.array([0, 1, 2])
    assert PLACEMENT_POLICIES["ours_argmax"](rng).choose(c, job, idx) == 2
    # kube_like: LeastAllocated alone, the same fit on cpu and mem: node 2 too
    assert PLACEMENT_POLICIES["kube_like"](rng).choose(c, job, idx) == 2
    # ours: uniformly among the 4 best, here all three
    seen = {PLACEMENT_POLICIES["ours"](rng).choose(c, job, idx) for _ in range(60)}
    assert seen == {0, 1, 2}


# --------------------------------------------------------------------------
# The CLI


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("simplace")
    js, md = d / "sim.json", d / "R.md"
    argv = ["--quick", "--scenario", "placement", "--scenario", "scope", "--workers", "1"]
    assert main([*argv, "--json", str(js), "--md", str(md)]) == 0
    return json.loads(js.read_text()), md.read_text()


def test_cli_placement_tables(cli_run):
    doc, text = cli_run
    assert doc["scenarios"] == {} and set(doc["placement"]) == {"placement", "scope"}
    assert "--scenario placement --scenario scope" in doc["meta"]["command"]
    assert set(doc["placement"]["placement"]["policies"]) == set(PLACEMENT_POLICIES)
    assert set(doc["placement"]["scope"]["policies"]) == set(SCOPE_VARIANTS)
    for pol, m in doc["placement"]["placement"]["policies"].items():
        assert m["max_fill"] <= 1.0 and m["reserved_left"] == 0.0, pol
        assert m["jobs"] == m["placed"] + m["unschedulable"], pol
        assert 0 < m["p50_s"] <= m["p99_s"] <= m["p999_s"], pol
        assert 0 < m["util_cpu_pct"] <= 100 and m["by_seed"]["p99_s"] == [m["p99_s"]]
    assert "## Placement quality" in text and "## Routing quality" not in text
    assert "| ours |" in text and "| 500-600 |" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scenario", "baseline", "--policy", "ours"], "names no routing policy"),
        (["--scenario", "placement", "--policy", "random"], "names no placement policy"),
    ],
)
def test_cli_policy_family_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
