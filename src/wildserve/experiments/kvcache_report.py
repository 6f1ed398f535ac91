"""Tables and plots of ``wildserve experiment kvcache`` (matplotlib is imported only here)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from wildserve.experiments.kvcache import BASELINES, CATEGORY_POLICIES, NO_HISTORY, base_name
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


def _is_leaf(spec: str) -> bool:
    return ":leaf" in spec.split("@")[0]


def _any(spec: str) -> str:
    """The any-block spec of a leaf spec."""
    head, at, settings = spec.partition("@")
    return head.replace(":leaf", "") + at + settings


def _closers(names: list[str]) -> list[str]:
    return [s for s in names if base_name(_any(s)) in CATEGORY_POLICIES or s == NO_HISTORY]


def sweep_table(rows: dict[str, list[dict]], variant: str) -> list[str]:
    """Markdown rows: one per capacity, hit ratios per policy and the gap the WA kinds close."""
    leaf = variant == "leaf"
    names = [s for s in rows if _is_leaf(s) == leaf and (leaf or s != NO_HISTORY)]
    if not leaf and NO_HISTORY in rows:
        names.append(NO_HISTORY)
    lru, opt = rows.get("lru:leaf" if leaf else "lru"), rows.get("opt:leaf" if leaf else "opt")
    closers = _closers(names) if lru and opt else []
    head = ["capacity (share of working set)", *names, *(f"{s} gap closed" for s in closers)]
    out = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    first = rows[names[0]]
    for i, base in enumerate(first):
        cells = [f"{base['capacity']:,} ({base['fraction']:.0%})"]
        cells += [_pct(rows[s][i]["hit_ratio"]) for s in names]
        for s in closers:
            g = gap_closed(rows[s][i]["hit_ratio"], lru[i]["hit_ratio"], opt[i]["hit_ratio"])
            cells.append("-" if g is None else f"{g:+.0%}")
        out.append("| " + " | ".join(cells) + " |")
    return out


def best_baseline(rows: dict[str, list[dict]], i: int) -> tuple[str, float]:
    """The best non-oracle, non-workload-aware policy (any-block) at capacity ``i``."""
    found = [(rows[b][i]["hit_ratio"], b) for b in BASELINES if b in rows]
    ratio, name = max(found)
    return name, ratio


def paper_table(rows: dict[str, list[dict]]) -> list[str]:
    """The paper's terms, any-block: per WA kind, the gain over LRU and over the best baseline
    (points, relative) and the share of the LRU->OPT gap it closes."""
    if "lru" not in rows or "opt" not in rows:
        return ["(needs lru and opt among the policies)"]
    kinds = [s for s in _closers(list(rows)) if not _is_leaf(s) and s != NO_HISTORY]
    head = ["capacity", "LRU", "best baseline", "OPT"]
    head += [f"{k}: vs LRU / vs best / gap closed" for k in kinds]
    out = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for i, base in enumerate(rows["lru"]):
        lru, opt = base["hit_ratio"], rows["opt"][i]["hit_ratio"]
        name, best = best_baseline(rows, i)
        cells = [f"{base['fraction']:.0%}", _pct(lru), f"{_pct(best)} ({name})", _pct(opt)]
        for k in kinds:
            x = rows[k][i]["hit_ratio"]
            g = gap_closed(x, lru, opt)
            cells.append(f"{_pts(x - lru)} ({_rel(x, lru)}) / {_pts(x - best)} ({_rel(x, best)})"
                         f" / {'-' if g is None else f'{g:+.0%}'}")  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return out


def scheme_table(by_scheme: dict[str, dict[str, list[dict]]], main: str) -> list[str]:
    """Share of the LRU->OPT gap each category-aware policy closes under each scheme."""
    rows = by_scheme[main]
    if "lru" not in rows or "opt" not in rows:
        return []
    kinds = [s for s in _closers(list(rows)) if not _is_leaf(s) and s != NO_HISTORY]
    cols = [(k, sch) for k in kinds for sch in by_scheme if k in by_scheme[sch]]
    head = ["capacity", *(f"{k} [{sch}]" for k, sch in cols)]
    out = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for i, base in enumerate(rows["lru"]):
        lru, opt = base["hit_ratio"], rows["opt"][i]["hit_ratio"]
        cells = [f"{base['fraction']:.0%}"]
        for k, sch in cols:
            g = gap_closed(by_scheme[sch][k][i]["hit_ratio"], lru, opt)
            cells.append("-" if g is None else f"{g:+.0%}")
        out.append("| " + " | ".join(cells) + " |")
    return out


def wins(by_scheme: dict[str, dict[str, list[dict]]], main: str) -> list[str]:
    """Where each (WA kind, scheme) beats LRU and the best baseline, as a table."""
    rows = by_scheme[main]
    if "lru" not in rows or "opt" not in rows:
        return []
    lru, opt = rows["lru"], rows["opt"]
    gapped = [i for i in range(len(lru))
              if gap_closed(lru[i]["hit_ratio"], lru[i]["hit_ratio"], opt[i]["hit_ratio"]) is not None]  # fmt: skip
    if not gapped:
        return ["OPT is within half a point of LRU at every capacity: no policy can win here."]
    out = ["| policy [scheme] | above LRU at | above the best baseline at | gap closed: min / "
           "mean / max |", "| --- | --- | --- | ---: |"]  # fmt: skip
    for sch, specs in by_scheme.items():
        for k in (s for s in _closers(list(specs)) if not _is_leaf(s) and s != NO_HISTORY):
            over_lru, over_best, gaps = [], [], []
            for i in gapped:
                x = specs[k][i]["hit_ratio"]
                frac = f"{lru[i]['fraction']:.0%}"
                gaps.append(gap_closed(x, lru[i]["hit_ratio"], opt[i]["hit_ratio"]) or 0.0)
                if x > lru[i]["hit_ratio"] + 1e-4:
                    over_lru.append(frac)
                if x > best_baseline(rows, i)[1] + 1e-4:
                    over_best.append(frac)
            out.append(f"| {k} [{sch}] | {', '.join(over_lru) or 'none'} | "
                       f"{', '.join(over_best) or 'none'} | {min(gaps):+.0%} / "
                       f"{sum(gaps) / len(gaps):+.0%} / {max(gaps):+.0%} |")  # fmt: skip
    return out


def mean_gap_closed(rows: dict[str, list[dict]], spec: str, max_fraction: float) -> float | None:
    """Mean share of the LRU->OPT gap ``spec`` closes over capacities up to ``max_fraction``."""
    if not {"lru", "opt", spec} <= set(rows):
        return None
    gaps = [gap_closed(x["hit_ratio"], b["hit_ratio"], o["hit_ratio"])
            for x, b, o in zip(rows[spec], rows["lru"], rows["opt"], strict=True)
            if b["fraction"] <= max_fraction + 1e-9]  # fmt: skip
    gaps = [g for g in gaps if g is not None]
    return sum(gaps) / len(gaps) if gaps else None


def indicator_table(ind: list[dict], outcome: dict[str, str]) -> list[str]:
    head = ["trace", "categories (>= 1% of accesses)", "reuse-time spread (max/min mean)",
            "reuse-prob. spread", "single-turn reuse share", "KS from exp.",
            "largest category share", "ideal hit ratio",
            "measured: mean gap closed at <= 10% (wa / wa-paper / wa-paper@refit_s=60)"]  # fmt: skip
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in ind:
        if "error" in r:
            out.append(f"| {r['trace']} | cannot be evaluated: {r['error']} |" + " |" * 7)
            continue
        out.append(
            f"| {r['trace']} | {r['categories_used']:.0f} of {r['categories']} | "
            f"{r['reuse_time_spread']:.2f} | {_pct(r['reuse_probability_spread'])} | "
            f"{_pct(r['single_turn_reuse_share'])} | {r['ks_from_exponential']:.2f} | "
            f"{_pct(r['largest_category_share'])} | {_pct(r['ideal_hit_ratio'])} | "
            f"{outcome.get(r['trace'], '-')} |"
        )
    return out


def _outcomes(results) -> dict[str, str]:
    main = results.config.schemes[0]
    out = {}
    for trace, by_scheme in results.sweeps.items():
        gaps = [mean_gap_closed(by_scheme[main], s, 0.1)
                for s in ("wa", "wa-paper", "wa-paper@refit_s=60")]  # fmt: skip
        out[trace] = " / ".join("-" if g is None else f"{g:+.0%}" for g in gaps)
    return out


def _pts(x: float) -> str:
    return f"{100 * x:+.1f} pts"


def _rel(x: float, base: float) -> str:
    return "-" if base <= 0 else f"{x / base - 1:+.0%}"


def cluster_table(runs: list[dict], working_set_blocks: int, instances: int) -> list[str]:
    head = ["policy", "KV blocks / instance (cluster share of working set)", "host GB", "hit ratio",
            "TTFT mean s (vs LRU)", "p50", "p90 (vs LRU)", "p99", "queueing mean s", "evictions",
            "host-hit blocks"]  # fmt: skip
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    lru = {(r["blocks_per_instance"], r["host_memory_gb"]): r["ttft"] for r in runs
           if r["policy"] == "lru"}  # fmt: skip
    for r in sorted(runs, key=lambda r: (-r["blocks_per_instance"], r["host_memory_gb"])):
        share = r["blocks_per_instance"] * instances / max(1, working_set_blocks)
        t = r["ttft"]
        base = lru.get((r["blocks_per_instance"], r["host_memory_gb"]))
        vs = {k: "" if base is None or r["policy"] == "lru" else f" ({_rel(t[k], base[k])})"
              for k in ("mean", "p90")}  # fmt: skip
        out.append(
            f"| {r['policy']} | {r['blocks_per_instance']:,} ({share:.0%}) | "
            f"{r['host_memory_gb']:g} | {r['hit_ratio']:.1%} | {t['mean']:.2f}{vs['mean']} | "
            f"{t['p50']:.2f} | {t['p90']:.2f}{vs['p90']} | {t['p99']:.2f} | "
            f"{r['queueing']['mean']:.2f} | {r['evictions']:,} | {r['host_hit_blocks']:,} |"
        )
    return out


def plot_sweep(trace: str, rows: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors: dict[str, str] = {}
    for spec, data in rows.items():
        base = base_name(spec)
        x = [d["fraction"] for d in data]
        y = [d["hit_ratio"] for d in data]
        style = "--" if _is_leaf(spec) else (":" if spec == NO_HISTORY else "-")
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


def _trace_section(results, trace: str, out_dir: Path, report_dir: Path) -> list[str]:
    cfg = results.config
    main = cfg.schemes[0]
    if trace in results.skipped:
        return [f"## {trace}", "", f"Not replayed: {results.skipped[trace]}.", ""]
    by_scheme = results.sweeps.get(trace, {})
    if main not in by_scheme:
        return [f"## {trace}", "", "Not finished yet (reported from finished tasks only).", ""]
    rows = by_scheme[main]
    info = results.streams[trace]
    png = plot_sweep(trace, rows, out_dir / f"hit_ratio_{_slug(trace)}.png")
    lines = [
        f"## {trace}",
        "",
        f"{info['requests']:,} requests, {info['accesses']:,} accesses of "
        f"{info['block_size']}-token blocks, working set {info['blocks']:,} blocks; "
        f"categories ({main}): {info['categories']}.",
        "",
        "Where each workload-aware policy wins (any block may be evicted; over the capacities where "
        "OPT is more than half a point above LRU; above: by more than 0.01 points):",
        "",
        *wins(by_scheme, main),
        "",
        f"In the paper's terms (scheme {main}, any block may be evicted): hit-ratio gain over LRU "
        "and over the best non-oracle baseline (of the ones run: "
        + ", ".join(b for b in BASELINES if b in rows)
        + "), in points and "
        "relative, and the share of the LRU->OPT gap closed:",
        "",
        *paper_table(rows),
        "",
        "Every policy, any block may be evicted (vLLM):",
        "",
        *sweep_table(rows, "any"),
        "",
    ]
    if any(_is_leaf(s) for s in rows):
        lines += ["Only leaves of the prefix tree (SGLang):", "", *sweep_table(rows, "leaf"), ""]
    if len(by_scheme) > 1:
        lines += ["Share of the LRU->OPT gap closed under each category scheme (any block):", "",
                  *scheme_table(by_scheme, main), ""]  # fmt: skip
    rel = os.path.relpath(png, report_dir)
    return [*lines, f"![{trace}]({rel})", ""]


def _defaults(spec: str) -> str:
    import inspect

    from wildserve.kvcache.policy import EVICTION_POLICIES

    params = inspect.signature(EVICTION_POLICIES.get(spec)).parameters.values()
    return ", ".join(f"{p.name}={p.default:g}" for p in params
                     if isinstance(p.default, int | float) and not isinstance(p.default, bool)
                     and p.name != "num_categories")  # fmt: skip


def _method() -> list[str]:
    return [
        "The two workload-aware scores (`kvcache/wa.py`, `kvcache/wa_paper.py`), per category "
        "c with reuse probability p_c and exponential reuse-time rate lam_c fitted on the access "
        "history, for a block idle for a seconds; the smallest score is evicted first:",
        "",
        "* `wa` (ours, conditional): P_c(a) = p e^{-lam a} (1 - e^{-lam L}) / (1 - p + p e^{-lam a}),"
        f" L = life_s; sliding-window refit ({_defaults('wa')}).",
        "* `wa-paper` (the paper's, unconditional): S_c(a) = p_c (F_c(a + T) - F_c(a)) with F_c(t) "
        "= 1 - e^{-lam_c t}, T = horizon_s; reuses closer than min_gap_s left out of the fit; fitted "
        f"once on the first window_s seconds ({_defaults('wa-paper')}); `wa-paper@refit_s=60` "
        "refits every 60 s on a sliding window_s window instead. Until its first fit WA-paper orders"
        " blocks by age alone (LRU), so on a trace shorter than window_s it is LRU.",
        "",
    ]


def write(
    results, out_dir: Path, command: str, report: Path | None = None, notes: str = ""
) -> Path:
    """kvcache.json and the PNGs under ``out_dir``; the markdown at ``report`` (default:
    ``out_dir/kvcache.md``), linking the PNGs relative to it."""
    out_dir = Path(out_dir)
    report = Path(report) if report is not None else out_dir / "kvcache.md"
    cfg = results.config
    doc = {
        "config": dataclasses.asdict(cfg),
        "streams": results.streams,
        "sweeps": results.sweeps,
        "skipped": results.skipped,
        "cluster": results.cluster,
        "indicators": results.indicators,
        "engine_blocks_working_set": results.engine_blocks_working_set,
        "command": command,
    }
    atomic_write_json(out_dir / "kvcache.json", doc)
    lines = ["# wildserve experiment kvcache: results", "", "```", command, "```", "",
             f"Policies {', '.join(cfg.policies)}; category schemes {', '.join(cfg.schemes)} (the "
             f"first is the main tables'); capacities {', '.join(f'{f:.0%}' for f in cfg.fractions)}"
             " of each trace's working set (its distinct blocks). \"gap closed\" = (policy - LRU) /"
             " (OPT - LRU), \"-\" where OPT is within half a point of LRU.", ""]  # fmt: skip
    if results.missing:
        lines += [f"**Partial report**: {len(results.missing)} tasks had not finished and are left "
                  f"out: {', '.join(sorted(results.missing))}.", ""]  # fmt: skip
    lines += _method()
    for trace in cfg.traces:
        if trace in results.streams or trace in results.skipped:
            lines += _trace_section(results, trace, out_dir, report.parent)
    if results.indicators:
        lines += ["## What predicts a WA win: the traces' WA indicators", "",
                  f"Measured with `wildserve cache analyze` definitions (scheme {cfg.schemes[0]}; "
                  "categories with >= 1% of accesses and >= 10 reuses).", "",
                  *indicator_table(results.indicators, _outcomes(results)), ""]  # fmt: skip
    if results.cluster:
        png = plot_cluster(results.cluster, out_dir / "cluster_ttft.png")
        lines += [
            f"## Cluster: {cfg.cluster_trace}, {cfg.instances} instances, router {cfg.router}",
            "",
            f"Queued TTFT (QTTFT: arrival to first token, queueing included) at "
            f"{len(cfg.cluster_capacities)} KV capacities; working set in 16-token engine blocks: "
            f"{results.engine_blocks_working_set:,}.",
            "",
            *cluster_table(results.cluster, results.engine_blocks_working_set, cfg.instances),
            "",
            f"![cluster]({os.path.relpath(png, report.parent)})",
            "",
        ]
    if notes:
        lines += ["## Reading (hand-written, `--notes`)", "", notes.strip(), ""]
    return atomic_write_text(report, "\n".join(lines))
