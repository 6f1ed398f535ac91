"""``wildserve experiment lmetric``: the LMetric reproduction, with a progress bar and a report."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from wildserve.config_cli import (
    Fields,
    Jobs,
    MaxRequests,
    ReaderOptions,
    TraceSpecs,
    config_options,
    number_list,
    trace_name,
)
from wildserve.engine.cluster import ClusterConfig
from wildserve.experiments.sweep_options import ExecutorOption, RayAddressOption

_LOADS = (0.5, 1.0, 1.5, 2.0)  # a --trace's loads unless --rate-scales (arrivals as recorded)


def _parse_seeds(text: str) -> tuple[int | None, ...]:
    from wildserve.errors import ConfigError

    out: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "rec":
            out.append(None)
        elif item.isdigit():
            out.append(int(item))
        else:
            raise ConfigError(f"--seeds: '{item}' is neither a non-negative integer nor 'rec'")
    return tuple(out)


def per_workload(flag: str, values: Sequence[str] | None, names: Sequence[str]) -> dict[str, str]:
    """``--flag 0,1,2`` (every workload) or ``--flag NAME=0,1,2`` (one), repeatable: NAME -> text.

    A later value for the same workload replaces an earlier one, so ``--seeds 0,1,2 --seeds
    weka=0,1,2,3,4`` gives WEKA five seeds and the others three.
    """
    from wildserve.errors import ConfigError

    out: dict[str, str] = {}
    for value in values or ():
        name, sep, text = value.partition("=")
        if not sep:
            out.update(dict.fromkeys(names, value))
        elif name not in names:
            raise ConfigError(f"{flag}: no workload '{name}' in this run ({', '.join(names)})")
        else:
            out[name] = text
    return out


@config_options(
    cluster=Fields(ClusterConfig, only=("num_instances",), flags={"num_instances": "instances"})
)
def lmetric(
    cluster: ClusterConfig,
    workloads: Annotated[
        str, typer.Option(help="comma-separated: mooncake, weka (ignored with --trace)")
    ] = "mooncake,weka",
    models: Annotated[str, typer.Option(help="comma-separated model@gpu setups")] = (
        "qwen2.5-7b@h20,qwen3-30b-a3b@h20"
    ),
    rate_scales: Annotated[
        list[str] | None,
        typer.Option(
            help="override the loads: 0.5,1,2 (every workload) or NAME=0.5,1,2 (one; repeatable)"
        ),
    ] = None,
    seeds: Annotated[
        list[str] | None,
        typer.Option(
            help="override the seeds: 0,1,2 or NAME=0,1,2 (repeatable; 'rec': recorded arrivals)"
        ),
    ] = None,
    policies: Annotated[
        str | None,
        typer.Option(help="comma-separated untuned policies (default: LMetric, ours, baselines)"),
    ] = None,
    linear: Annotated[
        str,
        typer.Option(
            help="tuned linear families: 'family' (its grid) or 'family=v1/v2', comma-separated; '' none"
        ),
    ] = "linear-tuned,linear-new",
    linear_seeds: Annotated[
        int,
        typer.Option(
            min=0, help="run the linear grids on each workload's first N seeds only (0: all)"
        ),
    ] = 0,
    weka: Annotated[
        str, typer.Option(help="trace spec of the WEKA sessions")
    ] = "builtin:weka-claude-code",
    trace: TraceSpecs = None,
    option: ReaderOptions = None,
    max_requests: MaxRequests = 0,
    view_source: Annotated[str, typer.Option(help="exact or router-local")] = "exact",
    zero_score_demo: Annotated[
        bool, typer.Option(help="also run the hot-prompt failure demo")
    ] = True,
    out: Annotated[
        Path, typer.Option(help="run folder: results.json, report.md and the plots (atomic writes)")
    ] = Path("results/lmetric"),
    report: Annotated[Path | None, typer.Option(hidden=True)] = None,  # old: the report elsewhere
    output_json: Annotated[Path | None, typer.Option(hidden=True)] = None,  # old: a JSON elsewhere
    notes: Annotated[
        Path | None, typer.Option(help="a hand-written markdown reading, appended to the report")
    ] = None,
    jobs: Jobs = 0,
    cache_dir: Annotated[
        Path | None, typer.Option(help="keep finished runs here and reuse them (resume); none: off")
    ] = Path("results/lmetric-runs"),
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Every routing policy on the Mooncake and WEKA traces, swept over load; writes a report."""
    import dataclasses

    from wildserve.console import RunCounter, make_console, make_progress
    from wildserve.errors import ConfigError
    from wildserve.experiments.lmetric import (
        DEFAULT_POLICIES,
        DEFAULT_WORKLOADS,
        LMetricExperiment,
        WorkloadSpec,
        parse_linear,
        run_experiment,
        run_zero_score_demo,
    )
    from wildserve.experiments.lmetric_report import write_report
    from wildserve.experiments.runcache import RunCache, cache_dir_option
    from wildserve.experiments.runner import make_executor
    from wildserve.io import atomic_write_json
    from wildserve.routing import ROUTING_POLICIES
    from wildserve.workload.cli import parse_options

    if notes is not None and not notes.is_file():
        raise ConfigError(f"--notes: {notes} is not a file")
    reading = notes.read_text() if notes is not None else ""  # read now: fail before the sweep
    console = make_console()
    known = {w.name: w for w in DEFAULT_WORKLOADS}
    reader_options = parse_options(option or [])
    chosen = []
    for name in workloads.split(",") if not trace else []:
        if name not in known:
            raise ConfigError(f"unknown workload '{name}'; choose from {', '.join(known)}")
        w = known[name]
        if name == "weka":
            w = dataclasses.replace(w, spec=weka)
        chosen.append(w)
    chosen += [WorkloadSpec(trace_name(spec), spec, _LOADS) for spec in trace or ()]
    names = [w.name for w in chosen]
    loads_of = per_workload("--rate-scales", rate_scales, names)
    seeds_of = per_workload("--seeds", seeds, names)
    for i, w in enumerate(chosen):
        if reader_options:
            w = dataclasses.replace(w, options={**w.options, **reader_options})
        if w.name in loads_of:
            w = dataclasses.replace(
                w, rate_scales=number_list(loads_of[w.name], "--rate-scales", ranges=True, gt=0)
            )
        if w.name in seeds_of:
            w = dataclasses.replace(w, seeds=_parse_seeds(seeds_of[w.name]))
        chosen[i] = w
    linear_grids = parse_linear(linear)
    policy_names = tuple(policies.split(",")) if policies else DEFAULT_POLICIES
    for name in policy_names:
        ROUTING_POLICIES.get(name)  # fail on a typo before any work
    setups = []
    for item in models.split(","):
        model, _, gpu = item.partition("@")
        setups.append((model, gpu or "h20"))
    exp = LMetricExperiment(
        workloads=chosen,
        setups=setups,
        num_instances=cluster.num_instances,
        view_source=view_source,
        max_requests=max_requests,
        policies=policy_names,
        linear_grids=linear_grids,
        linear_seeds=linear_seeds,
    )
    runner = make_executor(executor, jobs, ray_address)
    t0 = time.perf_counter()
    with make_progress(console) as bar:
        runs = RunCounter(console, bar, runner)
        cache_path = cache_dir_option(cache_dir)
        cache = RunCache(cache_path) if cache_path is not None else None
        doc, metrics = run_experiment(exp, runner, runs.on_progress, runs.on_plan, cache)
        zero = run_zero_score_demo(executor=runner) if zero_score_demo else None
    doc["wall_s"] = time.perf_counter() - t0
    command = "wildserve experiment lmetric " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    report = report if report is not None else out / "report.md"
    path = write_report(doc, metrics, report, out, command.strip(), zero, reading)
    for json_path in (out / "results.json", output_json):
        if json_path is not None:
            atomic_write_json(json_path, doc)
    console.print(f"report: {path} ({doc['wall_s']:.0f} s)")
