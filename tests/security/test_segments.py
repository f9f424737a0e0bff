"""Segments: only the engine's own segments are used, and a stopped engine shows.

Attacks: another local user creates ``/dev/shm/NAME`` (or ``NAME.claims``)
before the engine, to block ``run`` or to serve schedulers its own nodes; a
segment others may write; a reader left on the segment of a dead engine.
The other user is ``nobody``, acted by a forked child of the test (root
only: `support.users`).
"""

from __future__ import annotations

import mmap
import os
import re
import signal
import stat
import struct
import time

import posix_ipc
import pytest

from clients import EngineNotRunning, EngineStopped, ScoreReader, UntrustedSegment
from clients import reader as reader_module
from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.layout import MAGIC, layout_for
from shm_engine.core.segment import Segment, claims_posix_name, posix_name
from support.claims import ClaimsEngine
from support.engine import START_TIMEOUT_S, Engine, cli, free_port, segment_exists, write_config
from support.users import OTHER_USER, Held, as_other_user, skip_unless_root
from support.wait import wait_until

OTHER = f"uid {OTHER_USER.pw_uid} ({OTHER_USER.pw_name})" if OTHER_USER else ""


def _squat(pname: str, mode: int = 0o644, capacity: int = 64) -> None:
    """Create ``pname`` as the engine would, with a header that claims a
    live creator (pid 1, always running): the squatter's best disguise."""
    size = layout_for(capacity).size
    shm = posix_ipc.SharedMemory(pname, posix_ipc.O_CREX, mode=mode, size=size)
    os.fchmod(shm.fd, mode)
    mm = mmap.mmap(shm.fd, size)
    shm.close_fd()
    struct.pack_into("<QIIqQ", mm, 0, MAGIC, 2, capacity, 1, 0)
    mm.close()


def _dev_shm(pname: str) -> str:
    return "/dev/shm" + pname


# ---------------------------------------------------------------- squatting --
@skip_unless_root
@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_run_refuses_a_name_squatted_by_another_user_and_names_the_owner(shm_name, tmp_path, mode):
    assert as_other_user(lambda: _squat(posix_name(shm_name), mode)) == 0
    config = write_config(tmp_path / "e.toml", free_port())
    run = cli("run", "--name", shm_name, "--config", str(config), timeout=120)
    assert run.returncode == 2, run.stderr
    assert "already running (pid 1)" not in run.stderr
    assert f"owner {OTHER}" in run.stderr and f"mode {mode:#o}" in run.stderr, run.stderr
    assert "another user created it first" in run.stderr
    assert "Traceback" not in run.stderr
    # Nothing of ours was made, and the squatter's segment is left to its owner.
    assert not os.path.exists(_dev_shm(claims_posix_name(shm_name)))
    assert os.stat(_dev_shm(posix_name(shm_name))).st_uid == OTHER_USER.pw_uid


@skip_unless_root
def test_run_refuses_a_squatted_claims_name_and_leaves_nothing_behind(shm_name, tmp_path):
    # The scores segment is created first, then the claims segment fails:
    # the scores segment must not stay behind (nor stay "starting").
    assert as_other_user(lambda: _squat(claims_posix_name(shm_name))) == 0
    config = write_config(tmp_path / "e.toml", free_port())
    run = cli("run", "--name", shm_name, "--config", str(config), timeout=120)
    assert run.returncode == 2, run.stderr
    assert f"segment {claims_posix_name(shm_name)} (owner {OTHER}" in run.stderr, run.stderr
    assert not segment_exists(shm_name)
    assert os.stat(_dev_shm(claims_posix_name(shm_name))).st_uid == OTHER_USER.pw_uid


@skip_unless_root
def test_readers_refuse_a_segment_of_another_user(shm_name):
    assert as_other_user(lambda: _squat(posix_name(shm_name))) == 0
    assert as_other_user(lambda: _squat(claims_posix_name(shm_name))) == 0
    with pytest.raises(
        UntrustedSegment,
        match=re.escape(f"owner {OTHER}, mode 0o644) does not belong to uid 0 (root)"),
    ):
        ScoreReader.attach(shm_name)
    with pytest.raises(
        UntrustedSegment, match=re.escape(f"{claims_posix_name(shm_name)} (owner {OTHER}")
    ):
        ClaimsSegment.attach(shm_name)
    status = cli("status", "--name", shm_name)
    assert status.returncode == 2 and f"owner {OTHER}" in status.stderr, status.stderr


@skip_unless_root
def test_owner_names_the_user_an_engine_runs_as(shm_name):
    # An engine run by nobody: a reader of another user attaches with owner=.
    def engine_as_nobody():
        Segment.create(shm_name, 8, mode=0o644).close()

    with Held(engine_as_nobody) as held:
        held.ready()
        with pytest.raises(UntrustedSegment):
            ScoreReader.attach(shm_name)
        for owner in ("nobody", OTHER_USER.pw_uid):
            with ScoreReader.attach(shm_name, owner=owner) as reader:
                assert reader.epoch == 0
        status = cli("status", "--name", shm_name, "--owner", "nobody", "--json")
        assert status.returncode == 0, status.stderr


# ---------------------------------------------------------- writable modes --
@pytest.mark.parametrize(
    "mode, who",
    [(0o666, "every user"), (0o622, "every user"), (0o660, "its group"), (0o620, "its group")],
)
def test_attach_refuses_a_scores_segment_others_may_write(shm_name, mode, who):
    seg = Segment.create(shm_name, 8)
    try:
        os.chmod(_dev_shm(posix_name(shm_name)), mode)
        with pytest.raises(UntrustedSegment, match=rf"mode {mode:#o}\) may be written by {who}"):
            ScoreReader.attach(shm_name)
        with pytest.raises(UntrustedSegment):
            Segment.attach(shm_name, readonly=False)
    finally:
        seg.close()


def test_claims_segment_may_be_group_writable_never_world_writable(shm_name):
    eng = ClaimsEngine(shm_name)
    try:
        path = _dev_shm(claims_posix_name(shm_name))
        os.chmod(path, 0o660)
        ClaimsSegment.attach(shm_name).close()
        os.chmod(path, 0o662)
        with pytest.raises(UntrustedSegment, match=r"mode 0o662\) may be written by every user"):
            ClaimsSegment.attach(shm_name)
    finally:
        eng.close()


@pytest.mark.parametrize(
    "create, mode",
    [
        (lambda name, mode: Segment.create(name, 8, mode=mode), 0o660),
        (lambda name, mode: Segment.create(name, 8, mode=mode), 0o666),
        (lambda name, mode: ClaimsSegment.create(name, 8, 2, mode=mode), 0o666),
    ],
)
def test_create_refuses_a_mode_others_could_write_through(shm_name, create, mode):
    with pytest.raises(ValueError, match=rf"mode {mode:#o} for /{shm_name}.* gives"):
        create(shm_name, mode)
    assert not os.path.exists(_dev_shm(posix_name(shm_name)))
    assert not os.path.exists(_dev_shm(claims_posix_name(shm_name)))


def test_a_reclaimable_segment_of_ours_that_others_may_write_is_not_trusted(shm_name):
    seg = Segment.create(shm_name, 8)
    seg.close()
    os.chmod(_dev_shm(posix_name(shm_name)), 0o666)
    with pytest.raises(UntrustedSegment, match="may be written by every user"):
        Segment.create(shm_name, 8)


# ----------------------------------------------------- half-made segments --
def test_a_failed_initialisation_leaves_no_segment(shm_name, monkeypatch):
    def fail(*_args):
        raise OverflowError("simulated failure after the segment was created")

    monkeypatch.setattr(Segment, "_initialise", fail)
    with pytest.raises(OverflowError, match="simulated"):
        Segment.create(shm_name, 8)
    assert not segment_exists(shm_name)
    monkeypatch.setattr("shm_engine.core.claims.stamp_identity", fail)
    with pytest.raises(OverflowError, match="simulated"):
        ClaimsSegment.create(shm_name, 8, 2)
    assert not os.path.exists(_dev_shm(claims_posix_name(shm_name)))


def test_run_fails_cleanly_when_the_claims_name_is_held(shm_name):
    """The scores segment is made, then the claims name turns out held (by a
    live engine of ours here): ``run`` raises and leaves only what it found."""
    from shm_engine.core.config import Config
    from shm_engine.core.errors import EngineAlreadyRunning
    from shm_engine.ops.supervisor import Supervisor

    held = ClaimsSegment.create(shm_name, 8, 2)
    try:
        with pytest.raises(EngineAlreadyRunning, match=rf"engine '{shm_name}' is already running"):
            Supervisor(shm_name, Config()).run()
        assert not segment_exists(shm_name)
        assert os.path.exists(_dev_shm(claims_posix_name(shm_name)))  # not ours to remove
    finally:
        held.close()


def test_an_endpoint_too_long_for_the_header_creates_nothing(shm_name):
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        Segment.create(shm_name, 8, endpoint="ipc:///" + "x" * 300)
    assert not segment_exists(shm_name)


# ------------------------------------------------------ a stopped engine --
@pytest.fixture
def scored(shm_name):
    """An in-process engine with node ``n1`` scored; the reader attached."""
    eng = ClaimsEngine(shm_name)
    h = eng.views.header
    h.supervisor_alive_mono[0] = time.monotonic()
    eng.send("n1")
    eng.tick()
    reader = ScoreReader.attach(shm_name)
    yield eng, reader
    reader.close()
    eng.close()


def test_no_process_lookup_while_the_supervisor_beats(scored, monkeypatch):
    eng, reader = scored
    # Compile what the calls below use first: a first compile (an empty
    # numba cache) can outlast SUPERVISOR_SILENT_S between two beats.
    eng.views.header.supervisor_alive_mono[0] = time.monotonic()
    reader.score("n1")
    reader.snapshot()
    reader.pick()
    calls = []
    monkeypatch.setattr(reader_module, "process_alive", lambda *a: calls.append(a) or True)
    for _ in range(100):
        eng.views.header.supervisor_alive_mono[0] = time.monotonic()  # as the supervisor does
        assert reader.score("n1") > 0
        reader.snapshot()
        reader.pick()
    assert reader.engine_alive() and not reader.is_stale(60)
    assert calls == []


def test_a_silent_supervisor_is_looked_up_at_most_once_a_second(scored, monkeypatch):
    eng, reader = scored
    calls = []
    monkeypatch.setattr(reader_module, "process_alive", lambda *a: calls.append(a) or True)
    eng.views.header.supervisor_alive_mono[0] = 0.0  # no beat for a long time
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 0.5:
        reader.snapshot()
        n += 1
    assert n > 10 and len(calls) == 1  # the first slow path looked, the rest waited
    assert reader.engine_alive() and len(calls) == 2  # asked explicitly: it looks


def test_a_dead_supervisor_makes_every_call_raise_engine_stopped(scored):
    eng, reader = scored
    assert reader.score("n1") > 0  # the fast path is primed
    h = eng.views.header
    h.supervisor_alive_mono[0] = 0.0
    h.creator_start[0] = 1  # the creator is now "another process": dead
    assert not reader.engine_alive()
    for call in (
        lambda: reader.score("n1"),
        lambda: reader.state("n1"),
        reader.snapshot,
        reader.pick,
        reader.top,
        lambda: reader.score("never-seen"),
    ):
        with pytest.raises(
            EngineStopped,
            match=rf"engine '{eng.name}' has stopped: its "
            r"supervisor \(pid \d+\) is dead",
        ):
            call()
    assert isinstance(EngineStopped("x"), EngineNotRunning)
    assert reader.is_stale(0.0)  # a predicate: never raises
    with pytest.raises(EngineStopped):
        ScoreReader.attach(eng.name)


def test_is_stale_is_enough_for_a_fast_path_reader_to_learn(scored):
    eng, reader = scored
    assert reader.score("n1") > 0
    eng.views.header.stopping[0] = 1
    assert reader.score("n1") > 0  # the fast path does not ask...
    assert reader.is_stale(0.0)  # ...until something slow does
    with pytest.raises(EngineStopped, match="is stopping or stopped"):
        reader.score("n1")


def test_readers_of_a_real_engine_see_it_stop_both_ways(shm_name, tmp_path, reap):
    """Clean stop (SIGTERM) and SIGKILL of the supervisor, each seen by a
    reader that keeps calling the fast path and checks is_stale."""
    for how in ("sigterm", "sigkill"):
        eng = Engine(shm_name, write_config(tmp_path / f"{how}.toml", free_port()), tmp_path, reap)
        status = eng.wait_ready()
        from clients import HeartbeatClient

        with HeartbeatClient(status["ingest_endpoint"]) as hb:
            hb.send("n1", cpu=0.1, mem=0.1, queue=0.0, avg_job_s=1.0)
        reader = ScoreReader.attach(shm_name)
        try:
            wait_until(
                lambda reader=reader: "n1" in reader.snapshot().nodes, START_TIMEOUT_S, "n1 scored"
            )
            assert reader.engine_alive()
            if how == "sigterm":
                assert eng.stop() == 0
                assert not segment_exists(shm_name)
            else:
                eng.proc.send_signal(signal.SIGKILL)
                eng.proc.wait(30)

            def learnt(reader: ScoreReader = reader) -> bool:
                try:
                    reader.score("n1")
                    reader.is_stale(1.0)
                except EngineStopped:
                    return True
                return False

            wait_until(learnt, 30, f"the reader to see the engine gone ({how})", period=0.05)
            assert not reader.engine_alive()
        finally:
            reader.close()
        if how == "sigkill":  # the stale segment stays until the next run reclaims it
            with pytest.raises(EngineStopped, match="supervisor .* is dead"):
                ScoreReader.attach(shm_name)
            mode = stat.S_IMODE(os.stat(_dev_shm(posix_name(shm_name))).st_mode)
            assert mode == 0o600
