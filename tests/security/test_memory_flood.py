"""Memory flood: huge frames to make the ingest's receive queue grow.

The attack (issue 12): 40 frames of 63 MiB on one connection took the
ingest from 189 MiB to 2.2 GiB in 2.1 s (``rcvhwm`` counted frames, and
ZeroMQ admitted frames up to 64 x ``max_frame_bytes``).

Now ZMQ_MAXMSGSIZE is 2 x ``max_frame_bytes`` and the queue is bounded in
bytes (``max_queue_bytes``: ZMQ_RCVHWM = max_queue_bytes // 2 MiB here).
Against a real engine (default ``max_frame_bytes`` 1 MiB, ``max_queue_bytes``
16 MiB):

1. 40 x 63 MiB frames: ZeroMQ drops the connection at each frame's size
   header, before storing anything; not one is counted.
2. 40 x 2 MiB frames, the largest the socket admits, sent as fast as the
   socket takes them while a second connection keeps the ingest busy with
   JSON arrays of 8,000 valid heartbeats: the frames queue up to the limit,
   then the sender waits; each is counted ``frame_too_large``.

The ingest's RSS, sampled every few milliseconds, never exceeds its value
after a warm-up by more than the documented bound: ``max_queue_bytes`` per
connection, plus the chunk the loop holds (4 frames of the largest size)
and one message in flight per connection (docs/security.md).  The honest
scores stay exact.
"""

from __future__ import annotations

import json
import threading

import psutil
import zmq

from clients.reader import ScoreReader
from support.attack import honest_frame, honest_problems, push
from support.engine import START_TIMEOUT_S, Engine, free_port, segment_exists, write_config
from support.wait import wait_until

MIB = 1 << 20
MAX_FRAME = MIB  # [ingest] max_frame_bytes (the default)
MAX_MESSAGE = 2 * MAX_FRAME  # ZMQ_MAXMSGSIZE
QUEUE_BYTES = 16 * MIB  # [ingest] max_queue_bytes
HUGE = 63 * MIB
FRAMES = 40
BUSY = [
    json.dumps(
        [
            dict(node=f"busy-{i}", cpu=0.1, mem=0.1, queue=float(k), avg_job_s=1.0)
            for i in range(8000)
        ],
        separators=(",", ":"),
    ).encode()
    for k in range(2)
]
CONNECTIONS = 3  # honest, big frames, busy
LOOP_CHUNK = 4  # the most the loop holds: 4 frames of the largest size
SLACK = 16 * MIB  # allocator and interpreter noise
BOUND = CONNECTIONS * (QUEUE_BYTES + MAX_MESSAGE) + LOOP_CHUNK * MAX_MESSAGE + SLACK


class PeakRss:
    """The highest RSS of process ``pid``, sampled every ``period`` s in a
    thread until `stop`."""

    def __init__(self, pid: int, period: float = 0.002):
        self.peak = 0
        self._proc = psutil.Process(pid)
        self._done = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._period):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def stop(self) -> int:
        self._done.set()
        self._thread.join(5)
        return max(self.peak, self._proc.memory_info().rss)


def test_huge_frames_keep_ingest_memory_within_the_budget(shm_name, tmp_path, reap):
    extra = f"max_queue_bytes = {QUEUE_BYTES}\nregistration_burst_per_sender = 0\n"
    port = free_port()
    eng = Engine(
        shm_name,
        write_config(
            tmp_path / "e.toml", port, capacity=16384, max_frame_bytes=MAX_FRAME, extra=extra
        ),
        tmp_path,
        reap,
    )
    st0 = eng.wait_ready()
    assert st0["security"]["queue_frames"] == QUEUE_BYTES // MAX_MESSAGE
    assert st0["security"]["max_message_bytes"] == MAX_MESSAGE
    ingest_pid = st0["children"]["ingest"]["pid"]
    ctx = zmq.Context()
    honest = push(ctx, port)
    busy = push(ctx, port)
    huge = push(ctx, port)
    huge.setsockopt(zmq.RECONNECT_IVL, 10)
    big = push(ctx, port, sndhwm=1)
    monitor = huge.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    reader = ScoreReader.attach(shm_name)
    problems: list[str] = []
    sampler = None

    def beat() -> None:
        honest.send(honest_frame())
        problems.extend(honest_problems(reader))

    def status_when(pred):
        def check():
            beat()
            st = eng.status()
            return st if pred(st["ingest"]) else None

        return check

    try:
        wait_until(
            lambda: honest.send(honest_frame()) or not honest_problems(reader),
            START_TIMEOUT_S,
            "the honest nodes scored",
            period=0.05,
        )
        for k in range(6):  # warm-up: the busy frames' decoding at its full size
            busy.send(BUSY[k % 2])
        warm = wait_until(
            status_when(lambda i: i["accepted"] >= 6 * 8000), 60, "the warm-up decoded", period=0.05
        )
        rss0 = psutil.Process(ingest_pid).memory_info().rss
        sampler = PeakRss(ingest_pid)

        # 1. 40 x 63 MiB: each drops its connection at the size header.
        payload = bytes(HUGE)
        for _ in range(FRAMES):
            huge.send(payload, copy=False)
        drops = 0

        def dropped_all() -> bool:
            nonlocal drops
            beat()
            while monitor.poll(0):
                monitor.recv_multipart()
                drops += 1
            return drops >= FRAMES

        wait_until(dropped_all, 120, "every huge frame's connection dropped", period=0.02)
        after_huge = eng.status()["ingest"]

        # 2. The largest frames the socket admits, while the ingest is busy.
        largest = b"[" + b" " * (MAX_MESSAGE - 2) + b"]"
        for k in range(FRAMES):
            big.send(largest, copy=False)  # waits while the queue is full
            busy.send(BUSY[k % 2])
            if k % 4 == 0:
                beat()
        final = wait_until(
            status_when(
                lambda i: (
                    i["rejected"]["frame_too_large"] >= FRAMES
                    and i["accepted"] >= warm["ingest"]["accepted"] + FRAMES * 8000
                )
            ),
            120,
            "every frame counted",
            period=0.05,
        )
        peak = sampler.stop()
        sampler = None
        problems.extend(honest_problems(reader))
    finally:
        if sampler is not None:
            sampler.stop()
        reader.close()
        monitor.close(0)
        for sock in (honest, busy, huge, big):
            sock.close(0)
        ctx.term()

    growth = peak - rss0
    print(
        f"\nmemory flood: ingest RSS {rss0 / MIB:.1f} MiB after warm-up, peak "
        f"{peak / MIB:.1f} MiB (+{growth / MIB:.1f} MiB, bound {BOUND / MIB:.0f} MiB); "
        f"{drops} connections dropped for 63 MiB frames"
    )
    assert problems == []
    # Not one huge frame got in (the honest frames meanwhile are small).
    assert after_huge["rejected"]["frame_too_large"] == 0
    assert after_huge["bytes"] - warm["ingest"]["bytes"] < MIB
    assert final["ingest"]["rejected"]["frame_too_large"] == FRAMES
    assert growth <= BOUND, f"ingest RSS grew {growth / MIB:.1f} MiB > {BOUND / MIB:.0f} MiB"
    assert final["children"]["ingest"] == {"pid": ingest_pid, "restarts": 0}
    assert eng.stop() == 0
    assert not segment_exists(shm_name)
