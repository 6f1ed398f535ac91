"""Tables, the headline comparison and timeline plots of the KunServe experiment, as one markdown file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wildserve.io import atomic_write_text, save_figure

BASELINES = ("vllm", "infercept", "llumnix")
KUNSERVE = ("kunserve", "kunserve-recompute")


def _f(x: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}"


def _runs(doc: dict, setup: str, scenario: str) -> dict[str, dict]:
    return {
        r["system"]: r for r in doc["runs"] if r["setup"] == setup and r["scenario"] == scenario
    }


def headline(doc: dict, setup: str, scenario: str) -> dict | None:
    """KunServe's p99 TTFT against the best baseline's, and what pipelining cost in TBT."""
    runs = _runs(doc, setup, scenario)
    ks = runs.get("kunserve")
    base = {s: runs[s] for s in BASELINES if s in runs}
    if ks is None or not base:
        return None
    best = min(base, key=lambda s: base[s]["latency"]["ttft"]["p99"])
    p99_ks = ks["latency"]["ttft"]["p99"]
    p99_best = base[best]["latency"]["ttft"]["p99"]
    groups = ks["latency"].get("groups", [])
    bubbles = [g["bubble_fraction"] for g in groups if g["bubble_fraction"] is not None]
    vllm = runs.get("vllm")
    return {
        "best_baseline": best,
        "best_p99_ttft": p99_best,
        "kunserve_p99_ttft": p99_ks,
        "ratio": p99_best / p99_ks if p99_ks else None,
        "burst_ratio": (
            base[best]["burst_ttft"]["p99"] / ks["burst_ttft"]["p99"]
            if ks["burst_ttft"]["p99"]
            else None
        ),
        "tbt_p50": ks["latency"]["tbt"]["p50"],
        "tbt_p99": ks["latency"]["tbt"]["p99"],
        "vllm_tbt_p50": vllm["latency"]["tbt"]["p50"] if vllm else None,
        "vllm_tbt_p99": vllm["latency"]["tbt"]["p99"] if vllm else None,
        "groups": len(groups),
        "degrees": sorted({g["degree"] for g in groups}),
        "bubble": float(np.mean(bubbles)) if bubbles else None,
    }


def headline_table(doc: dict) -> list[str]:
    lines = [
        "| setup | scenario | best baseline | its p99 TTFT s | KunServe p99 TTFT s | ratio | "
        "burst-window ratio | TBT p50 ms (vLLM -> KunServe) | TBT p99 ms (vLLM -> KunServe) | "
        "groups (degrees) | bubble |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for setup in doc["config"]["setups"]:
        for sc in doc["config"]["scenarios"]:
            h = headline(doc, setup["name"], sc["name"])
            if h is None:
                continue
            lines.append(
                f"| {setup['name']} | {sc['name']} | {h['best_baseline']} | "
                f"{_f(h['best_p99_ttft'])} | {_f(h['kunserve_p99_ttft'])} | "
                f"{_f(h['ratio'])}x | {_f(h['burst_ratio'])}x | "
                f"{_f(h['vllm_tbt_p50'], 1e3, 1)} -> {_f(h['tbt_p50'], 1e3, 1)} | "
                f"{_f(h['vllm_tbt_p99'], 1e3, 0)} -> {_f(h['tbt_p99'], 1e3, 0)} | "
                f"{h['groups']} ({', '.join(map(str, h['degrees'])) or '-'}) | "
                f"{_f(h['bubble'])} |"
            )
    return lines


def system_table(doc: dict, setup: str, scenario: str) -> list[str]:
    pcts = ("p50", "p90", "p99", "p999")
    lines = [
        "| system | TTFT " + " / ".join(pcts) + " s | queueing " + " / ".join(pcts) + " s | "
        "TBT " + " / ".join(pcts) + " ms | burst TTFT p99 s | preemptions | finished |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for system, r in _runs(doc, setup, scenario).items():
        lat = r["latency"]
        ttft = " / ".join(_f(lat["ttft"][p]) for p in pcts)
        queue = " / ".join(_f(lat["queueing"][p]) for p in pcts)
        tbt = " / ".join(_f(lat["tbt"][p], 1e3, 1) for p in pcts)
        lines.append(
            f"| {system} | {ttft} | {queue} | {tbt} | {_f(r['burst_ttft']['p99'])} | "
            f"{lat['preemptions']} | {lat['finished']} |"
        )
    return lines


def plot_timelines(doc: dict, setup: str, scenario: dict, path: Path) -> Path:
    """Queue length, KV usage, layers dropped and p99 TTFT per second around the burst."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _runs(doc, setup, scenario["name"])
    load = next((s["load"] for s in doc["config"]["setups"] if s["name"] == setup), 1.0)
    b0, b1 = (
        scenario["burst_start_s"] / load,
        (scenario["burst_start_s"] + scenario["burst_s"]) / load,
    )
    fig, axes = plt.subplots(4, 1, figsize=(9, 9.5), sharex=True)
    lo = max(0.0, b0 - 20 / load)
    hi = b1 + 80 / load
    for system, r in runs.items():
        tl = r["timeline"]
        t = np.asarray(tl["time_s"])
        sel = (t >= lo) & (t <= hi)
        axes[0].plot(t[sel], np.asarray(tl["num_waiting"])[sel], label=system)
        axes[1].plot(t[sel], np.asarray(tl["kv_usage"])[sel] * 100, label=system)
        axes[2].plot(t[sel], np.asarray(tl["layers_dropped"])[sel], label=system)
        # seconds without arrivals (Mooncake's arrive in clumps) are skipped, not drawn as gaps
        tail = np.array([np.nan if x is None else x for x in r["tail_ttft_per_s"]])
        sec = np.arange(tail.size) + 0.5
        s2 = (sec >= lo) & (sec <= hi) & np.isfinite(tail)
        axes[3].plot(sec[s2], tail[s2], label=system)
    for ax, label in zip(
        axes,
        (
            "queued requests",
            "KV usage %",
            "layers dropped (GPUs x layers)",
            "p99 TTFT of arrivals (s)",
        ),
        strict=True,
    ):
        ax.set_ylabel(label)
        ax.axvspan(b0, b1, color="grey", alpha=0.15)
        ax.grid(alpha=0.3)
    axes[3].set_yscale("log")
    axes[3].set_xlabel("time (s); shaded: burst window")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{setup}: {scenario['name']}")
    out = save_figure(fig, path, dpi=80)
    return out


def write_report(
    doc: dict,
    path: Path,
    plot_dir: Path,
    command: str,
    analysis: Sequence[str] = (),
) -> Path:
    """The markdown report: command, setting, headline, per-scenario tables, timeline plots."""
    cfg = doc["config"]
    lines = [
        "# KunServe: dropping replicated layers under KV-memory overload",
        "",
        "Command:",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Wall time {doc.get('wall_s', 0):.0f} s. Router for every system but Llumnix: "
        f"`{cfg['router']}`; engines: vLLM v1 defaults plus a free-block watermark of "
        f"{cfg['engine']['watermark']:g}, {cfg['engine']['block_size']}-token blocks, prefix caching "
        "on. Percentiles are over every finished request of the slice (TBT: over every gap between "
        "consecutive tokens); 'burst' columns take the requests arriving from the burst's start to "
        "30 s after its end.",
        "",
        "## Setups and scenarios",
        "",
        "| setup | model | GPU | TP | instances | load (x the scenario rates) |",
        "|---|---|---|---:|---:|---:|",
        *(
            f"| {s['name']} | {s['model']} | {s['gpu']} | {s['tp']} | {s['num_instances']} | "
            f"{s['load']:.2f} |"
            for s in cfg["setups"]
        ),
        "",
        "Every setup replays the same requests (burst included) with arrival times divided by its "
        "load, its prefill speed relative to the first setup's (the perf model's tokens/s on an "
        "8192-token chunk), so each cluster sees a comparable compute load; the scenario times "
        "below are the first setup's.",
        "",
        "| scenario | trace | base rate x | burst x | burst window s | simulated arrivals s | requests |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for sc in cfg["scenarios"]:
        n = next((r["requests"] for r in doc["runs"] if r["scenario"] == sc["name"]), 0)
        lines.append(
            f"| {sc['name']} | `{sc['trace']}` | {sc['rate_scale']:g} | {sc['burst_factor']:g} | "
            f"[{sc['burst_start_s']:g}, {sc['burst_start_s'] + sc['burst_s']:g}) | "
            f"{sc['duration_s']:g} | {n} |"
        )
    lines += ["", "## Headline: KunServe p99 TTFT against the best baseline", ""]
    lines += headline_table(doc)
    if analysis:
        lines += ["", *analysis]
    plot_dir = Path(plot_dir)

    def section(setup: str, sc: dict) -> list[str]:
        out = [f"#### {sc['name']}", "", *system_table(doc, setup, sc["name"]), ""]
        name = f"{setup}_{sc['name']}".replace(":", "-")
        png = plot_timelines(doc, setup, sc, plot_dir / f"{name}.png")
        rel = os.path.relpath(png, Path(path).parent)
        return [*out, f"![timelines]({Path(rel).as_posix()})", ""]

    diag = cfg.get("diagnostics", [])
    if diag and cfg["setups"]:
        first = cfg["setups"][0]["name"]
        lines += [
            "",
            f"## Diagnostic: where dropping layers pays ({first})",
            "",
            "Not a trace from the issue: the Azure conversation slice with every output 4x longer "
            "(`output_scale`), so KV memory fills long before compute does; `kunserve-deg4` and "
            "`kunserve-deg8` force every group to that many stages.",
            "",
        ]
        for sc in diag:
            lines += section(first, sc)
    lines += ["", "## Every system, every scenario", ""]
    for setup in cfg["setups"]:
        lines += [f"### {setup['name']}", ""]
        for sc in cfg["scenarios"]:
            lines += section(setup["name"], sc)
    return atomic_write_text(path, "\n".join(lines) + "\n")
