"""Why a node's state changed this tick: the codes of the per-node `reason` column.

The stage that decides a transition writes its reason (`TickOutputs.reason`,
0 when the state did not change): the breaker (which test tripped,
`breaker.trip_reason`), hysteresis (a move on s, death, revival, a first
classification: `hysteresis.transition_reason`) and quarantine (entry and
release, in the pipeline's step 12).  `kernels.events` turns the column into
event-log entries, adding the two reasons no stage decides: a slot that is
forgotten (or left) and one that is registered.

Plain Python on purpose (no numba): the event reader and the CLI import it.
Codes are part of the event log's shared layout: never renumber one.
"""

NONE = 0
CPU = 1  # cpu >= max_cpu
MEM = 2  # mem >= max_mem
QUEUE = 3  # load >= max_queue
WAIT = 4  # wait >= max_wait_s
ERROR_RATE = 5  # the error window: e_err / (e_ok + e_err) >= max_error_rate
EJECTION = 6  # max_consecutive_errors in a row, the latest within ejection_s
HYSTERESIS = 7  # s crossed a threshold (band `delta` to move up)
QUARANTINE_ENTRY = 8  # flapped max_flaps times (under the cap)
QUARANTINE_RELEASE = 9  # probation completed
DEATH = 10  # L reached 0 (no heartbeat for dead_after_s)
REVIVAL = 11  # a DEAD node is live again (classified fresh)
REGISTERED = 12  # the node's first tick in its slot (classified fresh)
UNREGISTERED = 13  # the slot was freed: forgotten after forget_after_s, or the node left

#: Code -> name, as `shm-engine events` and the JSON output print it.
REASON_NAMES = (
    "none",
    "cpu",
    "mem",
    "queue",
    "wait",
    "error_rate",
    "ejection",
    "hysteresis",
    "quarantine_entry",
    "quarantine_release",
    "death",
    "revival",
    "registered",
    "unregistered",
)
N_REASONS = len(REASON_NAMES)
