"""GET /v1/events/stream on a real server: live events, resuming with
Last-Event-ID, the node filter, the stream limit, and a slow client.

The app runs on uvicorn in a thread (`support.http.serve`) over a test
segment whose event log the test appends to with self-describing events
(`support.events.put`); the stream is read over a plain socket
(`support.http.SseReader`), so the test decides when the client reads.
A client that stops reading must lose the oldest events, counted in
``lost``, while the writer goes on appending: the writer never waits.
"""

from __future__ import annotations

import pytest

from shm_engine.core.events import Event, EventSegment
from shm_engine.core.segment import Segment
from shm_engine.http.api import Settings, build_app
from shm_engine.http.view import EngineView
from support.events import check, put
from support.http import SseReader, serve


def _settings(max_streams: int = 4) -> Settings:
    return Settings(
        token=None,
        loopback=True,
        max_body_bytes=1 << 20,
        max_frame_bytes=1 << 20,
        max_message_bytes=2 << 20,
        max_heartbeats=8192,
        stream_interval_s=0.02,
        max_streams=max_streams,
        tick_interval_s=0.05,
    )


@pytest.fixture
def log(shm_name):
    """An engine's scores segment (nothing published) and a 1024-event log."""
    seg = Segment.create(shm_name, 8)
    events = EventSegment.create(shm_name, 1024)
    view = EngineView(shm_name)
    yield view, events.views
    view.close()
    events.close()
    seg.close()


def _events(reader: SseReader) -> dict:
    """The next `events` message's data (cursor-only messages skipped)."""
    while True:
        msg = reader.next_event()
        if msg["event"] == "events":
            assert msg["id"] == str(msg["data"]["next_seq"])
            return msg["data"]


def _seqs(data: dict) -> list[int]:
    return [e["seq"] for e in data["events"]]


def test_stream_follows_resumes_and_filters(log):
    view, ring = log
    app, _api = build_app(view, _settings(max_streams=2))
    with serve(app) as addr:
        put(ring, 3)
        with SseReader(addr, "/v1/events/stream") as s:  # from the newest on
            assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
            first = s.next_event()
            assert (first["retry"], first["id"]) == ("1000", "3")
            put(ring, 10)
            got = _events(s)
            assert _seqs(got) == list(range(4, 14)) and got["lost"] == 0
            for e in got["events"]:
                check(Event(**e))
        put(ring, 5)  # 14..18 while nobody listens
        # A reconnecting client's Last-Event-ID wins over the URL's after.
        with SseReader(addr, "/v1/events/stream?after=0", headers={"Last-Event-ID": "13"}) as s:
            assert s.next_event()["id"] == "13"
            got = _events(s)
            assert _seqs(got) == [14, 15, 16, 17, 18] and got["next_seq"] == 18
        with SseReader(addr, "/v1/events/stream?after=0&node=n16") as s:
            got = _events(s)
            assert _seqs(got) == [16] and got["next_seq"] == 18
            put(ring, 3)  # 19..21: none of n16's
            put(ring, 1, node="n16")  # 22
            got = _events(s)
            assert _seqs(got) == [22] and got["next_seq"] == 22
            # The stream limit (http.max_streams = 2) counts open streams.
            with SseReader(addr, "/v1/events/stream") as s2:
                assert s2.next_event()["id"] == "22"
                with SseReader(addr, "/v1/events/stream") as s3:
                    assert s3.status == 503
        for bad in ("x", "-1"):
            with SseReader(addr, "/v1/events/stream", headers={"Last-Event-ID": bad}) as s:
                assert s.status == 400


def test_a_slow_client_loses_the_oldest_counted_and_the_writer_never_waits(shm_name, log):
    view, ring = log
    app, _api = build_app(view, _settings())
    # Small socket buffers on both sides: what the server can hold for a
    # client that does not read is a few hundred events, not the ring.
    with (
        serve(app, sndbuf=8192) as addr,
        SseReader(addr, "/v1/events/stream?after=0", rcvbuf=4096) as s,
    ):
        assert s.next_event()["id"] == "0"
        # A client that keeps up loses nothing.
        seen, lost, cursor = 0, 0, 0
        for _ in range(3):
            head = put(ring, 100)
            while cursor < head:
                got = _events(s)
                assert got["lost"] == 0 and _seqs(got) == list(
                    range(cursor + 1, got["next_seq"] + 1)
                )
                seen += len(got["events"])
                cursor = got["next_seq"]
        assert seen == 300
        # The client stops reading; the writer appends 20 rings' worth, each
        # append returning at once: it never looks at readers.
        for _ in range(200):
            head = put(ring, 100)
        assert head == 20_300
        # The client reads again: what was overwritten is counted, the rest
        # comes in order, whole.
        batches = 0
        while cursor < head:
            got = _events(s)
            seqs = _seqs(got)
            assert seqs == list(range(cursor + got["lost"] + 1, got["next_seq"] + 1))
            for e in got["events"]:
                check(Event(**e))
            seen += len(seqs)
            lost += got["lost"]
            cursor = got["next_seq"]
            batches += 1
        assert seen + lost == head == cursor
        # Kept: the ring (1024) and what the sockets and the server held
        # (1,000-1,500 events here); the rest of the 20,000 is lost.
        assert lost >= 15_000 and batches >= 2
