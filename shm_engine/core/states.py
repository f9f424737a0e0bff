"""Node states as published (SCORING.md step 11)."""

from enum import IntEnum

from kernels import params as _p


class NodeState(IntEnum):
    """A node's published state; the values are those of SCORING.md."""

    HEALTHY = _p.HEALTHY
    DEGRADED = _p.DEGRADED
    OVERLOADED = _p.OVERLOADED
    QUARANTINED = _p.QUARANTINED
    DEAD = _p.DEAD


#: The value of a slot that holds no node (never a published node's state).
UNREGISTERED = _p.UNREGISTERED

#: Lower-case name by state value, as status, top, metrics and replay print
#: them; ``"unregistered"`` for `UNREGISTERED`.
STATE_NAMES = {int(s): s.name.lower() for s in NodeState}
STATE_NAMES[UNREGISTERED] = "unregistered"
