"""Compiled whole-batch checks for the ingest (`Ingest._slots_of`).

Why a kernel: checking a batch's remembered slots against the registry took
half a dozen numpy gathers and comparisons over the batch (each allocating
a temporary); one pass in compiled code costs a microsecond or two per
thousand records.  Pure function over arrays: it only reads its inputs.
"""

from __future__ import annotations

from numba import njit

from shm_engine.wire.format import NODE_WORDS, ZONE_WORDS

STALE = -1  # some slot does not hold that record's node: look the ids up again
AGED = 1  # some node is already due to be forgotten: re-register it
META = 2  # some node's zone differs, or it has labels: compare them in full

_NODE_WORD, _NODE_N = NODE_WORDS.start, NODE_WORDS.stop - NODE_WORDS.start
_ZONE_WORD, _ZONE_N = ZONE_WORDS.start, ZONE_WORDS.stop - ZONE_WORDS.start


@njit(cache=True, nogil=True)
def check_slots(
    slots,
    rec_words,
    reg_node_words,
    registered,
    labels_len,
    reg_zone_words,
    recv_time,
    now,
    forget_after_s,
):
    """Whether record j's node is registered in ``slots[j]``, for every j.

    ``rec_words``: the records as uint64 (n, 24) words (`wire.format.RECORD_DTYPE`);
    ``reg_node_words`` (capacity, 8) and ``reg_zone_words`` (capacity, 4):
    the registry's padded id and zone columns as uint64 words; ``registered``,
    ``labels_len`` and ``recv_time``: the registry's and table's columns.

    Returns `STALE` when some slot is out of range, unregistered or holds
    another id (ids are unique among registered slots, so equal words mean
    this node); otherwise a bit set: `AGED` when some node's age
    ``now - recv_time`` is >= ``forget_after_s``, `META` when some record's
    zone differs from its slot's or its slot has labels.  0: write the rows."""
    capacity = registered.shape[0]
    status = 0
    for j in range(slots.shape[0]):
        s = slots[j]
        if s < 0 or s >= capacity or registered[s] == 0:
            return STALE
        for k in range(_NODE_N):
            if reg_node_words[s, k] != rec_words[j, _NODE_WORD + k]:
                return STALE
        if now - recv_time[s] >= forget_after_s:
            status |= AGED
        if labels_len[s] != 0:
            status |= META
        for k in range(_ZONE_N):
            if reg_zone_words[s, k] != rec_words[j, _ZONE_WORD + k]:
                status |= META
    return status
