"""Trajectory features and discovery times of the numba kernel against a slow pure-Python HNSW search."""

from __future__ import annotations

import heapq

import numpy as np

from wildserve.vsearch import kernel
from wildserve.vsearch.config import TrainConfig
from wildserve.vsearch.index import ground_truth
from wildserve.vsearch.search import Searcher, StopRule
from wildserve.vsearch.trajectory import collect, record_rows

from .conftest import make_graph


def _dist(graph, i, q):
    v = graph.vectors[i].astype(np.float64)
    return float(((v - q) ** 2).sum()) if graph.metric == "l2" else float(-(v @ q))


def _links(graph, node, level):
    base = graph.offsets[node]
    out = graph.neighbors[base + graph.cum_nb[level] : base + graph.cum_nb[level + 1]]
    return [int(v) for v in out if v >= 0]


def slow_search(graph, q, ef, watch):
    """Textbook HNSW with heapq; returns the features after every base-layer expansion and the
    distance computations after which each watched id was first evaluated on the base layer."""
    q = q.astype(np.float64)
    ep = graph.entry_point
    d_ep = _dist(graph, ep, q)
    ndis, hops = 1, 0
    for level in range(graph.max_level, 0, -1):
        while True:
            prev = ep
            for v in _links(graph, ep, level):
                d = _dist(graph, v, q)
                ndis += 1
                if d < d_ep:
                    ep, d_ep = v, d
            hops += 1
            if ep == prev:
                break
    visited = {ep}
    beam = [(-d_ep, ep)]
    frontier = [(d_ep, ep)]
    seen = [d_ep]
    found = {w: -1 for w in watch}
    if ep in found:
        found[ep] = ndis
    rows = []
    while frontier:
        d0, v0 = heapq.heappop(frontier)
        if len(beam) >= ef and d0 > -beam[0][0]:
            break
        for v in _links(graph, v0, 0):
            if v in visited:
                continue
            visited.add(v)
            d = _dist(graph, v, q)
            ndis += 1
            seen.append(d)
            if v in found:
                found[v] = ndis
            if len(beam) < ef:
                heapq.heappush(beam, (-d, v))
            elif d < -beam[0][0]:
                heapq.heapreplace(beam, (-d, v))
            else:
                continue
            heapq.heappush(frontier, (d, v))
        hops += 1
        last = np.array(seen[-100:])
        rows.append(
            [hops, ndis, d_ep, min(seen), last.mean(), last.var(), last.min(), last.max(),
             np.median(last), np.percentile(last, 25), np.percentile(last, 75)]
        )  # fmt: skip
    return np.array(rows), np.array([found[w] for w in watch])


def test_features_match_slow_reference():
    for metric in ("l2", "angular"):
        _, graph, queries = make_graph(metric)
        ef, nq = 16, 6
        queries = queries[:nq]
        truth = ground_truth(graph.vectors, queries, graph.metric, 10)
        cap = 5000 * nq
        feats = np.empty((cap, kernel.NUM_BASE_FEATURES))
        tops = np.empty((cap, 1), np.float32)
        wins = np.empty((1, kernel.RING), np.float32)
        row_query = np.empty(cap, np.int64)
        counter = np.zeros(2, np.int64)
        every_hop = np.arange(
            1.0, 10**6
        )  # a grid point at every count: a row after every expansion
        rule = StopRule(record_rows, (feats, tops, wins, row_query, counter, every_hop), 1, 1)
        res = Searcher(graph).search(queries, 10, ef, rule, watch=truth)
        for qi in range(nq):
            ref_rows, ref_found = slow_search(graph, queries[qi], ef, truth[qi])
            # rows are logged when the count of computations reaches a grid point: an expansion that
            # computed nothing new adds no row
            new = np.concatenate([[True], np.diff(ref_rows[:, 1]) > 0])
            ref_rows = ref_rows[new]
            ours = feats[: counter[0]][row_query[: counter[0]] == qi]
            assert ours.shape == ref_rows.shape
            np.testing.assert_allclose(ours, ref_rows, rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(res.found_at[qi], ref_found)


def test_masked_question_removes_the_confirmed_ranks():
    """Rank 2 asked with rank 1 confirmed: the 2nd best is the best, the count drops by one and the
    confirmed point's distance leaves the window (the paper's masking)."""
    tr = np.zeros(kernel.NUM_TR)
    tr[kernel.T_TOPN] = 3
    tr[kernel.T_RING] = 4
    tr[kernel.T_NDIS] = 50
    top_d = np.array([0.1, 0.2, 0.4])
    ring = np.zeros(kernel.RING)
    ring[:4] = [0.4, 0.1, 0.2, 0.9]
    out = np.empty(kernel.NUM_BASE_FEATURES)
    kernel.base_features(tr, top_d, ring, 1, out)
    assert out[1] == 50 and out[3] == 0.1 and out[6] == 0.1 and out[8] == 0.30000000000000004
    kernel.base_features(tr, top_d, ring, 2, out)
    assert out[1] == 49 and out[3] == 0.2
    np.testing.assert_allclose(out[[4, 6, 7, 8]], [0.5, 0.2, 0.9, 0.4])
    np.testing.assert_allclose(out[5], np.var([0.4, 0.2, 0.9]))


def _rank_sort_two_loops(values, n, out):
    """The previous `kernel.rank_sort`: rank = values below + equal values before."""
    for i in range(n):
        x = values[i]
        r = int((values[:n] < x).sum() + (values[:i] == x).sum())
        out[r] = x


def test_rank_sort_equals_np_sort():
    """OMEGA's branch-free window sort gives np.sort's array, and bit for bit the array of the
    previous two-loop form (so no feature, decision or search result changed): distinct values,
    many ties, signed zeros, a window not yet full, one entry."""
    rng = np.random.default_rng(0)
    out = np.full(kernel.RING, np.nan)
    ref = np.full(kernel.RING, np.nan)
    zeros = rng.choice([0.0, -0.0, 1.0], kernel.RING)
    for n in (1, 2, 37, kernel.RING):
        for values in (rng.standard_normal(kernel.RING), np.round(rng.random(kernel.RING) * 4),
                       zeros):  # fmt: skip
            kernel.rank_sort(values, n, out)
            np.testing.assert_array_equal(out[:n], np.sort(values[:n]))
            _rank_sort_two_loops(values, n, ref)
            assert np.array_equal(out[:n].view(np.int64), ref[:n].view(np.int64))


def test_training_log_labels_are_consistent():
    """found_at and row labels: recall@K by row never decreases along a search and ends at the
    full search's recall."""
    _, graph, queries = make_graph("angular")
    queries = queries[:30]
    truth = ground_truth(graph.vectors, queries, graph.metric, 20)
    cfg = TrainConfig(ef=100, k_max=20)
    log = collect(Searcher(graph), queries, truth, cfg)
    r10 = log.recall_by_row(10)
    for qi in range(30):
        rows = np.flatnonzero(log.row_query == qi)
        assert np.all(np.diff(log.row_ndis[rows]) > 0)
        assert np.all(np.diff(r10[rows]) >= 0)
    final = Searcher(graph).search(queries, 10, 100)
    full = (log.found_at[:, :10] < np.inf).mean(axis=1)
    hits = np.array(
        [len(set(a) & set(b)) / 10 for a, b in zip(final.ids, truth[:, :10], strict=True)]
    )
    np.testing.assert_allclose(full, hits)
