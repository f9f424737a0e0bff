"""The node registry: node id -> slot, owned by the ingest process.

Invariants:
- A node is registered by its first accepted heartbeat into the lowest free
  slot; forgetting frees the slot; a later heartbeat registers it anew (new
  generation, so the tick starts it fresh).
- Every registration change happens between `slot_change_begin` and
  `slot_change_end` (odd ``slot_gen`` meanwhile), and bumps the header's
  ``registry_epoch`` afterwards, so readers know to refresh their id maps.
- Only one process writes the registry; the replay driver uses the same
  class over a private mapping, so live and replay share the slot logic.
- Other processes read a slot's id with `read_node_id` only: it re-checks
  ``slot_gen`` around the copy, so an id is never paired with the generation
  of another registration.
"""

from __future__ import annotations

import heapq

import numpy as np

from shm_engine.core.layout import ZONE_BYTES, Registry, SegmentViews
from shm_engine.core.rows import slot_change_begin, slot_change_end


def decode_id(raw: np.ndarray) -> bytes:
    """Node id bytes from a NUL-padded u1 row."""
    return bytes(raw).split(b"\0", 1)[0]


#: Attempts of `read_node_id` on a slot that is changing: one change is a few
#: microseconds of the ingest, a Python attempt about one.
ID_READ_ATTEMPTS = 100


def read_node_id(reg: Registry, slot: int) -> tuple[int, bytes] | None:
    """``(generation, node id)`` of ``slot``, read consistently from another
    process; the id is ``b""`` for a free slot.

    None if the slot was changing on every one of ``ID_READ_ATTEMPTS``
    attempts (the ingest is mid-change, or died there): a status, try again
    after the next ``registry_epoch`` bump.  Plain loads, correct on x86-64
    (see `shm_engine.core.ordering`).
    """
    slot_gen = reg.slot_gen
    for _ in range(ID_READ_ATTEMPTS):
        # The id loads come after this one. Pairs with the store_release in
        # rows.slot_change_end: an even generation comes with its id.
        gen = int(slot_gen[slot])
        if gen & 1:
            continue
        key = decode_id(reg.node_id[slot]) if reg.registered[slot] else b""
        # The id loads come before this one. Pairs with the fence_release in
        # rows.slot_change_begin: a copy that saw a later change's store
        # sees its odd generation here.
        if int(slot_gen[slot]) == gen:
            return gen, key
    return None


class NodeRegistry:
    """Registry over the ``registry`` region and header counters of ``views``.

    Constructing it adopts whatever the segment already holds (an ingest
    restarted after a crash keeps every node), repairing slots a crashed
    writer left mid-change."""

    def __init__(self, views: SegmentViews):
        self._views = views
        self._reg = views.registry
        self._hdr = views.header
        self._table = views.table
        self.capacity = views.layout.capacity
        self._slots: dict[bytes, int] = {}
        self._free: list[int] = []
        self._pending: list[int] = []
        self._hwm = int(self._hdr.slot_hwm[0])
        self._adopt()

    def _adopt(self) -> None:
        reg, table = self._reg, self._table
        for s in np.flatnonzero(reg.slot_gen[: self._hwm] & 1):
            # A writer died during a registration change: drop the slot.
            reg.registered[s] = 0
            slot_change_end(reg.slot_gen, int(s))
        for s in np.flatnonzero(reg.meta_version[: self._hwm] & 1):
            slot_change_end(reg.meta_version, int(s))
        for s in np.flatnonzero(table.row_version[: self._hwm] & 1):
            # A writer died mid-row: the row holds fields of this node's two
            # latest heartbeats, each valid; publish it as is.
            table.row_version[s] += 1
        for slot in range(self._hwm):
            if reg.registered[slot]:
                self._slots[decode_id(reg.node_id[slot])] = slot
            else:
                self._free.append(slot)
        heapq.heapify(self._free)
        self._hdr.registered[0] = len(self._slots)

    # ------------------------------------------------------------ lookups --
    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: bytes) -> bool:
        return key in self._slots

    def get(self, key: bytes, default: int = -1) -> int:
        return self._slots.get(key, default)

    def items(self):
        return self._slots.items()

    @property
    def hwm(self) -> int:
        """1 + the highest slot ever used."""
        return self._hwm

    @property
    def pending(self) -> list[int]:
        """Slots registered with ``publish=False`` and not published yet."""
        return self._pending

    # ------------------------------------------------------------ changes --
    def register(
        self, key: bytes, zone: bytes = b"", labels: bytes | None = None, *, publish: bool = True
    ) -> int:
        """Register ``key`` in the lowest free slot; -1 when full.

        The caller has validated ``key`` (1..63 bytes of UTF-8).  With
        ``publish=False`` the slot stays "changing" (odd generation) until
        `publish_pending()`: a writer that runs concurrently with the tick
        must write the node's first row before that, or a tick could score
        the new node on the previous occupant's row."""
        if self._free:
            slot = heapq.heappop(self._free)
        elif self._hwm < self.capacity:
            slot = self._hwm
            self._hwm += 1
            self._hdr.slot_hwm[0] = self._hwm
        else:
            return -1
        reg = self._reg
        slot_change_begin(reg.slot_gen, slot)
        reg.node_id[slot] = 0
        reg.node_id[slot, : len(key)] = np.frombuffer(key, np.uint8)
        self._set_meta(slot, zone, labels)
        reg.registered[slot] = 1
        self._slots[key] = slot
        self._hdr.registered[0] = len(self._slots)
        if publish:
            slot_change_end(reg.slot_gen, slot)
            self._hdr.registry_epoch[0] += 1
        else:
            self._pending.append(slot)
        return slot

    def publish_pending(self) -> None:
        """Publish the registrations made with ``publish=False``."""
        if not self._pending:
            return
        for slot in self._pending:
            slot_change_end(self._reg.slot_gen, slot)
        self._pending.clear()
        self._hdr.registry_epoch[0] += 1

    def set_meta(self, slot: int, zone: bytes, labels: bytes | None) -> None:
        """Replace a registered slot's zone and labels (from its latest heartbeat)."""
        reg = self._reg
        zlen = len(zone)
        llen = len(labels) if labels else 0
        if (
            reg.labels_len[slot] == llen
            and not reg.zone[slot, zlen:].any()
            and bytes(reg.zone[slot, :zlen]) == zone
            and (llen == 0 or bytes(reg.labels[slot, :llen]) == labels)
        ):
            return  # unchanged: the common case, no generation bump
        # Not a new registration, so not slot_gen: the tick would start the
        # node fresh.  Readers of zone/labels check meta_version instead.
        slot_change_begin(reg.meta_version, slot)
        self._set_meta(slot, zone, labels)
        slot_change_end(reg.meta_version, slot)
        self._hdr.registry_epoch[0] += 1

    def _set_meta(self, slot: int, zone: bytes, labels: bytes | None) -> None:
        reg = self._reg
        reg.zone[slot] = 0
        if zone:
            reg.zone[slot, : min(len(zone), ZONE_BYTES - 1)] = np.frombuffer(zone, np.uint8)
        n = len(labels) if labels else 0
        reg.labels_len[slot] = n
        if labels:
            reg.labels[slot, :n] = np.frombuffer(labels, np.uint8)

    def free(self, slot: int) -> None:
        """Forget the node in ``slot``."""
        if slot in self._pending:  # registered and forgotten before publishing
            self._pending.remove(slot)
            slot_change_end(self._reg.slot_gen, slot)
        reg = self._reg
        key = decode_id(reg.node_id[slot])
        slot_change_begin(reg.slot_gen, slot)
        reg.registered[slot] = 0
        reg.node_id[slot] = 0
        reg.zone[slot] = 0
        reg.labels_len[slot] = 0
        reg.labels[slot] = 0
        slot_change_end(reg.slot_gen, slot)
        self._slots.pop(key, None)
        heapq.heappush(self._free, slot)
        self._hdr.registered[0] = len(self._slots)
        self._hdr.registry_epoch[0] += 1

    def forget_older_than(
        self, now: float, forget_after_s: float, age_mul: float = 1.0, age_div: float = 1.0
    ) -> list[int]:
        """Free every node whose age is >= ``forget_after_s``; returns the slots.

        Ages are computed as in `rows.gather_inputs`."""
        hwm = self._hwm
        if hwm == 0:
            return []
        reg, recv = self._reg.registered[:hwm], self._table.recv_time[:hwm]
        age = ((now - recv) * age_mul) / age_div
        slots = np.flatnonzero((reg != 0) & (age >= forget_after_s))
        for s in slots:
            self.free(int(s))
        return [int(s) for s in slots]


def read_node_meta(reg: Registry, slot: int, gen: int) -> tuple[bytes, bytes] | None:
    """``(zone, canonical labels JSON)`` of ``slot`` while it holds
    registration ``gen``, read consistently from another process; None if
    the slot no longer holds that registration, or was changing on every
    attempt (try again).  Zone and labels change under ``meta_version``
    (an update) or ``slot_gen`` (a registration): both are re-checked
    around the copy, as in `read_node_id`."""
    meta = reg.meta_version
    slot_gen = reg.slot_gen
    for _ in range(ID_READ_ATTEMPTS):
        m = int(meta[slot])
        if m & 1:
            continue
        if int(slot_gen[slot]) != gen:
            return None
        zone = decode_id(reg.zone[slot])
        n = min(int(reg.labels_len[slot]), reg.labels.shape[1])
        labels = bytes(reg.labels[slot, :n])
        # The copy's loads come before these (TSO); pairs with slot_change_begin.
        if int(meta[slot]) == m and int(slot_gen[slot]) == gen:
            return zone, labels
    return None
