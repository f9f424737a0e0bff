"""POST /v1/reload: the supervisor's reload through HTTP.

In-process with a real signal: this test process plays the supervisor (its
pid is the header's ``supervisor_pid``; its event loop runs the
`Reloader` on SIGHUP) and the tick worker (`Ticker` over the segment);
the app's handler calls `request_reload`, which signals it and waits for
the result.  Reloading a valid file and then an invalid one through HTTP,
the scores the API serves before and after equal a replay that switches
to the new parameters at the tick of the reload (the invalid file changes
nothing).  Also: 503 without a supervisor, 504 when it never answers, the
token, and the key and value named for each kind of configuration error.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from shm_engine.core.config import load_config
from shm_engine.core.errors import ConfigError
from shm_engine.core.events import EventSegment
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.segment import Segment
from shm_engine.http.api import Settings, build_app, config_error_field
from shm_engine.http.view import EngineView
from shm_engine.ops.reload import Reloader
from shm_engine.tick.replay import Replay
from shm_engine.tick.ticker import Ticker, warm_up
from support.reload import BASE, NEW, RELOAD_AT, TRACE
from support.ticks import send

TOKEN = "reload-t0ken"
INVALID_AT = RELOAD_AT + 2
# beta must be in (0, 1]: the whole file is refused, the running values stay.
INVALID = BASE + "[score]\nbeta = 1.5\n"


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warm_up()


def _settings(token=None, loopback=True, reload_timeout_s=20.0) -> Settings:
    return Settings(
        token=token,
        loopback=loopback,
        max_body_bytes=1 << 20,
        max_frame_bytes=1 << 20,
        max_message_bytes=2 << 20,
        max_heartbeats=8192,
        stream_interval_s=0.05,
        max_streams=4,
        tick_interval_s=0.1,
        reload_timeout_s=reload_timeout_s,
    )


async def _scenario(path, name: str) -> None:
    path.write_text(BASE)
    cfg = load_config(path)
    new_params = load_config(path.with_name("new.toml")).to_params()
    seg = Segment.create(name, 8, tick_interval_ms=100)
    log = EventSegment.create(name, 64)
    view = None
    try:
        views = seg.views
        h = views.header
        h.supervisor_pid[0] = os.getpid()
        h.supervisor_alive_mono[0] = time.monotonic()
        reloader = Reloader(h, cfg, str(path))
        ticker = Ticker(views, cfg, events=log.views)
        reg = NodeRegistry(views)
        rp = Replay(cfg)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reloader.reload)  # the supervisor's part
        view = EngineView(name)
        app, _api = build_app(view, _settings(token=TOKEN))
        auth = {"authorization": f"Bearer {TOKEN}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            for k, beats in enumerate(TRACE):
                if k == RELOAD_AT:
                    path.write_text(NEW)
                    r = await http.post("/v1/reload", headers=auth)
                    assert r.status_code == 200, r.text
                    body = r.json()
                    assert (body["status"], body["config_version"]) == ("applied", 2)
                    assert body["applied"] == ["score.beta", "score.max_cpu"]
                    assert body["restart_needed"] == [] and body["error"] is None
                    rp.params = new_params  # the replay switches at this tick
                if k == INVALID_AT:
                    path.write_text(INVALID)
                    r = await http.post("/v1/reload", headers=auth)
                    assert r.status_code == 422, r.text
                    e = r.json()["error"]
                    assert (e["code"], e["field"], e["value"]) == (
                        "invalid_config",
                        "score.beta",
                        1.5,
                    )
                    assert "score.beta = 1.5 must be in (0, 1]" in e["message"]
                    assert (e["reload"]["status"], e["reload"]["config_version"]) == ("invalid", 2)
                for hb in beats:
                    send(views, reg, k * 0.1, **hb)
                    rp.add(dict(hb))
                reg.publish_pending()
                h.supervisor_alive_mono[0] = time.monotonic()
                ticker.tick(k * 0.1)
                stats = (await http.get("/v1/stats")).json()
                assert stats["config"]["epoch_version"] == (1 if k < RELOAD_AT else 2)
                assert stats["config"]["version"] == (1 if k < RELOAD_AT else 2)
                for rec in rp.step():
                    d = (await http.get(f"/v1/nodes/{rec['node']}")).json()
                    assert d["epoch"] == k + 1
                    assert d["score"] == pytest.approx(rec["score"], abs=1e-9), (k, rec)
                    assert d["raw"] == pytest.approx(rec["raw"], abs=1e-9), (k, rec)
                    assert d["state"] == rec["state"], (k, rec)
            # The reload's effect is visible: "a" (cpu 0.7) tripped max_cpu 0.6.
            a = (await http.get("/v1/nodes/a")).json()
            assert a["state"] == "overloaded"
            assert [e["reason"] for e in a["events"]][-1] == "cpu"
            last = (await http.get("/v1/stats")).json()["config"]["last_reload"]
            assert last["status"] == "invalid" and "score.beta = 1.5" in last["error"]
            assert int(h.reloads_done[0]) == 2
            np.testing.assert_array_equal(h.pending_params[: len(new_params)], new_params)
    finally:
        if view is not None:
            view.close()
        log.close()
        seg.close()


def test_reload_through_http_then_scores_match_a_replay(tmp_path, shm_name):
    (tmp_path / "new.toml").write_text(NEW)
    asyncio.run(_scenario(tmp_path / "engine.toml", shm_name))


@pytest.fixture
def segment(shm_name):
    seg = Segment.create(shm_name, 8)
    seg.views.header.supervisor_alive_mono[0] = time.monotonic()
    view = EngineView(shm_name)
    yield seg, view
    view.close()
    seg.close()


def test_no_supervisor_is_503(segment):
    _seg, view = segment  # supervisor_pid 0: no supervisor ever started
    app, _api = build_app(view, _settings())
    with TestClient(app) as client:
        r = client.post("/v1/reload")
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_not_running"


def test_a_supervisor_that_never_reloads_is_504(segment, reap):
    seg, view = segment
    # A live process that ignores SIGHUP stands in for a hung supervisor.
    code = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"  # noqa: E501
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    reap(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    seg.views.header.supervisor_pid[0] = proc.pid
    app, _api = build_app(view, _settings(reload_timeout_s=0.2))
    with TestClient(app) as client:
        r = client.post("/v1/reload")
    assert r.status_code == 504, r.text
    e = r.json()["error"]
    assert e["code"] == "reload_timeout" and "within 0.2 s" in e["message"]
    assert proc.poll() is None  # signalled, ignored, alive


@pytest.mark.parametrize(
    "token, loopback, given, status, code",
    [
        (TOKEN, True, None, 401, "token_missing"),
        (TOKEN, False, "wrong", 401, "token_invalid"),
        (None, False, None, 403, "mutations_disabled"),
    ],
)
def test_reload_needs_the_token(segment, token, loopback, given, status, code):
    _seg, view = segment
    app, _api = build_app(view, _settings(token=token, loopback=loopback))
    headers = {} if given is None else {"authorization": f"Bearer {given}"}
    with TestClient(app) as client:
        r = client.post("/v1/reload", headers=headers)
    assert r.status_code == status and r.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("[score]\nbeta = 1.5", "score.beta", 1.5),
        ("[score]\nt_overloaded = 0.9", "score.t_overloaded", 0.9),
        ("[score]\nweights.cpu = -1", "score.weights.cpu", -1),
        ('[engine]\ncapacity = "x"', "engine.capacity", "x"),
        ('[http]\nbind = "0.0.0.0:99999"', "http.bind", "0.0.0.0:99999"),
        ("[ingest]\nallow_nodes = [1, 2]", "ingest.allow_nodes", [1, 2]),
        ("[engine]\nshm_mode = 0o777", "engine.shm_mode", "0o777"),
        ("[score]\nbta = 0.5", "score.bta", None),
        ("[scor]\nx = 1", "scor", None),
        ("beta = 1", "beta", None),
        ("[score]\nweights.throughput = 0.2", "score.weights.throughput", None),
        ("[engine\n", None, None),  # TOML syntax: no key to name
    ],
)
def test_config_errors_name_their_key_and_value(tmp_path, text, key, value):
    path = tmp_path / "e.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert config_error_field(str(err.value)) == (key, value)
