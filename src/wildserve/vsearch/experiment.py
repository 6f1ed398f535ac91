"""The OMEGA comparison end to end: data, index, ground truth, full-length training searches, fit every
method (the baselines also at OMEGA's preprocessing budget), then measure recall, distance computations,
latency and preprocessing per K, per target, on a mixed-K stream and at further beam caps.

Every numba kernel and LightGBM path is exercised once on a few queries before anything is timed, so
compilation is not counted as preprocessing. Preprocessing is CPU time (everything is single-threaded),
which other processes on a shared machine disturb far less than wall time. Latency is single-threaded
wall time of the numba search (the same kernel for every method), with its CPU time beside it; each
(K, target) cell runs every method `repeats` times in slices of 25 queries interleaved across the methods
(see `evaluate_cells`) and keeps the best and the median.
Mean distance computations are the load-independent cost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from wildserve.io import atomic_write_json
from wildserve.vsearch import baselines, omega  # noqa: F401  (register the methods)
from wildserve.vsearch.config import (
    ALL_METHODS,
    BaselineConfig,
    ExperimentConfig,
    IndexConfig,
    OmegaConfig,
    TrainConfig,
)
from wildserve.vsearch.data import Split, mixed_k_stream
from wildserve.vsearch.dataset import load_experiment_data
from wildserve.vsearch.index import METRICS, HnswGraph, build_graph, ground_truth, save_npy
from wildserve.vsearch.methods import METHODS, FitContext, Method
from wildserve.vsearch.search import Searcher, SearchResult, recall_at_k
from wildserve.vsearch.trajectory import TrajectoryLog, collect

log = logging.getLogger(__name__)

LEARNED = ("laet", "darth", "omega")
#: suffix of a baseline fitted at OMEGA's preprocessing budget
EQ = "-eq"

Progress = Callable[[str, int, int], None]


def _no_progress(what: str, done: int, total: int) -> None:
    pass


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
    description: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CellResult:
    """One method at one (K, target) on the held-out queries."""

    method: str
    k: int
    target: float
    ef: int
    recall: float
    recall_stderr: float
    latency_us: float  # best of the repeats
    latency_us_median: float
    cpu_us: float  # best CPU time per query (less disturbed by other processes than wall time)
    qps: float
    mean_ndis: float
    model_calls: float
    ef_cap: int = 0
    #: each timed slice's best CPU time (µs, the whole slice): paired across methods, slice by slice
    cpu_slices_us: tuple[float, ...] = ()

    @property
    def meets(self) -> bool:
        return self.recall >= self.target

    @property
    def overshoot(self) -> float:
        return self.recall - self.target


@dataclass(frozen=True)
class StreamResult:
    method: str
    target: float
    recall: float
    latency_us: float
    cpu_us: float
    qps: float
    meets_per_k: dict[int, bool]


@dataclass
class ExperimentResult:
    config: dict
    dataset: dict
    prep_seconds: dict[str, float]
    preprocessing: dict[str, float]
    models: dict[str, int]
    budget: dict[str, dict]
    cells: list[CellResult]
    stream: list[StreamResult]
    ef_study: list[CellResult]
    ef_study_preprocessing: dict[str, float]
    calibration: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        def cell(c: CellResult) -> dict:
            return asdict(c) | {"meets": c.meets, "overshoot": c.overshoot}

        return {
            "config": self.config,
            "dataset": self.dataset,
            "prep_seconds": self.prep_seconds,
            "preprocessing_seconds": self.preprocessing,
            "models": self.models,
            "budget": self.budget,
            "cells": [cell(c) for c in self.cells],
            "stream": [
                asdict(s) | {"meets_per_k": {str(k): v for k, v in s.meets_per_k.items()}}
                for s in self.stream
            ],
            "ef_study": [cell(c) for c in self.ef_study],
            "ef_study_preprocessing_seconds": self.ef_study_preprocessing,
            "omega_calibration": self.calibration,
        }


def _timed(seconds: dict[str, float], name: str, fn: Callable):
    start = time.process_time()
    out = fn()
    seconds[name] = time.process_time() - start
    return out


def _digest(*arrays: np.ndarray, extra: str = "") -> str:
    h = hashlib.blake2b(extra.encode(), digest_size=12)
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8))
    return h.hexdigest()


def batched_ground_truth(
    vectors: np.ndarray, queries: np.ndarray, metric: str, k: int, what: str, progress: Progress,
    batch: int = 512,
) -> np.ndarray:  # fmt: skip
    """Exact top-k by faiss brute force, in batches so a progress bar can follow."""
    out = np.empty((queries.shape[0], k), np.int64)
    for lo in range(0, queries.shape[0], batch):
        hi = min(lo + batch, queries.shape[0])
        out[lo:hi] = ground_truth(vectors, queries[lo:hi], metric, k)
        progress(what, hi, queries.shape[0])
    return out


def _cached(
    cache: Path | None, key: str, make: Callable[[], np.ndarray]
) -> tuple[np.ndarray, float]:
    """make()'s array and the CPU seconds it took. Cached as KEY.npy with the seconds in KEY.json, so
    a run that loads it still charges what computing it cost (an entry without its seconds is
    remade)."""
    path = None if cache is None else cache / f"{key}.npy"
    cost = None if path is None else path.with_suffix(".json")
    if path is not None and path.exists() and cost.exists():
        return np.load(path), float(json.loads(cost.read_text())["cpu_seconds"])
    start = time.process_time()
    out = make()
    seconds = time.process_time() - start
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        save_npy(path, out)
        atomic_write_json(cost, {"cpu_seconds": seconds})
    return out, seconds


def collect_logs(
    searcher: Searcher, split: Split, truth: dict, train_config: TrainConfig, progress: Progress
) -> tuple[TrajectoryLog, TrajectoryLog]:
    """Full-length searches of the training and validation queries (compiled first, not timed)."""
    collect(searcher, split.train[:2], truth["train"][:2], train_config, keep_windows=True)
    train_log = collect(
        searcher, split.train, truth["train"], train_config, keep_windows=True,
        progress=lambda d, t: progress(f"training searches ef={train_config.ef}", d, t),
    )  # fmt: skip
    val_log = collect(
        searcher, split.val, truth["val"], train_config,
        progress=lambda d, t: progress(f"validation searches ef={train_config.ef}", d, t),
    )  # fmt: skip
    return train_log, val_log


def prepare(
    config: ExperimentConfig,
    index_config: IndexConfig,
    train_config: TrainConfig,
    rng: np.random.Generator,
    cache_dir: Path | None = None,
    progress: Progress = _no_progress,
) -> Prepared:
    secs: dict[str, float] = {}
    data = load_experiment_data(config, rng)
    key = _digest(data.base, extra=repr(asdict(index_config)))
    graph_path = None if cache_dir is None else cache_dir / f"graph-{key}.npz"
    if graph_path is not None and graph_path.exists():
        graph = HnswGraph.load(graph_path)
        secs["build"] = float("nan")
    else:
        progress("building the HNSW graph (faiss)", 0, 1)
        graph = _timed(secs, "build", lambda: build_graph(data.base, index_config))
        if graph_path is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            graph.save(graph_path)
    searcher = Searcher(graph)
    metric = METRICS.get(graph.metric)
    split = Split(
        base=graph.vectors,
        train=metric.prepare(data.train),
        val=metric.prepare(data.val),
        test=metric.prepare(data.test),
    )
    k_max = train_config.k_max
    ground_truth(graph.vectors[:2], split.train[:1], graph.metric, 1)  # load faiss before timing
    truth = {}
    for name in ("train", "val", "test"):
        q = getattr(split, name)
        k = k_max if name != "test" else max(config.ks)

        def make(q=q, k=k, name=name) -> np.ndarray:
            return batched_ground_truth(
                graph.vectors, q, graph.metric, k, f"ground truth ({name})", progress
            )

        if name == "test" and data.test_truth is not None:
            start = time.process_time()
            t = data.test_truth.copy()
            lost = np.flatnonzero((t < 0).any(axis=1))
            if lost.size:
                t[lost] = batched_ground_truth(
                    graph.vectors, q[lost], graph.metric, t.shape[1], "ground truth (test)",
                    progress,
                )  # fmt: skip
            seconds = time.process_time() - start
        else:
            t, seconds = _cached(cache_dir, f"truth-{name}-{key}-{_digest(q)}-{k}", make)
        truth[name] = t
        secs[f"ground_truth_{name}"] = seconds
    train_log, val_log = collect_logs(searcher, split, truth, train_config, progress)
    secs["train_searches"] = train_log.seconds
    secs["val_searches"] = val_log.seconds
    return Prepared(graph, searcher, split, truth, train_log, val_log, secs, data.description)


def _context(prep: Prepared, config: ExperimentConfig, train_config: TrainConfig,
             omega_config: OmegaConfig, baseline_config: BaselineConfig) -> FitContext:  # fmt: skip
    return FitContext(
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


def warm_up(ctx: FitContext, names: tuple[str, ...]) -> None:
    """Fit each method once on a few queries and search with its rules, so that numba compilation
    (and LightGBM's first-call setup) is not counted in anyone's preprocessing."""
    small = replace(ctx.head(0.0, min_train=40, min_val=20), ks=ctx.ks[:1], targets=ctx.targets[:1])
    for name in names:
        method = METHODS.get(name)()
        method.fit(small)
        rule = method.rule(small.ks[0], small.targets[0])
        ctx.searcher.search(small.val.queries[:2], small.ks[0], method.ef_for(small.ks[0],
                            small.targets[0]), rule)  # fmt: skip


def fit_methods(
    prep: Prepared,
    names: tuple[str, ...],
    config: ExperimentConfig,
    train_config: TrainConfig,
    omega_config: OmegaConfig,
    baseline_config: BaselineConfig,
) -> dict[str, Method]:
    ctx = _context(prep, config, train_config, omega_config, baseline_config)
    methods: dict[str, Method] = {}
    for name in names:
        method = METHODS.get(name)()
        method.fit(ctx)
        log.info("fitted %s in %.1fs", name, method.fit_seconds)
        methods[name] = method
    return methods


def preprocessing_seconds(prep: Prepared, method: Method) -> float:
    """Ground truth + full-length searches of the queries the method learns from (pro rata when it
    uses only some of them) + its own fit."""
    s = prep.seconds
    share_t = method.used_train / prep.train_log.found_at.shape[0]
    share_v = method.used_val / prep.val_log.found_at.shape[0]
    total = method.fit_seconds
    if method.uses_train_log:
        total += share_t * (s["ground_truth_train"] + s["train_searches"])
    if method.uses_val_queries:
        total += share_v * s["ground_truth_val"]
    if method.uses_val_log:
        total += share_v * s["val_searches"]
    return total


def fit_at_budget(
    prep: Prepared, name: str, ctx: FitContext, budget: float, full: float, tries: int = 4
) -> tuple[Method, dict]:
    """A baseline refitted on fewer training/validation queries until its preprocessing fits the
    budget (OMEGA's): the fraction starts at budget / full cost and shrinks while it is over."""
    fraction = min(1.0, budget / full)
    for attempt in range(tries):
        method = METHODS.get(name)(fraction=fraction)
        method.fit(ctx)
        spent = preprocessing_seconds(prep, method)
        log.info("%s at fraction %.3f: %.1fs (budget %.1fs)", name, fraction, spent, budget)
        if spent <= 1.05 * budget or attempt == tries - 1 or method.used_train <= 20:
            break
        fraction *= 0.95 * budget / spent
    info = {"fraction": fraction, "train_queries": method.used_train,
            "val_queries": method.used_val, "seconds": spent, "budget": budget}  # fmt: skip
    return method, info


TIMING_CHUNK = 25  # queries per timed slice (a few ms: shorter than the host's speed drifts)


def evaluate_cells(
    prep: Prepared,
    methods: dict[str, Method],
    k: int,
    target: float,
    repeats: int,
    ef_cap: int = 0,
    chunk: int = TIMING_CHUNK,
) -> list[CellResult]:
    """Every method at one (K, target), timed in slices of `chunk` queries interleaved across the
    methods, so that a change in the host's speed, which lasts tens of milliseconds on a shared
    machine, hits every method alike instead of whichever ran a whole 500-query batch at that
    moment. The order is drawn afresh per slice and repeat, so that no method always follows the
    same one (and inherits its cache state). Best latency is the sum over slices of each slice's
    best repeat; median latency the median over repeats of the whole pass."""
    queries, truth = prep.split.test, prep.truth["test"]
    nq = queries.shape[0]
    plans = {}
    for name, method in methods.items():
        ef = method.ef_for(k, target)
        rule = method.rule(k, target)
        prep.searcher.search(queries[:2], k, ef, rule)  # compile / warm up
        plans[name] = (ef, rule)
    names = list(plans)
    step = max(chunk, 1)
    slices = [slice(a, min(a + step, nq)) for a in range(0, nq, step)]
    reps = max(repeats, 1)
    wall = {name: np.zeros((reps, len(slices))) for name in names}
    cpu = {name: np.zeros((reps, len(slices))) for name in names}
    parts: dict[str, list] = {name: [None] * len(slices) for name in names}
    order = np.random.default_rng(0)
    for rep in range(reps):
        for j, part in enumerate(slices):
            for o in order.permutation(len(names)):
                name = names[o]
                ef, rule = plans[name]
                start, start_cpu = time.perf_counter(), time.process_time()
                parts[name][j] = prep.searcher.search(queries[part], k, ef, rule)
                wall[name][rep, j] = time.perf_counter() - start
                cpu[name][rep, j] = time.process_time() - start_cpu
    # the search is deterministic: every repeat returns the same results
    results = {name: SearchResult.concat(parts[name]) for name in names}
    times = {name: (wall[name].min(axis=0).sum(), wall[name].sum(axis=1)) for name in names}
    cells = []
    for name, method in methods.items():
        res = results[name]
        recalls = recall_at_k(res.ids, truth, k)
        calls = float(res.pst[:, method.calls_slot].mean()) if method.calls_slot >= 0 else 0.0
        best, median = times[name][0], float(np.median(times[name][1]))
        cells.append(
            CellResult(
                method=name,
                k=k,
                target=target,
                ef=plans[name][0],
                recall=float(recalls.mean()),
                recall_stderr=float(recalls.std(ddof=1) / np.sqrt(nq)),
                latency_us=best / nq * 1e6,
                latency_us_median=median / nq * 1e6,
                cpu_us=cpu[name].min(axis=0).sum() / nq * 1e6,
                cpu_slices_us=tuple(np.round(cpu[name].min(axis=0) * 1e6, 1).tolist()),
                qps=nq / best,
                mean_ndis=float(res.ndis.mean()),
                model_calls=calls,
                ef_cap=ef_cap,
            )
        )
    return cells


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
    elapsed = cpu = 0.0
    for i, k in enumerate(stream_ks):
        k = int(k)
        ef, rule = rules[k]
        qi = i % queries.shape[0]
        start, start_cpu = time.perf_counter(), time.process_time()
        res = prep.searcher.search(queries[qi : qi + 1], k, ef, rule)
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        recalls[i] = recall_at_k(res.ids, truth[qi : qi + 1], k)[0]
    meets = {int(k): bool(recalls[stream_ks == k].mean() >= target) for k in np.unique(stream_ks)}
    return StreamResult(
        method=name,
        target=target,
        recall=float(recalls.mean()),
        latency_us=elapsed / stream_ks.size * 1e6,
        cpu_us=cpu / stream_ks.size * 1e6,
        qps=stream_ks.size / elapsed,
        meets_per_k=meets,
    )


def omega_calibration(method: Method | None) -> dict:
    """OMEGA's replay-fitted levels, for the report: per target tau, and per grid K theta, the
    chosen check schedule and its replayed counts and cost (with the costs it was chosen by)."""
    if method is None:
        return {}
    cal = method.model.calibration
    names = ("targets", "k_grid", "tau", "theta", "first_quantile", "gap_scale", "replay_recall",
             "replay_ndis", "replay_checks", "replay_calls", "replay_cost", "base_cost")  # fmt: skip
    cfg = method.model.config
    return {"check_cost": cfg.check_cost, "call_cost": cfg.call_cost,
            **{n: getattr(cal, n).tolist() for n in names}}  # fmt: skip


def run_experiment(
    config: ExperimentConfig,
    index_config: IndexConfig,
    train_config: TrainConfig,
    omega_config: OmegaConfig,
    baseline_config: BaselineConfig,
    methods: tuple[str, ...] = ALL_METHODS,
    repeats: int = 3,
    progress: Progress = _no_progress,
    cache_dir: Path | None = None,
) -> ExperimentResult:
    rng = np.random.default_rng(config.seed)
    prep = prepare(config, index_config, train_config, rng, cache_dir, progress)
    ctx = _context(prep, config, train_config, omega_config, baseline_config)
    progress("warming the kernels (not timed)", 0, 1)
    warm_up(ctx, methods)
    fitted: dict[str, Method] = {}
    for i, name in enumerate(methods):
        progress(f"fitting {name}", i, len(methods))
        fitted[name] = METHODS.get(name)()
        fitted[name].fit(ctx)
    pre = {n: preprocessing_seconds(prep, m) for n, m in fitted.items()}
    budget_info: dict[str, dict] = {}
    if config.equal_budget and "omega" in fitted:
        for name in ("laet", "darth"):
            if name in fitted:
                progress(f"fitting {name} at OMEGA's budget", 0, 1)
                m, info = fit_at_budget(prep, name, ctx, pre["omega"], pre[name])
                fitted[name + EQ] = m
                pre[name + EQ] = info["seconds"]
                budget_info[name + EQ] = info
    cells: list[CellResult] = []
    n_cells = len(config.ks) * len(config.targets)
    for i, (k, target) in enumerate((k, t) for k in config.ks for t in config.targets):
        progress(f"cells (K={k}, target={target})", i, n_cells)
        cells += evaluate_cells(prep, fitted, k, target, repeats, train_config.ef)
    stream_ks = mixed_k_stream(config.n_stream, config.ks, config.k_weights, rng)
    stream = []
    for i, target in enumerate(config.targets):
        progress(f"mixed-K stream target={target}", i, len(config.targets))
        for name, method in fitted.items():
            stream.append(evaluate_stream(prep, method, name, stream_ks, target))
    study, study_pre = [], {}
    for cap in config.ef_caps:
        if cap == train_config.ef:
            continue
        tc = replace(train_config, ef=cap)
        train_log, val_log = collect_logs(prep.searcher, prep.split, prep.truth, tc, progress)
        capped = replace(prep, train_log=train_log, val_log=val_log,
                         seconds=prep.seconds | {"train_searches": train_log.seconds,
                                                 "val_searches": val_log.seconds})  # fmt: skip
        cctx = _context(capped, config, tc, omega_config, baseline_config)
        learned = {}
        for name in (n for n in LEARNED if n in methods):
            progress(f"ef cap {cap}: fitting {name}", 0, 1)
            learned[name] = METHODS.get(name)()
            learned[name].fit(cctx)
            study_pre[f"{name}@{cap}"] = preprocessing_seconds(capped, learned[name])
        for k in config.ks:
            for target in config.targets:
                progress(f"ef cap {cap}: cells (K={k}, target={target})", 0, 1)
                study += evaluate_cells(capped, learned, k, target, 1, cap)
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
            "n_train": int(prep.split.train.shape[0]),
            "n_val": int(prep.split.val.shape[0]),
            "n_test": int(prep.split.test.shape[0]),
        }
        | prep.description,
        prep_seconds=prep.seconds,
        preprocessing=pre,
        models={n: m.model_count() for n, m in fitted.items()},
        calibration=omega_calibration(fitted.get("omega")),
        budget=budget_info,
        cells=cells,
        stream=stream,
        ef_study=study,
        ef_study_preprocessing=study_pre,
    )
