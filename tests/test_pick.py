"""clients.pick.pick: power of d choices among ranked nodes.

Arithmetic of the distribution tests:
  * d = 2, candidates A > B > C: the pair is uniform over {AB, AC, BC}; A wins
    2 of 3, B 1 of 3, C none: P = (2/3, 1/3, 0).
  * d = 3 (the default), A > B > C > D: the triple is uniform over the 4
    triples; the one without A is BCD, so P = (3/4, 1/4, 0, 0).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.pick import pick


def _ranking(scores):
    """Slots with score > 0, by score descending, ties by slot (SCORING.md 14)."""
    cand = [i for i, s in enumerate(scores) if s > 0]
    ranked = np.array(sorted(cand, key=lambda i: (-scores[i], i)), np.int32)
    out = np.zeros(len(scores), np.int32)
    out[:len(ranked)] = ranked
    return np.asarray(scores, float), out, len(ranked)


@pytest.mark.parametrize("scores, exclude, d, expected", [
    # nothing ranked -> -1 (status, not an exception)
    ([0.0, 0.0, 0.0], None, 2, -1),
    # one candidate: it, whatever d
    ([0.0, 0.7, 0.0], None, 2, 1),
    ([0.0, 0.7, 0.0], None, 1, 1),
    # every ranked node excluded -> -1
    ([0.5, 0.7, 0.0], [0, 1], 2, -1),
    # two candidates, d = 2: both drawn, the better (slot 2, 0.9) wins
    ([0.3, 0.0, 0.9], None, 2, 2),
    # excluding the best leaves the other
    ([0.3, 0.0, 0.9], [2], 2, 0),
    # d >= number of candidates: argmax
    ([0.1, 0.4, 0.8, 0.2], None, 4, 2),
    # tie between two candidates: the earlier in the ranking (lower slot)
    ([0.0, 0.6, 0.6], None, 2, 1),
])
def test_table(scores, exclude, d, expected):
    s, ranked, m = _ranking(scores)
    rng = np.random.default_rng(0)
    assert pick(s, ranked, m, rng, exclude=exclude, d=d) == expected
    # ranked=None derives the candidates from the scores: same answer here
    assert pick(s, None, 0, np.random.default_rng(0), exclude=exclude, d=d) == expected


def test_two_choices_distribution():
    s, ranked, m = _ranking([0.9, 0.5, 0.2])       # A=slot 0, B=1, C=2
    rng = np.random.default_rng(42)
    counts = np.bincount([pick(s, ranked, m, rng, d=2) for _ in range(30000)], minlength=3)
    freq = counts / counts.sum()
    assert freq[2] == 0.0                            # the worst never wins a pair
    assert abs(freq[0] - 2 / 3) < 0.015
    assert abs(freq[1] - 1 / 3) < 0.015


def test_default_three_choices_distribution():
    s, ranked, m = _ranking([0.2, 0.9, 0.5, 0.7])    # A=slot 1, B=3, C=2, D=0
    rng = np.random.default_rng(43)
    counts = np.bincount([pick(s, ranked, m, rng) for _ in range(30000)], minlength=4)
    freq = counts / counts.sum()
    assert freq[0] == 0.0 and freq[2] == 0.0         # the two worst never win a triple
    assert abs(freq[1] - 3 / 4) < 0.015
    assert abs(freq[3] - 1 / 4) < 0.015


def test_d1_is_uniform_over_ranked_only():
    s, ranked, m = _ranking([0.9, 0.0, 0.2, 0.5])
    rng = np.random.default_rng(1)
    counts = np.bincount([pick(s, ranked, m, rng, d=1) for _ in range(30000)], minlength=4)
    assert counts[1] == 0                            # score 0 is never a candidate
    assert np.all(np.abs(counts[[0, 2, 3]] / 30000 - 1 / 3) < 0.015)


def test_seeded_rng_is_reproducible():
    s, ranked, m = _ranking(list(np.linspace(0.1, 1.0, 20)))
    a = [pick(s, ranked, m, np.random.default_rng(7)) for _ in range(3)]
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    assert [pick(s, ranked, m, r1) for _ in range(100)] == [pick(s, ranked, m, r2) for _ in range(100)]
    assert len(set(a)) == 1


def test_only_reads_n_ranked_entries():
    s = np.array([0.9, 0.8, 0.7])
    ranked = np.array([1, 2, 0], np.int32)          # stale entry past n_ranked
    for seed in range(20):
        assert pick(s, ranked, 2, np.random.default_rng(seed)) == 1


def test_bad_d_raises():
    s, ranked, m = _ranking([0.5, 0.4])
    with pytest.raises(ValueError, match=r"d = 0 must be >= 1"):
        pick(s, ranked, m, np.random.default_rng(0), d=0)


@settings(max_examples=200, deadline=None)
@given(scores=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=12),
       excl=st.lists(st.integers(0, 11), max_size=4), d=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_properties(scores, excl, d, seed):
    s, ranked, m = _ranking(scores)
    before = (s.copy(), ranked.copy())
    got = pick(s, ranked, m, np.random.default_rng(seed), exclude=excl, d=d)
    eligible = [i for i in ranked[:m] if i not in excl]
    assert np.array_equal(s, before[0]) and np.array_equal(ranked, before[1])   # pure
    if not eligible:
        assert got == -1
        return
    assert got in eligible and s[got] > 0
    # with d >= 2 a candidate strictly worse than all others never wins
    if d >= 2 and len(eligible) >= 2:
        worst = min(s[i] for i in eligible)
        if sum(s[i] == worst for i in eligible) == 1:
            assert s[got] > worst
