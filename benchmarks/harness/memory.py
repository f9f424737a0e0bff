"""Section ``memory``: segment bytes per node, the ticker's private arrays, RSS.

Sizes come from the layout (`layout_for`) and the private input columns the
tick worker allocates (`kernels.make_inputs`) at 10K and 1M nodes; the RSS
of each process is the one sampled during the freshness run, when it ran.
"""

from __future__ import annotations

from benchmarks.harness.common import verdict

__all__ = ["run", "summary", "GOALS"]

GOALS = {"memory_10k_bytes": 8 * 2**20}


def run(fresh: dict | None) -> dict:
    from kernels import make_inputs
    from shm_engine.core.layout import layout_for

    out = {}
    for n in (10_000, 1_000_000):
        size = layout_for(n).size
        private = sum(c.nbytes for c in make_inputs(n))
        out[str(n)] = {
            "segment_bytes": size,
            "segment_bytes_per_node": size / n,
            "ticker_private_bytes": private,
            "engine_bytes_per_node": (size + private) / n,
        }
    if fresh is not None:
        out["rss_kb_at_10k"] = fresh["rss_kb"]
    return out


def summary(mem: dict) -> tuple[list[str], list[str]]:
    """(lines, goal lines) of the memory section."""
    m10, m1m = mem["10000"], mem["1000000"]
    lines = [
        f"memory: segment {m10['segment_bytes_per_node']:.0f} B/node at 10K "
        f"({m10['segment_bytes'] / 2**20:.2f} MiB), "
        f"{m1m['segment_bytes_per_node']:.0f} B/node at 1M "
        f"({m1m['segment_bytes'] / 2**20:.0f} MiB); ticker private inputs "
        f"{m10['ticker_private_bytes'] / 2**20:.2f} MiB at 10K"
    ]
    if "rss_kb_at_10k" in mem:
        lines.append(
            "RSS at 10K (kB): "
            + ", ".join(
                f"{k} {v.get('VmRSS', 0):,} (anon {v.get('RssAnon', 0):,}, shm "
                f"{v.get('RssShmem', 0):,})"
                for k, v in mem["rss_kb_at_10k"].items()
            )
        )
    total = m10["segment_bytes"] + m10["ticker_private_bytes"]
    goals = [
        f"memory <= 8 MB at 10K (segment + per-node private arrays): "
        f"{total / 2**20:.2f} MiB, {verdict(total <= GOALS['memory_10k_bytes'])} "
        "(process RSS is dominated by the interpreter and numba, see above)"
    ]
    return lines, goals
