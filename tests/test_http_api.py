"""The HTTP API in-process: Starlette's TestClient over an app attached to a
test segment whose nodes are written by the ingest's row writer and scored
by the tick worker's `Ticker` (no child processes).

Covers every endpoint's answers and errors, paging, filters, the token
rules (loopback without a token, a token file, neither), body limits, and
heartbeat validation (the forwarder is a list here; the engine test checks
the real one against the ingest's counters).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.config import Config
from shm_engine.core.events import Event, EventSegment
from shm_engine.core.registry import NodeRegistry
from shm_engine.core.rows import column_addresses, write_rows
from shm_engine.core.segment import Segment
from shm_engine.http.api import LOOPBACK_HOSTS, MAX_LIMIT, Settings, build_app, openapi
from shm_engine.http.view import RECENT_PER_NODE, EngineView, RecentEvents
from shm_engine.tick.ticker import Ticker
from shm_engine.wire.jsondecode import check_heartbeat
from support.events import check, put
from support.ticks import node as heartbeat_of
from support.ticks import send

TOKEN = "s3cret-token"
# (node, cpu, zone, labels): 30 nodes, three zones, two roles; the last
# five are overloaded (cpu over max_cpu).
NODES = [
    (
        f"n{i:02d}" if i != 29 else "rack-9/n29",  # an id may hold a slash
        0.995 if i >= 25 else 0.1 + i * 0.02,
        ("eu", "us", "ap")[i % 3],
        {"role": "web" if i % 2 else "db"},
    )
    for i in range(30)
]
# A cursor that decodes to 6000 nested arrays: refused, not a 500.
DEEP = base64.urlsafe_b64encode(b"[" * 6000).decode()
OVERLOADED = ["n25", "n26", "n27", "n28", "rack-9/n29"]  # by node id
GOOD = {"node": "posted-1", "cpu": 0.2, "mem": 0.3, "queue": 1, "avg_job_s": 0.5}


def _settings(
    token=None, loopback=True, max_body=1 << 20, max_frame=1 << 20, max_heartbeats=8192
) -> Settings:
    return Settings(
        token=token,
        loopback=loopback,
        max_body_bytes=max_body,
        max_frame_bytes=max_frame,
        max_message_bytes=2 * max_frame,
        max_heartbeats=max_heartbeats,
        stream_interval_s=0.05,
        max_streams=2,
        tick_interval_s=0.05,
    )


@pytest.fixture
def engine(shm_name):
    """A segment with `NODES` scored by one tick (30 events: each
    registered), its claims segment and its event log (64 events)."""
    seg = Segment.create(shm_name, 64)
    claims = ClaimsSegment.create(shm_name, 64, 4)
    events = EventSegment.create(shm_name, 64)
    v = seg.views
    reg = NodeRegistry(v)
    # Loads the kernels: before the clock is read.
    ticker = Ticker(v, Config(), claims.views, events=events.views)
    now = time.monotonic()
    for node, cpu, zone, labels in NODES:
        rec, _l, reason, detail = check_heartbeat(
            dict(node=node, cpu=cpu, mem=0.2, queue=1, avg_job_s=1, zone=zone, labels=labels)
        )
        assert reason is None, detail
        raw = json.dumps(labels, sort_keys=True, separators=(",", ":")).encode()
        slot = reg.register(node.encode(), zone.encode(), raw)
        write_rows(
            column_addresses(v.table),
            len(v.table.row_version),
            np.array([slot], np.int64),
            np.atleast_1d(rec),
            now,
        )
    v.header.supervisor_alive_mono[0] = time.monotonic()
    v.header.rejects[0] = 2
    ticker.tick(now)
    yield seg, ticker
    events.close()
    claims.close()
    seg.close()


def _client(name, settings=None, forward=None):
    view = EngineView(name)
    sent: list[bytes] = []

    def fwd(frame: bytes):
        sent.append(frame)
        return None

    app, api = build_app(view, settings or _settings(), fwd if forward is None else forward)
    client = TestClient(app, raise_server_exceptions=False)
    return client, view, api, sent


@pytest.fixture
def api(engine, shm_name):
    client, view, api, sent = _client(shm_name)
    with client:
        yield client, sent, view
    view.close()


def _err(resp, status, code, field=None, value=None):
    assert resp.status_code == status, resp.text
    e = resp.json()["error"]
    assert e["status"] == status and e["code"] == code, e
    assert e["field"] == field and e["value"] == value, e
    return e


# ------------------------------------------------------------------ reads --
def test_health_and_ready(api, engine):
    client, _sent, _view = api
    assert client.get("/healthz").json() == {"status": "ok"}
    _seg, ticker = engine
    ticker.tick(time.monotonic())  # fresh: READY_MIN_AGE_S is shorter than a first import
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["epoch"] == 2


def test_readyz_is_503_when_the_latest_tick_is_stale(engine, shm_name, monkeypatch):
    client, view, _api, _sent = _client(shm_name)
    with client:
        monkeypatch.setattr(type(view.reader), "age_s", property(lambda self: 99.0))
        e = _err(client.get("/readyz"), 503, "stale")
        assert e["age_s"] == 99.0
    view.close()


def test_nodes_ranked_first_then_the_rest_with_every_field(api):
    client, _sent, _view = api
    page = client.get("/v1/nodes?limit=100").json()
    assert page["total"] == 30 and page["next_cursor"] is None and page["epoch"] == 1
    nodes = page["nodes"]
    assert len(nodes) == 30
    scores = [n["score"] for n in nodes]
    assert scores == sorted(scores, reverse=True)
    # Lowest cpu scores best here (same mem, queue, job time): n00 first.
    assert nodes[0]["node"] == "n00" and nodes[0]["rank"] == 0
    ranked = [n for n in nodes if n["rank"] is not None]
    assert [n["rank"] for n in ranked] == list(range(len(ranked)))
    over = [n for n in nodes if n["state"] == "overloaded"]
    assert sorted(n["node"] for n in over) == OVERLOADED
    assert all(n["score"] == 0 and n["rank"] is None for n in over)
    # Ties (score 0) are ordered by node id.
    assert [n["node"] for n in nodes[-5:]] == OVERLOADED
    n3 = next(n for n in nodes if n["node"] == "n03")
    assert n3["zone"] == "eu" and n3["labels"] == {"role": "web"}
    assert set(n3) == {
        "node",
        "state",
        "score",
        "raw",
        "wait",
        "liveness",
        "rank",
        "zone",
        "labels",
    }


@pytest.mark.parametrize(
    "query, expect",
    [
        ("state=overloaded", set(OVERLOADED)),
        ("state=healthy,overloaded", {n for n, *_ in NODES}),
        ("state=dead", set()),
        ("zone=us", {n for n, _c, z, _l in NODES if z == "us"}),
        ("label=role=web", {n for n, _c, _z, lab in NODES if lab["role"] == "web"}),
        (
            "zone=eu&label=role=db",
            {n for n, _c, z, lab in NODES if z == "eu" and lab["role"] == "db"},
        ),
        ("prefix=n1", {f"n1{i}" for i in range(10)}),
        ("label=role=web&label=role=db", set()),
    ],
)
def test_nodes_filters(api, query, expect):
    client, _sent, _view = api
    page = client.get(f"/v1/nodes?limit=1000&{query}").json()
    assert {n["node"] for n in page["nodes"]} == expect
    assert page["total"] == len(expect)


@pytest.mark.parametrize(
    "sort", ["-score", "score", "raw", "-raw", "node", "-node", "wait", "-liveness"]
)
def test_paging_visits_every_node_once_in_the_full_order(api, sort):
    client, _sent, _view = api
    full = [n["node"] for n in client.get(f"/v1/nodes?limit=1000&sort={sort}").json()["nodes"]]
    seen, cursor, pages = [], None, 0
    while True:
        url = f"/v1/nodes?limit=7&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).json()
        seen += [n["node"] for n in page["nodes"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == full and len(full) == 30 and pages == 5  # 7+7+7+7+2
    if sort == "node":
        assert full == sorted(full)
    if sort == "-node":
        assert full == sorted(full, reverse=True)


@pytest.mark.parametrize(
    "query, field, value",
    [
        ("limit=0", "limit", "0"),
        (f"limit={MAX_LIMIT + 1}", "limit", str(MAX_LIMIT + 1)),
        ("limit=ten", "limit", "ten"),
        ("sort=cpu", "sort", "cpu"),
        ("state=sleepy", "state", "sleepy"),
        ("label=role", "label", "role"),
        ("history=2", "history", "2"),
        ("cursor=%21%21", "cursor", "!!"),
        ("cursor=" + DEEP, "cursor", DEEP[:200]),
    ],
)
def test_nodes_bad_parameters_name_the_field_and_value(api, query, field, value):
    client, _sent, _view = api
    _err(client.get(f"/v1/nodes?{query}"), 400, "bad_parameter", field, value)


def test_a_cursor_of_another_sort_order_is_refused(api):
    client, _sent, _view = api
    cur = client.get("/v1/nodes?limit=2&sort=node").json()["next_cursor"]
    _err(
        client.get(f"/v1/nodes?limit=2&sort=-score&cursor={cur}"),
        400,
        "bad_parameter",
        "cursor",
        cur,
    )


def test_one_node_in_detail(api, engine):
    client, _sent, view = api
    d = client.get("/v1/nodes/n03").json()
    assert d["node"] == "n03" and d["state"] == "healthy" and d["rank"] == 3
    assert d["zone"] == "eu" and d["labels"] == {"role": "web"}
    assert d["in_flight"] == 0 and d["epoch"] == 1
    (ev,) = d["events"]
    assert (ev["node"], ev["epoch"], ev["from_state"], ev["to_state"], ev["reason"]) == (
        "n03",
        1,
        "unregistered",
        "healthy",
        "registered",
    )
    hb = d["heartbeat"]
    assert hb["cpu"] == pytest.approx(0.16) and hb["mem"] == 0.2 and hb["queue"] == 1.0
    assert hb["throughput"] is None and hb["slots"] is None and hb["age_s"] >= 0
    assert 0 < d["score"] <= 1 and d["liveness"] == 1.0 and d["qema"] == 1.0
    # History: one sample per second, for this registration only.
    assert view.sample(now_wall=1000.0) and not view.sample(now_wall=1000.5)
    assert view.sample(now_wall=1001.0)
    d = client.get("/v1/nodes/n03").json()
    assert d["history"] == [round(d["score"], 4)] * 2
    page = client.get("/v1/nodes?limit=1&history=1").json()
    assert page["nodes"][0]["history"] == [round(page["nodes"][0]["score"], 4)] * 2


# ----------------------------------------------------------------- events --
# The fixture's tick registered the 30 nodes: events 1..30, in slot order.
def _seqs(body) -> list[int]:
    return [e["seq"] for e in body["events"]]


def test_events_are_paged_by_their_numbers(api):
    client, _sent, _view = api
    after, seen = 0, []
    while True:
        b = client.get(f"/v1/events?after={after}&limit=7").json()
        assert b["lost"] == 0 and (b["head"], b["capacity"]) == (30, 64)
        if not b["events"]:
            assert b["next_seq"] == after == 30
            break
        assert _seqs(b) == list(range(after + 1, b["next_seq"] + 1)) and len(b["events"]) <= 7
        seen += b["events"]
        after = b["next_seq"]
    assert [e["node"] for e in seen] == [n for n, *_ in NODES]
    assert {(e["from_state"], e["reason"], e["epoch"]) for e in seen} == {
        ("unregistered", "registered", 1)
    }
    assert {e["to_state"] for e in seen} == {"healthy", "overloaded"}
    assert set(seen[0]) == {
        "seq",
        "epoch",
        "tick_wall",
        "node",
        "slot",
        "gen",
        "from_state",
        "to_state",
        "reason",
    }


def test_events_without_after_are_the_newest(api):
    client, _sent, _view = api
    b = client.get("/v1/events?limit=5").json()
    assert _seqs(b) == [26, 27, 28, 29, 30] and (b["lost"], b["next_seq"]) == (0, 30)
    assert _seqs(client.get("/v1/events").json()) == list(range(1, 31))  # limit 100
    b = client.get("/v1/events?node=rack-9/n29").json()  # the whole ring, filtered
    assert [e["node"] for e in b["events"]] == ["rack-9/n29"] and b["next_seq"] == 30
    b = client.get("/v1/events?after=0&node=n03").json()
    assert [(e["seq"], e["node"]) for e in b["events"]] == [(4, "n03")] and b["next_seq"] == 30
    assert client.get("/v1/events?after=30&node=n03").json()["events"] == []


def test_events_overwritten_before_a_read_are_counted_lost(api, engine):
    client, _sent, view = api
    _seg, ticker = engine
    assert [e["seq"] for e in client.get("/v1/nodes/n03").json()["events"]] == [4]
    assert put(ticker.events.views, 100) == 130  # the ring (64) keeps 67..130
    b = client.get("/v1/events?after=30&limit=1000").json()
    assert b["lost"] == 36 and _seqs(b) == list(range(67, 131)) and b["next_seq"] == 130
    for e in b["events"]:
        check(Event(**e))
    # 11..66 lost, 67..71 read (the limit), n70 kept.
    b = client.get("/v1/events?after=10&limit=5&node=n70").json()
    assert (_seqs(b), b["lost"], b["next_seq"]) == ([70], 56, 71)
    # The node index reads the log as any reader does, and counts what it lost.
    assert [e["seq"] for e in client.get("/v1/nodes/n03").json()["events"]] == [4]
    assert view.recent.lost == 36


@pytest.mark.parametrize(
    "query, field, value",
    [
        ("after=-1", "after", "-1"),
        ("after=x", "after", "x"),
        ("after=9223372036854775808", "after", "9223372036854775808"),
        ("limit=0", "limit", "0"),
        ("limit=1001", "limit", "1001"),
    ],
)
def test_events_bad_parameters_name_the_field_and_value(api, query, field, value):
    client, _sent, _view = api
    _err(client.get(f"/v1/events?{query}"), 400, "bad_parameter", field, value)


def test_recent_events_keep_the_latest_of_a_bounded_number_of_nodes(api, engine):
    _client_, _sent, view = api
    _seg, ticker = engine
    recent = RecentEvents(view.events, max_nodes=4)
    assert recent.of_node("n00") == []  # only the 4 latest ids (n26..rack-9/n29) are kept
    assert [e.node for e in recent.of_node("n26")] == ["n26"]
    assert [e.seq for e in recent.of_node("rack-9/n29")] == [30]
    # A node with more events than RECENT_PER_NODE keeps its latest ones.
    recent = RecentEvents(view.events, max_nodes=100)
    assert put(ticker.events.views, RECENT_PER_NODE + 3, node="hot") == 30 + RECENT_PER_NODE + 3
    got = recent.of_node("hot")
    assert [e.seq for e in got] == list(range(34, 34 + RECENT_PER_NODE))
    assert recent.lost == 0 and [e.seq for e in recent.of_node("n03")] == [4]


def test_without_an_event_log_events_are_503_and_details_say_none(shm_name):
    seg = Segment.create(shm_name, 8)
    try:
        ticker = Ticker(seg.views, Config())
        send(seg.views, NodeRegistry(seg.views), 0.0, **heartbeat_of("x"))
        seg.views.header.supervisor_alive_mono[0] = time.monotonic()
        ticker.tick(0.0)
        client, view, _api, _sent = _client(shm_name)
        with client:
            _err(client.get("/v1/events"), 503, "no_event_log")
            _err(client.get("/v1/events/stream"), 503, "no_event_log")
            assert client.get("/v1/nodes/x").json()["events"] is None
        view.close()
    finally:
        seg.close()


def test_unknown_node_is_404_naming_it(api):
    client, _sent, _view = api
    _err(client.get("/v1/nodes/nope"), 404, "unknown_node", "id", "nope")


def test_stats(api):
    client, _sent, _view = api
    s = client.get("/v1/stats").json()
    assert s["epoch"] == 1 and s["registered"] == 30 and s["ranked"] == 25
    assert s["counts"] == {
        "healthy": 25,
        "degraded": 0,
        "overloaded": 5,
        "quarantined": 0,
        "dead": 0,
    }
    assert set(s["weights"]) == {"cpu", "mem", "io", "wait", "rate", "success", "tail"}
    assert 0 <= s["pressure"] <= 1
    assert s["ingest"]["rejected"]["frame_too_large"] == 2
    assert s["tick"]["ticks"] == 1 and s["claims"]["in_flight"] == 0
    # No supervisor wrote a configuration (version 0) nor reloaded; 30 events
    # (the registrations).
    assert (s["config"]["version"], s["config"]["epoch_version"]) == (0, 0)
    assert s["config"]["last_reload"] is None and s["config"]["reloads"] == 0
    assert s["events"] == {"appended": 30, "capacity": 64}
    hist = client.get("/v1/stats/history").json()
    assert hist == {"summaries": []}


def test_metrics_is_the_exporters(api, shm_name):
    client, _sent, _view = api
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    e = f'engine="{shm_name}"'
    assert f'shm_engine_nodes{{{e},state="overloaded"}} 5.0' in r.text
    assert f'shm_engine_heartbeats_rejected_total{{{e},reason="frame_too_large"}} 2.0' in r.text


def test_openapi_lists_every_route_of_the_table(api):
    client, _sent, _view = api
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/healthz",
        "/readyz",
        "/v1/nodes",
        "/v1/nodes/{id}",
        "/v1/stats",
        "/v1/stats/history",
        "/v1/stream",
        "/v1/events",
        "/v1/events/stream",
        "/v1/heartbeat",
        "/v1/place",
        "/v1/release",
        "/v1/reload",
        "/metrics",
        "/openapi.json",
        "/",
    }
    post = doc["paths"]["/v1/heartbeat"]["post"]
    assert post["security"] == [{"bearer": []}] and "413" in post["responses"]
    reload = doc["paths"]["/v1/reload"]["post"]
    assert reload["security"] == [{"bearer": []}]
    assert {"200", "422", "503", "504"} <= set(reload["responses"])
    params = {p["name"] for p in doc["paths"]["/v1/nodes"]["get"]["parameters"]}
    assert params == {"state", "zone", "label", "prefix", "sort", "limit", "cursor", "history"}
    assert doc == openapi(_view_endpoints(client))


def _view_endpoints(client):
    from shm_engine.http.api import endpoints

    return endpoints()


def test_unknown_path_and_method_are_json_errors(api):
    client, _sent, _view = api
    _err(client.get("/v2/nothing"), 404, "not_found")
    _err(client.delete("/v1/nodes"), 405, "method_not_allowed")


def test_dashboard_and_its_files_are_served(api):
    client, _sent, _view = api
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="node-table"' in page.text and 'id="events"' in page.text
    for path, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        r = client.get(path)
        assert r.status_code == 200 and kind in r.headers["content-type"], path


def test_nothing_published_is_503(shm_name):
    seg = Segment.create(shm_name, 8)
    try:
        seg.views.header.supervisor_alive_mono[0] = time.monotonic()
        client, view, _api, _sent = _client(shm_name)
        with client:
            _err(client.get("/v1/nodes"), 503, "nothing_published")
            _err(client.get("/readyz"), 503, "nothing_published")
            assert client.get("/healthz").status_code == 200
        view.close()
    finally:
        seg.close()


# -------------------------------------------------------------- heartbeat --
def _post(client, body, token=None, ctype="application/json"):
    headers = {"content-type": ctype}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v1/heartbeat", content=data, headers=headers)


def test_a_valid_heartbeat_is_forwarded_whole(api):
    client, sent, _view = api
    r = _post(client, GOOD)
    assert r.status_code == 202 and r.json() == {"accepted": 1, "rejected": {}}
    assert sent == [json.dumps(GOOD).encode()]


@pytest.mark.parametrize(
    "body, reason, field, value",
    [
        ({**GOOD, "cpu": 1.5}, "bad_field", "cpu", "1.5"),
        ({**GOOD, "cpu": "high"}, "bad_field", "cpu", "high"),
        ({**GOOD, "gpu": 1}, "unknown_field", "gpu", None),
        ({k: v for k, v in GOOD.items() if k != "mem"}, "missing_field", "mem", None),
        ({**GOOD, "node": "bad id!"}, "bad_node_id", "node", "bad id!"),
        ({**GOOD, "zone": 7}, "bad_field", "zone", "7"),
        ({**GOOD, "ok": 1}, "missing_field", "ok", None),
        (b"{not json", "malformed_frame", None, None),
        (b"[1, 2]", "malformed_heartbeat", None, None),
        (b"\xff\xfe", "malformed_frame", None, None),
    ],
)
def test_a_rejected_heartbeat_is_400_with_reason_field_and_value(api, body, reason, field, value):
    client, sent, _view = api
    r = _post(client, body)
    e = _err(r, 400, reason, field, value)
    assert e["rejected"] == {reason: 1 if reason != "malformed_heartbeat" else 2}
    assert e["errors"] and e["errors"][0]["reason"] == reason
    assert len(sent) == 1  # forwarded all the same: the ingest counts it


def test_a_batch_with_some_bad_heartbeats_is_202_and_explains_them(api):
    client, sent, _view = api
    bad = {**GOOD, "node": "posted-2", "mem": -1}
    r = _post(client, [GOOD, bad])
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"] == {"bad_field": 1}
    assert body["errors"] == [
        {
            "reason": "bad_field",
            "node": "posted-2",
            "field": "mem",
            "value": "-1.0",
            "detail": body["errors"][0]["detail"],
            "index": 1,
        }
    ]


def test_heartbeat_needs_json_content_type(api):
    client, sent, _view = api
    _err(
        _post(client, GOOD, ctype="text/plain"),
        415,
        "unsupported_media_type",
        "Content-Type",
        "text/plain",
    )
    assert sent == []


def test_oversized_bodies_are_413_and_not_forwarded(engine, shm_name):
    client, view, _api, sent = _client(shm_name, _settings(max_body=100))
    with client:
        big = json.dumps({**GOOD, "zone": "z" * 200}).encode()
        e = _err(_post(client, big), 413, "body_too_large", "body", len(big))
        assert "more than 100" in e["message"]
        # Without Content-Length (chunked): refused once the bytes pass the limit.
        r = client.post(
            "/v1/heartbeat",
            content=iter([big[:60], big[60:]]),
            headers={"content-type": "application/json"},
        )
        _err(r, 413, "body_too_large", "body", len(big))
    assert sent == []
    view.close()


def test_a_frame_over_max_frame_bytes_is_413_and_counted_by_the_ingest(engine, shm_name):
    client, view, _api, sent = _client(shm_name, _settings(max_frame=1024))
    with client:
        big = json.dumps([GOOD] * 25).encode()
        assert 1024 < len(big) <= 2048
        _err(_post(client, big), 413, "frame_too_large", "body", len(big))
        assert sent == [big]  # the ingest counts it frame_too_large, as over ZeroMQ
        huge = b"[" + b" " * 3000 + b"]"
        _err(_post(client, huge), 413, "body_too_large", "body", len(huge))
        assert len(sent) == 1  # past what the ingest socket takes at all: not sent
    view.close()


def test_more_heartbeats_than_the_ingest_takes_per_frame_is_413(engine, shm_name):
    client, view, _api, sent = _client(shm_name, _settings(max_heartbeats=3))
    with client:
        assert _post(client, [GOOD] * 3).status_code == 202
        body = json.dumps([GOOD] * 4).encode()
        _err(_post(client, body), 413, "too_many_heartbeats", "body", 4)
        assert sent[-1] == body  # forwarded: the ingest counts it too_many_heartbeats
    view.close()


def test_a_full_ingest_queue_is_503(engine, shm_name):
    client, view, _api, _sent = _client(
        shm_name, forward=lambda frame: "the ingest's queue is full; retry"
    )
    with client:
        _err(_post(client, GOOD), 503, "ingest_unavailable")
    view.close()


# ------------------------------------------------------------------ tokens --
@pytest.mark.parametrize(
    "token, loopback, given, status, code",
    [
        (None, True, None, 202, None),  # loopback, no token file: allowed
        (None, False, None, 403, "mutations_disabled"),  # reachable, no token: off
        (None, False, "anything", 403, "mutations_disabled"),
        (TOKEN, True, None, 401, "token_missing"),  # a token file binds loopback too
        (TOKEN, False, None, 401, "token_missing"),
        (TOKEN, False, "wrong", 401, "token_invalid"),
        (TOKEN, False, TOKEN + "x", 401, "token_invalid"),
        (TOKEN, False, TOKEN, 202, None),
        (TOKEN, True, TOKEN, 202, None),
    ],
)
def test_token_rules(engine, shm_name, token, loopback, given, status, code):
    client, view, _api, sent = _client(shm_name, _settings(token=token, loopback=loopback))
    with client:
        r = _post(client, GOOD, token=given)
        assert r.status_code == status, r.text
        if code is not None:
            assert r.json()["error"]["code"] == code
            assert sent == []
        else:
            assert len(sent) == 1
        if status == 401:
            assert r.headers["www-authenticate"] == "Bearer"
        # Reads never need the token.
        assert client.get("/v1/nodes?limit=1").status_code == 200
    view.close()


def test_a_non_bearer_scheme_is_refused(engine, shm_name):
    client, view, _api, _sent = _client(shm_name, _settings(token=TOKEN))
    with client:
        r = client.post(
            "/v1/heartbeat",
            content=json.dumps(GOOD),
            headers={"content-type": "application/json", "authorization": f"Basic {TOKEN}"},
        )
        _err(r, 401, "token_invalid")
    view.close()


def test_without_a_forwarder_heartbeats_are_503(engine, shm_name):
    view = EngineView(shm_name)
    app, _api = build_app(view, _settings(), None)
    with TestClient(app) as client:
        _err(_post(client, GOOD), 503, "heartbeats_unavailable")
    view.close()


def test_a_loopback_server_answers_only_to_loopback_host_names(engine, shm_name):
    settings = dataclasses.replace(_settings(), allowed_hosts=LOOPBACK_HOSTS)
    client, view, _api, sent = _client(shm_name, settings)
    with client:
        for host in ("127.0.0.1:7720", "localhost", "[::1]:80"):
            assert client.get("/healthz", headers={"host": host}).status_code == 200, host
        for host in ("evil.example:7720", "127.0.0.1.evil.example", ""):
            _err(
                client.get("/v1/nodes", headers={"host": host}),
                421,
                "misdirected_request",
                "Host",
                host,
            )
        r = client.post(
            "/v1/heartbeat",
            content=json.dumps(GOOD),
            headers={"host": "evil.example", "content-type": "application/json"},
        )
        assert r.status_code == 421 and sent == []
    view.close()


def test_score_history_is_kept_for_the_lowest_slots_only(engine, shm_name, monkeypatch):
    import shm_engine.http.view as view_module

    monkeypatch.setattr(view_module, "HISTORY_SLOTS", 20)
    client, view, _api, _sent = _client(shm_name)
    with client:
        for second in (2000.0, 2001.0, 2002.0):
            assert view.sample(now_wall=second)
        page = client.get("/v1/nodes?sort=node&limit=30&history=1").json()["nodes"]
        assert view._scores.shape == (view_module.SCORE_SECONDS, 20)
        for i, node in enumerate(page):  # slot i holds NODES[i]
            assert node["node"] == NODES[i][0]
            expect = [round(node["score"], 4)] * 3 if i < 20 else [None] * 3
            assert node["history"] == expect, node["node"]
            # One node's detail reads the same history (its own code path).
            assert client.get(f"/v1/nodes/{node['node']}").json()["history"] == expect
    view.close()


def test_a_zone_or_label_change_is_seen_at_once(api, engine):
    client, _sent, _view = api
    assert "n03" in {n["node"] for n in client.get("/v1/nodes?zone=eu&limit=100").json()["nodes"]}
    seg, _ticker = engine
    NodeRegistry(seg.views).set_meta(3, b"moon", b'{"role":"cache"}')  # n03's slot
    d = client.get("/v1/nodes/n03").json()
    assert d["zone"] == "moon" and d["labels"] == {"role": "cache"}
    assert [n["node"] for n in client.get("/v1/nodes?zone=moon").json()["nodes"]] == ["n03"]
    got = client.get("/v1/nodes?label=role=cache").json()["nodes"]
    assert [n["node"] for n in got] == ["n03"]
