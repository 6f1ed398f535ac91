"""``wildserve cache ...``: characterize prefix-KV reuse in a trace."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from wildserve.config_cli import (
    Fields,
    OutDir,
    ReaderOptions,
    bounded_option,
    config_options,
)
from wildserve.kvcache.categories import CATEGORY_SCHEMES, DEFAULT_SCHEME
from wildserve.workload.selection import TraceSelection

SCHEME_HELP = (
    "request categories: " + ", ".join(CATEGORY_SCHEMES.names()) + " (NAME@KEY=VALUE overrides a "
    "setting, e.g. type+turn@pool_turn=5)"
)

app = typer.Typer(help="Prefix-KV cache analysis of traces.", no_args_is_help=True)


@app.command("analyze")
@config_options(selection=Fields(TraceSelection, only=("trace", "max_requests")))
def analyze(
    selection: TraceSelection,
    spec: Annotated[
        str | None, typer.Argument(help="the trace spec, as --trace (either one)")
    ] = None,
    out: OutDir = None,
    block_size: Annotated[
        int | None,
        bounded_option(int, "tokens per block (default: the trace's own)", ge=1),
    ] = None,
    scheme: Annotated[str, typer.Option(help=SCHEME_HELP)] = DEFAULT_SCHEME,
    source: Annotated[
        str, typer.Option(help="types and turns: auto, native (the trace's) or inferred")
    ] = "auto",
    option: ReaderOptions = None,
    capacity: Annotated[
        bool, typer.Option(help="search the capacity for 90/95/99% of the ideal hit ratio")
    ] = True,
) -> None:
    """Ideal hit ratio, reuse skew, hit shares, reuse time and probability per category, block
    lifespans and the cache size needed for 90/95/99% of the ideal hit ratio."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from wildserve.console import make_console
    from wildserve.kvcache.analyze import capacity_search, characterize
    from wildserve.kvcache.report import write_report
    from wildserve.kvcache.stream import load_stream
    from wildserve.workload.cli import parse_options
    from wildserve.workload.selection import require_requests

    trace, max_requests = spec or selection.trace, selection.max_requests
    console = make_console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(f"loading {trace}", total=None)
        reader_options = parse_options(option or [])
        requests, stream = load_stream(
            trace, block_size, scheme, max_requests or None, source, **reader_options
        )
        require_requests(requests, trace, reader_options)
        bar.update(task, description=f"characterizing {stream.num_accesses:,} block accesses")
        result = characterize(stream)
        if capacity:
            done = 0

            def tick(policy: str) -> None:
                nonlocal done
                done += 1
                bar.update(task, description=f"capacity search: {done} replays ({policy})")

            capacity_search(stream, result, progress=tick)
        folder = out or Path("results") / ("cache-" + trace.replace(":", "-").replace("/", "_"))
        report = write_report(result, folder, "wildserve " + shlex.join(sys.argv[1:]))
    table = Table(title=f"{trace}: prefix-block reuse", header_style="bold")
    for col in ("category", "requests", "access share", "ideal hit ratio", "reuse prob.",
                "reuse p50 s"):  # fmt: skip
        table.add_column(col, justify="left" if col == "category" else "right")
    for c in result.categories:
        p50 = c.reuse_time_pcts["p50"]
        table.add_row(c.name, f"{c.num_requests:,}", f"{c.access_share:.1%}",
                      f"{c.ideal_hit_ratio:.1%}", f"{c.reuse_probability:.1%}",
                      "-" if p50 is None else f"{p50:,.1f}")  # fmt: skip
    console.print(table)
    console.print(f"ideal hit ratio {result.ideal_hit_ratio:.1%}; report: {report}")
