"""``wildserve experiment kunserve``: the KunServe regime map, with progress, a run cache and a report."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from wildserve.config_cli import (
    Jobs,
    ReaderOptions,
    TraceSpecs,
    bounded,
    bounded_option,
    number_list,
    trace_name,
)
from wildserve.experiments.sweep_options import ExecutorOption, RayAddressOption

_SECONDS = {"parser": bounded(float, gt=0), "metavar": "FLOAT"}


def _targets(text: str) -> tuple[tuple[float, float], ...]:
    """``kv/compute,kv/compute`` shares, each in (0, 1]."""
    from wildserve.errors import ConfigError

    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            kv, compute = (float(x) for x in item.split("/"))
        except ValueError:
            raise ConfigError(
                f"--base-targets: '{item}' is not KV/COMPUTE, e.g. 0.5/0.35"
            ) from None
        if not (0 < kv <= 1 and 0 < compute <= 1):
            raise ConfigError(f"--base-targets: shares must be in (0, 1], got {item}")
        out.append((kv, compute))
    if not out:
        raise ConfigError("--base-targets: none given")
    return tuple(out)


def _pick(text: str, known: dict, what: str) -> list:
    from wildserve.errors import ConfigError

    if text == "all":
        return list(known.values())
    out = []
    for name in (t.strip() for t in text.split(",") if t.strip()):
        if name not in known:
            raise ConfigError(f"unknown {what} '{name}'; choose from {', '.join(known)}, or all")
        out.append(known[name])
    if not out:
        raise ConfigError(f"no {what} given")
    return out


def kunserve(
    setups: Annotated[str, typer.Option(help="comma-separated setup names, or all")] = "all",
    workloads: Annotated[
        str,
        typer.Option(
            help="comma-separated: azure-conv-x4, azure-code-x16, reasoning, weka; or all "
            "(ignored with --trace)"
        ),
    ] = "all",
    trace: TraceSpecs = None,
    option: ReaderOptions = None,
    systems: Annotated[
        str | None, typer.Option(help="comma-separated systems (default: the four compared)")
    ] = None,
    factors: Annotated[
        str | None, typer.Option(help="burst factors: a,b,c or start:stop:step (default 2:6:0.25)")
    ] = None,
    base_targets: Annotated[
        str | None,
        typer.Option(
            help="base loads as KV/prefill shares vLLM may use without a burst, e.g. 0.5/0.35,0.7/0.5"
        ),
    ] = None,
    burst_start: Annotated[float | None, typer.Option(help="burst start (s)", **_SECONDS)] = None,
    burst_len: Annotated[float | None, typer.Option(help="burst length (s)", **_SECONDS)] = None,
    duration: Annotated[
        float | None, typer.Option(help="simulated arrivals (s)", **_SECONDS)
    ] = None,
    router: Annotated[str | None, typer.Option(help="router of every system but Llumnix")] = None,
    seed: Annotated[
        int, bounded_option(int, "draws resampled outputs and WEKA's session starts", ge=0)
    ] = 0,
    out: Annotated[
        Path,
        typer.Option(help="run folder: results.json, report.md and the figures (atomic writes)"),
    ] = Path("results/kunserve"),
    report: Annotated[Path | None, typer.Option(hidden=True)] = None,  # old: the report elsewhere
    notes: Annotated[
        Path | None,
        typer.Option(help="markdown written by hand from these runs, placed after the timing"),
    ] = None,
    cache_dir: Annotated[
        Path, typer.Option(help="finished runs are kept here and reused (resume)")
    ] = Path("results/kunserve-runs"),
    no_cache: Annotated[bool, typer.Option(help="neither read nor write the run cache")] = False,
    cached_only: Annotated[
        bool,
        typer.Option(help="run nothing: report the points whose runs are all in the run cache"),
    ] = False,
    jobs: Jobs = 0,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """The KunServe regime map: burst size swept finely per workload, setup and base load."""
    from wildserve.console import RunCounter, make_console, make_progress
    from wildserve.errors import ConfigError
    from wildserve.experiments.kunserve import (
        SETUPS,
        WORKLOADS,
        KunServeExperiment,
        Workload,
        run_experiment,
        run_key,
    )
    from wildserve.experiments.kunserve_analysis import (
        complete_points,
        group_by_pair,
        headline,
        points,
    )
    from wildserve.experiments.kunserve_report import write_report
    from wildserve.experiments.runcache import ReadOnlyRunCache, RunCache
    from wildserve.experiments.runner import make_executor
    from wildserve.io import atomic_write_json
    from wildserve.overload.systems import SYSTEMS
    from wildserve.routing import ROUTING_POLICIES
    from wildserve.workload.cli import parse_options

    if seed < 0 or jobs < 0:
        raise ConfigError(f"--seed and --jobs must be >= 0, got {seed} and {jobs}")
    # a --trace replaces the named workloads: its arrivals from the start, at its own rate
    chosen = [Workload(trace_name(t), t, trace_offset_s=0.0) for t in trace or ()]
    reader_options = parse_options(option or [])
    exp = KunServeExperiment(
        setups=_pick(setups, {s.name: s for s in SETUPS}, "setup"),
        workloads=[
            dataclasses.replace(w, options={**w.options, **reader_options})
            for w in chosen or _pick(workloads, {w.name: w for w in WORKLOADS}, "workload")
        ],
        seed=seed,
    )
    if systems is not None:
        exp.systems = tuple(s.strip() for s in systems.split(",") if s.strip())
        for s in exp.systems:
            SYSTEMS.get(s)  # fail before any work on a typo
        if "kunserve" not in exp.systems or len(exp.systems) < 2:
            raise ConfigError("--systems needs kunserve and at least one baseline")
    if factors is not None:
        exp.factors = number_list(factors, "--factors", ranges=True, ge=1)  # burst factors
    if base_targets is not None:
        exp.base_targets = _targets(base_targets)
    for name, value in (
        ("burst_start_s", burst_start),
        ("burst_s", burst_len),
        ("duration_s", duration),
    ):
        if value is not None:
            if not value > 0:
                raise ConfigError(f"--{name.removesuffix('_s').replace('_', '-')} must be > 0")
            setattr(exp, name, value)
    if router is not None:
        ROUTING_POLICIES.get(router)
        exp.router = router
    if not exp.pairs():
        raise ConfigError("no (workload, setup) pair to run: every chosen setup skips them")
    report = report if report is not None else out / "report.md"
    console = make_console()
    if notes is not None and not notes.is_file():
        raise ConfigError(f"--notes: {notes} is not a file")
    runner = make_executor(executor, jobs, ray_address)
    jobs = getattr(runner, "jobs", 1)  # Ray: reported per core below
    if cached_only and no_cache:
        raise ConfigError("--cached-only reads the run cache: it cannot go with --no-cache")
    cache = None if no_cache else (ReadOnlyRunCache if cached_only else RunCache)(cache_dir)
    t0, cpu0 = time.perf_counter(), time.process_time()
    with make_progress(console) as bar:
        runs = RunCounter(console, bar, runner)
        try:
            doc = run_experiment(exp, runner, runs.on_progress, runs.on_plan, cache)
        except KeyError:
            if not cached_only:
                raise
            raise ConfigError(
                f"--cached-only: a calibration run of this sweep is not in {cache_dir}"
            ) from None
    wall = time.perf_counter() - t0
    missing: list[str] = []
    if cached_only:
        doc, missing = complete_points(doc)
        if not doc["runs"]:
            raise ConfigError(f"--cached-only: no point of this sweep is complete in {cache_dir}")
    cpu = sum(r["summary"]["cpu_s"] for r in (*doc["runs"], *doc["calibration"]))
    doc["config"]["cpu_s"] = cpu
    every = [*doc["runs"], *doc["calibration"]]
    cached = sum(r["summary"].get("cached", False) for r in every)
    timing = (
        f"Sweep: {len(doc['runs'])} runs + {len(doc['calibration'])} calibration runs; computing "
        f"them took {cpu:.0f} s of CPU time ({cpu / 60 / jobs:.1f} min on {jobs} cores). "
        f"This invocation took {wall:.0f} s of wall time, {cached} of the runs read from the run "
        f"cache `{cache_dir}`. The machine was shared with other work while this ran, so wall "
        "time overstates what the sweep needs."
    )
    if missing:
        timing += (
            f" Rendered with --cached-only: {len(missing)} points of the sweep had not run and are "
            f"left out ({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''})."
        )
    featured = {}
    pts = points(doc)
    index = {r["key"]: r for r in doc["runs"]}
    for (w, s), ps in group_by_pair(pts).items():
        h = headline(ps)
        if h is None or any(k.startswith(f"{w} ") for k in featured):
            continue
        b = h["best"]
        title = f"{w} on {s}, base {b['base']:g}x, burst x{b['factor']:g}"
        featured[title] = {
            name: index[run_key(w, s, b["level"], b["factor"], name)] for name in exp.systems
        }
    command = "wildserve experiment kunserve " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    reading = notes.read_text() if notes is not None else ""
    path = write_report(doc, report, out, command.strip(), timing, featured, reading)
    keep = {id(r) for runs_ in featured.values() for r in runs_.values()}
    slim = dict(doc)
    slim["runs"] = [
        r
        if id(r) in keep
        else {**r, "summary": {k: v for k, v in r["summary"].items() if k != "per_second"}}
        for r in doc["runs"]
    ]
    slim["wall_s"], slim["parent_cpu_s"] = wall, time.process_time() - cpu0
    atomic_write_json(out / "results.json", slim)
    console.print(f"report: {path} ({wall:.0f} s wall, {cpu:.0f} s simulation CPU)")
