"""The event log's diff: which slots changed state this tick, and why.

`transitions(prev_state, nxt_state, fresh, reason, prev_gen, nxt_gen, hwm,
ev_slot, ev_gen, ev_from, ev_to, ev_reason) -> n` compares the state each
slot below ``hwm`` had after the previous tick (``prev_state``, of the
registration ``prev_gen``) with the state this tick gave it (``nxt_state``,
``nxt_gen``) and writes one row per change into the ``ev_*`` arrays (the
caller's, of at least ``2 * hwm`` rows), in slot order; returns the rows.

Rows, per slot:
  * a node that was registered and whose slot is empty now: (prev_gen,
    prev state -> UNREGISTERED, reasons.UNREGISTERED);
  * a node on its first tick (``fresh``, or the slot was empty): when the
    slot still held another node last tick, first that node's row as above;
    then (nxt_gen, UNREGISTERED -> its state, reasons.REGISTERED);
  * otherwise a change of state: (nxt_gen, prev -> next, ``reason[i]``, the
    reason the deciding stage wrote; see `kernels.reasons`).
A pure function: reads its inputs, writes only the ``ev_*`` arrays.
"""

from numba import njit

from kernels.params import UNREGISTERED
from kernels.reasons import REGISTERED
from kernels.reasons import UNREGISTERED as GONE


@njit(cache=True)
def transitions(
    prev_state,
    nxt_state,
    fresh,
    reason,
    prev_gen,
    nxt_gen,
    hwm,
    ev_slot,
    ev_gen,
    ev_from,
    ev_to,
    ev_reason,
):
    """One row per state change below ``hwm`` (module docstring); returns the count."""
    n = 0
    for i in range(hwm):
        a = prev_state[i]
        b = nxt_state[i]
        if b == UNREGISTERED:
            if a != UNREGISTERED:
                ev_slot[n] = i
                ev_gen[n] = prev_gen[i]
                ev_from[n] = a
                ev_to[n] = UNREGISTERED
                ev_reason[n] = GONE
                n += 1
            continue
        if fresh[i] != 0 or a == UNREGISTERED:
            if a != UNREGISTERED:
                ev_slot[n] = i
                ev_gen[n] = prev_gen[i]
                ev_from[n] = a
                ev_to[n] = UNREGISTERED
                ev_reason[n] = GONE
                n += 1
            ev_slot[n] = i
            ev_gen[n] = nxt_gen[i]
            ev_from[n] = UNREGISTERED
            ev_to[n] = b
            ev_reason[n] = REGISTERED
            n += 1
        elif a != b:
            ev_slot[n] = i
            ev_gen[n] = nxt_gen[i]
            ev_from[n] = a
            ev_to[n] = b
            ev_reason[n] = reason[i]
            n += 1
    return n
