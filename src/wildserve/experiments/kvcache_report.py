"""Tables and plots of ``wildserve experiment kvcache`` (matplotlib is imported only here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from wildserve.experiments.kvcache import NO_HISTORY
from wildserve.io import atomic_write_json, atomic_write_text, save_figure

MIN_GAP = 0.005  # OPT within half a point of LRU: no gap worth a share (shown as "-")


def gap_closed(x: float, lru: float, opt: float) -> float | None:
    """Share of the LRU -> OPT hit-ratio gap that ``x`` closes (negative: worse than LRU)."""
    gap = opt - lru
    return None if gap < MIN_GAP else (x - lru) / gap


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _slug(trace: str) -> str:
    return trace.replace("builtin:", "").replace(":", "-").replace("/", "_")


def sweep_table(rows: dict[str, list[dict]], variant: str) -> list[str]:
    """Markdown rows: one per capacity, hit ratios per policy and the gap WA / RWA close."""
    suffix = ":leaf" if variant == "leaf" else ""
    names = [s for s in rows if s.endswith(suffix) and (suffix or ":" not in s)]
    names = [s for s in names if s != NO_HISTORY] + (
        [NO_HISTORY] if not suffix and NO_HISTORY in rows else []
    )
    lru, opt = rows["lru" + suffix], rows["opt" + suffix]
    closers = [s for s in ("wa" + suffix, "rwa" + suffix, NO_HISTORY) if s in names]
    head = ["capacity (share of working set)", *names, *(f"{s} gap closed" for s in closers)]
    out = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for i, base in enumerate(lru):
        cells = [f"{base['capacity']:,} ({base['fraction']:.0%})"]
        cells += [_pct(rows[s][i]["hit_ratio"]) for s in names]
        for s in closers:
            g = gap_closed(rows[s][i]["hit_ratio"], base["hit_ratio"], opt[i]["hit_ratio"])
            cells.append("-" if g is None else f"{g:+.0%}")
        out.append("| " + " | ".join(cells) + " |")
    return out


def cluster_table(runs: list[dict], working_set_blocks: int, instances: int) -> list[str]:
    head = ["policy", "KV blocks / instance (cluster share of working set)", "host GB", "hit ratio",
            "TTFT mean s", "p50", "p90", "p99", "queueing mean s", "evictions", "host-hit blocks"]  # fmt: skip
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in sorted(runs, key=lambda r: (-r["blocks_per_instance"], r["host_memory_gb"])):
        share = r["blocks_per_instance"] * instances / max(1, working_set_blocks)
        t = r["ttft"]
        out.append(
            f"| {r['policy']} | {r['blocks_per_instance']:,} ({share:.0%}) | "
            f"{r['host_memory_gb']:g} | {r['hit_ratio']:.1%} | {t['mean']:.2f} | {t['p50']:.2f} | "
            f"{t['p90']:.2f} | {t['p99']:.2f} | {r['queueing']['mean']:.2f} | "
            f"{r['evictions']:,} | {r['host_hit_blocks']:,} |"
        )
    return out


def plot_sweep(trace: str, rows: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors: dict[str, str] = {}
    for spec, data in rows.items():
        base = spec.split(":")[0]
        x = [d["fraction"] for d in data]
        y = [d["hit_ratio"] for d in data]
        style = "--" if spec.endswith(":leaf") else (":" if spec == NO_HISTORY else "-")
        (line,) = ax.plot(x, y, style, marker="o", ms=3, label=spec, color=colors.get(base))
        colors.setdefault(base, line.get_color())
    ax.set(xscale="log", xlabel="capacity / ideal working set", ylabel="block hit ratio",
           title=f"{trace}: hit ratio vs capacity (dashed: leaf-only)")  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path, dpi=110)
    return path


def plot_cluster(runs: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(
        {(r["blocks_per_instance"], r["host_memory_gb"]) for r in runs}, key=lambda g: (-g[0], g[1])
    )
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(policies))
    for k, p in enumerate(policies):
        for ax, stat in zip(axes, ("mean", "p90"), strict=True):
            vals = []
            for g in groups:
                match = [r for r in runs if r["policy"] == p and
                         (r["blocks_per_instance"], r["host_memory_gb"]) == g]  # fmt: skip
                vals.append(match[0]["ttft"][stat] if match else np.nan)
            ax.bar(np.arange(len(groups)) + k * width, vals, width, label=p)
    labels = [f"{b:,} blk" + (f"\n+{h:g} GB host" if h else "") for b, h in groups]
    for ax, stat in zip(axes, ("mean", "p90"), strict=True):
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, labels, fontsize=8)
        ax.set(ylabel=f"TTFT {stat} (s)", title=f"queued TTFT {stat} by KV capacity per instance")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.2)
    axes[0].legend(fontsize=8, ncol=len(policies), loc="upper left")
    save_figure(fig, path, dpi=110)
    return path


def write(results, out_dir: Path, command: str) -> Path:
    """kvcache.md, kvcache.json and the PNGs under ``out_dir``."""
    out_dir = Path(out_dir)
    cfg = results.config
    doc = {
        "config": dataclasses.asdict(cfg),
        "streams": results.streams,
        "sweeps": results.sweeps,
        "cluster": results.cluster,
        "engine_blocks_working_set": results.engine_blocks_working_set,
        "command": command,
    }
    atomic_write_json(out_dir / "kvcache.json", doc)
    lines = ["# wildserve experiment kvcache: results", "", "```", command, "```", ""]
    for trace, rows in results.sweeps.items():
        info = results.streams[trace]
        png = plot_sweep(trace, rows, out_dir / f"hit_ratio_{_slug(trace)}.png")
        lines += [
            f"## {trace}",
            "",
            f"{info['requests']:,} requests, {info['accesses']:,} accesses of "
            f"{info['block_size']}-token blocks, working set {info['blocks']:,} blocks; "
            f"categories: {info['categories']}.",
            "",
            "Any block may be evicted (vLLM):",
            "",
            *sweep_table(rows, "any"),
            "",
            "Only leaves of the prefix tree (SGLang):",
            "",
            *sweep_table(rows, "leaf"),
            "",
            f"![{trace}]({png.name})",
            "",
        ]
    if results.cluster:
        png = plot_cluster(results.cluster, out_dir / "cluster_ttft.png")
        lines += [
            f"## Cluster: {cfg.cluster_trace}, {cfg.instances} instances, router {cfg.router}",
            "",
            f"Working set in 16-token engine blocks: {results.engine_blocks_working_set:,}.",
            "",
            *cluster_table(results.cluster, results.engine_blocks_working_set, cfg.instances),
            "",
            f"![cluster]({png.name})",
            "",
        ]
    return atomic_write_text(out_dir / "kvcache.md", "\n".join(lines))
