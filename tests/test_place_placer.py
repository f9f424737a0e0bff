"""`clients.Placer` on an engine driven in this process (`PlaceEngine`: the
real ingest and tick worker code): node facts from heartbeats, the compiled
label/zone/taint constraints, explain and `Unschedulable`, reservations and
their release, deadlines and dead leases."""

from __future__ import annotations

import time

import numpy as np
import pytest

from clients import Affinity, Job, Placer, Unschedulable
from shm_engine.core import placement as core_placement
from shm_engine.core.config import Config
from shm_engine.core.errors import ClaimAlreadyReleased, ReservationLimitReached
from tests.support.placement import PlaceEngine, node_heartbeat


@pytest.fixture
def engine(shm_name):
    eng = PlaceEngine(shm_name, capacity=32, max_reservations=8)
    try:
        yield eng
    finally:
        eng.close()


def _placer(eng, **kw) -> Placer:
    return Placer.attach(eng.name, rng=np.random.default_rng(1), **kw)


def _fleet(eng):
    eng.send(
        node_heartbeat(
            "a", resources={"cpu": 4, "mem_gb": 8}, labels={"disk": "ssd", "rack": "r1"}, zone="z1"
        ),
        node_heartbeat("b", resources={"cpu": 2, "mem_gb": 8}, labels={"disk": "hdd"}, zone="z1"),
        node_heartbeat(
            "c",
            resources={"cpu": 8, "mem_gb": 16, "gpu": 1},
            taints=["gpu=true:NoSchedule"],
            labels={"disk": "ssd", "gpu": "a100"},
            zone="z2",
        ),
        node_heartbeat("d", resources={"cpu": 1}, zone="z2"),
    )
    eng.tick()


# ------------------------------------------------------------ node facts --
def test_heartbeat_resources_are_stored_in_fixed_point(engine):
    # cpu scale 1000: 2.5 CPUs = 2500; mem_gb scale 1000; gpu scale 1: 1.4 -> 1;
    # names the engine does not place (disk_tb) are not kept.
    engine.send(
        node_heartbeat("a", resources={"cpu": 2.5, "mem_gb": 0.0015, "gpu": 1.4, "disk_tb": 3})
    )
    assert engine.views.table.alloc[0, :3].tolist() == [2500, 2, 1]
    # A later heartbeat without resources: the node has none.
    engine.send(node_heartbeat("a"))
    assert engine.views.table.alloc[0, :3].tolist() == [0, 0, 0]


def test_taints_and_labels_are_the_node_meta(engine):
    engine.send(
        node_heartbeat("a", labels={"k": "v"}, taints=["x=1:PreferNoSchedule", "a:NoSchedule"])
    )
    reg = engine.views.registry
    raw = bytes(reg.labels[0, : reg.labels_len[0]])
    assert raw == b'{"k":"v"}\na=:NoSchedule,x=1:PreferNoSchedule'


def test_a_bad_taint_rejects_the_heartbeat_as_bad_field(engine):
    before = int(engine.views.header.rejects[5])
    assert engine.send(node_heartbeat("a", taints=["gpu=true:NoExecute"])) == 0
    assert int(engine.views.header.rejects[5]) == before + 1  # bad_field


# ------------------------------------------------------ constraints (table) --
CASES = [
    # (job, nodes that fit, why)
    (Job(requests={"cpu": 1}), {"a", "b", "d"}, "c is tainted gpu=true:NoSchedule"),
    (Job(requests={"cpu": 1}, tolerations=["gpu=true:NoSchedule"]), {"a", "b", "c", "d"}, ""),
    (Job(requests={"cpu": 1}, tolerations=["gpu:NoSchedule"]), {"a", "b", "c", "d"}, "any value"),
    (Job(requests={"cpu": 1}, tolerations=["gpu"]), {"a", "b", "c", "d"}, "any value, effect"),
    (
        Job(requests={"cpu": 1}, tolerations=["gpu=false:NoSchedule"]),
        {"a", "b", "d"},
        "other value",
    ),
    (Job(requests={"cpu": 3}), {"a"}, "cpu: a 4, b 2, d 1"),
    (Job(requests={"gpu": 1}, tolerations=["gpu"]), {"c"}, "only c has a gpu"),
    (Job(selector={"disk": "ssd"}), {"a"}, "c has ssd but is tainted"),
    (Job(affinity=[Affinity("disk", "In", ("ssd", "hdd"))]), {"a", "b"}, ""),
    (Job(affinity=[Affinity("disk", "NotIn", ("ssd",))]), {"b", "d"}, "absent is NotIn"),
    (Job(affinity=[("rack", "Exists")]), {"a"}, ""),
    (Job(affinity=[("disk", "DoesNotExist")]), {"d"}, ""),
    (Job(zone="z2", tolerations=["gpu"]), {"c", "d"}, ""),
    (Job(zone=["z1", "z2"]), {"a", "b", "d"}, ""),
]


@pytest.mark.parametrize("job, fit, why", CASES, ids=[str(i) for i in range(len(CASES))])
def test_each_constraint_selects_the_nodes_it_should(engine, job, fit, why):
    _fleet(engine)
    with _placer(engine, config=Config.from_dict({"placement": {"top_k": 8}}).placement) as pl:
        exp = pl.place(job, explain=True).explain
        assert exp is not None
        assert {c.node for c in exp.top} == fit, why
        assert exp.feasible == len(fit) and exp.nodes == 4


def test_zones_of_a_scope_decision_narrow_the_job(engine):
    _fleet(engine)
    with _placer(engine) as pl:
        p = pl.place(Job(requests={"cpu": 1}), zones=["z2"])
        assert p.node == "d" and p.zone == "z2"
        p.release()
        with pytest.raises(Unschedulable, match=r"^0/4 nodes fit: 4 zone$"):  # z1 and z2: none
            pl.place(Job(requests={"cpu": 1}, zone="z1"), zones=["z2"])


def test_preferred_affinity_and_prefer_no_schedule_shape_the_affinity_part(engine):
    engine.send(
        node_heartbeat("a", resources={"cpu": 4}, labels={"disk": "ssd"}),
        node_heartbeat("b", resources={"cpu": 4}, labels={"disk": "hdd"}),
        node_heartbeat(
            "c", resources={"cpu": 4}, labels={"disk": "ssd"}, taints=["x:PreferNoSchedule"]
        ),
    )
    engine.tick()
    job = Job(
        affinity=[Affinity("disk", "In", ("ssd",), weight=3), Affinity("disk", "Exists", weight=1)]
    )
    with _placer(engine) as pl:
        top = {c.node: c.parts["affinity"] for c in pl.place(job, explain=True).explain.top}
    # a: (3 + 1) / 4 = 1; b: 1 / 4 = 0.25; c: 1 * 0.5 (one PreferNoSchedule taint) = 0.5
    assert top == {"a": 1.0, "b": 0.25, "c": 0.5}


def test_locality_and_cost_parts(engine):
    engine.send(
        node_heartbeat(
            "a", resources={"cpu": 4}, zone="z1", labels={"data/logs": "1", "cost": "2"}
        ),
        node_heartbeat(
            "b", resources={"cpu": 4}, zone="z2", labels={"data/logs": "1", "data/img": "1"}
        ),
        node_heartbeat("c", resources={"cpu": 4}, zone="z2", labels={"cost": "8"}),
    )
    engine.tick()
    job = Job(prefer_zones=["z1"], data=["logs", "img"])
    with _placer(engine) as pl:
        top = {c.node: c.parts for c in pl.place(job, explain=True).explain.top}
    # locality = mean(zone match, data share): a (1 + 1/2) / 2 = 0.75,
    # b (0 + 2/2) / 2 = 0.5, c (0 + 0) / 2 = 0
    assert {n: p["locality"] for n, p in top.items()} == {"a": 0.75, "b": 0.5, "c": 0.0}
    # cost = 1 - cost / max cost (8): a 1 - 2/8 = 0.75, b (none) 1, c 0
    assert {n: p["cost"] for n, p in top.items()} == {"a": 0.75, "b": 1.0, "c": 0.0}


# --------------------------------------------------- explain, unschedulable --
def test_unschedulable_names_the_filters_and_counts(engine):
    _fleet(engine)
    engine.send(node_heartbeat("e", cpu=0.99, resources={"cpu": 64}))  # tripped: cpu >= max_cpu
    engine.tick()
    with _placer(engine) as pl:
        with pytest.raises(Unschedulable) as err:
            pl.place(Job(requests={"cpu": 5}), explain=True)
    # a (4), b (2), d (1) lack cpu; c is tainted; e is OVERLOADED.
    # Biggest count first; ties in filter order (ready, then taints, ...).
    assert str(err.value) == (
        "0/5 nodes fit: 3 insufficient cpu, 1 not ready, 1 taint gpu=true:NoSchedule"
    )
    assert err.value.counts == {
        "insufficient cpu": 3,
        "taint gpu=true:NoSchedule": 1,
        "not ready": 1,
    }
    text = str(err.value.explain)
    assert text.splitlines()[0] == "0/5 nodes fit"
    assert "3  insufficient cpu" in text
    claims = engine.claims.views.header
    assert int(claims.unschedulable[0]) == 1
    assert int(claims.unsched_reasons[8]) == 1  # insufficient resource 0 (cpu)


def test_explain_lists_the_top_candidates_with_their_parts(engine):
    _fleet(engine)
    with _placer(engine) as pl:
        p = pl.place(Job(requests={"cpu": 1}), explain=True)
        exp = p.explain
        assert exp is not None and exp.nodes == 4 and exp.feasible == 3
        assert exp.eliminated == {"taint gpu=true:NoSchedule": 1}
        assert [c.total for c in exp.top] == sorted((c.total for c in exp.top), reverse=True)
        assert set(exp.top[0].parts) == {"fit", "affinity", "load", "locality", "cost"}
        assert p.node in {c.node for c in exp.top}
        assert p.parts == next(c.parts for c in exp.top if c.node == p.node)
        p.release()


def test_request_of_an_unknown_resource_is_an_error(engine):
    _fleet(engine)
    with _placer(engine) as pl, pytest.raises(ValueError, match="request 'tpu'"):
        pl.place(Job(requests={"tpu": 1}))


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(requests={"cpu": -1}), "must be a finite number >= 0"),
        (dict(requests={"cpu": True}), "is not a number"),
        (dict(affinity=[("k", "Near", ("x",))]), "affinity op 'Near'"),
        (dict(affinity=[("k", "In")]), "needs at least one value"),
        (dict(tolerations=["x:NoExecute"]), "effect 'NoExecute'"),
        (dict(spread=2), "spread needs a group"),
        (dict(group="g", spread=-1), "spread = -1"),
        (dict(deadline_s=0), "deadline_s = 0"),
    ],
)
def test_bad_jobs_are_refused_with_the_field(kw, message):
    with pytest.raises(ValueError, match=message):
        Job(**kw)


# ------------------------------------------------------------ reservations --
def test_place_reserves_and_release_returns(engine):
    _fleet(engine)
    cv = engine.claims.views
    gens = engine.views.registry.slot_gen
    with _placer(engine) as pl:
        p = pl.place(Job(requests={"cpu": 3, "mem_gb": 2}))
        assert p.node == "a" and p.reserved == {"cpu": 3.0, "mem_gb": 2.0}
        units = core_placement.reserved_units(cv, gens, 4)
        assert units[p.slot, :2].tolist() == [3000, 2000]
        assert core_placement.open_reservations(cv, gens, 4)[p.slot] == 1
        # a has 1 cpu left: a second 3-cpu job fits nowhere.
        with pytest.raises(Unschedulable, match="4 nodes fit: 3 insufficient cpu"):
            pl.place(Job(requests={"cpu": 3}))
        assert pl.reader.in_flight("a") == 1  # a reservation is a claim
        assert p.release(ok=False) is True
        assert core_placement.reserved_units(cv, gens, 4).sum() == 0
        assert pl.reader.in_flight("a") == 0 and pl.reader.feedback("a").err == 1
        with pytest.raises(ClaimAlreadyReleased):
            p.release()
    assert int(cv.header.placements[0]) == 1 and int(cv.header.reservations_released[0]) == 1


def test_abandon_returns_the_reservation_and_counts_no_outcome(engine):
    _fleet(engine)
    cv = engine.claims.views
    gens = engine.views.registry.slot_gen
    with _placer(engine) as pl:
        p = pl.place(Job(requests={"cpu": 3}))
        dropped = int(cv.header.claims_dropped[0])
        assert p.abandon() is True
        assert core_placement.reserved_units(cv, gens, 4).sum() == 0
        fb = pl.reader.feedback("a")
        assert (fb.in_flight, fb.ok, fb.err) == (0, 0, 0)  # neither credited nor blamed
        assert int(cv.header.claims_dropped[0]) == dropped + 1
        with pytest.raises(ClaimAlreadyReleased):
            p.abandon()
        with pytest.raises(ClaimAlreadyReleased):
            p.release()
        q = pl.place(Job(requests={"cpu": 3}))
        q.release()
        with pytest.raises(ClaimAlreadyReleased):
            q.abandon()


def test_group_spread_limits_placements_per_node(engine):
    engine.send(*(node_heartbeat(n, resources={"cpu": 8}) for n in "ab"))
    engine.tick()
    job = Job(requests={"cpu": 1}, group="web", spread=2)
    with _placer(engine) as pl:
        held = [pl.place(job) for _ in range(4)]
        assert sorted(p.node for p in held) == ["a", "a", "b", "b"]
        with pytest.raises(Unschedulable, match="0/2 nodes fit: 2 spread"):
            pl.place(job)
        held.pop().release()
        again = pl.place(job)
        held.append(again)
        for p in held:
            p.release()


def test_the_reservation_limit_of_a_process(engine):
    engine.send(node_heartbeat("a", resources={"cpu": 64}))
    engine.tick()
    with _placer(engine) as pl:
        held = [pl.place(Job(requests={"cpu": 1})) for _ in range(8)]  # max_reservations
        with pytest.raises(ReservationLimitReached, match="8 open reservations"):
            pl.place(Job(requests={"cpu": 1}))
        held.pop().release()
        held.append(pl.place(Job(requests={"cpu": 1})))
        for p in held:
            p.release()


def test_a_reservation_past_its_deadline_is_returned_by_the_tick_worker(engine):
    engine.send(node_heartbeat("a", resources={"cpu": 4}))
    engine.tick()
    cv = engine.claims.views
    gens = engine.views.registry.slot_gen
    with _placer(engine) as pl:
        short = pl.place(Job(requests={"cpu": 1}, deadline_s=0.001))
        keep = pl.place(Job(requests={"cpu": 2}, deadline_s=3600))
        t_end = time.monotonic() + 5
        while time.monotonic_ns() <= short_deadline(cv) and time.monotonic() < t_end:
            pass  # the deadline is 1 ms away
        engine.ticker.check_leases(time.monotonic())
        assert core_placement.reserved_units(cv, gens, 1)[0, 0] == 2000
        assert int(cv.header.reservations_expired[0]) == 1
        assert short.release() is False  # the engine had returned it
        assert keep.release() is True
        assert core_placement.reserved_units(cv, gens, 1).sum() == 0


def short_deadline(cv) -> int:
    d = cv.reservations[:, :, 2]
    return int(d[d > 0].min())


def test_a_forgotten_node_takes_its_reservations_with_it(engine):
    engine.send(node_heartbeat("a", resources={"cpu": 4}))
    engine.tick()
    gens = engine.views.registry.slot_gen
    cv = engine.claims.views
    with _placer(engine) as pl:
        p = pl.place(Job(requests={"cpu": 4}))
        engine.ingest.registry.free(p.slot)
        engine.ingest._slot_of.clear()
        engine.send(node_heartbeat("z", resources={"cpu": 4}))  # takes the slot anew
        engine.tick()
        assert core_placement.reserved_units(cv, gens, 1).sum() == 0  # the old tag counts 0
        q = pl.place(Job(requests={"cpu": 4}))
        assert q.node == "z"
        assert p.release() is False  # stale: nothing of z's is touched
        assert core_placement.reserved_units(cv, gens, 1)[0, 0] == 4000
        q.release()


def test_a_revoked_lease_leaves_old_placements_stale_and_new_ones_intact(engine):
    from clients import LeaseRevoked
    from shm_engine.core import claims as core_claims

    engine.send(node_heartbeat("a", resources={"cpu": 4}))
    engine.tick()
    cv = engine.claims.views
    gens = engine.views.registry.slot_gen
    with _placer(engine) as pl:
        old = pl.place(Job(requests={"cpu": 1}))
        # The engine takes the lease for dead (as across pid namespaces) and
        # returns its reservations.
        core_claims.reap_dead_leases(
            cv, 1, time.monotonic(), alive=lambda ident: False,
            before_free=core_placement.return_lease_reservations,
        )  # fmt: skip
        assert core_placement.reserved_units(cv, gens, 1).sum() == 0
        with pytest.raises(LeaseRevoked):
            pl.place(Job(requests={"cpu": 1}))
        new = pl.place(Job(requests={"cpu": 2}))  # a new lease (maybe the same index)
        assert old.release() is False  # stale: it must not return the new one's entry
        assert core_placement.reserved_units(cv, gens, 1)[0, 0] == 2000
        assert new.release() is True
        assert core_placement.reserved_units(cv, gens, 1).sum() == 0


def test_two_placers_of_one_process_share_the_lease_and_its_entries(engine):
    engine.send(node_heartbeat("a", resources={"cpu": 64}))
    engine.tick()
    gens = engine.views.registry.slot_gen
    cv = engine.claims.views
    with _placer(engine) as one, _placer(engine) as two:
        held = []
        for i in range(8):  # max_reservations, taken alternately
            held.append((one if i % 2 else two).place(Job(requests={"cpu": 1})))
        with pytest.raises(ReservationLimitReached):
            one.place(Job(requests={"cpu": 1}))
        assert core_placement.reserved_units(cv, gens, 1)[0, 0] == 8000
        for p in held:
            assert p.release() is True
        assert core_placement.reserved_units(cv, gens, 1).sum() == 0


def test_nodes_lost_to_other_schedulers_are_named_when_none_is_left(engine):
    _fleet(engine)
    with _placer(engine) as pl:
        pl.place(Job(requests={"cpu": 1})).release()  # compiled and warm
        # Every reservation CAS finds the capacity taken (as if other
        # schedulers were faster each time).
        pl._reserve_fn = lambda *args: core_placement.NO_FIT
        with pytest.raises(Unschedulable) as err:
            pl.place(Job(requests={"cpu": 1}))
    assert str(err.value) == (
        "0/4 nodes fit: 3 taken by other schedulers, 1 taint gpu=true:NoSchedule"
    )
    h = engine.claims.views.header
    assert int(h.unsched_reasons[6]) == 1 and int(h.place_conflicts[0]) == 3
