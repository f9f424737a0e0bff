"""One epoch's computation as one compiled call: gather, feedback, kernels, ranking.

`compute_epoch` is what `Ticker.tick` runs between ``write_begin`` and the
per-tick scalars: the consistent heartbeat gather (`rows.gather_inputs`),
the scheduler feedback (`claims.gather_feedback`) and the score pipeline
with its ranking (`kernels.tick`), in that order, without returning to
Python between them.  Each stage keeps its own contract; this module only
chains them, so the stages stay testable alone and replay (which fills the
feedback from its trace) runs the same kernels.

Why one call: a call from Python into compiled code unboxes every array it
is handed (about a quarter microsecond each); the three stages took about
120 arrays per tick, this entry takes each column once.

Rules for the caller (`Ticker`): ``inp``'s feedback columns are the next
buffer's published ones (``rif``, ``fb_ok``, ``fb_err``, ``consec``,
``err_age`` of that buffer), so the feedback is written once, where both
the kernels and the readers find it; ``inp``, ``held_*`` and ``scratch``
are the ticker's private arrays; ``hwm`` <= capacity.

Note for development: numba's on-disk cache of `compute_epoch` is not
invalidated when only a stage, the pipeline, the gather or the feedback
gather changes; clear the cache directory after editing them.
"""

from numba import njit

from kernels.params import EJECTION_S, MAX_CONSECUTIVE_ERRORS
from kernels.pipeline import tick
from shm_engine.core.claims import gather_feedback
from shm_engine.core.rows import gather_inputs

__all__ = ["compute_epoch"]


@njit(cache=True, nogil=True)
def compute_epoch(
    params,
    table,
    slot_gen,
    registered,
    prev_state,
    prev_gen,
    prev_hb_seen,
    prev_ok_seen,
    prev_err_seen,
    nxt_state,
    out,
    nxt_gen,
    nxt_hb_seen,
    nxt_ok_seen,
    nxt_err_seen,
    inp,
    scratch,
    held_gen,
    held_version,
    held_recv,
    lease_ident,
    in_flight_flat,
    row_words,
    outcomes,
    now,
    hwm,
):
    """Gather, feedback, score and rank one epoch into the next buffer's
    columns (``nxt_*``, ``out``).  Returns (n_ranked, P, live, torn,
    sum of rif, ok releases, error releases, ejected), the values of
    `kernels.tick`, `rows.gather_inputs` and `claims.gather_feedback`."""
    torn = gather_inputs(
        slot_gen,
        registered,
        table.row_version,
        table.recv_time,
        table.cpu,
        table.mem,
        table.queue,
        table.avg_job_s,
        table.throughput,
        table.ok,
        table.err,
        table.io,
        table.p50_ms,
        table.p95_ms,
        table.slots,
        table.reported,
        prev_gen,
        prev_hb_seen,
        prev_state.state,
        inp.active,
        inp.fresh,
        inp.new_hb,
        inp.age,
        inp.cpu,
        inp.mem,
        inp.queue,
        inp.avg_job_s,
        inp.throughput,
        inp.ok,
        inp.err,
        inp.io,
        inp.p50_ms,
        inp.p95_ms,
        inp.slots,
        inp.reported,
        nxt_gen,
        nxt_hb_seen,
        now,
        1.0,
        1.0,
        hwm,
        held_gen,
        held_version,
        held_recv,
    )
    sum_rif, sum_ok, sum_err, ejected = gather_feedback(
        nxt_gen,
        inp.active,
        inp.fresh,
        lease_ident,
        in_flight_flat,
        row_words,
        outcomes,
        prev_ok_seen,
        prev_err_seen,
        hwm,
        now,
        params[MAX_CONSECUTIVE_ERRORS],
        params[EJECTION_S],
        inp.rif,
        inp.fb_ok,
        inp.fb_err,
        inp.consec,
        inp.err_age,
        inp.rif,
        inp.fb_ok,
        inp.fb_err,
        inp.consec,
        inp.err_age,
        nxt_ok_seen,
        nxt_err_seen,
    )
    m, P, live = tick(params, inp, prev_state, nxt_state, out, scratch)
    return m, P, live, torn, sum_rif, sum_ok, sum_err, ejected
