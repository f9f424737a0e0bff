"""The claims segment: jobs in flight and their outcomes, shared by every scheduler.

A scheduler *claims* a node before it sends the node a job and *releases*
the claim with the outcome (ok or error) when the job ends.  Every other
scheduler sees the claim at once (the in-flight count), and the tick reads,
once per tick, what it needs to score with the feedback (`gather_feedback`).
No operation takes a lock or makes a syscall: each is a handful of atomic
read-modify-writes from `shm_engine.core.ordering` on the segment that
`shm_engine.core.layout.claims_layout_for` lays out.

The words, and why they stay exact
    Every counter word is ``tag << 32 | value``: the *tag* is the number of
    the registration the value belongs to, ``(slot_gen >> 1) % 2**32`` of
    the slot at the time (`tag_of`).  A value is only ever changed by a
    compare-and-swap that expects the word's current tag, so an operation
    whose node was forgotten, and whose slot a new node took, cannot touch
    the new node's values:

    - To write a word whose tag is not its own, an operation first checks
      (acquire load, after loading the word) that the registry still holds
      its registration.  If it does, the word holds an older registration's
      value, and is replaced by ``(own tag, fresh value)``; if not, the
      operation is *stale* and writes nothing.  Once a word holds the current
      registration's tag, only operations of that registration can change it
      (every other one finds a foreign tag and a foreign registry), so
      within a registration a counter only moves forward.
    - A stale operation that checked the registry just before the slot
      changed hands can still write its own (old) tag.  Nobody reads such a
      value: readers count a word only when its tag is the registration
      they score, and the first operation of the new registration replaces
      it.  So "never touches the new node" holds without ordering the
      schedulers against the ingest.
    - Wrap-around: values are counted modulo 2**32 (the tick takes deltas
      modulo 2**32, so only > 4e9 releases of one node within one tick would
      be miscounted); tags repeat after 2**32 registrations of one slot.

    Per node slot (OUTCOMES, shared by all schedulers): ``tag | ok`` and
    ``tag | err`` (releases per outcome), and one 16-byte pair
    ``[tag | consec, last_err_ns]`` changed only by `cas_pair_u64`, so the
    run of errors since the latest ok release (across all schedulers) and
    the time of the latest error (CLOCK_MONOTONIC ns, ``time.monotonic_ns``,
    the tick's clock) change together.

    Per lease and slot (IN FLIGHT): ``tag | count`` of the lease's open
    claims.  The in-flight count of a node is the sum over the leases in use
    of the words with its tag (`in_flight_at`, and the tick's ``rif``).

Leases, and what a kill -9 can leave behind
    A process that claims takes a lease first: one ``cas_u64`` of a free
    ``lease_ident`` (0) to ``start_time % 2**32 << 32 | pid`` (its start time
    in clock ticks since boot, as in the segment owner check), so a lease is
    either free or names its holder; there is no half-taken state.  Its open
    claims live only in its own in-flight row: a claim is one CAS on its
    row (the commit point), a release one CAS on its row and then the outcome
    words.  So whichever instruction a SIGKILL lands between:

    - before a claim's CAS: nothing happened; after it: the claim is open in
      the row, where the reaper finds it;
    - between a release's row CAS and its outcome writes: the claim is
      returned, its outcome (or part of it: the ok/err count but not yet
      consec) is lost.  Nothing is ever counted twice.
    - during a lease CAS: the lease is taken whole or not at all.

    The tick worker checks the leases in use every `LEASE_CHECK_INTERVAL_S`
    (`reap_dead_leases`): a holder that is gone, a zombie, or a pid now
    owned by another process (other start time) is dead.  Its row is swapped
    to zero word by word (``exchange_u64``), the counts it held are added to
    ``abandoned_claims`` (neither ok nor error), and only then is the lease
    freed (a release CAS of its ident to 0), so a new holder always starts
    from a zero row.  A dead lease's claims are therefore returned within
    `LEASE_CHECK_INTERVAL_S` plus one tick.

Rules for callers
    - Claims and releases go through the jitted `claim_at`,
      `release_ok_at`, `release_err_at` over a *context* (`make_context`),
      which a client builds once per lease; their results are status codes
      (hot paths never raise).
    - A lease belongs to one process (one pid); its threads may share it
      (every write is atomic).  A process must not use a lease it did not
      take (a forked child takes its own: `clients.claims` sees to it), and
      the engine must see the scheduler's pid: run both in the same pid
      namespace, or every lease is taken for dead and revoked.
    - Only the tick worker reaps, and only the creator unlinks.
"""

from __future__ import annotations

import os

import numpy as np
from numba import carray, njit

from shm_engine.core.errors import EngineNotRunning, LayoutMismatch
from shm_engine.core.layout import (
    CLAIMS_LAYOUT_VERSION,
    CLAIMS_MAGIC,
    DEFAULT_MAX_RESERVATIONS,
    OUT_CONSEC,
    OUT_ERR,
    OUT_LAST_ERR,
    OUT_OK,
    OUTCOME_WORDS,
    ClaimsLayout,
    ClaimsViews,
    claims_layout_for,
    private_claims,
)
from shm_engine.core.ordering import (
    cas_pair_u64,
    cas_u64,
    exchange_u64,
    fetch_add_u64,
    load_acquire_u64,
    load_relaxed_u64,
)
from shm_engine.core.rows import address_pointer
from shm_engine.core.segment import (
    CLAIMS_FORBIDDEN,
    MappedSegment,
    check_identity,
    claims_posix_name,
    create_exclusive,
    expected_uid,
    map_existing,
    process_stat,
    stamp_identity,
    unlink_on_error,
    unlink_shm,
)

__all__ = [
    "ClaimsSegment",
    "CLAIMED",
    "NOT_CURRENT",
    "NO_LEASE",
    "COUNT_FULL",
    "RELEASED",
    "STALE",
    "LEASE_CHECK_INTERVAL_S",
    "tag_of",
    "claim_at",
    "release_ok_at",
    "release_err_at",
    "in_flight_at",
    "outcome_at",
    "acquire_lease",
    "own_ident",
    "bump",
    "make_context",
    "set_lease",
    "drop_at",
    "lease_holder_alive",
    "reap_dead_leases",
    "gather_feedback",
    "claims_status",
    "warm_up",
    "in_flight_by_slot",
]

#: The tick worker checks the leases in use this often (claims of a dead
#: scheduler come back within this plus one tick).
LEASE_CHECK_INTERVAL_S = 0.2

# claim_at results
CLAIMED = 0  # the claim is open
NOT_CURRENT = 1  # the slot no longer holds that registration: look the node up again
NO_LEASE = 2  # the context holds no lease (or the engine revoked it)
COUNT_FULL = 3  # 2**32 - 1 claims open on one node by one lease
# release_*_at results
RELEASED = 0  # counted
STALE = 1  # the claim's registration is gone (or its lease): nothing counted

_LOW32 = np.uint64(0xFFFF_FFFF)
_HIGH32 = np.uint64(0xFFFF_FFFF_0000_0000)
_ONE = np.uint64(1)
_32 = np.uint64(32)
_ZERO = np.uint64(0)

# Context words (one uint64 array per lease and mapping; see make_context).
CTX_LIVE = 0  # 1 while the context's lease is held by this process
CTX_ROW = 1  # address of the lease's in-flight row
CTX_IDENT_AT = 2  # address of lease_ident[lease]
CTX_IDENT = 3  # the ident the lease was taken with
CTX_GENS = 4  # address of the registry's slot_gen (scores segment)
CTX_CAPACITY = 5
CTX_OUTCOMES = 6  # address of outcomes[0, 0]
CTX_IDENTS = 7  # address of lease_ident[0]
CTX_LEASES = 8  # max_schedulers
CTX_IN_FLIGHT = 9  # address of in_flight[0, 0]
CTX_ROW_WORDS = 10  # words between two leases' rows
CTX_STALE = 11  # address of the header's stale_releases
CTX_DROPPED = 12  # address of the header's claims_dropped
CTX_WORDS = 13


@njit(cache=True, inline="always")
def tag_of(gen):
    """The tag of registration generation ``gen`` (a registry ``slot_gen``)."""
    return (np.uint64(gen) >> _ONE) & _LOW32


@njit(cache=True, inline="always")
def _u64s(address, n):
    return carray(address_pointer(np.intp(address)), n, np.uint64)


# --------------------------------------------------------------------------
# Tagged read-modify-writes (the rules of the module docstring, written once)


@njit(cache=True, inline="always")
def _current(gens, slot, gen):
    # Pairs with store_release_u64 in rows.slot_change_end: an even value we
    # load is a published registration.
    return load_acquire_u64(gens, slot) == np.uint64(gen)


@njit(cache=True)
def _tagged_increment(words, i, tag, gens, slot, gen):
    """``words[i] += 1`` under ``tag``; False (nothing written) if stale."""
    w = load_acquire_u64(words, i)
    while True:
        if (w >> _32) == tag:
            new = (w & _HIGH32) | ((w + _ONE) & _LOW32)
        elif _current(gens, slot, gen):  # loaded after w: w is older than us
            new = (tag << _32) | _ONE
        else:
            return False
        old = cas_u64(words, i, w, new)  # pairs with every other CAS of the word
        if old == w:
            return True
        w = old


@njit(cache=True)
def _record_outcome(out, base, tag, gens, slot, gen, ok, now_ns):
    """Count one release at ``out[base:base + 4]``; False if stale."""
    if not _tagged_increment(out, base + (OUT_OK if ok else OUT_ERR), tag, gens, slot, gen):
        return False
    while True:
        w0 = load_acquire_u64(out, base + OUT_CONSEC)
        # Loaded after w0 (acquire): a pair update after w0 only makes it newer.
        t = load_relaxed_u64(out, base + OUT_LAST_ERR)
        if (w0 >> _32) == tag:
            consec, last = w0 & _LOW32, t
        elif _current(gens, slot, gen):
            consec, last = _ZERO, _ZERO
        else:
            return False
        if ok:
            consec = _ZERO
        else:
            if consec < _LOW32:
                consec += _ONE
            if np.uint64(now_ns) > last:
                last = np.uint64(now_ns)
        n0 = (tag << _32) | consec
        if n0 == w0 and last == t:
            return True  # an ok release with no errors to forget: no write
        # One 16-byte CAS: the run and its time change together.  A torn
        # (w0, t) read just fails and reloads.  Pairs with the gather's loads.
        if cas_pair_u64(out, base + OUT_CONSEC, w0, t, n0, last):
            return True


# --------------------------------------------------------------------------
# Hot path over a context (one call from Python each; no arrays to unbox)


def make_context(views: ClaimsViews, slot_gen: np.ndarray) -> np.ndarray:
    """A context for `claim_at` and friends over claims ``views`` and the
    registry's ``slot_gen`` column (of the engine's scores segment, mapped
    read-only is fine), holding no lease yet (``CTX_LIVE`` 0).

    The hot-path functions take the context's *address*
    (``ctx.ctypes.data``), so a call from Python unboxes no array.  The
    caller keeps ``ctx``, ``views`` and ``slot_gen`` alive while it uses the
    address (they keep the memory and the mappings alive), sets the lease
    words with `set_lease`, and clears ``ctx[CTX_LIVE]`` to retire it."""
    lay = views.layout
    if slot_gen.shape != (lay.capacity,) or slot_gen.dtype != np.uint64:
        raise LayoutMismatch(
            f"registry slot_gen {slot_gen.dtype}{slot_gen.shape} does not match "
            f"a claims segment of capacity {lay.capacity}"
        )
    ctx = np.zeros(CTX_WORDS, np.uint64)
    ctx[CTX_GENS] = slot_gen.ctypes.data
    ctx[CTX_CAPACITY] = lay.capacity
    ctx[CTX_OUTCOMES] = views.outcomes.ctypes.data
    ctx[CTX_IDENTS] = views.lease_ident.ctypes.data
    ctx[CTX_LEASES] = lay.max_schedulers
    ctx[CTX_IN_FLIGHT] = views.in_flight.ctypes.data
    ctx[CTX_ROW_WORDS] = lay.row_bytes // 8
    ctx[CTX_STALE] = views.header.stale_releases.ctypes.data
    ctx[CTX_DROPPED] = views.header.claims_dropped.ctypes.data
    return ctx


def set_lease(ctx: np.ndarray, views: ClaimsViews, lease: int, ident: int) -> None:
    """Point ``ctx`` at lease ``lease``, held by this process as ``ident``."""
    ctx[CTX_ROW] = views.in_flight[lease].ctypes.data
    ctx[CTX_IDENT_AT] = views.lease_ident.ctypes.data + 8 * lease
    ctx[CTX_IDENT] = ident
    ctx[CTX_LIVE] = 1


@njit(cache=True)
def claim_at(ctx_at, slot, gen):
    """Open one claim on ``slot``'s registration ``gen`` under the lease of
    the context at address ``ctx_at``.

    Returns CLAIMED; NOT_CURRENT if the slot does not hold registration
    ``gen`` now (the node was forgotten, or the slot is being changed);
    NO_LEASE if the context holds no lease or the engine revoked it;
    COUNT_FULL at 2**32 - 1 open claims of this lease on the node."""
    ctx = _u64s(ctx_at, CTX_WORDS)
    cap = np.intp(ctx[CTX_CAPACITY])
    if slot < 0 or slot >= cap:
        return NOT_CURRENT
    if ctx[CTX_LIVE] == _ZERO:
        return NO_LEASE
    # Pairs with cas_u64 in reap_dead_leases' free: a lease we still hold
    # has our ident.
    if load_acquire_u64(_u64s(ctx[CTX_IDENT_AT], 1), 0) != ctx[CTX_IDENT]:
        return NO_LEASE
    gens = _u64s(ctx[CTX_GENS], cap)
    if not _current(gens, slot, gen):
        return NOT_CURRENT
    row = _u64s(ctx[CTX_ROW], cap)
    tag = tag_of(gen)
    w = load_acquire_u64(row, slot)
    while True:
        if (w >> _32) == tag:
            if (w & _LOW32) == _LOW32:
                return COUNT_FULL
            new = w + _ONE
        elif _current(gens, slot, gen):
            # Our row's count belongs to an older registration of the slot:
            # those claims are stale now (their releases will say so).
            new = (tag << _32) | _ONE
        else:
            return NOT_CURRENT
        # The commit point of the claim.  Pairs with the gather's and
        # in_flight_at's loads and the reaper's exchange.
        old = cas_u64(row, slot, w, new)
        if old == w:
            return CLAIMED
        w = old


@njit(cache=True)
def _release(ctx_at, slot, gen, ok, now_ns):
    ctx = _u64s(ctx_at, CTX_WORDS)
    cap = np.intp(ctx[CTX_CAPACITY])
    if ctx[CTX_LIVE] == _ZERO or slot < 0 or slot >= cap:
        return STALE
    stale = _u64s(ctx[CTX_STALE], 1)
    tag = tag_of(gen)
    if not _return_claim(ctx, slot, tag):
        # Our row moved on to a newer registration of the slot, or the lease
        # was reaped: the claim is no longer counted anywhere.
        fetch_add_u64(stale, 0, 1)
        return STALE
    gens = _u64s(ctx[CTX_GENS], cap)
    out = _u64s(ctx[CTX_OUTCOMES], cap * OUTCOME_WORDS)
    if not _current(gens, slot, gen) or not _record_outcome(
        out, slot * OUTCOME_WORDS, tag, gens, slot, gen, ok, now_ns
    ):
        fetch_add_u64(stale, 0, 1)
        return STALE
    return RELEASED


@njit(cache=True)
def _return_claim(ctx, slot, tag):
    """Take one claim of tag ``tag`` off the lease's row; False if it is
    not there (the row moved on to a newer registration, or was reaped)."""
    cap = np.intp(ctx[CTX_CAPACITY])
    row = _u64s(ctx[CTX_ROW], cap)
    w = load_acquire_u64(row, slot)
    while True:
        if (w >> _32) != tag or (w & _LOW32) == _ZERO:
            return False
        # The claim is returned here.  Pairs with the gather's and
        # in_flight_at's loads and the reaper's exchange.
        old = cas_u64(row, slot, w, w - _ONE)
        if old == w:
            return True
        w = old


@njit(cache=True)
def drop_at(ctx_at, slot, gen):
    """Return one claim without an outcome (its owner lost it: a `Claim`
    garbage collected unreleased), counted in ``claims_dropped``; RELEASED,
    or STALE as for `release_ok_at`."""
    ctx = _u64s(ctx_at, CTX_WORDS)
    if ctx[CTX_LIVE] == _ZERO or slot < 0 or slot >= np.intp(ctx[CTX_CAPACITY]):
        return STALE
    if not _return_claim(ctx, slot, tag_of(gen)):
        return STALE
    fetch_add_u64(_u64s(ctx[CTX_DROPPED], 1), 0, 1)
    return RELEASED


@njit(cache=True)
def release_ok_at(ctx_at, slot, gen):
    """Close one claim on ``slot``'s registration ``gen`` as ok.

    Returns RELEASED, or STALE (counted in ``stale_releases``, nothing else
    touched) if that registration is gone or the claim is not open in the
    context's lease."""
    return _release(ctx_at, slot, gen, True, 0)


@njit(cache=True)
def release_err_at(ctx_at, slot, gen, now_ns):
    """`release_ok_at` with outcome error at ``now_ns`` (``time.monotonic_ns()``)."""
    return _release(ctx_at, slot, gen, False, now_ns)


@njit(cache=True)
def in_flight_at(ctx_at, slot, gen):
    """Open claims on ``slot``'s registration ``gen`` over every lease in
    use; -1 if the slot does not hold that registration.  Needs no lease."""
    ctx = _u64s(ctx_at, CTX_WORDS)
    cap = np.intp(ctx[CTX_CAPACITY])
    if slot < 0 or slot >= cap:
        return -1
    gens = _u64s(ctx[CTX_GENS], cap)
    if not _current(gens, slot, gen):
        return -1
    tag = tag_of(gen)
    n_leases = np.intp(ctx[CTX_LEASES])
    idents = _u64s(ctx[CTX_IDENTS], n_leases)
    stride = np.intp(ctx[CTX_ROW_WORDS])
    cells = _u64s(ctx[CTX_IN_FLIGHT], (n_leases - 1) * stride + cap)
    total = 0
    for k in range(n_leases):
        if load_relaxed_u64(idents, k) != _ZERO:
            w = load_relaxed_u64(cells, k * stride + slot)
            if (w >> _32) == tag:
                total += np.int64(w & _LOW32)
    return total


@njit(cache=True)
def outcome_at(ctx_at, slot, gen):
    """(valid, ok, err, consec, last_err_ns) of ``slot``'s registration
    ``gen``: releases counted modulo 2**32 since it registered, the run of
    error releases, the time of the latest error (0: none).  ``valid`` is
    False (and the rest 0) if the slot does not hold that registration."""
    ctx = _u64s(ctx_at, CTX_WORDS)
    cap = np.intp(ctx[CTX_CAPACITY])
    if slot < 0 or slot >= cap:
        return False, 0, 0, 0, 0
    gens = _u64s(ctx[CTX_GENS], cap)
    if not _current(gens, slot, gen):
        return False, 0, 0, 0, 0
    out = _u64s(ctx[CTX_OUTCOMES], cap * OUTCOME_WORDS)
    tag = tag_of(gen)
    b = slot * OUTCOME_WORDS
    ok = load_relaxed_u64(out, b + OUT_OK)
    err = load_relaxed_u64(out, b + OUT_ERR)
    w0 = load_acquire_u64(out, b + OUT_CONSEC)
    t = load_relaxed_u64(out, b + OUT_LAST_ERR)
    n_ok = np.int64(ok & _LOW32) if (ok >> _32) == tag else 0
    n_err = np.int64(err & _LOW32) if (err >> _32) == tag else 0
    if (w0 >> _32) == tag:
        return True, n_ok, n_err, np.int64(w0 & _LOW32), np.int64(t)
    return True, n_ok, n_err, 0, 0


# --------------------------------------------------------------------------
# Leases


@njit(cache=True)
def bump(counter, n):
    """``counter[0] += n`` atomically (a header counter other processes bump
    too); returns the old value."""
    return fetch_add_u64(counter, 0, n)


def own_ident() -> int:
    """This process's lease ident: ``start_time % 2**32 << 32 | pid``.

    Raises EngineNotRunning if ``/proc`` cannot tell this process's start
    time (without it a lease could not be told from a reused pid)."""
    pid = os.getpid()
    st = process_stat(pid)
    if st is None:
        raise EngineNotRunning(
            f"cannot read /proc/{pid}/stat: a scheduler lease needs this process's start time"
        )
    return ((st[0] & 0xFFFF_FFFF) << 32) | pid


@njit(cache=True)
def acquire_lease(idents, ident):
    """The lease held by ``ident``, or a free one taken for it (one CAS from
    0); (lease, taken_now).  (-1, False) when every lease is in use."""
    n = idents.shape[0]
    for k in range(n):
        if load_acquire_u64(idents, k) == np.uint64(ident):
            return k, False
    for k in range(n):
        if load_relaxed_u64(idents, k) == _ZERO:
            # Pairs with the reaper's freeing CAS (its row is zero by then).
            if cas_u64(idents, k, _ZERO, np.uint64(ident)) == _ZERO:
                return k, True
    return -1, False


def lease_holder_alive(ident: int) -> bool:
    """True while the process a lease ident names runs (not a zombie, and
    its pid not reused by a process with another start time)."""
    pid, start_low = ident & 0xFFFF_FFFF, ident >> 32
    st = process_stat(pid)
    return st is not None and st[1] not in ("Z", "X") and (st[0] & 0xFFFF_FFFF) == start_low


@njit(cache=True)
def _return_row(row, hwm):
    """Swap every nonzero word of a dead lease's row to 0; the claims it held."""
    total = 0
    for s in range(hwm):
        if load_relaxed_u64(row, s) != _ZERO:
            old = exchange_u64(row, s, _ZERO)  # pairs with the holder's CASes
            total += np.int64(old & _LOW32)
    return total


@njit(cache=True)
def _free_lease(idents, k, ident):
    # After the row is zero (acq_rel: the exchanges stay before this).
    # Pairs with acquire_lease's CAS and claim_at's ident check.
    return cas_u64(idents, k, np.uint64(ident), _ZERO) == np.uint64(ident)


def reap_dead_leases(
    views: ClaimsViews, hwm: int, now: float, alive=lease_holder_alive, before_free=None
) -> tuple[int, int, int]:
    """Return the claims of every lease whose holder is dead and free it.

    Tick worker only (one reaper at a time).  ``hwm``: 1 + the highest slot
    ever registered (claims exist only below it).  Counts the returned claims
    in ``abandoned_claims`` and the leases in ``leases_reaped``; stamps
    ``lease_check_mono`` with ``now``.  ``before_free(views, lease)``, if
    given, runs for each dead lease before it is freed (the placement's
    reservations of the lease are returned there).  Returns (leases reaped,
    claims returned, leases still in use)."""
    idents = views.lease_ident
    h = views.header
    hwm = min(int(hwm), views.layout.capacity)
    reaped = returned = in_use = 0
    for k in np.flatnonzero(idents).tolist():
        ident = int(idents[k])
        if ident == 0 or alive(ident):
            in_use += ident != 0
            continue
        n = int(_return_row(views.in_flight[k], hwm))
        h.abandoned_claims[0] += n  # before the free: a crash here recounts nothing
        views.lease_pid[k] = 0
        views.lease_start[k] = 0
        views.lease_since[k] = 0.0
        returned += n
        if before_free is not None:
            before_free(views, k)
        if _free_lease(idents, k, ident):
            reaped += 1
            h.leases_reaped[0] += 1
    h.lease_check_mono[0] = now
    return reaped, returned, in_use


# --------------------------------------------------------------------------
# The tick's view


@njit(cache=True)
def gather_feedback(
    gen,
    active,
    fresh,
    idents,
    in_flight,
    row_words,
    outcomes,
    prev_ok_seen,
    prev_err_seen,
    hwm,
    now,
    max_consecutive_errors,
    ejection_s,
    rif,
    fb_ok,
    fb_err,
    consec,
    err_age,
    pub_rif,
    pub_fb_ok,
    pub_fb_err,
    pub_consec,
    pub_err_age,
    ok_seen,
    err_seen,
):
    """Fill the feedback columns of slots ``[0, hwm)`` for this tick.

    Inputs: ``gen`` (u8), ``active`` and ``fresh`` (u1) per slot, as the
    tick's gather left them (the registration it scores, and whether it is
    new since the previous tick); the claims segment's ``idents``,
    ``in_flight`` (flat: lease k's row starts at ``k * row_words``) and
    ``outcomes``; the outcome counters the previous tick
    saw (``prev_ok_seen``, ``prev_err_seen``, u8, from the buffer it
    published); ``now``, the tick's ``time.monotonic()``.

    Outputs, twice (the tick's input columns and the buffer's published
    ones), f8 per slot: ``rif`` >= 0, claims open on the registration over
    all leases in use; ``fb_ok``, ``fb_err`` >= 0, its releases since the
    previous tick (all of them on its first tick); ``consec`` >= 0, error
    releases since its latest ok release; ``err_age`` >= 0 seconds since
    its latest error release, +inf if none.  A slot that is not active, or
    whose registration has no scheduler traffic, gets 0, 0, 0, 0, +inf.
    ``ok_seen``/``err_seen`` (u8) receive this tick's counters for the next.

    Returns (sum of rif, sum of fb_ok, sum of fb_err, ejected) over the
    slots; ``ejected`` counts the slots the breaker ejects this tick
    (``consec >= max_consecutive_errors`` and ``err_age < ejection_s``, the
    score parameters of those names)."""
    sum_rif, sum_ok, sum_err, ejected = feedback_range(
        gen,
        active,
        fresh,
        live_leases(idents),
        in_flight,
        row_words,
        outcomes.reshape(-1),
        prev_ok_seen,
        prev_err_seen,
        now,
        max_consecutive_errors,
        ejection_s,
        rif,
        fb_ok,
        fb_err,
        consec,
        err_age,
        ok_seen,
        err_seen,
        0,
        hwm,
        0.0,
    )
    for s in range(hwm):
        pub_rif[s] = rif[s]
        pub_fb_ok[s] = fb_ok[s]
        pub_fb_err[s] = fb_err[s]
        pub_consec[s] = consec[s]
        pub_err_age[s] = err_age[s]
    return sum_rif, sum_ok, sum_err, ejected


@njit(cache=True, nogil=True)
def live_leases(idents):
    """The indices of the leases in use (ident != 0), in lease order."""
    n_leases = idents.shape[0]
    live = np.empty(n_leases, np.intp)
    m = 0
    for k in range(n_leases):
        if load_acquire_u64(idents, k) != _ZERO:
            live[m] = k
            m += 1
    return live[:m]


@njit(cache=True, nogil=True)
def feedback_range(
    gen,
    active,
    fresh,
    leases,
    in_flight,
    row_words,
    out_words,
    prev_ok_seen,
    prev_err_seen,
    now,
    max_consecutive_errors,
    ejection_s,
    rif,
    fb_ok,
    fb_err,
    consec,
    err_age,
    ok_seen,
    err_seen,
    lo,
    hi,
    sum_rif,
):
    """`gather_feedback` for slots ``[lo, hi)`` into one set of columns:
    ``leases`` from `live_leases`, ``out_words`` the outcomes flat (slot s's
    row at ``s * OUTCOME_WORDS``), ``sum_rif`` the sum of rif over the slots
    before ``lo`` (added to in slot order).  Returns (sum of rif through
    ``hi``, ok releases, error releases, ejected) of the range.  The tick
    worker calls it over every slot, or once per range of slots on its
    threads (`shm_engine.tick.epoch`)."""
    inf = np.inf
    n_live = leases.shape[0]
    sum_ok = 0
    sum_err = 0
    ejected = 0
    for s in range(lo, hi):
        if active[s] == 0:
            rif[s] = fb_ok[s] = fb_err[s] = consec[s] = 0.0
            err_age[s] = inf
            ok_seen[s] = err_seen[s] = _ZERO
            continue
        tag = tag_of(gen[s])
        r = 0.0
        for j in range(n_live):
            w = load_relaxed_u64(in_flight, leases[j] * row_words + s)
            if w != _ZERO and (w >> _32) == tag:
                r += np.float64(w & _LOW32)
        rif[s] = r
        row = s * OUTCOME_WORDS
        base_ok = _ZERO if fresh[s] else prev_ok_seen[s]
        base_err = _ZERO if fresh[s] else prev_err_seen[s]
        w = load_relaxed_u64(out_words, row + OUT_OK)
        if (w >> _32) == tag:
            d_ok = ((w & _LOW32) - base_ok) & _LOW32
            ok_seen[s] = w & _LOW32
        else:  # no release yet, or the slot already moved on: nothing new
            d_ok = _ZERO
            ok_seen[s] = base_ok
        w = load_relaxed_u64(out_words, row + OUT_ERR)
        if (w >> _32) == tag:
            d_err = ((w & _LOW32) - base_err) & _LOW32
            err_seen[s] = w & _LOW32
        else:
            d_err = _ZERO
            err_seen[s] = base_err
        fb_ok[s] = np.float64(d_ok)
        fb_err[s] = np.float64(d_err)
        sum_ok += np.int64(d_ok)
        sum_err += np.int64(d_err)
        # The pair was written whole by cas_pair_u64; a time loaded after
        # a word of our tag (acquire) is our registration's, maybe newer.
        w0 = load_acquire_u64(out_words, row + OUT_CONSEC)
        t = load_relaxed_u64(out_words, row + OUT_LAST_ERR)
        if (w0 >> _32) == tag:
            c = np.float64(w0 & _LOW32)
            age = max(now - np.float64(t) * 1e-9, 0.0) if t != _ZERO else inf
        else:
            c = 0.0
            age = inf
        consec[s] = c
        err_age[s] = age
        sum_rif += r
        if c >= max_consecutive_errors and age < ejection_s:
            ejected += 1
    return sum_rif, sum_ok, sum_err, ejected


def warm_up() -> None:
    """Compile (or load from numba's cache) what the tick worker runs on a
    claims segment: the feedback gather and the reaper."""
    v = private_claims(2, 2)
    u1, u8 = np.zeros(2, np.uint8), np.zeros(2, np.uint64)
    f8 = [np.zeros(2) for _ in range(10)]
    # numba types a dispatcher call through a ParamSpec, which mypy cannot match
    # against star-arguments followed by more positional ones.
    gather_feedback(
        u8,
        u1,
        u1,
        v.lease_ident,
        v.in_flight_flat,
        v.row_words,  # type: ignore[call-arg]
        v.outcomes,
        u8,
        u8,
        2,
        0.0,
        5.0,
        5.0,
        *f8,
        u8.copy(),
        u8.copy(),
    )
    _return_row(v.in_flight[0], 2)
    _free_lease(v.lease_ident, 0, 1)


def in_flight_by_slot(
    views: ClaimsViews, slot_gen: np.ndarray, registered: np.ndarray, hwm: int
) -> np.ndarray:
    """Claims open now per slot ``[0, hwm)`` (int64), summed with numpy over
    the leases in use, for monitoring (a read-only mapping is fine)."""
    hwm = min(int(hwm), views.layout.capacity)
    tags = (slot_gen[:hwm] >> _ONE) & _LOW32
    live = registered[:hwm] != 0
    out = np.zeros(hwm, np.int64)
    for k in np.flatnonzero(views.lease_ident).tolist():
        row = views.in_flight[k, :hwm].copy()
        match = ((row >> _32) == tags) & live
        out[match] += (row[match] & _LOW32).astype(np.int64)
    return out


def claims_status(
    views: ClaimsViews, slot_gen: np.ndarray, registered: np.ndarray, hwm: int
) -> dict:
    """The claims part of ``status``: leases, claims in flight now, and the
    counters (a read-only mapping is fine)."""
    h = views.header
    in_use = np.flatnonzero(views.lease_ident).tolist()
    return {
        "in_flight": int(in_flight_by_slot(views, slot_gen, registered, hwm).sum()),
        "released_ok": int(h.released_ok[0]),
        "released_err": int(h.released_err[0]),
        "abandoned": int(h.abandoned_claims[0]),
        "stale_releases": int(h.stale_releases[0]),
        "dropped": int(h.claims_dropped[0]),
        "leases": {
            "in_use": len(in_use),
            "max": views.layout.max_schedulers,
            "pids": [int(views.lease_pid[k]) for k in in_use],
            "taken": int(h.leases_taken[0]),
            "refused": int(h.leases_refused[0]),
            "reaped": int(h.leases_reaped[0]),
        },
    }


# --------------------------------------------------------------------------
# The segment


class ClaimsSegment(MappedSegment):
    """A mapped claims segment ``/NAME.claims`` and its views (``.views``).

    Lifetime as for the scores segment (`shm_engine.core.segment`): the
    supervisor creates it (O_CREAT|O_EXCL, a stale one of a dead creator
    reclaimed) and unlinks it; everyone else attaches and closes.
    Schedulers attach read-write: claiming is writing."""

    views: ClaimsViews

    def __init__(
        self, name: str, mm, layout: ClaimsLayout, readonly: bool, owner_uid: int | None = None
    ):
        super().__init__(name, claims_posix_name(name), mm, readonly, owner_uid)
        self.layout = layout
        self.views = ClaimsViews(mm, layout)

    @classmethod
    def create(
        cls,
        name: str,
        capacity: int,
        max_schedulers: int,
        *,
        mode: int = 0o600,
        max_reservations: int = DEFAULT_MAX_RESERVATIONS,
    ) -> ClaimsSegment:
        """Create engine ``name``'s claims segment (zeroed: no lease, no claim).

        Raises EngineAlreadyRunning if a live engine owns the name,
        UntrustedSegment if a segment that is not this user's holds it,
        ValueError for a mode others could write through (nothing created)."""
        layout = claims_layout_for(capacity, max_schedulers, max_reservations)
        pname = claims_posix_name(name)
        mm = create_exclusive(name, pname, layout.size, mode, CLAIMS_MAGIC, CLAIMS_FORBIDDEN)
        seg = cls(name, mm, layout, readonly=False)
        with unlink_on_error(seg, pname):
            h = seg.views.header
            stamp_identity(h, CLAIMS_LAYOUT_VERSION, capacity, layout.size)
            h.max_schedulers[0] = max_schedulers
            h.max_reservations[0] = max_reservations
            h.instance[0] = int.from_bytes(os.urandom(8), "little") | 1
            h.magic[0] = CLAIMS_MAGIC  # last: the segment is now valid
        return seg

    @classmethod
    def attach(
        cls, name: str, *, readonly: bool = False, owner: int | str | None = None
    ) -> ClaimsSegment:
        """Map engine ``name``'s claims segment (read-write by default).

        ``owner`` as for `shm_engine.core.segment.Segment.attach`.  Raises
        EngineNotRunning if there is none (or no permission: see ``[claims]
        shm_mode``), UntrustedSegment if it belongs to another user or every
        user may write it, LayoutMismatch if it was written by another
        layout version."""
        pname = claims_posix_name(name)
        uid = expected_uid(owner)
        mm, size = map_existing(name, pname, readonly, "claims.shm_mode", uid, CLAIMS_FORBIDDEN)
        try:
            capacity = check_identity(
                name, pname, mm, CLAIMS_MAGIC, CLAIMS_LAYOUT_VERSION, "claims"
            )
            leases, entries = (int(x) for x in np.frombuffer(mm, "<u4", 2, 48))
            layout = claims_layout_for(capacity, leases, entries)
            if layout.size != size:
                raise LayoutMismatch(
                    f"engine {name!r}: claims segment is {size} bytes, layout "
                    f"for capacity {capacity}, {leases} leases and {entries} "
                    "reservations each needs "
                    f"{layout.size}"
                )
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, layout, readonly, uid)

    @property
    def instance(self) -> int:
        """Random id of this segment's creation (a re-created one differs)."""
        return int(self.views.header.instance[0])


def unlink_claims(name: str) -> bool:
    """Unlink engine ``name``'s claims segment; False if there was none."""
    return unlink_shm(claims_posix_name(name))
