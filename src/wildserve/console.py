"""The CLI's rich console: wide enough for result tables even when output is not a terminal."""

from __future__ import annotations

from rich.console import Console


def make_console(min_width: int = 160) -> Console:
    console = Console()
    if not console.is_terminal and console.width < min_width:
        console = Console(width=min_width)
    return console


def make_progress(console: Console, description_width: int = 20):
    """The progress bar every long command shows: label, bar, done/total, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"{{task.description:>{description_width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
