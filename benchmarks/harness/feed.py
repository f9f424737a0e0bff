"""Section ``feed``: engine publish -> mirror publish, bytes per tick, the mirror's CPU,
and the feedback delay (a claim on the mirror -> visible in the engine's claims).

A segment of ``n`` nodes (10K in a full run) is ticked by this process with
the tick worker's own `Ticker` every 50 ms; the real feed child
(`feed_main`) and a real mirror (`Mirror` + `run`) run as processes on
loopback.  Before each tick a fraction of the nodes (1%, 10%, 100% in three
phases) gets a heartbeat with another CPU load: only their score moves (queue
0 everywhere keeps the pressure, and so every other node's weights, fixed;
``score.beta = 1`` turns the smoothing off, so a score settles on the tick of
its heartbeat), so exactly that fraction of the rows changes; the whole fleet is re-sent
with the same values every second, so no node ages into suspicion.

- Lag: from the tick's wall-clock stamp (set just before its ``write_end``)
  of an epoch to the mirror's
  publish of that epoch (the mirror segment's per-zone ``epoch``, written
  right after the mirror's ``write_end``), polled every 50 us here.
- Bytes per tick: the feed child's ``feed_bytes`` over its frames in the
  phase (full frames every ``full_every`` included), and the size of a delta
  frame alone (header + changed rows).
- CPU per tick: the mirror's and the feed child's user + system time over
  the phase, per epoch.
- Feedback delay: a scheduler here claims a random node on the *mirror*
  (``ScoreReader.claim``); the delay runs until the claim shows in the
  engine's claims segment (the feed child's lease row for the node's slot,
  written when the mirror's feedback frame arrives), polled every 50 us;
  then the same for the release.  One claim and one release per tick, the
  engine ticking meanwhile with 1% of its rows changing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

from benchmarks.harness.common import stats, unique_name, verdict

__all__ = ["run", "summary", "GOALS", "FRACTIONS"]

GOALS = {"lag_p99_ms": 2.0}
FRACTIONS = (0.01, 0.10, 1.0)
TICK_S = 0.05
READY_TIMEOUT_S = 120.0
SEEN_TIMEOUT_S = 1.0
FEEDBACK_SAMPLES = 200  # claims (and releases) timed, one per tick
POLL_S = 0.00005  # spinning would take a core from the processes measured
_LOW32 = np.uint64(0xFFFF_FFFF)


def _mirror_proc(name: str, endpoint: str, capacity: int, ready, stop) -> None:
    from shm_engine.feed import mirror as mirror_mod

    m = mirror_mod.Mirror(name, [("bench", endpoint)], capacity=capacity, stale_after_s=5.0)
    try:
        mirror_mod.run(m, stop.is_set, on_ready=ready.set)
    finally:
        m.close()


def _cpu_s(pid: int) -> float:
    """User + system seconds of ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(n: int, ticks: int, log) -> dict:
    from clients.reader import ScoreReader
    from shm_engine.core.claims import ClaimsSegment
    from shm_engine.core.config import Config, with_overrides
    from shm_engine.core.registry import NodeRegistry
    from shm_engine.core.rows import column_addresses, write_rows
    from shm_engine.core.segment import Segment
    from shm_engine.feed import format as ff
    from shm_engine.feed.mirror import MirrorSegment, read_mirror_status
    from shm_engine.feed.publisher import feed_main
    from shm_engine.ops.engine_process import free_port
    from shm_engine.tick.ticker import Ticker
    from shm_engine.wire import RECORD_DTYPE

    port, back_port = free_port(), free_port()
    config = with_overrides(
        Config(),
        {
            "engine.capacity": n,
            "feed.bind": f"tcp://127.0.0.1:{port}",
            "feed.full_every": 100,
            "feed.feedback_bind": f"tcp://127.0.0.1:{back_port}",
            # No smoothing: a node's score moves only on the tick of its
            # heartbeat, so the fraction of rows changing is the one chosen.
            "score.beta": 1.0,
        },
    )
    name, mname = unique_name("feed"), unique_name("mirror")
    seg = Segment.create(name, n, tick_interval_ms=50)
    views = seg.views
    try:
        claims_seg = ClaimsSegment.create(name, n, 8)
    except BaseException:
        seg.close()
        seg.unlink()
        raise
    ctx = mp.get_context("spawn")
    procs: list = []
    stop = ctx.Event()
    mseg = zseg = None
    try:
        reg = NodeRegistry(views)
        rng = np.random.default_rng(17)
        rec = np.zeros(n, RECORD_DTYPE)
        rec["cpu"] = rng.uniform(0.05, 0.6, n)
        rec["mem"] = 0.2
        rec["avg_job_s"] = 0.5
        rec["node"] = [b"node-%07d" % i for i in range(n)]
        slots = np.array([reg.register(bytes(k)) for k in rec["node"]], np.int64)
        cols = column_addresses(views.table)
        ticker = Ticker(views, config)

        def beat(sel):
            write_rows(cols, n, slots[sel], rec[sel], time.monotonic())

        beat(np.arange(n))
        ticker.tick(time.monotonic())
        feed = ctx.Process(target=feed_main, args=(name, config, os.getpid()), daemon=True)
        feed.start()
        procs.append(feed)
        ready = ctx.Event()
        mirror = ctx.Process(
            target=_mirror_proc,
            args=(mname, f"tcp://127.0.0.1:{port}", n, ready, stop),
            daemon=True,
        )
        mirror.start()
        procs.append(mirror)
        deadline = time.monotonic() + READY_TIMEOUT_S
        next_at = time.monotonic()
        while not ready.is_set():
            if time.monotonic() > deadline or any(p.exitcode is not None for p in procs):
                raise RuntimeError("the feed child or the mirror did not start")
            ticker.tick(time.monotonic())
            next_at += TICK_S
            time.sleep(max(0.0, next_at - time.monotonic()))
        refreshed = time.monotonic()
        beat(np.arange(n))
        mseg = Segment.attach(mname, readonly=True)
        mlatch = mseg.views.header.latch_seq.data
        zseg = MirrorSegment.attach(mname)
        up_epoch = zseg.views.up.epoch  # the engine epoch the mirror's latest publish shows
        h = views.header
        out: dict = {"nodes": n, "ticks": ticks, "phases": []}
        for frac in FRACTIONS:
            k = max(1, int(round(frac * n)))
            lags, missed = [], 0
            f0, b0, full0 = int(h.feed_frames[0]), int(h.feed_bytes[0]), int(h.feed_full_frames[0])
            cpu_m0, cpu_f0 = _cpu_s(mirror.pid), _cpu_s(feed.pid)
            m_epochs0 = mlatch[0] >> 1
            next_at = time.monotonic()
            for _ in range(ticks):
                sel = rng.choice(n, k, replace=False) if k < n else np.arange(n)
                rec["cpu"][sel] = rng.uniform(0.05, 0.6, len(sel))
                # Every node's age stays below suspect_after_s: a refresh
                # of the fleet every second (same values: no score moves).
                if time.monotonic() - refreshed >= 1.0:
                    refreshed = time.monotonic()
                    beat(np.arange(n))
                else:
                    beat(sel)
                want = ticker.tick(time.monotonic()).epoch
                # The tick stamps its wall time just before its write_end:
                # the lag is counted from there, not from tick() returning.
                published = float(views.buffers[want & 1].tick_wall[0])
                while int(up_epoch[0]) < want:
                    if time.time() - published > SEEN_TIMEOUT_S:
                        missed += 1
                        break
                    time.sleep(
                        0.00005
                    )  # spinning would take a core from the two processes measured
                else:
                    lags.append((time.time() - published) * 1e3)
                next_at += TICK_S
                time.sleep(max(0.0, next_at - time.monotonic()))
            frames = int(h.feed_frames[0]) - f0
            zone = read_mirror_status(mname)["zones"][0]
            m_epochs = (mlatch[0] >> 1) - m_epochs0
            phase = {
                "fraction": frac,
                "rows_changed": k,
                "lag_ms": stats(lags) if lags else None,
                "missed": missed,
                "frames": frames,
                "full_frames": int(h.feed_full_frames[0]) - full0,
                "bytes_per_tick": (int(h.feed_bytes[0]) - b0) / max(frames, 1),
                "delta_frame_bytes": ff.SCORE_HEADER.size + ff.ROW_DTYPE.itemsize * k,
                "mirror_cpu_us_per_tick": (_cpu_s(mirror.pid) - cpu_m0) * 1e6 / max(m_epochs, 1),
                "feed_cpu_us_per_tick": (_cpu_s(feed.pid) - cpu_f0) * 1e6 / max(frames, 1),
                "mirror_gaps_total": zone["gaps"],
                "mirror_snapshots_total": zone["snapshots"],
                "snapshot_requests_total": int(h.feed_snapshot_requests[0]),
            }
            out["phases"].append(phase)
            lag = phase["lag_ms"]
            log(
                f"feed {n} nodes, {frac:.0%} rows changing: lag p50 "
                f"{lag['median'] if lag else float('nan'):.3f} ms p99 "
                f"{lag['p99'] if lag else float('nan'):.3f} ms; "
                f"{phase['bytes_per_tick']:,.0f} B/tick; mirror "
                f"{phase['mirror_cpu_us_per_tick']:,.0f} us/tick, feed child "
                f"{phase['feed_cpu_us_per_tick']:,.0f} us/tick; {phase['full_frames']} full "
                f"frames, mirror gaps {zone['gaps']}, snapshots {zone['snapshots']}, "
                f"requests {phase['snapshot_requests_total']}"
            )
        # Feedback: a claim on the mirror -> visible in the engine's claims.
        in_flight = claims_seg.views.in_flight  # [lease, slot]: tag << 32 | count
        k = max(1, int(round(0.01 * n)))
        claim_ms, release_ms, fb_missed = [], [], 0

        def shows(slot: int, want: int, since: float) -> float | None:
            while int((in_flight[:, slot] & _LOW32).sum()) != want:
                if time.perf_counter() - since > SEEN_TIMEOUT_S:
                    return None
                time.sleep(POLL_S)
            return (time.perf_counter() - since) * 1e3

        samples = min(ticks, FEEDBACK_SAMPLES)
        with ScoreReader.attach(mname) as reader:
            next_at = time.monotonic()
            for _ in range(samples):
                sel = rng.choice(n, k, replace=False)
                rec["cpu"][sel] = rng.uniform(0.05, 0.6, len(sel))
                if time.monotonic() - refreshed >= 1.0:
                    refreshed = time.monotonic()
                    beat(np.arange(n))
                else:
                    beat(sel)
                ticker.tick(time.monotonic())
                i = int(rng.integers(n))
                t0 = time.perf_counter()
                c = reader.claim(rec["node"][i].decode())
                got = shows(int(slots[i]), 1, t0)
                t1 = time.perf_counter()
                c.release(ok=True)
                back = shows(int(slots[i]), 0, t1) if got is not None else None
                if got is None or back is None:
                    fb_missed += 1
                else:
                    claim_ms.append(got)
                    release_ms.append(back)
                next_at += TICK_S
                time.sleep(max(0.0, next_at - time.monotonic()))
        out["feedback"] = {
            "claim_ms": stats(claim_ms) if claim_ms else None,
            "release_ms": stats(release_ms) if release_ms else None,
            "missed": fb_missed,
            "engine_feedback_frames": int(h.feedback_frames[0]),
            "engine_feedback_bad": int(h.feedback_bad[0]),
        }
        fb = out["feedback"]
        log(
            f"feed feedback (mirror claim -> engine claims) at {n} nodes: p50 "
            f"{fb['claim_ms']['median'] if claim_ms else float('nan'):.3f} ms p99 "
            f"{fb['claim_ms']['p99'] if claim_ms else float('nan'):.3f} ms; release p50 "
            f"{fb['release_ms']['median'] if release_ms else float('nan'):.3f} ms p99 "
            f"{fb['release_ms']['p99'] if release_ms else float('nan'):.3f} ms; "
            f"{fb_missed} not seen within {SEEN_TIMEOUT_S} s"
        )
        return out
    finally:
        stop.set()  # the mirror's loop
        if procs:
            procs[0].terminate()  # the feed child stops on SIGTERM
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        if mseg is not None:
            mseg.close()
        if zseg is not None:
            zseg.close()
        claims_seg.close()
        claims_seg.unlink()
        seg.close()
        seg.unlink()


def summary(res: dict) -> tuple[list[str], list[str]]:
    """(Report lines, goal lines): the lag goal at 1% of rows changing."""
    lines = [f"score feed at {res['nodes']:,} nodes (engine publish -> mirror publish):"]
    for p in res["phases"]:
        lag = p["lag_ms"] or {"median": float("nan"), "p99": float("nan")}
        lines.append(
            f"  {p['fraction']:>4.0%} rows changing: lag p50 {lag['median']:.3f} ms, p99 "
            f"{lag['p99']:.3f} ms; {p['bytes_per_tick']:,.0f} bytes/tick "
            f"(a delta alone {p['delta_frame_bytes']:,}); mirror CPU "
            f"{p['mirror_cpu_us_per_tick']:,.0f} us/tick, feed child "
            f"{p['feed_cpu_us_per_tick']:,.0f} us/tick"
        )
    fb = res.get("feedback")
    if fb and fb["claim_ms"]:
        c, r = fb["claim_ms"], fb["release_ms"]
        lines.append(
            f"  feedback, a claim on the mirror -> in the engine's claims: p50 "
            f"{c['median']:.3f} ms, p99 {c['p99']:.3f} ms (release p50 {r['median']:.3f} ms, "
            f"p99 {r['p99']:.3f} ms; {c['n']} samples, {fb['missed']} missed)"
        )
    goals = []
    first = res["phases"][0]["lag_ms"]
    if first:
        goal = GOALS["lag_p99_ms"]
        goals.append(
            f"feed lag p99 <= {goal} ms at {res['nodes']:,} nodes, 1% changing: "
            f"{first['p99']:.3f} ms, {verdict(first['p99'] <= goal)}"
        )
    return lines, goals
