"""Shared fixtures: unique shared-memory names, and cleanup that runs even when
a test fails (segments unlinked, child processes killed)."""

import os
import uuid

import pytest

from support.shm import unlink_segment

SHM_PREFIX = "shmtest"


@pytest.fixture
def shm_name():
    """A segment name unique to this test; whatever has it (an engine's
    scores and claims segments) is unlinked after."""
    name = f"{SHM_PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    yield name
    unlink_segment(name)


@pytest.fixture
def shm_names():
    """A factory of unique segment names, all unlinked after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"{SHM_PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        made.append(name)
        return name

    yield make
    for name in made:
        unlink_segment(name)


@pytest.fixture
def pull():
    """A plain PULL socket on a free loopback port, standing in for the
    engine's ingest: yields ``(socket, endpoint)``."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(linger=0)
    ctx.term()


@pytest.fixture
def reap():
    """Register processes (multiprocessing or subprocess.Popen); all are
    killed and reaped after the test, pass or fail."""
    procs = []
    yield procs.append
    for p in procs:
        try:
            if hasattr(p, "poll"):  # subprocess.Popen
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=10)
            else:  # multiprocessing.Process
                if p.is_alive():
                    p.kill()
                p.join(timeout=10)
        except Exception:  # noqa: BLE001 - cleanup must go on for the others
            pass


def pytest_sessionfinish(session, exitstatus):
    """Fail loudly if any test left a segment of ours in /dev/shm."""
    leaked = [n for n in os.listdir("/dev/shm") if n.startswith(f"{SHM_PREFIX}-{os.getpid()}-")]
    for n in leaked:
        unlink_segment(n)
    if leaked:
        session.exitstatus = 1
        print(f"\nERROR: tests left shared-memory segments behind: {leaked}")
