"""POST /v1/place and POST /v1/release: placement for remote schedulers.

In-process: Starlette's TestClient over an app attached to an engine driven
in this process (`support.placement.PlaceEngine`: the real ingest and tick
worker code) with four nodes:

    node  zone  cpu  mem_gb  gpu  labels              taints
    a     z1    4    8       -    disk=ssd, rack=r1   -
    b     z1    2    8       -    disk=hdd            -
    c     z2    8    16      1    disk=ssd, gpu=a100  gpu=true:NoSchedule
    d     z2    1    -       -    -                   -

Covers the placement and its release, explain, Unschedulable with its
counts per filter, every kind of bad body, the token, a batch release, the
limit of held placements, and the lease: a placement not released within
its ttl_s is returned by the server's sweep (a clock the test sets), its
claim closed, and a late release answered 410.
"""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from shm_engine.core.placement import reserved_units
from shm_engine.http.api import Settings, build_app
from shm_engine.http.view import EngineView
from support.placement import PlaceEngine, node_heartbeat

TOKEN = "place-t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _settings(token=TOKEN, loopback=False, max_body=4096) -> Settings:
    return Settings(
        token=token,
        loopback=loopback,
        max_body_bytes=max_body,
        max_frame_bytes=1 << 20,
        max_message_bytes=2 << 20,
        max_heartbeats=8192,
        stream_interval_s=0.05,
        max_streams=4,
        tick_interval_s=0.05,
        place_ttl_s=60.0,
        max_place_ttl_s=600.0,
    )


@pytest.fixture
def engine(shm_name):
    eng = PlaceEngine(shm_name, capacity=32, max_reservations=8)
    try:
        eng.send(
            node_heartbeat(
                "a",
                resources={"cpu": 4, "mem_gb": 8},
                labels={"disk": "ssd", "rack": "r1"},
                zone="z1",
            ),
            node_heartbeat(
                "b", resources={"cpu": 2, "mem_gb": 8}, labels={"disk": "hdd"}, zone="z1"
            ),
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
        yield eng
    finally:
        eng.close()


@pytest.fixture
def api(engine):
    view = EngineView(engine.name)
    app, api = build_app(view, _settings())
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, api
    finally:
        api.close()
        view.close()


def _place(client, body, headers=AUTH):
    return client.post("/v1/place", json=body, headers=headers)


def _release(client, body, headers=AUTH):
    return client.post("/v1/release", json=body, headers=headers)


def _err(resp, status, code, field=None, value=None):
    assert resp.status_code == status, resp.text
    e = resp.json()["error"]
    assert (e["status"], e["code"], e["field"], e["value"]) == (status, code, field, value), e
    return e


def _in_flight(client, node):
    return client.get(f"/v1/nodes/{node}").json()["in_flight"]


# ---------------------------------------------------------------- placing --
def test_place_then_release(api):
    client, _api = api
    r = _place(client, {"requests": {"cpu": 3, "mem_gb": 2}})
    assert r.status_code == 200, r.text
    p = r.json()
    # Only a has 3 CPUs free but c, which is tainted.
    assert (p["node"], p["zone"], p["reserved"]) == ("a", "z1", {"cpu": 3.0, "mem_gb": 2.0})
    assert set(p["parts"]) == {"fit", "affinity", "load", "locality", "cost"}
    assert 0 < p["score"] and p["ttl_s"] == 60.0 and "explain" not in p
    assert isinstance(p["id"], str) and len(p["id"]) >= 16
    assert _in_flight(client, "a") == 1
    # a has 1 CPU left: a second such job does not fit anywhere.
    _err(_place(client, {"requests": {"cpu": 3}}), 409, "unschedulable")
    r = _release(client, {"id": p["id"], "ok": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": p["id"], "node": "a", "ok": True, "held": True}
    assert _in_flight(client, "a") == 0
    assert _place(client, {"requests": {"cpu": 3}}).json()["node"] == "a"
    # Released once: the id is gone.
    _err(_release(client, {"id": p["id"], "ok": True}), 404, "unknown_placement", "id", p["id"])


def test_explain_shows_the_filters_and_the_best_nodes(api):
    client, _api = api
    p = _place(client, {"requests": {"cpu": 1}, "explain": True}).json()
    exp = p["explain"]
    assert (exp["nodes"], exp["feasible"]) == (4, 3)
    assert exp["eliminated"] == {"taint gpu=true:NoSchedule": 1}
    assert {c["node"] for c in exp["top"]} <= {"a", "b", "d"} and p["node"] in {"a", "b", "d"}
    assert set(exp["top"][0]["parts"]) == set(p["parts"])


def test_unschedulable_is_409_with_counts_per_filter(api):
    client, _api = api
    job = {"requests": {"cpu": 3}, "selector": {"disk": "ssd"}, "zone": "z1"}
    assert _place(client, job).json()["node"] == "a"  # 4 CPUs, ssd, z1
    # Now nothing fits.
    e = _err(_place(client, {**job, "explain": True}), 409, "unschedulable")
    # b: selector (hdd); c, d: zone; a: 1 CPU left.
    assert e["counts"] == {"zone": 2, "selector": 1, "insufficient cpu": 1}
    # The counts, then the scope the job was placed in (its home zone, z1).
    assert e["message"].startswith("0/4 nodes fit: 2 zone, 1 selector, 1 insufficient cpu (scope")
    assert e["explain"]["feasible"] == 0 and e["explain"]["nodes"] == 4


def test_zones_and_constraints_reach_the_placer(api):
    client, _api = api
    assert _place(client, {"requests": {"cpu": 1}, "zones": ["z2"]}).json()["node"] == "d"
    assert (
        _place(client, {"requests": {"gpu": 1}, "tolerations": ["gpu=true:NoSchedule"]}).json()[
            "node"
        ]
        == "c"
    )
    body = {"affinity": [{"key": "rack", "op": "Exists"}], "requests": {"cpu": 1}}
    assert _place(client, body).json()["node"] == "a"


# -------------------------------------------------------------- bad bodies --
BAD = [
    # (body, status, code, field, value)
    (b"{oops", 400, "invalid_json", "body", None),
    (b'"x"', 422, "invalid_job", "body", "str"),
    (b"[]", 422, "bad_batch", "body", 0),
    (b"[" + b"{}," * 256 + b"{}]", 422, "bad_batch", "body", 257),
    (b'{"requests": {"cpu": -1}}', 422, "invalid_job", "requests.cpu", -1),
    (b'{"requests": {"cpu": "x"}}', 422, "invalid_job", "requests.cpu", "x"),
    (b'{"requests": {"cpu": true}}', 422, "invalid_job", "requests.cpu", True),
    (b'{"requests": {"tpu": 1}}', 422, "invalid_job", "requests.tpu", 1),  # not placed
    (b'{"requests": {"cpu": 1e12}}', 422, "invalid_job", "requests.cpu", 1e12),  # too much
    (b'{"requests": [1]}', 422, "invalid_job", "requests", [1]),
    (b'{"cpus": 1}', 422, "invalid_job", "cpus", 1),
    (b'{"selector": {"disk": 1}}', 422, "invalid_job", "selector.disk", 1),
    (b'{"spread": 2}', 422, "invalid_job", "spread", 2),  # spread needs a group
    (b'{"spread": -1, "group": "g"}', 422, "invalid_job", "spread", -1),
    (b'{"group": ""}', 422, "invalid_job", "group", ""),
    (b'{"ttl_s": 0}', 422, "invalid_job", "ttl_s", 0),
    (b'{"ttl_s": 601}', 422, "invalid_job", "ttl_s", 601),  # over http.max_place_ttl_s
    (b'{"ttl_s": "1"}', 422, "invalid_job", "ttl_s", "1"),
    (b'{"explain": "yes"}', 422, "invalid_job", "explain", "yes"),
    (b'{"zone": 3}', 422, "invalid_job", "zone", 3),
    (b'{"tolerations": "gpu"}', 422, "invalid_job", "tolerations", "gpu"),
    (
        b'{"tolerations": ["gpu=true:NoExecute"]}',
        422,
        "invalid_job",
        "tolerations",
        ["gpu=true:NoExecute"],
    ),
    (
        b'{"affinity": [{"key": "disk", "op": "Near", "values": ["ssd"]}]}',
        422,
        "invalid_job",
        "affinity[0]",
        {"key": "disk", "op": "Near", "values": ["ssd"]},
    ),
    (
        b'{"affinity": [{"key": "disk", "op": "In"}]}',  # In needs values
        422,
        "invalid_job",
        "affinity[0]",
        {"key": "disk", "op": "In"},
    ),
    (
        b'{"affinity": [{"key": "k", "op": "Exists", "w": 1}]}',
        422,
        "invalid_job",
        "affinity[0].w",
        1,
    ),
    (b"[" * 2000, 400, "invalid_json", "body", None),  # nested too deeply
]


@pytest.mark.parametrize("body, status, code, field, value", BAD)
def test_bad_bodies_name_the_field_and_value_and_place_nothing(
    api, body, status, code, field, value
):
    client, _api = api
    r = client.post("/v1/place", content=body, headers={**AUTH, "content-type": "application/json"})
    e = _err(r, status, code, field, value)
    assert e["message"]
    assert all(_in_flight(client, n) == 0 for n in "abcd")


def test_place_needs_json_and_a_small_body(api):
    client, _api = api
    r = client.post("/v1/place", content=b"{}", headers={**AUTH, "content-type": "text/plain"})
    _err(r, 415, "unsupported_media_type", "Content-Type", "text/plain")
    big = json.dumps({"selector": {f"k{i}": "v" * 40 for i in range(100)}}).encode()
    r = client.post("/v1/place", content=big, headers={**AUTH, "content-type": "application/json"})
    _err(r, 413, "body_too_large", "body", len(big))


@pytest.mark.parametrize(
    "token, loopback, given, status, code",
    [
        (TOKEN, False, None, 401, "token_missing"),
        (TOKEN, False, "wrong", 401, "token_invalid"),
        (TOKEN, True, None, 401, "token_missing"),
        (None, False, None, 403, "mutations_disabled"),
        (None, True, None, 200, None),  # loopback without a token file
    ],
)
def test_place_and_release_need_the_token(engine, token, loopback, given, status, code):
    view = EngineView(engine.name)
    app, api = build_app(view, _settings(token=token, loopback=loopback))
    headers = {} if given is None else {"authorization": f"Bearer {given}"}
    try:
        with TestClient(app) as client:
            r = _place(client, {"requests": {"cpu": 1}}, headers=headers)
            assert r.status_code == status, r.text
            if code is not None:
                assert r.json()["error"]["code"] == code
                assert all(_in_flight(client, n) == 0 for n in "abcd")
                r = _release(client, {"id": "x", "ok": True}, headers=headers)
                assert r.status_code == status and r.json()["error"]["code"] == code
            else:
                pid = r.json()["id"]
                assert _release(client, {"id": pid, "ok": True}, headers=headers).json()["held"]
    finally:
        api.close()
        view.close()


def test_a_batch_places_each_job_on_its_own(api):
    client, _api = api
    jobs = [
        {"requests": {"cpu": 3}},  # a (4 CPUs)
        {"requests": {"cpu": 3}},  # nothing left with 3 CPUs but the tainted c
        {"requests": {"tpu": 1}},  # a resource the engine does not place
        {"cpus": 1},  # not a job field
        {"requests": {"gpu": 1}, "tolerations": ["gpu"]},  # c
    ]
    r = _place(client, jobs)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x.get("node") for x in res] == ["a", None, None, None, "c"]
    errors = [x.get("error") for x in res]
    assert errors[1]["code"] == "unschedulable" and errors[1]["status"] == 409
    assert errors[1]["counts"] == {"insufficient cpu": 3, "taint gpu=true:NoSchedule": 1}
    assert (errors[2]["code"], errors[2]["field"], errors[2]["value"]) == (
        "invalid_job",
        "[2].requests.tpu",
        1,
    )
    assert (errors[3]["field"], errors[3]["value"]) == ("[3].cpus", 1)
    assert _in_flight(client, "a") == 1 and _in_flight(client, "c") == 1
    ids = [{"id": x["id"], "ok": True} for x in res if "id" in x]
    assert [x["held"] for x in _release(client, ids).json()["results"]] == [True, True]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9"])
def test_a_page_of_another_origin_cannot_place(engine, origin):
    # Loopback without a token: what a browser on the engine's host could reach.
    view = EngineView(engine.name)
    app, api = build_app(view, _settings(token=None, loopback=True))
    try:
        with TestClient(app, base_url="http://127.0.0.1:7720") as client:
            r = _place(client, {"requests": {"cpu": 1}}, headers={"origin": origin})
            _err(r, 403, "cross_origin", "Origin", origin)
            r = client.post("/v1/reload", headers={"origin": origin})
            _err(r, 403, "cross_origin", "Origin", origin)
            assert all(_in_flight(client, n) == 0 for n in "abcd")
            # The server's own origin (its dashboard) and no Origin (not a browser) pass.
            r = _place(
                client, {"requests": {"cpu": 1}}, headers={"origin": "http://127.0.0.1:7720"}
            )
            assert r.status_code == 200, r.text
            assert _place(client, {"requests": {"cpu": 1}}, headers={}).status_code == 200
    finally:
        api.close()
        view.close()


# ----------------------------------------------------------------- release --
@pytest.mark.parametrize(
    "body, field, value",
    [
        ({"ok": True}, "id", None),
        ({"id": 7, "ok": True}, "id", 7),
        ({"id": "x"}, "ok", None),
        ({"id": "x", "ok": "yes"}, "ok", "yes"),
        ({"id": "x", "ok": True, "why": 1}, "why", 1),
        ([{"id": "x", "ok": True}, {"id": "y"}], "[1].ok", None),
        ([], "body", 0),
        ("x", "body", "str"),
    ],
)
def test_bad_releases_name_the_field(api, body, field, value):
    client, _api = api
    code = "bad_batch" if body == [] else "bad_field"
    _err(_release(client, body), 422, code, field, value)


def test_a_batch_release_answers_each(api):
    client, _api = api
    ids = [_place(client, {"requests": {"cpu": 0.5}}).json()["id"] for _ in range(3)]
    assert sum(_in_flight(client, n) for n in "abcd") == 3
    r = _release(
        client,
        [
            {"id": ids[0], "ok": True},
            {"id": ids[1], "ok": False},
            {"id": "nope", "ok": True},
            {"id": ids[0], "ok": True},
        ],
    )
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x.get("held") for x in res] == [True, True, None, None]
    assert [x["ok"] for x in res[:2]] == [True, False]
    assert [x["error"]["code"] for x in res[2:]] == ["unknown_placement", "unknown_placement"]
    assert sum(_in_flight(client, n) for n in "abcd") == 1
    # The error release counted on its node: one error in its outcome window.
    assert _release(client, {"id": ids[2], "ok": True}).json()["held"]


def test_the_held_placements_are_bounded(api):
    client, _api = api  # the engine's [placement] max_reservations per process: 8
    ids = [_place(client, {"requests": {"cpu": 0.1}}).json()["id"] for _ in range(8)]
    e = _err(_place(client, {"requests": {"cpu": 0.1}}), 503, "reservation_limit")
    assert "8 open reservations" in e["message"]
    assert _release(client, {"id": ids[0], "ok": True}).status_code == 200
    assert _place(client, {"requests": {"cpu": 0.1}}).status_code == 200


# ------------------------------------------------------------------- lease --
def test_a_placement_not_released_within_its_lease_is_returned(api):
    client, api_ = api
    now = [1000.0]
    leases = api_.leases()
    leases.clock = lambda: now[0]
    first = _place(client, {"requests": {"cpu": 4}, "ttl_s": 5}).json()
    assert first["node"] == "a" and first["ttl_s"] == 5
    second = _place(client, {"requests": {"cpu": 1}, "ttl_s": 60}).json()
    # a is full; c is tainted: no 4-CPU node is left.
    _err(_place(client, {"requests": {"cpu": 4}}), 409, "unschedulable")
    now[0] += 4.9
    api_.beat()  # what the server does every beat
    assert len(leases) == 2 and leases.expired == 0
    now[0] += 0.1
    api_.beat()
    assert len(leases) == 1 and leases.expired == 1
    # The reservation is back and the claim closed (no outcome).
    assert _in_flight(client, "a") == (1 if second["node"] == "a" else 0)
    third = _place(client, {"requests": {"cpu": 4}, "ttl_s": 60}).json()
    assert third["node"] == "a" and second["node"] != "a"
    _err(_release(client, {"id": first["id"], "ok": True}), 410, "lease_expired", "id", first["id"])
    assert _release(client, {"id": second["id"], "ok": True}).json()["held"]


def test_closing_the_server_returns_what_it_holds(engine):
    view = EngineView(engine.name)
    app, api = build_app(view, _settings())
    try:
        with TestClient(app) as client:
            for _ in range(3):
                assert _place(client, {"requests": {"cpu": 0.5}}).status_code == 200
            assert sum(_in_flight(client, n) for n in "abcd") == 3
            api.close()
            assert sum(_in_flight(client, n) for n in "abcd") == 0
            hwm = int(engine.views.header.slot_hwm[0])
            held = reserved_units(engine.claims.views, engine.views.registry.slot_gen, hwm)
            assert int(held.sum()) == 0
    finally:
        api.close()
        view.close()
