"""Section ``scaling``: how the tick curves grow with the node count, and their plot.

The slope of log(median tick time) against log(nodes) for each variant of
the tick section (1 = linear), and ``tick_scaling.png`` (needs matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["run", "plot", "summary", "CURVES"]

CURVES = (
    ("ticker", "Ticker.tick (the tick worker)", "o-"),
    ("ticker_threads", "Ticker.tick, tick_threads = 2", "s-"),
    ("kernels", "kernels alone (Ticker.score)", "^-"),
    ("numpy", "NumPy baseline", "v--"),
    ("python", "Python baseline", "x:"),
)


def run(tick_rows: list) -> dict:
    if len(tick_rows) < 2:
        return {"sentence": "scaling: one node count only"}
    keys = [k for k, _label, _style in CURVES if all(k in r for r in tick_rows)]
    ns = np.log([r["nodes"] for r in tick_rows])
    out = {
        k: float(np.polyfit(ns, np.log([r[k]["median"] for r in tick_rows]), 1)[0]) for k in keys
    }
    out["sentence"] = (
        "scaling (log-log slope of median tick time vs nodes; 1 = linear): "
        + ", ".join(f"{k} {v:.2f}" for k, v in out.items())
        + ". Per-node passes are linear; the fixed cost of a call (~10 µs of dispatch) "
        "flattens the small end, and the ranking sort and cache misses steepen the large end."
    )
    return out


def plot(tick_rows: list, path: Path) -> str:
    """Draw the curves into ``path``; returns its file name, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): plot skipped"
    ns = [r["nodes"] for r in tick_rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for key, label, style in CURVES:
        if all(key in r for r in tick_rows):
            ax.plot(ns, [r[key]["median"] for r in tick_rows], style, label=label)
    ax.axhline(50, color="grey", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes")
    ax.set_ylabel("tick, median µs")
    ax.set_title("Tick time vs node count")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def summary(sc: dict) -> tuple[list[str], list[str]]:
    return [sc["sentence"]], []
