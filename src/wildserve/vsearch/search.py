"""Python face of the numba kernel: owns the per-index scratch arrays and shapes inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from wildserve.errors import WildserveError
from wildserve.vsearch import kernel
from wildserve.vsearch.index import METRICS, HnswGraph


@dataclass(frozen=True)
class StopRule:
    """A compiled stopping policy: the numba `check` function, its arguments and scratch size."""

    check: Any
    cargs: tuple
    num_pst: int = 1
    track: int = 1  # how many best distances the policy reads (top_d length)


NEVER = StopRule(kernel.never_stop, (np.zeros(1),), 1, 1)


@dataclass(frozen=True)
class SearchResult:
    ids: np.ndarray  # (nq, k) int64, closest first
    dist: np.ndarray  # (nq, k) float64, kernel distances (smaller is closer)
    tr: np.ndarray  # (nq, NUM_TR) final trajectory counters
    pst: np.ndarray  # (nq, num_pst) the policy's final scratch
    found_at: (
        np.ndarray
    )  # (nq, num_watch) computations until each watched id was evaluated, -1 never

    @property
    def ndis(self) -> np.ndarray:
        return self.tr[:, kernel.T_NDIS]

    @classmethod
    def concat(cls, parts: list[SearchResult]) -> SearchResult:
        """One result from the results of consecutive slices of the queries."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


class Searcher:
    """Searches one graph; reuses its visited table across calls (not thread-safe: one per thread)."""

    def __init__(self, graph: HnswGraph) -> None:
        self.graph = graph
        self._arrays = graph.arrays()
        self._code = np.int64(graph.metric_code)
        self._metric = METRICS.get(graph.metric)
        n = graph.num_vectors
        self._visited = np.zeros(n, np.int32)
        self._mark = np.zeros(n, np.int32)
        self._gen = np.zeros(1, np.int64)

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        """Normalise (angular) and check the shape of raw query vectors."""
        queries = np.atleast_2d(queries)
        if queries.shape[1] != self.graph.vectors.shape[1]:
            raise WildserveError(
                f"queries have dimension {queries.shape[1]}, the index {self.graph.vectors.shape[1]}"
            )
        return self._metric.prepare(queries)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int,
        rule: StopRule = NEVER,
        watch: np.ndarray | None = None,
    ) -> SearchResult:
        """Search already-prepared queries (see `prepare`); `watch` (nq, w) ids get discovery times."""
        if k < 1:
            raise WildserveError(f"k must be >= 1, got {k}")
        nq = queries.shape[0]
        watch = (
            np.zeros((nq, 0), np.int64) if watch is None else np.ascontiguousarray(watch, np.int64)
        )
        ids = np.empty((nq, k), np.int64)
        dist = np.empty((nq, k), np.float64)
        tr = np.empty((nq, kernel.NUM_TR), np.float64)
        pst = np.empty((nq, rule.num_pst), np.float64)
        found_at = np.empty(watch.shape, np.int64)
        kernel.search_batch(
            self._arrays,
            self._code,
            queries,
            np.int64(ef),
            np.int64(k),
            np.int64(rule.track),
            rule.check,
            rule.cargs,
            np.int64(rule.num_pst),
            watch,
            self._visited,
            self._mark,
            self._gen,
            ids,
            dist,
            tr,
            pst,
            found_at,
        )
        return SearchResult(ids, dist, tr, pst, found_at)


def recall_at_k(ids: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Per-query recall@k of returned ids against exact ids (both closest first)."""
    hits = np.array([len(np.intersect1d(a[:k], b[:k])) for a, b in zip(ids, truth, strict=True)])
    return hits / k
