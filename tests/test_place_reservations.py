"""The reservation words (`shm_engine.core.placement`) on a private claims
segment: the CAS against capacity, the rollback of a partial reservation,
tags of older registrations, groups, and who returns an entry."""

from __future__ import annotations

import numpy as np

from shm_engine.core import placement as P
from shm_engine.core.layout import ENTRY_HELD, N_PLACE_RESOURCES, private_claims

GEN = 4  # registration tag 2
TAG = GEN >> 1
IDENT = 77


def _setup(cap=(4000, 8000)):
    v = private_claims(4, 2, 16)
    v.lease_ident[0] = IDENT
    gens = np.full(4, GEN, np.uint64)
    alloc = np.zeros((4, N_PLACE_RESOURCES), np.uint64)
    alloc[:, : len(cap)] = cap
    return v, gens, alloc


def _req(*units):
    r = np.zeros(N_PLACE_RESOURCES, np.uint64)
    r[: len(units)] = units
    return r


def _reserve(v, gens, alloc, e, slot, req, ghash=0, spread=0, deadline=0, gen=GEN):
    return P.reserve(
        v.reservations[0, e], gens, alloc, v.reserved, v.place, v.lease_ident, 0,
        IDENT, slot, gen, req, ghash, spread, deadline,
    )  # fmt: skip


def units(v, slot):
    return [int(w) & 0xFFFF_FFFF if int(w) >> 32 == TAG else 0 for w in v.reserved[slot, :2]]


def test_reserve_up_to_capacity_and_not_a_unit_more():
    v, gens, alloc = _setup()
    assert _reserve(v, gens, alloc, 0, 1, _req(3000, 1000)) == P.RESERVED
    assert _reserve(v, gens, alloc, 1, 1, _req(1000, 7000)) == P.RESERVED  # exactly full
    assert units(v, 1) == [4000, 8000]
    assert _reserve(v, gens, alloc, 2, 1, _req(1, 0)) == P.NO_FIT
    assert _reserve(v, gens, alloc, 2, 1, _req(0, 1)) == P.NO_FIT
    assert units(v, 1) == [4000, 8000]
    assert int(v.reservations[0, 2, ENTRY_HELD]) == 0


def test_a_partial_reservation_is_rolled_back():
    # cpu fits (1000 of 4000), mem does not (9000 of 8000): cpu is lowered again.
    v, gens, alloc = _setup()
    assert _reserve(v, gens, alloc, 0, 0, _req(1000, 9000)) == P.NO_FIT
    assert units(v, 0) == [0, 0] and int(v.reservations[0, 0, ENTRY_HELD]) == 0


def test_words_of_an_older_registration_count_zero_and_are_left_alone():
    v, gens, alloc = _setup()
    v.reserved[2, 0] = ((TAG - 1) << 32) | 4000  # full, but of the previous node
    assert _reserve(v, gens, alloc, 0, 2, _req(1000)) == P.RESERVED
    assert int(v.reserved[2, 0]) == (TAG << 32) | 1000
    # A release of the older registration's entry does not touch the new word.
    old = v.reservations[0, 1]
    old[1] = ((TAG - 1) << 32) | 2
    old[4] = 4000
    old[0] = 1
    assert P.release_entry(old, v.reserved, v.place)
    assert int(v.reserved[2, 0]) == (TAG << 32) | 1000


def test_a_stale_registration_or_lease_reserves_nothing():
    v, gens, alloc = _setup()
    assert _reserve(v, gens, alloc, 0, 0, _req(1000), gen=GEN - 2) == P.NOT_CURRENT
    v.lease_ident[0] = IDENT + 1  # revoked and taken by another process
    assert _reserve(v, gens, alloc, 0, 0, _req(1000)) == P.NO_LEASE
    assert v.reserved.sum() == 0


def test_release_returns_once():
    v, gens, alloc = _setup()
    _reserve(v, gens, alloc, 0, 3, _req(1500, 500), ghash=9, spread=3)
    assert P.open_reservations(v, gens, 4).tolist() == [0, 0, 0, 1]
    assert P.group_count(v, 3, GEN, 9) == 1
    assert P.release_entry(v.reservations[0, 0], v.reserved, v.place) is True
    assert P.release_entry(v.reservations[0, 0], v.reserved, v.place) is False
    assert units(v, 3) == [0, 0] and P.open_reservations(v, gens, 4).sum() == 0
    assert P.group_count(v, 3, GEN, 9) == 0


def test_group_spread_and_group_ways():
    v, gens, alloc = _setup(cap=(100_000,))
    for e in range(2):
        assert _reserve(v, gens, alloc, e, 0, _req(1), ghash=5, spread=2) == P.RESERVED
    assert _reserve(v, gens, alloc, 2, 0, _req(1), ghash=5, spread=2) == P.GROUP_FULL
    assert units(v, 0)[0] == 2  # the refused one rolled its cpu back
    # On node 1, 7 groups fill the 7 ways; an 8th group finds no way, and a
    # group already there still fits up to its spread.
    for g in range(7):
        assert _reserve(v, gens, alloc, 3 + g, 1, _req(1), ghash=100 + g, spread=2) == P.RESERVED
    assert _reserve(v, gens, alloc, 10, 1, _req(1), ghash=200, spread=2) == P.GROUP_FULL
    assert _reserve(v, gens, alloc, 10, 1, _req(1), ghash=100, spread=2) == P.RESERVED
    assert P.group_count(v, 1, GEN, 100) == 2
    # Once a group's last placement is released, its way is free for another.
    for e in (3, 10):
        assert P.release_entry(v.reservations[0, e], v.reserved, v.place)
    assert _reserve(v, gens, alloc, 3, 1, _req(1), ghash=200, spread=2) == P.RESERVED


def test_dead_lease_and_deadline_returns():
    v, gens, alloc = _setup()
    _reserve(v, gens, alloc, 0, 0, _req(1000), deadline=1_000)
    _reserve(v, gens, alloc, 1, 0, _req(1000), deadline=5_000)
    _reserve(v, gens, alloc, 2, 0, _req(1000))
    assert P.expire_reservations(v, 2_000) == 1  # only the first is past its deadline
    assert units(v, 0)[0] == 2000 and int(v.header.reservations_expired[0]) == 1
    assert P.return_lease_reservations(v, 0) == 2
    assert units(v, 0)[0] == 0 and int(v.header.reservations_reaped[0]) == 2


def test_group_hash_is_16_bits_and_never_zero():
    hs = {P.group_hash(f"g{i}") for i in range(1000)}
    assert all(0 < h <= 0xFFFF for h in hs)
