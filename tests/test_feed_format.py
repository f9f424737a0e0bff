"""Score and feedback frames: what the decoders accept, byte for byte, and what they refuse.

The decoders face the network: every refusal is a status string (the
caller counts it), never an exception, and nothing is unpickled.
"""

import struct

import numpy as np
import pytest

from shm_engine.core.layout import REFUSAL_REASONS
from shm_engine.feed import format as ff


def _frame() -> bytes:
    """A frame of two rows and one identity (slots 0)."""
    return ff.encode_score_frame(
        **_kw(), rows=np.zeros(2, ff.ROW_DTYPE), idents=np.zeros(1, ff.IDENT_DTYPE)
    )


def test_a_score_frame_round_trips_with_the_documented_sizes():
    rows = np.zeros(2, ff.ROW_DTYPE)
    rows["slot"] = [3, 5]
    rows["score"] = [0.5, 0.25]
    rows["gen"] = [2, 4]
    idents = np.zeros(1, ff.IDENT_DTYPE)
    idents[0] = (3, 1, 2, b"node-3", b"eu")
    data = ff.encode_score_frame(**_kw(), rows=rows, idents=idents)
    # 296-byte header, 72 bytes a row, 112 an identity.
    assert len(data) == 296 + 2 * 72 + 1 * 112
    fr = ff.decode_score_frame(data)
    assert not isinstance(fr, str)
    assert (fr.stream, fr.seq, fr.epoch, fr.engine, fr.feedback_port) == (7, 3, 11, "eu-1", 7712)
    assert fr.engine_run == 42
    assert fr.rows["slot"].tolist() == [3, 5] and fr.rows["score"].tolist() == [0.5, 0.25]
    assert fr.idents[0]["node"] == b"node-3" and fr.idents[0]["zone"] == b"eu"
    assert fr.weights[:7] == (0.1,) * 7 and fr.counts[:5] == (2, 0, 0, 0, 0)


def _kw():
    return dict(
        kind=ff.KIND_FULL,
        stream=7,
        seq=3,
        epoch=11,
        tick_wall=1.5,
        sent_wall=1.75,
        pressure=0.25,
        capacity=16,
        slot_hwm=8,
        n_ranked=2,
        live=2,
        registered=2,
        ejected=0,
        tick_interval_ms=50,
        feedback_port=7712,
        weights=[0.1] * 7,
        counts=[2, 0, 0, 0, 0],
        engine="eu-1",
        engine_run=42,
    )


def _patch(data: bytes, fmt: str, offset: int, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize(
    "mangle, why",
    [
        (lambda d: d[:100], "short"),
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: _patch(d, "<H", 4, 9), "version"),
        (lambda d: _patch(d, "<H", 6, 3), "kind"),
        (lambda d: d[:-1], "length"),
        (lambda d: d + b"\0", "length"),
        (lambda d: _patch(d, "<I", 56, 0), "capacity"),  # capacity 0
        (lambda d: _patch(d, "<I", 60, 99), "capacity"),  # slot_hwm > capacity
        (lambda d: _patch(d, "<I", 296, 8), "slot"),  # first row's slot = slot_hwm
        (lambda d: _patch(d, "<d", 48, float("nan")), "value"),  # pressure
        (lambda d: _patch(d, "<I", 80, 9), "count"),  # 9 rows > slot_hwm 8
        (lambda d: _patch(d, "<I", 84, 0xFFFF_FFFF), "count"),  # identities
        (lambda d: _patch(d, "<B", 300, 5), "value"),  # first row's state: no such state
    ],
)
def test_a_malformed_score_frame_is_refused_with_a_reason(mangle, why):
    assert ff.decode_score_frame(mangle(_frame())) == why
    assert why in REFUSAL_REASONS  # a counter of the mirror segment's


def test_unregistered_rows_are_valid_and_the_bounds_hold_the_largest_frames():
    rows = np.zeros(8, ff.ROW_DTYPE)
    rows["slot"] = np.arange(8)
    rows["state"] = 255  # no node: full frames list every slot below slot_hwm
    idents = np.zeros(8, ff.IDENT_DTYPE)
    idents["slot"] = np.arange(8)
    data = ff.encode_score_frame(**_kw(), rows=rows, idents=idents)
    assert not isinstance(ff.decode_score_frame(data), str)
    # 296 + 8 x (72 + 112): a row and an identity for each of 8 slots.
    assert len(data) == ff.score_frame_bound(8) == 296 + 8 * 184
    inf = np.zeros(16, ff.IN_FLIGHT_DTYPE)
    out = np.zeros(16, ff.OUTCOME_DTYPE)
    fb = ff.encode_feedback(flags=1, mirror=1, stream=7, seq=1, in_flight=inf, outcomes=out)
    assert len(fb) == ff.feedback_frame_bound(16) == 40 + 16 * 48
    assert ff.decode_feedback(fb, capacity=15) == "count"  # 16 records > 15 slots


def test_feedback_frames_round_trip_and_refuse_slots_beyond_the_engine():
    inf = np.zeros(1, ff.IN_FLIGHT_DTYPE)
    inf[0] = (5, 0, 2, 3)
    out = np.zeros(1, ff.OUTCOME_DTYPE)
    out[0] = (5, 0, 2, 1, 4)
    data = ff.encode_feedback(flags=1, mirror=9, stream=7, seq=2, in_flight=inf, outcomes=out)
    fr = ff.decode_feedback(data, capacity=16)
    assert not isinstance(fr, str)
    assert (fr.flags, fr.mirror, fr.stream, fr.seq) == (1, 9, 7, 2)
    assert fr.in_flight["count"].tolist() == [3] and fr.outcomes["err"].tolist() == [4]
    assert ff.decode_feedback(data, capacity=5) == "slot"
    assert ff.decode_feedback(data[:-1], capacity=16) == "length"
    assert ff.decode_feedback(b"SHMF" + data[4:], capacity=16) == "magic"
    inf[0]["count"] = 1 << 32
    big = ff.encode_feedback(flags=0, mirror=9, stream=7, seq=3, in_flight=inf, outcomes=out)
    assert ff.decode_feedback(big, capacity=16) == "count"


def test_rows_packed_by_columns_are_the_documented_records():
    rng = np.random.default_rng(2)
    k = 37
    slots = rng.integers(0, 2**32, k, dtype=np.uint64).astype(np.int64)
    states = rng.integers(0, 256, k).astype(np.uint8)
    gens = rng.integers(0, 2**63, k, dtype=np.uint64)
    floats = rng.normal(size=(7, k))
    rows = ff.pack_rows(slots, states, gens, floats)
    assert rows.dtype == ff.ROW_DTYPE and rows.shape == (k,)
    assert rows["slot"].tolist() == slots.tolist() and rows["state"].tolist() == states.tolist()
    assert rows["gen"].tolist() == gens.tolist()
    for i, col in enumerate(ff.ROW_FLOATS):
        assert rows[col].tolist() == floats[i].tolist()
    back = ff.unpack_rows(rows)
    assert back[0].tolist() == slots.tolist() and back[1].tolist() == states.tolist()
    assert back[2].tolist() == gens.tolist() and np.array_equal(back[3], floats)
    empty = ff.pack_rows(slots[:0], states[:0], gens[:0], floats[:, :0])
    assert empty.shape == (0,) and ff.unpack_rows(empty)[3].shape == (7, 0)
