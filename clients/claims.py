"""Claims: tell every scheduler, and the engine, which jobs are in flight where.

    c = reader.claim("node-17")        # one job in flight on node-17
    ...send the job...
    c.release(ok=True)                 # or ok=False when it failed

    with reader.claim(node) as c:      # released ok on normal exit,
        run_job(node)                  # as an error if the block raises

A claim is visible to every scheduler of the engine at once
(``reader.in_flight(node)``), and the tick reads the outcomes (see
`shm_engine.core.claims` for the shared words and why they stay exact).

Rules for callers:
- Release every claim exactly once; a second ``release`` raises
  `ClaimAlreadyReleased`.  ``abandon()`` closes one without an outcome,
  for a job whose fate is unknown.  A claim dropped unreleased is returned when it is
  garbage collected (counted only in ``claims_dropped``, with a
  ResourceWarning); if the process dies, the engine returns it within a
  second (counted as abandoned).
- ``release`` returns False when the claim no longer counts: its node was
  forgotten (its slot may hold another node by now; counted in
  ``stale_releases``) or the lease it was made under is gone (revoked, or
  the parent's across a fork).  No outcome is counted then.
- A process takes one lease on its first claim and holds it until it exits;
  its threads and readers share it.  When all ``[claims] max_schedulers``
  leases are held, ``claim()`` raises `SchedulerLimitReached`.  A forked
  child takes a lease of its own: claims made before the fork belong to the
  parent (releasing one in the child is stale).
- Closing the reader while claims are open keeps the claims segment mapped
  as long as they exist, so they can still be released.

Why the code looks like this: a claim + release pair is on every job's path,
so each is one call into compiled code with three or four integer arguments
(the compiled entry point itself, skipping numba's type dispatch), and a
`Claim` is a small ``__slots__`` object.
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import types

from shm_engine.core import claims as _c
from shm_engine.core.claims import ClaimsSegment
from shm_engine.core.errors import (
    ClaimAlreadyReleased,
    EngineNotRunning,
    LeaseRevoked,
    ReadContention,
    SchedulerLimitReached,
)
from shm_engine.core.segment import Segment

__all__ = ["Claim", "ClaimTable", "ClaimCounter", "NodeFeedback", "SinceTick"]

_INT = types.int64
_ADDR = types.uint64


# The compiled entry points (calling one skips the dispatcher's type
# lookup), loaded from numba's cache by the first ClaimTable, so that a
# reader that never claims does not pay for them.
_claim: Any = None
_release_ok: Any = None
_release_err: Any = None
_drop: Any = None
_in_flight: Any = None
_outcome: Any = None
_monotonic_ns = time.monotonic_ns
_new_claim = object.__new__


def _load_entry_points() -> None:
    global _claim, _release_ok, _release_err, _drop, _in_flight, _outcome
    if _outcome is not None:
        return
    _claim = _c.claim_at.compile((_ADDR, _INT, _INT))
    _release_ok = _c.release_ok_at.compile((_ADDR, _INT, _INT))
    _release_err = _c.release_err_at.compile((_ADDR, _INT, _INT, _INT))
    _drop = _c.drop_at.compile((_ADDR, _INT, _INT))
    _in_flight = _c.in_flight_at.compile((_ADDR, _INT, _INT))
    _outcome = _c.outcome_at.compile((_ADDR, _INT, _INT))


# Every table of this process, so a forked child can retire the leases it
# inherited (they are its parent's).
_TABLES: weakref.WeakSet = weakref.WeakSet()


class NodeFeedback(NamedTuple):
    """What the schedulers have told the engine about one node's current
    registration: ``in_flight`` claims open now; ``ok`` and ``err`` releases
    since it registered (modulo 2**32); ``consec`` error releases since its
    latest ok release; ``last_error_ns`` the time of its latest error release
    (``time.monotonic_ns()``), None if there was none."""

    in_flight: int
    ok: int
    err: int
    consec: int
    last_error_ns: int | None


class Claim:
    """One job in flight on one node.  Release it exactly once, with the
    outcome: ``release(ok=True)`` / ``release(ok=False)``, or use it as a
    context manager (ok on normal exit, error on an exception)."""

    __slots__ = ("node", "_table", "_at", "_slot", "_gen", "_done")

    def __init__(self, table: ClaimTable, node: str, at: int, slot: int, gen: int):
        self.node = node
        self._table = table  # keeps the mapping ``_at`` points into alive
        self._at = at
        self._slot = slot
        self._gen = gen
        self._done = False

    @property
    def released(self) -> bool:
        return self._done

    def release(self, ok: bool = True) -> bool:
        """Close the claim with its outcome.  True if it was counted; False
        if it was stale (see the module docstring).  Raises
        ClaimAlreadyReleased on a second call."""
        if self._done:
            raise ClaimAlreadyReleased(f"the claim on node {self.node!r} was already released")
        self._done = True
        if ok:
            return not _release_ok(self._at, self._slot, self._gen)
        return not _release_err(self._at, self._slot, self._gen, _monotonic_ns())

    def abandon(self) -> None:
        """Close the claim without an outcome, for a job whose fate is
        unknown (counted only in ``claims_dropped``, as a claim dropped
        unreleased is, but without a warning).  Raises
        ClaimAlreadyReleased if it was closed already."""
        if self._done:
            raise ClaimAlreadyReleased(f"the claim on node {self.node!r} was already released")
        self._done = True
        _drop(self._at, self._slot, self._gen)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.release(ok=exc_type is None)

    def __del__(self):
        if not self._done:
            self._done = True
            _drop(self._at, self._slot, self._gen)
            warnings.warn(
                f"a claim on node {self.node!r} was never released; returned it "
                "(counted in claims_dropped)",
                ResourceWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        return f"<Claim on {self.node!r} {'released' if self._done else 'open'}>"


class ClaimTable:
    """One reader's access to its engine's claims segment (mapped read-write).

    ``scores`` is the reader's mapping of the engine's scores segment;
    ``index`` the reader's ``{node: (slot, gen)}`` (read as is on the fast
    path: an entry that is out of date only sends a claim to the slow
    path); ``lookup(node) -> (slot, gen)`` resolves a node, refreshing the
    index (UnknownNode, a KeyError, if unknown); ``reindex()`` makes the next lookup re-read
    the registry.  The table maps both segments itself, so its claims stay
    releasable after the reader is closed (the mappings live as long as the
    table, which every open claim references)."""

    def __init__(
        self,
        scores: Segment,
        index: dict[str, tuple[int, int]],
        lookup: Callable[[str], tuple[int, int]],
        reindex: Callable[[], None],
    ):
        _load_entry_points()
        self.name = name = scores.name
        mine = Segment.attach(name, readonly=True, owner=scores.owner_uid)
        try:
            claims = ClaimsSegment.attach(name, readonly=False, owner=scores.owner_uid)
        except BaseException:
            mine.close()
            raise
        hs, hm, hc = scores.views.header, mine.views.header, claims.views.header
        same = (int(hs.creator_pid[0]), float(hs.created_wall[0])) == (
            int(hm.creator_pid[0]),
            float(hm.created_wall[0]),
        ) and (int(hc.creator_pid[0]), int(hc.creator_start[0])) == (
            int(hm.creator_pid[0]),
            int(hm.creator_start[0]),
        )
        if not same:
            claims.close()
            mine.close()
            raise EngineNotRunning(
                f"engine {name!r} was restarted since this reader attached; attach again"
            )
        self._scores = mine
        self._seg = claims
        self._slot_gen = mine.views.registry.slot_gen
        self._index_get = index.get
        self._lookup = lookup
        self._reindex = reindex
        self._contexts: list[np.ndarray] = []  # every context made (claims point at them)
        self._at = self._new_context()
        _TABLES.add(self)

    def _new_context(self) -> int:
        ctx = _c.make_context(self._seg.views, self._slot_gen)
        self._contexts.append(ctx)
        self._ctx = ctx
        return int(ctx.ctypes.data)

    # --------------------------------------------------------------- claims --
    def claim(self, node: str) -> Claim:
        """Open a claim on ``node`` (see `clients.reader.ScoreReader.claim`)."""
        ent = self._index_get(node)
        if ent is None or _claim(self._at, ent[0], ent[1]):
            return self._claim_slow(node)
        # Claim(self, node, self._at, *ent) without the call of __init__:
        # this is half of a claim's cost in Python.
        c = _new_claim(Claim)
        c.node = node
        c._table = self
        c._at = self._at
        c._slot, c._gen = ent
        c._done = False
        return c

    def _claim_slow(self, node: str) -> Claim:
        for _attempt in range(4):
            slot, gen = self._lookup(node)
            st = _claim(self._at, slot, gen)
            if st == _c.CLAIMED:
                return Claim(self, node, self._at, slot, gen)
            if st == _c.NOT_CURRENT:
                self._reindex()  # the node moved or went: look it up afresh
            elif st == _c.NO_LEASE:
                if self._ctx[_c.CTX_LIVE]:
                    self._retire()
                    raise LeaseRevoked(
                        f"engine {self.name!r} revoked this process's scheduler lease "
                        f"(pid {os.getpid()}): its open claims were returned; the next "
                        "claim takes a new lease"
                    )
                self._take_lease()
            else:
                raise OverflowError(
                    f"node {node!r}: 2**32 - 1 claims are open on it in this process"
                )
        raise ReadContention(
            f"node {node!r} of engine {self.name!r} is changing registration; try again"
        )

    def _take_lease(self) -> None:
        views = self._seg.views
        ident = _c.own_ident()
        lease, taken = _c.acquire_lease(views.lease_ident, ident)
        if lease < 0:
            _c.bump(views.header.leases_refused, 1)
            holders = sorted(int(p) for p in views.lease_pid if p)
            raise SchedulerLimitReached(
                f"engine {self.name!r}: all {views.layout.max_schedulers} scheduler leases "
                f"([claims] max_schedulers) are held by live processes (pids {holders[:8]}"
                f"{' ...' if len(holders) > 8 else ''}); stop one of them or raise the limit"
            )
        if taken:
            views.lease_pid[lease] = os.getpid()
            views.lease_start[lease] = ident >> 32
            views.lease_since[lease] = time.time()
            _c.bump(views.header.leases_taken, 1)
        _c.set_lease(self._ctx, views, lease, ident)

    def _retire(self) -> None:
        """Stop using the current lease (revoked, or inherited over a fork):
        claims made under it release as stale."""
        self._ctx[_c.CTX_LIVE] = 0
        self._at = self._new_context()

    # ---------------------------------------------------------------- reads --
    def in_flight(self, node: str) -> int:
        """Claims open on ``node`` now, by every scheduler."""
        for _attempt in range(4):
            slot, gen = self._lookup(node)
            n = _in_flight(self._at, slot, gen)
            if n >= 0:
                return n
            self._reindex()
        raise ReadContention(
            f"node {node!r} of engine {self.name!r} is changing registration; try again"
        )

    def feedback(self, node: str) -> NodeFeedback:
        """`NodeFeedback` of ``node``'s current registration."""
        for _attempt in range(4):
            slot, gen = self._lookup(node)
            valid, ok, err, consec, last = _outcome(self._at, slot, gen)
            n = _in_flight(self._at, slot, gen)
            if valid and n >= 0:
                return NodeFeedback(n, ok, err, consec, last or None)
            self._reindex()
        raise ReadContention(
            f"node {node!r} of engine {self.name!r} is changing registration; try again"
        )

    # ---------------------------------------------------------------- close --
    def close(self) -> None:
        """Stop using this table.  The mapping goes when the last reference
        does: open claims hold one, so they can still be released."""
        _TABLES.discard(self)


class ClaimCounter:
    """Counts claims without claiming: what `ScoreReader.pick` needs from a
    reader that never claimed.  Maps the claims segment read-only (so it
    takes no lease and cannot write) and checks that it belongs to the same
    engine run as ``scores``.  ``at`` is the context address `in_flight_at`
    reads through.  Raises EngineNotRunning if the engine has no claims
    segment or it belongs to another run."""

    def __init__(self, scores: Segment):
        _load_entry_points()
        name = scores.name
        claims = ClaimsSegment.attach(name, readonly=True, owner=scores.owner_uid)
        hs, hc = scores.views.header, claims.views.header
        if (int(hs.creator_pid[0]), int(hs.creator_start[0])) != (
            int(hc.creator_pid[0]),
            int(hc.creator_start[0]),
        ):
            claims.close()
            raise EngineNotRunning(f"engine {name!r}: its claims segment belongs to another run")
        self._seg = claims
        self._ctx = _c.make_context(claims.views, scores.views.registry.slot_gen)
        self.at = int(self._ctx.ctypes.data)

    def close(self) -> None:
        self.at = 0
        self._seg.close()


class SinceTick:
    """Per slot, the claims made since the tick of one score buffer and still
    open: live in-flight count of the buffer's registration (``gen``) minus
    the ``rif`` that tick published, floored at 0.  Duck-types the
    ``claims`` argument of `clients.pick.pick` (``item(slot)``), so only the
    drawn candidates are counted: each ``item`` is one compiled call over
    the leases in use."""

    __slots__ = ("at", "gen", "rif")

    def __init__(self, at: int, gen, rif):
        self.at, self.gen, self.rif = at, gen, rif

    def item(self, slot: int) -> float:
        n = _in_flight(self.at, slot, self.gen[slot])
        if n <= 0:  # none open, or the slot changed hands
            return 0.0
        c = n - self.rif[slot]
        return c if c > 0.0 else 0.0


def _after_fork_in_child() -> None:
    for table in list(_TABLES):
        table._retire()


os.register_at_fork(after_in_child=_after_fork_in_child)
