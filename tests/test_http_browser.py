"""The dashboard in a real browser: headless Chromium against a running
engine fed by the demo's simulated fleet.

The rendered DOM must show the fleet's nodes in the table with their state
badges, the state counts, the event panel listing the log's newest events
(the fleet's registrations and state changes, as GET /v1/events has them),
the linked node's detail with its own events, and the configuration
version.  The page is loaded
as ``/?live=0`` (everything fetched once, no event stream): Chromium's
virtual clock, which lets the scripts run, stands still while a request
is open, and a stream never ends.  The live page is checked by a second
test in a browser kept open (`support.browser.PageSession`): the stream
connects, pushes epochs, and the table fills; a node that registers while
the page is open appears in the event panel (GET /v1/events/stream); a
reload posted to the API shows its new version and result.  A screenshot is
saved (``SHM_ENGINE_SCREENSHOT=path`` chooses where, else the test's
temporary directory) and its path printed.  Skipped, with the reason, only
where no Chromium can be had (see `support.browser`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from clients.heartbeat import HeartbeatClient
from kernels.reasons import REASON_NAMES
from shm_engine.ops.demo.fleet import Fleet
from support.browser import PageSession, dump_dom, find_chromium, screenshot
from support.engine import Engine, free_port, write_config
from support.wait import wait_until

NODES = 300
REASONS = set(REASON_NAMES)


@pytest.fixture
def chromium():
    path, why = find_chromium()
    if path is None:
        pytest.skip(why)
    return path


def test_dashboard_renders_the_demo_fleet(chromium, shm_name, tmp_path, reap):
    cfg = write_config(
        tmp_path / "e.toml",
        free_port(),
        tick_ms=50,
        capacity=1024,
        extra="registration_burst_per_sender = 1024",
        http="127.0.0.1:0",
    )
    eng = Engine(shm_name, cfg, tmp_path, reap)
    st = eng.wait_ready()
    url = st["http"]["url"]
    fleet = Fleet(NODES, seed=7, period=60.0, dead_after_s=3.0)
    with HeartbeatClient(st["ingest_endpoint"]) as hb, httpx.Client(base_url=url) as http:

        def registered():
            batch, _cpu = fleet.heartbeats(1.0)
            hb.send_batch(batch)
            return http.get("/v1/stats").json()["registered"] == NODES

        wait_until(registered, 30, f"{NODES} nodes registered", period=0.2)
        hb.send_batch(fleet.heartbeats(2.0)[0])  # fresh rows for the page and the screenshot
        page = http.get("/v1/nodes?limit=50").json()
        shown = [n["node"] for n in page["nodes"]]
        counts = http.get("/v1/stats").json()["counts"]
        log = http.get("/v1/events?limit=50").json()
        assert len(log["events"]) == 50  # 300 registrations at least

        profile = tmp_path / "profile"
        best = shown[0]
        dom = dump_dom(chromium, profile, f"{url}/?live=0&node={best}")
        shot = Path(os.environ.get("SHM_ENGINE_SCREENSHOT") or tmp_path / "dashboard.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        # Tall enough for the event panel under a page of 50 nodes.
        screenshot(chromium, profile, f"{url}/?live=0&node={best}", shot, size=(1400, 2100))
        print(f"\ndashboard screenshot: {shot}")
    assert eng.stop() == 0

    rows = re.findall(r'<tr data-node="([^"]+)"', dom)
    assert len(rows) == 50, dom[:3000]
    # The first rows are the ranking's best nodes (scores move between the
    # two fetches, so only most of the page is compared).
    assert len(set(rows) & set(shown)) >= 40, (rows, shown)
    assert set(rows) <= set(fleet.names)
    table = dom.split('id="node-table"', 1)[1].split("</table>", 1)[0]
    badges = set(re.findall(r'<span class="state (\w+)">', table))
    assert badges and badges <= {"healthy", "degraded", "overloaded", "quarantined", "dead"}
    for state, n in counts.items():
        m = re.search(rf'id="count-{state}">(\d+)<', dom)
        assert m is not None, f"no count for {state}"
        if state == "healthy":
            assert int(m.group(1)) > 0 and n > 0
    assert re.search(r'id="page-info">1–50 of 300 nodes', dom), re.findall(
        r'id="page-info">[^<]*', dom
    )
    assert 'id="events"' in dom and "Event stream" in dom
    # The event panel: the newest events, newest first; each names a fleet
    # node, its transition and the reason (the log only grew since the
    # page's read, so its 50 are among the newest 50 read here or after).
    items = re.findall(
        r'<li data-seq="(\d+)"><time[^>]*>[\d:.]+</time><span class="ev-node">([^<]+)</span>'
        r'<span class="state (\w+)">\3</span>→<span class="state (\w+)">\4</span>'
        r'<span class="reason">(\w+)</span></li>',
        dom.split('id="event-list"', 1)[1].split("</ol>", 1)[0],
    )
    assert len(items) == 50, dom.split('id="event-list"', 1)[1][:2000]
    seqs = [int(i[0]) for i in items]
    assert seqs == sorted(seqs, reverse=True) and seqs[0] >= log["next_seq"]
    assert {i[1] for i in items} <= set(fleet.names)
    assert all(i[4] in REASONS for i in items)
    # The linked node's detail lists its own events: at least its registration.
    detail = dom.split('id="detail-events"', 1)[1].split("</ol>", 1)[0]
    reasons = re.findall(r'</span><span class="reason">(\w+)</span></li>', detail)
    assert "registered" in reasons, detail
    assert re.search(r'id="config-version">v1<', dom)
    assert re.search(rf'id="engine-name">{re.escape(shm_name)}<', dom)
    # The detail view of the linked node, with its latest heartbeat.
    assert re.search(rf'id="detail-name">{re.escape(best)}<', dom)
    assert re.search(r'<table id="detail-heartbeat" class="kv"><tr><td>age_s</td>', dom)
    assert re.search(r"<td>state</td><td>(healthy|degraded|overloaded|quarantined|dead)</td>", dom)
    assert shot.stat().st_size > 10_000


def test_live_dashboard_follows_the_stream(chromium, shm_name, tmp_path, reap):
    """The live page (no ``live=0``) in a browser kept open: the event
    stream connects and pushes new epochs into the page, and the node table
    fills, in real time."""
    cfg = write_config(tmp_path / "e.toml", free_port(), http="127.0.0.1:0")
    eng = Engine(shm_name, cfg, tmp_path, reap)
    st = eng.wait_ready()
    with HeartbeatClient(st["ingest_endpoint"]) as hb:
        hb.send("live-1", cpu=0.2, mem=0.3, queue=1, avg_job_s=0.5)
    with PageSession(chromium, tmp_path / "profile") as page:
        page.open(st["http"]["url"] + "/")
        js = "document.getElementById('{}').textContent"
        wait_until(lambda: page.evaluate(js.format("conn")) == "live", 30, "stream open")
        first = wait_until(lambda: int(page.evaluate(js.format("epoch")) or 0), 30, "an epoch")
        wait_until(lambda: int(page.evaluate(js.format("epoch"))) > first + 2, 30, "epochs pushed")
        rows = "document.querySelectorAll('#node-table tbody tr').length"
        wait_until(lambda: page.evaluate(rows) == 1, 30, "the node in the table")
        assert (
            page.evaluate("document.querySelector('#node-table tbody tr').dataset.node") == "live-1"
        )
        # The event stream: a node registering now shows up in the panel.
        nodes = "[...document.querySelectorAll('#event-list .ev-node')].map(e => e.textContent)"
        wait_until(lambda: "live-1" in page.evaluate(nodes), 30, "live-1's registration listed")
        with HeartbeatClient(st["ingest_endpoint"]) as hb:
            hb.send("live-2", cpu=0.3, mem=0.3, queue=1, avg_job_s=0.5)
        wait_until(lambda: page.evaluate(nodes)[0] == "live-2", 30, "live-2 pushed, newest first")
        # A reload through the API: the page shows the new version and its result.
        version = js.format("config-version")
        assert wait_until(lambda: page.evaluate(version), 30, "a version") == "v1"
        cfg.write_text(cfg.read_text() + "\n[score]\nbeta = 0.8\n")
        r = httpx.post(st["http"]["url"] + "/v1/reload", timeout=30)
        assert r.status_code == 200 and r.json()["config_version"] == 2, r.text
        wait_until(lambda: page.evaluate(version) == "v2", 30, "v2 shown")
        status = js.format("reload-status")
        wait_until(
            lambda: page.evaluate(status) == "(last reload applied: score.beta)",
            30,
            "the reload's result shown",
        )
    assert eng.stop() == 0
