"""`ranking.radix_ranked` gives exactly the ranking's order (score
descending, slot ascending; the oracle is numpy's lexsort) for the candidates
of a tick: distinct slots in ascending slot order, every score > 0 and finite.

Cases that stress a radix sort on the score's bits: many ties (few score
levels, so stability decides the order), scores spread over many binades
(the exponent digits vary), subnormal and extreme scores, a single
distinct value (nothing to sort), one outlier that crowds every other key
into a few large buckets (their own LSD sort), first digits of several
widths, and only the prefix ``ranked[:m]`` being touched.
"""

import numpy as np
import pytest

from kernels.ranking import RADIX_WIDE_FROM, make_rank_scratch, radix_ranked


def _expected(score, cand):
    """Score descending, then slot ascending."""
    return cand[np.lexsort((cand, -score[cand]))].tolist()


def _scores(rng, n, kind):
    if kind == "uniform":
        return rng.random(n)
    if kind == "levels":  # 7 distinct values: ties everywhere
        return rng.integers(0, 8, n) / 7.0
    if kind == "binades":  # 2**-60 .. 1: exponent bits vary
        return 2.0 ** -rng.uniform(0, 60, n)
    if kind == "extremes":
        return rng.choice(
            [5e-324, 2.2250738585072014e-308, 1e-300, 0.5, np.nextafter(1.0, 0.0), 1.0, 0.0], n
        )
    if kind == "one_value":
        return np.where(rng.random(n) < 0.2, 0.0, 0.37)
    if kind == "near":  # differ only in the last bits of the mantissa
        return 0.6 + rng.integers(0, 5, n) * np.finfo(float).eps
    if kind == "outlier":  # one tiny score: the rest crowd into a few buckets
        s = 0.6 + rng.integers(0, 1 << 20, n) * np.finfo(float).eps
        s[: min(n, 1)] = 1e-300
        return s
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind", ["uniform", "levels", "binades", "extremes", "one_value", "near", "outlier"]
)
@pytest.mark.parametrize(
    "n", [0, 1, 2, 16, 17, 100, RADIX_WIDE_FROM - 1, RADIX_WIDE_FROM, RADIX_WIDE_FROM + 1, 30_000]
)
def test_radix_equals_lexsort(kind, n):
    rng = np.random.default_rng(n * 7 + len(kind))
    score = np.zeros(n + 5)
    score[:n] = _scores(rng, n, kind)
    cand = np.flatnonzero(score > 0).astype(np.int32)
    m = len(cand)
    ranked = np.full(n + 5, -7, np.int32)
    ranked[:m] = cand
    passes = radix_ranked(score, ranked, m, make_rank_scratch(n + 5))
    assert ranked[:m].tolist() == _expected(score, cand)
    assert (ranked[m:] == -7).all()
    if kind == "one_value":
        assert passes == 0


def test_scratch_is_reused_across_calls():
    rng = np.random.default_rng(3)
    scratch = make_rank_scratch(5000)
    for n in (5000, 300, 5000, 20):
        score = rng.random(n) * (rng.random(n) < 0.9)
        cand = np.flatnonzero(score > 0).astype(np.int32)
        got = cand.copy()
        radix_ranked(score, got, len(cand), scratch)
        assert got.tolist() == _expected(score, cand)
