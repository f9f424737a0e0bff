"""The pending score parameters in the scores header: how a reload reaches the tick.

The supervisor validates a reloaded configuration and writes its score
parameter vector (`Config.to_params`) into the header's ``pending_params``
with its ``config_version`` and ``config_hash``; the tick worker checks
``config_version`` once per tick and, when it moved, adopts the vector for
the tick it is computing, and publishes it in that tick's score buffer
(``params``, ``config_version``) through the latch, so every epoch says
which parameters produced it.  The same block carries the ``[scope]``
section in effect, as JSON (``scope_config``): placers follow it
(`clients.placer`) by watching ``config_version`` and re-reading the
section when it moves (`read_scope`).

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

__all__ = ["config_hash", "read_pending", "read_scope", "write_pending"]


def config_hash(data: dict) -> int:
    """A 63-bit hash of a configuration's TOML-shaped dict (canonical JSON,
    SHA-256): equal configurations hash equal across processes and runs."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def write_pending(
    header, params: np.ndarray, version: int, hash_: int, scope: dict | None = None
) -> None:
    """Publish score parameters ``params`` as configuration ``version``
    (the supervisor, the only writer), with ``scope`` (the ``[scope]``
    section as a dict; None: leave the recorded one).  Raises ValueError,
    before any store, if the section's JSON does not fit the header."""
    text = b""
    if scope is not None:
        text = json.dumps(scope, sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(text) >= header.scope_config.size:
            raise ValueError(
                f"the [scope] section is {len(text)} bytes as JSON; the header holds "
                f"{header.scope_config.size - 1} (fewer scope.neighbours)"
            )
    seq = int(header.params_seq[0])
    # Odd before the block's stores (TSO: stores stay in order); pairs with
    # the second load in read_pending and read_scope.
    header.params_seq[0] = seq + 1 if seq % 2 == 0 else seq
    header.pending_params[:] = 0.0
    header.pending_params[:N_PARAMS] = params
    if scope is not None:
        header.scope_config[:] = 0
        header.scope_config[: len(text)] = np.frombuffer(text, np.uint8)
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


def read_scope(header) -> tuple[int, dict | None] | None:
    """(version, the recorded ``[scope]`` section as a dict, None if none
    was recorded) of the block, or None if it was being written (try again
    later).  Raises nothing: a recorded text that does not parse is None."""
    s1 = int(header.params_seq[0])
    if s1 & 1:
        return None
    version = int(header.config_version[0])
    raw = bytes(header.scope_config)
    if int(header.params_seq[0]) != s1:
        return None
    raw = raw.split(b"\0", 1)[0]
    if not raw:
        return version, None
    try:
        data = json.loads(raw)
    except ValueError:
        return version, None
    return version, data if isinstance(data, dict) else None
