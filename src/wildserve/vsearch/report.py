"""Turn an experiment's JSON into the markdown report and plots of docs/results/omega.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wildserve.io import save_figure

METHOD_ORDER = ("fixed-ef", "laet", "darth", "laet-eq", "darth-eq", "omega")
BASELINES = ("laet", "darth")


def _cells(result: dict) -> list[dict]:
    return result["cells"]


def _order(name: str) -> int:
    return METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)


def cell_table(cells: list[dict], with_cap: bool = False) -> list[str]:
    cap = "ef cap | " if with_cap else ""
    lines = [f"| {cap}method | K | target | ef | recall | overshoot | meets | mean ndis | model calls | "
             "latency best (µs) | latency median (µs) | CPU (µs) | QPS |",
             "| " + "--- | " * (1 + with_cap) + "---: | " * 5 + ":---: | " + "---: | " * 6]  # fmt: skip

    def key(c: dict) -> tuple:
        return (c["target"], c["k"], c.get("ef_cap", 0), _order(c["method"]))

    for c in sorted(cells, key=key):
        capcol = f"{c['ef_cap']} | " if with_cap else ""
        lines.append(
            f"| {capcol}{c['method']} | {c['k']} | {c['target']:.2f} | {c['ef']} | {c['recall']:.4f} | "
            f"{c['recall'] - c['target']:+.4f} | {'yes' if c['recall'] >= c['target'] else '**no**'} | "
            f"{c['mean_ndis']:.0f} | {c['model_calls']:.1f} | {c['latency_us']:.0f} | "
            f"{c.get('latency_us_median', c['latency_us']):.0f} | {c.get('cpu_us', 0):.0f} | "
            f"{c['qps']:.0f} |"
        )
    return lines


def paired_cpu_ratio(a: list[float], b: list[float], seed: int = 0, draws: int = 2000) -> tuple:
    """CPU time of `a` over `b` on the same slices of queries, with a 95% bootstrap interval over
    the slices (resampled in pairs: both methods timed the same queries at the same moments)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    idx = np.random.default_rng(seed).integers(0, x.size, (draws, x.size))
    boot = x[idx].sum(axis=1) / y[idx].sum(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return x.sum() / y.sum(), float(lo), float(hi)


def paired_verdicts(pairs: list[tuple[dict, dict]]) -> tuple[int, int, int, list[float]] | None:
    """(faster, slower, indistinguishable) cells of the first method at 95%, and the ratios; None
    when the run kept no per-slice timings."""
    if not pairs or not all(
        len(o.get("cpu_slices_us", ())) and len(b.get("cpu_slices_us", ())) for o, b in pairs
    ):
        return None
    stats = [paired_cpu_ratio(o["cpu_slices_us"], b["cpu_slices_us"]) for o, b in pairs]
    faster = sum(hi < 1.0 for _, _, hi in stats)
    slower = sum(lo > 1.0 for _, lo, _ in stats)
    return faster, slower, len(stats) - faster - slower, [r for r, _, _ in stats]


def claims(result: dict) -> list[str]:
    """The issue's acceptance counts, measured: OMEGA against the equal-budget baselines, and its
    latency against the best full-budget learned baseline."""
    by = {(c["method"], c["k"], c["target"]): c for c in _cells(result)}
    keys = sorted({(c["k"], c["target"]) for c in _cells(result)})
    om = [by[("omega", *kt)] for kt in keys if ("omega", *kt) in by]
    lines = [f"- OMEGA meets {sum(c['recall'] >= c['target'] for c in om)}/{len(om)} cells; "
             f"overshoot mean {np.mean([c['recall'] - c['target'] for c in om]):+.4f}, "
             f"max {max(c['recall'] - c['target'] for c in om):+.4f}."]  # fmt: skip
    for base in ("laet-eq", "darth-eq"):
        pairs = [(by[("omega", *kt)], by[(base, *kt)]) for kt in keys if (base, *kt) in by]
        if not pairs:
            continue
        nd = sum(o["mean_ndis"] <= b["mean_ndis"] for o, b in pairs)
        lat = sum(o["latency_us"] <= b["latency_us"] for o, b in pairs)
        lat_med = sum(o["latency_us_median"] <= b["latency_us_median"] for o, b in pairs)
        lat_cpu = sum(o["cpu_us"] <= b["cpu_us"] for o, b in pairs)
        met = sum(b["recall"] >= b["target"] for _, b in pairs)
        lines.append(
            f"- vs {base} (OMEGA's preprocessing budget; it meets {met}/{len(pairs)}): OMEGA's distance "
            f"computations <= in {nd}/{len(pairs)} cells, best-of-repeats latency <= in {lat}/"
            f"{len(pairs)}, median latency <= in {lat_med}/{len(pairs)}, CPU time <= in "
            f"{lat_cpu}/{len(pairs)}."
        )
        verdict = paired_verdicts(pairs)
        if verdict:
            faster, slower, tie, _ = verdict
            n = len(pairs[0][0]["cpu_slices_us"])
            lines.append(
                f"  - CPU time paired slice by slice ({n} slices per cell, 95% bootstrap interval of "
                f"the ratio): OMEGA faster in {faster}, slower in {slower}, indistinguishable in {tie} "
                f"cells."
            )
    same = [(by[("laet-eq", *kt)], by[("laet", *kt)]) for kt in keys
            if ("laet-eq", *kt) in by and ("laet", *kt) in by]  # fmt: skip
    if same and all(a["mean_ndis"] == b["mean_ndis"] for a, b in same):
        r = [a["cpu_us"] / b["cpu_us"] for a, b in same]
        verdict = paired_verdicts(same)
        tail = (f"; paired intervals exclude 1 in {verdict[0] + verdict[1]}/{len(same)} cells"
                if verdict else "")  # fmt: skip
        lines.append(
            f"- A/A check: laet-eq stops every query where laet does (the same model refitted), so "
            f"their CPU ratio is the measurement's own spread: mean {np.mean(r):.3f}, range "
            f"{min(r):.3f}-{max(r):.3f} over {len(r)} cells{tail}."
        )
    for field_, label in (("cpu_us", "CPU time"), ("latency_us", "best-of-repeats wall latency")):
        ratios = []
        for kt in keys:
            full = [by[(b, *kt)] for b in BASELINES if (b, *kt) in by]
            full = [c for c in full if c["recall"] >= c["target"]]
            if ("omega", *kt) in by and full:
                best = min(c[field_] for c in full)
                ratios.append(by[("omega", *kt)][field_] / best)
        if ratios:
            lines.append(
                f"- OMEGA's {label} / the best full-budget learned baseline's (among those meeting "
                f"the cell): mean {np.mean(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x "
                f"over {len(ratios)} cells."
            )
        fixed = [(by[("omega", *kt)][field_], by[("fixed-ef", *kt)][field_]) for kt in keys
                 if ("omega", *kt) in by and ("fixed-ef", *kt) in by]  # fmt: skip
        if fixed:
            r = [o / f for o, f in fixed]
            lines.append(
                f"- OMEGA's {label} / fixed-ef's (its ef tuned per cell on validation): mean "
                f"{np.mean(r):.2f}x, range {min(r):.2f}-{max(r):.2f}x over {len(r)} cells."
            )
    pre = result["preprocessing_seconds"]
    if "omega" in pre:
        parts = [
            f"{pre['omega'] / pre[b]:.0%} of {b}'s {pre[b]:.1f} s" for b in BASELINES if b in pre
        ]
        lines.append(f"- OMEGA's preprocessing {pre['omega']:.1f} s = " + ", ".join(parts) + ".")
    return lines


def markdown_report(result: dict) -> str:
    """Claims, per-cell table, preprocessing, equal-budget fits, stream and ef-cap study."""
    ds = result["dataset"]
    lines = [f"Base {ds['n_base']} x {ds['dim']} ({ds['metric']}); {ds.get('n_train')} training, "
             f"{ds.get('n_val')} validation, {ds.get('n_test')} test queries "
             f"(queries: {ds.get('queries')}; ground truth: {ds.get('ground_truth')}).", ""]  # fmt: skip
    lines += claims(result) + [""]
    lines += cell_table(_cells(result)) + [""]
    lines += ["| method | preprocessing (s) | models | training queries | validation queries |",
              "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    budget = result.get("budget", {})
    for name, secs in result["preprocessing_seconds"].items():
        b = budget.get(name, {})
        lines.append(f"| {name} | {secs:.1f} | {result['models'].get(name, 0)} | "
                     f"{b.get('train_queries', '')} | {b.get('val_queries', '')} |")  # fmt: skip
    shared = ", ".join(f"{k} {v:.1f} s" for k, v in result["prep_seconds"].items())
    lines += ["", f"Shared parts (charged pro rata to the methods that use them): {shared}.", ""]
    lines += ["| method | target | stream recall | mean latency (µs) | CPU (µs) | QPS | K groups meeting target |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for s in result["stream"]:
        met = sum(s["meets_per_k"].values())
        lines.append(
            f"| {s['method']} | {s['target']:.2f} | {s['recall']:.4f} | {s['latency_us']:.0f} | "
            f"{s.get('cpu_us', 0):.0f} | {s['qps']:.0f} | {met}/{len(s['meets_per_k'])} |"
        )
    if result.get("ef_study"):
        lines += [
            "",
            "ef-cap study (one repeat per cell; the cap-1000 rows are the main table's):",
            "",
        ]
        lines += cell_table(result["ef_study"], with_cap=True)
        pre = ", ".join(
            f"{k} {v:.1f} s" for k, v in result["ef_study_preprocessing_seconds"].items()
        )
        lines += ["", f"Preprocessing at the other caps: {pre}."]
    return "\n".join(lines)


def plot(result: dict, out_dir: Path) -> list[Path]:
    """Latency vs K per target, and recall achieved vs target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    cells = _cells(result)
    targets = sorted({c["target"] for c in cells})
    specs = (
        ("latency_us", "mean latency per query (µs)", "latency_vs_k.png", True),
        ("recall", "mean recall@K (held-out queries)", "recall_vs_k.png", False),
        ("mean_ndis", "mean distance computations", "ndis_vs_k.png", True),
    )
    paths = []
    for key, ylabel, filename, log_y in specs:
        fig, axes = plt.subplots(
            1, len(targets), figsize=(5 * len(targets), 4), sharey=log_y, squeeze=False
        )
        axes = axes[0]
        for ax, t in zip(axes, targets, strict=True):
            for m in METHOD_ORDER:
                pts = sorted(
                    (c["k"], c[key]) for c in cells if c["method"] == m and c["target"] == t
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=m)
            if key == "recall":
                ax.axhline(t, color="black", linestyle="--", linewidth=1)
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
            ax.set_title(f"recall target {t:.2f}")
            ax.set_xlabel("K")
        axes[0].set_ylabel(ylabel)
        axes[0].legend()
        paths.append(save_figure(fig, out_dir / filename, dpi=110))
    return paths
