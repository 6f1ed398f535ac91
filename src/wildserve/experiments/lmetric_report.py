"""Tables (mean and 95% interval over seeds), acceptance checks and plots of the LMetric experiment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from wildserve.experiments.lmetric import LINEAR_FAMILIES, UNTUNED_BASELINES
from wildserve.experiments.lmetric_points import (
    Point,
    at_grid_edge,
    best_of,
    fair_linear,
    fold,
    groups,
    scales,
    select,
    untuned,
)
from wildserve.io import atomic_write_text, save_figure
from wildserve.metrics import RequestMetrics
from wildserve.report import plot_cdfs

# policies of ours shown beside the paper's LMetric (see wildserve.routing.lmetric_session)
VARIANTS = ("lmetric-stay", "lmetric-marginal")
_VARIANT_STYLES = (("tab:red", "s"), ("tab:purple", "D"))


def _pm(stat: tuple[float, float], scale: float = 1.0, digits: int = 3) -> str:
    mean, half = stat
    if mean is None or not math.isfinite(mean):
        return "-"
    if not half:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def _name(p: Point) -> str:
    if p.kwargs:
        return f"{p.policy} ({p.label[len(p.policy) + 1 : -1]})"
    return f"**{p.policy}**" if p.policy == "lmetric" else p.policy


def acceptance(points: Sequence[Point]) -> dict:
    """The issue's acceptance checks at one load (points of one workload, model, load, arrivals)."""
    lm = untuned(points, "lmetric")
    if lm is None:
        return {}
    vl = untuned(points, "vllm-v1")
    base = [b for p in UNTUNED_BASELINES if (b := untuned(points, p)) is not None]
    mean, p99 = lm.mean("ttft_mean"), lm.mean("ttft_p99")
    out: dict = {"lmetric_ttft_mean": lm.stat("ttft_mean"), "lmetric_ttft_p99": lm.stat("ttft_p99")}
    if vl is not None:
        out["reduction_vs_vllm_v1"] = 1 - mean / vl.mean("ttft_mean")
    out["beaten_on_mean_by"] = [b.policy for b in base if b.mean("ttft_mean") < mean]
    out["beaten_on_p99_by"] = [b.policy for b in base if b.mean("ttft_p99") < p99]
    for family in LINEAR_FAMILIES:
        best = best_of(points, family)
        if best is not None:
            out[f"{family}_best"] = best.label
            out[f"ratio_to_{family}"] = mean / best.mean("ttft_mean")
    fair = fair_linear(points)
    if fair is not None:
        out["fair_linear"] = fair.label
        out["ratio_to_fair_linear"] = mean / fair.mean("ttft_mean")
        out["ratio_to_fair_linear_p99"] = p99 / fair.mean("ttft_p99")
    tpots = [b.mean("tpot_mean") for b in base if math.isfinite(b.mean("tpot_mean"))]
    if tpots and math.isfinite(lm.mean("tpot_mean")):
        out["tpot_ratio_to_best_baseline"] = lm.mean("tpot_mean") / min(tpots)
    return out


def _shown(points: Sequence[Point], variants: Sequence[str]) -> list[Point]:
    rows = [
        p for name in ("lmetric", *variants, *UNTUNED_BASELINES) if (p := untuned(points, name))
    ]
    rows += [b for f in LINEAR_FAMILIES if (b := best_of(points, f)) is not None]
    return rows


def plot_vs_load(
    points: Sequence[Point], workload: str, model: str, path: Path, instances: int
) -> Path:
    """Mean TTFT, p99 TTFT and mean TPOT against load, with 95% intervals over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = scales(points, workload, model, "poisson")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    series: dict[str, list[tuple[float, Point]]] = {}
    for s in xs:
        here = select(points, workload, model, s)
        for p in _shown(here, VARIANTS):
            name = f"{p.policy} (best grid point)" if p.kwargs else p.policy
            series.setdefault(name, []).append((s, p))
    for name, pts in series.items():
        style: dict = {"linewidth": 1.2, "capsize": 3, "marker": "o"}
        if name == "lmetric":
            style.update(linewidth=2.6, color="black")
        elif name.startswith("linear"):
            style.update(linestyle="--", marker="x")
        elif name in VARIANTS:
            color, marker = _VARIANT_STYLES[VARIANTS.index(name) % len(_VARIANT_STYLES)]
            style.update(linewidth=2.2, color=color, marker=marker)
        for ax, metric, k in zip(
            axes, ("ttft_mean", "ttft_p99", "tpot_mean"), (1, 1, 1e3), strict=True
        ):
            stats = [p.stat(metric) for _, p in pts]
            ax.errorbar(
                [s for s, _ in pts],
                [m * k for m, _ in stats],
                yerr=[h * k for _, h in stats],
                label=name,
                **style,
            )
    for ax, label in zip(axes, ("mean TTFT (s)", "p99 TTFT (s)", "mean TPOT (ms)"), strict=True):
        ax.set_xlabel("load (rate scale)")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{workload}: {instances} x {model} (mean and 95% interval over seeds)")
    return save_figure(fig, path, dpi=110)


def _main_table(points: Sequence[Point], workload: str, model: str) -> list[str]:
    lines = [
        "| load | policy | TTFT mean | TTFT p99 | TPOT mean (ms) | TPOT p99 (ms) | hit ratio | "
        "session switches | preemptions |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scales(points, workload, model, "poisson"):
        for p in _shown(select(points, workload, model, s), VARIANTS):
            sw = p.stat("switch_rate")
            lines.append(
                f"| x{s:g} | {_name(p)} | {_pm(p.stat('ttft_mean'))} | {_pm(p.stat('ttft_p99'), digits=1)} | "
                f"{_pm(p.stat('tpot_mean'), 1e3, 1)} | {_pm(p.stat('tpot_p99'), 1e3, 1)} | "
                f"{_pm(p.stat('hit_ratio'))} | {_pm(sw, 100, 1) + '%' if math.isfinite(sw[0]) else '-'} | "
                f"{_pm(p.stat('preemptions'), digits=0)} |"
            )
    return lines


def _acceptance_table(points: Sequence[Point], workload: str, model: str) -> list[str]:
    lines = [
        "| load | LMetric mean TTFT vs vllm-v1 | untuned baselines beating it on mean / p99 | "
        "vs best linear-tuned | vs best linear-new | vs the better of the two (mean / p99) | "
        "TPOT vs best baseline |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in scales(points, workload, model, "poisson"):
        here = select(points, workload, model, s)
        a = acceptance(here)
        if not a:
            continue
        red = a.get("reduction_vs_vllm_v1")
        cells = [
            f"x{s:g}",
            "-" if red is None else f"{red * 100:.0f}% lower",
            f"{', '.join(a['beaten_on_mean_by']) or 'none'} / {', '.join(a['beaten_on_p99_by']) or 'none'}",
        ]
        for family in LINEAR_FAMILIES:
            r = a.get(f"ratio_to_{family}")
            best = best_of(here, family)
            edge = " (grid edge)" if best is not None and at_grid_edge(here, best) else ""
            cells.append("-" if r is None else f"{r:.3f}x ({a[f'{family}_best']}{edge})")
        fair = a.get("ratio_to_fair_linear")
        cells.append("-" if fair is None else f"{fair:.3f}x / {a['ratio_to_fair_linear_p99']:.3f}x")
        tp = a.get("tpot_ratio_to_best_baseline")
        cells.append("-" if tp is None else f"{tp:.3f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _recorded_table(points: Sequence[Point], workload: str, model: str) -> list[str]:
    xs = scales(points, workload, model, "recorded")
    if not xs:
        return []
    lines = [
        "Recorded arrival times (one run each; the setting of the independent cross-check):",
        "",
        "| load | policy | TTFT mean | TTFT p99 | TPOT mean (ms) | hit ratio |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for s in xs:
        here = select(points, workload, model, s, "recorded")
        rows = [p for name in ("lmetric", *VARIANTS) if (p := untuned(here, name))]
        rows += [b for f in LINEAR_FAMILIES if (b := best_of(here, f)) is not None]
        for p in rows:
            lines.append(
                f"| x{s:g} | {_name(p)} | {_pm(p.stat('ttft_mean'))} | {_pm(p.stat('ttft_p99'), digits=1)} | "
                f"{_pm(p.stat('tpot_mean'), 1e3, 1)} | {_pm(p.stat('hit_ratio'))} |"
            )
    return [*lines, ""]


def variant_table(points: Sequence[Point], workload: str, model: str) -> list[str]:
    """Our variants' mean and p99 TTFT beside LMetric, sglang-cache-aware and the best linear rules."""
    present = [v for v in VARIANTS if any(p.policy == v for p in points)]
    if not present:
        return []
    lines = [
        "| load | policy | TTFT mean | TTFT p99 | session switches | costly switches / decision |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for s in scales(points, workload, model, "poisson"):
        here = select(points, workload, model, s)
        rows = [p for n in (*present, "lmetric", "sglang-cache-aware") if (p := untuned(here, n))]
        rows += [b for f in LINEAR_FAMILIES if (b := best_of(here, f)) is not None]
        for p in rows:
            sw, cs = p.stat("switch_rate"), p.stat("costly_share")
            lines.append(
                f"| x{s:g} | {_name(p)} | {_pm(p.stat('ttft_mean'))} | {_pm(p.stat('ttft_p99'), digits=1)} | "
                f"{_pm(sw, 100, 1) + '%' if math.isfinite(sw[0]) else '-'} | "
                f"{_pm(cs, 100, 2) + '%' if math.isfinite(cs[0]) else '-'} |"
            )
    return lines


def write_report(
    doc: dict,
    metrics: Mapping[str, RequestMetrics],
    out_md: Path,
    plot_dir: Path,
    command: str,
    zero: tuple[dict, Mapping[str, RequestMetrics]] | None = None,
    notes: str = "",
) -> Path:
    """Markdown with the command, per-load tables, acceptance checks and links to the plots.

    ``notes``: a reading of these runs written by hand (``--notes FILE``), placed last as it is,
    so that regenerating the report does not drop it.
    """
    points = fold(doc["runs"])
    n = doc["config"]["instances"]
    rel = Path(os.path.relpath(plot_dir, out_md.parent))
    grids = "; ".join(f"`{f}` {p} in {g}" for f, (p, g) in doc["config"]["linear_grids"].items())
    lines = [
        "# LMetric vs. the schedulers it is compared with (cluster simulator)",
        "",
        "Produced by:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Instances: {n}, view source: `{doc['config']['view_source']}`, requests per workload: "
        f"{doc['requests']}. Times in seconds, TPOT in ms; each cell is the mean over seeds ± the "
        "half-width of its 95% t-interval. Linear rules: `linear-tuned` = argmin(queued_prefill + "
        "new_tokens + w x requests), `linear-new` = argmin(new_tokens + beta x requests); grids: "
        f"{grids}; each is shown at its best grid point by mean TTFT at each load (searched on the "
        "same seeds it is reported on, which favours them)"
        + (
            f"; the grids ran on each workload's first {doc['config']['linear_seeds']} seeds only, "
            "the other policies on all of them."
            if doc["config"].get("linear_seeds")
            else "."
        ),
        "",
    ]
    for workload, model, gpu in groups(points):
        seeds = sorted(
            {
                s
                for p in points
                if (p.workload, p.model) == (workload, model)
                for s in p.seeds
                if s is not None
            }
        )
        lines += [f"## {workload}, {n} x {model} on {gpu}", ""]
        if seeds:
            lines += [f"Poisson arrivals, seeds {', '.join(map(str, seeds))}.", ""]
            png = plot_vs_load(
                points, workload, model, plot_dir / f"{workload}_{model}_vs_load.png", n
            )
            lines += [f"![TTFT and TPOT vs load]({rel / png.name})", ""]
            lines += _main_table(points, workload, model)
            lines += ["", "Acceptance checks per load (means over seeds):", ""]
            lines += _acceptance_table(points, workload, model)
            lines += [""]
            var = variant_table(points, workload, model)
            if var:
                lines += ["Our variants beside LMetric and the cache-first and linear rules:", ""]
                lines += [*var, ""]
        lines += _recorded_table(points, workload, model)
        xs = scales(points, workload, model, "poisson")
        if xs:
            mid = xs[len(xs) // 2]
            chosen = {
                p.policy: metrics[p.keys[0]]
                for p in _shown(select(points, workload, model, mid), VARIANTS)
                if not p.kwargs and p.keys[0] in metrics
            }
            cdf = plot_cdfs(
                chosen, plot_dir / f"{workload}_{model}_cdf_x{mid:g}.png", f"{workload}, x{mid:g}"
            )
            lines += [f"Latency CDFs at load x{mid:g} (seed {seeds[0] if seeds else '-'}):", ""]
            lines += [f"![CDFs]({rel / cdf.name})", ""]
    if zero is not None:
        lines += _zero_section(zero, plot_dir, rel)
    if notes.strip():
        lines.append(notes.strip())
    return atomic_write_text(out_md, "\n".join(lines) + "\n")


def _zero_section(
    zero: tuple[dict, Mapping[str, RequestMetrics]], plot_dir: Path, rel: Path
) -> list[str]:
    summaries, zero_metrics = zero
    lines = [
        "## The zero-score failure and its mitigation",
        "",
        "Synthetic trace (`hot_prompt_workload`): 80% of requests repeat one block-aligned 4096-token "
        "prompt (fully cacheable) with 1000-token answers, 20% are ordinary chats; 4 x qwen2.5-7b on h20. "
        "Without the mitigation every instance holding the hot prompt with no queued prefill scores 0, "
        "so ties go to the lowest index whatever its load. The mitigation floors the uncached tokens "
        "at one block and breaks ties by the number of requests.",
        "",
        "| policy | zero-score decisions | costly switches | TTFT mean | TTFT p99 | TPOT mean | TPOT p99 | preemptions |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in summaries.items():
        st = m.get("policy_stats") or {}
        lines.append(
            f"| {name} | {st.get('zero_score_decisions', '-')} | {st.get('costly_switch_decisions', '-')} | "
            f"{_pm((m['ttft']['mean'], 0))} | {_pm((m['ttft']['p99'], 0))} | "
            f"{_pm((m['tpot']['mean'], 0), 1e3, 1)} | {_pm((m['tpot']['p99'], 0), 1e3, 1)} | {m['preemptions']} |"
        )
    cdf = plot_cdfs(dict(zero_metrics), plot_dir / "zero_score_cdf.png", "hot-prompt trace")
    return [*lines, "", f"![CDFs]({rel / cdf.name})", ""]
