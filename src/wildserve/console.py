"""The CLI's rich console: wide enough for result tables even when output is not a terminal."""

from __future__ import annotations

import time

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


class RunCounter:
    """One 'runs' bar over an experiment's parallel simulations; a log file gets a line per run."""

    def __init__(self, console: Console, bar, executor) -> None:
        """``executor``: a number of local workers, or a sweep executor (local or Ray)."""
        self.console, self.bar = console, bar
        jobs = getattr(executor, "jobs", executor)
        self.where = f"{jobs} in parallel" if isinstance(jobs, int) else f"on {executor.name}"
        self.task = bar.add_task("runs", total=1)
        self.done: set[str] = set()
        self.t0 = time.perf_counter()

    def on_plan(self, runs, sizes: dict | None = None) -> None:
        self.bar.update(self.task, total=len(runs))
        over = f" over {sizes} requests" if sizes else ""
        self.console.print(f"{len(runs)} simulations{over}, {self.where}")

    def on_progress(self, key: str, done: int, total: int) -> None:
        if done < total or key in self.done:
            return
        self.done.add(key)
        self.bar.update(self.task, completed=len(self.done))
        if not self.console.is_terminal:
            elapsed = time.perf_counter() - self.t0
            self.console.print(f"[{len(self.done)}] {key} done ({elapsed:.0f} s)")
