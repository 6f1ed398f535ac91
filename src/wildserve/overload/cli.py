"""``wildserve experiment kunserve``: KunServe and its baselines on burst scenarios, with a report."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from wildserve.experiments.kunserve import KunServeExperiment

_EXP = {f.name: f for f in dataclasses.fields(KunServeExperiment)}


def kunserve(
    setups: Annotated[
        str, typer.Option(help="comma-separated setup names (see the report), or all")
    ] = "all",
    traces: Annotated[
        str, typer.Option(help="comma-separated: azure-conv, azure-code, mooncake")
    ] = ("azure-conv,azure-code,mooncake"),
    factors: Annotated[str | None, typer.Option(help="burst load factors, e.g. 2,3")] = None,
    systems: Annotated[
        str | None, typer.Option(help="comma-separated systems (default: all)")
    ] = None,
    burst_start: Annotated[float | None, typer.Option(help="burst start (s)")] = None,
    burst_len: Annotated[float | None, typer.Option(help="burst length (s)")] = None,
    duration: Annotated[float | None, typer.Option(help="simulated arrivals (s)")] = None,
    router: Annotated[str, typer.Option(help="router of every system but Llumnix")] = _EXP[
        "router"
    ].default,
    report: Annotated[Path, typer.Option(help="markdown report path")] = Path(
        "docs/results/kunserve.md"
    ),
    output_json: Annotated[Path | None, typer.Option(help="write every run here")] = None,
    diagnostics: Annotated[
        bool, typer.Option(help="also run the diagnostic scenario (long outputs, fixed degrees)")
    ] = True,
    jobs: Annotated[int, typer.Option(help="simulations in parallel (0: one per core)")] = 0,
) -> None:
    """Bursts on the Azure and Mooncake traces: KunServe against vLLM, InferCept and Llumnix."""

    from wildserve.console import RunCounter, make_console, make_progress
    from wildserve.errors import ConfigError
    from wildserve.experiments.kunserve import (
        BASE_SCALES,
        BURST_FACTORS,
        SETUPS,
        SYSTEM_NAMES,
        KunServeExperiment,
        default_scenarios,
        run_experiment,
    )
    from wildserve.experiments.kunserve_analysis import analysis_lines
    from wildserve.experiments.kunserve_report import write_report
    from wildserve.io import atomic_write_json
    from wildserve.overload.systems import SYSTEMS
    from wildserve.routing import ROUTING_POLICIES
    from wildserve.sim.parallel import default_jobs

    console = make_console()
    known = {s.name: s for s in SETUPS}
    chosen = list(SETUPS) if setups == "all" else []
    if setups != "all":
        for name in setups.split(","):
            if name not in known:
                raise ConfigError(f"unknown setup '{name}'; choose from {', '.join(known)}")
            chosen.append(known[name])
    names = [t.strip() for t in traces.split(",") if t.strip()]
    for t in names:
        if t not in BASE_SCALES:
            raise ConfigError(f"unknown trace '{t}'; choose from {', '.join(BASE_SCALES)}")
    system_names = tuple(systems.split(",")) if systems else SYSTEM_NAMES
    for s in system_names:
        SYSTEMS.get(s)  # fail before any work on a typo
    ROUTING_POLICIES.get(router)
    burst_factors = tuple(float(x) for x in factors.split(",")) if factors else BURST_FACTORS
    scenarios = default_scenarios({t: BASE_SCALES[t] for t in names}, burst_factors)
    overrides = {
        k: v
        for k, v in (
            ("burst_start_s", burst_start),
            ("burst_s", burst_len),
            ("duration_s", duration),
        )
        if v is not None
    }
    scenarios = [dataclasses.replace(sc, **overrides) for sc in scenarios]
    exp = KunServeExperiment(
        setups=chosen, scenarios=scenarios, systems=system_names, router=router
    )
    if not diagnostics:
        exp.diagnostics = ()
    jobs = jobs or default_jobs(64)
    t0 = time.perf_counter()
    with make_progress(console) as bar:
        runs = RunCounter(console, bar, jobs)
        doc = run_experiment(exp, jobs, runs.on_progress, runs.on_plan)
    doc["wall_s"] = time.perf_counter() - t0
    command = "wildserve experiment kunserve " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    path = write_report(
        doc, report, report.parent / "kunserve", command.strip(), analysis_lines(doc)
    )
    if output_json is not None:
        atomic_write_json(output_json, doc)
    console.print(f"report: {path} ({doc['wall_s']:.0f} s)")
