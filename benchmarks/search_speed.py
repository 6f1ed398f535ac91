"""Numba HNSW search vs faiss's own HNSW search on the same graph at the same ef, single-threaded.

Prints per-query latency of both and their ratio (goal: numba within 2x of faiss). Run:
    .venv/bin/python benchmarks/search_speed.py --dataset glove --n-base 100000
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_of(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    import faiss

    from wildserve.vsearch.config import IndexConfig
    from wildserve.vsearch.data import load_vectors, split_queries
    from wildserve.vsearch.index import METRICS, build_faiss_hnsw, export_graph
    from wildserve.vsearch.search import Searcher

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="glove")
    p.add_argument("--metric", default="angular")
    p.add_argument("--n-base", type=int, default=100_000)
    p.add_argument("--n-queries", type=int, default=2000)
    p.add_argument("--m", type=int, default=IndexConfig().m)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--efs", default="16,32,64,128,256,512")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    split = split_queries(load_vectors(args.dataset, rng), args.n_queries, 1, 1, args.n_base, rng)
    cfg = IndexConfig(metric=args.metric, m=args.m)
    metric = METRICS.get(args.metric)
    base, queries = metric.prepare(split.base), metric.prepare(split.train)
    index = build_faiss_hnsw(base, cfg)
    graph = export_graph(index, base, cfg)
    searcher = Searcher(graph)
    faiss.omp_set_num_threads(1)
    print(f"{args.dataset}: {graph.num_vectors} x {base.shape[1]} {args.metric}, M={args.m}, "
          f"{queries.shape[0]} queries, k={args.k}, single thread, best of {args.repeats}")  # fmt: skip
    print(f"{'ef':>5} {'faiss us/q':>11} {'numba us/q':>11} {'numba/faiss':>12} {'same ids':>9}")
    searcher.search(queries[:4], args.k, 16)  # compile
    for ef in (int(e) for e in args.efs.split(",")):
        index.hnsw.efSearch = ef
        t_faiss = best_of(lambda: index.search(queries, args.k), args.repeats)
        t_numba = best_of(lambda ef=ef: searcher.search(queries, args.k, ef), args.repeats)
        _, fid = index.search(queries, args.k)
        same = np.mean(np.all(fid == searcher.search(queries, args.k, ef).ids, axis=1))
        nq = queries.shape[0]
        print(f"{ef:>5} {t_faiss / nq * 1e6:>11.1f} {t_numba / nq * 1e6:>11.1f} "
              f"{t_numba / t_faiss:>12.2f} {same:>9.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
