"""shm_engine.core.ordering's read-modify-writes: what they return, what they
compile to, and that they stay exact when several processes hammer one word.

The multi-process tests start N spawned processes on one shared counter
behind a start barrier, so they run at once.  Each atomic operation must
give the exact total; the negative control does the same increments as a
separate load and store and must lose some (if it never did, the exact
totals would prove nothing about atomicity on this machine).
"""

from __future__ import annotations

import multiprocessing as mp
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from shm_engine.core.ordering import (
    cas_i64,
    cas_pair_u64,
    cas_u64,
    exchange_i64,
    exchange_u64,
    fence_seq_cst,
    fetch_add_i64,
    fetch_add_u64,
    load_acquire_u64,
    load_relaxed_u64,
    store_relaxed_u64,
    store_release_u64,
)
from support import shm as shm_util
from support.wait import wait_until

U64_MAX = 2**64 - 1

# --------------------------------------------------------------------------
# Values


@njit
def _cas(words, i, expected, new):
    return cas_u64(words, i, expected, new)


@njit
def _cas_signed(words, i, expected, new):
    return cas_i64(words, i, expected, new)


@njit
def _add(words, i, v):
    return fetch_add_u64(words, i, v)


@njit
def _add_signed(words, i, v):
    return fetch_add_i64(words, i, v)


@njit
def _xchg(words, i, v):
    return exchange_u64(words, i, v)


@njit
def _xchg_signed(words, i, v):
    return exchange_i64(words, i, v)


@njit
def _cas_pair(words, i, e0, e1, n0, n1):
    return cas_pair_u64(words, i, e0, e1, n0, n1)


@pytest.mark.parametrize(
    "before, expected, new, returned, after",
    [
        # cas_u64: stores only when the word holds `expected`; returns the old value
        (5, 5, 9, 5, 9),  # success: returned == expected
        (5, 4, 9, 5, 5),  # failure: the word is unchanged
        (U64_MAX, np.uint64(U64_MAX), 0, U64_MAX, 0),
        (0, 0, -1, 0, U64_MAX),  # an int64 argument keeps its bits
    ],
)
def test_cas_u64(before, expected, new, returned, after):
    words = np.array([7, before, 7], np.uint64)
    assert _cas(words, 1, expected, new) == returned
    assert words.tolist() == [7, after, 7]


def test_cas_i64_is_signed():
    words = np.array([-3], np.int64)
    assert _cas_signed(words, 0, -3, -8) == -3 and words[0] == -8
    assert _cas_signed(words, 0, -3, 1) == -8 and words[0] == -8


@pytest.mark.parametrize(
    "before, v, returned, after",
    [
        (0, 1, 0, 1),
        (41, 1, 41, 42),
        (U64_MAX, 1, U64_MAX, 0),  # wraps
        (10, -1, 10, 9),  # -1 is 2**64 - 1: adding it subtracts
    ],
)
def test_fetch_add_u64(before, v, returned, after):
    words = np.array([before], np.uint64)
    assert _add(words, 0, v) == returned and words[0] == after


def test_fetch_add_i64_wraps_at_the_signed_limits():
    words = np.array([2**63 - 1, -5], np.int64)
    assert _add_signed(words, 0, 1) == 2**63 - 1 and words[0] == -(2**63)
    assert _add_signed(words, 1, -2) == -5 and words[1] == -7


def test_exchange_returns_the_old_value():
    words = np.array([3], np.uint64)
    assert _xchg(words, 0, 8) == 3 and words[0] == 8
    signed = np.array([-1], np.int64)
    assert _xchg_signed(signed, 0, -9) == -1 and signed[0] == -9


def _aligned_pair_words(n=6):
    """A uint64 array whose element 0 is 16-byte aligned."""
    raw = np.zeros(n + 2, np.uint64)
    off = (-raw.ctypes.data % 16) // 8
    return raw[off : off + n]


@pytest.mark.parametrize(
    "before, expected, new, stored",
    [
        # (arr[2], arr[3]) before; (e0, e1); (n0, n1); stored?
        ((1, 2), (1, 2), (3, 4), True),
        ((1, 2), (1, 9), (3, 4), False),  # one half differs: nothing stored
        ((1, 2), (9, 2), (3, 4), False),
        ((U64_MAX, 0), (np.uint64(U64_MAX), 0), (0, np.uint64(U64_MAX)), True),
    ],
)
def test_cas_pair_u64_compares_and_swaps_both_halves_as_one(before, expected, new, stored):
    words = _aligned_pair_words()
    words[2:4] = before
    assert _cas_pair(words, 2, *expected, *new) is stored
    assert tuple(words[2:4].tolist()) == (new if stored else before)
    assert words[[0, 1, 4, 5]].tolist() == [0, 0, 0, 0]


@njit
def _add_to(arr):
    return fetch_add_u64(arr, 0, 1)


def test_wrong_dtype_and_readonly_arrays_are_rejected_at_compile_time():
    with pytest.raises(TypingError, match="fetch_add_u64"):
        _add_to(np.zeros(1, np.int64))
    readonly = np.zeros(1, np.uint64)
    readonly.flags.writeable = False
    with pytest.raises(TypingError, match="fetch_add_u64"):
        _add_to(readonly)


def test_misaligned_pair_faults_instead_of_tearing(tmp_path):
    """cmpxchg16b on an address that is not 16-byte aligned raises #GP: the
    process dies by SIGSEGV rather than doing a non-atomic update."""
    script = textwrap.dedent("""
        import numpy as np
        from numba import njit
        from shm_engine.core.ordering import cas_pair_u64
        @njit
        def f(w):
            return cas_pair_u64(w, 0, 0, 0, 1, 1)
        raw = np.zeros(8, np.uint64)
        off = (-raw.ctypes.data % 16) // 8
        f(raw[off + 1:])    # 8 mod 16
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert run.returncode < 0, run.stderr.decode()


# --------------------------------------------------------------------------
# Generated code


@njit
def _all_rmws(u, s):
    a = cas_u64(u, 0, 1, 2)
    b = fetch_add_u64(u, 1, 3)
    c = exchange_u64(u, 2, 4)
    d = cas_i64(s, 0, 1, 2) + fetch_add_i64(s, 1, 3) + exchange_i64(s, 2, 4)
    e = cas_pair_u64(u, 4, 0, 0, 1, 1)
    return a + b + c, d, e


def test_each_read_modify_write_is_one_locked_instruction():
    _all_rmws(_aligned_pair_words(), np.zeros(3, np.int64))
    asm = _all_rmws.inspect_asm(_all_rmws.signatures[0])
    assert len(re.findall(r"\block\s+cmpxchgq\b|\block\s+cmpxchg\b", asm)) >= 2, asm
    assert re.search(r"\block\s+xaddq?\b", asm), asm
    assert re.search(r"\bxchgq?\b", asm), asm
    assert re.search(r"\block\s+cmpxchg16b\b", asm), asm
    assert "__atomic_compare_exchange" not in asm  # no library fallback


# --------------------------------------------------------------------------
# Many processes, one word

COUNTER, READY, GO, PAIR, SIGNED, LOCK = 0, 8, 16, 24, 32, 40  # one cache line each
SPIN_BUDGET = 2**32
MODES = ("fetch_add", "cas_loop", "xchg_lock", "cas_pair", "load_store")
M_PER_PROCESS = {
    "fetch_add": 400_000,
    "cas_loop": 200_000,
    "xchg_lock": 100_000,
    "cas_pair": 100_000,
    "load_store": 2_000_000,
}
N_PROCESSES = 4


@njit(cache=True)
def hammer(words, signed, mode, m, n_procs):
    """Wait at the barrier, then add 1 to the counter ``m`` times the
    ``mode`` way (``fetch_add`` and ``cas_loop`` also subtract 1 from the
    int64 word ``signed[SIGNED]`` with the int64 twin; ``xchg_lock`` takes
    and frees its lock with both twins in turn).  Returns (status, torn):
    status 0 ok, 1 barrier timeout; ``torn`` counts pair observations with
    hi != 2 * lo (cas_pair only)."""
    fetch_add_u64(words, READY, 1)
    spins = 0
    while load_acquire_u64(words, GO) == 0:
        spins += 1
        if spins == SPIN_BUDGET:
            return 1, 0
    torn = 0
    for k in range(m):
        if mode == 0:
            fetch_add_u64(words, COUNTER, 1)
            fetch_add_i64(signed, SIGNED, -1)
        elif mode == 1:
            w = load_relaxed_u64(words, COUNTER)
            while True:
                old = cas_u64(words, COUNTER, w, w + np.uint64(1))
                if old == w:
                    break
                w = old
            x = signed[SIGNED]
            while True:
                old_signed = cas_i64(signed, SIGNED, x, x - 1)
                if old_signed == x:
                    break
                x = old_signed
        elif mode == 2:
            if k & 1:  # a spinlock made of xchg
                while exchange_i64(signed, LOCK, 1) != 0:
                    pass
            else:
                while exchange_u64(words, LOCK, 1) != 0:
                    pass
            v = load_relaxed_u64(words, COUNTER)  # the critical section: the
            fence_seq_cst()  # load_store race below,
            store_relaxed_u64(words, COUNTER, v + np.uint64(1))  # safe only inside
            if k & 1:
                exchange_i64(signed, LOCK, 0)
            else:
                store_release_u64(words, LOCK, 0)
        elif mode == 3:
            while True:
                lo = load_acquire_u64(words, PAIR)
                hi = load_relaxed_u64(words, PAIR + 1)
                if cas_pair_u64(words, PAIR, lo, hi, lo + np.uint64(1), hi + np.uint64(2)):
                    if hi != lo * np.uint64(2):
                        torn += 1  # a successful CAS saw the pair mid-update
                    break
        else:
            # The race the others prevent.  The fence keeps LLVM from fusing
            # the pair into one `inc` (which only a second core can split)
            # and widens the window in which a preempted process holds a
            # value that others have moved past.
            v = load_relaxed_u64(words, COUNTER)
            fence_seq_cst()
            store_relaxed_u64(words, COUNTER, v + np.uint64(1))
    return 0, torn


def _child(name: str, mode: int, m: int, n_procs: int, results) -> None:
    mm = shm_util.attach_segment(name)
    words = shm_util.u64_words(mm)
    results.put(hammer(words, words.view(np.int64), mode, m, n_procs))


def _run(shm_name, reap, mode: str) -> tuple[int, int, int]:
    """(final counter or pair low half, final signed word, torn
    observations) after N processes of M operations each."""
    ctx = mp.get_context("spawn")
    mm = shm_util.create_segment(shm_name, 4096)
    try:
        words = shm_util.u64_words(mm)
        assert words.ctypes.data % 16 == 0
        results = ctx.Queue()
        m = M_PER_PROCESS[mode]
        procs = [
            ctx.Process(target=_child, args=(shm_name, MODES.index(mode), m, N_PROCESSES, results))
            for _ in range(N_PROCESSES)
        ]
        for p in procs:
            reap(p)
            p.start()
        wait_until(lambda: words.item(READY) == N_PROCESSES, 120, "every child ready")
        words[GO] = 1  # x86-64: a plain store, seen in order (pairs with the load_acquire spin)
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert all(status == 0 for status, _ in got), got
        torn = sum(t for _s, t in got)
        value = words.item(PAIR) if mode == "cas_pair" else words.item(COUNTER)
        if mode == "cas_pair":
            assert words.item(PAIR + 1) == 2 * value
        return value, int(words.view(np.int64)[SIGNED]), torn
    finally:
        shm_util.close_quietly(mm)
        shm_util.unlink_segment(shm_name)


@pytest.mark.parametrize("mode", ["fetch_add", "cas_loop", "xchg_lock", "cas_pair"])
def test_atomic_increments_from_many_processes_sum_exactly(shm_name, reap, mode):
    value, signed, torn = _run(shm_name, reap, mode)
    assert value == N_PROCESSES * M_PER_PROCESS[mode]
    if mode in ("fetch_add", "cas_loop"):
        assert signed == -N_PROCESSES * M_PER_PROCESS[mode]  # the int64 twins
    assert torn == 0


def test_negative_control_plain_load_and_store_loses_updates(shm_names, reap):
    """The same increments as a separate load and store: some are lost when
    processes interleave.  Up to 5 rounds, so an unlucky schedule in which the
    processes happened to run one after another does not fail the test."""
    expected = N_PROCESSES * M_PER_PROCESS["load_store"]
    finals = []
    for _round in range(5):
        value, _signed, _torn = _run(shm_names(), reap, "load_store")
        finals.append(value)
        if value < expected:
            break
    assert min(finals) < expected, f"no update lost in {len(finals)} rounds: {finals}"
