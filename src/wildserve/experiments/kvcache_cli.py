"""The ``wildserve experiment kvcache`` command: parse, build the config, run, write the report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from wildserve.config_cli import Jobs, MaxRequests, ReaderOptions, TraceSpecs, bounded
from wildserve.experiments.sweep_options import ExecutorOption, RayAddressOption


def _items(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def kvcache(
    trace: TraceSpecs = None,  # default: the Mooncake and WEKA builtins
    option: ReaderOptions = None,
    capacities: Annotated[
        str | None, typer.Option(help="cache sizes as shares of the working set, e.g. 1%,2%,0.05")
    ] = None,
    policies: Annotated[
        str | None, typer.Option(help="eviction policy specs, comma-separated (e.g. lru,wa,opt)")
    ] = None,
    schemes: Annotated[
        str | None,
        typer.Option(help="category schemes, comma-separated; the first is the main one"),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="run folder: kvcache.json, kvcache.md, the PNGs and runs/ (atomic writes)"
        ),
    ] = Path("results/kvcache"),
    report: Annotated[Path | None, typer.Option(hidden=True)] = None,  # old: the report elsewhere
    notes: Annotated[
        Path | None, typer.Option(help="a hand-written markdown reading, appended to the report")
    ] = None,
    max_requests: MaxRequests = 0,
    leaf: Annotated[
        bool, typer.Option(help="also replay every policy leaf-only (SGLang), main scheme only")
    ] = True,
    offline: Annotated[bool, typer.Option(help="run the offline capacity sweeps")] = True,
    cluster: Annotated[bool, typer.Option(help="run the cluster simulations")] = True,
    cluster_trace: Annotated[
        str | None, typer.Option(help="trace of the cluster part (default: Mooncake)")
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(
            parser=bounded(int, ge=1), metavar="INT", help="serving instances in the cluster"
        ),
    ] = None,
    jobs: Jobs = 0,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    cached_only: Annotated[
        bool, typer.Option(help="run nothing: report the finished tasks in OUT/runs")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="reuse finished tasks kept in OUT/runs (same code and settings)")
    ] = True,
) -> None:
    """Hit ratio vs capacity for every eviction policy and category scheme on any traces (offline
    replay), queued TTFT in the cluster simulator at two KV capacities (with and without a
    host-memory tier), and the traces' WA indicators; resumable."""
    from wildserve.console import make_console, make_progress
    from wildserve.experiments.kvcache import KVCacheExperiment, parse_fractions, run
    from wildserve.experiments.kvcache_report import write
    from wildserve.experiments.runcache import ReadOnlyRunCache, RunCache
    from wildserve.experiments.runner import make_executor
    from wildserve.workload.cli import parse_options

    given: dict[str, Any] = {"max_requests": max_requests, "leaf_variants": leaf}
    if option:
        given["reader_options"] = parse_options(option)
    if trace:
        given["traces"] = tuple(trace)
        given["indicator_traces"] = ()  # a user's own traces: only theirs
    if capacities is not None:
        given["fractions"] = parse_fractions(capacities)
    for name, value in (("policies", _items(policies)), ("schemes", _items(schemes))):
        if value is not None:
            given[name] = value
    if cluster_trace is not None:
        given["cluster_trace"] = cluster_trace
    if instances is not None:
        given["instances"] = instances
    cfg = KVCacheExperiment(**given)
    console = make_console()
    with make_progress(console, 58) as bar:
        ids: dict[str, Any] = {}

        def on_progress(key: str, done: int, total: int) -> None:
            if key not in ids:
                ids[key] = bar.add_task(key, total=total)
            bar.update(ids[key], completed=done, total=total)

        runs = out / "runs"
        cache = ReadOnlyRunCache(runs) if cached_only else RunCache(runs) if resume else None
        results = run(cfg, make_executor(executor, jobs, ray_address), on_progress, offline,
                      cluster, cache)  # fmt: skip
    text = notes.read_text() if notes is not None else ""
    path = write(results, out, "wildserve " + shlex.join(sys.argv[1:]), report, text)
    console.print(f"report: {path}")
