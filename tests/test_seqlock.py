"""shm_engine.core.seqlock: the retry predicate as a table, the protocol under every
interleaving hypothesis finds, a writer that dies mid-write, and multi-process
stress with self-describing records (plus proof the checker can fail).

The stress needs a writer that publishes at memory speed, so this file holds a
jitted twin of the protocol over `shm_engine.core.ordering`'s atomics
(``jit_*``; production runs the Python functions only).  The tables run both,
so the twin cannot drift from the module it stands in for.

Test segment (this file's own layout, in 8-byte words)::

    word 0     seq                       buffers start at word 16:
    word 8     stop flag (parent -> child)   record b = words[16 + b*R : 16 + (b+1)*R]
    word 9     "mid-write" flag (child -> parent)
    record (R = 2 + DATA_WORDS int64s): [epoch, checksum, data[0..DATA_WORDS-1]]
    data[j] = epoch * 1_000_003 + j     checksum = sum(data)
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from shm_engine.core.ordering import (
    fence_acquire,
    fence_release,
    load_acquire_u64,
    load_relaxed_u64,
    store_relaxed_u64,
    store_release_u64,
)
from shm_engine.core.seqlock import (
    READ_NOTHING_PUBLISHED,
    READ_OK,
    READ_RETRIES_EXHAUSTED,
    check_sequence_word,
    read_begin,
    read_consistent,
    read_retry,
    still_newest,
    write_begin,
    write_end,
)
from support import shm
from support.wait import wait_until

SEQ_WORD = 0
STOP_WORD = 8
MID_WRITE_WORD = 9
BUFFERS_WORD = 16
DATA_WORDS = 510
RECORD_WORDS = 2 + DATA_WORDS  # 4 KiB per buffer
SEGMENT_BYTES = 8 * (BUFFERS_WORD + 2 * RECORD_WORDS)
EPOCH_STRIDE = 1_000_003
MAX_RETRIES = 16


def _views(words):
    """(seq words, buffers[2, RECORD_WORDS] as int64) of a test segment."""
    records = words[BUFFERS_WORD : BUFFERS_WORD + 2 * RECORD_WORDS]
    return words, records.view(np.int64).reshape(2, RECORD_WORDS)


# --------------------------------------------------------------------------
# The jitted twin: the same steps as the module's, each ordered access an
# atomic of shm_engine.core.ordering (correct on any CPU).


@njit(cache=True)
def jit_write_begin(seq, seq_index=0):
    s = np.int64(load_relaxed_u64(seq, seq_index))  # only this writer stores seq
    if (s & 1) == 0:
        s += 1
        store_relaxed_u64(seq, seq_index, s)
    # The odd value is visible before any buffer store. Pairs with
    # fence_acquire() in jit_read_retry.
    fence_release()
    return (s >> 1) + 1


@njit(cache=True)
def jit_write_end(seq, seq_index=0):
    s = np.int64(load_relaxed_u64(seq, seq_index))
    if (s & 1) == 0:
        return np.int64(0)
    # Every buffer store stays before the even value. Pairs with
    # load_acquire_u64() in jit_read_begin.
    store_release_u64(seq, seq_index, s + 1)
    return (s + 1) >> 1


@njit(cache=True)
def jit_read_begin(seq, seq_index=0):
    # The copy's loads stay after this one. Pairs with store_release_u64() in
    # jit_write_end.
    return np.int64(load_acquire_u64(seq, seq_index)) >> 1


@njit(cache=True)
def jit_read_retry(seq, epoch, seq_index=0):
    # The copy's loads stay before the re-read of seq. Pairs with
    # fence_release() in jit_write_begin.
    fence_acquire()
    return epoch == 0 or np.int64(load_relaxed_u64(seq, seq_index)) >= (epoch << 1) + 3


@njit(cache=True)
def jit_read_consistent(seq, buffers, out, max_retries, seq_index=0):
    """``read_consistent`` copying ``buffers[b]`` into ``out``; returns
    ``(status, epoch, attempts)`` (``attempts - 1`` retries)."""
    epoch = np.int64(0)
    attempts = np.int64(0)
    while attempts <= max_retries:
        attempts += 1
        epoch = jit_read_begin(seq, seq_index)
        if epoch == 0:
            return READ_NOTHING_PUBLISHED, np.int64(0), attempts
        out[...] = buffers[epoch & 1]
        if not jit_read_retry(seq, epoch, seq_index):
            return READ_OK, epoch, attempts
    return READ_RETRIES_EXHAUSTED, epoch, attempts


@njit(cache=True)
def fill_record(rec, epoch):
    """Write the record of ``epoch`` (epoch field first, checksum last)."""
    rec[0] = epoch
    total = 0
    for j in range(rec.shape[0] - 2):
        v = epoch * EPOCH_STRIDE + j
        rec[2 + j] = v
        total += v
    rec[1] = total


@njit(cache=True)
def record_errors(snap, epoch):
    """Number of fields of ``snap`` that differ from the record of ``epoch``.

    ``record_errors(snap, snap[0])`` is nonzero iff the snapshot is torn (its
    fields come from more than one write).
    """
    bad = 0
    if snap[0] != epoch:
        bad += 1
    total = 0
    for j in range(snap.shape[0] - 2):
        v = epoch * EPOCH_STRIDE + j
        total += v
        if snap[2 + j] != v:
            bad += 1
    if snap[1] != total:
        bad += 1
    return bad


# --------------------------------------------------------------------------
# The predicate and the writer's steps, as tables.

# A copy begun at seq s1 is of epoch E = s1 >> 1; read_retry(E) at seq s2 is
# True iff E == 0 or s2 >= 2E + 3, i.e. nothing was published or the writer has
# begun the epoch after the next one, which reuses the buffer of E.
RETRY_CASES = [
    # s1, s2, retry      why
    (0, 0, True),  # epoch 0: nothing published, the copy is never used
    (1, 1, True),  # epoch 1 being written, still nothing published
    (4, 4, False),  # epoch 2 (buffer 0), nothing moved
    (4, 5, False),  # writer filling epoch 3 = buffer 1, not ours
    (4, 6, False),  # epoch 3 published; buffer 0 untouched
    (4, 7, True),  # 7 >= 4 + 3: writer filling epoch 4 = buffer 0
    (4, 100, True),  # lapped many times
    (5, 5, False),  # s1 odd: reading epoch 2 (buffer 0) while 3 is written
    (5, 6, False),  # epoch 3 published
    (5, 7, True),  # 7 >= (5 >> 1 << 1) + 3 = 7: epoch 4 reuses buffer 0
    (2, 4, False),  # epoch 1 (buffer 1); epoch 2 went to buffer 0
    (2, 5, True),  # 5 >= 2 + 3: epoch 3 reuses buffer 1
]


@pytest.mark.parametrize("s1, s2, retry", RETRY_CASES)
def test_read_retry_table(s1, s2, retry):
    seq = np.array([s1], np.uint64)
    epoch = read_begin(memoryview(seq))
    assert epoch == jit_read_begin(seq) == s1 >> 1
    seq[0] = s2
    assert read_retry(memoryview(seq), epoch) is retry
    assert jit_read_retry(seq, epoch) == retry


def test_read_begin_gives_a_python_int():
    """The reader's hot paths do int arithmetic on it (a numpy scalar would
    be slower and leak into Snapshot.epoch)."""
    seq = np.array([2**63 + 6], np.uint64)
    epoch = read_begin(memoryview(seq))
    assert type(epoch) is int and epoch == 2**62 + 3


# still_newest(E) at seq s is True iff E >= 1 and s >> 1 == E: no newer epoch
# is published, so the writer has touched only the other buffer since.
NEWEST_CASES = [
    # epoch, seq, newest   why
    (0, 0, False),  # nothing published: never use a copy
    (0, 1, False),  # epoch 1 being written, still nothing published
    (2, 4, True),  # epoch 2 (buffer 0), nothing moved
    (2, 5, True),  # writer filling epoch 3 = buffer 1, not ours
    (2, 6, False),  # epoch 3 published: ours is consistent but old
    (2, 7, False),  # writer filling epoch 4 = buffer 0: ours may be torn
]


@pytest.mark.parametrize("epoch, s, newest", NEWEST_CASES)
def test_still_newest_table(epoch, s, newest):
    seq = np.array([s], np.uint64)
    assert still_newest(memoryview(seq), epoch) is newest
    if newest:  # stricter than read_retry: a copy it accepts, read_retry accepts
        assert read_retry(memoryview(seq), epoch) is False


WRITE_BEGIN_CASES = [
    # seq before, epoch written, buffer, seq after
    (0, 1, 1, 1),  # first epoch: 0 -> 1, writes buffer 1
    (2, 2, 0, 3),  # epoch 1 published: write epoch 2 into buffer 0
    (9, 5, 1, 9),  # odd: a writer died writing epoch 5; rewrite it, seq stays
]


@pytest.mark.parametrize("impl", ["python", "jit"])
@pytest.mark.parametrize("before, epoch, buffer, after", WRITE_BEGIN_CASES)
def test_write_begin_table(impl, before, epoch, buffer, after):
    begin = write_begin if impl == "python" else jit_write_begin
    seq = np.array([before], np.uint64)
    e = begin(seq)
    assert (e, e & 1, seq.item(0)) == (epoch, buffer, after)


@pytest.mark.parametrize("impl", ["python", "jit"])
def test_write_end_publishes_and_ignores_a_write_not_begun(impl):
    end = write_end if impl == "python" else jit_write_end
    seq = np.array([9], np.uint64)
    assert (end(seq), seq.item(0)) == (5, 10)  # 9 -> 10: epoch 5 published
    assert (end(seq), seq.item(0)) == (0, 10)  # no write in progress: untouched


@pytest.mark.parametrize("impl", ["python", "jit"])
def test_sequence_word_at_an_index(impl):
    """A sequence word in the middle of a header works like a 1-element one."""
    begin, end = (write_begin, write_end) if impl == "python" else (jit_write_begin, jit_write_end)
    words = np.zeros(4, np.uint64)
    assert begin(words, 2) == 1 and end(words, 2) == 1
    assert words.tolist() == [0, 0, 2, 0]
    assert read_begin(memoryview(words), 2) == jit_read_begin(words, 2) == 1


def test_nothing_published_is_a_status_not_an_error():
    seq = np.zeros(1, np.uint64)
    buffers = np.zeros((2, 4), np.int64)
    out = np.zeros(4, np.int64)
    assert read_consistent(memoryview(seq), lambda b: buffers[b].copy()) == (
        READ_NOTHING_PUBLISHED,
        0,
        None,
    )
    assert jit_read_consistent(seq, buffers, out, MAX_RETRIES) == (READ_NOTHING_PUBLISHED, 0, 1)


def test_a_writer_that_always_laps_exhausts_the_retries():
    seq = np.array([4], np.uint64)
    buffers = np.zeros((2, 4), np.int64)

    def copy_while_lapped(b):
        seq[0] += 4  # two epochs published during every copy
        return buffers[b].copy()

    # Attempts start at seq 4, 8, 12 (epochs 2, 4, 6); each sees seq + 4 >= seq + 3.
    assert read_consistent(memoryview(seq), copy_while_lapped, max_retries=2) == (
        READ_RETRIES_EXHAUSTED,
        6,
        None,
    )
    assert seq.item(0) == 4 + 3 * 4  # three attempts: the first plus two retries


@pytest.mark.parametrize(
    "arr, index, error, match",
    [
        (np.zeros(2, np.int64), 0, TypeError, "1-D uint64"),
        (np.zeros((2, 2), np.uint64), 0, TypeError, "ndim=2"),
        (np.zeros(2, np.uint64), 2, ValueError, "seq_index=2 out of range"),
        (np.zeros(2, np.uint32), 0, TypeError, "dtype=uint32"),
        (np.zeros(2, np.uint64), 1, None, None),
    ],
)
def test_check_sequence_word(arr, index, error, match):
    if error is None:
        check_sequence_word(arr, index)
    else:
        with pytest.raises(error, match=match):
            check_sequence_word(arr, index)


def test_check_sequence_word_rejects_unaligned_words():
    raw = np.zeros(4 * 8, np.uint8)
    base = (-raw.ctypes.data) % 8  # first aligned byte
    unaligned = raw[base + 4 : base + 20].view(np.uint64)  # numpy allows this view
    with pytest.raises(ValueError, match="not 8-byte aligned"):
        check_sequence_word(unaligned, 0)


def test_record_errors_counts_what_differs():
    """The checker itself: each kind of corruption is counted."""
    rec = np.zeros(RECORD_WORDS, np.int64)
    fill_record(rec, 6)
    assert record_errors(rec, 6) == 0
    assert record_errors(rec, 4) == 1 + DATA_WORDS + 1  # epoch, every element, checksum
    torn = rec.copy()
    other = np.zeros(RECORD_WORDS, np.int64)
    fill_record(other, 8)
    torn[100:] = other[100:]  # a copy that overlapped a rewrite from element 98 on
    # words 100..511 are epoch 8's; epoch field and checksum are still epoch 6's
    assert record_errors(torn, torn[0]) == RECORD_WORDS - 100
    bad_sum = rec.copy()
    bad_sum[1] += 1
    assert record_errors(bad_sum, bad_sum[0]) == 1


# --------------------------------------------------------------------------
# Every interleaving: the writer runs between any two element reads.

MODEL_WORDS = 4


def _writer(seq, buffers, epochs_begun):
    """One writer, one element per step; yields between steps."""
    while True:
        e = write_begin(seq)
        epochs_begun.append(e)
        rec = buffers[e & 1]
        rec[0] = e
        yield
        for j in range(1, MODEL_WORDS):
            rec[j] = e * EPOCH_STRIDE + j
            yield
        write_end(seq)
        yield


@settings(max_examples=300, deadline=None)
@given(
    schedule=st.lists(st.integers(0, 2 * MODEL_WORDS + 4), min_size=1, max_size=200),
    crashes=st.sets(st.integers(0, 200), max_size=4),
    reads=st.integers(1, 30),
)
def test_any_interleaving_yields_only_whole_epochs_in_order(schedule, crashes, reads):
    """``schedule[k]`` writer steps run before the reader's k-th element read
    (and before each read_retry); a step in ``crashes`` kills the writer there
    and a new writer takes over.  After each read the reader also copies once
    from the epoch it kept, as the hot paths do: accepted by ``still_newest``,
    that copy is whole and of the epoch published when it was checked."""
    seq = np.zeros(1, np.uint64)
    buffers = np.zeros((2, MODEL_WORDS), np.int64)
    epochs_begun: list[int] = []
    writer = _writer(seq, buffers, epochs_begun)
    steps = iter(schedule * 50)
    step_no = 0

    def run_writer():
        nonlocal writer, step_no
        for _ in range(next(steps, 0)):
            step_no += 1
            if step_no in crashes:
                odd = seq.item(0) & 1
                dying = epochs_begun[-1] if epochs_begun else None
                writer = _writer(seq, buffers, epochs_begun)
                next(writer)  # the new writer's write_begin and first store
                if odd:
                    assert epochs_begun[-1] == dying  # same epoch, same buffer
            else:
                next(writer)

    def copy(b):
        out = []
        for j in range(MODEL_WORDS):
            run_writer()
            out.append(int(buffers[b, j]))
        run_writer()  # between the last element and read_retry
        return out

    def whole(epoch):
        return [epoch] + [epoch * EPOCH_STRIDE + j for j in range(1, MODEL_WORDS)]

    last = kept = 0
    for _ in range(reads):
        status, epoch, snap = read_consistent(memoryview(seq), copy, MAX_RETRIES)
        if status == READ_OK:
            assert snap == whole(epoch)
            assert epoch >= last
            last = kept = epoch
        else:
            assert status in (READ_NOTHING_PUBLISHED, READ_RETRIES_EXHAUSTED)
        snap = copy(kept & 1)
        if still_newest(memoryview(seq), kept):
            assert snap == whole(kept) and seq.item(0) >> 1 == kept


# --------------------------------------------------------------------------
# Processes: a jitted writer, jitted and Python readers.

# inconsistent: an accepted snapshot differs from the record of its epoch;
# torn: an accepted snapshot mixes writes; torn_rejected (Python reader only,
# the jitted loop does not expose its attempts): torn copies the latch threw away.
STAT_NAMES = (
    "ok",
    "retries",
    "nothing",
    "exhausted",
    "inconsistent",
    "torn",
    "backwards",
    "epoch_changes",
    "first_epoch",
    "last_epoch",
    "torn_rejected",
)
(
    OK,
    RETRIES,
    NOTHING,
    EXHAUSTED,
    INCONSISTENT,
    TORN,
    BACKWARDS,
    CHANGES,
    FIRST,
    LAST,
    TORN_REJECTED,
) = range(11)


@njit(cache=True)
def publish_epochs(seq, buffers, count):
    """Publish ``count`` epochs as fast as possible; returns the last one."""
    e = 0
    for _ in range(count):
        e = jit_write_begin(seq, SEQ_WORD)
        fill_record(buffers[e & 1], e)
        jit_write_end(seq, SEQ_WORD)
    return e


@njit(cache=True)
def _account(stats, status, epoch, attempts, snap):
    stats[RETRIES] += attempts - 1
    if status == READ_NOTHING_PUBLISHED:
        stats[NOTHING] += 1
        return
    if status == READ_RETRIES_EXHAUSTED:
        stats[EXHAUSTED] += 1
        return
    stats[OK] += 1
    if record_errors(snap, epoch) != 0:
        stats[INCONSISTENT] += 1
    if record_errors(snap, snap[0]) != 0:
        stats[TORN] += 1
    if stats[FIRST] == 0:
        stats[FIRST] = epoch
    if epoch < stats[LAST]:
        stats[BACKWARDS] += 1
    elif epoch > stats[LAST] and stats[LAST] != 0:
        stats[CHANGES] += 1
    stats[LAST] = epoch


@njit(cache=True)
def jit_reader(seq, buffers, stats, n_reads, max_calls):
    """Read until ``n_reads`` good reads or ``max_calls`` calls; fills ``stats``."""
    out = np.empty(buffers.shape[1], np.int64)
    calls = 0
    while stats[OK] < n_reads and calls < max_calls:
        calls += 1
        status, epoch, attempts = jit_read_consistent(seq, buffers, out, MAX_RETRIES, SEQ_WORD)
        _account(stats, status, epoch, attempts, out)


def python_reader(seq, buffers, stats, n_reads, max_calls):
    """The same through the Python path: numpy copies, read_consistent."""
    copies = []
    seq_mv = memoryview(seq)

    def copy(b):
        snap = buffers[b].copy()
        copies.append(snap)
        return snap

    for _ in range(max_calls):
        if stats[OK] >= n_reads:
            break
        copies.clear()
        status, epoch, snap = read_consistent(seq_mv, copy, MAX_RETRIES, SEQ_WORD)
        _account(
            stats, status, epoch, max(len(copies), 1), snap if snap is not None else buffers[0]
        )
        rejected = copies[:-1] if status == READ_OK else copies
        stats[TORN_REJECTED] += sum(record_errors(c, c[0]) != 0 for c in rejected)


def writer_child(name: str, chunk: int, time_budget: float, results) -> None:
    """Publish in chunks until the stop flag is set or the budget runs out."""
    mm = shm.attach_segment(name)
    words = shm.u64_words(mm)
    seq, buffers = _views(words)
    deadline = time.monotonic() + time_budget
    last = 0
    while words.item(STOP_WORD) == 0 and time.monotonic() < deadline:
        last = publish_epochs(seq, buffers, chunk)
    results.put(("writer", last))


def reader_child(name: str, kind: str, n_reads: int, results) -> None:
    mm = shm.attach_segment(name)
    seq, buffers = _views(shm.u64_words(mm))
    stats = np.zeros(len(STAT_NAMES), np.int64)
    reader = jit_reader if kind == "jit" else python_reader
    reader(seq, buffers, stats, n_reads, 4 * n_reads)
    results.put((kind, dict(zip(STAT_NAMES, stats.tolist(), strict=True))))


def _collect(results, count, timeout):
    got = []
    deadline = time.monotonic() + timeout
    for _ in range(count):
        got.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    return got


# 2 jitted readers x 300k + 2 Python readers x 200k = 1.0M verified reads.
STRESS_READERS = [("jit", 300_000), ("jit", 300_000), ("python", 200_000), ("python", 200_000)]


def test_latch_stress_readers_never_see_a_torn_or_older_snapshot(shm_name, reap):
    ctx = mp.get_context("spawn")
    mm = shm.create_segment(shm_name, SEGMENT_BYTES)
    try:
        words = shm.u64_words(mm)
        results = ctx.Queue()
        writer = ctx.Process(target=writer_child, args=(shm_name, 64, 120.0, results))
        reap(writer)
        writer.start()
        wait_until(lambda w=words: w.item(SEQ_WORD) >= 2, timeout=60, what="first epoch", period=0)
        readers_start = time.monotonic()
        readers = [
            ctx.Process(target=reader_child, args=(shm_name, kind, n, results))
            for kind, n in STRESS_READERS
        ]
        for r in readers:
            reap(r)
            r.start()
        first = _collect(results, len(readers), timeout=120)
        words[STOP_WORD] = 1
        readers_done = time.monotonic()
        reports = first + _collect(results, 1, timeout=30)
        ((_, last_epoch),) = [r for r in reports if r[0] == "writer"]
        reports = [r for r in reports if r[0] != "writer"]
        for p in (writer, *readers):
            p.join(timeout=30)
            assert p.exitcode == 0
        del words

        print(
            f"\nwriter published {last_epoch} epochs; readers took "
            f"{readers_done - readers_start:.1f}s including spawn"
        )
        for kind, stats in reports:
            print(kind, stats)
        for kind, stats in reports:
            assert stats["inconsistent"] == 0, (kind, stats)
            assert stats["torn"] == 0, (kind, stats)
            assert stats["backwards"] == 0, (kind, stats)
            assert stats["epoch_changes"] > 0, (kind, stats)  # it overlapped the writer
            assert stats["last_epoch"] <= last_epoch
        assert sum(s["ok"] for _, s in reports) >= 1_000_000
        # The race was real: the latch threw away torn copies (a Python read
        # spans microseconds, the writer publishes about one epoch per microsecond).
        assert sum(s["torn_rejected"] for _, s in reports) > 0
        assert sum(n for _, n in STRESS_READERS) == 1_000_000
    finally:
        shm.close_quietly(mm)


@njit(cache=True)
def begin_and_stall(words, seq, buffers, spin_budget):
    """Publish epochs 1..3, then die in the middle of epoch 4 (the parent
    kills us while we spin)."""
    publish_epochs(seq, buffers, 3)
    e = jit_write_begin(seq, SEQ_WORD)
    rec = buffers[e & 1]
    rec[0] = e
    rec[2:200] = -1  # half a write
    store_release_u64(words, MID_WRITE_WORD, e)
    for _ in range(spin_budget):
        if load_acquire_u64(words, STOP_WORD) != 0:
            break
    return e


def crashing_writer_child(name: str) -> None:
    mm = shm.attach_segment(name)
    words = shm.u64_words(mm)
    seq, buffers = _views(words)
    begin_and_stall(words, seq, buffers, 2**34)  # ~10 s, if never killed


@pytest.mark.parametrize("impl", ["python", "jit"])
def test_writer_dying_mid_write_leaves_the_last_epoch_readable(impl, shm_name, reap):
    ctx = mp.get_context("spawn")
    mm = shm.create_segment(shm_name, SEGMENT_BYTES)
    try:
        words = shm.u64_words(mm)
        seq, buffers = _views(words)
        child = ctx.Process(target=crashing_writer_child, args=(shm_name,))
        reap(child)
        child.start()
        wait_until(
            lambda w=words: w.item(MID_WRITE_WORD) != 0, timeout=60, what="mid-write", period=0
        )
        child.kill()
        child.join(timeout=30)
        assert words.item(SEQ_WORD) == 7  # odd: died writing epoch 4 into buffer 0

        out = np.empty(RECORD_WORDS, np.int64)
        for _ in range(1000):  # readers go on, with no retries, at epoch 3
            assert jit_read_consistent(seq, buffers, out, 0, SEQ_WORD) == (READ_OK, 3, 1)
            assert record_errors(out, 3) == 0
            status, epoch, snap = read_consistent(
                memoryview(seq), lambda b, bufs=buffers: bufs[b].copy(), 0, SEQ_WORD
            )
            assert (status, epoch, record_errors(snap, 3)) == (READ_OK, 3, 0)

        begin, end = (
            (write_begin, write_end) if impl == "python" else (jit_write_begin, jit_write_end)
        )
        assert begin(seq, SEQ_WORD) == 4  # the new writer redoes epoch 4 ...
        assert words.item(SEQ_WORD) == 7  # ... without moving seq
        fill_record(buffers[0], 4)
        assert end(seq, SEQ_WORD) == 4
        assert words.item(SEQ_WORD) == 8
        assert jit_read_consistent(seq, buffers, out, 0, SEQ_WORD) == (READ_OK, 4, 1)
        assert record_errors(out, 4) == 0
        del words, seq, buffers
    finally:
        shm.close_quietly(mm)


@njit(cache=True)
def rewrite_without_latch(buffers, first_epoch, count):
    """The bug the latch prevents: rewrite buffer 0 in place, seq untouched."""
    for k in range(count):
        fill_record(buffers[0], first_epoch + 2 * k)


def rogue_writer_child(name: str, time_budget: float) -> None:
    mm = shm.attach_segment(name)
    words = shm.u64_words(mm)
    _, buffers = _views(words)
    deadline = time.monotonic() + time_budget
    epoch = 4
    while words.item(STOP_WORD) == 0 and time.monotonic() < deadline:
        rewrite_without_latch(buffers, epoch, 256)
        epoch += 512


def test_checker_catches_torn_reads_when_the_latch_is_bypassed(shm_name, reap):
    """Negative control: the stress test's reader and checker do fail when a
    writer modifies the buffer being read without going through the latch."""
    ctx = mp.get_context("spawn")
    mm = shm.create_segment(shm_name, SEGMENT_BYTES)
    try:
        words = shm.u64_words(mm)
        seq, buffers = _views(words)
        fill_record(buffers[0], 2)
        words[SEQ_WORD] = 4  # epoch 2 published in buffer 0, for good
        rogue = ctx.Process(target=rogue_writer_child, args=(shm_name, 60.0))
        reap(rogue)
        rogue.start()
        wait_until(lambda bufs=buffers: bufs[0, 0] != 2, timeout=60, what="rogue writer", period=0)
        stats = np.zeros(len(STAT_NAMES), np.int64)
        deadline = time.monotonic() + 30
        while stats[TORN] == 0 and time.monotonic() < deadline:
            jit_reader(seq, buffers, stats, stats[OK] + 10_000, 10_000)
        words[STOP_WORD] = 1
        rogue.join(timeout=30)
        del words, seq, buffers
        assert stats[RETRIES] == 0  # seq never moved, so the latch saw nothing
        assert stats[TORN] > 0, dict(zip(STAT_NAMES, stats.tolist(), strict=True))
        assert stats[INCONSISTENT] > 0
    finally:
        shm.close_quietly(mm)
