"""HeartbeatClient over a real PULL socket: frames arrive and decode; local
validation raises InvalidHeartbeat; send never blocks without a peer."""

import subprocess
import sys
import time

import numpy as np
import pytest

from clients import HeartbeatClient, InvalidHeartbeat
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.encode import encode_batch, node_key, record_to_dict
from shm_engine.wire.format import DEFAULT_MAX_FRAME_BYTES, RECORD_SIZE
from support.engine import free_port

HB = dict(cpu=0.5, mem=0.25, queue=3.0, avg_job_s=0.2)
TIMEOUT_MS = 5000


def recv_decoded(sock, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
    assert sock.poll(TIMEOUT_MS), "no frame within the timeout"
    frame = sock.recv()
    return frame, decode_frame(frame, max_frame_bytes)


def test_send_binary_and_json_frames_arrive_and_decode(pull):
    sock, endpoint = pull
    with HeartbeatClient(endpoint) as client:
        assert client.send("n1", **HB, ok=3, err=0, zone="eu")
        assert client.send("n2", **HB, labels={"rack": "r9"})
        assert (client.sent, client.dropped) == (2, 0)
        frame, d = recv_decoded(sock)
        assert frame[:4] == b"SHMH" and d.rejects == {}
        assert record_to_dict(d.records[0]) == dict(node="n1", **HB, ok=3, err=0, zone="eu")
        frame, d = recv_decoded(sock)
        assert frame[:1] == b"{" and d.labels == [b'{"rack":"r9"}']
        assert node_key(d.records[0]) == b"n2"


def test_send_batch_splits_frames_under_the_limit(pull):
    sock, endpoint = pull
    limit = 16 + 10 * RECORD_SIZE  # 10 records per frame
    records = [dict(node=f"n{i}", **HB) for i in range(25)]
    with HeartbeatClient(endpoint, max_frame_bytes=limit) as client:
        assert client.send_batch(records) == 25
        assert client.sent == 25
        got = []
        for expected in (10, 10, 5):
            frame, d = recv_decoded(sock, limit)
            assert len(frame) <= limit and d.seen == expected and d.rejects == {}
            got += [node_key(r).decode() for r in d.records]
    assert got == [f"n{i}" for i in range(25)]


def test_send_batch_accepts_a_record_array(pull):
    sock, endpoint = pull
    arr = decode_frame(encode_batch([dict(node="a", **HB), dict(node="b", **HB)]), 1 << 20).records
    with HeartbeatClient(endpoint) as client:
        assert client.send_batch(arr) == 2
        _, d = recv_decoded(sock)
    assert d.records.tobytes() == arr.tobytes()


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(HB, cpu=1.5), r"^bad_field: node 'n1': cpu=1\.5 out of \[0, 1\]$"),
        (dict(HB, ok=1), r"missing_field: node 'n1': ok without its pair"),
        ({k: v for k, v in HB.items() if k != "queue"}, r"missing_field: node 'n1': missing queue"),
        (dict(HB, colour="red"), r"unknown_field: node 'n1': unknown field 'colour'"),
        (dict(HB, mem=True), r"mem=True is not a number"),
    ],
)
def test_send_raises_on_invalid_heartbeats(pull, fields, match):
    _, endpoint = pull
    with HeartbeatClient(endpoint) as client:
        with pytest.raises(InvalidHeartbeat, match=match) as info:
            client.send("n1", **fields)
        assert isinstance(info.value, ValueError)
        assert client.sent == 0 and client.dropped == 0


def test_send_batch_validates_everything_before_sending(pull):
    sock, endpoint = pull
    with HeartbeatClient(endpoint) as client:
        with pytest.raises(InvalidHeartbeat, match=r"bad_node_id: node '': node id is empty"):
            client.send_batch([dict(node="ok", **HB), dict(node="", **HB)])
        with pytest.raises(InvalidHeartbeat, match=r"labels cannot travel in a binary batch"):
            client.send_batch([dict(node="a", **HB, labels={"a": "b"})])
        bad = decode_frame(encode_batch([dict(node="a", **HB)]), 1 << 20).records
        bad["cpu"] = 7.0
        with pytest.raises(InvalidHeartbeat, match=r"cpu=7\.0 out of"):
            client.send_batch(bad)
        assert client.sent == 0
    assert not sock.poll(0)


def test_bad_node_id_raises():
    with HeartbeatClient("tcp://127.0.0.1:1") as client:
        with pytest.raises(InvalidHeartbeat, match=r"bad_node_id: node 'a\\nb'"):
            client.send("a\nb", **HB)


def test_send_never_blocks_without_a_peer():
    """Nothing listens: once the queue (SNDHWM) is full, sends drop at once."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    client = HeartbeatClient(endpoint, sndhwm=5)
    deadline = time.monotonic() + 10.0
    attempts = 0
    slowest = 0.0
    while client.dropped == 0 and time.monotonic() < deadline and attempts < 100000:
        t0 = time.monotonic()
        client.send("n1", **HB)
        slowest = max(slowest, time.monotonic() - t0)
        attempts += 1
    assert client.dropped > 0, f"no drop after {attempts} sends"
    assert client.sent + client.dropped == attempts
    assert slowest < 1.0
    # a batch is dropped whole, and counted per heartbeat
    assert client.send_batch([dict(node=f"n{i}", **HB) for i in range(3)]) == 0
    assert client.dropped >= 4
    t0 = time.monotonic()
    client.close()  # waits at most linger_ms (1 s) for the absent peer
    assert time.monotonic() - t0 < 5.0


def test_close_is_idempotent_and_send_after_close_raises():
    client = HeartbeatClient("tcp://127.0.0.1:1")
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.send("n1", **HB)


def test_curve_is_reserved():
    with pytest.raises(ValueError, match="curve"):
        HeartbeatClient("tcp://127.0.0.1:1", curve={"server_key": b"x"})


def test_tiny_max_frame_is_refused():
    with pytest.raises(ValueError, match="max_frame_bytes=100"):
        HeartbeatClient("tcp://127.0.0.1:1", max_frame_bytes=100)


def test_array_dtype_is_checked():
    with HeartbeatClient("tcp://127.0.0.1:1") as client:
        with pytest.raises(TypeError, match="RECORD_DTYPE"):
            client.send_batch(np.zeros(3, np.float64))


def test_sending_a_record_array_does_not_load_numba():
    """A sender validates a record array with the wire package's Python
    checks (the same rule table as the engine's compiled check), so even a
    large batch never loads numba into the sending process."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from clients import HeartbeatClient\n"
        "from shm_engine.wire.format import RECORD_DTYPE\n"
        "recs = np.zeros(50, RECORD_DTYPE)\n"
        "recs['cpu'], recs['mem'] = 0.5, 0.25\n"
        "recs['node'] = [f'n{i}'.encode() for i in range(50)]\n"
        "bad = recs.copy()\n"
        "bad['cpu'][7] = 2.0\n"
        "client = HeartbeatClient('tcp://127.0.0.1:9', linger_ms=0)\n"
        "client.send_batch(recs)\n"
        "try:\n"
        "    client.send_batch(bad)\n"
        "except ValueError as err:\n"
        "    print(err)\n"
        "client.close()\n"
        "print(','.join(m for m in ('numba', 'llvmlite') if m in sys.modules) or 'light')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    rejected, loaded = out.stdout.strip().splitlines()
    assert rejected == "bad_field: node 'n7': cpu=2.0 out of [0, 1]"
    assert loaded == "light"
