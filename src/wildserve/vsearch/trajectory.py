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


def check_grid(n_max: float, growth: float, min_step: int) -> np.ndarray:
    """The fixed grid of distance-computation counts that trajectory rows are logged on and that
    OMEGA's checks snap to: steps of `min_step` until x`growth` is larger, then geometric.

    Because a row is logged at the first expansion that reaches a grid point, and a check snapped to
    a grid point fires at that same expansion, an offline replay of the logged rows sees exactly the
    states the online search checks at.
    """
    pts = [1]
    while pts[-1] <= n_max:
        pts.append(max(pts[-1] + min_step, math.ceil(pts[-1] * growth)))
    return np.asarray(pts, np.float64)


@njit(cache=True)
def record_rows(tr, top_d, ring, q, cargs, pst):
    """A never-stopping policy that appends a row whenever ndis reaches the next grid point."""
    feats, tops, wins, row_query, counter, grid = cargs
    ndis = tr[kernel.T_NDIS]
    # pst[0] is the next grid point's count (the kernel calls this only from then on)
    g = np.searchsorted(grid, pst[0], side="left")
    if g >= grid.size or ndis < grid[g]:
        return False
    r = counter[0]
    if r >= feats.shape[0]:
        counter[1] = 1
        return False
    srt = np.empty(kernel.RING, np.float64)
    pre1 = np.empty(kernel.RING + 1, np.float64)
    pre2 = np.empty(kernel.RING + 1, np.float64)
    n = kernel.window_sorted(ring, tr[kernel.T_RING], srt, pre1, pre2)
    kernel.window_features(tr, top_d, srt, pre1, pre2, n, 1, feats[r])
    if wins.shape[0] > 1:
        for j in range(kernel.RING):
            wins[r, j] = srt[j] if j < n else np.inf
    topn = int(tr[kernel.T_TOPN])
    for j in range(tops.shape[1]):
        tops[r, j] = top_d[j] if j < topn else np.inf
    row_query[r] = int(tr[kernel.T_QI])
    counter[0] = r + 1
    while g < grid.size and grid[g] <= ndis:
        g += 1
    pst[0] = grid[g] if g < grid.size else np.inf
    return False


@dataclass(frozen=True)
class TrajectoryLog:
    """Rows of full searches of a query set, plus when each true neighbour was found."""

    feats: np.ndarray  # (rows, 11) float64 base features, best = rank 1
    tops: np.ndarray  # (rows, k_max) float32 sorted best distances at that moment
    windows: np.ndarray | None  # (rows, RING) float32 sorted last distances (inf-padded), if kept
    grid: np.ndarray  # the check grid the rows were logged on
    row_query: np.ndarray  # (rows,) int64 query index of each row
    found_at: np.ndarray  # (nq, k_max) float64 ndis when true neighbour r was found, inf if never
    final_ndis: np.ndarray  # (nq,) distance computations of the full search
    queries: np.ndarray  # (nq, d) prepared query vectors
    seconds: float  # CPU time of the searches (single-threaded)

    @property
    def row_ndis(self) -> np.ndarray:
        return self.feats[:, 1]

    def found_by_row(self, rank: int) -> np.ndarray:
        """Per row: had the true neighbour of 0-based `rank` been evaluated by then?"""
        return self.found_at[self.row_query, rank] <= self.row_ndis

    def head(self, n: int) -> TrajectoryLog:
        """The log of the first n queries only (a smaller training budget)."""
        n = min(n, self.found_at.shape[0])
        keep = self.row_query < n
        return TrajectoryLog(
            feats=self.feats[keep],
            tops=self.tops[keep],
            windows=None if self.windows is None else self.windows[keep],
            grid=self.grid,
            row_query=self.row_query[keep],
            found_at=self.found_at[:n],
            final_ndis=self.final_ndis[:n],
            queries=self.queries[:n],
            seconds=self.seconds * n / self.found_at.shape[0],
        )

    def recall_by_row(self, k: int) -> np.ndarray:
        """Per row: recall@k of the beam at that moment."""
        return (self.found_at[self.row_query, :k] <= self.row_ndis[:, None]).mean(axis=1)


def collect(
    searcher: Searcher,
    queries: np.ndarray,
    truth: np.ndarray,
    config: TrainConfig,
    keep_windows: bool = False,
    batch: int = 200,
    progress=None,
):
    """Run the full-length searches of prepared `queries` and log them; `truth` is (nq, >= k_max).

    `keep_windows` also stores each row's sorted window (OMEGA replays masked questions from it).
    Queries run in batches of `batch` so a progress callback (`progress(done, total)`) can report.
    """
    nq = queries.shape[0]
    k_max = config.k_max
    grid = check_grid(
        searcher.graph.num_vectors + 1.0, config.record_growth, config.record_min_step
    )
    cap = nq * (grid.size + 1)
    feats = np.empty((cap, kernel.NUM_BASE_FEATURES), np.float64)
    tops = np.empty((cap, k_max), np.float32)
    wins = np.empty((cap if keep_windows else 1, kernel.RING), np.float32)
    row_query = np.empty(cap, np.int64)
    counter = np.zeros(2, np.int64)
    rule = StopRule(record_rows, (feats, tops, wins, row_query, counter, grid), 1, k_max)
    start = time.process_time()
    found_at = np.empty((nq, k_max), np.int64)
    final = np.empty(nq)
    for lo in range(0, nq, batch):
        hi = min(lo + batch, nq)
        first = int(counter[0])
        res = searcher.search(queries[lo:hi], k_max, config.ef, rule, watch=truth[lo:hi, :k_max])
        row_query[first : counter[0]] += lo  # the kernel numbers queries within a batch
        found_at[lo:hi] = res.found_at
        final[lo:hi] = res.ndis
        if progress is not None:
            progress(hi, nq)
    seconds = time.process_time() - start
    if counter[1]:
        raise RuntimeError("trajectory row buffer overflowed; the size bound is wrong")
    rows = int(counter[0])
    found = found_at.astype(np.float64)
    found[found < 0] = np.inf
    log.info("logged %d rows from %d full searches in %.1fs", rows, nq, seconds)
    return TrajectoryLog(
        feats=feats[:rows].copy(),
        tops=tops[:rows].copy(),
        windows=wins[:rows].copy() if keep_windows else None,
        grid=grid,
        row_query=row_query[:rows].copy(),
        found_at=found,
        final_ndis=final,
        queries=queries,
        seconds=seconds,
    )
