"""``wildserve simulate``: replay a trace on a simulated cluster under one or more routing policies."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from wildserve.config import field_default as _d
from wildserve.config import field_help as _h
from wildserve.engine import EngineConfig
from wildserve.engine.cluster import ClusterConfig

_ENGINE = {f.name: f for f in fields(EngineConfig)}
_CLUSTER = {f.name: f for f in fields(ClusterConfig)}


def simulate_one(requests, cfg: ClusterConfig, policy: str, ttft_slo: float, tpot_slo: float):
    """Worker body: one policy, one fresh cluster; returns (summary, metrics)."""
    from wildserve.process_pool import report_progress
    from wildserve.sim.run import run_policy

    def progress(done: int, total: int) -> None:
        report_progress(policy, done, total)

    result = run_policy(requests, cfg, policy, progress=progress)
    metrics = result.metrics()
    summary = metrics.summary(cfg.num_instances, ttft_slo, tpot_slo)
    summary["wall_s"] = result.wall_s
    summary["sim_end_s"] = result.end_s
    summary["preemptions"] = sum(e.num_preemptions for e in result.engines)
    summary["evictions"] = sum(e.load().num_evictions for e in result.engines)
    return summary, metrics


def simulate(
    trace: Annotated[str, typer.Option(help="trace spec: builtin:NAME, FORMAT:PATH or a path")] = (
        "builtin:mooncake-conversation"
    ),
    model: Annotated[str, typer.Option(help=_h(_CLUSTER, "model"))] = _d(_CLUSTER, "model"),
    gpu: Annotated[str, typer.Option(help=_h(_CLUSTER, "gpu"))] = _d(_CLUSTER, "gpu"),
    tp: Annotated[int, typer.Option(help=_h(_CLUSTER, "tp"))] = _d(_CLUSTER, "tp"),
    cost_model: Annotated[str, typer.Option(help=_h(_CLUSTER, "cost_model"))] = _d(
        _CLUSTER, "cost_model"
    ),
    instances: Annotated[int, typer.Option(help=_h(_CLUSTER, "num_instances"))] = _d(
        _CLUSTER, "num_instances"
    ),
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="reader option KEY=VALUE, e.g. -o max_idle_s=30"),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Poisson arrivals from this seed: session starts of traces that place them (WEKA), "
            "else the recorded trace re-timed at its own mean rate (default: recorded arrivals)",
        ),
    ] = None,
    rate_scale: Annotated[
        float, typer.Option(help="multiply the arrival rate (2 = twice as fast)")
    ] = 1.0,
    policy: Annotated[str, typer.Option(help="comma-separated routing policies")] = (
        "round-robin,least-requests"
    ),
    max_requests: Annotated[int, typer.Option(help="use only the first N requests (0: all)")] = 0,
    block_size: Annotated[int, typer.Option(help=_h(_ENGINE, "block_size"))] = _d(
        _ENGINE, "block_size"
    ),
    max_num_batched_tokens: Annotated[
        int, typer.Option(help=_h(_ENGINE, "max_num_batched_tokens"))
    ] = _d(_ENGINE, "max_num_batched_tokens"),
    max_num_seqs: Annotated[int, typer.Option(help=_h(_ENGINE, "max_num_seqs"))] = _d(
        _ENGINE, "max_num_seqs"
    ),
    prefix_caching: Annotated[bool, typer.Option(help=_h(_ENGINE, "enable_prefix_caching"))] = _d(
        _ENGINE, "enable_prefix_caching"
    ),
    gpu_memory_utilization: Annotated[
        float, typer.Option(help=_h(_ENGINE, "gpu_memory_utilization"))
    ] = _d(_ENGINE, "gpu_memory_utilization"),
    eviction_policy: Annotated[str, typer.Option(help=_h(_ENGINE, "eviction_policy"))] = _d(
        _ENGINE, "eviction_policy"
    ),
    ttft_slo: Annotated[float, typer.Option(help="TTFT objective (s) for SLO attainment")] = 5.0,
    tpot_slo: Annotated[float, typer.Option(help="TPOT objective (s) for SLO attainment")] = 0.1,
    output_json: Annotated[
        Path | None, typer.Option(help="write results JSON here (atomically)")
    ] = None,
    plot_dir: Annotated[
        Path | None, typer.Option(help="write CDF plots (PNG) into this folder")
    ] = None,
    jobs: Annotated[int, typer.Option(help="policies simulated in parallel (0: one per core)")] = 0,
) -> None:
    """Simulate a cluster of LLM serving instances replaying a trace, once per routing policy."""
    from wildserve.console import make_console, make_progress
    from wildserve.errors import ConfigError
    from wildserve.io import atomic_write_json
    from wildserve.process_pool import default_jobs, run_parallel
    from wildserve.report import plot_cdfs, results_table
    from wildserve.routing import ROUTING_POLICIES
    from wildserve.workload.cli import parse_options
    from wildserve.workload.seeding import load_seeded
    from wildserve.workload.transforms import limit
    from wildserve.workload.transforms import rate_scale as scale_arrivals

    console = make_console()
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    if not policies:
        raise ConfigError("--policy names no policy")
    for p in policies:
        ROUTING_POLICIES.get(p)  # fail before any work on a typo
    engine_cfg = EngineConfig(
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        enable_prefix_caching=prefix_caching,
        gpu_memory_utilization=gpu_memory_utilization,
        eviction_policy=eviction_policy,
    )
    cfg = ClusterConfig(
        model=model,
        gpu=gpu,
        tp=tp,
        num_instances=instances,
        cost_model=cost_model,
        engine=engine_cfg,
    )
    from wildserve.engine.cluster import build_engines

    # Fail on a bad model, GPU or memory setting before loading the trace.
    build_engines(dataclasses.replace(cfg, num_instances=1))

    t0 = time.perf_counter()
    reader_options = parse_options(option or [])
    requests = load_seeded(trace, seed, reader_options)
    if not requests:
        raise ConfigError(f"trace {trace} has no requests")
    if max_requests:
        requests = list(limit(requests, max_requests))
    requests = list(scale_arrivals(requests, rate_scale))
    console.print(
        f"[bold]{len(requests)}[/] requests from {trace} (rate x{rate_scale}), {instances} x {model} "
        f"on {gpu} (tp={tp}), policies: {', '.join(policies)}"
    )
    jobs = jobs or default_jobs(len(policies))
    with make_progress(console) as bar:
        task_ids = {p: bar.add_task(p, total=len(requests)) for p in policies}

        def on_progress(key: str, done: int, total: int) -> None:
            bar.update(task_ids[key], completed=done, total=total)

        tasks = [(p, simulate_one, (requests, cfg, p, ttft_slo, tpot_slo)) for p in policies]
        outcomes = run_parallel(tasks, jobs, on_progress)
    summaries = {p: s for p, (s, _) in outcomes.items()}
    console.print(results_table(summaries, title=f"{trace}: {instances} x {model} on {gpu}"))
    wall = time.perf_counter() - t0
    if output_json is not None:
        doc = {
            "policies": summaries,
            "wall_s": wall,
            "requests": len(requests),
            "config": {
                "trace": trace,
                "reader_options": reader_options,
                "seed": seed,
                "model": model,
                "gpu": gpu,
                "tp": tp,
                "cost_model": cost_model,
                "instances": instances,
                "rate_scale": rate_scale,
                "engine": {f: getattr(engine_cfg, f) for f in _ENGINE},
            },
        }
        atomic_write_json(output_json, doc)
        console.print(f"results: {output_json}")
    if plot_dir is not None:
        path = plot_cdfs(
            {p: m for p, (_, m) in outcomes.items()},
            Path(plot_dir) / "latency_cdf.png",
            title=trace,
        )
        console.print(f"plot: {path}")
