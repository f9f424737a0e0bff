"""Choosing one node from a published tick without herding.

Why not the top-ranked node?  Every scheduler reads the same scores, and the
scores move only as fast as the evidence behind them (heartbeats about once a
second, claims once a tick), while jobs arrive continuously.  Sending every
job to ``ranked[0]`` piles a burst of work onto one node before its score can
react: the classic herd on stale load information (Mitzenmacher, "How useful
is old information?", 2000).  The routing simulator (``python -m benchmarks
sim``, docs/routing.md) measures this: argmax on desirability has the worst
tail of the score-based policies.

What `pick` does instead is the power of d choices on desirability: draw ``d``
distinct candidates uniformly among the ranked nodes (score > 0) and keep the
one with the highest score.  Uniform draws spread load the way random routing
does, so staleness cannot concentrate it; keeping the best of the draw still
steers jobs away from poor nodes, and nodes with score 0 (dead, tripped,
ejected, overloaded, quarantined) are never candidates.  The larger d, the
greedier the pick and the stronger the herd on stale scores; the claims
discount below is what makes d = 4 (the default, ``DEFAULT_D``) safe: in the
simulator, 4 schedulers, 8 scenarios x 5 seeds, d = 4 with the discount had
a lower worst-seed p99 than d = 3 with or without it in every scenario, and
without the discount d = 3 did better than with it (docs/routing.md).

Claims since the tick.  A published score describes a node as the tick saw
it, including the jobs claimed on it until then (SCORING.md's ``rif``).  Jobs
claimed after that tick are invisible to it until the next one, so a node
that looked best keeps looking best while it is being filled.  When the
caller passes ``claims`` (per slot: jobs claimed on the slot since the tick
that produced ``scores`` and not yet released, by every scheduler that shares
the claims) and ``slots`` (the node's worker count), each candidate competes
with

    effective = score / (1 + claims / slots)

A claim takes one of the node's ``slots`` workers for about a job's time, so
``claims / slots`` is the share of the node taken since the score was
computed; a node that received as many new jobs as it has workers counts at
half its score, one that received none is unchanged.  The discount never
reaches 0 (a node is not excluded for being popular: that is the breaker's
job) and needs no job-time estimate.  It only reorders the ``d`` drawn
candidates, so it costs O(d) and cannot concentrate load.  At the next tick
the claims are in ``rif`` and the counts start again from 0.

Cost.  O(d) reads of ``scores``, ``claims`` and ``slots`` and one draw of
uniforms from ``rng`` per pick, whatever the number of nodes (a ranking of
10,000 nodes costs the same as one of 10); ``exclude`` is rejected while
drawing, not by filtering the ranking.  The one O(n) case is ``ranked=None``,
which derives the candidates from the scores.

Contract
    ``pick`` is a pure function: it reads its arrays and draws from ``rng``;
    it never writes its inputs and keeps no state.  It returns a slot
    (``int``), or ``-1`` when no node qualifies (nothing ranked, or every
    ranked node excluded); the caller decides what to do then (wait for the
    next tick, or fall back).  It does not raise on an empty ranking: a hot
    path returns status.  Bad arguments (``d < 1``, ``claims`` without
    indexable values) raise ``ValueError`` / ``TypeError``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pick", "DEFAULT_D"]

DEFAULT_D = 4  # candidates per pick; ScoreReader.pick should use the same default


def pick(
    scores: np.ndarray,
    ranked: np.ndarray | None,
    n_ranked: int,
    rng: np.random.Generator,
    exclude=None,
    *,
    d: int = DEFAULT_D,
    claims: np.ndarray | None = None,
    slots: np.ndarray | None = None,
) -> int:
    """Power-of-``d``-choices pick among the ranked nodes; a slot or -1.

    scores    per-slot published desirability (float, >= 0; 0 = not eligible).
    ranked    slots by rank, best first (``TickOutputs.ranked`` /
              ``Snapshot.ranked``); only ``ranked[:n_ranked]`` is read.  None:
              the candidates are the slots with ``scores > 0``, in slot order.
    n_ranked  number of valid entries in ``ranked`` (ignored when None).
    rng       a ``numpy.random.Generator``; seed it for reproducible picks.
    exclude   optional iterable of slots never to return (e.g. nodes this
              job already tried).
    d         candidates drawn per pick (>= 1).  1 is uniform random over the
              ranked nodes; large d approaches argmax and herds.
    claims    optional per-slot count of jobs claimed since the tick that
              produced ``scores`` and still open (>= 0): an array, or any
              object whose ``item(slot)`` gives it (read for the candidates
              only; `clients.claims.SinceTick`).  None: no discount.
    slots     optional per-slot worker count (values < 1 count as 1); None:
              every node has 1.  Read only with ``claims``.

    Among the drawn candidates the highest effective score wins (the score
    itself without ``claims``; see the module docstring); equal values go to
    the one earlier in ``ranked`` (SCORING.md step 14 orders ties by slot).
    With fewer than ``d`` eligible candidates, the best of all of them is
    returned.
    """
    if d < 1:
        raise ValueError(f"pick: d = {d!r} must be >= 1")
    if ranked is None:
        cand = np.flatnonzero(scores > 0)
        n = cand.shape[0]
    else:
        cand = ranked
        n = min(int(n_ranked), cand.shape[0])
    if n <= 0:
        return -1
    ex = None
    if exclude is not None:
        ex = exclude if isinstance(exclude, (tuple, list, set, frozenset)) else tuple(exclude)
        if len(ex) > 8 and not isinstance(ex, (set, frozenset)):
            ex = set(ex)  # membership tests stay O(1) for long lists
        if not ex:
            ex = None
    if ex is None and n > d:
        # Floyd's algorithm: d distinct uniform positions from d uniforms.
        pos = []
        j = n - d
        for x in rng.random(d).tolist():
            j += 1
            t = int(x * j)
            pos.append(j - 1 if t in pos else t)
    elif n <= d + (len(ex) if ex else 0):
        # Small ranking: the eligible candidates, d of them at random if more.
        pos = [q for q in range(n) if ex is None or cand.item(q) not in ex]
        if len(pos) > d:
            keep = np.argsort(rng.random(len(pos)))[:d].tolist()
            pos = [pos[q] for q in keep]
    else:
        # d distinct eligible positions by rejection: fewer than n - d
        # positions are excluded, so O(d) draws are expected.
        assert ex is not None  # without exclusions n > d took the first branch
        pos = []
        seen = set()
        while len(pos) < d:
            for x in rng.random(2 * d + 2).tolist():
                q = int(x * n)
                if q in seen:
                    continue
                seen.add(q)
                if cand.item(q) not in ex:
                    pos.append(q)
                    if len(pos) == d:
                        break
    best_p = -1
    best_s = -1.0
    for q in pos:
        slot = cand.item(q)
        s = scores.item(slot)
        if claims is not None:
            c = claims.item(slot)
            if c > 0.0:
                k = slots.item(slot) if slots is not None else 1.0
                s = s / (1.0 + c / (k if k > 1.0 else 1.0))
        if s > best_s or (s == best_s and q < best_p):
            best_p, best_s = q, s
    if best_p < 0:
        return -1
    return cand.item(best_p)
