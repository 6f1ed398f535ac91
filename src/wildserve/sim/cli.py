"""``wildserve simulate``: replay a trace on a simulated cluster under one or more routing policies."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from wildserve.config_cli import Fields, Jobs, OutDir, OutputJson, ReaderOptions, config_options
from wildserve.engine import EngineConfig
from wildserve.engine.cluster import ClusterConfig
from wildserve.metrics import SloConfig
from wildserve.workload.selection import TraceSelection

# the engine settings simulate exposes (record_token_times is not optional: metrics need it)
ENGINE_FIELDS = Fields(
    EngineConfig,
    exclude=("record_token_times",),
    flags={"enable_prefix_caching": "prefix-caching", "enable_chunked_prefill": "chunked-prefill"},
)


def simulate_one(requests, cfg: ClusterConfig, policy: str, slo: SloConfig):
    """Worker body: one policy, one fresh cluster; returns (summary, metrics)."""
    from wildserve.process_pool import report_progress
    from wildserve.sim.run import run_policy

    def progress(done: int, total: int) -> None:
        report_progress(policy, done, total)

    result = run_policy(requests, cfg, policy, progress=progress)
    metrics = result.metrics()
    summary = metrics.summary(cfg.num_instances, slo.ttft_slo, slo.tpot_slo)
    summary["wall_s"] = result.wall_s
    summary["sim_end_s"] = result.end_s
    summary["preemptions"] = sum(e.num_preemptions for e in result.engines)
    summary["evictions"] = sum(e.load().num_evictions for e in result.engines)
    return summary, metrics


@config_options(
    selection=TraceSelection,
    cluster=Fields(ClusterConfig, flags={"num_instances": "instances"}),
    engine=ENGINE_FIELDS,
    slo=SloConfig,
)
def simulate(
    selection: TraceSelection,
    cluster: ClusterConfig,
    engine: EngineConfig,
    slo: SloConfig,
    option: ReaderOptions = None,
    policy: Annotated[str, typer.Option(help="comma-separated routing policies")] = (
        "round-robin,least-requests"
    ),
    out: OutDir = None,
    output_json: OutputJson = None,
    plot_dir: Annotated[Path | None, typer.Option(hidden=True)] = None,  # old: --out's plots
    jobs: Jobs = 0,
) -> None:
    """Simulate a cluster of LLM serving instances replaying a trace, once per routing policy;
    --out DIR writes results.json and latency_cdf.png into DIR."""
    from wildserve.console import make_console, make_progress
    from wildserve.engine.cluster import build_engines
    from wildserve.errors import ConfigError
    from wildserve.io import atomic_write_json
    from wildserve.process_pool import default_jobs, run_parallel
    from wildserve.report import plot_cdfs, results_table
    from wildserve.routing import ROUTING_POLICIES
    from wildserve.workload.cli import parse_options

    console = make_console()
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    if not policies:
        raise ConfigError("--policy names no policy")
    for p in policies:
        ROUTING_POLICIES.get(p)  # fail before any work on a typo
    cfg = dataclasses.replace(cluster, engine=engine)
    # Fail on a bad model, GPU or memory setting before loading the trace.
    build_engines(dataclasses.replace(cfg, num_instances=1))

    t0 = time.perf_counter()
    reader_options = parse_options(option or [])
    requests = selection.load(reader_options)
    trace = selection.trace
    console.print(
        f"[bold]{len(requests)}[/] requests from {trace} (rate x{selection.rate_scale}), "
        f"{cfg.num_instances} x {cfg.model} on {cfg.gpu} (tp={cfg.tp}), policies: {', '.join(policies)}"
    )
    jobs = jobs or default_jobs(len(policies))
    with make_progress(console) as bar:
        task_ids = {p: bar.add_task(p, total=len(requests)) for p in policies}

        def on_progress(key: str, done: int, total: int) -> None:
            bar.update(task_ids[key], completed=done, total=total)

        tasks = [(p, simulate_one, (requests, cfg, p, slo)) for p in policies]
        outcomes = run_parallel(tasks, jobs, on_progress)
    summaries = {p: s for p, (s, _) in outcomes.items()}
    console.print(
        results_table(summaries, title=f"{trace}: {cfg.num_instances} x {cfg.model} on {cfg.gpu}")
    )
    doc = {
        "policies": summaries,
        "wall_s": time.perf_counter() - t0,
        "requests": len(requests),
        "config": {
            **asdict(selection),
            "reader_options": reader_options,
            **{k: v for k, v in asdict(cfg).items() if k not in ("engine", "num_instances")},
            "instances": cfg.num_instances,
            "engine": asdict(engine),
            "slo": asdict(slo),
        },
    }
    for path in [output_json, out / "results.json" if out else None]:
        if path is not None:
            atomic_write_json(path, doc)
            console.print(f"results: {path}")
    for folder in [plot_dir, out]:
        if folder is not None:
            curves = {p: m for p, (_, m) in outcomes.items()}
            path = plot_cdfs(curves, Path(folder) / "latency_cdf.png", title=trace)
            console.print(f"plot: {path}")
