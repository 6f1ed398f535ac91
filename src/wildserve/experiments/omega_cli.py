"""``wildserve experiment omega``: OMEGA vs fixed-ef, LAET and DARTH on any vector set, with a report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from wildserve.config_cli import Fields, bounded, config_options, number_list
from wildserve.io import atomic_write_text
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
_SEED = bounded(int, ge=0)
_POSITIVE = bounded(int, ge=1)


@config_options(
    exp=ExperimentConfig,
    index_cfg=Fields(IndexConfig, only=("metric", "m")),
    train_cfg=Fields(TrainConfig, only=("ef",), fixed={"k_max": 1}),
    baseline_cfg=Fields(BaselineConfig, only=("darth_tune_steps",)),
)
def omega(
    exp: ExperimentConfig,
    index_cfg: IndexConfig,
    train_cfg: TrainConfig,
    baseline_cfg: BaselineConfig,
    dataset: str | None = typer.Option(None, "--dataset", hidden=True),  # old name of --base
    ks: str = typer.Option(",".join(map(str, _EXP.ks)), help="Ks to evaluate, comma-separated"),
    targets: str = typer.Option(
        ",".join(map(str, _EXP.targets)), help="recall targets, comma-separated"
    ),
    ef_caps: str = typer.Option(
        "", help="further beam caps to re-run the learned methods at, e.g. 500,300"
    ),
    methods: str = typer.Option(",".join(ALL_METHODS), help="methods to compare, comma-separated"),
    repeats: int = typer.Option(
        3, help="timing repeats per cell (best and median kept)", parser=_POSITIVE, metavar="INT"
    ),
    threads: int = typer.Option(
        1,
        help="faiss threads for building and ground truth (searches are single-threaded)",
        parser=_POSITIVE,
        metavar="INT",
    ),
    jobs: int | None = typer.Option(None, hidden=True, parser=_POSITIVE),  # old name of --threads
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

    METRICS.get(index_cfg.metric)
    ef = train_cfg.ef
    k_list = number_list(ks, "--ks", int, ge=1, le=ef)
    t_list = number_list(targets, "--targets", gt=0, lt=1)
    caps = number_list(ef_caps, "--ef-caps", int, ge=max(k_list)) if ef_caps.strip() else ()
    weights = _EXP.k_weights if k_list == _EXP.ks else (1.0,) * len(k_list)
    cfg = dataclasses.replace(
        exp, base=dataset or exp.base, ks=k_list, k_weights=weights, targets=t_list, ef_caps=caps
    )
    names = tuple(v.strip() for v in methods.split(",") if v.strip())
    from wildserve.vsearch import baselines, omega  # noqa: F401  (register the methods)
    from wildserve.vsearch.methods import METHODS

    for name in names:
        METHODS.get(name)
    # the learned methods serve K up to the largest asked for
    train_cfg = dataclasses.replace(_TRN, ef=ef, seed=cfg.seed, k_max=max(k_list))
    _run_experiment(cfg, dataclasses.replace(_IDX, metric=index_cfg.metric, m=index_cfg.m),
                    train_cfg, baseline_cfg, names, repeats, jobs or threads, out,
                    output_json, plot_dir, make_console(), make_progress)  # fmt: skip


def _run_experiment(cfg, index_cfg, train_cfg, baseline_cfg, names, repeats, threads, out,
                    output_json, plot_dir, console, make_progress) -> None:  # fmt: skip
    import faiss

    from wildserve.vsearch.config import OmegaConfig
    from wildserve.vsearch.experiment import run_experiment
    from wildserve.vsearch.report import markdown_report, plot

    faiss.omp_set_num_threads(threads)
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
