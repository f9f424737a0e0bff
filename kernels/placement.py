"""The placement kernel: filter and score every node for one job, keep the best few.

One pass over the node columns (no Python loop over nodes), pure: it reads
arrays and writes its preallocated outputs, and touches no shared memory
itself (the caller hands it views and re-checks the latch after).  The
reservation (a compare-and-swap against capacity) is not done here: the
caller tries the candidates this kernel returns (`shm_engine.core.placement`).

Filters, in order; a node is counted under the first one it fails
(``counts``, indexed by the ``C_*`` constants):

    not ready    its registration is not the one the latest tick scored (or
                 the one its constraints were compiled for), or
                 its published state is not HEALTHY/DEGRADED, or its score
                 is 0 (tripped since)
    meta         ``meta_code[s]`` != 0: the job's label, zone and taint
                 constraints, compiled per registry change by the caller
                 (1 zone, 2 selector, 3 required affinity, 4 + t: the
                 untolerated NoSchedule taint number t)
    resources    for each requested resource k in order: free =
                 alloc - reserved (of this registration) < request
    spread       the node holds ``spread`` open reservations of the job's
                 group already, or no group way is free on it

Score of a feasible node, each part in [0, 1] (docs/placement.md)::

    fit       least: mean over requested k of (free_k - req_k) / alloc_k
              most:  mean over requested k of (alloc_k - free_k + req_k) / alloc_k
              (1 when the job requests nothing)
    affinity  ``pref[s]``   (compiled by the caller: preferred terms, PreferNoSchedule)
    load      score_s * slots_s / (slots_s + open_s), open_s = reservations open now
    locality  ``local[s]``  (compiled by the caller: preferred zones, data labels)
    cost      ``cheap[s]``  (compiled by the caller: 1 - cost / max cost)
    total     sum(w_p * part_p) / sum(w_p)

The ``top_k`` best totals (ties: lower slot first) are returned in
descending order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# counts[] positions
C_NOT_READY = 0
C_ZONE = 1
C_SELECTOR = 2
C_AFFINITY = 3
C_TAINT = 4  # all taints together
C_SPREAD = 5
# 6 and 7 are not written by the kernel (clients.placer counts nodes taken by
# other schedulers during a call at 6).
C_RESOURCE0 = 8  # + k: insufficient resource k (8 resources)
C_TAINT0 = 16  # + t: untolerated taint t (up to MAX_TAINT_KINDS)
MAX_TAINT_KINDS = 48
N_COUNTS = C_TAINT0 + MAX_TAINT_KINDS
# meta_code values
M_OK, M_ZONE, M_SELECTOR, M_AFFINITY, M_TAINT0 = 0, 1, 2, 3, 4
N_PARTS = 5  # fit, affinity, load, locality, cost
_HEALTHY, _DEGRADED = 0, 1
_LOW32 = np.uint64(0xFFFF_FFFF)
_LOW16 = np.uint64(0xFFFF)
_32 = np.uint64(32)
_16 = np.uint64(16)
_ONE = np.uint64(1)


@njit(cache=True, nogil=True)
def place_scan(
    hwm,
    registered,
    slot_gen,
    pub_gen,
    state,
    score,
    slots,
    alloc,
    reserved,
    place,
    meta_code,
    meta_gen,
    pref,
    local,
    cheap,
    req,
    ghash,
    spread,
    fit_most,
    weights,
    skip,
    counts,
    top_slot,
    top_total,
    top_parts,
):
    """Filter and score slots ``[0, hwm)`` for one job; returns the number
    of feasible nodes.

    Inputs per slot: ``registered`` (u1: 0 is skipped, not counted),
    ``slot_gen`` (u8, the registry's), ``pub_gen``,
    ``state`` (u1), ``score`` (f8 in [0, 1]) of the latest published tick,
    ``slots`` (f8 >= 1), ``alloc`` and ``reserved`` (u8 [n, R]: units and
    ``tag << 32 | units`` words), ``place`` (u8 [n, 8]: open reservations
    and group ways), ``meta_code`` (u1) and ``meta_gen`` (u8: the
    registration the code was compiled for; another one is not ready),
    ``pref``/``local``/``cheap`` (f8
    in [0, 1]); ``skip`` (u1): slots already tried for this job (not
    counted, not scored).  The job: ``req`` (u8 units per resource; its
    length is R), ``ghash`` (0: no group), ``spread`` (0: no limit),
    ``fit_most`` (bool), ``weights`` (f8[5] >= 0, sum > 0).

    Outputs: ``counts`` (i8[N_COUNTS], zeroed here), ``top_slot`` (i8[k],
    -1 where fewer than k fit), ``top_total`` (f8[k]), ``top_parts``
    (f8[k, 5])."""
    k_top = top_slot.shape[0]
    n_res = req.shape[0]
    for i in range(counts.shape[0]):
        counts[i] = 0
    for i in range(k_top):
        top_slot[i] = -1
        top_total[i] = -1.0
    wsum = 0.0
    for p in range(N_PARTS):
        wsum += weights[p]
    n_req = 0
    for r in range(n_res):
        if req[r] != 0:
            n_req += 1
    feasible = 0
    filled = 0
    for s in range(hwm):
        if skip[s] or registered[s] == 0:
            continue
        g = slot_gen[s]
        st = state[s]
        sc = score[s]
        if (
            g & _ONE
            or pub_gen[s] != g
            or meta_gen[s] != g
            or (st != _HEALTHY and st != _DEGRADED)
            or not sc > 0.0
        ):
            counts[C_NOT_READY] += 1
            continue
        m = meta_code[s]
        if m != M_OK:
            if m >= M_TAINT0:
                counts[C_TAINT] += 1
                t = m - M_TAINT0
                if t < MAX_TAINT_KINDS:
                    counts[C_TAINT0 + t] += 1
            else:
                counts[m] += 1
            continue
        tag = (g >> _ONE) & _LOW32
        fits = True
        fit = 0.0
        for r in range(n_res):
            q = req[r]
            if q == 0:
                continue
            a = alloc[s, r]
            w = reserved[s, r]
            used = w & _LOW32 if (w >> _32) == tag else np.uint64(0)
            if used + q > a:
                counts[C_RESOURCE0 + r] += 1
                fits = False
                break
            af = np.float64(a)
            if fit_most:
                fit += np.float64(used + q) / af
            else:
                fit += np.float64(a - used - q) / af
        if not fits:
            continue
        if spread > 0:
            have = -1
            spare = False
            for j in range(1, place.shape[1]):
                w = place[s, j]
                if (w >> _32) == tag and (w & _LOW16) != 0:
                    if ((w >> _16) & _LOW16) == np.uint64(ghash):
                        have = np.int64(w & _LOW16)
                else:
                    spare = True
            if (have >= 0 and have >= spread) or (have < 0 and not spare):
                counts[C_SPREAD] += 1
                continue
        feasible += 1
        fit = fit / n_req if n_req else 1.0
        w0 = place[s, 0]
        n_open = np.float64(w0 & _LOW32) if (w0 >> _32) == tag else 0.0
        sl = slots[s] if slots[s] >= 1.0 else 1.0
        load = sc * sl / (sl + n_open)
        total = (
            weights[0] * fit
            + weights[1] * pref[s]
            + weights[2] * load
            + weights[3] * local[s]
            + weights[4] * cheap[s]
        ) / wsum
        if filled == k_top and total <= top_total[k_top - 1]:
            continue
        # Insert into the descending top list (ties keep the lower slot first).
        pos = filled if filled < k_top else k_top - 1
        while pos > 0 and top_total[pos - 1] < total:
            if pos < k_top:
                top_slot[pos] = top_slot[pos - 1]
                top_total[pos] = top_total[pos - 1]
                for p in range(N_PARTS):
                    top_parts[pos, p] = top_parts[pos - 1, p]
            pos -= 1
        top_slot[pos] = s
        top_total[pos] = total
        top_parts[pos, 0] = fit
        top_parts[pos, 1] = pref[s]
        top_parts[pos, 2] = load
        top_parts[pos, 3] = local[s]
        top_parts[pos, 4] = cheap[s]
        if filled < k_top:
            filled += 1
    return feasible
