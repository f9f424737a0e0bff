"""Clients: the README example delivers, the agent's report socket is
private and its drain bounded, and the reader imports without a writable
numba cache.

Before: ``with HeartbeatClient(...) as hb: hb.send(...)`` counted the
heartbeat as sent and the engine got nothing (linger 0 on close: 3 runs out
of 3); the agent listened on a socket any local user could reach and
drained it without bound; importing the reader where numba could cache
nowhere failed with numba's own traceback.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from clients import HeartbeatClient, NothingPublished, ScoreReader
from clients.agent import Agent, Reporter, default_listen, private_dir
from shm_engine import wire
from shm_engine.core.segment import Segment
from support.engine import START_TIMEOUT_S, Engine, free_port, write_config
from support.users import OTHER_USER, as_other_user
from support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
HB = dict(
    cpu=0.42, mem=0.61, queue=3, avg_job_s=1.8, throughput=12.5, ok=120, err=1, p50_ms=35, p95_ms=80
)


# ------------------------------------------------------ the README example --
def test_the_readme_example_delivers_every_time(pull):
    sock, endpoint = pull
    for run in range(5):
        node = f"node-{run}"
        with HeartbeatClient(endpoint) as hb:  # the README, word for word
            hb.send(node, **HB)
        # The with block has ended: the client is closed, the frame is out.
        assert sock.poll(5000), f"run {run}: the heartbeat never arrived"
        d = wire.decode_frame(sock.recv(), wire.DEFAULT_MAX_FRAME_BYTES)
        assert d.rejects == {} and wire.node_key(d.records[0]) == node.encode()
    assert not sock.poll(0)


def test_the_readme_example_reaches_a_real_engine(shm_name, tmp_path, reap):
    eng = Engine(shm_name, write_config(tmp_path / "e.toml", free_port()), tmp_path, reap)
    endpoint = eng.wait_ready()["ingest_endpoint"]
    nodes = [f"readme-{i}" for i in range(3)]
    for node in nodes:  # three separate clients, each closed at once
        with HeartbeatClient(endpoint) as hb:
            hb.send(node, **HB)
    with ScoreReader.attach(shm_name) as reader:

        def all_scored():
            try:
                return set(nodes) <= set(reader.snapshot().nodes)
            except NothingPublished:
                return False

        wait_until(all_scored, START_TIMEOUT_S, "the three README heartbeats to be scored")
    assert eng.status()["ingest"]["accepted"] == 3
    assert eng.stop() == 0


def test_close_waits_at_most_the_linger_for_an_absent_engine():
    client = HeartbeatClient(f"tcp://127.0.0.1:{free_port()}", linger_ms=300)
    client.send("n1", **HB)
    t0 = time.monotonic()
    client.close()
    took = time.monotonic() - t0
    assert 0.2 < took < 3.0, took  # it waited for delivery, and gave up
    client = HeartbeatClient(f"tcp://127.0.0.1:{free_port()}")
    client.send("n1", **HB)
    t0 = time.monotonic()
    client.close(linger_ms=0)  # the caller may choose to drop
    assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("linger", [-1, 1.5, True])
def test_an_unbounded_or_odd_linger_is_refused(linger):
    with pytest.raises(ValueError, match=r"linger_ms=.* must be an integer >= 0"):
        HeartbeatClient("tcp://127.0.0.1:1", linger_ms=linger)


# ------------------------------------------------- the agent's report socket --
class _Sampler:
    def sample(self):
        return {"cpu": 0.1, "mem": 0.2}


def test_the_report_socket_lives_in_a_private_directory(tmp_path, monkeypatch, pull):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    old = os.umask(0)  # the directory's mode must not depend on the umask
    try:
        listen = default_listen()
    finally:
        os.umask(old)
    d = runtime / "shm-engine-agent"
    assert listen == f"ipc://{d}/report.sock"
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    _sock, endpoint = pull
    with Agent(endpoint, "node-p", listen=listen, sampler=_Sampler()) as agent:
        rep = Reporter(agent.listen_endpoint)
        assert rep.report(queue=4)
        wait_until(lambda: agent.poll_reports(0.1) or agent.service, 10, "the report")
        rep.close()
    assert agent.service["queue"] == 4.0


def test_without_a_runtime_dir_the_private_directory_is_per_user_in_tmp(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    d = private_dir()
    assert d == str(tmp_path / f"shm-engine-agent-{os.geteuid()}")
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700


def test_a_wider_directory_of_ours_is_narrowed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "shm-engine-agent").mkdir(mode=0o777)
    os.chmod(tmp_path / "shm-engine-agent", 0o777)
    assert stat.S_IMODE(os.lstat(private_dir()).st_mode) == 0o700


def test_a_planted_symlink_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "shm-engine-agent").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(
        PermissionError,
        match=r"shm-engine-agent is not a directory of this "
        r"user .*: another user may have made it",
    ):
        default_listen()


def test_a_directory_made_first_by_another_user_is_refused(monkeypatch):
    if os.geteuid() != 0 or OTHER_USER is None:
        pytest.skip("making a directory as another user (nobody) needs root")
    base = tempfile.mkdtemp()  # in the system temp dir: every user can reach it
    try:
        os.chmod(base, 0o1777)  # like /tmp itself
        squat = os.path.join(base, "shm-engine-agent")
        assert as_other_user(lambda: os.mkdir(squat, 0o777)) == 0
        monkeypatch.setenv("XDG_RUNTIME_DIR", base)
        with pytest.raises(PermissionError, match=rf"owner uid {OTHER_USER.pw_uid}"):
            default_listen()
        assert os.stat(squat).st_uid == OTHER_USER.pw_uid  # left to its owner
    finally:
        shutil.rmtree(base)


def test_the_agent_command_refuses_to_start_without_a_private_directory(tmp_path):
    (tmp_path / "shm-engine-agent").symlink_to("/")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shm_engine",
            "agent",
            "--endpoint",
            "tcp://127.0.0.1:1",
            "--count",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "no private directory for the report socket" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_drain_is_bounded_per_interval(pull):
    """500 reports at once: each interval handles 50, the rest wait; the
    counts are exact and no report is lost."""
    _sock, endpoint = pull
    with Agent(
        endpoint,
        "node-f",
        listen="tcp://127.0.0.1:*",
        sampler=_Sampler(),
        max_reports_per_interval=50,
        log=lambda line: None,
    ) as agent:
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(agent.listen_endpoint)
        for _ in range(500):
            push.send(b'{"ok": 1}')
        try:
            for interval in range(1, 4):
                wait_until(
                    lambda interval=interval: (
                        (agent.poll_reports(0.05), agent.reports)[1] >= 50 * interval
                    ),
                    10,
                    f"interval {interval}'s reports",
                )
                assert agent.reports == 50 * interval
                assert agent.poll_reports(0.05) == 0  # budget spent: the rest wait
                assert agent.reports == 50 * interval
                assert agent.ok == 50  # since the last heartbeat
                agent.send_once()  # a heartbeat renews the budget
        finally:
            push.close(0)
            ctx.term()
        assert agent.reports_deferred == 3
        assert agent.bad_reports == 0


# ------------------------------------------- importing without a numba cache --
_PROBE = """
import numba

@numba.njit(cache=True)
def f():
    return 1
"""

_CHILD = r"""
import os, sys
name, probe_dir, mode = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, probe_dir)
if mode == "bare":                  # what numba does alone here
    try:
        import probe
    except RuntimeError as err:
        print("NUMBA FAILS:", err)
    sys.exit(0)
from clients import HeartbeatClient, ScoreReader
with ScoreReader.attach(name) as reader:
    print("ATTACHED epoch", reader.epoch)
import probe                        # numba now has a place to cache: ours
print("CACHE", os.environ["NUMBA_CACHE_DIR"], probe.f())
"""


def _read_only_run(tmp_path: Path, name: str, mode: str) -> subprocess.CompletedProcess:
    """The child above with NUMBA_CACHE_DIR, HOME, the source tree and the
    probe read-only: as root through read-only bind mounts in a private
    mount namespace (root writes through any mode bits), else by mode."""
    cache, home, probe_dir, tmp = (tmp_path / n for n in ("cache", "home", "probe", "tmp"))
    for d in (cache, home, probe_dir, tmp):
        d.mkdir(exist_ok=True)
    (probe_dir / "probe.py").write_text(_PROBE)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "NUMBA_CACHE_DIR": str(cache),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cmd = [sys.executable, "-c", _CHILD, name, str(probe_dir), mode]
    read_only = [cache, home, probe_dir, ROOT]
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("needs unshare(1) to make directories read-only for root")
        mounts = " && ".join(
            f"mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}' '{d}'" for d in read_only
        )
        script = f'{mounts} && exec "$@"'
        cmd = [unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", *cmd]
    else:
        for d in (cache, home, probe_dir):
            d.chmod(0o555)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if os.geteuid() == 0 and out.returncode != 0 and "mount" in out.stderr:
        pytest.skip(f"this machine does not allow read-only bind mounts: {out.stderr.strip()}")
    return out


def test_the_reader_imports_and_attaches_without_a_writable_numba_cache(shm_name, tmp_path):
    if os.geteuid() != 0 and os.access(ROOT, os.W_OK):
        pytest.skip("as a user who can write the source tree, numba caches beside it")
    seg = Segment.create(shm_name, 8)
    try:
        bare = _read_only_run(tmp_path, shm_name, "bare")
        assert "NUMBA FAILS: cannot cache function" in bare.stdout, (bare.stdout, bare.stderr)
        out = _read_only_run(tmp_path, shm_name, "clients")
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
        assert "ATTACHED epoch 0" in out.stdout
        private = tmp_path / "tmp" / f"shm-engine-numba-{os.geteuid()}"
        assert f"CACHE {private} 1" in out.stdout, out.stdout
        assert stat.S_IMODE(os.lstat(private).st_mode) == 0o700
    finally:
        seg.close()
        seg.unlink()


def test_a_planted_cache_directory_is_not_used(tmp_path, monkeypatch):
    from shm_engine.core import jitcache

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    planted = tmp_path / f"{jitcache.PRIVATE_PREFIX}{os.geteuid()}"
    planted.mkdir()
    planted.chmod(0o777)  # writable by everyone: code planted there would run
    got = jitcache._private_dir()
    assert got is not None and got != str(planted)
    assert stat.S_IMODE(os.lstat(got).st_mode) == 0o700
    shutil.rmtree(got)
