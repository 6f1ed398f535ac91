"""``wildserve experiment omega``: OMEGA vs fixed-ef, LAET and DARTH on any vector set, with a report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from wildserve.io import atomic_write_text
from wildserve.vsearch.cli import parse_list
from wildserve.vsearch.config import (
    ALL_METHODS,
    BaselineConfig,
    ExperimentConfig,
    IndexConfig,
    TrainConfig,
)

_IDX = IndexConfig()
_TRN = TrainConfig()
_EXP = ExperimentConfig()


def _check_range(name: str, value: float, lo: float, hi: float = float("inf")) -> None:
    from wildserve.errors import ConfigError

    if not lo <= value <= hi:
        raise ConfigError(f"{name}: {value} outside [{lo:g}, {hi:g}]")


def omega(
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
    methods: str = typer.Option(",".join(ALL_METHODS), help="methods to compare, comma-separated"),
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
    k_list = parse_list(ks, int, "--ks", 1, ef)
    t_list = parse_list(targets, float, "--targets", 1e-9, 1 - 1e-9)
    caps = parse_list(ef_caps, int, "--ef-caps", max(k_list), 1e9) if ef_caps.strip() else ()
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
    names = tuple(v.strip() for v in methods.split(",") if v.strip())
    from wildserve.vsearch import baselines, omega  # noqa: F401  (register the methods)
    from wildserve.vsearch.methods import METHODS

    for name in names:
        METHODS.get(name)
    # the learned methods serve K up to the largest asked for
    train_cfg = dataclasses.replace(_TRN, ef=ef, seed=seed, k_max=max(k_list))
    _run_experiment(cfg, dataclasses.replace(_IDX, metric=metric, m=m), train_cfg,
                    BaselineConfig(darth_tune_steps=darth_tune_steps), names, repeats, jobs, out,
                    output_json, plot_dir, make_console(), make_progress)  # fmt: skip


def _run_experiment(cfg, index_cfg, train_cfg, baseline_cfg, names, repeats, jobs, out,
                    output_json, plot_dir, console, make_progress) -> None:  # fmt: skip
    import faiss

    from wildserve.vsearch.config import OmegaConfig
    from wildserve.vsearch.experiment import run_experiment
    from wildserve.vsearch.report import markdown_report, plot

    faiss.omp_set_num_threads(jobs)
    with make_progress(console, description_width=44) as bar:
        task = bar.add_task("starting", total=1)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what[:44], completed=done, total=max(total, 1))

        result = run_experiment(
            cfg, index_cfg, train_cfg, OmegaConfig(), baseline_cfg, names, repeats=repeats,
            progress=progress, cache_dir=out / "cache",
        )  # fmt: skip
    data = result.to_json()
    report = markdown_report(data)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_json or out / "results.json", json.dumps(data, indent=1))
    atomic_write_text(out / "report.md", report)
    for p in plot(data, plot_dir or out):
        console.print(f"wrote {p}")
    console.print(report)
    console.print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
