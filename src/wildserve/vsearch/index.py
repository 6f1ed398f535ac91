"""HNSW graphs built by faiss and exported to flat arrays the numba search walks; exact ground truth.

Distances are always "smaller is closer": squared L2 for `l2`, the negated inner product for `ip`, and
for `angular` the vectors are unit-normalised and compared by negated inner product (what faiss does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wildserve.errors import WildserveError
from wildserve.io import atomic_write
from wildserve.registry import Registry
from wildserve.vsearch.config import IndexConfig

log = logging.getLogger(__name__)

#: Numba kernel codes of the two distance functions.
DIST_L2 = 0
DIST_IP = 1


@dataclass(frozen=True)
class Metric:
    """A metric: which kernel distance it uses and whether vectors are normalised first."""

    name: str
    kernel_code: int
    normalize: bool

    def prepare(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.normalize:
            return x
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise WildserveError("angular metric: a vector has zero norm and no direction")
        return np.ascontiguousarray(x / norms, dtype=np.float32)

    def faiss_metric(self) -> int:
        import faiss

        return faiss.METRIC_L2 if self.kernel_code == DIST_L2 else faiss.METRIC_INNER_PRODUCT


METRICS: Registry[Metric] = Registry("metric")
METRICS.add("l2", Metric("l2", DIST_L2, normalize=False))
METRICS.add("ip", Metric("ip", DIST_IP, normalize=False))
METRICS.add("angular", Metric("angular", DIST_IP, normalize=True))


class IndexFileError(WildserveError):
    """A saved index is missing a field or was written by something else."""


@dataclass(frozen=True)
class HnswGraph:
    """The graph in faiss's own layout: node i's links at layer l are
    `neighbors[offsets[i] + cum_nb[l] : offsets[i] + cum_nb[l + 1]]`, padded with -1."""

    vectors: np.ndarray  # (n, d) float32, already prepared for the metric
    levels: np.ndarray  # (n,) int32, number of layers each node is on (faiss: level + 1)
    offsets: np.ndarray  # (n + 1,) int64
    neighbors: np.ndarray  # (total,) int32
    cum_nb: np.ndarray  # (num_layers + 1,) int32
    entry_point: int
    max_level: int
    metric: str
    m: int
    ef_construction: int

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def metric_code(self) -> int:
        return METRICS.get(self.metric).kernel_code

    def arrays(self) -> tuple:
        """The tuple the numba kernels take (one argument instead of seven)."""
        return (
            self.vectors,
            self.levels,
            self.offsets,
            self.neighbors,
            self.cum_nb,
            np.int64(self.entry_point),
            np.int64(self.max_level),
        )

    def save(self, path: str | Path) -> None:
        """Write atomically; everything that changes search results round-trips."""
        path = Path(path)
        meta = np.array([self.entry_point, self.max_level, self.m, self.ef_construction])
        _atomic_savez(
            path,
            vectors=self.vectors,
            levels=self.levels,
            offsets=self.offsets,
            neighbors=self.neighbors,
            cum_nb=self.cum_nb,
            meta=meta,
            metric=np.array(self.metric),
        )

    @classmethod
    def load(cls, path: str | Path) -> HnswGraph:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = z["meta"]
                return cls(
                    vectors=z["vectors"],
                    levels=z["levels"],
                    offsets=z["offsets"],
                    neighbors=z["neighbors"],
                    cum_nb=z["cum_nb"],
                    entry_point=int(meta[0]),
                    max_level=int(meta[1]),
                    m=int(meta[2]),
                    ef_construction=int(meta[3]),
                    metric=str(z["metric"]),
                )
        except (KeyError, ValueError, OSError) as exc:
            raise IndexFileError(f"{path}: not a wildserve HNSW index ({exc})") from None


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, **arrays)

    atomic_write(path, write)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Write one array as .npy atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(Path(path), write)


def build_faiss_hnsw(vectors: np.ndarray, config: IndexConfig):
    """Build a faiss IndexHNSWFlat over already-prepared vectors."""
    import faiss

    metric = METRICS.get(config.metric)
    index = faiss.IndexHNSWFlat(vectors.shape[1], config.m, metric.faiss_metric())
    index.hnsw.efConstruction = config.ef_construction
    index.add(vectors)
    return index


def export_graph(index, vectors: np.ndarray, config: IndexConfig) -> HnswGraph:
    """Copy faiss's graph into numpy arrays (faiss stays the builder, numba becomes the searcher)."""
    import faiss

    h = index.hnsw
    return HnswGraph(
        vectors=vectors,
        levels=faiss.vector_to_array(h.levels).astype(np.int32),
        offsets=faiss.vector_to_array(h.offsets).astype(np.int64),
        neighbors=faiss.vector_to_array(h.neighbors).astype(np.int32),
        cum_nb=faiss.vector_to_array(h.cum_nneighbor_per_level).astype(np.int32),
        entry_point=int(h.entry_point),
        max_level=int(h.max_level),
        metric=config.metric,
        m=config.m,
        ef_construction=config.ef_construction,
    )


def build_graph(raw_vectors: np.ndarray, config: IndexConfig) -> HnswGraph:
    """Prepare the vectors for the metric, build with faiss and export."""
    vectors = METRICS.get(config.metric).prepare(raw_vectors)
    log.info("building HNSW M=%d efC=%d over %s", config.m, config.ef_construction, vectors.shape)
    return export_graph(build_faiss_hnsw(vectors, config), vectors, config)


def faiss_index_from_graph(graph: HnswGraph):
    """Rebuild a faiss IndexHNSWFlat around an exported graph (for the benchmark and the tests)."""
    import faiss

    metric = METRICS.get(graph.metric)
    index = faiss.IndexHNSWFlat(graph.vectors.shape[1], graph.m, metric.faiss_metric())
    index.storage.add(graph.vectors)
    index.ntotal = graph.num_vectors
    h = index.hnsw
    faiss.copy_array_to_vector(graph.levels.astype(np.int32), h.levels)
    faiss.copy_array_to_vector(graph.offsets.astype(np.uint64), h.offsets)
    faiss.copy_array_to_vector(graph.neighbors.astype(np.int32), h.neighbors)
    h.entry_point = graph.entry_point
    h.max_level = graph.max_level
    return index


def ground_truth(vectors: np.ndarray, queries: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Exact top-k ids by faiss brute force; `queries` must already be prepared for the metric."""
    import faiss

    m = METRICS.get(metric)
    flat = faiss.IndexFlat(vectors.shape[1], m.faiss_metric())
    flat.add(vectors)
    _, ids = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return ids.astype(np.int64)
