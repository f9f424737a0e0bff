"""The feed and the mirror in one process: exactness, gaps, zones, feedback.

A `support.feed.FeedRig` ticks real engines (segments, registry, `Ticker`),
encodes their frames with `FeedPublisher` and applies the decoded bytes to a
`Mirror`, so everything but the sockets is the product's.  The loopback
tests with engine processes are in ``test_feed_e2e.py``.
"""

import time

import numpy as np
import pytest

from clients.reader import ScoreReader
from shm_engine.core.claims import in_flight_by_slot
from shm_engine.feed import format as ff
from shm_engine.feed.mirror import read_excluded, read_mirror_status
from shm_engine.feed.publisher import FeedbackSink
from support.feed import FeedRig, compare


@pytest.fixture
def rig_of(shm_names):
    made = []

    def make(**kw):
        rig = FeedRig(shm_names, **kw)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def _beat(eng, k: int, nodes: int = 12) -> None:
    """Heartbeats whose queue and cpu differ per node and per round ``k``."""
    for i in range(nodes):
        eng.send(f"{eng.name[-6:]}-n{i:02d}", cpu=0.02 * ((i + k) % 9), queue=float((i * k) % 5))


def test_mirror_publishes_exactly_what_the_engine_published(rig_of):
    rig = rig_of(full_every=4)
    eng = rig.engines[0]
    for k in range(10):
        _beat(eng, k)
        if k == 9:
            eng.forget(f"{eng.name[-6:]}-n03")  # freed: gone from the mirror too
        assert rig.step() == ["applied"]
        assert compare(eng.name, rig.mirror.name) == []
    with ScoreReader.attach(rig.mirror.name) as m:
        assert f"{eng.name[-6:]}-n03" not in set(m.snapshot().nodes)


def test_deltas_carry_only_changed_rows_and_full_frames_all(rig_of):
    rig = rig_of(full_every=3)
    eng = rig.engines[0]
    _beat(eng, 0)
    first = rig.frame(0)
    assert first.kind == ff.KIND_FULL and len(first.idents) == 12 and len(first.rows) == 12
    # Nothing changed since: the engine republishes the same values, no row travels.
    second = rig.frame(0, tick=False)
    assert second.kind == ff.KIND_DELTA and len(second.rows) == 0 and len(second.idents) == 0
    third, fourth = rig.frame(0, tick=False), rig.frame(0, tick=False)
    assert third.kind == ff.KIND_DELTA
    assert fourth.kind == ff.KIND_FULL  # one frame in full_every = 3 is full
    assert [f.seq for f in (first, second, third, fourth)] == [1, 2, 3, 4]


def test_a_dropped_frame_is_a_gap_repaired_by_a_full_frame(rig_of):
    rig = rig_of(full_every=1000)
    eng, m = rig.engines[0], rig.mirror
    _beat(eng, 0)
    assert rig.step() == ["applied"]
    _beat(eng, 1)
    rig.frame(0)  # lost on the way (a slow subscriber's high-water mark)
    _beat(eng, 2)
    assert rig.step() == ["gap"]
    assert read_mirror_status(m.name)["zones"][0]["gaps"] == 1
    _beat(eng, 3)
    assert rig.step() == ["ignored"]  # deltas wait for the full frame
    assert compare(eng.name, m.name) != []  # the mirror still shows round 0
    rig.pubs[0].full_pending = True  # what the mirror's snapshot request does
    assert rig.step() == ["applied"]
    assert compare(eng.name, m.name) == []


def test_a_restarted_engine_registers_every_node_anew(rig_of):
    rig = rig_of()
    eng, m = rig.engines[0], rig.mirror
    _beat(eng, 0)
    rig.step()
    node = f"{eng.name[-6:]}-n01"
    with ScoreReader.attach(m.name) as r:
        c = r.claim(node)
        gen = int(m.reg.slot_gen[eng.registry.get(node.encode())])
        rig.pubs[0].engine_run ^= 1  # what a new segment of the engine gives
        rig.pubs[0].full_pending = True
        _beat(eng, 1)
        assert rig.step() == ["applied"]
        assert int(m.reg.slot_gen[eng.registry.get(node.encode())]) == gen + 2
        assert compare(eng.name, m.name) == []
        assert c.release(ok=True) is False  # made on the old run's registration


def test_a_restarted_feed_child_is_a_new_stream(rig_of):
    rig = rig_of()
    eng = rig.engines[0]
    _beat(eng, 0)
    rig.step()
    gens = rig.mirror.reg.slot_gen.copy()
    old = rig.pubs[0]
    rig.pubs[0] = type(old)(eng.views, full_every=1000)  # a new feed child
    _beat(eng, 1)
    # A new stream's first frame is full: applied at once, no request needed.
    assert rig.step() == ["applied"]
    assert read_mirror_status(rig.mirror.name)["zones"][0]["snapshots"] == 2
    # The same engine run: its registrations (and claims on them) carry on.
    assert np.array_equal(rig.mirror.reg.slot_gen, gens)
    assert compare(eng.name, rig.mirror.name) == []


def test_zones_map_to_disjoint_slots_and_a_stale_zone_leaves_the_ranking(rig_of):
    rig = rig_of(zones=("eu", "us", "ap"), capacity=32)
    m = rig.mirror
    t0 = time.monotonic()
    for k in range(3):
        for eng in rig.engines:
            _beat(eng, k)
        rig.step(now=t0 + 0.05 * k)
    for eng in rig.engines:
        assert compare(eng.name, m.name) == []
    with ScoreReader.attach(m.name) as r:
        snap = r.snapshot()
        zone_of = {n: s // 32 for s, n in enumerate(snap.nodes) if n is not None}
        assert sorted(set(zone_of.values())) == [0, 1, 2] and len(zone_of) == 36
        # "us" (zone 1) goes silent; the others keep publishing.
        later = t0 + 0.05 * 2 + m.stale_after_s + 0.1
        for eng in (rig.engines[0], rig.engines[2]):
            _beat(eng, 9)
        rig.step(zones=(0, 2), now=later)
        m.check_fresh(later)
        m.publish(later)
        zones = read_mirror_status(m.name)["zones"]
        assert [z["state"] for z in zones] == ["fresh", "stale", "fresh"]
        assert [z["zone"] for z in zones] == ["eu", "us", "ap"]
        excluded = read_excluded(m.name)
        assert excluded[32:64].all() and not excluded[:32].any() and not excluded[64:].any()
        rng = np.random.default_rng(5)
        picked = {r.pick(rng=rng) for _ in range(300)}
        assert picked and all(zone_of[n] != 1 for n in picked)
        assert all(zone_of[n] != 1 for n, _s in r.top(36))
        for i in (0, 2):
            assert compare(rig.engines[i].name, m.name) == []
        # "us" is back: its next frames resynchronise it (a full frame first).
        rig.pubs[1].full_pending = True
        _beat(rig.engines[1], 10)
        rig.step(zones=(1,), now=later + 0.01)
        assert [z["state"] for z in read_mirror_status(m.name)["zones"]][1] == "fresh"
        assert not read_excluded(m.name).any()
        assert any(zone_of[n] == 1 for n, _s in r.top(36))


def test_upstream_slots_beyond_the_zone_span_are_counted_not_written(rig_of):
    rig = rig_of(zones=("a", "b"), capacity=16, zone_slots=8)
    _beat(rig.engines[0], 0, nodes=10)
    rig.step(zones=(0,))
    zone = read_mirror_status(rig.mirror.name)["zones"][0]
    assert zone["overflow"] >= 4 and zone["nodes"] == 8  # 2 rows + 2 idents beyond span


def test_claims_on_the_mirror_reach_the_engine_and_a_silent_mirror_is_abandoned(rig_of):
    rig = rig_of()
    eng, m = rig.engines[0], rig.mirror
    _beat(eng, 0)
    rig.step()
    node = f"{eng.name[-6:]}-n04"
    sink = FeedbackSink(eng.claims.views, eng.views.registry.slot_gen, rig.pubs[0].stream, 2.0)
    for up in m.ups:
        up.feedback_port = 7999  # announced by the engine's full frames in a real feed
    now = time.monotonic()

    def forward(at):
        for _i, data in m.feedback_frames(at):
            fr = ff.decode_feedback(data, eng.claims.layout.capacity)
            assert not isinstance(fr, str), fr
            assert sink.apply(fr, at)

    with ScoreReader.attach(m.name) as r:
        c1, c2 = r.claim(node), r.claim(node)
        forward(now)
        slot = eng.registry.get(node.encode())
        reg = eng.views.registry
        assert in_flight_by_slot(eng.claims.views, reg.slot_gen, reg.registered, 64)[slot] == 2
        eng.tick()
        assert eng.published("rif", slot) == 2.0  # the engine's score sees them
        c1.release(ok=True)
        c2.release(ok=False)
        forward(now + 0.01)
        eng.tick()
        assert eng.published("rif", slot) == 0.0
        assert (eng.published("fb_ok", slot), eng.published("fb_err", slot)) == (1.0, 1.0)
        c3 = r.claim(node)
        forward(now + 0.02)
        assert in_flight_by_slot(eng.claims.views, reg.slot_gen, reg.registered, 64)[slot] == 1
        # The mirror goes silent: its forwarded claim is abandoned after the timeout.
        assert sink.expire(now + 0.02 + 2.0) == 1
        assert sink.abandoned == 1 and not eng.claims.views.lease_ident.any()
        assert in_flight_by_slot(eng.claims.views, reg.slot_gen, reg.registered, 64)[slot] == 0
        c3.release(ok=True)


def test_feedback_about_another_stream_is_refused(rig_of):
    rig = rig_of()
    eng = rig.engines[0]
    sink = FeedbackSink(eng.claims.views, eng.views.registry.slot_gen, 1234, 2.0)
    data = ff.encode_feedback(
        flags=0,
        mirror=1,
        stream=999,
        seq=1,
        in_flight=np.zeros(0, ff.IN_FLIGHT_DTYPE),
        outcomes=np.zeros(0, ff.OUTCOME_DTYPE),
    )
    fr = ff.decode_feedback(data, 64)
    assert not sink.apply(fr, 0.0) and sink.refused == 1 and not sink.mirrors


def test_top_shows_a_mirrors_zones(rig_of):
    from shm_engine.ops.topview import Watcher, render

    rig = rig_of(zones=("eu", "us"), capacity=16)
    for eng in rig.engines:
        _beat(eng, 0, nodes=4)
    rig.step()
    with Watcher(rig.mirror.name) as w:
        vs = w.poll()
    assert [(z["zone"], z["state"], z["nodes"]) for z in vs.zones] == [
        ("eu", "fresh", 4),
        ("us", "fresh", 4),
    ]
    assert vs.registered == 8
    pytest.importorskip("rich")
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(render(vs))
    assert "zone us: fresh, 4 nodes" in console.export_text()


def test_a_mirror_whose_upstream_went_silent_reads_stale(rig_of):
    from shm_engine.ops.status import read_status, render

    rig = rig_of()
    m = rig.mirror
    _beat(rig.engines[0], 0)
    silent_since = time.monotonic() - 1.5  # the last frame came 1.5 s ago
    rig.step(now=silent_since)
    m.check_fresh(time.monotonic())
    m.publish(time.monotonic())  # the zone leaves the ranking ...
    with ScoreReader.attach(m.name) as r:
        # ... but the epoch keeps the time of the newest frame: never fresh-looking.
        assert r.is_stale(1.0) and not r.is_stale(5.0)
        assert r.top(5) == [] and r.pick() is None
    st = read_status(m.name)
    assert st["last_tick_age_s"] >= 1.5
    assert st["mirror"]["zones"][0]["state"] == "stale"
    assert st["feed"] is None  # a mirror runs no feed of its own
    line = [x for x in render(st).splitlines() if x.startswith("zone")]
    assert len(line) == 1 and " STALE from tcp://127.0.0.1:7000: 12 nodes" in line[0]


def test_metrics_export_a_mirrors_zones(rig_of):
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from shm_engine.ops.metrics import EngineCollector

    rig = rig_of(zones=("eu", "us"), capacity=16)
    for eng in rig.engines:
        _beat(eng, 0, nodes=3)
    rig.step()
    registry = CollectorRegistry()
    registry.register(EngineCollector(rig.mirror.name))
    text = generate_latest(registry).decode()
    assert f'shm_engine_mirror_zone_fresh{{engine="{rig.mirror.name}",zone="us"}} 1.0' in text
    assert "shm_engine_mirror_zone_gaps_total" in text


def test_the_publishers_rows_are_the_documented_records(rig_of):
    rig = rig_of()
    eng = rig.engines[0]
    _beat(eng, 0)
    fr = rig.frame(0)
    buf = eng.views.buffers[fr.epoch & 1].views
    s = fr.rows["slot"].astype(np.int64)
    assert s.tolist() == list(range(12))
    for col in ff.ROW_FLOATS[:-1]:
        assert fr.rows[col].tolist() == buf[col][s].tolist()
    assert fr.rows["slots"].tolist() == eng.views.table.slots[s].tolist()
    assert fr.rows["state"].tolist() == buf["state"][s].tolist()
    assert fr.rows["gen"].tolist() == buf["gen"][s].tolist()


@pytest.mark.parametrize("seed", range(6))
def test_merging_moved_rows_gives_the_order_of_a_full_sort(seed):
    from shm_engine.feed.mirror import rerank

    rng = np.random.default_rng(seed)
    n = 300
    # Few distinct scores, so ties (broken by slot) are everywhere.
    score = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], n)
    state = rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1]).astype(np.uint8)
    excluded = rng.random(n) < 0.05

    def full():
        elig = np.flatnonzero((state <= 1) & (score > 0) & ~excluded)
        return elig[np.lexsort((elig, -score[elig]))]

    order = np.zeros(n, np.int32)
    tmp = np.zeros(n, np.int32)
    ref = full()
    order[: len(ref)] = ref
    m = len(ref)
    for _ in range(50):
        changed = np.sort(rng.choice(n, rng.integers(1, 20), replace=False))
        score[changed] = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], len(changed))
        state[changed] = rng.choice([0, 1, 3], len(changed)).astype(np.uint8)
        is_changed = np.zeros(n, bool)
        is_changed[changed] = True
        m = rerank(order, m, changed, score, state, excluded, is_changed, tmp)
        order, tmp = tmp, order
        assert order[:m].tolist() == full().tolist()


def test_a_node_id_two_zones_report_is_the_first_holders_until_it_is_freed(rig_of):
    rig = rig_of(zones=("eu", "us"), capacity=16)
    eu, us = rig.engines
    m = rig.mirror
    for eng, zone in ((eu, "eu"), (us, "us")):
        for i in range(3):
            eng.send(f"{zone}-n{i}", cpu=0.1 * (i + 1))
        eng.send("shared-1", cpu=0.05 if zone == "eu" else 0.5)
    rig.step()  # eu's frame is applied first: eu's node takes the id
    zones = read_mirror_status(m.name)["zones"]
    assert [z["duplicates"] for z in zones] == [0, 1] and [z["nodes"] for z in zones] == [4, 3]
    assert compare(eu.name, m.name) == []
    with ScoreReader.attach(m.name) as r:
        snap = r.snapshot()
        assert snap.nodes.count("shared-1") == 1 and snap.nodes.index("shared-1") < 16
        # us's node is neither named nor ranked: top lists the id once, eu's score.
        top = dict(r.top(10))
        assert len(r.top(10)) == 7 and top["shared-1"] == r.score("shared-1")
        with ScoreReader.attach(eu.name) as e:
            assert r.score("shared-1") == e.score("shared-1")
        # A later full frame of us refuses it again (counted again).
        rig.pubs[1].full_pending = True
        rig.step()
        assert read_mirror_status(m.name)["zones"][1]["duplicates"] == 2
        # eu forgets it: us's node gets the id from us's next full frame.
        eu.forget("shared-1")
        rig.step()
        assert "shared-1" not in r.snapshot().nodes
        rig.pubs[1].full_pending = True
        rig.step()
        assert r.snapshot().nodes.index("shared-1") >= 16
        assert compare(us.name, m.name) == [] and compare(eu.name, m.name) == []


def test_ids_that_swap_slots_within_one_frame_are_no_duplicates(rig_of):
    rig = rig_of()
    eng, m = rig.engines[0], rig.mirror
    eng.send("a", cpu=0.1)
    eng.send("b", cpu=0.2)
    rig.step()
    # b takes slot 0 and a slot 1: one delta frees and registers both slots.
    eng.forget("a")
    eng.forget("b")
    eng.send("b", cpu=0.3)
    eng.send("a", cpu=0.4)
    assert [eng.registry.get(n) for n in (b"b", b"a")] == [0, 1]
    assert rig.step() == ["applied"]
    assert read_mirror_status(m.name)["zones"][0]["duplicates"] == 0
    assert compare(eng.name, m.name) == []
