"""`shm-engine run` as a real process: restarts, name ownership, stale
segments, clean and fatal shutdowns.

Each test starts the engine as a subprocess (`support.engine.Engine`), waits
for its ``ready`` line, and reads its state in-process through
`status.read_status` (the same object ``status --json`` prints).  Every wait
is a poll with a deadline; processes are registered with ``reap`` and names
come from ``shm_name``, so nothing outlives a failing test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from shm_engine.ops.status import read_status
from support.engine import (
    LOG_LINE,
    START_TIMEOUT_S,
    Engine,
    cli,
    free_port,
    segment_exists,
    write_config,
)
from support.wait import wait_until


@pytest.fixture
def engine_at(tmp_path, reap):
    """``engine_at(name, config_path)`` starts an engine; reaped after the test."""

    def start(name: str, config) -> Engine:
        return Engine(name, config, tmp_path, reap)

    return start


def test_live_engine_refuses_a_second_run_and_restarts_killed_children(
    shm_name, tmp_path, engine_at
):
    eng = engine_at(shm_name, write_config(tmp_path / "a.toml", free_port()))
    st = eng.wait_ready()
    assert st["pid"] == eng.proc.pid
    assert st["children"]["ticker"]["restarts"] == st["children"]["ingest"]["restarts"] == 0

    # A second run with the same name: one line, exit 2, the live engine untouched.
    second = cli(
        "run", "--name", shm_name, "--config", str(write_config(tmp_path / "b.toml", free_port()))
    )
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"already running (pid {eng.proc.pid})" in lines[0]
    assert segment_exists(shm_name) and eng.proc.poll() is None

    for role in ("ticker", "ingest"):
        old = eng.status()
        old_pid = old["children"][role]["pid"]
        assert old_pid > 0
        os.kill(old_pid, signal.SIGKILL)

        def restarted(role=role, old_pid=old_pid):
            c = eng.status()["children"][role]
            return c["restarts"] == 1 and c["pid"] not in (0, old_pid)

        wait_until(restarted, START_TIMEOUT_S, f"{role} restarted")
        # The tick worker resumes from the published epoch, it does not start over.
        wait_until(
            lambda old=old: eng.status()["epoch"] > old["epoch"] + 3,
            START_TIMEOUT_S,
            "epochs after the restart",
        )
        assert f"child_exited role={role} pid={old_pid} code=signal_9" in eng.stderr
        assert f"child_restarted role={role}" in eng.stderr

    final = eng.status()
    assert final["children"]["ticker"]["restarts"] == final["children"]["ingest"]["restarts"] == 1
    assert eng.stop() == 0
    assert not segment_exists(shm_name)
    # Supervisor, ingest and tick worker all log in the one format, milliseconds included.
    lines = eng.stderr.splitlines()
    assert any("ticker_started" in line for line in lines)
    assert [line for line in lines if not LOG_LINE.match(line)] == []


_CREATE_AND_HANG = """
import sys, time
from shm_engine.core.segment import Segment
seg = Segment.create(sys.argv[1], 64)
print("created", flush=True)
time.sleep(120)
"""


def test_stale_segment_is_reclaimed_and_sigterm_leaves_none(shm_name, tmp_path, engine_at, reap):
    creator = subprocess.Popen(
        [sys.executable, "-c", _CREATE_AND_HANG, shm_name], stdout=subprocess.PIPE, text=True
    )
    reap(creator)
    assert creator.stdout.readline() == "created\n"
    creator.kill()
    creator.wait(10)
    assert segment_exists(shm_name)

    # status on the stale segment: a one-line error, exit 2.
    st = cli("status", "--name", shm_name, "--json")
    assert st.returncode == 2
    assert st.stdout == ""
    assert len(st.stderr.strip().splitlines()) == 1
    assert "not running" in st.stderr and f"pid {creator.pid}" in st.stderr

    eng = engine_at(shm_name, write_config(tmp_path / "e.toml", free_port()))
    assert eng.wait_ready()["pid"] == eng.proc.pid
    assert eng.stop() == 0
    assert not segment_exists(shm_name)
    assert "engine_stopped" in eng.stderr


def test_status_of_a_missing_engine_is_one_line_exit_2(shm_name):
    st = cli("status", "--name", shm_name)
    assert st.returncode == 2
    assert st.stderr.count("\n") == 1
    assert st.stderr.startswith("shm-engine: ") and "not running" in st.stderr


def test_fatal_child_exit_stops_the_engine(shm_name, tmp_path, engine_at):
    # The ingest cannot bind a port that is taken: exit 78, no restart, exit 1.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        eng = engine_at(shm_name, write_config(tmp_path / "e.toml", port))
        rc = eng.proc.wait(START_TIMEOUT_S)
    assert rc == 1
    assert "child_fatal role=ingest" in eng.stderr and "code=78" in eng.stderr
    assert "child_restarted" not in eng.stderr
    assert not segment_exists(shm_name)


def test_wildcard_port_is_resolved_and_published(shm_name, tmp_path, engine_at):
    import re

    import zmq

    from shm_engine.wire.encode import encode_json

    eng = engine_at(shm_name, write_config(tmp_path / "e.toml", "*"))
    eng.wait_ready()
    bound = re.search(r"^ingest endpoint (tcp://127\.0\.0\.1:\d+)$", eng.stdout, re.M)
    assert bound, eng.stdout
    assert eng.status()["ingest_endpoint"] == bound.group(1)
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.connect(bound.group(1))
        push.send(encode_json(dict(node="w", cpu=0.1, mem=0.1, queue=0, avg_job_s=1)))
        wait_until(lambda: eng.status()["ingest"]["accepted"] == 1, 30, "heartbeat accepted")
        push.close(0)
    finally:
        ctx.term()
    assert eng.stop() == 0


def test_without_warm_spares_only_the_children_run_and_restarts_are_cold(
    shm_name, tmp_path, engine_at
):
    import psutil

    cfg = write_config(tmp_path / "c.toml", free_port())
    cfg.write_text(cfg.read_text().replace("[engine]\n", "[engine]\nwarm_spares = false\n"))
    eng = engine_at(shm_name, cfg)
    st = eng.wait_ready()
    # Spawned children run multiprocessing's spawn_main; spares would be more of them.
    kids = {
        p.pid
        for p in psutil.Process(eng.proc.pid).children()
        if "spawn_main" in " ".join(p.cmdline())
    }
    assert kids == {st["children"]["ticker"]["pid"], st["children"]["ingest"]["pid"]}
    assert "spare_started" not in eng.stderr
    old_pid = st["children"]["ticker"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_until(
        lambda: (
            eng.status()["children"]["ticker"]["restarts"] == 1
            and eng.status()["children"]["ticker"]["pid"] not in (0, old_pid)
        ),
        START_TIMEOUT_S,
        "cold restart",
    )
    wait_until(lambda: eng.status()["epoch"] > st["epoch"] + 3, START_TIMEOUT_S, "ticking again")
    assert eng.stop() == 0


def test_a_hung_child_is_killed_and_restarted_by_the_watchdog(shm_name, tmp_path, engine_at):
    cfg = write_config(tmp_path / "h.toml", free_port())
    cfg.write_text(cfg.read_text().replace("[engine]\n", "[engine]\nhang_timeout_s = 1.0\n"))
    eng = engine_at(shm_name, cfg)
    st = eng.wait_ready()
    hung = st["children"]["ticker"]["pid"]
    os.kill(hung, signal.SIGSTOP)  # alive, but no longer ticking
    try:
        wait_until(
            lambda: (
                eng.status()["children"]["ticker"]["restarts"] == 1
                and eng.status()["children"]["ticker"]["pid"] not in (0, hung)
            ),
            START_TIMEOUT_S,
            "the hung ticker replaced",
        )
    finally:
        try:
            os.kill(hung, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert f"child_hung role=ticker pid={hung}" in eng.stderr
    epoch = eng.status()["epoch"]
    wait_until(lambda: eng.status()["epoch"] > epoch + 3, START_TIMEOUT_S, "ticking again")
    assert eng.status()["children"]["ingest"]["restarts"] == 0  # the busy ingest is left alone
    assert eng.stop() == 0


def test_watchdog_off_leaves_a_stopped_child_alone(shm_name, tmp_path, engine_at):
    cfg = write_config(tmp_path / "w.toml", free_port())
    cfg.write_text(cfg.read_text().replace("[engine]\n", "[engine]\nhang_timeout_s = 0\n"))
    eng = engine_at(shm_name, cfg)
    st = eng.wait_ready()
    pid = st["children"]["ticker"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        t_end = time.monotonic() + 3.0
        wait_until(
            lambda: time.monotonic() > t_end or "child_hung" in eng.stderr,
            10,
            "3 s with the ticker stopped",
        )
        assert "child_hung" not in eng.stderr
        assert eng.status()["children"]["ticker"] == {"pid": pid, "restarts": 0}
    finally:
        os.kill(pid, signal.SIGCONT)
    assert eng.stop() == 0


def test_ready_needs_a_published_epoch_and_a_bound_ingest(shm_name):
    """`ready` (stdout, status) waits for both children: a tick alone does
    not make the engine ready while the ingest socket is not yet bound, which
    is when the resolved endpoint is not yet in the header."""
    from shm_engine.core.segment import Segment
    from shm_engine.ops.status import engine_ready

    with Segment.create(shm_name, 4, endpoint="tcp://127.0.0.1:*") as seg:
        h = seg.views.header
        assert not engine_ready(h)
        h.latch_seq[0] = 2  # epoch 1 published, ingest silent
        assert not engine_ready(h)
        assert not read_status(shm_name)["ready"]
        h.ingest_alive_mono[0] = time.monotonic()
        assert engine_ready(h)
        assert read_status(shm_name)["ready"]


def test_spares_report_warm_and_a_dead_spare_means_a_cold_restart(shm_name, tmp_path, engine_at):
    import re

    eng = engine_at(shm_name, write_config(tmp_path / "e.toml", free_port()))
    eng.wait_ready()
    for role in ("ingest", "ticker"):
        wait_until(
            lambda role=role: re.search(
                rf"spare_ready role={role} pid=\d+ warm_s=[\d.]+$", eng.stderr, re.M
            ),
            START_TIMEOUT_S,
            f"{role} spare warm",
        )
    spare = int(re.search(r"spare_started role=ticker pid=(\d+)", eng.stderr).group(1))
    os.kill(spare, signal.SIGKILL)
    wait_until(lambda: f"spare_lost role=ticker pid={spare}" in eng.stderr, 30, "spare lost")
    ticker = eng.status()["children"]["ticker"]["pid"]
    os.kill(ticker, signal.SIGKILL)

    def restarted():
        c = eng.status()["children"]["ticker"]
        return c["restarts"] == 1 and c["pid"] not in (0, ticker, spare)

    wait_until(restarted, START_TIMEOUT_S, "ticker restarted cold")
    epoch = eng.status()["epoch"]
    wait_until(lambda: eng.status()["epoch"] > epoch + 3, START_TIMEOUT_S, "ticks again")
    assert eng.stop() == 0
    assert not segment_exists(shm_name)
