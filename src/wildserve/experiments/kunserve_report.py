"""The KunServe regime-map report: method, headline and bands, causes, figures, every point's row."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from wildserve.experiments.kunserve_analysis import (
    blocker_evidence,
    cause,
    economics_table,
    group_by_pair,
    headline,
    points,
)
from wildserve.experiments.kunserve_plots import plot_regime_map, plot_timelines
from wildserve.io import atomic_write_text


def _f(x: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}"


def _x(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def _band(b: tuple[float, float] | None) -> str:
    return "none" if b is None else f"[{b[0]:.2f}, {b[1]:.2f}]"


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def method_lines(doc: dict) -> list[str]:
    cfg = doc["config"]
    return [
        "## Method",
        "",
        f"- Systems: {', '.join(cfg['systems'])}, each on a fresh cluster in the same simulator; "
        f"router `{cfg['router']}` for all but Llumnix (freeness dispatch plus live migration).",
        "- Dispatch sees serving units (`overload/dispatch.py`, the same rule for every system): a "
        "KunServe group of g instances is shown to the router as g views, each with 1/g of the "
        "group's requests, queued prefill and KV blocks; a group batches with g x max_num_seqs "
        "seats and g x the token budget.",
        "- KunServe: drop under the authors' trigger (KV usage >= 95 % and queued demand >= free "
        "blocks); running KV exchanged layer by layer; the first pipelined step pays the pipeline "
        "fill; restore after the group had no queue and KV usage <= 50 % at every check for 5 s "
        "(hysteresis); the leader stays dispatchable while the layers reload; at the split every "
        "request is moved out to a member with its KV (largest first into the roomiest member).",
        f"- Bursts: the requests arriving in [{cfg['burst_start_s']:g}, "
        f"{cfg['burst_start_s'] + cfg['burst_s']:g}) s are replicated so the window carries the "
        f"burst factor times its load; factors {cfg['factors'][0]:g} to {cfg['factors'][-1]:g}. "
        f"Arrivals are simulated for {cfg['duration_s']:g} s; every run drains."
        + "".join(
            f" {w['name']}: its trace comes in clumps, so its slice starts where the burst window "
            f"holds the most arrivals, up to {w['busy_search_s']:g} s of the trace after offset "
            f"{w['trace_offset_s']:g} s (`busiest_offset`)."
            for w in cfg["workloads"]
            if w.get("busy_search_s", 0) > 0
        ),
        "- Base loads: a calibration run of vLLM without a burst at the workload's nominal rate "
        "measures its peak KV demand (blocks held plus blocks the queues need) and its prefill "
        "demand (uncached prompt tokens per second); each base load is the highest rate, scaled "
        "linearly, at which the peak KV demand and the prefill demand stay within "
        + " and ".join(f"{_pct(kv)} / {_pct(c)}" for kv, c in cfg["base_targets"])
        + " of the cluster's KV blocks / prefill throughput (perf model, 8k-token chunks), so "
        "both have headroom before the burst; 'kv-bound' or 'compute-bound' says which limit set "
        "it.",
        "- x axis, *excess demand over freed memory*: (vLLM's peak KV demand - its KV capacity) / "
        "the blocks a drop frees when every instance joins a group of the largest degree; <= 0: "
        "no KV overload; (0, 1]: a drop can absorb it; > 1: it cannot. The dotted line in the "
        "figures is where pairs (degree 2) stop being enough.",
        f"- Whole-slice percentiles are over every request; 'burst' columns take the requests "
        f"arriving from the burst's start to {cfg['burst_tail_s']:g} s after its end. Each ratio "
        "column compares KunServe with the baseline that is best in that column. TBT: every gap "
        "between consecutive tokens, pooled. Blockers: the share of vLLM's step time in which the "
        "head of the waiting queue was not admitted for lack of KV blocks, token budget or seats "
        "(`Engine.admission_log`).",
        "- Requests whose prompt + output fit no single instance are left out of the workload for "
        "every system alike (counted below).",
        "",
    ]


def setup_lines(doc: dict) -> list[str]:
    cfg = doc["config"]
    lines = [
        "## Setups and workloads",
        "",
        "| setup | model | GPU | TP | instances | KV blocks / instance | weights / usable memory | "
        "freed by pairs | freed by the largest drop | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in cfg["setups"]:
        freed = s["freed_blocks"]
        cap = s["cluster_blocks"]
        largest = max(freed, key=int) if freed else None
        lines.append(
            f"| {s['name']} | {s['model']} | {s['gpu']} | {s['tp']} | {s['num_instances']} | "
            f"{s['blocks_per_instance']} | {_pct(s['weights_share'])} | "
            f"{_pct(freed.get('2', 0) / cap)} | "
            + (f"{_pct(freed[largest] / cap)} (degree {largest})" if largest else "-")
            + f" | {s['description']} |"
        )
    lines += [
        "",
        "| workload | trace | options | description | base loads (x trace rate) per setup | "
        "left out |",
        "|---|---|---|---|---|---:|",
    ]
    bases: dict[str, list[str]] = {}
    filtered: Counter = Counter()
    for r in doc["runs"]:
        if r["system"] == "vllm" and r["factor"] == doc["config"]["factors"][0]:
            bases.setdefault(r["workload"], []).append(
                f"{r['setup']}: {r['base']:g} ({r['bound']})"
            )
        filtered[r["workload"]] = max(filtered[r["workload"]], r["summary"].get("filtered", 0))
    for w in cfg["workloads"]:
        opts = ", ".join(f"{k}={v}" for k, v in w["options"].items()) or "-"
        lines.append(
            f"| {w['name']} | `{w['trace']}` | {opts} | {w['description']} | "
            f"{'; '.join(bases.get(w['name'], [])) or '-'} | {filtered[w['name']]} |"
        )
    return [*lines, ""]


def headline_lines(doc: dict, pts: list[dict]) -> tuple[list[str], list[tuple[str, str]]]:
    pairs = group_by_pair(pts)
    lines = [
        "## Headline: where KunServe's p99 TTFT wins, and by how much",
        "",
        "| workload | setup | best ratio (whole p99) | at base x burst | excess | best baseline "
        "p99 -> KunServe p99 (s) | burst p99 / p99.9 ratio there | TBT p50 / p99 vLLM -> "
        "KunServe (ms) | points >= 10x / >= 2x / < 0.9x of | band >= 10x (excess) | band >= 2x |",
        "|---|---|---:|---|---:|---|---|---|---|---|---|",
    ]
    wins: list[tuple[str, str]] = []
    for (w, s), ps in pairs.items():
        h = headline(ps)
        if h is None:
            continue
        b = h["best"]
        if h["num_10x"]:
            wins.append((w, s))
        lines.append(
            f"| {w} | {s} | {_x(b['ratio'])} | {b['base']:g} x {b['factor']:g} | "
            f"{_f(b['excess'])} | {_f(b['best_p99'])} ({b['best_baseline']}) -> "
            f"{_f(b['kunserve_p99'])} | {_x(b['burst_ratio'])} / {_x(b['burst999_ratio'])} | "
            f"{_f(b['tbt_p50'][0], 1e3, 1)} -> {_f(b['tbt_p50'][1], 1e3, 1)} / "
            f"{_f(b['tbt_p99'][0], 1e3, 0)} -> {_f(b['tbt_p99'][1], 1e3, 0)} | "
            f"{h['num_10x']} / {h['num_2x']} / {h['num_worse']} of {h['num_points']} | "
            f"{_band(h['band_10x'])} | {_band(h['band_2x'])} |"
        )
    workloads = sorted({w for w, _ in wins})
    setups = sorted({s for _, s in wins})
    met = len(workloads) >= 2 and len(setups) >= 2
    lines += [
        "",
        f"**Acceptance (>= 10x lower whole-slice p99 TTFT at some burst size, for at least two "
        f"workloads and two setups): {'met' if met else 'not met'}.** KunServe reaches 10x in "
        f"{len(wins)} (workload, setup) pairs: "
        + (", ".join(f"{w} on {s}" for w, s in wins) or "none")
        + ".",
        "",
    ]
    return lines, wins


def cause_lines(pts: list[dict]) -> list[str]:
    lines = [
        "## Where it does not pay, and why",
        "",
        "Every point where KunServe's whole-slice p99 TTFT is less than 2x better than the best "
        "baseline's, classified from vLLM's admission blockers in the burst window (median shares "
        "of its step time):",
        "",
        "| workload | setup | points < 2x | cause: count | vLLM blocked on KV / budget / seats, "
        "budget used (burst window; median over those points) | blocked on KV from the burst's "
        "start to the end, vLLM -> KunServe (median) |",
        "|---|---|---:|---|---|---|",
    ]
    for (w, s), ps in group_by_pair(pts).items():
        weak = [p for p in ps if (p["ratio"] or 0) < 2]
        if not weak:
            continue
        causes = Counter(cause(p) for p in weak)
        ev = blocker_evidence(weak)
        lines.append(
            f"| {w} | {s} | {len(weak)} | "
            + "; ".join(f"{c}: {n}" for c, n in causes.most_common())
            + " | "
            + (
                f"{_pct(ev['kv_blocks'])} / {_pct(ev['token_budget'])} / {_pct(ev['seats'])}, "
                f"{_pct(ev['budget_use'])}"
                if ev
                else "-"
            )
            + " | "
            + (f"{_pct(ev['kv_after'])} -> {_pct(ev['kunserve_kv_after'])}" if ev else "-")
            + " |"
        )
    strong = [p for p in pts if (p["ratio"] or 0) >= 10]
    if strong:
        ev = blocker_evidence(strong)
        lines += [
            "",
            f"Where it wins 10x or more ({len(strong)} points), vLLM's step time in the burst "
            f"window is blocked on KV blocks {_pct(ev['kv_blocks'])} of the time (median) and on "
            f"the token budget {_pct(ev['token_budget'])}, while its steps use "
            f"{_pct(ev['budget_use'])} of the budget; from the burst's start to the end of the "
            f"run vLLM is blocked on KV {_pct(ev['kv_after'])} of the time and KunServe "
            f"{_pct(ev['kunserve_kv_after'])}.",
        ]
    return [*lines, ""]


def _after(p: dict) -> str:
    v, k = p.get("vllm_after"), p.get("kunserve_after")
    if v is None or k is None:
        return "-"
    return f"{_pct(v['kv_blocks'])} -> {_pct(k['kv_blocks'])}"


def point_table(ps: list[dict]) -> list[str]:
    lines = [
        "| base x | burst x | excess | best baseline p99 s | KunServe p99 s | ratio | burst "
        "p99 ratio | burst p99.9 ratio | TBT p50 ms vLLM -> KS | TBT p99 ms vLLM -> KS | vLLM "
        "blocked KV / budget / seats (burst) | vLLM -> KunServe blocked on KV, burst start to end "
        "(per-second mean) | groups (degrees) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for p in sorted(ps, key=lambda p: (p["level"], p["factor"])):
        b = (p["vllm_blockers"] or {}).get("burst", {})
        lines.append(
            f"| {p['base']:g} ({p['bound']}) | {p['factor']:g} | {_f(p['excess'])} | {_f(p['best_p99'])} "
            f"({p['best_baseline']}) | {_f(p['kunserve_p99'])} | {_x(p['ratio'])} | "
            f"{_x(p['burst_ratio'])} | {_x(p['burst999_ratio'])} | "
            f"{_f(p['tbt_p50'][0], 1e3, 1)} -> {_f(p['tbt_p50'][1], 1e3, 1)} | "
            f"{_f(p['tbt_p99'][0], 1e3, 0)} -> {_f(p['tbt_p99'][1], 1e3, 0)} | "
            f"{_pct(b.get('kv_blocks', 0))} / {_pct(b.get('token_budget', 0))} / "
            f"{_pct(b.get('seats', 0))} | {_after(p)} | "
            f"{p['groups']} ({', '.join(map(str, p['degrees'])) or '-'}) |"
        )
    return lines


def write_report(
    doc: dict,
    path: Path,
    plot_dir: Path,
    command: str,
    timing: str,
    featured: dict | None = None,
    notes: str = "",
) -> Path:
    """The markdown report with its figures (``featured``: run key -> runs with timelines).

    ``notes``: a reading of these runs written by hand, placed after the timing.
    """
    cfg = doc["config"]
    pts = points(doc)
    path = Path(path)
    plot_dir = Path(plot_dir)

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, path.parent)).as_posix()

    lines = [
        "# KunServe: dropping replicated layers under KV-memory overload, a regime map",
        "",
        "Command:",
        "",
        f"```bash\n{command}\n```",
        "",
        timing,
        "",
        *([notes.rstrip(), ""] if notes.strip() else []),
        *method_lines(doc),
        *setup_lines(doc),
    ]
    head, _ = headline_lines(doc, pts)
    lines += head
    lines += cause_lines(pts)
    lines += ["## Regime maps", ""]
    for w in cfg["workloads"]:
        wp = [p for p in pts if p["workload"] == w["name"]]
        if not wp:
            continue
        png = plot_regime_map(wp, cfg["setups"], w["name"], plot_dir / f"map_{w['name']}.png")
        lines += [f"### {w['name']}", "", f"![regime map]({rel(png)})", ""]
    if featured:
        lines += ["## Timelines of the best point per workload", ""]
        window = (cfg["burst_start_s"], cfg["burst_start_s"] + cfg["burst_s"])
        for title, runs in featured.items():
            name = title.replace("/", "_").replace(" ", "")
            png = plot_timelines(runs, title, window, plot_dir / f"timeline_{name}.png")
            lines += [f"### {title}", "", f"![timelines]({rel(png)})", ""]
    lines += [
        "## What a drop buys",
        "",
        "From the memory and perf models the simulation uses: decode steps with every sequence at "
        "the given context and the KV region full, capped at max_num_seqs per stage; a degree-g "
        "row is one group of g instances, per-GPU throughput divides by g x TP.",
        "",
        *economics_table(cfg["setups"]),
        "",
        "## Every point",
        "",
    ]
    for (w, s), ps in group_by_pair(pts).items():
        lines += [f"### {w} on {s}", "", *point_table(ps), ""]
    return atomic_write_text(path, "\n".join(lines) + "\n")
