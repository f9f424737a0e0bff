"""The pending score parameters in the scores header: how a reload reaches the tick.

The supervisor validates a reloaded configuration and writes its score
parameter vector (`Config.to_params`) into the header's ``pending_params``
with its ``config_version`` and ``config_hash``; the tick worker checks
``config_version`` once per tick and, when it moved, adopts the vector for
the tick it is computing, and publishes it in that tick's score buffer
(``params``, ``config_version``) through the latch, so every epoch says
which parameters produced it.

Invariant: one writer (the supervisor).  The block changes between two
increments of ``params_seq`` (odd while written, a seqcount); a reader
copies it between two loads of ``params_seq`` and uses the copy only if
both loads saw the same even value.  Memory ordering: plain numpy stores
and loads, each one call into C, in program order (x86-64 TSO; see
`shm_engine.core.ordering`).  A torn read is simply retried at the next
tick (hot path: returns None, never raises).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from kernels.params import N_PARAMS

__all__ = ["config_hash", "read_pending", "write_pending"]


def config_hash(data: dict) -> int:
    """A 63-bit hash of a configuration's TOML-shaped dict (canonical JSON,
    SHA-256): equal configurations hash equal across processes and runs."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def write_pending(header, params: np.ndarray, version: int, hash_: int) -> None:
    """Publish score parameters ``params`` as configuration ``version``
    (the supervisor, the only writer)."""
    seq = int(header.params_seq[0])
    # Odd before the block's stores (TSO: stores stay in order); pairs with
    # the second load in read_pending.
    header.params_seq[0] = seq + 1 if seq % 2 == 0 else seq
    header.pending_params[:] = 0.0
    header.pending_params[:N_PARAMS] = params
    header.config_hash[0] = hash_
    header.config_version[0] = version
    # The block's stores before the even value; pairs with the first load.
    header.params_seq[0] = (seq | 1) + 1


def read_pending(header) -> tuple[int, np.ndarray] | None:
    """(version, parameter vector copy) of the pending block, or None if it
    was being written (try again later)."""
    s1 = int(header.params_seq[0])
    if s1 & 1:
        return None
    version = int(header.config_version[0])
    params = header.pending_params[:N_PARAMS].copy()
    if int(header.params_seq[0]) != s1:
        return None
    return version, params
