"""The regime map's numbers: one point per (workload, setup, base, burst), its band, and why.

A point compares KunServe with the best baseline (vLLM, InferCept, Llumnix), each column's best
being the baseline with the lowest value of that column. Its x coordinate is the *excess demand over
freed memory*: vLLM's peak KV demand (blocks held plus blocks its queues need) minus its KV capacity,
divided by the blocks the largest drop frees cluster-wide (every instance in a group of the largest
planner degree). Below 0 vLLM never runs out of KV; in (0, 1] a drop can absorb the excess; above 1
it cannot.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from wildserve.engine import EngineConfig, EngineRequest
from wildserve.engine.cluster import ClusterConfig
from wildserve.engine.costing import ModelCosting
from wildserve.engine.scheduler import SchedulerOutput
from wildserve.overload.layout import (
    build_layered_cluster,
    group_blocks,
    stage_bounds,
    staged_memory,
)
from wildserve.overload.pipeline import PipelineCosting

BASELINES = ("vllm", "infercept", "llumnix")
POINT = ("workload", "setup", "level", "factor")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _best(base: dict[str, dict], get) -> tuple[str | None, float | None]:
    vals = {s: get(r) for s, r in base.items() if get(r) is not None}
    if not vals:
        return None, None
    s = min(vals, key=lambda k: (vals[k], BASELINES.index(k)))
    return s, vals[s]


def after_burst(summary: dict, start_s: float) -> dict[str, float] | None:
    """Per-second mean shares of step time blocked on KV blocks / token budget, from ``start_s``.

    With long outputs the KV crunch comes tens of seconds after the burst (outputs keep growing),
    past the burst window; this covers the burst and everything after it.
    """
    per_s = summary.get("per_second")
    if not per_s:
        return None
    lo = int(start_s)
    kv = np.asarray(per_s["kv_blocked"][lo:], dtype=float)
    budget = np.asarray(per_s["budget_blocked"][lo:], dtype=float)
    if not kv.size:
        return None
    return {"kv_blocks": float(kv.mean()), "token_budget": float(budget.mean())}


def points(doc: dict) -> list[dict]:
    """Every swept point with KunServe and at least one baseline, in sweep order."""
    setups = {s["name"]: s for s in doc["config"]["setups"]}
    start_s = doc["config"]["burst_start_s"]
    by_point: dict[tuple, dict[str, dict]] = {}
    for r in doc["runs"]:
        by_point.setdefault(tuple(r[k] for k in POINT), {})[r["system"]] = r
    out = []
    for key, runs in by_point.items():
        ks = runs.get("kunserve")
        base = {s: runs[s]["summary"] for s in BASELINES if s in runs}
        if ks is None or not base:
            continue
        k = ks["summary"]
        facts = setups[key[1]]
        freed = facts["freed_blocks"]
        v = base.get("vllm")
        excess = None
        if v is not None and freed:
            over = v["peak_demand_blocks"] - v["kv_blocks"]
            excess = over / max(freed.values())
        best, best_p99 = _best(base, lambda s: s["latency"]["ttft"]["p99"])
        _, best_burst = _best(base, lambda s: s["burst"]["ttft"]["p99"])
        _, best_burst999 = _best(base, lambda s: s["burst"]["ttft"]["p999"])
        groups = k["latency"].get("groups", [])
        out.append(
            {
                **dict(zip(POINT, key, strict=True)),
                "base": ks["base"],
                "bound": ks["bound"],
                "excess": excess,
                "excess_pairs": (
                    (v["peak_demand_blocks"] - v["kv_blocks"]) / freed["2"]
                    if v is not None and freed.get("2")
                    else None
                ),
                "best_baseline": best,
                "best_p99": best_p99,
                "kunserve_p99": k["latency"]["ttft"]["p99"],
                "ratio": _ratio(best_p99, k["latency"]["ttft"]["p99"]),
                "burst_ratio": _ratio(best_burst, k["burst"]["ttft"]["p99"]),
                "burst999_ratio": _ratio(best_burst999, k["burst"]["ttft"]["p999"]),
                "kunserve_burst_p99": k["burst"]["ttft"]["p99"],
                "best_burst_p99": best_burst,
                "tbt_p50": (v["latency"]["tbt"]["p50"] if v else None, k["latency"]["tbt"]["p50"]),
                "tbt_p99": (v["latency"]["tbt"]["p99"] if v else None, k["latency"]["tbt"]["p99"]),
                "vllm_blockers": v["blockers"] if v else None,
                "vllm_after": after_burst(v, start_s) if v else None,
                "kunserve_after": after_burst(k, start_s),
                "kunserve_blockers": k["blockers"],
                "groups": len(groups),
                "degrees": sorted({g["degree"] for g in groups}),
                "fill_s": max((g["fill_s"] for g in groups), default=0.0),
            }
        )
    return out


def complete_points(doc: dict) -> tuple[dict, list[str]]:
    """``doc`` without the points that miss a run (a read-only cache), and those points' names."""
    missing = {tuple(r[k] for k in POINT) for r in doc["runs"] if r["summary"].get("missing")}
    kept = [r for r in doc["runs"] if tuple(r[k] for k in POINT) not in missing]
    names = sorted(f"{w}/{s}/L{lv}/x{f:g}" for w, s, lv, f in missing)
    return {**doc, "runs": kept}, names


def band(pts: Iterable[dict], threshold: float) -> tuple[float, float] | None:
    """The excess range of the points whose ratio reaches ``threshold`` (None: no such point)."""
    xs = [p["excess"] for p in pts if (p["ratio"] or 0) >= threshold and p["excess"] is not None]
    return (min(xs), max(xs)) if xs else None


def headline(pts: list[dict]) -> dict | None:
    """The best point of one (workload, setup) and its bands."""
    scored = [p for p in pts if p["ratio"] is not None]
    if not scored:
        return None
    best = max(scored, key=lambda p: p["ratio"])
    return {
        "best": best,
        "num_points": len(scored),
        "num_10x": sum(p["ratio"] >= 10 for p in scored),
        "num_2x": sum(p["ratio"] >= 2 for p in scored),
        "num_worse": sum(p["ratio"] < 0.9 for p in scored),
        "band_10x": band(scored, 10),
        "band_2x": band(scored, 2),
    }


def cause(p: dict) -> str:
    """Why a point shows no (>= 2x) gain, from vLLM's admission blockers in the burst window."""
    if p["excess"] is None or p["excess"] <= 0:
        return "no KV overload (vLLM's demand fits its memory)"
    if p["excess"] > 1:
        return "excess larger than the memory a drop frees"
    b = (p["vllm_blockers"] or {}).get("burst", {})
    kv, budget, seats = b.get("kv_blocks", 0), b.get("token_budget", 0), b.get("seats", 0)
    after = p.get("vllm_after")
    if after is not None:  # the crunch may come after the burst window (long outputs)
        kv, budget = max(kv, after["kv_blocks"]), max(budget, after["token_budget"])
    if budget > kv and budget >= seats:
        return "compute-bound (token budget, not KV, blocks admission)"
    if seats > kv:
        return "seat cap (max_num_seqs) blocks admission"
    return "KV-bound, but the pipelined group did not drain faster"


def group_by_pair(pts: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for p in pts:
        out.setdefault((p["workload"], p["setup"]), []).append(p)
    return out


# ---- what a drop buys, from the memory and perf models ------------------------------------------
DEGREES = (2, 4, 8)


def decode_plan(num_seqs: int, context: int) -> SchedulerOutput:
    """A pure-decode step of ``num_seqs`` requests with ``context`` tokens in KV each."""
    out = SchedulerOutput()
    for i in range(num_seqs):
        req = EngineRequest(i, 0.0, context, 10**6)
        req.num_output_tokens = 1
        req.num_computed_tokens = context
        out.scheduled.append(req)
        out.num_new_tokens.append(1)
        out.context_tokens.append(context)
    return out


def drop_economics(setup: dict, contexts: tuple[int, ...] = (1500, 12000)) -> list[dict]:
    """Per pipeline degree: KV tokens per instance and full-memory decode tokens/s per GPU."""
    engine = EngineConfig(gpu_memory_utilization=setup.get("gpu_memory_utilization", 0.9))
    n = setup["num_instances"]
    cfg = ClusterConfig(
        model=setup["model"], gpu=setup["gpu"], tp=setup["tp"], num_instances=n, engine=engine
    )
    cluster = build_layered_cluster(cfg)
    e = cluster.engines[0]
    mem = e.memory
    tokens0 = e.num_kv_blocks * engine.block_size
    rows = []
    for g in (1, *DEGREES):
        if g > n:
            break
        bounds = stage_bounds(cluster.num_layers, g)
        tokens = group_blocks([staged_memory(mem, lo, hi) for lo, hi in bounds]) * engine.block_size
        row = {"degree": g, "tokens_per_instance": tokens / g, "memory_gain": tokens / g / tokens0}
        for ctx in contexts:
            seqs = max(1, min(engine.max_num_seqs * g, tokens // (ctx + 1)))
            plan = decode_plan(seqs, ctx)
            if g == 1:
                step = ModelCosting(cluster.cost_model).step_time(plan)
            else:
                bw = cluster.links.bandwidth(list(range(g)))
                pipe = PipelineCosting(cluster.cost_model, [hi - lo for lo, hi in bounds], bw)
                step = pipe.step_time(plan)
            row[f"seqs@{ctx}"] = seqs
            row[f"tbt@{ctx}"] = step
            row[f"tok_s_per_gpu@{ctx}"] = seqs / step / (g * setup["tp"])
        rows.append(row)
    return rows


def economics_table(setups: list[dict], contexts: tuple[int, ...] = (1500, 12000)) -> list[str]:
    head = " | ".join(f"ctx {c}: seqs / TBT ms / decode tok/s per GPU (vs 1)" for c in contexts)
    lines = [
        f"| setup | degree | KV tokens per instance (vs 1) | {head} |",
        "|---|---:|---:|" + "---:|" * len(contexts),
    ]
    for s in setups:
        rows = drop_economics(s, contexts)
        base = rows[0]
        for row in rows:
            cells = [
                f"{row[f'seqs@{c}']} / {row[f'tbt@{c}'] * 1e3:.1f} / "
                f"{row[f'tok_s_per_gpu@{c}']:.0f} "
                f"({row[f'tok_s_per_gpu@{c}'] / base[f'tok_s_per_gpu@{c}']:.2f}x)"
                for c in contexts
            ]
            lines.append(
                f"| {s['name']} | {row['degree']} | {row['tokens_per_instance']:.0f} "
                f"({row['memory_gain']:.2f}x) | " + " | ".join(cells) + " |"
            )
    return lines


def blocker_evidence(pts: list[dict]) -> dict[str, float]:
    """Median share of vLLM's burst-window step time per blocker, and its budget use."""
    rows = [p["vllm_blockers"]["burst"] for p in pts if p["vllm_blockers"]]
    use = [p["vllm_blockers"]["burst_budget_use"] for p in pts if p["vllm_blockers"]]
    if not rows:
        return {}
    out = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    out["budget_use"] = float(np.median(use))
    for name, key in (("kv_after", "vllm_after"), ("kunserve_kv_after", "kunserve_after")):
        after = [p[key]["kv_blocks"] for p in pts if p.get(key)]
        out[name] = float(np.median(after)) if after else float("nan")
    return out
