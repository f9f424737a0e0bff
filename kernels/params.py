"""Index of the kernels' parameter vector, node states and "reported" bits.

The kernels take every score parameter in one float64 vector so that a tick is
a pure function of arrays.  This module is the only place that names a position
in that vector; the configuration fills it by `PARAM_NAMES` (every name is a
`[score]` key except `tick_interval_ms`, which is `[engine] tick_interval_ms`:
the error window decays per tick, so the kernel needs the tick's length).

Plain Python on purpose: importing it (or `kernels.defaults`) must not import
numba, so the configuration can use it without compiling anything.
"""

# Positions in the float64 parameter vector (SCORING.md names, `weights.x` -> W_X).
ALPHA_QUEUE = 0
MAX_CPU = 1
MAX_MEM = 2
MAX_WAIT_S = 3
MAX_TAIL_RATIO = 4
SUSPECT_AFTER_S = 5
DEAD_AFTER_S = 6
W_CPU = 7
W_MEM = 8
W_IO = 9
W_WAIT = 10
W_RATE = 11
W_SUCCESS = 12
W_TAIL = 13
K1 = 14
K2 = 15
MAX_QUEUE = 16
LIMIT_CRITICAL = 17
MIN_REQUESTS = 18
MAX_ERROR_RATE = 19
BETA = 20
T_DEGRADED = 21
T_OVERLOADED = 22
DELTA = 23
FLAP_WINDOW = 24
MAX_FLAPS = 25
MAX_QUARANTINED_FRACTION = 26
QUARANTINE_MEMORY = 27
PROBATION_TICKS = 28
MAX_BACKOFF = 29
ERROR_HALF_LIFE_S = 30
MAX_CONSECUTIVE_ERRORS = 31
EJECTION_S = 32
TICK_INTERVAL_MS = 33
N_PARAMS = 34

PARAM_NAMES = (
    "alpha_queue",
    "max_cpu",
    "max_mem",
    "max_wait_s",
    "max_tail_ratio",
    "suspect_after_s",
    "dead_after_s",
    "weights.cpu",
    "weights.mem",
    "weights.io",
    "weights.wait",
    "weights.rate",
    "weights.success",
    "weights.tail",
    "k1",
    "k2",
    "max_queue",
    "limit_critical",
    "min_requests",
    "max_error_rate",
    "beta",
    "t_degraded",
    "t_overloaded",
    "delta",
    "flap_window",
    "max_flaps",
    "max_quarantined_fraction",
    "quarantine_memory",
    "probation_ticks",
    "max_backoff",
    "error_half_life_s",
    "max_consecutive_errors",
    "ejection_s",
    "tick_interval_ms",
)
assert len(PARAM_NAMES) == N_PARAMS

# Order of the 7 weights in `weights_out` (the weights in effect for a tick).
WEIGHT_NAMES = ("cpu", "mem", "io", "wait", "rate", "success", "tail")
N_WEIGHTS = 7
assert len(WEIGHT_NAMES) == N_WEIGHTS

# Node states (SCORING.md step 11).  UNREGISTERED marks a slot with no node.
HEALTHY = 0
DEGRADED = 1
OVERLOADED = 2
QUARANTINED = 3
DEAD = 4
N_STATES = 5
UNREGISTERED = 255

# Bits of the per-node `reported` mask: which optional metrics the latest
# heartbeat carried.  The wire format uses the same bits.  The score reads
# HAS_OKERR (a new heartbeat's ok/err enter the error window), HAS_IO and
# HAS_TAIL (their terms enter core); throughput is shown, not scored.
HAS_THROUGHPUT = 1
HAS_OKERR = 2
HAS_IO = 4
HAS_TAIL = 8
