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


def experiment(
    dataset: str = typer.Option(_EXP.dataset, help="glove, synthetic, or a .npy/.fvecs path"),
    metric: str = typer.Option(_IDX.metric, help="l2, ip or angular"),
    n_base: int = typer.Option(_EXP.n_base, help="base vectors kept (0 = all)"),
    n_train: int = typer.Option(_EXP.n_train, help="training queries"),
    n_val: int = typer.Option(_EXP.n_val, help="validation queries (baseline tuning)"),
    n_test: int = typer.Option(_EXP.n_test, help="held-out test queries"),
    m: int = typer.Option(_IDX.m, help="HNSW M"),
    ef: int = typer.Option(_TRN.ef, help="beam width of training and early-stop searches"),
    repeats: int = typer.Option(3, help="timing repeats per cell (best is kept)"),
    darth_tune_steps: int = typer.Option(
        BaselineConfig().darth_tune_steps, help="bisection steps of DARTH's stop level"
    ),
    seed: int = typer.Option(_EXP.seed, help="seed of split, stream and models"),
    output_json: Path = typer.Option(Path("results/omega.json"), help="results file"),
    plot_dir: Path | None = typer.Option(None, help="write PNG plots here"),
) -> None:
    """OMEGA vs fixed-ef, LAET and DARTH: recall, latency and preprocessing per K and target."""
    from rich.console import Console

    from wildserve.vsearch.experiment import run_experiment
    from wildserve.vsearch.report import markdown_tables, plot

    console = Console()
    cfg = dataclasses.replace(
        _EXP, dataset=dataset, n_base=n_base, n_train=n_train, n_val=n_val,
        n_test=n_test, seed=seed,
    )  # fmt: skip
    with console.status("running") as status:
        result = run_experiment(
            cfg,
            dataclasses.replace(_IDX, metric=metric, m=m),
            dataclasses.replace(_TRN, ef=ef, seed=seed),
            OmegaConfig(),
            BaselineConfig(darth_tune_steps=darth_tune_steps),
            repeats=repeats,
            progress=lambda msg: status.update(msg),
        )
    data = result.to_json()
    _write_json_atomic(output_json, data)
    console.print(markdown_tables(data))
    if plot_dir is not None:
        for p in plot(data, plot_dir):
            console.print(f"wrote {p}")
    console.print(f"wrote {output_json}")
