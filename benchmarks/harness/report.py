"""The harness's report: tables and goal lines of every section, and the record.

Each section module renders its own tables and goal lines (``summary``);
this module puts them in section order and ends with the goals.  A recorded
run (``--record``) replaces the span between ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` in RESULTS.md and nothing else (the routing
simulator owns its own span in the same file).
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.harness import (
    claims,
    events,
    feed,
    freshness,
    http,
    ingest,
    memory,
    place,
    read,
    scaling,
    tick,
)

__all__ = ["summarise", "record_results_md", "BEGIN", "END"]

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SECTIONS = (
    ("tick", tick.summary),
    ("read", read.summary),
    ("claims", claims.summary),
    ("place", place.summary),
    ("ingest", ingest.summary),
    ("freshness", freshness.summary),
    ("events", events.summary),
    ("feed", feed.summary),
    ("http", http.summary),
    ("memory", memory.summary),
    ("scaling", scaling.summary),
)


def summarise(res: dict) -> list[str]:
    """Every section that ran, in order, then ``Goals:``."""
    lines: list[str] = []
    goals: list[str] = []
    for key, summary in SECTIONS:
        if res.get(key):
            sec_lines, sec_goals = summary(res[key])
            if lines:
                lines.append("")
            lines.extend(sec_lines)
            goals.extend(sec_goals)
    return lines + ["", "Goals:"] + [f"- {g}" for g in goals]


def record_results_md(res: dict, lines: list[str], path: Path, plot_name: str) -> None:
    """Write the bench span of ``path`` (created or appended if missing), atomically."""
    m = res["machine"]
    span = "\n".join(
        [
            BEGIN,
            "## Performance harness (latest full run)",
            "",
            f"Command: `{res['command']}`",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy "
            f"{m['numpy']}, numba {m['numba']}; load average at start "
            f"{m['load_avg_1m_at_start']:.1f}.  Date: {res['date']}.",
            "",
            "All comparisons in a table were measured in the same run; medians of "
            "many repetitions.",
            "",
        ]
        + lines
        + ["", f"![tick scaling](results/{plot_name})", END]
    )
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    before, has_begin, rest = text.partition(BEGIN)
    _old, has_end, after = rest.partition(END)
    if has_begin and not has_end:
        raise ValueError(f"{path}: {BEGIN} without {END}; mend the file by hand")
    if has_begin:
        text = before + span + after
    else:
        text = text.rstrip("\n") + "\n\n" + span + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
