"""Turn an experiment's JSON into the markdown tables and plots of docs/results/omega.md."""

from __future__ import annotations

from pathlib import Path

from wildserve.io import save_figure

METHOD_ORDER = ("fixed-ef", "laet", "darth", "omega")


def _cells(result: dict) -> list[dict]:
    return result["cells"]


def markdown_tables(result: dict) -> str:
    """Per-cell table (recall, latency, computations), stream table, preprocessing table."""
    lines = ["| method | K | target | ef | recall | meets | mean latency (µs) | QPS | mean ndis | model calls |",
             "| --- | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for c in sorted(
        _cells(result), key=lambda c: (c["target"], c["k"], METHOD_ORDER.index(c["method"]))
    ):
        lines.append(
            f"| {c['method']} | {c['k']} | {c['target']:.2f} | {c['ef']} | {c['recall']:.4f} | "
            f"{'yes' if c['meets'] else '**no**'} | {c['latency_us']:.0f} | {c['qps']:.0f} | "
            f"{c['mean_ndis']:.0f} | {c['model_calls']:.1f} |"
        )
    lines += ["", "| method | target | stream recall | mean latency (µs) | QPS | K groups meeting target |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for s in result["stream"]:
        met = sum(s["meets_per_k"].values())
        lines.append(
            f"| {s['method']} | {s['target']:.2f} | {s['recall']:.4f} | {s['latency_us']:.0f} | "
            f"{s['qps']:.0f} | {met}/{len(s['meets_per_k'])} |"
        )
    lines += ["", "| method | preprocessing (s) | models |", "| --- | ---: | ---: |"]
    for name, secs in result["preprocessing_seconds"].items():
        lines.append(f"| {name} | {secs:.1f} | {result['models'][name]} |")
    return "\n".join(lines)


def latency_ratios(result: dict, method: str = "omega") -> list[tuple[int, float, str, float]]:
    """(K, target, baseline, method latency / baseline latency) for every cell."""
    by = {(c["method"], c["k"], c["target"]): c for c in _cells(result)}
    out = []
    for (m, k, t), c in sorted(by.items()):
        if m != method:
            continue
        for base in ("laet", "darth", "fixed-ef"):
            if (base, k, t) in by:
                out.append((k, t, base, c["latency_us"] / by[(base, k, t)]["latency_us"]))
    return out


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
        fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), sharey=log_y)
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
