"""OMEGA's decision at one check, written once for the online search and for the offline replay.

At a check with ranks 1..c confirmed, masked top-1 questions are asked from the rank that failed at
the previous check (c+1 at the first), doubling the step while ranks pass their confirmation
threshold `tau`, until one (h) fails. The confirmed ranks count as found, h at its calibrated
probability, every other rank above c at the offline statistics' P(rank j found by now | ranks <= c
found by now), so

    expected recall@K = ( c + p_h + sum_{j > c, j != h} stat[c, t, j] ) / K,

(with h = c+1 this is c + p_{c+1} + sum_{j > c+1} stat[c, t, j]). The bracket (c, h) is bisected
only while that could change this check's decision (the estimate with every rank below h confirmed
reaches the stop level, the one with c does not), so a check that is far from stopping asks few
questions and the next one resumes at h. The search stops once the estimate reaches the calibrated
stop level `theta` (fitted per target by replaying training trajectories with this same function,
see `omega_calibrate.py`). The next check comes after a gap that shrinks as the estimate nears
`theta`, and, when the statistics alone say the level is still far, not before halfway to when they
would reach it. Checks snap to the grid the training rows were logged on, so the replay
sees exactly the states the online search checks at.

`probe` returns the calibrated probability of a masked rank: online it builds the masked features and
calls the forest; offline it reads the replay table, whose entries are computed from the logged row
the first time a replay asks for them (one function, so both paths decide alike).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from wildserve.vsearch import kernel
from wildserve.vsearch.trees import forest_raw

# the check schedule parameters (one float64 vector)
S_THETA, S_TAU, S_FIRST, S_GAP_MIN, S_GAP_MAX, S_SPAN, S_MIN_GAP, S_JUMP = range(8)
NUM_SCHEDULE = 8

# scratch slots of one OMEGA search (the policy's per-query vector)
P_NEXT, P_CONFIRMED, P_CALLS, P_CHECKS, P_ER, P_FAILED, P_FAILED_Q = range(7)
P_WIN = 8  # the sorted window at [P_WIN, P_WIN + RING)
NUM_PST = P_WIN + kernel.RING


@njit(cache=True)
def rank_bucket(rank0):
    """Ranks pooled for calibration: 1 | 2-3 | 4-7 | 8-15 | ... (0-based rank in)."""
    b = 0
    r = rank0 + 1
    while r > 1:
        r >>= 1
        b += 1
    return b


@njit(cache=True)
def calibrate(raw, rank, cal_x, cal_y, cal_off):
    """The calibrated probability of a raw forest score asked at `rank` (1-based)."""
    b = rank_bucket(rank - 1)
    lo, hi = cal_off[b], cal_off[b + 1]
    return np.interp(raw, cal_x[lo:hi], cal_y[lo:hi])


@njit(cache=True)
def probe(table, row, oargs, rank):
    """Calibrated probability of masked `rank`: table[row, rank - 1] when row >= 0 (the offline
    replay; computed from the logged row and stored when still NaN, see `fill_entry`), else
    computed from the live search state in `oargs` (masked features + forest)."""
    if row >= 0:
        p = table[row, rank - 1]
        return fill_entry(table, row, oargs, rank) if np.isnan(p) else p
    forest, cal_x, cal_y, cal_off, tr, top_d, srt, pre1, pre2, n, feats = oargs
    kernel.window_features(tr, top_d, srt, pre1, pre2, n, rank, feats)
    return calibrate(forest_raw(forest, feats), rank, cal_x, cal_y, cal_off)


@njit(cache=True)
def load_logged(table, row, col, tr, top_d, srt, pre1, pre2):
    """Load logged row `row` (hops, computations, entry distance, best distances, sorted window,
    stored from column `col` on; `omega_calibrate.logged_columns`) into a search's scratch, as the
    online check sees it. Returns the window's size."""
    tr[kernel.T_HOPS] = table[row, col]
    tr[kernel.T_NDIS] = table[row, col + 1]
    tr[kernel.T_EP] = table[row, col + 2]
    col += 3
    topn = 0
    for j in range(top_d.size):
        top_d[j] = table[row, col + j]
        if np.isfinite(top_d[j]):
            topn += 1
    tr[kernel.T_TOPN] = topn
    col += top_d.size
    n = 0
    for j in range(kernel.RING):
        if np.isfinite(table[row, col + j]):
            srt[n] = table[row, col + j]
            n += 1
    kernel.prefix_sums(srt, n, pre1, pre2)
    return n


@njit(cache=True)
def fill_entry(table, row, oargs, rank):
    """Compute, store and return the calibrated probability of masked `rank` at logged row `row`
    of the replay table (`oargs`: the model and scratch, laid out as the online probe's)."""
    forest, cal_x, cal_y, cal_off, tr, top_d, srt, pre1, pre2, _, feats = oargs
    col = table.shape[1] - 3 - top_d.size - kernel.RING
    n = load_logged(table, row, col, tr, top_d, srt, pre1, pre2)
    kernel.window_features(tr, top_d, srt, pre1, pre2, n, rank, feats)
    p = calibrate(forest_raw(forest, feats), rank, cal_x, cal_y, cal_off)
    table[row, rank - 1] = p
    return p


@njit(cache=True)
def time_bin(edges, ndis):
    b = np.searchsorted(edges, ndis, side="right") - 1
    return min(max(b, 0), edges.size - 1)


@njit(cache=True)
def estimate(c, h, q_h, k, cum, b):
    """Expected recall@k x k with ranks <= c confirmed and rank h > c failed at probability q_h: the
    statistics P(rank j found | ranks <= c found) for every other rank above c. With h = c + 1 this
    is c + p_{c+1} + sum_{j > c+1} stat[c, t, j]; ranks strictly between c and h, not yet asked,
    count at the statistics too (no closer than the bracket needs, see `decide`)."""
    if c >= k:
        return float(k)
    return c + q_h + (cum[c, b, k] - cum[c, b, c]) - (cum[c, b, h] - cum[c, b, h - 1])


@njit(cache=True)
def decide(table, row, oargs, c, h, q_h, k, ndis, tau, theta, cum, edges):
    """Confirm ranks from c on and estimate recall@k; h > c is the rank that failed at the last
    check (0: none) and q_h its probability. Returns (confirmed, failed rank, its probability,
    expected recall, calls).

    The search starts at the last failed rank (c + 1 when there is none) and doubles its step
    while ranks pass; the bracket (c, h) it ends with is bisected only while bisecting could change
    this check's decision: while the estimate with c confirmed is below the stop level but the one
    with every rank below h confirmed reaches it. A later check starts from h again."""
    calls = 0
    if c < k:
        m = h if h > c else c + 1
        step = max(m - c, 1)
        h = 0
        while True:  # c+1 (or the last failed rank), then doubling until a rank fails or k passes
            qm = probe(table, row, oargs, m)
            calls += 1
            if qm >= tau:
                c = m
                if m == k:
                    break
                step *= 2
                m = min(c + step, k)
            else:
                h = m
                q_h = qm
                break
    if c >= k:
        return k, 0, 1.0, 1.0, calls
    b = time_bin(edges, ndis)
    er = estimate(c, h, q_h, k, cum, b)
    while h - c > 1 and er < theta * k and estimate(h - 1, h, q_h, k, cum, b) >= theta * k:
        mid = (c + h) // 2
        qm = probe(table, row, oargs, mid)
        calls += 1
        if qm >= tau:
            c = mid
        else:
            h = mid
            q_h = qm
        er = estimate(c, h, q_h, k, cum, b)
    return c, h, q_h, er / k, calls


@njit(cache=True)
def next_check(ndis, er, c, k, sched, cum, edges, grid):
    """When to check next: a gap that shrinks as the estimate nears the stop level, no earlier than
    halfway to when the statistics alone reach it (a binary search over the time bins, O(log B)),
    snapped up to the logging grid."""
    theta = sched[S_THETA]
    closeness = min(max((theta - er) / sched[S_SPAN], 0.0), 1.0)
    gap = sched[S_GAP_MIN] + (sched[S_GAP_MAX] - sched[S_GAP_MIN]) * closeness
    nxt = ndis + max(sched[S_MIN_GAP], gap * ndis)
    if sched[S_JUMP] > 0.0 and c < k:
        need = theta * k - c
        lo = time_bin(edges, ndis) + 1
        hi = edges.size
        # stat sums are non-decreasing in time (enforced when fitted): first bin reaching `need`
        while lo < hi:
            mid = (lo + hi) // 2
            if cum[c, mid, k] - cum[c, mid, c] >= need:
                hi = mid
            else:
                lo = mid + 1
        t_done = edges[lo] if lo < edges.size else edges[-1]
        nxt = max(nxt, ndis + 0.5 * (t_done - ndis))
    g = np.searchsorted(grid, nxt, side="left")
    return grid[g] if g < grid.size else np.inf


@njit(cache=True)
def next_grid_point(grid, ndis):
    g = np.searchsorted(grid, ndis, side="right")
    return grid[g] if g < grid.size else np.inf


@njit(cache=True)
def omega_check(tr, top_d, ring, q, cargs, pst):
    """The online check (a `StopRule` for the kernel)."""
    forest, cal_x, cal_y, cal_off, cum, edges, grid, sched, feats, pre1, pre2 = cargs
    k = int(tr[kernel.T_K])
    ndis = tr[kernel.T_NDIS]
    if pst[P_NEXT] == 0.0:
        pst[P_NEXT] = sched[S_FIRST]
    if ndis < pst[P_NEXT]:
        return False
    if tr[kernel.T_TOPN] < k:
        pst[P_NEXT] = next_grid_point(grid, ndis)
        return False
    pst[P_CHECKS] += 1.0
    # the window is sorted afresh at each check: checks are far enough apart that most of it is new
    srt = pst[P_WIN : P_WIN + kernel.RING]
    n = kernel.window_sorted(ring, tr[kernel.T_RING], srt, pre1, pre2)
    oargs = (forest, cal_x, cal_y, cal_off, tr, top_d, srt, pre1, pre2, n, feats)
    c, h, q_h, er, calls = decide(
        cal_y.reshape(1, -1), -1, oargs, int(pst[P_CONFIRMED]), int(pst[P_FAILED]),
        pst[P_FAILED_Q], k, ndis, sched[S_TAU], sched[S_THETA], cum, edges,
    )  # fmt: skip
    pst[P_CALLS] += calls
    pst[P_CONFIRMED] = c
    pst[P_FAILED] = h
    pst[P_FAILED_Q] = q_h
    pst[P_ER] = er
    if er >= sched[S_THETA]:
        return True
    pst[P_NEXT] = next_check(ndis, er, c, k, sched, cum, edges, grid)
    return False


@njit(cache=True)
def replay(
    table, row_ndis, row_topn, starts, found_at, final_ndis, k, sched, cum, edges, grid, oargs, out
):
    """Run the online rule over logged trajectories: query i's rows are starts[i]:starts[i+1] (in
    search order) and table[row, r] the calibrated probability of masked rank r+1 at that row
    (NaN until first asked; `oargs` holds the model that fills it). out[i] = (recall@k at the stop,
    distance computations, model calls, checks)."""
    for i in range(starts.size - 1):
        c = 0
        h = 0
        q_h = 0.0
        nxt = sched[S_FIRST]
        calls = 0
        checks = 0
        stop_at = -1.0
        for r in range(starts[i], starts[i + 1]):
            nd = row_ndis[r]
            if nd < nxt:
                continue
            if row_topn[r] < k:
                nxt = next_grid_point(grid, nd)
                continue
            checks += 1
            c, h, q_h, er, n_calls = decide(
                table, r, oargs, c, h, q_h, k, nd, sched[S_TAU], sched[S_THETA], cum, edges
            )
            calls += n_calls
            if er >= sched[S_THETA]:
                stop_at = nd
                break
            nxt = next_check(nd, er, c, k, sched, cum, edges, grid)
        if stop_at < 0.0:
            stop_at = final_ndis[i]
        hits = 0
        for j in range(k):
            if found_at[i, j] <= stop_at:
                hits += 1
        out[i, 0] = hits / k
        out[i, 1] = stop_at
        out[i, 2] = calls
        out[i, 3] = checks
