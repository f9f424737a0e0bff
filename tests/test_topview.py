"""The top view: render() on synthetic view states (no terminal), the state
diff and row choice of the Watcher on synthetic snapshots, and the exit code
for an engine that does not exist."""

import io

import numpy as np
import pytest
from rich.console import Console

from clients.reader import Snapshot
from shm_engine.core.states import NodeState
from shm_engine.ops.cli import main
from shm_engine.ops.topview import NodeRow, StateChange, ViewState, Watcher, render


def text_of(renderable, width=160) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def sample_view() -> ViewState:
    change = StateChange("node-flap", "degraded", "quarantined", epoch=41, at=0.0)
    return ViewState(
        name="prod",
        epoch=42,
        tick_interval_ms=50,
        tick_us_p50=210.0,
        tick_us_p99=480.0,
        ticks_per_s=20.0,
        heartbeats_per_s=1234.0,
        pressure=0.375,
        weights={"cpu": 0.2, "mem": 0.15, "wait": 0.4375},
        counts={"healthy": 2, "degraded": 0, "overloaded": 1, "quarantined": 1, "dead": 1},
        registered=5,
        ranked=2,
        rows=[
            NodeRow(1, "node-a", 0.91, "healthy", 1.5, 2.0, 1.0),
            NodeRow(2, "node-b", 0.45, "healthy", 3.0, 4.0, 1.0, old_state="degraded"),
            NodeRow(None, "node-dead", 0.0, "dead", 0.0, 0.0, 0.0),
            NodeRow(None, "node-flap", 0.0, "quarantined", 2.0, 1.0, 1.0, old_state="degraded"),
            NodeRow(None, "node-big", 0.0, "overloaded", 80.0, 2.0, 1.0),
        ],
        changes=[change],
        recent=[change],
        unranked={"dead": ["node-dead"], "quarantined": ["node-flap"], "overloaded": ["node-big"]},
        rejects={"bad_field": 3, "unknown_field": 1},
        heartbeats=1000,
        accepted=996,
    )


def test_render_shows_header_nodes_states_and_footer():
    out = text_of(render(sample_view()))
    for expected in (
        "shm-engine prod",
        "epoch 42",
        "tick every 50 ms",
        "p50 210",
        "p99 480",
        "20 ticks/s",
        "1,234 hb/s",
        "pressure 0.375",
        "wait 0.44",
        "healthy 2",
        "quarantined 1",
        "dead 1",
        "node-a",
        "node-b",
        "node-dead",
        "node-flap",
        "node-big",
        "overloaded",
        "bad_field 3",
        "unknown_field 1",
        "996 accepted",
    ):
        assert expected in out, expected


def test_render_marks_state_changes_with_the_old_state():
    out = text_of(render(sample_view()))
    lines = out.splitlines()
    changed = [ln for ln in lines if "node-b" in ln]
    assert changed and "▶" in changed[0] and "degraded → healthy" in changed[0]
    flap = [ln for ln in lines if "node-flap" in ln and "degraded → quarantined" in ln]
    assert len(flap) == 2  # its table row and the recent-changes list
    assert "not ranked: dead node-dead  quarantined node-flap  overloaded node-big" in out
    steady = [ln for ln in lines if "node-a" in ln]
    assert "▶" not in steady[0] and "→" not in steady[0]


def test_render_without_a_tick_and_with_a_message():
    vs = ViewState(name="x", message="waiting for the first tick")
    out = text_of(render(vs))
    assert "waiting for the first tick" in out and "rejected: none" in out


def test_score_bar_grows_with_the_score():
    vs = ViewState(
        name="x",
        rows=[
            NodeRow(1, "full", 1.0, "healthy", 0, 0, 1),
            NodeRow(2, "half", 0.5, "degraded", 0, 0, 1),
            NodeRow(None, "zero", 0.0, "dead", 0, 0, 0),
        ],
    )
    out = text_of(render(vs))
    bars = {
        name: next(ln for ln in out.splitlines() if name in ln).count("█")
        for name in ("full", "half", "zero")
    }
    assert bars == {"full": 10, "half": 5, "zero": 0}


# ---------------------------------------------------------------- Watcher --
def snap(epoch, nodes, states, scores, ranked):
    n = len(nodes)
    z = np.zeros(n)
    return Snapshot(
        epoch=epoch,
        tick_time=0.0,
        tick_mono=0.0,
        nodes=tuple(nodes),
        score=np.array(scores, float),
        raw=z,
        state=np.array(states, np.uint8),
        wait=z,
        qema=z,
        liveness=np.ones(n),
        ranked=np.array(ranked, np.int32),
        pressure=0.0,
        weights={},
        counts={},
    )


def bare_watcher(rows):
    """A Watcher without an engine: only the diff and row logic."""
    w = Watcher.__new__(Watcher)
    w.rows = rows
    w._prev_states = {}
    from collections import deque

    w._recent = deque(maxlen=8)
    return w


H, D, O, Q, X = (int(s) for s in NodeState)


def view_of(w, s):
    vs = ViewState(name="t", now=1.0)
    w._diff_states(s, vs)
    vs.rows = w._rows(s, {c.node: c.old for c in vs.changes})
    return vs


def test_watcher_reports_changes_since_the_previous_poll_only():
    w = bare_watcher(rows=10)
    s1 = snap(1, ["a", "b", None, "c"], [H, D, 255, O], [0.9, 0.3, 0, 0], [0, 1])
    vs = view_of(w, s1)
    assert vs.changes == []  # the first poll has nothing to compare with
    s2 = snap(2, ["a", "b", None, "c"], [D, D, 255, Q], [0.35, 0.3, 0, 0], [0, 1])
    vs = view_of(w, s2)
    assert [(c.node, c.old, c.new) for c in vs.changes] == [
        ("a", "healthy", "degraded"),
        ("c", "overloaded", "quarantined"),
    ]
    by_node = {r.node: r for r in vs.rows}
    assert by_node["a"].old_state == "healthy" and by_node["b"].old_state is None
    assert by_node["c"].old_state == "overloaded" and by_node["c"].rank is None
    vs = view_of(w, s2)
    assert vs.changes == [] and all(r.old_state is None for r in vs.rows)
    assert len(w._recent) == 2  # the recent list remembers them


@pytest.mark.parametrize(
    "rows, expected",
    [
        (1, ["b"]),
        (2, ["b", "a"]),
        # ranked first, then unranked worst state first: dead, quarantined, overloaded
        (5, ["b", "a", "e", "d", "c"]),
        (9, ["b", "a", "e", "d", "c"]),
    ],
)
def test_watcher_rows_ranked_first_then_worst_states(rows, expected):
    w = bare_watcher(rows)
    s = snap(1, ["a", "b", "c", "d", "e"], [D, H, O, Q, X], [0.3, 0.8, 0, 0, 0], [1, 0])
    vs = view_of(w, s)
    assert [r.node for r in vs.rows] == expected
    assert [r.rank for r in vs.rows][:2] == [1, 2][: min(rows, 2)]


def test_top_exits_2_when_the_engine_does_not_exist(shm_name, capsys):
    assert main(["top", "--name", shm_name]) == 2
    assert "not running" in capsys.readouterr().err


def test_watcher_lists_a_few_unranked_nodes_per_bad_state():
    s = snap(1, ["q2", "o1", "q1", "h", "x1", "q3"], [Q, O, Q, H, X, Q], [0, 0, 0, 0.9, 0, 0], [3])
    assert Watcher._unranked(s, per_state=2) == {
        "dead": ["x1"],
        "quarantined": ["q1", "q2"],
        "overloaded": ["o1"],
    }
