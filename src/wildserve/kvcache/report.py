"""Markdown and PNG output of a trace characterization (matplotlib is imported only here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wildserve.io import atomic_write_json, atomic_write_text, save_figure
from wildserve.kvcache.analyze import TraceAnalysis


def _f(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def to_json(a: TraceAnalysis) -> dict:
    doc = {k: v for k, v in a.__dict__.items() if k not in ("categories", "reuse_times")}
    doc["categories"] = [c.__dict__ for c in a.categories]
    doc["wa_indicators"] = a.wa_indicators()
    return doc


def markdown(a: TraceAnalysis, plots: dict[str, str], command: str = "") -> str:
    tokens = a.num_blocks * a.block_size
    lines = [
        f"# KV$ reuse in `{a.name}`",
        "",
        f"{a.num_requests:,} requests, {a.num_accesses:,} accesses of full {a.block_size}-token "
        f"blocks, {a.num_blocks:,} distinct blocks (the ideal working set: {tokens:,} tokens).",
        "",
    ]
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        "| metric | value |",
        "| --- | --- |",
        f"| ideal hit ratio (infinite cache) | {_pct(a.ideal_hit_ratio)} |",
        f"| reuses going to the top 1% / 10% of blocks | {_pct(a.skew['top1%'])} / "
        f"{_pct(a.skew['top10%'])} |",
        f"| blocks used only once | {_pct(a.single_use_block_share)} |",
        "| lifespan of reused blocks p50 / p90 / p99 (s) | "
        + " / ".join(_f(a.lifespan_pcts[k]) for k in ("p50", "p90", "p99"))
        + " |",
    ]
    for k, v in a.hit_shares.items():
        lines.append(f"| share of ideal hits: {k} | {_pct(v)} |")
    ind = a.wa_indicators()
    lines += [
        f"| WA indicators: categories with >= 1% of accesses | {ind['categories_used']:.0f} |",
        f"| WA indicators: reuse-time spread (largest / smallest mean) | "
        f"{_f(ind['reuse_time_spread'])} |",
        f"| WA indicators: reuse-probability spread | {_pct(ind['reuse_probability_spread'])} |",
        f"| WA indicators: KS from exponential (access-weighted) | "
        f"{_f(ind['ks_from_exponential'], 2)} |",
        f"| WA indicators: largest category's access share | "
        f"{_pct(ind['largest_category_share'])} |",
    ]
    lines += [
        "",
        f"## Categories ({a.category_scheme}, {a.category_source or 'given'} types and turns)",
        "",
        "| category | requests | access share | ideal hit ratio | share of hits | reuse prob. | "
        "reuse time p50 / p90 / p99 (s) | exp. rate (1/s) | KS vs exp. |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for c in a.categories:
        rt = " / ".join(_f(c.reuse_time_pcts[k]) for k in ("p50", "p90", "p99"))
        lines.append(
            f"| {c.name} | {c.num_requests:,} | {_pct(c.access_share)} | {_pct(c.ideal_hit_ratio)} "
            f"| {_pct(c.hit_share)} | {_pct(c.reuse_probability)} | {rt} | {_f(c.exp_rate)} "
            f"| {_f(c.exp_ks, 2)} |"
        )
    if a.capacity:
        lines += [
            "",
            "## Capacity for a share of the ideal hit ratio",
            "",
            "| policy | " + " | ".join(f"{t} of ideal" for t in next(iter(a.capacity.values())))
            + " |",
            "| --- |" + " ---: |" * len(next(iter(a.capacity.values()))),
        ]  # fmt: skip
        for policy, found in a.capacity.items():
            cells = [
                f"{b:,} blocks ({b / a.num_blocks:.1%} of the working set)" for b in found.values()
            ]
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def plot_all(a: TraceAnalysis, out_dir: Path) -> dict[str, str]:
    """Write the PNGs; returns {title: file name} for the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    names = [c.name for c in a.categories]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for c in a.categories:
        rt = np.sort(a.reuse_times[c.name])
        if len(rt) < 2:
            continue
        y = np.arange(1, len(rt) + 1) / len(rt)
        x = np.maximum(rt, 1e-3)
        (line,) = ax1.step(x, y, where="post", label=f"{c.name} (n={len(rt):,})")
        if c.exp_rate:
            ax1.plot(x, 1 - np.exp(-c.exp_rate * rt), "--", color=line.get_color(), lw=0.8)
        ax2.step(x, c.reuse_probability * y, where="post", label=c.name)
    ax1.set(
        xscale="log", xlabel="reuse time (s)", ylabel="CDF", title="reuse time (dashed: exp. fit)"
    )
    ax2.set(xscale="log", xlabel="t (s)", ylabel="P(block reused within t)",
            title="reuse probability by category")  # fmt: skip
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    save_figure(fig, out_dir / "reuse_time.png", dpi=110)
    out["reuse time and probability"] = "reuse_time.png"

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [c.access_share for c in a.categories], 0.4, label="accesses")
    ax.bar(x + 0.2, [c.hit_share for c in a.categories], 0.4, label="ideal hits")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="share", title="how accesses and hits split across categories")
    ax.legend()
    save_figure(fig, out_dir / "category_split.png", dpi=110)
    out["category split"] = "category_split.png"

    if a.curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for policy, curve in a.curves.items():
            caps, ratios = zip(*curve, strict=True)
            ax.plot(np.array(caps) / a.num_blocks, ratios, marker="o", ms=3, label=policy)
            for target, blocks in a.capacity.get(policy, {}).items():
                ax.axvline(blocks / a.num_blocks, ls=":", lw=0.6)
                ax.annotate(f"{policy} {target}", (blocks / a.num_blocks, 0.03), rotation=90,
                            xycoords=("data", "axes fraction"), fontsize=6)  # fmt: skip
        ax.axhline(a.ideal_hit_ratio, color="k", ls="--", lw=0.8, label="ideal")
        ax.set(xscale="log", xlabel="capacity / working set", ylabel="hit ratio",
               title="hit ratio vs capacity")  # fmt: skip
        ax.legend()
        save_figure(fig, out_dir / "capacity.png", dpi=110)
        out["hit ratio vs capacity"] = "capacity.png"
    return out


def write_report(a: TraceAnalysis, out_dir: Path, command: str = "") -> Path:
    """report.md, analysis.json and the PNGs in ``out_dir``; returns the markdown path."""
    out_dir = Path(out_dir)
    plots = plot_all(a, out_dir)
    atomic_write_json(out_dir / "analysis.json", to_json(a))
    return atomic_write_text(out_dir / "report.md", markdown(a, plots, command))
