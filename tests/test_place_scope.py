"""Scope escalation in `clients.Placer` (`shm_engine.core.scope` applied per
job), on an engine driven in this process, with an injected clock.

The fleet: zones z1 and z2 (neighbours, ``[scope] neighbours``) of four
64-CPU nodes each, and z3 of four 128-CPU nodes, so that with every zone
allowed z3's nodes have the best fit part (least-allocated: 127/128 >
63/64) and are the four best.  A job homed in z1 then lands, by scope level:
own -> z1; neighbours -> z2 (a widened job prefers the other zones of its
scope: locality 1 there, 0 at home); every -> z3.

Each job's draw ``u`` is on its `ScopeDecision`, so every placement is
checked against the rule (``u < every``: every zone; else ``u < wide``:
neighbours; else own) and the counts against the configured shares.
A placement released at the instant it was made (the clock not moved) adds
no outcome sample (a duration must be > 0), so the windows the tests build
stay as the arithmetic says.
"""

from __future__ import annotations

import numpy as np
import pytest

from clients import Job, PlacementNotSupported, Placer, Unschedulable
from shm_engine.core.config import Config, ScopeConfig, load_config
from shm_engine.core.segment import Segment, is_mirror
from shm_engine.feed.mirror import Mirror, MirrorSegment
from shm_engine.ops.reload import Reloader
from tests.support.placement import PlaceEngine, node_heartbeat

ZONE_OF_LEVEL = {"own": "z1", "neighbours": "z2", "every": "z3"}
SCOPE_TOML = """
[scope]
neighbours = ["z1=z2", "z2=z1"]
{extra}
"""


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _engine(name: str, tmp_path, extra: str = ""):
    """A PlaceEngine whose [scope] the engine's Reloader records in the
    header (as the supervisor does at start), and the config file path."""
    path = tmp_path / "engine.toml"
    path.write_text(SCOPE_TOML.format(extra=extra))
    cfg = load_config(path)
    eng = PlaceEngine(name, capacity=32, config=cfg)
    try:
        reloader = Reloader(eng.views.header, cfg, str(path))
    except BaseException:
        eng.close()
        raise
    return eng, reloader, path


def _fleet(eng, z1_p50_p95: tuple[float, float] | None = None):
    beats = []
    for zone, cpu in (("z1", 64), ("z2", 64), ("z3", 128)):
        for i in range(4):
            kw = {}
            if zone == "z1" and z1_p50_p95 is not None:
                kw = {"p50_ms": z1_p50_p95[0], "p95_ms": z1_p50_p95[1]}
            beats.append(node_heartbeat(f"{zone}-{i}", resources={"cpu": cpu}, zone=zone, **kw))
    assert eng.send(*beats) == 12


@pytest.fixture
def rig(shm_name, tmp_path):
    eng, reloader, path = _engine(shm_name, tmp_path)
    try:
        _fleet(eng)
        eng.tick()
        yield eng, reloader, path
    finally:
        eng.close()


HOME = Job(requests={"cpu": 1}, zone="z1")


def _spike(pl: Placer, clock: Clock) -> None:
    """20 outcomes of z1: 18 of 1 s and 2 of 2 s.  Sorted, P50 at position
    0.5 * 19 = 9.5 is 1.0; P95 at 0.95 * 19 = 18.05 is x[18] + 0.05 *
    (x[19] - x[18]) = 2.0: ratio 2.0 -> wide (2.0 - 1.5) / (2.5 - 1.5) =
    0.5, every (2.0 - 1.7) / (2.7 - 1.7) = 0.3.  Ends 2 s after the first
    evaluation, so the next call re-evaluates."""
    held = [pl.place(HOME) for _ in range(20)]
    for p in held:  # nothing known yet: every job stays home
        assert p.zone == "z1" and p.scope is not None
        assert (p.scope.level, p.scope.ratio, p.scope.basis) == ("own", None, None)
    clock.t += 1.0
    for p in held[:18]:
        p.release()
    clock.t += 1.0
    for p in held[18:]:
        p.release()


def _place_now(pl: Placer, n: int, job: Job = HOME) -> list:
    """Place and release ``n`` jobs at one instant (no new samples)."""
    out = []
    for _ in range(n):
        p = pl.place(job)
        p.release()
        out.append(p)
    return out


def _check_rule(placements, wide: float, every: float) -> dict[str, int]:
    """Every placement follows the rule for its draw; counts per level."""
    counts = {"own": 0, "neighbours": 0, "every": 0}
    for p in placements:
        d = p.scope
        assert d.wide == pytest.approx(wide) and d.every == pytest.approx(every)
        want = "every" if d.u < every else "neighbours" if d.u < wide else "own"
        assert d.level == want, d
        assert p.zone == ZONE_OF_LEVEL[want], (d, p.node)
        counts[want] += 1
    return counts


# --------------------------------------------------------------------------
def test_a_zone_whose_outcomes_spike_sends_jobs_out_at_the_share_and_back(rig):
    eng, _reloader, _path = rig
    clock = Clock()
    with Placer.attach(eng.name, rng=np.random.default_rng(7), clock=clock) as pl:
        _spike(pl, clock)
        placed = _place_now(pl, 400)
        d = placed[0].scope
        assert d.ratio == pytest.approx(2.0)
        assert (d.basis, d.samples) == ("outcomes", 20)
        counts = _check_rule(placed, wide=0.5, every=0.3)
        # 400 draws: 50% leave z1 (sd 2.5%), 30% of all go to every zone (sd 2.3%);
        # the remaining 20% stay with the neighbours.
        moved = counts["neighbours"] + counts["every"]
        assert 0.42 <= moved / 400 <= 0.58, counts
        assert 0.23 <= counts["every"] / 400 <= 0.37, counts
        assert counts["neighbours"] > 0

        # Recovery: 20 healthy outcomes of 1 s in z1 (placed there by the
        # caller's zones, which win: no scope decision).  40 samples sorted:
        # 38 of 1.0, 2 of 2.0; P50 = 1.0; P95 at 0.95 * 39 = 37.05 is
        # 1.0 + 0.05 * (2.0 - 1.0) = 1.05 <= 1.5: nobody leaves z1.
        healthy = [pl.place(HOME, zones=["z1"]) for _ in range(20)]
        assert all(p.scope is None and p.zone == "z1" for p in healthy)
        clock.t += 1.0
        for p in healthy:
            p.release()
        clock.t += 1.0  # 2 s after the last evaluation
        back = _place_now(pl, 100)
        assert back[0].scope.ratio == pytest.approx(1.05)
        assert _check_rule(back, wide=0.0, every=0.0) == {"own": 100, "neighbours": 0, "every": 0}

        # 31 s on, every sample is older than max_age_s (30): the ratio is
        # unknown again (and the zone not escalated).
        clock.t += 31.0
        late = _place_now(pl, 20)
        assert late[0].scope.samples == 0
        assert all(p.scope.ratio is None and p.zone == "z1" for p in late)


def test_heartbeat_ratios_count_until_outcomes_are_enough(shm_name, tmp_path):
    # min_samples 4: the four z1 nodes' heartbeats are enough.
    eng, _reloader, _path = _engine(shm_name, tmp_path, "min_samples = 4")
    try:
        # z1's nodes report p50 10 ms, p95 25 ms: mean p95 / mean p50 = 2.5
        # -> wide 1.0, every (2.5 - 1.7) / 1.0 = 0.8: no job stays home.
        _fleet(eng, (10.0, 25.0))
        eng.tick()
        clock = Clock(0.0)
        with Placer.attach(eng.name, rng=np.random.default_rng(3), clock=clock) as pl:
            first = _place_now(pl, 100)
            d = first[0].scope
            assert (d.ratio, d.basis, d.samples) == (2.5, "heartbeats", 4)
            counts = _check_rule(first, wide=1.0, every=0.8)
            assert counts["own"] == 0 and 0.7 <= counts["every"] / 100 <= 0.9, counts

            # The nodes recover (p95 12 ms), but heartbeats are read at most
            # every interval_s (2 s): at 1 s the old ratio holds.
            _fleet(eng, (10.0, 12.0))
            clock.t = 1.0
            assert _place_now(pl, 1)[0].scope.ratio == 2.5
            # At 2 s: four new samples; mean p95 = (4 * 25 + 4 * 12) / 8 =
            # 18.5 over mean p50 10: 1.85 -> wide 0.35, every 0.15.
            clock.t = 2.0
            mixed = _place_now(pl, 200)
            assert (mixed[0].scope.ratio, mixed[0].scope.samples) == (pytest.approx(1.85), 8)
            _check_rule(mixed, wide=0.35, every=0.15)
            # No new heartbeat since: a refresh adds nothing.
            clock.t = 4.0
            assert _place_now(pl, 1)[0].scope.samples == 8
            # New heartbeats at 31 s; the samples of 0 s are older than 30 s:
            # 8 samples of 10/12 ms remain, ratio 1.2, every job home.
            _fleet(eng, (10.0, 12.0))
            clock.t = 31.0
            home = _place_now(pl, 50)
            assert (home[0].scope.ratio, home[0].scope.samples) == (pytest.approx(1.2), 8)
            assert all(p.zone == "z1" for p in home)
            # Outcomes take over once there are min_samples of them.
            for p in [pl.place(HOME) for _ in range(4)]:
                clock.t += 0.5
                p.release()
            clock.t += 2.0
            d = _place_now(pl, 1)[0].scope
            assert (d.basis, d.samples) == ("outcomes", 4)
    finally:
        eng.close()


def test_a_reload_of_the_engine_changes_the_thresholds(rig):
    eng, reloader, path = rig
    clock = Clock()
    with Placer.attach(eng.name, rng=np.random.default_rng(11), clock=clock) as pl:
        _spike(pl, clock)
        assert _place_now(pl, 1)[0].scope.wide == pytest.approx(0.5)
        # Thresholds above the ratio 2.0: nothing escalated, from the next call.
        path.write_text(
            SCOPE_TOML.format(
                extra="federated_soft = 2.0\nfederated_hard = 3.0\n"
                "centralized_soft = 2.2\ncentralized_hard = 3.2"
            )
        )
        result = reloader.reload()
        assert result.status == "applied" and result.restart_needed == ()
        assert "scope.federated_soft" in result.applied
        assert int(eng.views.header.config_version[0]) == 2
        d = _place_now(pl, 1)[0].scope
        assert (d.ratio, d.wide, d.every) == (pytest.approx(2.0), 0.0, 0.0)
        assert pl.scope.config.federated_soft == 2.0
        # Lower ones: (2.0 - 1.0) / (2.0 - 1.0) = 1.0 wide, (2.0 - 1.2) / 1.0 = 0.8 every.
        path.write_text(
            SCOPE_TOML.format(
                extra="federated_soft = 1.0\nfederated_hard = 2.0\n"
                "centralized_soft = 1.2\ncentralized_hard = 2.2"
            )
        )
        assert reloader.reload().status == "applied"
        _check_rule(_place_now(pl, 50), wide=1.0, every=0.8)
        # An invalid file changes nothing.
        path.write_text(SCOPE_TOML.format(extra="federated_soft = 0.5"))
        bad = reloader.reload()
        assert bad.status == "invalid" and "scope.federated_soft = 0.5" in bad.error
        assert _place_now(pl, 1)[0].scope.wide == 1.0
        # Disabled: the home zone is required, no decision is made.
        path.write_text(SCOPE_TOML.format(extra="enabled = false"))
        assert reloader.reload().status == "applied"
        off = _place_now(pl, 20)
        assert all(p.scope is None and p.zone == "z1" for p in off)


def test_a_scope_record_being_written_is_read_at_a_later_call(rig):
    eng, reloader, path = rig
    h = eng.views.header
    with Placer.attach(eng.name, rng=np.random.default_rng(1), clock=Clock()) as pl:
        pl.place(HOME).release()
        path.write_text(SCOPE_TOML.format(extra="federated_soft = 1.6"))
        assert reloader.reload().status == "applied"
        h.params_seq[0] += 1  # odd: as if the supervisor were writing the block
        pl.place(HOME).release()
        assert pl.scope.config.federated_soft == 1.5  # not adopted from a torn read
        h.params_seq[0] += 1
        pl.place(HOME).release()
        assert pl.scope.config.federated_soft == 1.6


def test_a_placer_given_its_own_scope_does_not_follow_the_engine(rig):
    eng, reloader, path = rig
    clock = Clock()
    own = ScopeConfig(federated_soft=1.9, federated_hard=2.1, centralized_soft=2.4)
    with Placer.attach(eng.name, rng=np.random.default_rng(5), clock=clock, scope=own) as pl:
        _spike(pl, clock)
        # (2.0 - 1.9) / (2.1 - 1.9) = 0.5 wide; 2.0 < 2.4: every 0; no neighbours
        # configured: the federated scope is z1 alone.
        d = _place_now(pl, 1)[0].scope
        assert (d.wide, d.every) == (pytest.approx(0.5), 0.0)
        path.write_text(SCOPE_TOML.format(extra="enabled = false"))
        assert reloader.reload().status == "applied"
        assert _place_now(pl, 1)[0].scope is not None
        assert pl.scope.config == own


def test_explain_and_unschedulable_say_the_scope_and_why(rig):
    eng, _reloader, _path = rig
    clock = Clock()
    with Placer.attach(eng.name, rng=np.random.default_rng(2), clock=clock) as pl:
        with pytest.raises(Unschedulable) as err:
            pl.place(Job(requests={"cpu": 100}, zone="z1"))
        assert str(err.value) == (
            "0/12 nodes fit: 8 zone, 4 insufficient cpu (scope own (z1): z1 ratio "
            "unknown (0 outcomes, too few samples))"
        )
        _spike(pl, clock)
        for _ in range(50):  # until a draw widens the scope to the neighbours
            p = pl.place(HOME, explain=True)
            p.release()
            if p.scope.level == "neighbours":
                break
        else:
            pytest.fail("no draw in [0.3, 0.5) in 50")
        lines = str(p.explain).splitlines()
        assert lines[1] == (
            f"  scope neighbours (z1, z2): z1 P95/P50 2.00 of 20 outcomes: "
            f"share wide 0.50, every 0.30; draw {p.scope.u:.3f}"
        )
        assert p.explain.scope == p.scope
        # The explanation counts the zones the scope left out: z3.
        assert p.explain.eliminated == {"zone": 4}
        assert {c.node[:2] for c in p.explain.top} == {"z2"}


def test_explicit_zones_and_several_zones_are_not_escalated(rig):
    eng, _reloader, _path = rig
    clock = Clock()
    with Placer.attach(eng.name, rng=np.random.default_rng(4), clock=clock) as pl:
        _spike(pl, clock)
        for p in _place_now(pl, 20, Job(requests={"cpu": 1}, zone=["z1", "z3"])):
            assert p.scope is None and p.zone in ("z1", "z3")
        for _ in range(20):
            p = pl.place(HOME, zones=["z1"])
            assert p.scope is None and p.zone == "z1"
            p.release()


# ------------------------------------------------------------------ mirror --
def test_a_mirror_segment_is_refused(shm_name):
    mirror = Mirror(shm_name, [("z1", "tcp://127.0.0.1:7999")], capacity=16)
    try:
        with pytest.raises(PlacementNotSupported, match=r"is a mirror: .*owning engine"):
            Placer.attach(shm_name)
    finally:
        mirror.close()


def test_a_mirror_segment_left_by_another_process_is_not_a_mirror(rig):
    eng, _reloader, _path = rig
    left = MirrorSegment.create(eng.name, 16)
    try:
        left.views.header.creator_pid[0] += 1  # made by another (dead) process
        with Segment.attach(eng.name) as seg:
            assert not is_mirror(seg)
            left.views.header.creator_pid[0] -= 1
            assert is_mirror(seg)  # same maker as the scores segment
            left.views.header.creator_pid[0] += 1
        with Placer.attach(eng.name) as pl:
            pl.place(Job(requests={"cpu": 1})).release()
    finally:
        left.close()
        left.unlink()


def test_scope_config_that_does_not_fit_the_header_is_a_config_error():
    zones = [f"zone-{i:03d}" for i in range(40)]
    entries = [f"{z}=" + ",".join(o for o in zones if o != z) for z in zones]
    with pytest.raises(ValueError, match=r"^scope\.neighbours = .* fit the engine's header"):
        Config.from_dict({"scope": {"neighbours": entries}})
