"""``[placement]``: every bad value refused with its key, the defaults, and
the section recorded in the engine's segment for the schedulers."""

from __future__ import annotations

import numpy as np
import pytest

from clients import Job, Placer
from shm_engine.core.config import Config, ConfigError, load_config, render_config
from tests.support.placement import PlaceEngine, node_heartbeat


@pytest.mark.parametrize(
    "section, message",
    [
        ({"resources": {}}, r"placement\.resources has 0 names: 1\.\.8 are allowed"),
        ({"resources": {f"r{i}": 1 for i in range(9)}}, r"has 9 names"),
        ({"resources": {"cpu": 0}}, r"placement\.resources\.cpu = 0 must be in 1\.\.1000000000"),
        ({"resources": {"cpu": 1.5}}, r"placement\.resources\.cpu = 1\.5 has type float"),
        ({"resources": {"x" * 16: 1}}, r"must be 1\.\.15 bytes"),
        ({"resources": ["cpu"]}, r"placement\.resources = \[\"cpu\"\] has type array"),
        ({"fit": "best"}, r"placement\.fit = \"best\" must be one of 'least', 'most'"),
        ({"top_k": 0}, r"placement\.top_k = 0 must be in 1\.\.64"),
        ({"max_reservations": 0}, r"placement\.max_reservations = 0 must be in"),
        ({"cost_label": ""}, r"placement\.cost_label = \"\" must be 1\.\.63 bytes"),
        ({"weights": {"fit": -1}}, r"placement\.weights\.fit = -1 must be >= 0"),
        (
            {"weights": {"fit": 0, "affinity": 0, "load": 0, "locality": 0, "cost": 0}},
            r"must be > 0: the score divides by it",
        ),
    ],
)
def test_bad_placement_values_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict({"placement": section})


def test_a_file_with_placement_round_trips(tmp_path):
    cfg = Config.from_dict(
        {"placement": {"resources": {"cpu": 100, "ram": 1}, "fit": "most", "top_k": 2}}
    )
    path = tmp_path / "e.toml"
    path.write_text(render_config(cfg))
    assert 'resources = {"cpu" = 100, "ram" = 1}' in path.read_text()
    assert load_config(path) == cfg


def test_the_placer_uses_the_engine_s_placement_section(shm_name):
    cfg = Config.from_dict({"placement": {"fit": "most", "top_k": 1}})
    eng = PlaceEngine(shm_name, capacity=8, config=cfg)
    try:
        eng.send(
            node_heartbeat("empty", resources={"cpu": 8}),
            node_heartbeat("half", resources={"cpu": 8}),
        )
        eng.tick()
        with Placer.attach(shm_name, rng=np.random.default_rng(3)) as pl:
            assert pl.config == cfg.placement
            first = pl.place(Job(requests={"cpu": 4}))
            # most-allocated, top 1: bin-packs the next job onto the same node
            second = pl.place(Job(requests={"cpu": 1}))
            assert second.node == first.node
            assert second.parts["fit"] == pytest.approx((4000 + 1000) / 8000)
            first.release()
            second.release()
    finally:
        eng.close()
