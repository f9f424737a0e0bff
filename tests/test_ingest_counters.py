"""Readers of the ingest's counters see every frame ``frames`` claims.

The race (issue 12's revocation test failed about 1 run in 5): a test waits
until the ingest's ``frames`` counts every frame it sent, then compares the
rejects; ``status`` loaded the rejects *before* ``frames``, so a frame
finished between the two loads was in ``frames`` but not in the rejects,
and a key revocation looked as if frames after the reload went through.

Here the race is driven directly: the reader's header is wrapped so that
the ingest (a real `Ingest` on the same segment, in this process) finishes
one frame just before the reader's N-th header access, for every N the
reader makes.  Each frame is one heartbeat refused ``not_authorized`` (its
sender's key is not authorized: bound to no node), so whatever ``frames``
a reader returns, the rejects, heartbeats and per-sender refusals it
returns must count at least as many.
"""

from __future__ import annotations

import pytest

from shm_engine.core.config import Config
from shm_engine.core.segment import Segment
from shm_engine.ingest.admission import Admission
from shm_engine.ingest.counters import read_ingest_counters
from shm_engine.ingest.process import Ingest
from shm_engine.ops import status as status_mod

REVOKED_KEY = "k" * 40  # a Z85 public key no key file holds


class _RacingHeader:
    """``header`` whose ``at``-th attribute access (0-based) is preceded
    by ``frame_done()``; ``accesses`` counts them (``at = -1``: never)."""

    def __init__(self, header, at: int, frame_done):
        self._header, self._at, self._frame_done = header, at, frame_done
        self.accesses = 0
        self.fired = False

    def __getattr__(self, name):
        if self.accesses == self._at:
            self._frame_done()
            self.fired = True
        self.accesses += 1
        return getattr(self._header, name)


class _Views:
    def __init__(self, views, header):
        self._views, self.header = views, header

    def __getattr__(self, name):
        return getattr(self._views, name)


class _Attached:
    """A read-only attachment of the segment whose header is ``wrap(header)``."""

    def __init__(self, name: str, wrap):
        self._seg = Segment.attach(name, readonly=True)
        self.views = _Views(self._seg.views, wrap(self._seg.views.header))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._seg.close()


@pytest.fixture
def engine(shm_name):
    """(segment, ingest, send): ``send()`` has the ingest handle one frame
    from a sender whose key is not authorized."""
    with Segment.create(shm_name, 8) as seg:
        config = Config()
        ingest = Ingest(seg.views, config, Admission(config.ingest, keys={}))
        sender = ingest.admission.sender_of_key(REVOKED_KEY)
        assert sender.refused

        def send() -> None:
            assert ingest.handle_frame(b"\x00" * 64, 0.0, sender) == 0

        yield seg, ingest, send


def _check(c: dict, refused_by_sender: dict | None = None) -> None:
    """Counters of frames that each refused one heartbeat: every count at
    least ``frames``, and no heartbeat left out."""
    frames = c["frames"]
    assert c["rejected"]["not_authorized"] >= frames
    assert c["heartbeats"] >= frames
    assert c["accepted"] + sum(c["rejected"].values()) >= c["heartbeats"]
    if refused_by_sender is not None:
        refused = sum(row["not_authorized"] for row in refused_by_sender.values())
        assert refused >= frames


def _every_interleaving(read, send) -> int:
    """Run ``read(wrap)`` once without the frame, then with it finished
    before each of the reader's header accesses in turn; ``read`` checks
    each result.  Returns how many accesses the reader makes."""
    made: list[_RacingHeader] = []

    def wrapper(at: int):
        def wrap(header):
            made.append(_RacingHeader(header, at, send))
            return made[-1]

        return wrap

    read(wrapper(-1))
    accesses = made[-1].accesses
    assert accesses > 0
    for at in range(accesses):
        read(wrapper(at))
        assert made[-1].fired, f"the reader made fewer than {at + 1} accesses"
    return accesses


def test_read_ingest_counters_sees_every_frame_it_counts(engine):
    seg, _ingest, send = engine
    send()

    def read(wrap):
        _check(read_ingest_counters(wrap(seg.views.header)))

    accesses = _every_interleaving(read, send)
    assert read_ingest_counters(seg.views.header)["frames"] == 1 + accesses


def test_status_sees_every_frame_it_counts(engine, shm_name, monkeypatch):
    """`read_status` (what ``status --json`` prints, and what the
    revocation test waits on) under every interleaving."""
    seg, _ingest, send = engine
    send()

    class _Segment:
        @staticmethod
        def attach(name, readonly=True, owner=None):
            assert name == shm_name and readonly
            return _Attached(name, _wrap[0])

    _wrap = [None]
    monkeypatch.setattr(status_mod, "Segment", _Segment)

    def read(wrap):
        _wrap[0] = wrap
        st = status_mod.read_status(shm_name)
        _check(st["ingest"], st["security"]["refused_by_sender"])

    accesses = _every_interleaving(read, send)
    _wrap[0] = lambda header: header
    st = status_mod.read_status(shm_name)["ingest"]
    assert st["frames"] == st["rejected"]["not_authorized"] == 1 + accesses
