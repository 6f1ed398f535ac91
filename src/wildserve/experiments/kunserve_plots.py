"""Figures of the KunServe report: the regime map per workload and timelines of featured runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wildserve.io import save_figure

_MARKERS = ("o", "s", "^", "D")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cost(pair: tuple[float | None, float | None]) -> float:
    """KunServe's value over vLLM's (NaN when either is missing)."""
    v, k = pair
    return k / v if v and k is not None else np.nan


def plot_regime_map(pts: list[dict], setups: list[dict], workload: str, path: Path) -> Path:
    """Ratios, TBT cost and vLLM's blockers against the excess demand over freed memory."""
    plt = _plt()
    names = [s["name"] for s in setups if any(p["setup"] == s["name"] for p in pts)]
    fig, axes = plt.subplots(3, len(names), figsize=(5.2 * len(names), 10), squeeze=False)
    for col, name in enumerate(names):
        sel = [p for p in pts if p["setup"] == name and p["excess"] is not None]
        targets = sorted({p["level"] for p in sel})
        facts = next(s for s in setups if s["name"] == name)
        freed = facts["freed_blocks"]
        pairs = freed.get("2", 0) / max(freed.values()) if freed else None
        for j, t in enumerate(targets):
            row = sorted((p for p in sel if p["level"] == t), key=lambda p: p["factor"])
            x = np.array([p["excess"] for p in row])
            m = _MARKERS[j % len(_MARKERS)]
            lab = f"base {row[0]['base']:g}x ({row[0]['bound']}-bound)"
            for key, style, what in (
                ("ratio", "-", "whole p99"),
                ("burst_ratio", "--", "burst p99"),
                ("burst999_ratio", ":", "burst p99.9"),
            ):
                y = np.array([p[key] or np.nan for p in row], dtype=float)
                axes[0, col].plot(x, y, style, marker=m, ms=3, label=f"{what}, {lab}")
            for key, style in (("tbt_p50", "-"), ("tbt_p99", "--")):
                y = np.array([_cost(p[key]) for p in row], dtype=float)
                axes[1, col].plot(x, y, style, marker=m, ms=3, label=f"{key}, {lab}")
            kv = [p["vllm_blockers"]["burst"]["kv_blocks"] * 100 for p in row]
            budget = [p["vllm_blockers"]["burst"]["token_budget"] * 100 for p in row]
            axes[2, col].plot(x, kv, "-", marker=m, ms=3, label=f"KV blocks, {lab}")
            axes[2, col].plot(x, budget, "--", marker=m, ms=3, label=f"token budget, {lab}")
            seats = [p["vllm_blockers"]["burst"].get("seats", 0.0) * 100 for p in row]
            if any(seats):  # the seat cap (max_num_seqs) binds instead of KV, e.g. Llama-3-70B
                axes[2, col].plot(x, seats, ":", marker=m, ms=3, label=f"seats, {lab}")
        for r in range(3):
            ax = axes[r, col]
            ax.axvline(0, color="grey", lw=0.8)
            ax.axvline(1, color="grey", lw=0.8)
            if pairs:
                ax.axvline(pairs, color="grey", lw=0.8, ls=":")
            ax.grid(alpha=0.3)
        axes[0, col].set_yscale("log")
        axes[0, col].axhline(10, color="red", lw=0.8, ls="--")
        axes[0, col].axhline(1, color="black", lw=0.8)
        axes[0, col].set_title(name, fontsize=10)
        axes[0, col].set_ylabel("best baseline p99 TTFT / KunServe's")
        axes[1, col].axhline(1, color="black", lw=0.8)
        axes[1, col].set_ylabel("TBT KunServe / vLLM")
        axes[2, col].set_ylabel("vLLM step time blocked (%), burst window")
        axes[2, col].set_xlabel(
            "excess demand over freed memory (dotted: pairs' freed memory)", fontsize=8
        )
        axes[0, col].legend(fontsize=6)
        axes[1, col].legend(fontsize=6)
        axes[2, col].legend(fontsize=6)
    fig.suptitle(f"KunServe regime map: {workload}")
    return save_figure(fig, path, dpi=80)


def plot_timelines(
    runs: dict[str, dict], title: str, window: tuple[float, float], path: Path
) -> Path:
    """Per second: queued requests, KV demand / capacity, layers dropped, p99 TTFT, KV-blocked time."""
    plt = _plt()
    panels = (
        ("num_waiting", "queued requests", 1.0, False),
        ("kv_demand", "KV demand / capacity", 1.0, False),
        ("layers_dropped", "layers dropped (GPUs x layers)", 1.0, False),
        ("tail_ttft_p99", "p99 TTFT of arrivals (s)", 1.0, True),
        ("kv_blocked", "step time blocked on KV (%)", 100.0, False),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 12), sharex=True)
    for system, r in runs.items():
        ps = r["summary"]["per_second"]
        for ax, (key, _, scale, _) in zip(axes, panels, strict=True):
            y = np.array([np.nan if v is None else v * scale for v in ps[key]], dtype=float)
            x = np.arange(y.size) + 0.5
            ok = np.isfinite(y)
            ax.plot(x[ok], y[ok], label=system, lw=1)
    for ax, (_, label, _, log) in zip(axes, panels, strict=True):
        ax.set_ylabel(label, fontsize=8)
        ax.axvspan(*window, color="grey", alpha=0.15)
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
    axes[-1].set_xlabel("time (s); shaded: the burst window")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=80)
