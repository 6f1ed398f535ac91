"""Small shared fixtures: a clustered synthetic set and its faiss-built graph."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from wildserve.vsearch.config import IndexConfig
from wildserve.vsearch.data import synthetic_clusters
from wildserve.vsearch.index import METRICS, build_faiss_hnsw, export_graph


@lru_cache(maxsize=8)
def make_graph(metric: str, n: int = 4000, dim: int = 16, nq: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = synthetic_clusters(n + nq, dim, rng, num_clusters=24)
    m = METRICS.get(metric)
    base, queries = m.prepare(x[:n]), m.prepare(x[n:])
    cfg = IndexConfig(metric=metric, m=8, ef_construction=48)
    index = build_faiss_hnsw(base, cfg)
    return index, export_graph(index, base, cfg), queries


@pytest.fixture(scope="session")
def angular_setup():
    return make_graph("angular")
