"""The placement kernel (`kernels.placement.place_scan`) as tables: each
filter on its own, then each part of the score, with the arithmetic written
out.  Nodes are built as columns by `_cluster`; every node is HEALTHY with
score 0.5, 4 slots and the capacity given, unless a case says otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.placement import (
    C_AFFINITY,
    C_NOT_READY,
    C_RESOURCE0,
    C_SELECTOR,
    C_SPREAD,
    C_TAINT,
    C_TAINT0,
    C_ZONE,
    M_AFFINITY,
    M_SELECTOR,
    M_TAINT0,
    M_ZONE,
    N_COUNTS,
    N_PARTS,
    place_scan,
)

GEN = 2  # an even (published) registration generation; its tag is 1
TAG = np.uint64(GEN >> 1)


def word(units: int, tag: np.uint64 = TAG) -> np.uint64:
    return np.uint64((int(tag) << 32) | units)


def _cluster(n, alloc=(4000, 8000), **over):
    c = dict(
        registered=np.ones(n, np.uint8),
        slot_gen=np.full(n, GEN, np.uint64),
        pub_gen=np.full(n, GEN, np.uint64),
        state=np.zeros(n, np.uint8),
        score=np.full(n, 0.5),
        slots=np.full(n, 4.0),
        alloc=np.tile(np.array(alloc, np.uint64), (n, 1)),
        reserved=np.zeros((n, len(alloc)), np.uint64),
        place=np.zeros((n, 8), np.uint64),
        meta_code=np.zeros(n, np.uint8),
        meta_gen=np.full(n, GEN, np.uint64),
        pref=np.ones(n),
        local=np.ones(n),
        cheap=np.ones(n),
    )
    c.update(over)
    return c


def scan(c, req=(1000, 2000), ghash=0, spread=0, fit_most=False, weights=(30, 20, 20, 20, 10), k=4):
    n = len(c["registered"])
    counts = np.zeros(N_COUNTS, np.int64)
    top = np.zeros(k, np.int64)
    total = np.zeros(k)
    parts = np.zeros((k, N_PARTS))
    feasible = place_scan(
        n,
        c["registered"],
        c["slot_gen"],
        c["pub_gen"],
        c["state"],
        c["score"],
        c["slots"],
        c["alloc"],
        c["reserved"],
        c["place"],
        c["meta_code"],
        c["meta_gen"],
        c["pref"],
        c["local"],
        c["cheap"],
        np.array(req, np.uint64),
        ghash,
        spread,
        fit_most,
        np.array(weights, np.float64),
        np.zeros(n, np.uint8),
        counts,
        top,
        total,
        parts,
    )
    return feasible, counts, top, total, parts


# ------------------------------------------------------------------ filters --
def _not_ready(c):
    c["state"][0] = 2  # OVERLOADED
    c["state"][1] = 4  # DEAD
    c["score"][2] = 0.0  # tripped since its state was published
    c["pub_gen"][3] = GEN + 2  # the tick scored another registration


def _meta_of_another_registration(c):
    c["meta_gen"][1] = GEN - 2  # constraints compiled for the slot's previous node


def _zone(c):
    c["meta_code"][:2] = M_ZONE


def _selector(c):
    c["meta_code"][:3] = M_SELECTOR


def _affinity(c):
    c["meta_code"][4] = M_AFFINITY


def _taints(c):
    c["meta_code"][0] = M_TAINT0
    c["meta_code"][1] = M_TAINT0 + 1
    c["meta_code"][2] = M_TAINT0 + 1


def _cpu(c):
    # free cpu = 4000 - 3500 = 500 < 1000 asked; free cpu = 4000 - 3000 = 1000 fits.
    c["reserved"][0, 0] = word(3500)
    c["reserved"][1, 0] = word(3000)


def _mem(c):
    c["alloc"][2, 1] = 1999  # 1999 < 2000 asked


def _old_registration(c):
    # Reserved words of an older registration (tag 0) count 0: node 0 fits.
    c["reserved"][0, 0] = word(4000, np.uint64(0))


def _unregistered(c):
    c["registered"][:2] = 0  # free slots: neither counted nor scored


def _spread(c):
    # group 7 has 2 placed on node 0 (limit 2: full), 1 on node 1 (fits);
    # node 2's seven ways are held by other groups (no way free).
    c["place"][0, 1] = (int(TAG) << 32) | (7 << 16) | 2
    c["place"][1, 3] = (int(TAG) << 32) | (7 << 16) | 1
    for j in range(1, 8):
        c["place"][2, j] = (int(TAG) << 32) | ((100 + j) << 16) | 1


FILTER_CASES = [
    # (name, mutate, counts expected {position: n}, feasible of 5)
    ("all fit", lambda c: None, {}, 5),
    ("not ready", _not_ready, {C_NOT_READY: 4}, 1),
    ("meta of another registration", _meta_of_another_registration, {C_NOT_READY: 1}, 4),
    ("zone", _zone, {C_ZONE: 2}, 3),
    ("selector", _selector, {C_SELECTOR: 3}, 2),
    ("required affinity", _affinity, {C_AFFINITY: 1}, 4),
    ("taints, per taint", _taints, {C_TAINT: 3, C_TAINT0: 1, C_TAINT0 + 1: 2}, 2),
    ("insufficient cpu", _cpu, {C_RESOURCE0: 1}, 4),
    ("insufficient mem", _mem, {C_RESOURCE0 + 1: 1}, 4),
    ("older registration's reservation is 0", _old_registration, {}, 5),
    ("unregistered slots are not nodes", _unregistered, {}, 3),
]


@pytest.mark.parametrize("name, mutate, expected, feasible", FILTER_CASES, ids=lambda x: x)
def test_each_filter_counts_what_it_eliminated(name, mutate, expected, feasible):
    c = _cluster(5)
    mutate(c)
    got, counts, *_ = scan(c)
    assert got == feasible
    assert {i: int(v) for i, v in enumerate(counts) if v} == expected


def test_spread_counts_full_nodes_and_nodes_without_a_free_way():
    c = _cluster(5)
    _spread(c)
    got, counts, top, *_ = scan(c, ghash=7, spread=2)
    assert got == 3 and counts[C_SPREAD] == 2
    assert 0 not in top and 2 not in top
    # Without a group, nothing is filtered by spread.
    assert scan(c)[0] == 5


def test_a_node_is_counted_under_its_first_failing_filter_only():
    c = _cluster(3)
    c["state"][0] = 2  # not ready, and also wrong zone and no cpu
    c["meta_code"][0] = M_ZONE
    c["reserved"][0, 0] = word(4000)
    c["meta_code"][1] = M_SELECTOR  # selector, and no cpu
    c["reserved"][1, 0] = word(4000)
    got, counts, *_ = scan(c)
    assert got == 1
    assert (counts[C_NOT_READY], counts[C_ZONE], counts[C_SELECTOR], counts[C_RESOURCE0]) == (
        1,
        0,
        1,
        0,
    )


def test_skip_leaves_tried_nodes_out_uncounted():
    c = _cluster(3)
    n = 3
    counts = np.zeros(N_COUNTS, np.int64)
    top, total, parts = np.zeros(2, np.int64), np.zeros(2), np.zeros((2, N_PARTS))
    skip = np.array([1, 0, 0], np.uint8)
    args = [c[k] for k in ("registered", "slot_gen", "pub_gen", "state", "score", "slots")]
    args += [c[k] for k in ("alloc", "reserved", "place", "meta_code", "meta_gen")]
    args += [c[k] for k in ("pref", "local", "cheap")]
    w = np.array([30, 20, 20, 20, 10], np.float64)
    req = np.array([1000, 2000], np.uint64)
    got = place_scan(n, *args, req, 0, 0, False, w, skip, counts, top, total, parts)
    assert got == 2 and counts.sum() == 0 and 0 not in top.tolist()


# ------------------------------------------------------------- score parts --
def _one_node(**over):
    return _cluster(1, **over)


def test_fit_least_allocated():
    # alloc (4000, 8000), reserved (1000, 0), req (1000, 2000):
    # cpu (4000 - 1000 - 1000) / 4000 = 0.5; mem (8000 - 0 - 2000) / 8000 = 0.75
    # fit = (0.5 + 0.75) / 2 = 0.625
    c = _one_node()
    c["reserved"][0, 0] = word(1000)
    *_, parts = scan(c)
    assert parts[0, 0] == pytest.approx(0.625)


def test_fit_most_allocated():
    # cpu (1000 + 1000) / 4000 = 0.5; mem (0 + 2000) / 8000 = 0.25; fit = 0.375
    c = _one_node()
    c["reserved"][0, 0] = word(1000)
    *_, parts = scan(c, fit_most=True)
    assert parts[0, 0] == pytest.approx(0.375)


def test_fit_counts_only_the_requested_resources_and_is_1_without_requests():
    # req (1000, 0): cpu (4000 - 1000) / 4000 = 0.75 alone
    *_, parts = scan(_one_node(), req=(1000, 0))
    assert parts[0, 0] == pytest.approx(0.75)
    *_, parts = scan(_one_node(), req=(0, 0))
    assert parts[0, 0] == 1.0


def test_load_discounts_open_reservations_by_slots():
    # score 0.5, slots 4, 4 reservations open: 0.5 * 4 / (4 + 4) = 0.25
    c = _one_node()
    c["place"][0, 0] = word(4)
    *_, parts = scan(c)
    assert parts[0, 2] == pytest.approx(0.25)
    # open reservations of an older registration do not count: 0.5 * 4 / 4
    c["place"][0, 0] = word(4, np.uint64(0))
    *_, parts = scan(c)
    assert parts[0, 2] == pytest.approx(0.5)


def test_affinity_locality_cost_are_the_compiled_columns():
    c = _one_node(pref=np.array([0.25]), local=np.array([0.5]), cheap=np.array([0.75]))
    *_, parts = scan(c)
    # affinity, load (0.5 * 4 / (4 + 0)), locality, cost
    assert parts[0, 1:].tolist() == [0.25, 0.5, 0.5, 0.75]


def test_total_is_the_weighted_mean_of_the_parts():
    # parts: fit 0.625 (as above), affinity 0.25, load 0.5, locality 0.5, cost 0.75
    # total = (30*0.625 + 20*0.25 + 20*0.5 + 20*0.5 + 10*0.75) / 100
    #       = (18.75 + 5 + 10 + 10 + 7.5) / 100 = 0.5125
    c = _one_node(pref=np.array([0.25]), local=np.array([0.5]), cheap=np.array([0.75]))
    c["reserved"][0, 0] = word(1000)
    _, _, _, total, parts = scan(c)
    assert parts[0].tolist() == pytest.approx([0.625, 0.25, 0.5, 0.5, 0.75])
    assert total[0] == pytest.approx(0.5125)
    # Only ratios matter: weights x 2 give the same total.
    _, _, _, total2, _ = scan(c, weights=(60, 40, 40, 40, 20))
    assert total2[0] == pytest.approx(0.5125)


def test_top_k_is_the_best_in_descending_order_ties_by_slot():
    # Scores 0.1 .. 0.8 over 8 nodes, and slots 5 and 6 tied at 0.8.
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.8, 0.7])
    c = _cluster(8, score=scores)
    got, _, top, total, _ = scan(c, k=3)
    assert got == 8
    assert top.tolist() == [5, 6, 7]
    assert total[0] == total[1] > total[2]


def test_fewer_feasible_than_k_leaves_minus_one():
    c = _cluster(2)
    got, _, top, _, _ = scan(c, k=4)
    assert got == 2 and top.tolist()[2:] == [-1, -1]
