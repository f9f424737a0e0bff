"""SnapshotView: a published tick read in place, guarded by the latch.

`ScoreReader.snapshot` copies the published columns (half a megabyte at 10K
nodes, which memory bandwidth makes tens of microseconds); a view copies
nothing: its arrays are read-only numpy views of the engine's score buffer,
so taking one costs the same at any fleet size (`ScoreReader.view`).

Validity rule (the seqcount latch's, `shm_engine.core.seqlock`, handed to
the caller).  The buffer of epoch E is rewritten when the engine begins
epoch E + 2, so a view stays valid for at least one tick interval after its
tick was published.  What was read from a view is a consistent copy of its
epoch if the view was still valid *after* the reads: read, then ask.

- ``with reader.view() as v: ...``: leaving the block checks, and raises
  `SnapshotExpired` if the buffer was rewritten meanwhile (then nothing
  computed in the block may be used: take a new view).  The block is the
  read; the check at its end is ``read_retry``.
- ``v.still_valid()``: the same check, as a status.
- ``v.copy()``: a stable `Snapshot` (the copy is checked before it is
  returned).
- Every attribute read checks first, and raises `SnapshotExpired` once the
  buffer is being rewritten: a view held past its validity fails loudly
  rather than serve another tick's values.  The arrays it hands out are
  views too: keep what must outlive the check as a copy (fancy indexing,
  ``np.array(...)``, ``float(...)``), not as a slice.

The per-tick scalars (``epoch``, ``tick_time``, ``pressure``, ...) and the
length of the ranking were copied through ``read_consistent`` when the view
was taken; a ranked slot is range-checked before it is followed (`top`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shm_engine.core.errors import SnapshotExpired
from shm_engine.core.seqlock import read_retry

if TYPE_CHECKING:
    from clients.reader import ScoreReader, Snapshot

__all__ = ["SnapshotView", "SnapshotExpired"]


class SnapshotView:
    """The tick of ``epoch`` in place (see the module docstring for the
    validity rule).  Attributes as `Snapshot`'s; arrays are indexed by slot,
    read-only, and valid only while `still_valid`.  Build with
    `ScoreReader.view`."""

    __slots__ = (
        "epoch",
        "tick_time",
        "tick_mono",
        "pressure",
        "ejected",
        "_reader",
        "_seq",
        "_buffer",
        "_columns",
        "_ranked",
        "_nodes",
    )

    def __init__(
        self,
        reader: ScoreReader,
        seq: memoryview,
        epoch: int,
        columns: tuple,
        ranked: np.ndarray,
        meta: tuple,
    ):
        self.epoch = epoch
        self.tick_time, self.tick_mono, self.pressure, self.ejected = meta
        self._reader = reader
        self._seq = seq
        self._buffer = epoch & 1
        self._columns = columns  # score raw wait qema liveness state gen, [:hwm]
        self._ranked = ranked
        self._nodes: tuple | None = None

    # ---------------------------------------------------------- validity --
    def still_valid(self) -> bool:
        """True while the engine has not begun rewriting this view's buffer:
        everything read from the view before this call is a consistent copy
        of ``epoch``.  False for ever after."""
        # Loads of the caller's reads come before this one (TSO); pairs with
        # the store in write_begin, as read_retry does for every copy.
        return not read_retry(self._seq, self.epoch)

    def check(self) -> None:
        """`still_valid`, raising `SnapshotExpired` when it is False."""
        if read_retry(self._seq, self.epoch):
            raise SnapshotExpired(
                f"the view of epoch {self.epoch} expired: the engine began "
                f"rewriting its buffer (epoch {self.epoch + 2}); what was read "
                "from it since may be torn: take a new view"
            )

    def __enter__(self) -> SnapshotView:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.check()

    # ------------------------------------------------------------ arrays --
    def _column(self, i: int) -> np.ndarray:
        self.check()
        return self._columns[i]

    @property
    def score(self) -> np.ndarray:
        return self._column(0)

    @property
    def raw(self) -> np.ndarray:
        return self._column(1)

    @property
    def wait(self) -> np.ndarray:
        return self._column(2)

    @property
    def qema(self) -> np.ndarray:
        return self._column(3)

    @property
    def liveness(self) -> np.ndarray:
        return self._column(4)

    @property
    def state(self) -> np.ndarray:
        return self._column(5)

    @property
    def ranked(self) -> np.ndarray:
        """Slots, best first (may hold garbage once expired: checked first)."""
        self.check()
        return self._ranked

    # ----------------------------------------------------- derived values --
    @property
    def nodes(self) -> tuple:
        """Node id per slot (None where no node), as `Snapshot.nodes`; made
        on first use from a checked copy of the buffer's generations."""
        if self._nodes is None:
            gen = self._columns[6].copy()
            state = self._columns[5].copy()
            self.check()  # the copies are of this epoch
            self._nodes = self._reader._nodes_for(gen, state)
        else:
            self.check()
        return self._nodes

    @property
    def weights(self) -> dict:
        """The weights in effect at ``pressure``, by kernels.WEIGHT_NAMES."""
        got = self._reader._weights_counts(self._buffer)[0]
        self.check()
        return got

    @property
    def counts(self) -> dict:
        """Nodes per state name."""
        got = self._reader._weights_counts(self._buffer)[1]
        self.check()
        return got

    def scores(self) -> dict:
        """{node: published score} for every node (a copy, checked)."""
        nodes = self.nodes
        values = self._columns[0].tolist()
        self.check()
        return {n: values[i] for i, n in enumerate(nodes) if n is not None}

    def top(self, k: int) -> list[tuple[str, float]]:
        """The best ``k`` nodes as ``(node, score)`` (a copy, checked)."""
        nodes = self.nodes
        n = len(nodes)
        slots = self._ranked[:k].tolist()
        score = self._columns[0]
        # A torn ranking may hold any slot: range-checked before it is used.
        out = [(nodes[s], float(score[s])) for s in slots if 0 <= s < n]
        self.check()
        return out

    def copy(self) -> Snapshot:
        """This tick as a stable `Snapshot` (raises `SnapshotExpired` if the
        buffer was rewritten before the copy was done)."""
        cols = [c.copy() for c in self._columns]
        ranked = self._ranked.copy()
        weights, counts = self._reader._weights_counts(self._buffer)
        self.check()
        meta = (self.tick_time, self.tick_mono, self.pressure, weights, counts, self.ejected)
        return self._reader._snapshot_of(self.epoch, cols, ranked, meta)

    def __repr__(self) -> str:
        state = "valid" if self.still_valid() else "expired"
        return f"<SnapshotView epoch={self.epoch} slots={len(self._columns[0])} {state}>"
