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


#: Lower-case names by state value, as replay prints them.
STATE_NAMES = {int(s): s.name.lower() for s in NodeState}
STATE_NAMES[_p.UNREGISTERED] = "unregistered"
