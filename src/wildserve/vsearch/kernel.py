"""The numba HNSW search every method shares: greedy descent through the upper layers, then an
ef-bounded best-first beam on layer 0 that keeps trajectory counters and asks a stopping policy.

The base layer mirrors faiss's `search_from_candidates`: a beam W of the ef closest points seen, a node
enters W only if W is not full or it beats W's farthest, nodes are expanded closest-first and the search
ends when no unexpanded node of W is left (faiss keeps W and the frontier in one MinimaxHeap; we keep a
max-heap W plus a min-heap frontier C, which expands the same nodes in the same order up to exact ties).
After an expansion the policy's `check(tr, top_d, ring, q, cargs, pst)` is called, once the distance
computations reach `pst[0]` (the policy's own "nothing to do before" count; 0: after every expansion);
it returns True to stop. `tr` holds the counters, `top_d` the sorted distances of the `track` best
points so far, `ring` the last 100 distances computed on layer 0, `q` the query, `pst` a per-query
scratch vector the policy owns.
"""

from __future__ import annotations

import numpy as np
from numba import njit

RING = 100  # the trajectory features summarise the last 100 distances computed

# Indices into the trajectory counter vector `tr`.
T_HOPS = 0  # nodes expanded, all layers
T_NDIS = 1  # distance computations, all layers
T_EP = 2  # distance of the base-layer entry point
T_RING = 3  # distances ever pushed into the ring
T_TOPN = 4  # how many entries of top_d are filled
T_WN = 5  # beam size
T_K = 6  # the K the caller asked for
T_STOPPED = 7  # 1 when the policy stopped the search early
T_QI = 8  # index of the query in its batch (lets a recording policy label its rows)
NUM_TR = 9

NUM_BASE_FEATURES = 11
BASE_FEATURE_NAMES = (
    "hops",
    "ndis",
    "entry_dist",
    "best_dist",
    "last100_mean",
    "last100_var",
    "last100_min",
    "last100_max",
    "last100_median",
    "last100_p25",
    "last100_p75",
)


@njit(inline="always", fastmath=True)
def _dist(vectors, i, q, code):
    acc = np.float32(0.0)
    if code == 0:
        for j in range(q.shape[0]):
            t = vectors[i, j] - q[j]
            acc += t * t
        return acc
    for j in range(q.shape[0]):
        acc += vectors[i, j] * q[j]
    return -acc


@njit(inline="always")
def _min_push(hd, hi, n, d, i):
    pos = n
    while pos > 0:
        parent = (pos - 1) >> 1
        if hd[parent] <= d:
            break
        hd[pos] = hd[parent]
        hi[pos] = hi[parent]
        pos = parent
    hd[pos] = d
    hi[pos] = i
    return n + 1


@njit(inline="always")
def _min_sift_down(hd, hi, n, pos):
    d = hd[pos]
    i = hi[pos]
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and hd[child + 1] < hd[child]:
            child += 1
        if hd[child] >= d:
            break
        hd[pos] = hd[child]
        hi[pos] = hi[child]
        pos = child
    hd[pos] = d
    hi[pos] = i


@njit(inline="always")
def _min_pop(hd, hi, n):
    """Remove the closest entry; the caller has read hd[0]/hi[0] first. Returns the new size."""
    n -= 1
    if n > 0:
        hd[0] = hd[n]
        hi[0] = hi[n]
        _min_sift_down(hd, hi, n, 0)
    return n


@njit(cache=True)
def _compact_frontier(cd, ci, cn, bound):
    """Drop frontier entries that can never be expanded (not closer than W's farthest) and re-heapify."""
    m = 0
    for j in range(cn):
        if cd[j] < bound:
            cd[m] = cd[j]
            ci[m] = ci[j]
            m += 1
    for pos in range(m // 2 - 1, -1, -1):
        _min_sift_down(cd, ci, m, pos)
    return m


@njit(inline="always")
def _top_insert(top_d, top_i, n, cap, d, i):
    """Keep top_d/top_i[:n] as the `cap` smallest distances seen, sorted ascending; returns new n."""
    if n == cap:
        if d >= top_d[n - 1]:
            return n
        n -= 1
    pos = n
    while pos > 0 and top_d[pos - 1] > d:
        top_d[pos] = top_d[pos - 1]
        top_i[pos] = top_i[pos - 1]
        pos -= 1
    top_d[pos] = d
    top_i[pos] = i
    return n + 1


@njit(cache=True)
def _quantile_sorted(s, n, q):
    """Linear-interpolated quantile of the sorted s[:n] (numpy's default definition)."""
    x = q * (n - 1)
    lo = int(np.floor(x))
    hi = min(lo + 1, n - 1)
    frac = x - lo
    return s[lo] * (1.0 - frac) + s[hi] * frac


@njit(cache=True)
def window_sorted(ring, nring, srt, pre1, pre2):
    """Sort the last min(nring, RING) distances into srt and fill the prefix sums pre1 (x) and pre2
    (x^2) that let `window_features` summarise any suffix of the sorted window in O(1); returns n.
    Every method's features (LAET's, DARTH's, the training logs') sort with the same `rank_sort` as
    OMEGA's checks, so no method's model call pays np.sort's mispredictions."""
    n = min(int(nring), RING)
    rank_sort(ring, n, srt)
    prefix_sums(srt, n, pre1, pre2)
    return n


@njit(cache=True)
def prefix_sums(srt, n, pre1, pre2):
    pre1[0] = 0.0
    pre2[0] = 0.0
    for j in range(n):
        pre1[j + 1] = pre1[j] + srt[j]
        pre2[j + 1] = pre2[j] + srt[j] * srt[j]


@njit(cache=True)
def window_features(tr, top_d, srt, pre1, pre2, n, rank, out):
    """Fill out[:11] with the trajectory features for the masked question at `rank` (1-based).

    rank > 1 is OMEGA's masked top-1 question with ranks < rank confirmed and removed, as in the
    paper: the rank-th best distance is the 'best', the confirmed points are taken off the
    computation count, and their distances are dropped from the window (they are exactly the window
    entries not farther than the (rank-1)-th best). rank == 1 is the plain feature vector.
    """
    out[0] = tr[T_HOPS]
    out[1] = tr[T_NDIS] - (rank - 1)
    out[2] = tr[T_EP]
    topn = int(tr[T_TOPN])
    out[3] = top_d[min(rank, topn) - 1]
    m = 0
    if rank > 1:
        m = np.searchsorted(srt[:n], top_d[min(rank - 1, topn) - 1], side="right")
        m = min(m, n - 1)  # keep at least one entry
    cnt = n - m
    mean = (pre1[n] - pre1[m]) / cnt
    var = max((pre2[n] - pre2[m]) / cnt - mean * mean, 0.0)
    s = srt[m:n]
    out[4] = mean
    out[5] = var
    out[6] = s[0]
    out[7] = s[cnt - 1]
    out[8] = _quantile_sorted(s, cnt, 0.5)
    out[9] = _quantile_sorted(s, cnt, 0.25)
    out[10] = _quantile_sorted(s, cnt, 0.75)


@njit(cache=True)
def base_features(tr, top_d, ring, rank, out):
    """Fill out[:11] with the trajectory features (see `window_features`); sorts the window."""
    srt = np.empty(RING, np.float64)
    pre1 = np.empty(RING + 1, np.float64)
    pre2 = np.empty(RING + 1, np.float64)
    n = window_sorted(ring, tr[T_RING], srt, pre1, pre2)
    window_features(tr, top_d, srt, pre1, pre2, n, rank, out)


@njit(cache=True, fastmath=True)
def rank_sort(values, n, out):
    """out[:n] = values[:n] sorted ascending (the same array `np.sort` gives), without data-dependent
    branches in the comparisons: each value is written at its rank, the count of values below it;
    equal values take the next free slot in index order, so a tie lands where a count of "equal
    values before it" would put it (ties are rare: their slot search is a branch almost never taken).

    O(n^2) comparisons, but one vectorised count per value and no mispredictions: on 100 distinct
    distances ~0.5 us against ~2.9 us for `np.sort`, whose comparisons mispredict about half the
    time (a sort repeated on one input trains the branch predictor and looks three times cheaper
    than it is inside a search; `benchmarks/omega_checks.py`). The earlier form also counted the
    equal values before each one in a second loop (0.9 us); the arrays are bit-identical (tested).
    `out` must not overlap `values`."""
    taken = np.zeros(n, np.bool_)
    for i in range(n):
        x = values[i]
        r = np.int64(0)
        for j in range(n):
            r += np.int64(values[j] < x)
        while taken[r]:
            r += 1
        taken[r] = True
        out[r] = x


@njit(cache=True)
def never_stop(tr, top_d, ring, q, cargs, pst):
    """Fixed-ef search: run until the beam is exhausted."""
    return False


# Not cached on disk: its signature holds the stopping policy's dispatcher type, and numba's cache
# index can then hold a weak reference that is dead in another process (seen as "underlying object has
# vanished" when a second process saved the index). Everything it calls is cached.
@njit(fastmath=True)
def search_batch(
    graph, code, queries, ef, k, track, check, cargs, num_pst, watch, visited, mark, gen, out_ids,
    out_dist, out_tr, out_pst, found_at,
):  # fmt: skip
    """Search every query; results, counters, policy scratch and (if `watch` has columns) the number
    of distance computations after which each watched id was first evaluated on layer 0 (-1: never).

    `visited`/`mark` are caller-owned int32 arrays of one slot per vector (kept across calls so a
    single-query call does not allocate); `gen[0]` is the visited-generation counter.
    """
    vectors, _levels, offsets, neighbors, cum_nb, entry, max_level = graph
    nq = queries.shape[0]
    ef = max(ef, k)
    track = max(track, k)
    deg0 = cum_nb[1] - cum_nb[0]
    cap = 2 * ef + deg0 + 1
    wd = np.empty(ef, np.float32)  # the beam as a min-heap of negated distances (top = farthest)
    wi = np.empty(ef, np.int64)
    cd = np.empty(cap, np.float32)
    ci = np.empty(cap, np.int64)
    top_d = np.empty(track, np.float64)
    top_i = np.empty(track, np.int64)
    ring = np.empty(RING, np.float64)
    tr = np.zeros(NUM_TR, np.float64)
    pst = np.zeros(max(num_pst, 1), np.float64)
    num_watch = watch.shape[1]
    for qi in range(nq):
        q = queries[qi]
        gen[0] += 1
        if gen[0] >= 2_000_000_000:
            visited[:] = 0
            gen[0] = 1
        tag = gen[0]
        for r in range(num_watch):
            mark[watch[qi, r]] = r + 1
            found_at[qi, r] = -1
        tr[:] = 0.0
        tr[T_K] = k
        tr[T_QI] = qi
        pst[:] = 0.0
        # greedy descent through the upper layers (faiss greedy_update_nearest)
        ep = entry
        d_ep = _dist(vectors, ep, q, code)
        ndis = 1
        hops = 0
        for level in range(max_level, 0, -1):
            while True:
                prev = ep
                base = offsets[ep]
                for j in range(base + cum_nb[level], base + cum_nb[level + 1]):
                    v = neighbors[j]
                    if v < 0:
                        break
                    d = _dist(vectors, v, q, code)
                    ndis += 1
                    if d < d_ep:
                        ep = v
                        d_ep = d
                hops += 1
                if ep == prev:
                    break
        # base layer: ef-bounded best-first beam
        visited[ep] = tag
        wn = _min_push(wd, wi, 0, -d_ep, ep)
        cn = _min_push(cd, ci, 0, d_ep, ep)
        topn = _top_insert(top_d, top_i, 0, track, d_ep, ep)
        ring[0] = d_ep
        nring = 1
        if num_watch > 0 and mark[ep] > 0:
            found_at[qi, mark[ep] - 1] = ndis
        tr[T_EP] = d_ep
        while cn > 0:
            d0 = cd[0]
            v0 = ci[0]
            cn = _min_pop(cd, ci, cn)
            if wn >= ef and d0 > -wd[0]:
                break
            base = offsets[v0]
            for j in range(base + cum_nb[0], base + cum_nb[1]):
                v = neighbors[j]
                if v < 0:
                    break
                if visited[v] == tag:
                    continue
                visited[v] = tag
                d = _dist(vectors, v, q, code)
                ndis += 1
                ring[nring % RING] = d
                nring += 1
                if num_watch > 0 and mark[v] > 0:
                    found_at[qi, mark[v] - 1] = ndis
                if wn < ef:
                    wn = _min_push(wd, wi, wn, -d, v)
                elif d < -wd[0]:
                    wd[0] = -d  # replace the farthest
                    wi[0] = v
                    _min_sift_down(wd, wi, wn, 0)
                else:
                    continue
                if cn == cap:
                    cn = _compact_frontier(cd, ci, cn, -wd[0])
                cn = _min_push(cd, ci, cn, d, v)
                topn = _top_insert(top_d, top_i, topn, track, d, v)
            hops += 1
            tr[T_HOPS] = hops
            tr[T_NDIS] = ndis
            tr[T_RING] = nring
            tr[T_TOPN] = topn
            tr[T_WN] = wn
            # the policy keeps in pst[0] the computation count before which it has nothing to do:
            # skipping the call until then saves passing its arguments after every expansion
            if ndis >= pst[0] and check(tr, top_d, ring, q, cargs, pst):
                tr[T_STOPPED] = 1.0
                break
        tr[T_HOPS] = hops
        tr[T_NDIS] = ndis
        tr[T_RING] = nring
        tr[T_TOPN] = topn
        tr[T_WN] = wn
        for r in range(k):
            if r < topn:
                out_ids[qi, r] = top_i[r]
                out_dist[qi, r] = top_d[r]
            else:
                out_ids[qi, r] = -1
                out_dist[qi, r] = np.inf
        out_tr[qi, :] = tr
        out_pst[qi, : out_pst.shape[1]] = pst[: out_pst.shape[1]]
        for r in range(num_watch):
            mark[watch[qi, r]] = 0
