"""Results of policy runs as a rich table, CDF plots and the JSON document ``simulate`` writes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from wildserve.io import save_figure
from wildserve.metrics import RequestMetrics


def _fmt(x: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}"


def results_table(summaries: Mapping[str, dict], title: str = "Simulation results"):
    """A rich table of per-policy summaries (seconds shown as s, TPOT as ms)."""
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for col in (
        "policy",
        "finished",
        "TTFT mean s",
        "TTFT p50 s",
        "TTFT p99 s",
        "TPOT mean ms",
        "TPOT p99 ms",
        "E2E mean s",
        "queue mean s",
        "hit ratio",
        "SLO %",
        "wall s",
    ):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, s in summaries.items():
        table.add_row(
            name,
            str(s["finished"]),
            _fmt(s["ttft"]["mean"]),
            _fmt(s["ttft"]["p50"]),
            _fmt(s["ttft"]["p99"]),
            _fmt(s["tpot"]["mean"], 1e3, 1),
            _fmt(s["tpot"]["p99"], 1e3, 1),
            _fmt(s["e2e"]["mean"]),
            _fmt(s["queueing"]["mean"]),
            _fmt(s["hit_ratio"]),
            _fmt(s["slo_attainment"], 100, 1),
            _fmt(s.get("wall_s"), 1, 1),
        )
    return table


def plot_cdfs(metrics: Mapping[str, RequestMetrics], path: str | Path, title: str = "") -> Path:
    """One PNG with the CDFs of TTFT, TPOT and E2E latency, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, m in metrics.items():
        for ax, (label, values, scale) in zip(
            axes,
            (
                ("TTFT (s)", m.ttft, 1.0),
                ("TPOT (ms)", m.tpot, 1e3),
                ("E2E latency (s)", m.e2e, 1.0),
            ),
            strict=True,
        ):
            v = np.sort(values[np.isfinite(values)]) * scale
            if v.size:
                ax.plot(v, np.arange(1, v.size + 1) / v.size, label=name)
            ax.set_xlabel(label)
    for ax in axes:
        ax.set_ylabel("CDF")
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(loc="lower right")
    if title:
        fig.suptitle(title)
    out = save_figure(fig, path, dpi=120)
    return out
