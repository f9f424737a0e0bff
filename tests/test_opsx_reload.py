"""Configuration reload: validation first, score parameters from the next
tick (published with each epoch), restart-needing keys reported.

In-process: a tick worker over a private segment and the supervisor's
`Reloader` over the same header; the published scores before and after a
reload equal a replay that switches to the new parameters at that tick.
End to end: SIGHUP through `request_reload` on a running engine, with a
valid file, an invalid one (nothing changes; the error names the key and
the value) and one that changes a key needing a restart; and status.
"""

import mmap

import numpy as np
import pytest

from kernels.params import MAX_CPU, N_PARAMS, PARAM_NAMES
from shm_engine.core.config import Config, load_config
from shm_engine.core.layout import SegmentViews, layout_for
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.states import STATE_NAMES
from shm_engine.ops.reload import Reloader, changed_keys, last_reload, request_reload
from shm_engine.tick.replay import Replay
from shm_engine.tick.ticker import Ticker, warm_up
from support.engine import Engine, cli, free_port, write_config
from support.reload import BASE, NEW, RELOAD_AT, TRACE
from support.ticks import send
from support.wait import wait_until


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warm_up()


def test_reload_takes_effect_at_the_next_tick_like_replay(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text(BASE)
    cfg = load_config(path)
    layout = layout_for(8)
    views = SegmentViews(mmap.mmap(-1, layout.size), layout)
    for b in views.buffers:
        b.state.state[:] = 255
    reloader = Reloader(views.header, cfg, str(path))
    ticker = Ticker(views, cfg)
    reg = NodeRegistry(views)
    rp = Replay(cfg)
    (tmp_path / "new.toml").write_text(NEW)
    new_params = load_config(tmp_path / "new.toml").to_params()
    for k, beats in enumerate(TRACE):
        if k == RELOAD_AT:
            path.write_text(NEW)
            r = reloader.reload()
            assert (r.status, r.config_version) == ("applied", 2)
            assert r.applied == ("score.beta", "score.max_cpu") and r.restart_needed == ()
            rp.params = new_params  # replay with the new parameters from this tick
        for hb in beats:
            send(views, reg, k * 0.1, **hb)
            rp.add(dict(hb))
        reg.publish_pending()
        res = ticker.tick(k * 0.1)
        buf = views.buffers[res.epoch & 1]
        want_version = 1 if k < RELOAD_AT else 2
        assert int(buf.config_version[0]) == want_version
        np.testing.assert_array_equal(
            buf.params[:N_PARAMS], cfg.to_params() if k < RELOAD_AT else new_params
        )
        for rec in rp.step():
            s = rec["slot"]
            assert float(buf.out.score[s]) == pytest.approx(rec["score"], abs=1e-9)
            assert float(buf.out.raw[s]) == pytest.approx(rec["raw"], abs=1e-9)
            assert STATE_NAMES[int(buf.state.state[s])] == rec["state"]
    a = reg.get(b"a")
    assert STATE_NAMES[int(views.buffers[ticker.epoch & 1].state.state[a])] == "overloaded"
    assert buf.params[MAX_CPU] == 0.6


def test_invalid_file_changes_nothing_and_names_key_and_value(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text(BASE)
    header = SegmentViews(mmap.mmap(-1, layout_for(8).size), layout_for(8)).header
    reloader = Reloader(header, load_config(path), str(path))
    before = header.pending_params.copy()
    path.write_text(BASE + "[score]\nbeta = 1.5\n")
    r = reloader.reload()
    assert r.status == "invalid" and not r.ok
    assert "score.beta = 1.5" in r.error and "(0, 1]" in r.error
    assert (r.config_version, int(header.config_version[0])) == (1, 1)
    np.testing.assert_array_equal(header.pending_params, before)
    assert last_reload(header) == r
    assert int(header.reloads_done[0]) == 1


def test_restart_needed_keys_are_reported_not_applied(tmp_path):
    cfg = Config.from_dict({"engine": {"capacity": 8}})
    new = Config.from_dict(
        {"engine": {"capacity": 16}, "ingest": {"bind": "tcp://127.0.0.1:9"}, "score": {"k1": 0.4}}
    )
    live, restart = changed_keys(cfg, new)
    assert live == ["score.k1"]
    assert restart == ["engine.capacity", "ingest.bind"]


# ------------------------------------------------------------- end to end --
def test_sighup_reload_on_a_running_engine(tmp_path, shm_name, reap):
    port = free_port()
    path = write_config(tmp_path / "e.toml", port, tick_ms=20)
    text = path.read_text()
    eng = Engine(shm_name, path, tmp_path, reap)
    eng.wait_ready()
    st = eng.status()["config"]
    assert st["version"] == 1 and st["reloads"] == 0 and st["last_reload"] is None

    path.write_text(text + "\n[score]\nbeta = 0.8\nweights.cpu = 0.3\n")
    r = request_reload(shm_name, timeout=20)
    assert (r.status, r.config_version) == ("applied", 2), r
    assert r.applied == ("score.beta", "score.weights.cpu")

    def published_v2():
        c = eng.status()["config"]
        return c if c["epoch_version"] == 2 else None

    c = wait_until(published_v2, 20, "an epoch computed with config version 2")
    assert c["score"]["beta"] == 0.8 and c["score"]["weights.cpu"] == 0.3
    assert set(c["score"]) == set(PARAM_NAMES)

    # An invalid file: nothing changes, the error names the key and the value.
    path.write_text(text + "\n[score]\nt_overloaded = 0.9\n")
    r = request_reload(shm_name, timeout=20)
    assert r.status == "invalid" and r.config_version == 2
    assert "score.t_overloaded = 0.9" in r.error and "t_degraded" in r.error
    c = eng.status()["config"]
    assert c["version"] == 2 and c["score"]["beta"] == 0.8
    assert c["last_reload"]["status"] == "invalid"

    # A key that needs a restart is reported, and not applied.
    path.write_text(text.replace("capacity = 64", "capacity = 128") + "\n[score]\nbeta = 0.8\n")
    r = request_reload(shm_name, timeout=20)
    assert r.status == "applied" and r.applied == ("score.weights.cpu",)
    assert r.restart_needed == ("engine.capacity",)
    assert eng.status()["capacity"] == 64
    out = cli("status", "--name", shm_name)
    assert out.returncode == 0, out.stderr
    assert "config   version 3" in out.stdout and "needs restart: engine.capacity" in out.stdout
    assert "events   " in out.stdout and " appended, the newest 65536 kept" in out.stdout
    from shm_engine.ops.metrics import EngineCollector

    series = {
        (sample.name, sample.value)
        for fam in EngineCollector(shm_name).collect()
        for sample in fam.samples
    }
    assert ("shm_engine_config_version", 3.0) in series
    assert ("shm_engine_config_reloads_total", 3.0) in series
    assert any(name == "shm_engine_events_total" for name, _ in series)
    assert eng.stop() == 0
