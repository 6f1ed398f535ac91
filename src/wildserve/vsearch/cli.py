"""`wildserve vsearch build|train|search` and `wildserve experiment omega` (heavy imports stay lazy)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import typer

from wildserve.io import atomic_write_bytes, atomic_write_text
from wildserve.vsearch.config import (
    BaselineConfig,
    ExperimentConfig,
    IndexConfig,
    OmegaConfig,
    TrainConfig,
)

app = typer.Typer(help="HNSW vector search with OMEGA early termination.", no_args_is_help=True)

_IDX = IndexConfig()
_TRN = TrainConfig()
_EXP = ExperimentConfig()


def _write_json_atomic(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


@app.command()
def build(
    data: str = typer.Option(..., help="glove, synthetic, or a .npy/.fvecs file"),
    out: Path = typer.Option(..., help="index file to write (.npz)"),
    metric: str = typer.Option(_IDX.metric, help="l2, ip or angular"),
    m: int = typer.Option(_IDX.m, help="HNSW M"),
    ef_construction: int = typer.Option(_IDX.ef_construction, help="HNSW efConstruction"),
    seed: int = typer.Option(0, help="seed for synthetic data"),
) -> None:
    """Build an HNSW graph with faiss and save it in the flat layout the numba search reads."""
    import numpy as np
    from rich.console import Console

    from wildserve.vsearch.data import load_vectors
    from wildserve.vsearch.index import build_graph

    console = Console()
    with console.status("building HNSW with faiss"):
        graph = build_graph(
            load_vectors(data, np.random.default_rng(seed)), IndexConfig(metric, m, ef_construction)
        )
        graph.save(out)
    console.print(f"wrote {out}: {graph.num_vectors} vectors, {graph.max_level + 1} layers")


@app.command()
def train(
    index: Path = typer.Option(..., help="index from `vsearch build`"),
    queries: str = typer.Option(..., help="training query vectors (.npy/.fvecs)"),
    out: Path = typer.Option(..., help="OMEGA model file to write (.npz)"),
    ef: int = typer.Option(_TRN.ef, help="beam width of the training searches"),
    k_max: int = typer.Option(_TRN.k_max, help="largest K the model will serve"),
    seed: int = typer.Option(_TRN.seed, help="LightGBM and subsampling seed"),
) -> None:
    """Train OMEGA's single K=1 model and gather its offline statistics."""
    import numpy as np
    from rich.console import Console

    from wildserve.vsearch.data import load_vectors
    from wildserve.vsearch.index import HnswGraph, ground_truth
    from wildserve.vsearch.omega import fit_omega
    from wildserve.vsearch.search import Searcher
    from wildserve.vsearch.trajectory import collect

    console = Console()
    graph = HnswGraph.load(index)
    searcher = Searcher(graph)
    q = searcher.prepare(load_vectors(queries, np.random.default_rng(seed)))
    cfg = dataclasses.replace(_TRN, ef=ef, k_max=k_max, seed=seed)
    with console.status(f"ground truth and full-length searches of {q.shape[0]} queries"):
        truth = ground_truth(graph.vectors, q, graph.metric, k_max)
        log = collect(searcher, q, truth, cfg)
    with console.status("training the K=1 model"):
        model = fit_omega(log, cfg, OmegaConfig())
        model.save(out)
    console.print(f"wrote {out}: {model.forest.root.size} trees, serves K <= {model.k_max}")


@app.command()
def search(
    index: Path = typer.Option(..., help="index from `vsearch build`"),
    model: Path = typer.Option(..., help="OMEGA model from `vsearch train`"),
    queries: str = typer.Option(..., help="query vectors (.npy/.fvecs)"),
    k: int = typer.Option(10, help="neighbours per query"),
    target: float = typer.Option(0.95, help="average recall target"),
    ef: int = typer.Option(_TRN.ef, help="beam width (the search usually stops earlier)"),
    out: Path | None = typer.Option(None, help="write ids to this .npy"),
    truth: Path | None = typer.Option(None, help="exact ids (.npy) to report recall against"),
) -> None:
    """Search with OMEGA early termination at a recall target."""
    import time

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from wildserve.vsearch.data import load_vectors
    from wildserve.vsearch.index import HnswGraph
    from wildserve.vsearch.omega import OmegaModel
    from wildserve.vsearch.search import Searcher, recall_at_k

    graph = HnswGraph.load(index)
    searcher = Searcher(graph)
    rule = OmegaModel.load(model).rule(k, target)
    q = searcher.prepare(load_vectors(queries, np.random.default_rng(0)))
    searcher.search(q[:1], k, ef, rule)  # compile
    start = time.perf_counter()
    res = searcher.search(q, k, ef, rule)
    elapsed = time.perf_counter() - start
    table = Table(title=f"OMEGA K={k} target={target}")
    for col in ("queries", "mean latency (µs)", "mean distance computations"):
        table.add_column(col)
    row = [str(q.shape[0]), f"{elapsed / q.shape[0] * 1e6:.0f}", f"{res.ndis.mean():.0f}"]
    if truth is not None:
        table.add_column("recall")
        row.append(f"{recall_at_k(res.ids, np.load(truth), k).mean():.4f}")
    table.add_row(*row)
    Console().print(table)
    if out is not None:
        buf = io.BytesIO()
        np.save(buf, res.ids)
        atomic_write_bytes(out, buf.getvalue())


def _parse_list(value: str, kind: type, name: str, lo: float, hi: float) -> tuple:
    try:
        items = tuple(kind(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{name}: not a comma-separated list of {kind.__name__}s: {value!r}"
        ) from None
    if not items:
        raise typer.BadParameter(f"{name}: empty list")
    for v in items:
        if not lo <= v <= hi:
            raise typer.BadParameter(f"{name}: {v} outside [{lo:g}, {hi:g}]")
    return items


def _check_range(name: str, value: float, lo: float, hi: float = float("inf")) -> None:
    if not lo <= value <= hi:
        raise typer.BadParameter(f"{name}: {value} outside [{lo:g}, {hi:g}]")


def experiment(
    base: str = typer.Option(
        _EXP.base,
        "--base",
        "--dataset",
        help="base vectors: glove, synthetic, or a .npy/.fvecs file",
    ),
    queries: str | None = typer.Option(
        None, help="test queries (.npy/.fvecs); default: held out of the base"
    ),
    ground_truth: str | None = typer.Option(
        None, help="their true neighbour ids (.ivecs/.npy, closest first); default: exact via faiss"
    ),
    train: str | None = typer.Option(
        None,
        help="training queries (.npy/.fvecs; a validation set is split off); default: held out of the base",
    ),
    metric: str = typer.Option(_IDX.metric, help="l2, ip or angular"),
    ks: str = typer.Option(",".join(map(str, _EXP.ks)), help="Ks to evaluate, comma-separated"),
    targets: str = typer.Option(
        ",".join(map(str, _EXP.targets)), help="recall targets, comma-separated"
    ),
    n_base: int = typer.Option(_EXP.n_base, help="base vectors kept (0 = all)"),
    n_train: int = typer.Option(_EXP.n_train, help="training queries"),
    n_val: int = typer.Option(_EXP.n_val, help="validation queries (baseline tuning)"),
    n_test: int = typer.Option(_EXP.n_test, help="test queries (at most this many of --queries)"),
    m: int = typer.Option(_IDX.m, help="HNSW M"),
    ef: int = typer.Option(_TRN.ef, help="beam cap of training and early-stop searches"),
    ef_caps: str = typer.Option(
        "", help="further beam caps to re-run the learned methods at, e.g. 500,300"
    ),
    equal_budget: bool = typer.Option(
        _EXP.equal_budget, help="also fit LAET and DARTH at OMEGA's preprocessing budget"
    ),
    repeats: int = typer.Option(3, help="timing repeats per cell (best and median kept)"),
    darth_tune_steps: int = typer.Option(
        BaselineConfig().darth_tune_steps, help="bisection steps of DARTH's stop level"
    ),
    seed: int = typer.Option(_EXP.seed, help="seed of split, stream and models"),
    jobs: int = typer.Option(
        1, help="faiss threads for building and ground truth (searches are single-threaded)"
    ),
    out: Path = typer.Option(
        Path("results/omega"), help="run folder: results.json, report.md, plots, cache/"
    ),
    output_json: Path | None = typer.Option(None, hidden=True),
    plot_dir: Path | None = typer.Option(None, hidden=True),
) -> None:
    """OMEGA vs fixed-ef, LAET and DARTH (also at OMEGA's preprocessing budget) on any vector set:
    recall, overshoot, distance computations, latency and preprocessing per K and target."""
    from wildserve.console import make_console, make_progress
    from wildserve.vsearch.index import METRICS

    METRICS.get(metric)
    k_list = _parse_list(ks, int, "--ks", 1, ef)
    t_list = _parse_list(targets, float, "--targets", 1e-9, 1 - 1e-9)
    caps = _parse_list(ef_caps, int, "--ef-caps", max(k_list), 1e9) if ef_caps.strip() else ()
    for name, value, lo in (("--n-base", n_base, 0), ("--n-train", n_train, 3), ("--n-val", n_val, 2),
                            ("--n-test", n_test, 1), ("--m", m, 2), ("--repeats", repeats, 1),
                            ("--jobs", jobs, 1), ("--darth-tune-steps", darth_tune_steps, 0)):  # fmt: skip
        _check_range(name, value, lo)
    _check_range("--ef", ef, max(k_list))
    weights = _EXP.k_weights if k_list == _EXP.ks else (1.0,) * len(k_list)
    cfg = dataclasses.replace(
        _EXP, base=base, queries=queries, ground_truth=ground_truth, train=train, n_base=n_base,
        n_train=n_train, n_val=n_val, n_test=n_test, ks=k_list, k_weights=weights,
        targets=t_list, ef_caps=caps, equal_budget=equal_budget, seed=seed,
    )  # fmt: skip
    k_max = max(_TRN.k_max, max(k_list)) if max(k_list) > _TRN.k_max else _TRN.k_max
    train_cfg = dataclasses.replace(_TRN, ef=ef, seed=seed, k_max=min(k_max, ef))
    _run_experiment(cfg, dataclasses.replace(_IDX, metric=metric, m=m), train_cfg,
                    BaselineConfig(darth_tune_steps=darth_tune_steps), repeats, jobs, out,
                    output_json, plot_dir, make_console(), make_progress)  # fmt: skip


def _run_experiment(cfg, index_cfg, train_cfg, baseline_cfg, repeats, jobs, out, output_json,
                    plot_dir, console, make_progress) -> None:  # fmt: skip
    import faiss

    from wildserve.vsearch.experiment import run_experiment
    from wildserve.vsearch.report import markdown_report, plot

    faiss.omp_set_num_threads(jobs)
    with make_progress(console, description_width=44) as bar:
        task = bar.add_task("starting", total=1)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what[:44], completed=done, total=max(total, 1))

        result = run_experiment(
            cfg, index_cfg, train_cfg, OmegaConfig(), baseline_cfg, repeats=repeats,
            progress=progress, cache_dir=out / "cache",
        )  # fmt: skip
    data = result.to_json()
    report = markdown_report(data)
    out.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(output_json or out / "results.json", data)
    atomic_write_text(out / "report.md", report)
    for p in plot(data, plot_dir or out):
        console.print(f"wrote {p}")
    console.print(report)
    console.print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
