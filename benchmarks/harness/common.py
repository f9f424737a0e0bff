"""What the sections of the harness share: statistics, names, heartbeats, a config.

Every section measures against the real code: a segment made by `Segment`,
rows written by the ingest's own apply path (`Ingest.handle_frame`), ticks
run by the tick worker's `Ticker`.  Names are unique per process and section
so that a run never meets a segment of another run.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

__all__ = [
    "TICK_S",
    "HB_FRACTION",
    "stats",
    "verdict",
    "unique_name",
    "rss_kb",
    "machine",
    "bench_config",
    "records",
    "drift",
    "send_records",
]

TICK_S = 0.05  # the default tick interval
HB_FRACTION = 0.05  # 1 Hz heartbeats / 20 Hz ticks: the rows new at each tick


def stats(values) -> dict:
    """Median, p99, min and count of ``values``."""
    a = np.asarray(values, np.float64)
    return {
        "median": float(np.median(a)),
        "p99": float(np.percentile(a, 99)),
        "min": float(a.min()),
        "n": int(a.size),
    }


def verdict(met: bool) -> str:
    """How a goal line ends."""
    return "met" if met else "NOT met"


def unique_name(tag: str) -> str:
    return f"bench-{os.getpid()}-{tag}-{time.monotonic_ns() % 10**9}"


def rss_kb(pid: int) -> dict:
    """VmRSS and its parts (anon, file, shmem) of ``pid`` in kB, from /proc."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "RssAnon", "RssFile", "RssShmem")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
        "load_avg_1m_at_start": load,
    }


def bench_config(capacity: int, port: int | None = None):
    """The default config with room for ``capacity`` nodes (and the ingest on
    ``port``); no registration budget: one sender registers the whole fleet."""
    from shm_engine.core.config import Config, with_overrides

    over = {
        "engine.capacity": capacity,
        "ingest.registration_burst": 0,
        "ingest.registration_burst_per_sender": 0,
    }
    if port is not None:
        over["ingest.bind"] = f"tcp://127.0.0.1:{port}"
    return with_overrides(Config(), over)


def records(n: int, rng, start: int = 0):
    """``n`` valid heartbeats of nodes ``node-<start>`` .. with every optional metric."""
    from shm_engine.wire import HAS_IO, HAS_OKERR, HAS_TAIL, HAS_THROUGHPUT, RECORD_DTYPE

    r = np.zeros(n, RECORD_DTYPE)
    r["cpu"] = rng.uniform(0.0, 0.9, n)
    r["mem"] = rng.uniform(0.0, 0.9, n)
    r["queue"] = rng.uniform(0.0, 20.0, n)
    r["avg_job_s"] = rng.uniform(0.01, 1.0, n)
    r["throughput"] = rng.uniform(0.0, 100.0, n)
    r["io"] = rng.uniform(0.0, 1.0, n)
    r["p50_ms"] = rng.uniform(1.0, 10.0, n)
    r["p95_ms"] = r["p50_ms"] * rng.uniform(1.0, 3.0, n)
    r["ok"] = rng.integers(0, 50, n)
    r["err"] = rng.integers(0, 5, n)
    r["flags"] = HAS_THROUGHPUT | HAS_OKERR | HAS_IO | HAS_TAIL
    r["node"] = [b"node-%07d" % i for i in range(start, start + n)]
    return r


def drift(recs, sel, rng) -> None:
    """Move the load of the nodes ``sel`` a little, as the next heartbeat would."""
    k = len(sel)
    recs["cpu"][sel] = np.clip(recs["cpu"][sel] + rng.normal(0, 0.02, k), 0.0, 0.9)
    recs["mem"][sel] = np.clip(recs["mem"][sel] + rng.normal(0, 0.02, k), 0.0, 0.9)
    recs["queue"][sel] = np.clip(recs["queue"][sel] + rng.normal(0, 1.0, k), 0.0, 40.0)


def send_records(ingest, recs, now: float) -> None:
    """Apply ``recs`` through ``ingest`` (an `Ingest`) as binary frames received at ``now``."""
    from shm_engine.wire import encode_batch
    from shm_engine.wire.format import DEFAULT_MAX_FRAME_BYTES, HEADER_SIZE, RECORD_SIZE

    per_frame = (DEFAULT_MAX_FRAME_BYTES - HEADER_SIZE) // RECORD_SIZE  # within the limit
    accepted = 0
    for start in range(0, len(recs), per_frame):
        accepted += ingest.handle_frame(encode_batch(recs[start : start + per_frame]), now)
    if accepted != len(recs):
        raise RuntimeError(f"the ingest accepted {accepted} of {len(recs)} heartbeats")
