"""The OMEGA comparison end to end: split, build, ground truth, full-length training searches, fit every
method, then measure recall, latency and preprocessing per K, per target and on a mixed-K stream.

Latency is single-threaded wall time of the numba search (the same kernel for every method), measured
after a warm-up call has compiled each stopping rule; a (K, target) cell takes the best of `repeats` runs
and the methods are interleaved per cell. Mean distance computations are reported beside it as the
machine-independent cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from wildserve.vsearch import baselines, omega  # noqa: F401  (register the methods)
from wildserve.vsearch.config import (
    BaselineConfig,
    ExperimentConfig,
    IndexConfig,
    OmegaConfig,
    TrainConfig,
)
from wildserve.vsearch.data import Split, load_vectors, mixed_k_stream, split_queries
from wildserve.vsearch.index import METRICS, HnswGraph, build_graph, ground_truth
from wildserve.vsearch.methods import METHODS, FitContext, Method
from wildserve.vsearch.search import Searcher, recall_at_k
from wildserve.vsearch.trajectory import TrajectoryLog, collect

log = logging.getLogger(__name__)

ALL_METHODS = ("fixed-ef", "laet", "darth", "omega")


@dataclass
class Prepared:
    """The index, the prepared query sets with their exact neighbours and the training logs."""

    graph: HnswGraph
    searcher: Searcher
    split: Split
    truth: dict[str, np.ndarray]
    train_log: TrajectoryLog
    val_log: TrajectoryLog
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CellResult:
    """One method at one (K, target) on the held-out queries."""

    method: str
    k: int
    target: float
    ef: int
    recall: float
    recall_stderr: float
    latency_us: float
    qps: float
    mean_ndis: float
    model_calls: float

    @property
    def meets(self) -> bool:
        return self.recall >= self.target


@dataclass(frozen=True)
class StreamResult:
    method: str
    target: float
    recall: float
    latency_us: float
    qps: float
    meets_per_k: dict[int, bool]


@dataclass
class ExperimentResult:
    config: dict
    dataset: dict
    prep_seconds: dict[str, float]
    preprocessing: dict[str, float]
    models: dict[str, int]
    cells: list[CellResult]
    stream: list[StreamResult]

    def to_json(self) -> dict:
        return {
            "config": self.config,
            "dataset": self.dataset,
            "prep_seconds": self.prep_seconds,
            "preprocessing_seconds": self.preprocessing,
            "models": self.models,
            "cells": [asdict(c) | {"meets": c.meets} for c in self.cells],
            "stream": [
                asdict(s) | {"meets_per_k": {str(k): v for k, v in s.meets_per_k.items()}}
                for s in self.stream
            ],
        }


def _timed(seconds: dict[str, float], name: str, fn: Callable):
    start = time.perf_counter()
    out = fn()
    seconds[name] = time.perf_counter() - start
    return out


def prepare(
    config: ExperimentConfig,
    index_config: IndexConfig,
    train_config: TrainConfig,
    rng: np.random.Generator,
) -> Prepared:
    secs: dict[str, float] = {}
    raw = load_vectors(config.dataset, rng)
    split = split_queries(raw, config.n_train, config.n_val, config.n_test, config.n_base, rng)
    graph = _timed(secs, "build", lambda: build_graph(split.base, index_config))
    searcher = Searcher(graph)
    metric = METRICS.get(graph.metric)
    prepared = Split(
        base=graph.vectors,
        train=metric.prepare(split.train),
        val=metric.prepare(split.val),
        test=metric.prepare(split.test),
    )
    k_max = train_config.k_max
    truth = {
        name: _timed(
            secs,
            f"ground_truth_{name}",
            lambda q=getattr(prepared, name): ground_truth(graph.vectors, q, graph.metric, k_max),
        )
        for name in ("train", "val", "test")
    }
    train_log = collect(searcher, prepared.train, truth["train"], train_config)
    secs["train_searches"] = train_log.seconds
    val_log = collect(searcher, prepared.val, truth["val"], train_config)
    secs["val_searches"] = val_log.seconds
    return Prepared(graph, searcher, prepared, truth, train_log, val_log, secs)


def fit_methods(
    prep: Prepared,
    names: tuple[str, ...],
    config: ExperimentConfig,
    train_config: TrainConfig,
    omega_config: OmegaConfig,
    baseline_config: BaselineConfig,
) -> dict[str, Method]:
    ctx = FitContext(
        searcher=prep.searcher,
        train=prep.train_log,
        val=prep.val_log,
        val_truth=prep.truth["val"],
        train_config=train_config,
        ks=config.ks,
        targets=config.targets,
        omega=omega_config,
        baseline=baseline_config,
    )
    methods: dict[str, Method] = {}
    for name in names:
        method = METHODS.get(name)()
        method.fit(ctx)
        log.info("fitted %s in %.1fs", name, method.fit_seconds)
        methods[name] = method
    return methods


def preprocessing_seconds(prep: Prepared, method: Method) -> float:
    """Ground truth + full-length searches of the query sets the method learns from + its own fit."""
    s = prep.seconds
    total = method.fit_seconds
    if method.uses_train_log:
        total += s["ground_truth_train"] + s["train_searches"]
    if method.uses_val_queries:
        total += s["ground_truth_val"]
    if method.uses_val_log:
        total += s["val_searches"]
    return total


def evaluate_cell(
    prep: Prepared, method: Method, name: str, k: int, target: float, repeats: int
) -> CellResult:
    queries, truth = prep.split.test, prep.truth["test"]
    ef = method.ef_for(k, target)
    rule = method.rule(k, target)
    prep.searcher.search(queries[:2], k, ef, rule)  # compile / warm up
    best = np.inf
    res = None
    for _ in range(repeats):
        start = time.perf_counter()
        res = prep.searcher.search(queries, k, ef, rule)
        best = min(best, time.perf_counter() - start)
    recalls = recall_at_k(res.ids, truth, k)
    nq = queries.shape[0]
    calls = float(res.pst[:, method.calls_slot].mean()) if method.calls_slot >= 0 else 0.0
    return CellResult(
        method=name,
        k=k,
        target=target,
        ef=ef,
        recall=float(recalls.mean()),
        recall_stderr=float(recalls.std(ddof=1) / np.sqrt(nq)),
        latency_us=best / nq * 1e6,
        qps=nq / best,
        mean_ndis=float(res.ndis.mean()),
        model_calls=calls,
    )


def evaluate_stream(
    prep: Prepared, method: Method, name: str, stream_ks: np.ndarray, target: float
) -> StreamResult:
    """Queries one at a time in stream order, each with its own K: the serving situation."""
    queries, truth = prep.split.test, prep.truth["test"]
    rules = {
        int(k): (method.ef_for(int(k), target), method.rule(int(k), target))
        for k in np.unique(stream_ks)
    }
    for k, (ef, rule) in rules.items():
        prep.searcher.search(queries[:1], k, ef, rule)
    recalls = np.empty(stream_ks.size)
    elapsed = 0.0
    for i, k in enumerate(stream_ks):
        k = int(k)
        ef, rule = rules[k]
        qi = i % queries.shape[0]
        start = time.perf_counter()
        res = prep.searcher.search(queries[qi : qi + 1], k, ef, rule)
        elapsed += time.perf_counter() - start
        recalls[i] = recall_at_k(res.ids, truth[qi : qi + 1], k)[0]
    meets = {int(k): bool(recalls[stream_ks == k].mean() >= target) for k in np.unique(stream_ks)}
    return StreamResult(
        method=name,
        target=target,
        recall=float(recalls.mean()),
        latency_us=elapsed / stream_ks.size * 1e6,
        qps=stream_ks.size / elapsed,
        meets_per_k=meets,
    )


def run_experiment(
    config: ExperimentConfig,
    index_config: IndexConfig,
    train_config: TrainConfig,
    omega_config: OmegaConfig,
    baseline_config: BaselineConfig,
    methods: tuple[str, ...] = ALL_METHODS,
    repeats: int = 3,
    progress: Callable[[str], None] = lambda _: None,
) -> ExperimentResult:
    rng = np.random.default_rng(config.seed)
    progress("building the index and the training logs")
    prep = prepare(config, index_config, train_config, rng)
    progress("fitting the methods")
    fitted = fit_methods(prep, methods, config, train_config, omega_config, baseline_config)
    # methods interleaved within each cell, so load from other processes hits them alike
    cells = []
    for k in config.ks:
        for target in config.targets:
            progress(f"K={k} target={target}")
            for name, method in fitted.items():
                cells.append(evaluate_cell(prep, method, name, k, target, repeats))
    stream_ks = mixed_k_stream(config.n_stream, config.ks, config.k_weights, rng)
    stream = []
    for target in config.targets:
        progress(f"mixed stream target={target}")
        for name, method in fitted.items():
            stream.append(evaluate_stream(prep, method, name, stream_ks, target))
    return ExperimentResult(
        config={
            "experiment": asdict(config),
            "index": asdict(index_config),
            "train": asdict(train_config),
            "omega": asdict(omega_config),
            "baseline": asdict(baseline_config),
            "repeats": repeats,
        },
        dataset={
            "n_base": prep.graph.num_vectors,
            "dim": int(prep.graph.vectors.shape[1]),
            "metric": prep.graph.metric,
        },
        prep_seconds=prep.seconds,
        preprocessing={n: preprocessing_seconds(prep, m) for n, m in fitted.items()},
        models={n: m.model_count() for n, m in fitted.items()},
        cells=cells,
        stream=stream,
    )
