"""Choosing one node from a published tick without herding.

Why not the top-ranked node?  Every scheduler reads the same scores, and the
scores move only when heartbeats arrive (about once a second per node), while
jobs arrive continuously.  Sending every job to ``ranked[0]`` piles a whole
heartbeat interval of work onto one node before its score can react: the
classic herd on stale load information (Mitzenmacher, "How useful is old
information?", 2000).  The routing simulator (``python -m benchmarks sim``,
docs/routing.md) measures this: argmax on desirability has the worst tail of
every score-based policy.

What `pick` does instead is the power of d choices on desirability: draw ``d``
distinct candidates uniformly among the ranked nodes (score > 0) and keep the
one with the highest score.  Uniform draws spread load the way random routing
does, so staleness cannot concentrate it; keeping the best of the draw still
steers jobs away from poor nodes, and nodes with score 0 (dead, tripped,
overloaded, quarantined) are never candidates.  In the simulator, d = 3 had a
lower p99 than d = 2 in 23 of 24 scenario-seeds, and 0.05-0.41x the p99 of
least-CPU routing (docs/routing.md); d = 4 failed more jobs on nodes that
fail fast and so look idle.  d = 2 is the conservative choice when many
independent schedulers share one score (more staleness, more herding).

Contract
    ``pick`` is a pure function: it reads ``scores`` / ``ranked`` and draws
    from ``rng``; it never writes its inputs and keeps no state.  It returns a
    slot (``int``), or ``-1`` when no node qualifies (nothing ranked, or every
    ranked node excluded); the caller decides what to do then (wait for the
    next tick, or fall back).  It does not raise on an empty ranking: a hot
    path returns status.  Bad arguments (``d < 1``) raise ``ValueError``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pick"]


def pick(scores: np.ndarray, ranked: np.ndarray | None, n_ranked: int,
         rng: np.random.Generator, exclude=None, *, d: int = 3) -> int:
    """Power-of-``d``-choices pick among the ranked nodes; a slot or -1.

    scores    per-slot published desirability (float, >= 0; 0 = not eligible).
    ranked    slots by rank, best first (``TickOutputs.ranked`` /
              ``Snapshot.ranked``); only ``ranked[:n_ranked]`` is read.  None:
              the candidates are the slots with ``scores > 0``, in slot order.
    n_ranked  number of valid entries in ``ranked`` (ignored when None).
    rng       a ``numpy.random.Generator``; seed it for reproducible picks.
    exclude   optional iterable of slots never to return (e.g. nodes this
              scheduler already tried for the job).
    d         candidates drawn per pick (>= 1).  1 is uniform random over the
              ranked nodes; large d approaches argmax and herds.

    Among the drawn candidates the highest score wins; equal scores go to the
    one earlier in ``ranked`` (SCORING.md step 14 orders ties by slot).
    With fewer than ``d`` candidates, the best of all of them is returned.
    """
    if d < 1:
        raise ValueError(f"pick: d = {d!r} must be >= 1")
    if ranked is None:
        cand = np.flatnonzero(scores > 0)
    else:
        cand = ranked[:max(int(n_ranked), 0)]
    if exclude is not None:
        ex = np.fromiter(exclude, dtype=np.int64)
        if ex.size:
            cand = cand[~np.isin(cand, ex)]
    n = cand.shape[0]
    if n == 0:
        return -1
    if n <= d:
        pos = range(n)
    elif d == 2:
        # Two distinct positions without rng.choice's permutation overhead.
        a = int(rng.integers(n))
        b = int(rng.integers(n - 1))
        pos = (a, b + (b >= a))
    else:
        pos = rng.choice(n, d, replace=False)
    best_p = -1
    best_s = -1.0
    for p in pos:
        s = float(scores[cand[p]])
        if s > best_s or (s == best_s and p < best_p):
            best_p, best_s = int(p), s
    return int(cand[best_p])
