"""shm_engine.ingest.process: frames in, rows and registrations out, counters exact.

In-process tests drive `Ingest.handle_frame` over a real segment with a
logical clock (``now`` is passed in); the process tests run `ingest_main` in a
spawned child on a loopback port and wait on the header counters.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from shm_engine.core.config import Config
from shm_engine.core.registry import decode_id
from shm_engine.core.runtime import EXIT_FATAL
from shm_engine.core.segment import Segment, process_alive
from shm_engine.ingest import process as ingest_mod
from shm_engine.ingest.process import Ingest, ingest_main
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.encode import encode_batch, encode_json
from shm_engine.wire.format import (
    HAS_IO,
    HAS_OKERR,
    HAS_TAIL,
    HAS_THROUGHPUT,
    HEADER,
    MAGIC,
    RECORD_DTYPE,
    REJECT_REASONS,
    V1_RECORD_SIZE,
    V1_VERSION,
)

FORGET = 300.0  # engine.forget_after_s (the default), seconds


def make_config(**ingest) -> Config:
    cfg = Config()
    return Config.from_dict(
        {
            "engine": {"forget_after_s": FORGET, "parent_check_interval_s": 0.05},
            "ingest": {"max_frame_bytes": cfg.ingest.max_frame_bytes, **ingest},
        }
    )


@pytest.fixture
def seg(shm_name):
    s = Segment.create(shm_name, capacity=8)
    yield s
    s.close()


@pytest.fixture
def ing(seg):
    return Ingest(seg.views, make_config())


def hb(node: str, **kw) -> dict:
    out = {"node": node, "cpu": 0.5, "mem": 0.25, "queue": 2.0, "avg_job_s": 0.5}
    out.update(kw)
    return out


def slot_of(views, node: str) -> int:
    """The slot ``node`` is registered in, from the segment itself; -1 if none."""
    reg = views.registry
    for s in range(int(views.header.slot_hwm[0])):
        if reg.registered[s] and decode_id(reg.node_id[s]) == node.encode():
            return s
    return -1


def counters(views) -> dict:
    h = views.header
    out = {
        "frames": int(h.ingest_frames[0]),
        "heartbeats": int(h.ingest_heartbeats[0]),
        "accepted": int(h.ingest_accepted[0]),
    }
    out.update({r: int(h.rejects[i]) for i, r in enumerate(REJECT_REASONS) if h.rejects[i]})
    return out


def assert_balanced(views) -> None:
    h = views.header
    assert int(h.ingest_accepted[0]) + int(h.rejects.sum()) == int(h.ingest_heartbeats[0])


# --------------------------------------------------------------------------
# Registration and forgetting


def test_first_heartbeats_take_the_lowest_free_slots(ing, seg):
    v = seg.views
    ing.handle_frame(encode_batch([hb("a"), hb("b"), hb("c")]), 0.0)
    assert [slot_of(v, n) for n in "abc"] == [0, 1, 2]
    # t=200: a and c report again; at t=300 b's age is 300 >= 300: forgotten.
    ing.handle_frame(encode_batch([hb("a"), hb("c")]), 200.0)
    assert ing.forget(300.0) == [1]
    assert slot_of(v, "b") == -1 and int(v.header.registered[0]) == 2
    # The next new node takes slot 1, the lowest free one (not slot 3).
    ing.handle_frame(encode_json(hb("d")), 301.0)
    assert slot_of(v, "d") == 1
    assert int(v.header.slot_hwm[0]) == 3
    assert_balanced(v)


def test_a_node_too_old_at_arrival_is_registered_anew_in_the_lowest_free_slot(ing, seg):
    v = seg.views
    ing.handle_frame(encode_batch([hb("p"), hb("q")]), 0.0)  # p: 0, q: 1
    ing.handle_frame(encode_json(hb("q")), 250.0)
    assert ing.forget(300.0) == [0]  # p: age 300
    gen_q = int(v.registry.slot_gen[1])
    # t=550: q's age is 550 - 250 = 300 >= forget_after_s; the periodic
    # forget has not run yet, so the arrival itself forgets q: slot 1 is
    # freed and q registered anew in slot 0, the lowest free slot.
    ing.handle_frame(encode_json(hb("q", queue=7.0)), 550.0)
    assert slot_of(v, "q") == 0
    assert v.registry.registered[1] == 0
    assert int(v.registry.slot_gen[1]) == gen_q + 2  # freed once
    assert v.table.recv_time[0] == 550.0 and v.table.queue[0] == 7.0
    assert int(v.header.registered[0]) == 1


def test_a_node_younger_than_forget_after_keeps_its_slot_and_generation(ing, seg):
    v = seg.views
    ing.handle_frame(encode_json(hb("a")), 0.0)
    gen = int(v.registry.slot_gen[0])
    ing.handle_frame(encode_json(hb("a")), FORGET - 0.001)
    assert int(v.registry.slot_gen[0]) == gen
    assert ing.forget(FORGET) == []


def test_same_node_twice_in_a_new_registration_frame_gets_one_slot(ing, seg):
    v = seg.views
    # New node twice in one frame: the second must not see the fresh slot's
    # never-written row as "too old" and register it again.
    ing.handle_frame(encode_batch([hb("n", queue=1.0), hb("m"), hb("n", queue=2.0)]), 1e6)
    assert slot_of(v, "n") == 0 and slot_of(v, "m") == 1
    assert int(v.header.registered[0]) == 2
    assert v.table.queue[0] == 2.0  # the later heartbeat of the frame wins
    assert int(v.table.row_version[0]) == 4
    assert_balanced(v)


def test_registry_full_rejects_new_nodes_and_keeps_known_ones(shm_name):
    seg = Segment.create(shm_name, capacity=2)
    try:
        v = seg.views
        ing = Ingest(v, make_config())
        # a, b fill both slots; c is rejected; b's second heartbeat is kept.
        ing.handle_frame(encode_batch([hb("a"), hb("b"), hb("c"), hb("b", cpu=0.75)]), 5.0)
        assert counters(v) == {"frames": 1, "heartbeats": 4, "accepted": 3, "registry_full": 1}
        assert slot_of(v, "c") == -1
        assert v.table.cpu[1] == 0.75
        # Full again through JSON; a freed slot is taken by the next new node.
        ing.handle_frame(encode_json(hb("d")), 6.0)
        assert counters(v)["registry_full"] == 2
        ing.handle_frame(encode_json(hb("b")), 300.0)
        assert ing.forget(305.0) == [0]  # a: age 300
        ing.handle_frame(encode_json(hb("d")), 306.0)
        assert slot_of(v, "d") == 0
        assert_balanced(v)
    finally:
        seg.close()


def test_ingest_adopts_the_registry_of_a_previous_ingest(ing, seg):
    v = seg.views
    ing.handle_frame(encode_batch([hb("a"), hb("b")]), 1.0)
    again = Ingest(v, make_config())  # a restarted ingest
    again.handle_frame(encode_batch([hb("b"), hb("c")]), 2.0)
    assert [slot_of(v, n) for n in "abc"] == [0, 1, 2]
    assert int(v.header.registered[0]) == 3


# --------------------------------------------------------------------------
# Rejections


def _binary_header(version=1, record_size=192, count=0, reserved=0) -> bytes:
    return struct.pack("<4sHHII", b"SHMH", version, record_size, count, reserved)


REJECT_CASES = [
    # (reason, frame); each frame holds exactly one rejected heartbeat
    ("frame_too_large", b"{" + b" " * 1100 + b"}"),  # max_frame_bytes = 1024 here
    ("malformed_frame", b"\xff\xfe"),
    ("malformed_frame", b'{"node": '),
    ("unsupported_version", _binary_header(version=2)),
    ("malformed_heartbeat", b"[17]"),
    ("missing_field", b'{"node":"a","cpu":0.5,"mem":0.5,"queue":1}'),
    ("bad_field", encode_json(hb("a")).replace(b'"cpu":0.5', b'"cpu":1.5')),
    ("bad_node_id", encode_json(hb("a")).replace(b'"node":"a"', b'"node":""')),
    ("unknown_field", encode_json(hb("a"))[:-1] + b',"gpu":0.5}'),
]


@pytest.mark.parametrize(
    "reason,frame", REJECT_CASES, ids=[f"{r}-{i}" for i, (r, _f) in enumerate(REJECT_CASES)]
)
def test_every_reject_reason_is_counted_and_nothing_is_applied(shm_name, reason, frame):
    seg = Segment.create(shm_name, capacity=4)
    try:
        v = seg.views
        ing = Ingest(v, make_config(max_frame_bytes=1024))
        ing.handle_frame(frame, 1.0)
        assert counters(v) == {"frames": 1, "heartbeats": 1, "accepted": 0, reason: 1}
        assert int(v.header.ingest_bytes[0]) == len(frame)
        assert int(v.header.registered[0]) == 0 and not v.table.row_version.any()
    finally:
        seg.close()


def test_registry_full_is_counted_in_its_slot(shm_name):
    seg = Segment.create(shm_name, capacity=1)
    try:
        ing = Ingest(seg.views, make_config())
        ing.handle_frame(encode_json(hb("a")), 1.0)
        ing.handle_frame(encode_json(hb("b")), 1.0)
        i = REJECT_REASONS.index("registry_full")
        assert int(seg.views.header.rejects[i]) == 1
        assert int(seg.views.header.rejects.sum()) == 1
    finally:
        seg.close()


def _records(*mappings) -> np.ndarray:
    """RECORD_DTYPE rows of valid mappings (to be corrupted by the test)."""
    frame = encode_batch(list(mappings))
    return np.frombuffer(frame, RECORD_DTYPE, offset=16).copy()


def test_bad_heartbeats_in_a_binary_batch_keep_the_good_ones(ing, seg):
    v = seg.views
    recs = _records(hb("good1"), hb("bad-cpu"), hb("good2"), hb("bad-nan"))
    recs[1]["cpu"] = 1.5
    recs[3]["queue"] = np.nan
    ing.handle_frame(encode_batch(recs), 3.0)
    assert counters(v) == {"frames": 1, "heartbeats": 4, "accepted": 2, "bad_field": 2}
    assert [slot_of(v, n) for n in ("good1", "good2", "bad-cpu", "bad-nan")] == [0, 1, -1, -1]


def test_bad_heartbeats_in_a_json_array_keep_the_good_ones(ing, seg):
    v = seg.views
    frame = b"[" + encode_json(hb("x")) + b',{"node":"y"},42,' + encode_json(hb("z", io=0.5)) + b"]"
    ing.handle_frame(frame, 3.0)
    assert counters(v) == {
        "frames": 1,
        "heartbeats": 4,
        "accepted": 2,
        "missing_field": 1,
        "malformed_heartbeat": 1,
    }
    assert [slot_of(v, n) for n in "xyz"] == [0, -1, 1]
    assert v.table.io[1] == 0.5


# --------------------------------------------------------------------------
# Rows and metadata


def test_rows_are_written_exactly(ing, seg):
    v = seg.views
    full = hb(
        "full",
        cpu=0.125,
        mem=0.75,
        queue=3.0,
        avg_job_s=0.25,
        throughput=12.5,
        ok=7,
        err=2,
        io=0.375,
        p50_ms=10.0,
        p95_ms=40.0,
        ts=1700000000.5,
    )
    ing.handle_frame(encode_json(full), 42.5)
    ing.handle_frame(encode_batch([hb("bare", queue=9.0)]), 43.5)
    t = v.table
    # column: (slot 0 from the JSON frame, slot 1 from the binary one)
    expected = {
        "recv_time": (42.5, 43.5),
        "cpu": (0.125, 0.5),
        "mem": (0.75, 0.25),
        "queue": (3.0, 9.0),
        "avg_job_s": (0.25, 0.5),
        "throughput": (12.5, 0.0),
        "ok": (7.0, 0.0),
        "err": (2.0, 0.0),
        "io": (0.375, 0.0),
        "p50_ms": (10.0, 0.0),
        "p95_ms": (40.0, 0.0),
        "ts": (1700000000.5, 0.0),
        "reported": (HAS_THROUGHPUT | HAS_OKERR | HAS_IO | HAS_TAIL, 0),
        "row_version": (2, 2),
    }
    for col, (a, b) in expected.items():
        assert getattr(t, col)[:2].tolist() == [a, b], col
    # A later heartbeat replaces the whole row: unreported metrics read 0.
    ing.handle_frame(encode_json(hb("full", cpu=0.0)), 44.0)
    assert (t.throughput[0], t.ok[0], t.io[0], t.p95_ms[0], t.reported[0]) == (0, 0, 0, 0, 0)
    assert (t.cpu[0], t.recv_time[0], t.row_version[0]) == (0.0, 44.0, 4)
    assert_balanced(v)


def test_zone_and_labels_are_stored_replaced_and_cleared(ing, seg):
    v = seg.views
    reg = v.registry
    ing.handle_frame(encode_json(hb("a", zone="eu-1", labels={"gpu": "a100", "b": "x"})), 1.0)
    assert bytes(reg.zone[0]).rstrip(b"\0") == b"eu-1"
    assert bytes(reg.labels[0, : reg.labels_len[0]]) == b'{"b":"x","gpu":"a100"}'
    meta, epoch = int(reg.meta_version[0]), int(v.header.registry_epoch[0])
    # Unchanged metadata: no version bump.
    ing.handle_frame(encode_json(hb("a", zone="eu-1", labels={"b": "x", "gpu": "a100"})), 2.0)
    assert (int(reg.meta_version[0]), int(v.header.registry_epoch[0])) == (meta, epoch)
    # Same length, other bytes: replaced.
    ing.handle_frame(encode_json(hb("a", zone="eu-1", labels={"b": "y", "gpu": "a100"})), 3.0)
    assert bytes(reg.labels[0, : reg.labels_len[0]]) == b'{"b":"y","gpu":"a100"}'
    assert int(reg.meta_version[0]) == meta + 2
    # A binary heartbeat carries no labels and here no zone: both cleared.
    ing.handle_frame(encode_batch([hb("a")]), 4.0)
    assert not reg.zone[0].any() and reg.labels_len[0] == 0
    # A binary zone is stored.
    ing.handle_frame(encode_batch([hb("a", zone="us-2")]), 5.0)
    assert bytes(reg.zone[0]).rstrip(b"\0") == b"us-2"
    assert int(v.header.registered[0]) == 1


def test_a_batch_of_one_left_by_rejects_is_applied_as_a_one_record_frame(shm_name):
    """A frame whose other heartbeat is rejected leaves a batch of one that
    the decoder keeps no `DecodedFrame.one` for: the same rows, registrations,
    zones and labels as the same heartbeats sent one per frame."""
    sent = [
        hb("a", zone="z1"),
        hb("a", zone="z2", queue=5.0),
        hb("b", labels={"k": "v"}),
        hb("b", labels={"k": "w"}, io=0.5),
        hb("a"),
        hb("c", zone="z3"),
    ]
    bad = dict(hb("x"), cpu=2.0)

    def padded(h):
        if "labels" in h:  # only JSON carries labels
            return b"[" + encode_json(h) + b"," + json.dumps(bad).encode() + b"]"
        recs = _records(h, hb("x"))
        recs[1]["cpu"] = 2.0
        return encode_batch(recs)

    lone = [encode_json(h) if "labels" in h else encode_batch([h]) for h in sent]
    pairs = [padded(h) for h in sent]
    assert all(decode_frame(f, 1 << 20).one is None for f in pairs)
    results = []
    for frames in (lone, pairs):
        seg = Segment.create(f"{shm_name}{len(results)}", capacity=8)
        try:
            ing = Ingest(seg.views, make_config())
            assert [ing.handle_frame(f, float(k)) for k, f in enumerate(frames)] == [1] * 6
            v = seg.views
            results.append([bytes(c) for c in v.table] + [bytes(c) for c in v.registry])
        finally:
            seg.close()
            seg.unlink()
    assert results[0] == results[1]


def test_the_last_heartbeat_of_a_node_in_a_frame_sets_its_zone(ing, seg):
    reg = seg.views.registry
    ing.handle_frame(encode_json(hb("a", zone="z1")), 1.0)
    ing.handle_frame(encode_batch([hb("a", zone="z2"), hb("a", zone="z1")]), 2.0)
    assert bytes(reg.zone[0]).rstrip(b"\0") == b"z1"
    ing.handle_frame(encode_batch([hb("a", zone="z1"), hb("a", zone="z3")]), 3.0)
    assert bytes(reg.zone[0]).rstrip(b"\0") == b"z3"


def test_a_large_batch_writes_every_row_exactly(shm_name):
    seg = Segment.create(shm_name, capacity=300)
    try:
        v = seg.views
        ing = Ingest(v, make_config())
        rng = np.random.default_rng(7)
        n = 250
        recs = _records(*[hb(f"node-{i:03d}") for i in range(n)])
        recs["cpu"] = rng.random(n)
        recs["queue"] = rng.random(n) * 50
        recs["throughput"] = rng.random(n) * 10
        recs["flags"] = np.where(np.arange(n) % 2 == 0, HAS_THROUGHPUT, 0)
        recs["throughput"][recs["flags"] == 0] = 0.0
        ing.handle_frame(encode_batch(recs), 9.0)
        assert counters(v) == {"frames": 1, "heartbeats": n, "accepted": n}
        t = v.table
        for col in ("cpu", "mem", "queue", "avg_job_s", "throughput"):
            np.testing.assert_array_equal(getattr(t, col)[:n], recs[col], err_msg=col)
        np.testing.assert_array_equal(t.reported[:n], recs["flags"])
        assert (t.recv_time[:n] == 9.0).all() and (t.row_version[:n] == 2).all()
        assert [decode_id(v.registry.node_id[s]) for s in range(n)] == recs["node"].tolist()
    finally:
        seg.close()


def test_a_repeated_batch_follows_registry_changes(ing, seg):
    """The same node list sent again is matched to its slots in bulk; any
    change in the registry since must still be seen."""
    v = seg.views
    names = [f"n{i}" for i in range(8)]
    frame = encode_batch([hb(x) for x in names])
    ing.handle_frame(frame, 0.0)
    ing.handle_frame(frame, 1.0)
    assert [slot_of(v, x) for x in names] == list(range(8))
    # Same length and first node, another node in the middle: its own slot.
    other = encode_batch([hb(x) for x in names[:3] + ["zz"] + names[4:]])
    ing.handle_frame(other, 2.0)  # capacity 8: zz does not fit
    assert counters(v)["registry_full"] == 1 and slot_of(v, "zz") == -1
    # n3 goes silent and is forgotten; zz takes its slot; the old frame
    # must then register n3 anew (nowhere: full) instead of writing zz's row.
    ing.handle_frame(encode_batch([hb(x) for x in names if x != "n3"]), 200.0)
    assert ing.forget(301.0) == [3]
    ing.handle_frame(encode_json(hb("zz", queue=5.0)), 302.0)
    assert slot_of(v, "zz") == 3
    ing.handle_frame(frame, 303.0)
    assert counters(v)["registry_full"] == 2 and slot_of(v, "n3") == -1
    assert v.table.queue[3] == 5.0 and v.table.recv_time[3] == 302.0
    assert (v.table.recv_time[[0, 1, 2, 4, 5, 6, 7]] == 303.0).all()
    assert_balanced(v)


# --------------------------------------------------------------------------
# Failures inside the ingest


def test_an_internal_error_is_counted_as_malformed_frame_and_the_next_frame_works(
    ing, seg, monkeypatch, capsys
):
    v = seg.views

    def broken(*args):
        raise RuntimeError("injected")

    with monkeypatch.context() as m:  # the row writer, for batches and batches of one
        m.setattr(ingest_mod, "write_rows", broken)
        assert ing.handle_frame(encode_batch([hb("a"), hb("b")]), 1.0) == 0
        assert ing.handle_frame(encode_batch([hb("a")]), 1.5) == 0
        assert counters(v) == {"frames": 2, "heartbeats": 3, "accepted": 0, "malformed_frame": 3}
        assert "ingest_internal_error" in capsys.readouterr().err
    assert ing.handle_frame(encode_batch([hb("a")]), 2.0) == 1
    assert_balanced(v)


def test_keyboard_interrupt_is_not_swallowed(ing, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_mod, "decode_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ing.handle_frame(encode_json(hb("a")), 1.0)


def test_reject_log_is_one_line_per_interval_with_samples(ing, capsys):
    ing.log.interval_s = 3600.0
    for i in range(5):
        ing.handle_frame(b"\x01not a frame %d" % i, 1.0)
    assert ing.log.maybe_flush(time.monotonic()) is False  # interval not over
    assert capsys.readouterr().err == ""
    assert ing.log.maybe_flush(time.monotonic(), force=True) is True
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "ingest_rejects" in lines[0] and "total=5" in lines[0]
    assert "malformed_frame=5" in lines[0] and lines[0].count("unknown frame kind") == 3


# --------------------------------------------------------------------------
# The process


def _free_tcp_endpoint() -> str:
    ctx = zmq.Context.instance()
    probe = ctx.socket(zmq.PULL)
    try:
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    finally:
        probe.close(0)
    return f"tcp://127.0.0.1:{port}"


def run_ingest(name: str, config: Config, parent_pid: int) -> None:
    """Spawn target: the exit code is ingest_main's return value (as the supervisor does)."""
    sys.exit(ingest_main(name, config, parent_pid))


def run_ingest_under(name: str, config: Config, pids) -> None:
    """Spawn target: an intermediate parent that starts the ingest, reports both
    pids, and waits to be killed."""
    child = mp.get_context("spawn").Process(target=run_ingest, args=(name, config, os.getpid()))
    child.start()
    pids.put((os.getpid(), child.pid))
    child.join()


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)  # poll interval, not synchronisation


def _exited(pid: int) -> bool:
    """Gone, or a zombie whose new parent has not reaped it yet."""
    if not process_alive(pid):
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")


def _start(shm_name, reap, **ingest):
    endpoint = _free_tcp_endpoint()
    config = make_config(bind=endpoint, **ingest)
    seg = Segment.create(shm_name, capacity=64)
    proc = mp.get_context("spawn").Process(target=run_ingest, args=(shm_name, config, os.getpid()))
    reap(proc)
    proc.start()
    h = seg.views.header
    wait_for(lambda: h.ingest_alive_mono[0] > 0 or not proc.is_alive(), 60, "ingest start")
    assert proc.is_alive(), f"ingest exited with {proc.exitcode}"
    return seg, proc, endpoint


def test_process_applies_json_and_binary_frames_and_stops_on_stopping(shm_name, reap):
    seg, proc, endpoint = _start(shm_name, reap)
    v = seg.views
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        push.connect(endpoint)
        t0 = time.monotonic()
        push.send(encode_json(hb("j1", zone="z", labels={"k": "v"})))
        push.send(encode_batch([hb(f"b{i}", queue=float(i)) for i in range(10)]))
        push.send(b"[1]")
        wait_for(lambda: v.header.ingest_frames[0] >= 3, 30, "3 frames counted")
        assert counters(v) == {
            "frames": 3,
            "heartbeats": 12,
            "accepted": 11,
            "malformed_heartbeat": 1,
        }
        assert slot_of(v, "j1") == 0
        assert [slot_of(v, f"b{i}") for i in range(10)] == list(range(1, 11))
        assert v.table.queue[1:11].tolist() == [float(i) for i in range(10)]
        # Receive times are this machine's CLOCK_MONOTONIC, taken on arrival.
        recv = v.table.recv_time[:11]
        assert t0 <= recv.min() <= recv.max() <= time.monotonic()
        assert bytes(v.registry.zone[0]).rstrip(b"\0") == b"z"
        assert int(v.header.ingest_bytes[0]) > 16 + 10 * 192
        alive = float(v.header.ingest_alive_mono[0])
        wait_for(lambda: v.header.ingest_alive_mono[0] > alive, 10, "alive time to advance")
        v.header.stopping[0] = 1
        proc.join(timeout=30)
        assert proc.exitcode == 0
    finally:
        push.close(0)
        ctx.term()
        seg.close()


def test_process_exits_when_its_parent_dies(shm_name, reap):
    endpoint = _free_tcp_endpoint()
    config = make_config(bind=endpoint)
    seg = Segment.create(shm_name, capacity=8)
    ctx = mp.get_context("spawn")
    pids = ctx.Queue()
    parent = ctx.Process(target=run_ingest_under, args=(shm_name, config, pids))
    reap(parent)
    parent.start()
    parent_pid, ingest_pid = pids.get(timeout=60)
    try:
        h = seg.views.header
        wait_for(lambda: h.ingest_alive_mono[0] > 0, 60, "ingest start")
        assert not _exited(ingest_pid)
        os.kill(parent_pid, signal.SIGKILL)
        parent.join(timeout=10)
        wait_for(lambda: _exited(ingest_pid), 30, "ingest to exit after its parent died")
    finally:
        if not _exited(ingest_pid):
            os.kill(ingest_pid, signal.SIGKILL)
        seg.close()


def test_process_exits_0_on_sigterm(shm_name, reap):
    seg, proc, _endpoint = _start(shm_name, reap)
    try:
        proc.terminate()
        proc.join(timeout=30)
        assert proc.exitcode == 0
    finally:
        seg.close()


@pytest.mark.parametrize("how", ["address_in_use", "bad_interface"])
def test_bind_failure_exits_78(shm_name, reap, how):
    ctx = zmq.Context()
    holder = ctx.socket(zmq.PULL)
    holder.setsockopt(zmq.LINGER, 0)
    try:
        if how == "address_in_use":
            port = holder.bind_to_random_port("tcp://127.0.0.1")
            endpoint = f"tcp://127.0.0.1:{port}"
        else:
            endpoint = "tcp://no-such-interface-xyz:7710"
        seg = Segment.create(shm_name, capacity=8)
        try:
            # An interface name is not provably loopback: allowed explicitly.
            config = make_config(bind=endpoint, allow_insecure=how == "bad_interface")
            proc = mp.get_context("spawn").Process(
                target=run_ingest, args=(shm_name, config, os.getpid())
            )
            reap(proc)
            proc.start()
            proc.join(timeout=60)
            assert proc.exitcode == EXIT_FATAL == 78
        finally:
            seg.close()
    finally:
        holder.close(0)
        ctx.term()


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_admits_authorized_clients_only(shm_name, reap, tmp_path):
    import zmq.auth

    keys = tmp_path / "authorized"
    keys.mkdir()
    _server_pub, server_secret = zmq.auth.create_certificates(str(tmp_path), "server")
    client_pub, client_secret = zmq.auth.create_certificates(str(tmp_path), "client")
    os.replace(client_pub, keys / "client.key")
    stranger_pub, stranger_secret = zmq.auth.create_certificates(str(tmp_path), "stranger")
    seg, proc, endpoint = _start(
        shm_name,
        reap,
        curve={"server_secret_key_file": server_secret, "authorized_keys_dir": str(keys)},
    )
    v = seg.views
    ctx = zmq.Context()
    server_key, _ = zmq.auth.load_certificate(server_secret)
    socks = []
    try:
        for name, secret_file in (("stranger", stranger_secret), ("client", client_secret)):
            pub, sec = zmq.auth.load_certificate(secret_file)
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.curve_publickey, push.curve_secretkey, push.curve_serverkey = pub, sec, server_key
            push.connect(endpoint)
            push.send(encode_json(hb(name)))
            socks.append(push)
        wait_for(lambda: v.header.ingest_frames[0] >= 1, 30, "the authorized frame")
        # A second round trip from the client gives the stranger's frame,
        # sent first, all the time it would need to arrive.
        socks[1].send(encode_json(hb("client")))
        wait_for(lambda: v.header.ingest_frames[0] >= 2, 30, "the second authorized frame")
        assert slot_of(v, "client") == 0 and slot_of(v, "stranger") == -1
        v.header.stopping[0] = 1
        proc.join(timeout=30)
        assert proc.exitcode == 0
        assert counters(v) == {"frames": 2, "heartbeats": 2, "accepted": 2}
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        seg.close()


def test_missing_curve_key_file_exits_78(shm_name, reap, tmp_path):
    seg = Segment.create(shm_name, capacity=8)
    try:
        config = make_config(
            bind=_free_tcp_endpoint(),
            curve={
                "server_secret_key_file": str(tmp_path / "absent.key_secret"),
                "authorized_keys_dir": str(tmp_path),
            },
        )
        proc = mp.get_context("spawn").Process(
            target=run_ingest, args=(shm_name, config, os.getpid())
        )
        reap(proc)
        proc.start()
        proc.join(timeout=60)
        assert proc.exitcode == EXIT_FATAL
    finally:
        seg.close()


def test_a_repeated_batch_sees_zone_changes_and_nodes_due_to_be_forgotten(ing, seg):
    """The remembered slots of a batch are checked in one compiled pass
    (`ingest._checks.check_slots`): a zone change and a node whose age has
    reached forget_after (300 s) must still take the record-by-record paths."""
    v, reg = seg.views, seg.views.registry
    names = [f"n{i}" for i in range(8)]
    ing.handle_frame(encode_batch([hb(x) for x in names]), 0.0)
    ing.handle_frame(encode_batch([hb(x) for x in names]), 1.0)  # remembered
    gen = [int(g) for g in reg.slot_gen[:8]]
    ing.handle_frame(encode_batch([hb(x, zone="z9" if x == "n5" else "") for x in names]), 2.0)
    assert bytes(reg.zone[5]).rstrip(b"\0") == b"z9" and not reg.zone[4].any()
    # n2 silent from 2 s on; at 302 s its age is 300 >= forget_after: registered
    # anew (new generation) in its own, lowest free, slot; the others keep theirs.
    ing.handle_frame(encode_batch([hb(x) for x in names if x != "n2"]), 150.0)
    ing.handle_frame(encode_batch([hb(x, zone="z9" if x == "n5" else "") for x in names]), 302.0)
    assert [slot_of(v, x) for x in names] == list(range(8))
    assert int(reg.slot_gen[2]) == gen[2] + 4
    assert [int(g) for g in reg.slot_gen[:8]][3:] == gen[3:]
    assert (v.table.recv_time[:8] == 302.0).all()
    assert_balanced(v)


def test_check_slots_statuses():
    """Table: registry of 3 slots, age limit 10; records for a (slot 0) and b (slot 1)."""
    from shm_engine.ingest._checks import AGED, META, STALE, check_slots

    def words(*ids_zones):
        recs = np.zeros(len(ids_zones), RECORD_DTYPE)
        recs["node"] = [i for i, _ in ids_zones]
        recs["zone"] = [z for _, z in ids_zones]
        return recs.view(np.uint64).reshape(len(recs), -1)

    node = np.zeros((3, 64), np.uint8)
    node[0, :1], node[1, :1] = ord("a"), ord("b")
    zone = np.zeros((3, 32), np.uint8)
    registered = np.array([1, 1, 0], np.uint8)
    labels_len = np.zeros(3, np.uint16)
    recv = np.array([5.0, 1.0, 0.0])
    ab = words((b"a", b""), (b"b", b""))

    def check(slots, w=ab, now=10.0, lab=labels_len):
        return check_slots(
            np.array(slots, np.int64),
            w,
            node.view(np.uint64),
            registered,
            lab,
            zone.view(np.uint64),
            recv,
            now,
            10.0,
        )

    assert check([0, 1]) == 0  # ages 5 and 9 < 10
    assert check([0, 1], now=11.0) == AGED  # b: 11 - 1 = 10 >= 10
    assert check([1, 0]) == STALE  # ids swapped
    assert check([0, 2]) == STALE  # slot 2 not registered
    assert check([0, -1]) == STALE and check([0, 3]) == STALE  # out of range
    assert check([0, 1], w=words((b"a", b"z"), (b"b", b""))) == META  # zone differs
    assert check([0, 1], lab=np.array([0, 4, 0], np.uint16)) == META  # b has labels
    assert check([0, 1], now=11.0, lab=np.array([3, 0, 0], np.uint16)) == AGED | META


def _v1(frame: bytes) -> bytes:
    """A 1-record frame in wire version 1: its record's first 192 bytes."""
    return HEADER.pack(MAGIC, V1_VERSION, V1_RECORD_SIZE, 1, 0) + frame[16 : 16 + V1_RECORD_SIZE]


def _singles_and_others(version: int = 2):
    """Frames for a coalescing test: mostly 1-record binary frames (some
    repeating a node, some with slots, some invalid, some for new nodes, a
    zone change), with a JSON frame padded to a 1-record frame's size and a
    2-record batch in between; ``version`` 1: the 1-record frames in wire
    version 1 (no slots), and one current frame among them."""
    frames = []
    for i in range(40):
        extra = {"slots": 1 + i % 3} if version == 2 and i % 4 == 0 else {}
        frames.append(encode_batch([hb(f"n{i % 6}", queue=float(i), **extra)]))
    frames[5] = encode_batch([hb("n7", queue=55.0)])  # new node
    bad = bytearray(encode_batch([hb("n1", queue=99.0)]))
    bad[16] = 0xFF  # cpu: NaN-ish bytes
    frames[9] = bytes(bad)
    bad2 = bytearray(frames[10])
    bad2[16 + 88] = 0  # empty node id
    frames[10] = bytes(bad2)
    frames[12] = encode_batch([hb("n2", zone="z1", queue=12.0)])  # zone set
    if version == 1:
        frames = [_v1(f) for f in frames]
        frames[25] = encode_batch([hb("n3", queue=25.0, slots=2)])  # a current frame
    size = len(frames[0])
    js = encode_json(hb("n8", queue=8.0))
    js = js[:-1] + b" " * (size - len(js)) + b"}"  # a 1-record frame's size
    assert len(js) == size
    frames.insert(20, js)
    frames.insert(30, encode_batch([hb("n9"), hb("n0", queue=3.0)]))
    frames.append(b"SHMH")  # truncated
    return frames


def _v1_singles_and_others():
    return _singles_and_others(version=1)


def _json_and_others():
    """JSON objects (labels, zones, invalid values, a duplicate key, broken
    JSON, an array) between runs of 1-record binary frames."""
    frames = []
    for i in range(30):
        frames.append(encode_json(hb(f"n{i % 5}", queue=float(i))))
    frames[3] = encode_json(hb("n1", labels={"gpu": "a100"}, zone="z1"))
    frames[4] = encode_json(hb("n1", labels={"gpu": "h100"}))  # labels change
    frames[6] = b'{"node": "n2", "cpu": 2.0, "mem": 0.1, "queue": 1, "avg_job_s": 1}'
    frames[7] = b'{"node": "n3", "node": "n4", "cpu": 0.1}'
    frames[8] = b'{"node": "n3", '  # broken
    frames[9] = b'{"node": "n6", "cpu": 0.1, "mem": 0.1, "queue": 1, "avg_job_s": 1, "x": 1}'
    frames[11] = encode_json(hb("n7", zone="z2"))  # new node
    frames[13] = b"[" + encode_json(hb("n2")) + b"]"  # an array
    frames[14] = b"{" + b"[" * 40 + b"]" * 40 + b"}"  # too deep
    frames[20:20] = [encode_batch([hb(f"n{i % 3}", queue=float(i))]) for i in range(9)]
    frames.append(encode_json(hb("n0", queue=77.0)))
    return frames


@pytest.mark.parametrize("build", [_singles_and_others, _v1_singles_and_others, _json_and_others])
@pytest.mark.parametrize("chunk", [1, 3, 8, 25, 1000])
def test_handle_frames_equals_handle_frame_one_by_one(shm_name, chunk, build, monkeypatch):
    """Coalesced runs of 1-record frames: the same segment bytes (rows,
    registry, counters) as the frames applied one at a time, whatever the
    chunking; capacity 8 makes new nodes meet a full registry."""
    frames = build()
    runs = []
    for name in ("decode_one_record_frames", "decode_json_objects"):
        real = getattr(ingest_mod, name)
        monkeypatch.setattr(
            ingest_mod, name, lambda fs, real=real: runs.append(real(fs)) or runs[-1]
        )
    results = []
    for coalesce in (False, True):
        seg = Segment.create(f"{shm_name}{int(coalesce)}", capacity=8)
        try:
            ing = Ingest(seg.views, make_config())
            ing.handle_frame(encode_batch([hb("old")]), 0.0)
            accepted = 0
            for start in range(0, len(frames), chunk):
                part = frames[start : start + chunk]
                if coalesce:
                    accepted += ing.handle_frames(part, 5.0)
                else:
                    accepted += sum(ing.handle_frame(f, 5.0) for f in part)
            v = seg.views
            assert_balanced(v)
            results.append(
                (
                    accepted,
                    counters(v),
                    bytes(v.table.recv_time),
                    bytes(v.table.queue),
                    bytes(v.table.slots),
                    bytes(v.table.row_version),
                    bytes(v.registry.node_id),
                    bytes(v.registry.zone),
                    bytes(v.registry.labels_len),
                    bytes(v.registry.labels),
                    bytes(v.registry.slot_gen),
                    bytes(v.registry.meta_version),
                    int(v.header.registry_epoch[0]) > 0,
                )
            )
        finally:
            seg.close()
            seg.unlink()
    assert results[0] == results[1]
    assert (chunk < ingest_mod.COALESCE_MIN) == (not any(r is not None for r in runs))
    assert results[1][1]["frames"] == len(frames) + 1


def test_handle_frames_re_registers_a_node_due_to_be_forgotten_once(ing, seg):
    """A run with the same silent node twice: forgotten and registered anew
    once (as frame by frame), then its second heartbeat updates the row."""
    v, reg = seg.views, seg.views.registry
    ing.handle_frame(encode_batch([hb("a"), hb("b")]), 0.0)
    gen = int(reg.slot_gen[0])
    frames = [encode_batch([hb("a" if i in (2, 5) else "b", queue=float(i))]) for i in range(10)]
    assert ing.handle_frames(frames, 400.0) == 10
    assert slot_of(v, "a") == 0 and int(reg.slot_gen[0]) == gen + 4
    assert v.table.queue[0] == 5.0 and v.table.queue[1] == 9.0
    assert counters(v) == {"frames": 11, "heartbeats": 12, "accepted": 12}


@pytest.mark.parametrize(
    "sizes, expect",
    [
        ([], (True, ingest_mod.DRAIN_CHUNK)),  # nothing yet
        ([208], (True, ingest_mod.DRAIN_CHUNK)),  # small: bytes
        ([208, ingest_mod.RECV_COPY_MAX], (True, ingest_mod.DRAIN_CHUNK)),
        ([208, ingest_mod.RECV_COPY_MAX + 1], (False, ingest_mod.LARGE_CHUNK)),  # the last decides
        ([ingest_mod.RECV_COPY_MAX + 1, 208], (True, ingest_mod.DRAIN_CHUNK)),
    ],
)
def test_next_drain_picks_copy_and_chunk_by_the_last_frame(sizes, expect):
    assert ingest_mod.next_drain([bytes(n) for n in sizes]) == expect


def test_drain_as_bytes_ends_a_chunk_after_a_large_frame(pull):
    """Whatever the mix, a chunk of bytes holds small frames and at most one
    large one, at its end: what the loop holds stays bounded."""
    sock, endpoint = pull
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(endpoint)
    large = bytes(ingest_mod.RECV_COPY_MAX + 1)
    sent = [b"a", b"b", large, b"c", large, large, b"d"]
    try:
        for f in sent:
            push.send(f)
        chunks: list = []
        wait_for(
            lambda: (
                chunks.append(ingest_mod.drain(sock, 256, copy=True))
                or sum(map(len, chunks)) == len(sent)
            ),
            30,
            "every frame drained",
        )
    finally:
        push.close(0)
        ctx.term()
    chunks = [c for c in chunks if c]
    assert [f for c in chunks for f in c] == sent
    for c in chunks:
        assert all(len(f) <= ingest_mod.RECV_COPY_MAX for f in c[:-1]), [len(f) for f in c]


def test_frames_decoded_one_at_a_time_are_stamped_when_their_turn_comes(ing, seg):
    """With a clock (the loop's), each frame a chunk decodes alone is
    received at the clock's time when its turn comes; without, at ``now``."""
    frames = [encode_batch([hb(f"n{i}")]) for i in range(3)]
    ticks = iter([11.0, 12.0, 13.0, 14.0])
    ing.handle_frames(frames, 10.0, clock=lambda: next(ticks))
    v = seg.views
    assert [float(v.table.recv_time[slot_of(v, f"n{i}")]) for i in range(3)] == [10.0, 11.0, 12.0]
    ing.handle_frames(frames, 20.0)
    assert [float(v.table.recv_time[slot_of(v, f"n{i}")]) for i in range(3)] == [20.0] * 3


# In a fresh interpreter (an earlier test's frames would have loaded what the
# warm-up must load): the signatures of the row writer and the batch check
# after the warm-up a spare runs before it has a segment, then after frames
# of every kind through both entry points.
_WARM_UP_CHECK = """
import mmap
import struct
from shm_engine import wire
from shm_engine.core.config import Config
from shm_engine.core.layout import SegmentViews, layout_for
from shm_engine.core.rows import write_rows
from shm_engine.ingest._checks import check_slots
from shm_engine.ingest.process import Ingest, warm_up

def signatures():
    return [len(f.signatures) for f in (write_rows, check_slots)]

def hb(node, **kw):
    return dict(node=node, cpu=0.5, mem=0.25, queue=2.0, avg_job_s=0.5, **kw)

warm_up()
warm = signatures()
mm = mmap.mmap(-1, layout_for(64).size)
ing = Ingest(SegmentViews(mm, layout_for(64)), Config())
batch = [hb(f"b{i}", throughput=1.0, zone="z") for i in range(12)]
bad = bytearray(wire.encode_batch([hb("c")] * 5))
struct.pack_into("<d", bad, 16 + 4 * wire.RECORD_DTYPE.itemsize, 2.0)   # the last record's cpu
frames = [wire.encode_batch([hb("a")]), wire.encode_batch([hb("a", io=0.5)]),
          wire.encode_batch(batch), wire.encode_batch(batch),
          wire.encode_json(hb("j", zone="z", labels={"k": "v"})),
          b"[" + b",".join(wire.encode_json(hb(f"j{i}")) for i in range(3)) + b"]", bad]
for f in frames:
    ing.handle_frame(f, 1.0)
ing.handle_frames([wire.encode_batch([hb(f"r{i}")]) for i in range(10)], 2.0)
ing.handle_frames([wire.encode_json(hb(f"r{i}")) for i in range(10)], 3.0)
h = ing.views.header
assert (int(h.ingest_accepted[0]), int(h.rejects.sum())) == (54, 1)
print(warm, signatures())
"""


def test_warm_up_leaves_nothing_to_compile_for_any_frame():
    out = subprocess.run(
        [sys.executable, "-c", _WARM_UP_CHECK],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    warm, after = out.stdout.strip().split("] [")
    assert warm + "]" == "[" + after, out.stdout
