"""shm_engine.core.ordering: what the intrinsics compute, what they compile to, and
that a jitted spin loop sees every store another process makes.

Why the module exists, shown on this compiler: a spin loop over a plain
``words[0]`` is collapsed by LLVM into a single load (the loop disappears),
while the same loop over ``load_acquire_u64`` reloads the word every turn.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from shm_engine.core.ordering import (
    fence_acquire,
    fence_release,
    fence_seq_cst,
    load_acquire_u32,
    load_acquire_u64,
    load_relaxed_u32,
    load_relaxed_u64,
    store_relaxed_u32,
    store_relaxed_u64,
    store_release_u32,
    store_release_u64,
)
from support import shm
from support.wait import wait_until

# --------------------------------------------------------------------------
# Values


@njit
def _store_then_load_u64(words, i, v):
    store_release_u64(words, i, v)
    a = load_acquire_u64(words, i)
    store_relaxed_u64(words, i, v)
    fence_seq_cst()
    return a, load_relaxed_u64(words, i)


@njit
def _store_then_load_u32(words, i, v):
    store_release_u32(words, i, v)
    a = load_acquire_u32(words, i)
    store_relaxed_u32(words, i, v)
    fence_release()
    fence_acquire()
    return a, load_relaxed_u32(words, i)


U64_CASES = [
    # (value stored, value read back)
    (0, 0),
    (7, 7),
    (2**63 - 1, 2**63 - 1),
    (np.uint64(2**64 - 1), 2**64 - 1),
    (-1, 2**64 - 1),  # an int64 argument keeps its bits: two's complement
]


@pytest.mark.parametrize("value, expected", U64_CASES)
def test_u64_store_then_load_round_trips(value, expected):
    words = np.zeros(4, np.uint64)
    assert _store_then_load_u64(words, 2, value) == (expected, expected)
    assert words.tolist() == [0, 0, expected, 0]  # only words[2] written


@pytest.mark.parametrize(
    "value, expected", [(0, 0), (9, 9), (2**32 - 1, 2**32 - 1), (-1, 2**32 - 1)]
)
def test_u32_store_then_load_round_trips(value, expected):
    words = np.zeros(4, np.uint32)
    assert _store_then_load_u32(words, 1, value) == (expected, expected)
    assert words.tolist() == [0, expected, 0, 0]


def test_strided_view_addresses_the_indexed_element():
    words = np.zeros(8, np.uint64)
    every_other = words[::2]  # element i is words[2 * i]
    _store_then_load_u64(every_other, 3, 5)
    assert np.flatnonzero(words).tolist() == [6]


@njit
def _load_from(arr):
    return load_acquire_u64(arr, 0)


@njit
def _store_into(arr):
    store_release_u64(arr, 0, 1)


def test_wrong_dtype_and_readonly_arrays_are_rejected_at_compile_time():
    with pytest.raises(TypingError, match="load_acquire_u64"):
        _load_from(np.zeros(1, np.float64))
    readonly = np.zeros(1, np.uint64)
    readonly.flags.writeable = False
    assert _load_from(readonly) == 0  # loading a read-only array is fine
    with pytest.raises(TypingError, match="store_release_u64"):
        _store_into(readonly)


# --------------------------------------------------------------------------
# Generated code


@njit  # not cache=True: numba refuses to inspect code loaded from the cache
def spin_acquire(words, target, budget):
    spins = 0
    while load_acquire_u64(words, 0) < target:
        spins += 1
        if spins == budget:
            break
    return spins


@njit
def spin_plain(words, target, budget):
    spins = 0
    while words[0] < target:
        spins += 1
        if spins == budget:
            break
    return spins


def _compiled(fn):
    fn(np.zeros(1, np.uint64), np.uint64(0), 1)
    return fn.signatures[0]


def _function_ir(fn) -> str:
    """The optimized IR of ``fn`` itself (not its CPython wrapper)."""
    module = fn.inspect_llvm(_compiled(fn))
    name = fn.__name__
    for m in re.finditer(r"^define [^\n]*@(\S+)\(", module, re.M):
        if name in m.group(1) and "cpython" not in m.group(1):
            end = module.index("\n}\n", m.start())
            return module[m.start() : end]
    raise AssertionError(f"no IR function for {name}")


def _function_asm(fn) -> list[str]:
    asm = fn.inspect_asm(_compiled(fn))
    name = fn.__name__
    for m in re.finditer(r"^(_ZN\S+):$", asm, re.M):
        if name in m.group(1) and "cpython" not in m.group(1):
            end = asm.index(".Lfunc_end", m.end())
            return asm[m.end() : end].splitlines()
    raise AssertionError(f"no asm function for {name}")


def _ir_blocks(ir_text: str) -> dict[str, str]:
    parts = re.split(r"^([\w.]+):.*$", ir_text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _ir_blocks_on_cycles(blocks: dict[str, str]) -> set[str]:
    """Blocks that can reach themselves through branch edges: loop bodies."""
    succ = {b: set(re.findall(r"label %([\w.]+)", body)) for b, body in blocks.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(succ[start])
        while todo:
            b = todo.pop()
            if b == goal:
                return True
            if b not in seen and b in succ:
                seen.add(b)
                todo.extend(succ[b])
        return False

    return {b for b in blocks if reaches(b, b)}


def _asm_loops_that_load(lines: list[str]) -> list[list[str]]:
    """Bodies between a label and a later jump back to it that read memory."""
    labels = {}
    loops = []
    for n, line in enumerate(lines):
        if m := re.match(r"^(\.LBB\w+):", line):
            labels[m.group(1)] = n
        elif (m := re.match(r"^\s+j\w+\s+(\.LBB\w+)", line)) and m.group(1) in labels:
            body = lines[labels[m.group(1)] : n + 1]
            if any(_reads_memory(b) for b in body):
                loops.append(body)
    return loops


def _reads_memory(line: str) -> bool:
    # AT&T syntax: a memory operand followed by a comma is a source.
    if re.search(r"\(%\w+[^)]*\)\s*,", line):
        return True
    return bool(re.match(r"\s*(cmp|test)\w*\s", line)) and "(%" in line


def test_acquire_spin_loop_reloads_the_word_every_turn():
    ir_text = _function_ir(spin_acquire)
    blocks = _ir_blocks(ir_text)
    atomic = {
        b for b, body in blocks.items() if re.search(r"load atomic i64, ptr %\S+ acquire", body)
    }
    assert atomic, ir_text
    assert atomic & _ir_blocks_on_cycles(blocks), f"atomic load is outside the loop:\n{ir_text}"
    loops = _asm_loops_that_load(_function_asm(spin_acquire))
    assert loops, "\n".join(_function_asm(spin_acquire))


def test_plain_spin_loop_is_what_the_intrinsics_prevent():
    """Documents the hazard: LLVM is allowed to load once and never again.

    Skipped, not failed, when this LLVM happens to keep the plain load in the
    loop; the acquire test above is the one that guards our code.
    """
    loops = _asm_loops_that_load(_function_asm(spin_plain))
    if loops:
        pytest.skip("this LLVM kept the plain load inside the loop")
    assert "load atomic" not in _function_ir(spin_plain)


def test_intrinsics_work_in_cached_functions_across_processes(tmp_path):
    """A ``cache=True`` user of the intrinsics compiles once, then loads."""
    script = textwrap.dedent("""
        import numpy as np
        from shm_engine.core.rows import slot_change_end
        gen = np.full(1, 5, np.uint64)
        slot_change_end(gen, 0)  # a store_release_u64
        assert gen[0] == 6
        print(sum(slot_change_end.stats.cache_hits.values()))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [
        subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs == ["0", "1"]  # first run compiles, second hits the cache


# --------------------------------------------------------------------------
# Cross-process ping-pong

PING_WORD = 0  # parent -> child: "step k is ready"
ECHO_WORD = 8  # child -> parent: "saw step k"; on its own cache line
SEGMENT_BYTES = 4096
ROUND_TRIPS = 10_000
ECHO_FAILED = 2**64 - 1  # the child gave up; ECHO_WORD >= any step
SPIN_BUDGET = 2**31  # per step: ~1 s of spinning on an L1-resident word

ECHO_OK, ECHO_TIMED_OUT, ECHO_SKIPPED = 0, 1, 2


@njit(cache=True)
def echo_steps(words, n, spin_budget):
    """For k = 1..n: spin until ``words[PING_WORD]`` reaches k, require it
    to be exactly k, echo k. Returns (steps echoed, status, most spins)."""
    most = 0
    for k in range(1, n + 1):
        spins = 0
        seen = load_acquire_u64(words, PING_WORD)
        while seen < np.uint64(k):
            spins += 1
            if spins == spin_budget:
                store_release_u64(words, ECHO_WORD, ECHO_FAILED)
                return k - 1, ECHO_TIMED_OUT, spins
            seen = load_acquire_u64(words, PING_WORD)
        most = max(most, spins)
        if seen != np.uint64(k):
            store_release_u64(words, ECHO_WORD, ECHO_FAILED)
            return k - 1, ECHO_SKIPPED, most
        # Pairs with the parent's load of ECHO_WORD (x86-64: TSO).
        store_release_u64(words, ECHO_WORD, k)
    return n, ECHO_OK, most


def echo_child(name: str, n: int, spin_budget: int, results) -> None:
    """Child entry point (spawned): attach and echo n steps."""
    mm = shm.attach_segment(name)
    results.put(echo_steps(shm.u64_words(mm), n, spin_budget))


def test_jitted_spin_loop_sees_every_step_of_another_process(shm_name, reap):
    ctx = mp.get_context("spawn")
    mm = shm.create_segment(shm_name, SEGMENT_BYTES)
    try:
        words = shm.u64_words(mm)
        results = ctx.Queue()
        child = ctx.Process(target=echo_child, args=(shm_name, ROUND_TRIPS, SPIN_BUDGET, results))
        reap(child)
        child.start()
        for k in range(1, ROUND_TRIPS + 1):
            words[PING_WORD] = k  # x86-64: a plain store, seen in order by the child
            wait_until(
                lambda w=words, k=k: w.item(ECHO_WORD) >= k,
                timeout=30,
                what=f"echo of step {k}",
                period=0,
            )
            assert words.item(ECHO_WORD) == k, f"child failed at step {k}"
        echoed, status, most_spins = results.get(timeout=30)
        child.join(timeout=30)
        assert (echoed, status) == (ROUND_TRIPS, ECHO_OK)
        assert child.exitcode == 0
        assert most_spins < SPIN_BUDGET
        del words
    finally:
        shm.close_quietly(mm)
