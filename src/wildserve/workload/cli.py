"""``wildserve trace ...``: look at a workload before simulating it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from wildserve.config_cli import Fields, ReaderOptions, bounded, config_options
from wildserve.console import make_console
from wildserve.errors import ConfigError
from wildserve.workload import transforms
from wildserve.workload.formats import BUILTINS, FORMATS, iter_trace
from wildserve.workload.selection import TraceSelection
from wildserve.workload.stats import TraceSummary, summarize

app = typer.Typer(help="Inspect workload traces.", no_args_is_help=True)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE reader options; values become int, float or None (``none``) when they parse as one."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"reader option '{pair}' is not KEY=VALUE")
        value: Any = text
        if text.lower() == "none":
            value = None
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        options[key] = value
    return options


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def _table(spec: str, s: TraceSummary) -> Table:
    table = Table(title=f"trace {spec}", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests", f"{s.num_requests:,}")
    table.add_row("duration", f"{s.duration_s:,.1f} s")
    table.add_row("arrival rate", f"{s.rate:,.3f} req/s")
    for name, pcts in (("prompt tokens", s.prompt_pcts), ("output tokens", s.output_pcts)):
        if pcts:
            table.add_row(name, "  ".join(f"{k} {_fmt(v)}" for k, v in pcts.items()))
    table.add_row("sessions", f"{s.num_sessions:,}" if s.num_sessions else "none")
    if s.num_sessions:
        table.add_row("requests / session", f"{s.num_requests / s.num_sessions:,.2f}")
    if s.categories:
        top = s.categories.most_common(6)
        text = ", ".join(f"{name} {n / s.num_requests:.1%}" for name, n in top)
        if len(s.categories) > len(top):
            text += f", +{len(s.categories) - len(top)} more"
        table.add_row("categories", text)
    else:
        table.add_row("categories", "none")
    if s.block_reuse is None:
        table.add_row("block reuse", "no prefix ids")
    else:
        sizes = ", ".join(f"{b}" for b in sorted(s.block_sizes))
        table.add_row("block size", f"{sizes} tokens")
        table.add_row(
            "block reuse",
            f"{s.block_reuse:.1%} of {s.num_prompt_blocks:,} full prompt blocks seen before",
        )
    return table


@app.command("info")
@config_options(selection=Fields(TraceSelection, only=("trace", "rate_scale", "max_requests")))
def info(
    selection: TraceSelection,
    spec: Annotated[
        str | None, typer.Argument(help="the trace spec, as --trace (either one)")
    ] = None,
    option: ReaderOptions = None,
    limit: Annotated[  # old spelling of --max-requests
        int | None, typer.Option(parser=bounded(int, ge=1), metavar="INT", hidden=True)
    ] = None,
) -> None:
    """Requests, duration, rate, length percentiles, sessions, categories and prefix-block reuse."""
    from wildserve.workload.selection import require_requests

    spec = spec or selection.trace
    limit = limit or selection.max_requests
    reader_options = parse_options(option or [])
    requests = iter_trace(spec, **reader_options)
    requests = transforms.rate_scale(requests, selection.rate_scale)
    if limit:
        requests = transforms.limit(requests, limit)
    console = make_console()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("reading 0 requests", total=None)

        def counted(reqs):
            for i, r in enumerate(reqs, start=1):
                if i % 4096 == 0:
                    progress.update(task, description=f"reading {i:,} requests")
                yield r

        summary = summarize(counted(requests))
    if summary.num_requests == 0:
        require_requests([], spec, reader_options)
    console.print(_table(spec, summary))


@app.command("list")
def list_traces() -> None:
    """The builtin traces and the formats a spec can name."""
    console = make_console()
    table = Table(title="builtin traces (builtin:NAME)", header_style="bold")
    table.add_column("name")
    table.add_column("format")
    table.add_column("description")
    for name in BUILTINS:
        b = BUILTINS.get(name)
        table.add_row(name, b.format, b.description)
    console.print(table)
    table = Table(title="formats (FORMAT:PATH)", header_style="bold")
    table.add_column("format")
    table.add_column("description")
    for name in FORMATS:
        table.add_row(name, FORMATS.get(name).description)
    console.print(table)
