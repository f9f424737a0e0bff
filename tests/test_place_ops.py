"""Placement for operators: ``shm-engine place``, and the capacity part of
``status`` and the metrics, on an engine driven in this process."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from clients import Job, Placer
from shm_engine.ops.cli import main
from shm_engine.ops.metrics import EngineCollector
from shm_engine.ops.status import read_status, render
from tests.support.placement import PlaceEngine, node_heartbeat


@pytest.fixture
def engine(shm_name):
    eng = PlaceEngine(shm_name, capacity=16, max_reservations=8)
    try:
        eng.send(
            node_heartbeat(
                "a", resources={"cpu": 4, "mem_gb": 8}, zone="z1", labels={"disk": "ssd"}
            ),
            node_heartbeat("b", resources={"cpu": 2, "mem_gb": 4}, zone="z2"),
            node_heartbeat(
                "c", resources={"cpu": 8, "mem_gb": 16}, zone="z2", taints=["gpu=true:NoSchedule"]
            ),
        )
        eng.tick()
        yield eng
    finally:
        eng.close()


def test_place_command_places_explains_and_releases(engine, capsys):
    rc = main(["place", "--name", engine.name, "--cpu", "2", "--mem-gb", "4", "--explain"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("placed on ")
    assert "2/3 nodes fit" in out and "1  taint gpu=true:NoSchedule" in out
    assert int(engine.claims.views.header.reservations_released[0]) == 1  # released at once


def test_place_command_selector_toleration_json(engine, capsys):
    rc = main(
        [
            "place",
            "--name",
            engine.name,
            "--cpu",
            "5",
            "--toleration",
            "gpu=true:NoSchedule",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["node"] == "c" and out["reserved"] == {"cpu": 5.0}
    rc = main(["place", "--name", engine.name, "--selector", "disk=ssd", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["node"] == "a"


def test_place_command_unschedulable_exits_1_with_the_reasons(engine, capsys):
    rc = main(["place", "--name", engine.name, "--cpu", "16", "--explain"])
    out = capsys.readouterr().out
    assert rc == 1
    assert out.splitlines()[0] == (
        "unschedulable: 0/3 nodes fit: 2 insufficient cpu, 1 taint gpu=true:NoSchedule"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--request", "cpu"], "--request 'cpu': write KEY=VALUE"),
        (["--request", "cpu=x"], "--request cpu='x': the amount is not a number"),
        (["--cpu", "-1"], "request cpu=-1.0 must be a finite number >= 0"),
        (["--request", "tpu=1"], "request 'tpu': engine"),
    ],
)
def test_place_command_refuses_a_bad_request(engine, capsys, argv, message):
    assert main(["place", "--name", engine.name, *argv]) == 2
    assert message in capsys.readouterr().err


def test_status_shows_capacity_reserved_free_per_resource_and_zone(engine):
    with Placer.attach(engine.name, rng=np.random.default_rng(0)) as pl:
        p = pl.place(Job(requests={"cpu": 1.5, "mem_gb": 2}, zone="z2"))  # b or... z2 only
        with pytest.raises(Exception, match="nodes fit"):
            pl.place(Job(requests={"cpu": 64}))
        engine.ticker.check_leases(time.monotonic())
        s = read_status(engine.name)
        pls = s["placement"]
        # cpu: 4 + 2 + 8 = 14 capacity, 1.5 reserved; mem 8 + 4 + 16 = 28, 2 reserved
        assert pls["resources"]["cpu"] == {"capacity": 14.0, "reserved": 1.5, "free": 12.5}
        assert pls["resources"]["mem_gb"] == {"capacity": 28.0, "reserved": 2.0, "free": 26.0}
        assert pls["resources"]["gpu"] == {"capacity": 0.0, "reserved": 0.0, "free": 0.0}
        assert pls["zones"]["z1"]["cpu"] == {"capacity": 4.0, "reserved": 0.0, "free": 4.0}
        assert pls["zones"]["z2"]["cpu"]["reserved"] == 1.5
        assert pls["placements"] == 1 and pls["open"] == 1 and pls["unschedulable"] == 1
        assert pls["unschedulable_reasons"] == {"taint": 1, "insufficient_cpu": 1}
        text = render(s)
        assert "capacity cpu 12.5 free of 14 (1.5 reserved)" in text
        assert "  zone z1: free cpu 4/4, mem_gb 8/8, gpu 0/0" in text
        p.release()


def test_metrics_export_placement_series(engine):
    with Placer.attach(engine.name) as pl:
        pl.place(Job(requests={"cpu": 1})).release()
    fams = {f.name: f for f in EngineCollector(engine.name).collect()}
    cap = fams["shm_engine_placement_capacity"]
    got = {(s.labels["resource"], s.labels["zone"]): s.value for s in cap.samples}
    assert got[("cpu", "z1")] == 4.0 and got[("cpu", "z2")] == 10.0
    assert fams["shm_engine_placements"].samples[0].value == 1.0
    assert "shm_engine_placement_free" in fams and "shm_engine_placements_per_second" in fams
