"""Full-length training searches (ef = TrainConfig.ef, no early stop) logged as trajectory rows.

Every row is the state at one moment of one search: the 11 base features and the sorted distances of
the k_max best points so far. `found_at` says after how many distance computations each of the query's
true k_max neighbours entered the beam, so any label (top-1 found, recall@K) follows from a row's `ndis`.
Rows are taken on a geometric grid of distance computations so early moments, where the stopping
decisions are made, are dense, and one search contributes a few hundred rows rather than thousands.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from wildserve.vsearch import kernel
from wildserve.vsearch.config import TrainConfig
from wildserve.vsearch.search import Searcher, StopRule

log = logging.getLogger(__name__)


@njit(cache=True)
def record_rows(tr, top_d, ring, q, cargs, pst):
    """A never-stopping policy that appends a row whenever ndis passes the next grid point."""
    feats, tops, row_query, counter, params = cargs
    ndis = tr[kernel.T_NDIS]
    if ndis < pst[0]:
        return False
    r = counter[0]
    if r >= feats.shape[0]:
        counter[1] = 1
        return False
    kernel.base_features(tr, top_d, ring, 1, feats[r])
    topn = int(tr[kernel.T_TOPN])
    for j in range(tops.shape[1]):
        tops[r, j] = top_d[j] if j < topn else np.inf
    row_query[r] = int(tr[kernel.T_QI])
    counter[0] = r + 1
    pst[0] = max(ndis + params[1], ndis * params[0])
    return False


@dataclass(frozen=True)
class TrajectoryLog:
    """Rows of full searches of a query set, plus when each true neighbour was found."""

    feats: np.ndarray  # (rows, 11) float64 base features, best = rank 1
    tops: np.ndarray  # (rows, k_max) float32 sorted best distances at that moment
    row_query: np.ndarray  # (rows,) int64 query index of each row
    found_at: np.ndarray  # (nq, k_max) float64 ndis when true neighbour r was found, inf if never
    final_ndis: np.ndarray  # (nq,) distance computations of the full search
    queries: np.ndarray  # (nq, d) prepared query vectors
    seconds: float  # wall time of the searches

    @property
    def row_ndis(self) -> np.ndarray:
        return self.feats[:, 1]

    def found_by_row(self, rank: int) -> np.ndarray:
        """Per row: had the true neighbour of 0-based `rank` been evaluated by then?"""
        return self.found_at[self.row_query, rank] <= self.row_ndis

    def recall_by_row(self, k: int) -> np.ndarray:
        """Per row: recall@k of the beam at that moment."""
        return (self.found_at[self.row_query, :k] <= self.row_ndis[:, None]).mean(axis=1)


def _rows_per_query_bound(n: int, config: TrainConfig) -> int:
    """Grid points up to n computations: linear steps until growth takes over, then geometric."""
    g, s = config.record_growth, config.record_min_step
    switch = s / (g - 1.0)
    linear = math.ceil(switch / s) + 1
    geometric = math.ceil(math.log(max(n / switch, 1.0)) / math.log(g)) + 1
    return linear + geometric + 2


def collect(searcher: Searcher, queries: np.ndarray, truth: np.ndarray, config: TrainConfig):
    """Run the full-length searches of prepared `queries` and log them; `truth` is (nq, >= k_max)."""
    nq = queries.shape[0]
    k_max = config.k_max
    cap = nq * _rows_per_query_bound(searcher.graph.num_vectors, config)
    feats = np.empty((cap, kernel.NUM_BASE_FEATURES), np.float64)
    tops = np.empty((cap, k_max), np.float32)
    row_query = np.empty(cap, np.int64)
    counter = np.zeros(2, np.int64)
    params = np.array([config.record_growth, config.record_min_step], np.float64)
    rule = StopRule(record_rows, (feats, tops, row_query, counter, params), 1, k_max)
    start = time.perf_counter()
    res = searcher.search(queries, k_max, config.ef, rule, watch=truth[:, :k_max])
    seconds = time.perf_counter() - start
    if counter[1]:
        raise RuntimeError("trajectory row buffer overflowed; the size bound is wrong")
    rows = int(counter[0])
    found = res.found_at.astype(np.float64)
    found[found < 0] = np.inf
    log.info("logged %d rows from %d full searches in %.1fs", rows, nq, seconds)
    return TrajectoryLog(
        feats=feats[:rows].copy(),
        tops=tops[:rows].copy(),
        row_query=row_query[:rows].copy(),
        found_at=found,
        final_ndis=res.ndis.copy(),
        queries=queries,
        seconds=seconds,
    )
