"""`wildserve vsearch build|train|search` (heavy imports stay lazy; `experiment omega` is in experiments/)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from wildserve.config_cli import Fields, bounded, config_options, number_list
from wildserve.io import atomic_write_text
from wildserve.vsearch.config import (
    IndexConfig,
    TrainConfig,
)

app = typer.Typer(help="HNSW vector search with OMEGA early termination.", no_args_is_help=True)

_IDX = IndexConfig()
_SEED = bounded(int, ge=0)
_POSITIVE = bounded(int, ge=1)
_TRN = TrainConfig()


def _write_json_atomic(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


@app.command()
@config_options(index_cfg=IndexConfig)
def build(
    index_cfg: IndexConfig,
    data: str = typer.Option(..., help="glove, synthetic, or a .npy/.fvecs file"),
    out: Path = typer.Option(..., help="index file to write (.npz)"),
    seed: int = typer.Option(0, help="seed for synthetic data", parser=_SEED, metavar="INT"),
) -> None:
    """Build an HNSW graph with faiss and save it in the flat layout the numba search reads."""
    import numpy as np
    from rich.console import Console

    from wildserve.vsearch.data import load_vectors
    from wildserve.vsearch.index import build_graph

    console = Console()
    with console.status("building HNSW with faiss"):
        graph = build_graph(load_vectors(data, np.random.default_rng(seed)), index_cfg)
        graph.save(out)
    console.print(f"wrote {out}: {graph.num_vectors} vectors, {graph.max_level + 1} layers")


@app.command()
@config_options(train_cfg=Fields(TrainConfig, only=("ef", "seed"), fixed={"k_max": 1}))
def train(
    train_cfg: TrainConfig,
    index: Path = typer.Option(..., help="index from `vsearch build`"),
    queries: str = typer.Option(..., help="training query vectors (.npy/.fvecs)"),
    out: Path = typer.Option(..., help="model file to write (.npz)"),
    method: str = typer.Option("omega", help="omega, laet, darth or fixed-ef"),
    val_queries: str | None = typer.Option(
        None, help="validation queries the baselines tune on (default: 30% of --queries)"
    ),
    ks: str = typer.Option("1,10,100", help="Ks the baselines are tuned for (omega: any K <= max)"),
    targets: str = typer.Option("0.9,0.95,0.99", help="recall targets to tune/calibrate for"),
) -> None:
    """Fit one early-termination method (OMEGA: one K=1 model for every K) and save it."""
    import numpy as np
    from rich.console import Console

    from wildserve.vsearch import baselines, omega  # noqa: F401  (register the methods)
    from wildserve.vsearch.data import load_vectors
    from wildserve.vsearch.index import HnswGraph, ground_truth
    from wildserve.vsearch.methods import METHODS, FitContext
    from wildserve.vsearch.search import Searcher
    from wildserve.vsearch.trajectory import collect

    cls = METHODS.get(method)
    ef, seed = train_cfg.ef, train_cfg.seed
    k_list = number_list(ks, "--ks", int, ge=1, le=ef)
    t_list = number_list(targets, "--targets", gt=0, lt=1)
    console = Console()
    graph = HnswGraph.load(index)
    searcher = Searcher(graph)
    rng = np.random.default_rng(seed)
    q = searcher.prepare(load_vectors(queries, rng))
    if val_queries is not None:
        v = searcher.prepare(load_vectors(val_queries, rng))
    else:
        order = rng.permutation(q.shape[0])
        n_val = max(2, q.shape[0] * 3 // 10)
        q, v = q[order[n_val:]], q[order[:n_val]]
    cfg = dataclasses.replace(_TRN, ef=ef, k_max=max(k_list), seed=seed)
    with console.status(
        f"ground truth and full-length searches of {q.shape[0] + v.shape[0]} queries"
    ):
        truth = ground_truth(graph.vectors, q, graph.metric, cfg.k_max)
        vtruth = ground_truth(graph.vectors, v, graph.metric, cfg.k_max)
        log = collect(searcher, q, truth, cfg, keep_windows=True)
        vlog = collect(searcher, v, vtruth, cfg)
    with console.status(f"fitting {method}"):
        m = cls()
        m.fit(FitContext(searcher, log, vlog, vtruth, cfg, k_list, t_list))
        m.save(out)
    console.print(f"wrote {out}: {method}, {m.model_count()} model(s), K <= {cfg.k_max}")


@app.command()
@config_options(search_cfg=Fields(TrainConfig, only=("ef",), fixed={"k_max": 1}))
def search(
    search_cfg: TrainConfig,
    index: Path = typer.Option(..., help="index from `vsearch build`"),
    model: Path | None = typer.Option(None, help="model from `vsearch train` (any method)"),
    queries: str = typer.Option(..., help="query vectors (.npy/.fvecs)"),
    k: int = typer.Option(10, help="neighbours per query", parser=_POSITIVE, metavar="INT"),
    target: float = typer.Option(
        0.95, help="average recall target", parser=bounded(float, gt=0, lt=1), metavar="FLOAT"
    ),
    out: Path | None = typer.Option(None, help="write ids to this .npy"),
    truth: Path | None = typer.Option(
        None, help="exact ids (.ivecs/.npy) to report recall against"
    ),
) -> None:
    """Search with a saved method's early termination at a recall target (or a plain fixed ef)."""
    import time

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from wildserve.vsearch import baselines, omega  # noqa: F401  (register the methods)
    from wildserve.vsearch.data import load_vectors, read_ids
    from wildserve.vsearch.index import HnswGraph, save_npy
    from wildserve.vsearch.methods import load_method
    from wildserve.vsearch.search import NEVER, Searcher, recall_at_k

    ef = search_cfg.ef  # without --model: a plain fixed-ef search
    graph = HnswGraph.load(index)
    searcher = Searcher(graph)
    q = searcher.prepare(load_vectors(queries, np.random.default_rng(0)))
    name, rule, calls_slot = "fixed-ef", NEVER, -1
    if model is not None:
        method = load_method(model)
        name, rule, calls_slot = method.name, method.rule(k, target), method.calls_slot
        ef = method.ef_for(k, target) if method.name == "fixed-ef" else ef
    exact = None
    if truth is not None:
        exact = read_ids(truth)
        if exact.shape[0] != q.shape[0] or exact.shape[1] < k:
            from wildserve.vsearch.data import VectorFileError

            raise VectorFileError(f"{truth}: {exact.shape} ids for {q.shape[0]} queries at K={k}")
    searcher.search(q[:1], k, ef, rule)  # compile
    start = time.perf_counter()
    res = searcher.search(q, k, ef, rule)
    elapsed = time.perf_counter() - start
    table = Table(title=f"{name} K={k} target={target} ef={ef}")
    cols = ["queries", "mean latency (µs)", "mean distance computations", "model calls"]
    row = [str(q.shape[0]), f"{elapsed / q.shape[0] * 1e6:.0f}", f"{res.ndis.mean():.0f}",
           f"{res.pst[:, calls_slot].mean() if calls_slot >= 0 else 0:.1f}"]  # fmt: skip
    if exact is not None:
        cols.append("recall")
        row.append(f"{recall_at_k(res.ids, exact, k).mean():.4f}")
    for col in cols:
        table.add_column(col)
    table.add_row(*row)
    Console().print(table)
    if out is not None:
        save_npy(out, res.ids)
