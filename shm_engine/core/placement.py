"""Reservations: node capacity taken by placed jobs, shared by every scheduler.

A scheduler that places a job *reserves* the job's requests on the chosen
node and *releases* them when the job ends.  The invariant this module
protects: on a node's registration, the reserved amount of a resource is
only ever raised by a compare-and-swap that checks it against the node's
latest allocatable capacity, so schedulers racing from several processes
never over-commit a node.  Like claims (`shm_engine.core.claims`, whose
rules for tags, leases and kill -9 this module follows), no operation takes
a lock or makes a syscall.

The words (claims segment, laid out by `shm_engine.core.layout`)
    RESERVED ``[slot, k]``: ``tag << 32 | units`` reserved of resource k
    (fixed point, ``[placement] resources`` scale) on the registration
    ``tag`` (`claims.tag_of`).  Raised only by `reserve` (CAS against
    ``alloc[slot, k]`` of the scores segment, loaded in the same attempt),
    lowered only by `release_entry`.  A word of an older registration is
    worth 0: the first reservation of the new one replaces it, a release of
    the old one leaves it alone.
    PLACE ``[slot, 0]``: ``tag << 32 | open reservations`` (the live load the
    placement score discounts); ``[slot, 1..8)``: group ways, ``tag << 32 |
    group_hash << 16 | count``: how many open reservations of one job group
    (``Job.group``, hashed to 16 bits, never 0) the node holds, for
    anti-affinity (``spread``).  Two groups with the same hash count as one
    (stricter, never looser); a node holding 7 other groups takes no 8th
    group with a spread limit.
    RESERVATIONS ``[lease, e]``: the entries of the lease's open
    reservations, 16 words each: ``held`` (which of the node's words the
    entry has raised: bit k for RESERVED k, `HELD_GROUP`, `HELD_OPEN`),
    ``where`` (``tag << 32 | slot``), ``deadline`` (CLOCK_MONOTONIC ns, 0:
    none), ``group`` (the hash), and the amounts in units per resource.

Who changes what
    - An entry belongs to its lease's process, which picks a free entry
      (``held == 0``) and writes it, then raises the node's words one by one,
      setting each word's bit in ``held`` right after its CAS succeeded.
    - Whoever swaps ``held`` to 0 (`release_entry`: one exchange) lowers
      exactly the words its bits name: the owner releasing, the tick worker
      returning the entries of a dead lease (`return_lease_reservations`,
      before the lease is freed) or those past their deadline
      (`expire_reservations`).  So each reservation is returned once.
    - A kill -9 between a successful CAS and the store of its bit leaves
      that one amount reserved on the registration until the node
      re-registers (a window of two instructions; the lease's other words
      are returned).  Every other point of a kill returns everything.

Rules for callers
    - `reserve` is the only way up; its result is a status (hot path).  A
      node that reports less capacity later keeps what is reserved on it
      (reserved may then exceed allocatable until releases bring it down);
      nothing new fits until then.
    - Only the tick worker expires and reaps; deadlines are monotonic ns.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shm_engine.core.claims import tag_of
from shm_engine.core.layout import (
    ENTRY_AMOUNTS,
    ENTRY_DEADLINE,
    ENTRY_GROUP,
    ENTRY_HELD,
    ENTRY_WHERE,
    GROUP_WAYS,
    N_PLACE_RESOURCES,
    PLACE_OPEN,
    ClaimsViews,
)
from shm_engine.core.ordering import (
    cas_u64,
    exchange_u64,
    load_acquire_u64,
    load_relaxed_u64,
    store_release_u64,
)

__all__ = [
    "RESERVED",
    "NOT_CURRENT",
    "NO_LEASE",
    "NO_FIT",
    "GROUP_FULL",
    "HELD_GROUP",
    "HELD_OPEN",
    "group_hash",
    "reserve",
    "release_entry",
    "return_lease_reservations",
    "expire_reservations",
    "measure_rate",
    "reserved_units",
    "open_reservations",
    "group_count",
]

# reserve() results
RESERVED = 0  # the entry holds the reservation
NOT_CURRENT = 1  # the slot no longer holds that registration
NO_LEASE = 2  # the lease is not ours (revoked)
NO_FIT = 3  # a resource no longer fits (another scheduler took it)
GROUP_FULL = 4  # the node holds `spread` of the group already (or no way is free)

HELD_GROUP = np.uint64(1 << N_PLACE_RESOURCES)
HELD_OPEN = np.uint64(1 << (N_PLACE_RESOURCES + 1))
_LOW32 = np.uint64(0xFFFF_FFFF)
_LOW16 = np.uint64(0xFFFF)
_32 = np.uint64(32)
_16 = np.uint64(16)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)


def group_hash(group: str) -> int:
    """The 16-bit hash of a job group name (never 0: 0 means "no group")."""
    import zlib

    h = zlib.crc32(group.encode("utf-8")) & 0xFFFF
    return h or 1


# --------------------------------------------------------------------------
# Words


@njit(cache=True, inline="always")
def _units(w, tag):
    """The units of word ``w`` for registration ``tag`` (0 if older)."""
    return w & _LOW32 if (w >> _32) == tag else _ZERO


@njit(cache=True)
def _raise_within(words, i, tag, gens, slot, gen, amount, cap_words, cap_i):
    """``words[i] += amount`` under ``tag`` if the result is <= the
    capacity ``cap_words[cap_i]`` (loaded in every attempt); False if it
    does not fit or the registration is gone."""
    w = load_acquire_u64(words, i)
    while True:
        if (w >> _32) == tag:
            cur = w & _LOW32
        elif load_acquire_u64(gens, slot) == np.uint64(gen):
            cur = _ZERO  # an older registration's word: worth 0 to us
        else:
            return False
        # The capacity is loaded after the word: a heartbeat that lowered it
        # before our CAS is seen, unless it lands between this load and the CAS.
        cap = load_relaxed_u64(cap_words, cap_i)
        if cap > _LOW32:
            cap = _LOW32
        if cur + amount > cap:
            return False
        new = (tag << _32) | (cur + amount)
        old = cas_u64(words, i, w, new)  # the commit point; pairs with every CAS of the word
        if old == w:
            return True
        w = old


@njit(cache=True)
def _lower(words, i, tag, amount):
    """``words[i] -= amount`` if the word still holds ``tag``."""
    w = load_acquire_u64(words, i)
    while True:
        if (w >> _32) != tag:
            return  # the node re-registered: its words start from 0 anyway
        cur = w & _LOW32
        new = (w & ~_LOW32) | (cur - amount if cur >= amount else _ZERO)
        old = cas_u64(words, i, w, new)
        if old == w:
            return
        w = old


@njit(cache=True)
def _count_up(words, i, tag, gens, slot, gen):
    w = load_acquire_u64(words, i)
    while True:
        if (w >> _32) == tag:
            if (w & _LOW32) == _LOW32:
                return False
            new = w + _ONE
        elif load_acquire_u64(gens, slot) == np.uint64(gen):
            new = (tag << _32) | _ONE
        else:
            return False
        old = cas_u64(words, i, w, new)
        if old == w:
            return True
        w = old


@njit(cache=True)
def _group_up(place, slot, tag, gens, gen, ghash, spread):
    """One more of group ``ghash`` on ``slot``, if it holds fewer than
    ``spread``; True on success."""
    while True:
        # A way of ours for the group, else a way we may take.
        mine = -1
        spare = -1
        w_mine = _ZERO
        w_spare = _ZERO
        for j in range(1, 1 + GROUP_WAYS):
            w = load_acquire_u64(place[slot], j)
            if (w >> _32) == tag and (w & _LOW16) != _ZERO:
                if ((w >> _16) & _LOW16) == np.uint64(ghash):
                    mine = j
                    w_mine = w
                    break
            elif spare < 0:
                spare = j
                w_spare = w
        if mine >= 0:
            if (w_mine & _LOW16) >= np.uint64(spread):
                return False
            if cas_u64(place[slot], mine, w_mine, w_mine + _ONE) == w_mine:
                return True
            continue
        if spare < 0 or load_acquire_u64(gens, slot) != np.uint64(gen):
            return False
        new = (tag << _32) | (np.uint64(ghash) << _16) | _ONE
        if cas_u64(place[slot], spare, w_spare, new) == w_spare:
            return True
        # Lost the way to another scheduler (maybe of our group): look again.


@njit(cache=True)
def _group_down(place, slot, tag, ghash):
    for j in range(1, 1 + GROUP_WAYS):
        w = load_acquire_u64(place[slot], j)
        while (w >> _32) == tag and ((w >> _16) & _LOW16) == np.uint64(ghash) and (w & _LOW16):
            old = cas_u64(place[slot], j, w, w - _ONE)
            if old == w:
                return
            w = old


# --------------------------------------------------------------------------
# The hot path


@njit(cache=True)
def reserve(
    entry,
    gens,
    alloc,
    reserved,
    place,
    idents,
    lease,
    ident,
    slot,
    gen,
    req,
    ghash,
    spread,
    deadline,
):
    """Reserve ``req`` (u8 units per resource) on ``slot``'s registration
    ``gen`` into ``entry`` (this lease's free entry, ``held == 0``); with
    ``spread`` > 0 also one place of group ``ghash`` (at most ``spread``
    per node).  ``deadline``: monotonic ns after which the tick worker
    returns it, 0 for none.

    Returns RESERVED, or NOT_CURRENT / NO_LEASE / NO_FIT / GROUP_FULL with
    nothing held (every word raised so far is lowered again)."""
    if load_acquire_u64(idents, lease) != np.uint64(ident):
        return NO_LEASE
    if load_acquire_u64(gens, slot) != np.uint64(gen):
        return NOT_CURRENT
    tag = tag_of(gen)
    n = req.shape[0]
    entry[ENTRY_WHERE] = (tag << _32) | np.uint64(slot)
    entry[ENTRY_DEADLINE] = np.uint64(deadline)
    entry[ENTRY_GROUP] = np.uint64(ghash)
    for k in range(N_PLACE_RESOURCES):
        entry[ENTRY_AMOUNTS + k] = req[k] if k < n else _ZERO
    held = _ZERO
    status = RESERVED
    for k in range(n):
        if req[k] == _ZERO:
            continue
        if not _raise_within(reserved[slot], k, tag, gens, slot, gen, req[k], alloc[slot], k):
            status = NO_FIT if load_acquire_u64(gens, slot) == np.uint64(gen) else NOT_CURRENT
            break
        held |= _ONE << np.uint64(k)
        # Pairs with the exchange in release_entry (a reaper of a dead lease).
        store_release_u64(entry, ENTRY_HELD, held)
    if status == RESERVED and spread > 0:
        if _group_up(place, slot, tag, gens, gen, ghash, spread):
            held |= HELD_GROUP
            store_release_u64(entry, ENTRY_HELD, held)
        else:
            status = GROUP_FULL
    if status == RESERVED:
        if _count_up(place[slot], PLACE_OPEN, tag, gens, slot, gen):
            held |= HELD_OPEN
            store_release_u64(entry, ENTRY_HELD, held)
        else:
            status = NOT_CURRENT
    if status != RESERVED:
        release_entry(entry, reserved, place)
    return status


@njit(cache=True)
def release_entry(entry, reserved, place):
    """Return what ``entry`` holds (one exchange decides who returns it);
    False if it held nothing (already returned: expired or reaped)."""
    held = exchange_u64(entry, ENTRY_HELD, _ZERO)  # pairs with reserve's stores
    if held == _ZERO:
        return False
    where = entry[ENTRY_WHERE]
    tag = where >> _32
    slot = np.intp(where & _LOW32)
    if slot >= reserved.shape[0]:
        return True
    for k in range(N_PLACE_RESOURCES):
        if held & (_ONE << np.uint64(k)):
            _lower(reserved[slot], k, tag, entry[ENTRY_AMOUNTS + k])
    if held & HELD_GROUP:
        _group_down(place, slot, tag, entry[ENTRY_GROUP])
    if held & HELD_OPEN:
        _lower(place[slot], PLACE_OPEN, tag, _ONE)
    return True


# --------------------------------------------------------------------------
# The tick worker's side


@njit(cache=True)
def _return_block(block, reserved, place, now_ns, only_expired):
    returned = 0
    for e in range(block.shape[0]):
        entry = block[e]
        if load_relaxed_u64(entry, ENTRY_HELD) == _ZERO:
            continue
        if only_expired:
            d = entry[ENTRY_DEADLINE]
            if d == _ZERO or d > np.uint64(now_ns):
                continue
        if release_entry(entry, reserved, place):
            returned += 1
    return returned


def return_lease_reservations(views: ClaimsViews, lease: int) -> int:
    """Return every reservation of ``lease`` (its holder is dead); tick
    worker only, before the lease is freed.  Returns how many."""
    n = int(_return_block(views.reservations[lease], views.reserved, views.place, 0, False))
    views.header.reservations_reaped[0] += n
    return n


def measure_rate(views: ClaimsViews, now: float) -> float:
    """Update the header's placements-per-second from the placements made
    since the previous call (tick worker only); returns it."""
    h = views.header
    made = int(h.placements[0])
    since = float(h.place_rate_mono[0])
    if since > 0.0 and now > since:
        h.place_rate[0] = max(made - int(h.placements_seen[0]), 0) / (now - since)
    h.placements_seen[0] = made
    h.place_rate_mono[0] = now
    return float(h.place_rate[0])


def expire_reservations(views: ClaimsViews, now_ns: int) -> int:
    """Return every reservation of a lease in use whose deadline is before
    ``now_ns`` (``time.monotonic_ns()``); tick worker only.  Returns how many."""
    n = 0
    for k in np.flatnonzero(views.lease_ident).tolist():
        n += int(_return_block(views.reservations[k], views.reserved, views.place, now_ns, True))
    if n:
        views.header.reservations_expired[0] += n
    return n


# --------------------------------------------------------------------------
# Reading (monitoring, tests)


def reserved_units(views: ClaimsViews, slot_gen: np.ndarray, hwm: int) -> np.ndarray:
    """Units reserved now per slot ``[0, hwm)`` and resource (u8
    [hwm, N_PLACE_RESOURCES]) on each slot's current registration."""
    hwm = min(int(hwm), views.layout.capacity)
    words = views.reserved[:hwm].copy()
    tags = ((slot_gen[:hwm] >> _ONE) & _LOW32)[:, None]
    return np.where((words >> _32) == tags, words & _LOW32, _ZERO)


def open_reservations(views: ClaimsViews, slot_gen: np.ndarray, hwm: int) -> np.ndarray:
    """Open reservations per slot ``[0, hwm)`` on its current registration."""
    hwm = min(int(hwm), views.layout.capacity)
    w = views.place[:hwm, PLACE_OPEN].copy()
    tags = (slot_gen[:hwm] >> _ONE) & _LOW32
    return np.where((w >> _32) == tags, w & _LOW32, _ZERO).astype(np.int64)


def group_count(views: ClaimsViews, slot: int, gen: int, ghash: int) -> int:
    """Open reservations of group hash ``ghash`` on ``slot``'s registration ``gen``."""
    tag = (int(gen) >> 1) & 0xFFFF_FFFF
    total = 0
    for w in views.place[slot, 1:].tolist():
        if w >> 32 == tag and (w >> 16) & 0xFFFF == ghash:
            total += w & 0xFFFF
    return total


def warm_up() -> None:
    """Compile (or load from numba's cache) what the tick worker and a
    placer run on a claims segment."""
    from shm_engine.core.layout import private_claims

    v = private_claims(2, 1, 2)
    gens = np.zeros(2, np.uint64)
    alloc = np.zeros((2, N_PLACE_RESOURCES), np.uint64)
    req = np.zeros(N_PLACE_RESOURCES, np.uint64)
    reserve(
        v.reservations[0, 0],
        gens,
        alloc,
        v.reserved,
        v.place,
        v.lease_ident,
        0,
        1,
        0,
        1,
        req,
        1,
        0,
        0,
    )
    _return_block(v.reservations[0], v.reserved, v.place, 0, False)
