"""clients.pick.pick: power of d choices among ranked nodes, claims-aware.

Arithmetic of the distribution tests:
  * d = 2, candidates A > B > C: the pair is uniform over {AB, AC, BC}; A wins
    2 of 3, B 1 of 3, C none: P = (2/3, 1/3, 0).
  * d = 3, A > B > C > D: the triple is uniform over the 4 triples; the one
    without A is BCD, so P = (3/4, 1/4, 0, 0).
  * d = 4 (the default), A > B > C > D > E: the 5 quadruples are equally
    likely; the one without A is BCDE, so P = (4/5, 1/5, 0, 0, 0).
  * claims: effective = score / (1 + claims / slots), e.g. 0.8 with 2 claims
    on 2 slots -> 0.8 / 2 = 0.4; 0.9 with 2 claims on 8 slots -> 0.9 / 1.25
    = 0.72; on 1 slot -> 0.9 / 3 = 0.3.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.pick import DEFAULT_D, pick


class _Counting(np.ndarray):
    """An array that counts element reads through ``item`` (pick's only access)."""

    reads = 0

    def item(self, *args):
        type(self).reads += 1
        return super().item(*args)


def _ranking(scores):
    """Slots with score > 0, by score descending, ties by slot (SCORING.md 14)."""
    cand = [i for i, s in enumerate(scores) if s > 0]
    ranked = np.array(sorted(cand, key=lambda i: (-scores[i], i)), np.int32)
    out = np.zeros(len(scores), np.int32)
    out[: len(ranked)] = ranked
    return np.asarray(scores, float), out, len(ranked)


@pytest.mark.parametrize(
    "scores, exclude, d, expected",
    [
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
    ],
)
def test_table(scores, exclude, d, expected):
    s, ranked, m = _ranking(scores)
    rng = np.random.default_rng(0)
    assert pick(s, ranked, m, rng, exclude=exclude, d=d) == expected
    # ranked=None derives the candidates from the scores: same answer here
    assert pick(s, None, 0, np.random.default_rng(0), exclude=exclude, d=d) == expected


def test_two_choices_distribution():
    s, ranked, m = _ranking([0.9, 0.5, 0.2])  # A=slot 0, B=1, C=2
    rng = np.random.default_rng(42)
    counts = np.bincount([pick(s, ranked, m, rng, d=2) for _ in range(30000)], minlength=3)
    freq = counts / counts.sum()
    assert freq[2] == 0.0  # the worst never wins a pair
    assert abs(freq[0] - 2 / 3) < 0.015
    assert abs(freq[1] - 1 / 3) < 0.015


def test_default_four_choices_distribution():
    assert DEFAULT_D == 4
    s, ranked, m = _ranking([0.2, 0.9, 0.5, 0.7, 0.1])  # A=slot 1, B=3, C=2, D=0, E=4
    rng = np.random.default_rng(46)
    counts = np.bincount([pick(s, ranked, m, rng) for _ in range(30000)], minlength=5)
    freq = counts / counts.sum()
    assert freq[0] == freq[2] == freq[4] == 0.0
    assert abs(freq[1] - 4 / 5) < 0.015
    assert abs(freq[3] - 1 / 5) < 0.015


def test_three_choices_distribution():
    s, ranked, m = _ranking([0.2, 0.9, 0.5, 0.7])  # A=slot 1, B=3, C=2, D=0
    rng = np.random.default_rng(43)
    counts = np.bincount([pick(s, ranked, m, rng, d=3) for _ in range(30000)], minlength=4)
    freq = counts / counts.sum()
    assert freq[0] == 0.0 and freq[2] == 0.0  # the two worst never win a triple
    assert abs(freq[1] - 3 / 4) < 0.015
    assert abs(freq[3] - 1 / 4) < 0.015


def test_d1_is_uniform_over_ranked_only():
    s, ranked, m = _ranking([0.9, 0.0, 0.2, 0.5])
    rng = np.random.default_rng(1)
    counts = np.bincount([pick(s, ranked, m, rng, d=1) for _ in range(30000)], minlength=4)
    assert counts[1] == 0  # score 0 is never a candidate
    assert np.all(np.abs(counts[[0, 2, 3]] / 30000 - 1 / 3) < 0.015)


def test_seeded_rng_is_reproducible():
    s, ranked, m = _ranking(list(np.linspace(0.1, 1.0, 20)))
    a = [pick(s, ranked, m, np.random.default_rng(7)) for _ in range(3)]
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    assert [pick(s, ranked, m, r1) for _ in range(100)] == [
        pick(s, ranked, m, r2) for _ in range(100)
    ]
    assert len(set(a)) == 1


def test_only_reads_n_ranked_entries():
    s = np.array([0.9, 0.8, 0.7])
    ranked = np.array([1, 2, 0], np.int32)  # stale entry past n_ranked
    for seed in range(20):
        assert pick(s, ranked, 2, np.random.default_rng(seed)) == 1


def test_bad_d_raises():
    s, ranked, m = _ranking([0.5, 0.4])
    with pytest.raises(ValueError, match=r"d = 0 must be >= 1"):
        pick(s, ranked, m, np.random.default_rng(0), d=0)


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=12),
    excl=st.lists(st.integers(0, 11), max_size=4),
    d=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_properties(scores, excl, d, seed):
    s, ranked, m = _ranking(scores)
    before = (s.copy(), ranked.copy())
    got = pick(s, ranked, m, np.random.default_rng(seed), exclude=excl, d=d)
    eligible = [i for i in ranked[:m] if i not in excl]
    assert np.array_equal(s, before[0]) and np.array_equal(ranked, before[1])  # pure
    if not eligible:
        assert got == -1
        return
    assert got in eligible and s[got] > 0
    # with d >= 2 a candidate strictly worse than all others never wins
    if d >= 2 and len(eligible) >= 2:
        worst = min(s[i] for i in eligible)
        if sum(s[i] == worst for i in eligible) == 1:
            assert s[got] > worst


@pytest.mark.parametrize(
    "scores, claims, slots, expected",
    [
        # A = slot 0 (0.8, 2 claims on 2 slots -> 0.4) loses to B = slot 1 (0.5, no claims)
        ([0.8, 0.5], [2, 0], [2, 2], 1),
        # the same claims on 8 slots: 0.8 / 1.25 = 0.64 > 0.5, A keeps winning
        ([0.8, 0.5], [2, 0], [8, 2], 0),
        # 0.9 with 2 claims on 1 slot -> 0.3 < 0.7
        ([0.9, 0.7], [2, 0], [1, 1], 1),
        # 0.9 with 2 claims on 8 slots -> 0.72 > 0.7
        ([0.9, 0.7], [2, 0], [8, 1], 0),
        # slots None counts 1 worker: 0.9 / 3 = 0.3 < 0.7
        ([0.9, 0.7], [2, 0], None, 1),
        # slots below 1 count as 1
        ([0.9, 0.7], [2, 0], [0, 0], 1),
        # claims on both: 0.9 / 2 = 0.45 vs 0.7 / 2 = 0.35 (1 claim each, 1 slot)
        ([0.9, 0.7], [1, 1], [1, 1], 0),
        # equal effective values: the earlier in the ranking (0.8 / 2 = 0.4 = 0.4)
        ([0.8, 0.4], [1, 0], [1, 1], 0),
        # a popular node is discounted, never excluded: the only candidate wins
        ([0.0, 0.6], [0, 1000], [1, 1], 1),
    ],
)
def test_claims_table(scores, claims, slots, expected):
    s, ranked, m = _ranking(scores)
    c = np.asarray(claims, float)
    k = None if slots is None else np.asarray(slots, float)
    assert pick(s, ranked, m, np.random.default_rng(0), d=2, claims=c, slots=k) == expected


def test_no_claims_is_the_plain_pick():
    s, ranked, m = _ranking(list(np.linspace(0.05, 1.0, 40)))
    zeros = np.zeros(40)
    a = [
        pick(s, ranked, m, np.random.default_rng(9), claims=zeros, slots=np.ones(40))
        for _ in range(50)
    ]
    b = [pick(s, ranked, m, np.random.default_rng(9)) for _ in range(50)]
    assert a == b


def test_claims_shift_the_distribution():
    # d = 2 over A > B > C (2/3, 1/3, 0 without claims).  A with 1 claim on 1
    # slot counts 0.9 / 2 = 0.45 < B = 0.5: now B wins every pair it is in
    # (AB, BC) and A only AC: P = (1/3, 2/3, 0).
    s, ranked, m = _ranking([0.9, 0.5, 0.2])
    claims = np.array([1.0, 0.0, 0.0])
    rng = np.random.default_rng(44)
    counts = np.bincount(
        [pick(s, ranked, m, rng, d=2, claims=claims, slots=np.ones(3)) for _ in range(30000)],
        minlength=3,
    )
    freq = counts / counts.sum()
    assert freq[2] == 0.0
    assert abs(freq[0] - 1 / 3) < 0.015
    assert abs(freq[1] - 2 / 3) < 0.015


@pytest.mark.parametrize("exclude", [None, [3, 77, 5000]])
def test_reads_o_of_d_entries_of_a_large_ranking(exclude):
    n, d = 100_000, 3
    rng = np.random.default_rng(5)
    scores = rng.random(n).view(_Counting)
    claims = np.ones(n).view(_Counting)
    slots = np.full(n, 4.0).view(_Counting)
    ranked = np.argsort(-np.asarray(scores)).astype(np.int32).view(_Counting)
    for _ in range(200):
        _Counting.reads = 0
        got = pick(scores, ranked, n, rng, exclude, d=d, claims=claims, slots=slots)
        assert 0 <= got < n and (exclude is None or got not in exclude)
        # per candidate: its slot, score, claims and slots (+ the winner's slot
        # again; + the rejected excluded positions, at most len(exclude))
        assert _Counting.reads <= 4 * d + 1 + (len(exclude) if exclude else 0)


def test_exclusion_by_rejection_is_uniform():
    # 6 ranked, d = 1, slot 0 excluded: the 5 others equally likely.
    s, ranked, m = _ranking([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    rng = np.random.default_rng(12)
    counts = np.bincount(
        [pick(s, ranked, m, rng, exclude=[0], d=1) for _ in range(25000)], minlength=6
    )
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / 25000 - 1 / 5) < 0.015)


def test_n_ranked_beyond_the_array_is_clamped():
    s = np.array([0.9, 0.8])
    ranked = np.array([0, 1], np.int32)
    assert pick(s, ranked, 5, np.random.default_rng(0), d=2) == 0


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=12),
    claims=st.lists(st.integers(0, 4), min_size=12, max_size=12),
    slots=st.lists(st.integers(0, 8), min_size=12, max_size=12),
    excl=st.lists(st.integers(0, 11), max_size=4),
    d=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_claims_properties(scores, claims, slots, excl, d, seed):
    s, ranked, m = _ranking(scores)
    n = len(scores)
    c = np.asarray(claims[:n], float)
    k = np.asarray(slots[:n], float)
    before = (s.copy(), ranked.copy(), c.copy(), k.copy())
    got = pick(s, ranked, m, np.random.default_rng(seed), exclude=excl, d=d, claims=c, slots=k)
    assert all(np.array_equal(x, y) for x, y in zip((s, ranked, c, k), before, strict=True))  # pure
    eligible = [int(i) for i in ranked[:m] if i not in excl]
    if not eligible:
        assert got == -1
        return
    assert got in eligible
    eff = {i: s[i] / (1 + c[i] / max(k[i], 1.0)) for i in eligible}
    if len(eligible) <= d:
        # every eligible node drawn: the best effective value, the earliest on a tie
        assert got == max(eligible, key=lambda i: (eff[i], -eligible.index(i)))
