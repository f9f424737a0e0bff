"""Fuzz: 100,000 hostile frames into a running engine.

A seeded generator (numpy ``Generator``, so every run sends the same bytes)
mixes valid batches with mutated, truncated and lying binary frames, broken
and hostile JSON, random bytes and oversized frames, while four good nodes
keep sending.  The promises checked:

- no process dies: supervisor, ingest and tick worker keep their pids, no
  restart;
- every frame is counted (``ingest.frames`` == frames sent) and every
  heartbeat lands under exactly one counter (accepted + rejects == seen), with
  the per-reason counts the wire decoder gives for the same bytes;
- frames over ``max_frame_bytes`` are refused undecoded (``frame_too_large``);
- the good nodes keep their exact scores (their inputs give them no rate
  term, no wait and no outcomes, and the engine runs with k1 = 0, so no
  weight moves with the fuzz nodes' pressure);
- memory stays flat: RSS of the ingest and the tick worker after the fuzz
  is within `RSS_SLACK` of what it was after a warm-up round.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import psutil
import pytest
import zmq

from clients.reader import NothingPublished, ScoreReader
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.encode import encode_batch, encode_json
from shm_engine.wire.format import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    RECORD_DTYPE,
    RECORD_SIZE,
    REJECT_REASONS,
    VERSION,
)
from support.engine import START_TIMEOUT_S, Engine, free_port, segment_exists, write_config
from support.fleet import rss_bytes
from support.wait import wait_until

SEED = 1234
FRAMES = 100_000
WARM_FRAMES = 10_000  # sent first; RSS is measured after them
CAPACITY = 64
MAX_FRAME = 65536
GOOD_EVERY = 400  # a good frame between this many fuzz frames
RSS_SLACK = 16 << 20  # bytes an RSS may grow from warm-up to the end
PACE = 4000  # most frames the sender runs ahead of the ingest
FUZZ_IDS = 400  # distinct fuzz node ids, far more than free slots

# Good node k has g_cpu = g_mem = g (cpu = max_cpu (1-g), mem = max_mem (1-g));
# avg_job_s 0 gives it no rate term and no wait (g_wait 1), no outcomes give
# g_succ 1, and B = 1: core = (0.20 g + 0.15 g + 0.25 + 0.15) / 0.75 at the
# base weights.  With k1 = 0 (SCORE_CONFIG) w_wait does not move with the
# pressure of the fuzz nodes, so that is its score whatever they send.
GOOD_G = (0.6, 0.7, 0.8, 0.9)
GOOD = [
    dict(node=f"good-{k}", cpu=0.98 * (1 - g), mem=0.95 * (1 - g), queue=0.0, avg_job_s=0.0)
    for k, g in enumerate(GOOD_G)
]
GOOD_SCORES = tuple((0.20 * g + 0.15 * g + 0.25 + 0.15) / 0.75 for g in GOOD_G)
SCORE_CONFIG = "[score]\nk1 = 0.0\n"
GOOD_FRAMES = [encode_batch(GOOD[:2]), encode_json(GOOD[2]), encode_json(GOOD[3])]


class Fuzzer:
    """Deterministic hostile frames.  ``frame()`` returns the next one."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.ids = [f"fz-{i}" for i in range(FUZZ_IDS)]
        self.pool = [self._make_hb() for _ in range(2000)]
        self.pool_records = np.frombuffer(encode_batch(self.pool)[HEADER_SIZE:], RECORD_DTYPE)
        self.huge = []  # a few large frames, reused (they cost the most to build)
        self.kinds = [
            (self.valid_binary, 10),
            (self.mutated_binary, 20),
            (self.truncated_binary, 6),
            (self.lying_header, 6),
            (self.valid_json, 8),
            (self.bad_value_json, 14),
            (self.bad_id_json, 10),
            (self.mutated_json, 12),
            (self.invalid_utf8, 3),
            (self.deep_json, 2),
            (self.random_bytes, 6),
            (self.huge_json, 0.3),
            (self.oversized, 0.5),
            (self.empty, 0.5),
        ]
        w = np.array([k[1] for k in self.kinds], float)
        self.p = w / w.sum()

    def frame(self) -> bytes:
        return self.kinds[self.rng.choice(len(self.kinds), p=self.p)][0]()

    # -- building blocks
    def _make_hb(self) -> dict:
        r = self.rng
        d = dict(
            node=self.ids[r.integers(FUZZ_IDS)],
            cpu=float(r.random()),
            mem=float(r.random()),
            queue=float(r.exponential(5)),
            avg_job_s=float(r.exponential(1)),
        )
        if r.random() < 0.5:
            d["throughput"] = float(r.exponential(10))
        if r.random() < 0.3:
            d.update(ok=int(r.integers(100)), err=int(r.integers(100)))
        if r.random() < 0.3:
            p50 = float(r.exponential(20)) + 1
            d.update(p50_ms=p50, p95_ms=p50 * (1 + float(r.random())))
        if r.random() < 0.2:
            d["zone"] = f"z{r.integers(4)}"
        if r.random() < 0.3:
            d["slots"] = int(r.integers(1, 65536))
        if r.random() < 0.2:
            d["resources"] = {f"r{i}": float(r.exponential(4)) for i in range(r.integers(9))}
        return d

    def hb(self) -> dict:
        """A valid heartbeat of a fuzz node (a fresh copy from a fixed pool)."""
        return dict(self.pool[self.rng.integers(len(self.pool))])

    def binary(self, n: int) -> bytes:
        rows = self.pool_records[self.rng.integers(len(self.pool), size=n)]
        return HEADER.pack(MAGIC, VERSION, RECORD_SIZE, n, 0) + rows.tobytes()

    # -- kinds
    def valid_binary(self) -> bytes:
        return self.binary(int(self.rng.integers(1, 20)))

    def mutated_binary(self) -> bytes:
        b = bytearray(self.binary(int(self.rng.integers(1, 8))))
        for _ in range(int(self.rng.integers(1, 6))):
            b[self.rng.integers(len(b))] = int(self.rng.integers(256))
        return bytes(b)

    def truncated_binary(self) -> bytes:
        b = self.binary(int(self.rng.integers(1, 8)))
        return b[: int(self.rng.integers(0, len(b)))]

    def lying_header(self) -> bytes:
        r = self.rng
        n = int(r.integers(1, 4))
        body = self.binary(n)[HEADER_SIZE:]
        magic, ver, rsz, count, rsv = MAGIC, VERSION, RECORD_SIZE, n, 0
        which = int(r.integers(5))
        if which == 0:
            magic = bytes(r.integers(65, 90, 4, dtype=np.uint8))
        elif which == 1:
            ver = int(r.integers(3, 65536))
        elif which == 2:
            rsz = int(r.integers(0, 65536))
        elif which == 3:
            count = int(r.choice([2**32 - 1, 2**31, n + 1, 10**9]))
        else:
            rsv = int(r.integers(1, 2**32))
        return HEADER.pack(magic, ver, rsz, count, rsv) + body

    def valid_json(self) -> bytes:
        d = self.hb()
        if self.rng.random() < 0.3:
            d["labels"] = {"team": "a", "tier": str(self.rng.integers(3))}
        items = [d] if self.rng.random() < 0.7 else [self.hb() for _ in range(5)]
        return json.dumps(items if len(items) > 1 else d).encode()

    def bad_value_json(self) -> bytes:
        r = self.rng
        d = self.hb()
        key = [
            "cpu",
            "mem",
            "queue",
            "avg_job_s",
            "throughput",
            "ok",
            "p50_ms",
            "ts",
            "labels",
            "zone",
            "slots",
            "resources",
        ][r.integers(12)]
        bad = [
            float("nan"),
            float("inf"),
            float("-inf"),
            -1.0,
            2.5,
            1e400,
            "0.5",
            True,
            None,
            [],
            {},
            2**70,
            -5,
            {"a": 1},
            "z" * 40,
        ][r.integers(15)]
        d[key] = bad
        if key == "ok":
            d["err"] = 0
        if key == "p50_ms":
            d["p95_ms"] = 10.0
        choice = r.integers(4)
        if choice == 0:
            d.pop("mem")  # missing field
        elif choice == 1:
            d["color"] = "red"  # unknown field
        # json.dumps writes NaN/Infinity literals, which Python's parser takes back.
        text = json.dumps(d, default=str)
        if choice == 2:
            text = text[:-1] + ', "cpu": 0.5}'  # duplicate key
        return text.encode()

    def bad_id_json(self) -> bytes:
        r = self.rng
        node = [
            "",
            "a" * 64,
            "é" * 32,
            "bad\x00id",
            "tab\tid",
            "nl\nid",
            "del\x7f",
            "c1\x85",
            "../../etc/passwd",
            "$(rm -rf /)",
            "'; DROP TABLE nodes; --",
            "{{7*7}}",
            "%s%n%x",
            "x" * 63,
            12345,
            None,
            ["a"],
            "\u202eevil",
        ][r.integers(18)]
        d = self.hb()
        d["node"] = node
        return json.dumps(d).encode()

    def mutated_json(self) -> bytes:
        b = bytearray(json.dumps(self.hb()).encode())
        for _ in range(int(self.rng.integers(1, 4))):
            b[self.rng.integers(len(b))] = int(self.rng.integers(256))
        return bytes(b)

    def invalid_utf8(self) -> bytes:
        return b'{"node": "\xff\xfe\xc3", "cpu": 0.1, "mem": 0.1, "queue": 1, "avg_job_s": 1}'

    def deep_json(self) -> bytes:
        d = int(self.rng.choice([33, 100, 5000]))
        return b"[" * d + b"]" * d

    def random_bytes(self) -> bytes:
        r = self.rng
        b = r.integers(0, 256, int(r.integers(1, 400)), dtype=np.uint8).tobytes()
        return [b, b"SHMH" + b, b"{" + b, b"[" + b][r.integers(4)]

    def huge_json(self) -> bytes:
        if len(self.huge) >= 8:
            return self.huge[self.rng.integers(len(self.huge))]
        items, size = [], 2
        while True:
            s = json.dumps(self.hb())
            if size + len(s) + 1 > MAX_FRAME:
                break
            items.append(s)
            size += len(s) + 1
        self.huge.append(("[" + ",".join(items) + "]").encode())
        return self.huge[-1]

    def oversized(self) -> bytes:
        # At most 2 x MAX_FRAME (the socket's hard limit): a larger frame
        # drops the sender's connection instead of being counted.
        top = 2 * MAX_FRAME - 1 if self.rng.random() < 0.1 else MAX_FRAME + 4096
        return b"[" + b" " * int(self.rng.integers(MAX_FRAME - 1, top)) + b"]"

    def empty(self) -> bytes:
        return b""


def _expected(frames) -> tuple[Counter, int, int]:
    """(rejects per reason, valid heartbeats, heartbeats seen) by the wire decoder."""
    rejects, valid, seen = Counter(), 0, 0
    memo: dict[bytes, tuple] = {}
    for f in frames:
        got = memo.get(f) if len(f) > 4096 else None
        if got is None:
            d = decode_frame(f, MAX_FRAME)
            got = (tuple(d.rejects.items()), len(d.records), d.seen)
            if len(f) > 4096:
                memo[f] = got
        rejects.update(dict(got[0]))
        valid += got[1]
        seen += got[2]
    return rejects, valid, seen


def test_fuzz_frames_are_counted_and_harm_nothing(shm_name, tmp_path, reap):
    t_start = time.monotonic()
    fz = Fuzzer(SEED)
    frames = [fz.frame() for _ in range(FRAMES)]
    assert sum(len(f) > MAX_FRAME for f in frames) > 100  # the mix covers every kind
    assert sum(len(f) == 0 for f in frames) > 100

    port = free_port()
    eng = Engine(
        shm_name,
        write_config(
            tmp_path / "e.toml",
            port,
            tick_ms=50,
            capacity=CAPACITY,
            max_frame_bytes=MAX_FRAME,
            extra=SCORE_CONFIG,
        ),
        tmp_path,
        reap,
    )
    st0 = eng.wait_ready()
    pids = {
        "supervisor": eng.proc.pid,
        "ingest": st0["children"]["ingest"]["pid"],
        "ticker": st0["children"]["ticker"]["pid"],
    }
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    reader = ScoreReader.attach(shm_name)
    sent = 0

    def send(f: bytes) -> None:
        nonlocal sent
        sock.send(f)  # blocking: nothing is dropped on this side
        sent += 1

    def send_good() -> None:
        for f in GOOD_FRAMES:
            send(f)

    def good_scores() -> dict:
        s = reader.snapshot().scores()
        return {h["node"]: s.get(h["node"]) for h in GOOD}

    def settle() -> dict:
        """Send the good nodes until their scores hold for 10 epochs."""
        last, since = None, 0

        def steady():
            nonlocal last, since
            send_good()
            try:
                now = good_scores()
            except NothingPublished:
                return False
            e = reader.epoch
            if now != last:
                last, since = now, e
            return None not in now.values() and e >= since + 10

        wait_until(steady, START_TIMEOUT_S, "good nodes steady", period=0.02)
        return last

    try:
        steady0 = settle()
        for k, h in enumerate(GOOD):
            assert steady0[h["node"]] == pytest.approx(GOOD_SCORES[k], abs=1e-9)

        def blast(chunk) -> None:
            # Paced: at most PACE frames ahead of the ingest, so what RSS
            # shows is what processing keeps, not ZeroMQ's receive queue.
            for i, f in enumerate(chunk):
                if i % GOOD_EVERY == 0:
                    send_good()
                    if sent - eng.status()["ingest"]["frames"] > PACE:
                        wait_until(
                            lambda: sent - eng.status()["ingest"]["frames"] <= PACE // 2,
                            120,
                            "the ingest to catch up",
                            period=0.005,
                        )
                send(f)

        blast(frames[:WARM_FRAMES])
        wait_until(
            lambda: eng.status()["ingest"]["frames"] >= sent, 120, "warm-up drained", period=0.05
        )
        rss0 = {r: rss_bytes(pids[r]) for r in ("ingest", "ticker")}
        t_fuzz = time.monotonic()
        blast(frames[WARM_FRAMES:])
        want_rejects, valid, seen = _expected(frames)  # while the ingest drains
        wait_until(
            lambda: eng.status()["ingest"]["frames"] >= sent, 120, "fuzz drained", period=0.05
        )
        fuzz_s = time.monotonic() - t_fuzz
        rss1 = {r: rss_bytes(pids[r]) for r in ("ingest", "ticker")}
        steady1 = settle()
        wait_until(lambda: eng.status()["ingest"]["frames"] >= sent, 60, "all drained", period=0.05)
        st = eng.status()
    finally:
        reader.close()
        sock.close(0)
        ctx.term()

    # Nobody died or restarted.
    assert st["pid"] == pids["supervisor"] and eng.proc.poll() is None
    assert st["children"]["ingest"] == {"pid": pids["ingest"], "restarts": 0}
    assert st["children"]["ticker"] == {"pid": pids["ticker"], "restarts": 0}
    assert all(psutil.pid_exists(p) for p in pids.values())

    # Every frame and every heartbeat is accounted for.
    ing = st["ingest"]
    assert ing["frames"] == sent
    rejected = ing["rejected"]
    assert ing["accepted"] + sum(rejected.values()) == ing["heartbeats"]
    good_sent = sent - FRAMES  # frames of good heartbeats, 4 heartbeats per 3 frames
    assert ing["heartbeats"] == seen + good_sent // 3 * 4
    for reason in REJECT_REASONS:
        if reason != "registry_full":
            assert rejected[reason] == want_rejects.get(reason, 0), reason
    # A valid heartbeat is either applied or refused for want of a slot.
    assert ing["accepted"] + rejected["registry_full"] == valid + good_sent // 3 * 4
    assert rejected["registry_full"] > 0 and st["nodes"]["registered"] == CAPACITY
    assert rejected["frame_too_large"] == sum(len(f) > MAX_FRAME for f in frames)

    # The good nodes' scores are exactly what they were before the fuzz.
    assert steady1 == pytest.approx(steady0, abs=1e-12)

    growth = {r: rss1[r] - rss0[r] for r in rss0}
    print(
        f"\nfuzz: {FRAMES} frames (+{good_sent} good) in {fuzz_s:.1f}s after warm-up; "
        f"whole test {time.monotonic() - t_start:.1f}s"
    )
    print(
        f"rejects: { {k: v for k, v in rejected.items() if v} }  accepted {ing['accepted']}  "
        f"heartbeats {ing['heartbeats']}"
    )
    print(
        "RSS MiB warm-up -> end: "
        + ", ".join(f"{r} {rss0[r] / 2**20:.1f} -> {rss1[r] / 2**20:.1f}" for r in rss0)
    )
    for r, g in growth.items():
        assert g < RSS_SLACK, (r, growth)

    assert eng.stop() == 0
    assert not segment_exists(shm_name)
