"""Load: 10,000 nodes heartbeating at 10 Hz and 8 reader processes, 60 s.

Marked ``slow``: excluded by default (pytest's addopts carry ``-m 'not slow'``);
run with ``-m slow`` (``SHM_ENGINE_LOAD_S`` shortens the 60 s window).  Two
sender processes send the self-describing fleet
(`support.fleet.sender_main`) in binary batch frames; eight readers call
``snapshot()`` and ``score()`` in a loop and check every snapshot
(`support.fleet.check_snapshot`).  Promised: no torn read, no rejected
heartbeat, no child restart, flat RSS; reported: tick p99, overruns, reads.
"""

from __future__ import annotations

import os
import time

import pytest

from clients.reader import NothingPublished, ScoreReader
from support.engine import START_TIMEOUT_S, Engine, free_port, segment_exists, write_config
from support.fleet import SPAWN, reader_main, rss_bytes, sender_main, start_procs
from support.wait import wait_until

NODES = 10_000
SENDERS = 2
READERS = 8
PERIOD_S = 0.1
DURATION_S = float(os.environ.get("SHM_ENGINE_LOAD_S", "60"))
RSS_SLACK = 32 << 20


@pytest.fixture(autouse=True)
def _on_demand(request):
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr or "not slow" in expr:
        pytest.skip("load test: run with -m slow")


@pytest.mark.slow
def test_10k_nodes_at_10hz_with_8_readers(shm_name, tmp_path, reap):
    port = free_port()
    # Two local senders register the whole fleet at once: no per-sender budget.
    eng = Engine(
        shm_name,
        write_config(
            tmp_path / "e.toml",
            port,
            tick_ms=50,
            capacity=16384,
            extra="registration_burst_per_sender = 0",
        ),
        tmp_path,
        reap,
    )
    st = eng.wait_ready()
    pids = {r: st["children"][r]["pid"] for r in ("ingest", "ticker")}
    stop, pause = SPAWN.Event(), SPAWN.Event()
    results = SPAWN.Queue()
    per = NODES // SENDERS
    senders = start_procs(
        sender_main,
        [(f"tcp://127.0.0.1:{port}", k * per, per, PERIOD_S, stop, pause) for k in range(SENDERS)],
    )
    for p in senders:
        reap(p)
    reader = ScoreReader.attach(shm_name)
    rss, ticks = [], []
    try:

        def all_in():
            try:
                return sum(n is not None for n in reader.snapshot().nodes) == NODES
            except NothingPublished:
                return False

        wait_until(all_in, START_TIMEOUT_S, "10K nodes registered", period=0.1)
        warm = SPAWN.Queue()
        readers = start_procs(
            reader_main, [(shm_name, stop, results, NODES, s, warm) for s in range(READERS)]
        )
        for p in readers:
            reap(p)
        for _ in range(READERS):  # every reader attached and has read the whole fleet
            warm.get(timeout=START_TIMEOUT_S)
        st0 = eng.status()
        t0 = time.monotonic()
        while time.monotonic() - t0 < DURATION_S:
            time.sleep(5)  # a sampling period, not a synchronisation
            s = eng.status()
            rss.append(
                (
                    round(time.monotonic() - t0),
                    *(round(rss_bytes(pids[r]) / 2**20, 1) for r in pids),
                )
            )
            ticks.append(s["tick_us"]["p99"])
        st1 = eng.status()
    finally:
        reader.close()
        stop.set()
    got = [results.get(timeout=120) for _ in range(READERS)]
    for p in senders + readers:
        p.join(30)

    ing0, ing1 = st0["ingest"], st1["ingest"]
    secs = DURATION_S
    hb_rate = (ing1["accepted"] - ing0["accepted"]) / secs
    report = {
        "heartbeats_per_s": round(hb_rate),
        "ticks": st1["ticks"] - st0["ticks"],
        "tick_us_p50": round(st1["tick_us"]["p50"]),
        "tick_us_p99_samples": [round(t) for t in ticks],
        "tick_us_max": round(st1["tick_us"]["max"]),
        "overruns": st1["overruns"] - st0["overruns"],
        "rejected": {k: v for k, v in st1["ingest"]["rejected"].items() if v},
        "snapshots": sum(r["snapshots"] for r in got),
        "scores": sum(r["scores"] for r in got),
        "torn": sum(r["torn"] for r in got),
        "retries_exhausted": sum(r["retries_exhausted"] for r in got),
        "rss_mib (t, ingest, ticker)": rss,
        "restarts": {r: st1["children"][r]["restarts"] for r in pids},
    }
    print("\nload:", report)
    assert report["torn"] == 0, [r["problems"] for r in got]
    assert all(r["backwards"] == 0 for r in got)
    assert report["rejected"] == {}
    assert report["restarts"] == {"ingest": 0, "ticker": 0}
    assert hb_rate > 0.8 * NODES / PERIOD_S
    for i in (1, 2):
        assert rss[-1][i] - rss[0][i] < RSS_SLACK / 2**20, rss
    assert eng.stop() == 0
    assert not segment_exists(shm_name)
