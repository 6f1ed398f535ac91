"""Why KunServe gains what it gains here: memory freed by a drop, decode throughput at full memory.

Both tables come from the same memory and perf models the simulations use: how many more KV tokens a
group of g instances holds than g instances, and how many decode tokens per second one GPU delivers
when its KV region is full, alone or as a pipeline stage.
"""

from __future__ import annotations

import numpy as np

from wildserve.engine import EngineConfig, EngineRequest
from wildserve.engine.costing import ModelCosting
from wildserve.engine.scheduler import SchedulerOutput
from wildserve.experiments.kunserve import REFERENCE, Setup, prefill_tokens_per_s
from wildserve.experiments.kunserve_report import headline
from wildserve.overload.layout import (
    build_layered_cluster,
    group_blocks,
    stage_bounds,
    staged_memory,
)
from wildserve.overload.pipeline import PipelineCosting
from wildserve.sim.build import ClusterConfig

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


def drop_economics(setup: Setup, contexts: tuple[int, ...] = (1500, 12000)) -> list[dict]:
    """Per pipeline degree: KV tokens per instance and full-memory decode tokens/s per GPU."""
    engine = EngineConfig()
    cluster = build_layered_cluster(
        ClusterConfig(setup.model, setup.gpu, setup.tp, setup.num_instances, engine=engine)
    )
    e = cluster.engines[0]
    mem = e.memory
    bs = engine.block_size
    tokens0 = e.pool.num_blocks * bs
    rows = []
    for g in (1, *DEGREES):
        if g > setup.num_instances:
            break
        bounds = stage_bounds(cluster.num_layers, g)
        tokens = group_blocks([staged_memory(mem, lo, hi) for lo, hi in bounds]) * bs
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
            row[f"tok_s_per_gpu@{ctx}"] = seqs / step / (g * setup.tp)
        rows.append(row)
    return rows


def economics_table(
    setups: list[dict], rows_of: dict[str, list[dict]], contexts: tuple[int, ...] = (1500, 12000)
) -> list[str]:
    head = " | ".join(f"ctx {c}: seqs / TBT ms / decode tok/s per GPU (vs 1)" for c in contexts)
    lines = [
        f"| setup | degree | KV tokens per instance (vs 1) | {head} |",
        "|---|---:|---:|" + "---:|" * len(contexts),
    ]
    for s in setups:
        rows = rows_of[s["name"]]
        base = rows[0]
        for row in rows:
            cells = [
                f"{row[f'seqs@{c}']} / {row[f'tbt@{c}'] * 1e3:.1f} / "
                f"{row[f'tok_s_per_gpu@{c}']:.0f} ({row[f'tok_s_per_gpu@{c}'] / base[f'tok_s_per_gpu@{c}']:.2f}x)"
                for c in contexts
            ]
            lines.append(
                f"| {s['name']} | {row['degree']} | {row['tokens_per_instance']:.0f} "
                f"({row['memory_gain']:.2f}x) | " + " | ".join(cells) + " |"
            )
    return lines


def queue_cause(run: dict, queue: int = 50, full: float = 0.95) -> float | None:
    """KV usage when the queue first reached ``queue`` requests (None: it never did)."""
    tl = run["timeline"]
    for waiting, usage in zip(tl["num_waiting"], tl["kv_usage"], strict=True):
        if waiting >= queue:
            return usage
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def analysis_lines(doc: dict) -> list[str]:
    """The measured summary, why it is what it is, and the economics tables."""
    cfg = doc["config"]
    heads = [
        (s["name"], sc["name"], h)
        for s in cfg["setups"]
        for sc in cfg["scenarios"]
        if (h := headline(doc, s["name"], sc["name"])) is not None and h["ratio"] is not None
    ]
    lines: list[str] = []
    if heads:
        ratios = np.array([h["ratio"] for _, _, h in heads])
        burst = np.array([h["burst_ratio"] for _, _, h in heads if h["burst_ratio"]])
        best = max(heads, key=lambda x: x[2]["ratio"])
        worst = min(heads, key=lambda x: x[2]["ratio"])
        dropped = [h for _, _, h in heads if h["groups"]]
        lines += [
            f"**Summary.** Over {len(heads)} (setup, scenario) pairs, the best baseline's p99 TTFT "
            f"divided by KunServe's is {np.median(ratios):.2f}x at the median (above 1: KunServe is "
            f"better), from {worst[2]['ratio']:.2f}x ({worst[0]}, {worst[1]}) to "
            f"{best[2]['ratio']:.2f}x ({best[0]}, {best[1]}); over the requests arriving in the "
            f"burst window (+30 s) it is {np.median(burst):.2f}x at the median, at most "
            f"{burst.max():.2f}x. The goal of >= 10x lower p99 TTFT is met in "
            f"{int((ratios >= 10).sum())} of them. KunServe dropped layers in {len(dropped)}; in the "
            "others its trigger (KV usage >= 95 % with queued demand >= free blocks) never fired "
            "and it ran exactly as vLLM.",
            "",
        ]
    contexts = (1500, 12000)
    fields = {"name", "model", "gpu", "tp", "num_instances"}
    rows_of = {
        s["name"]: drop_economics(Setup(**{k: v for k, v in s.items() if k in fields}), contexts)
        for s in cfg["setups"]
    }
    lines += _why(doc, heads, rows_of, contexts)
    lines += [
        "What a drop buys, from the memory and perf models the simulation uses (decode steps with "
        "every sequence at the given context and the KV region full, capped at max_num_seqs per "
        "stage; a degree-g row is one group of g instances, per-GPU throughput divides by g x TP):",
        "",
        *economics_table(cfg["setups"], rows_of, contexts),
    ]
    return lines


def _why(
    doc: dict, heads: list, rows_of: dict[str, list[dict]], contexts: tuple[int, ...]
) -> list[str]:
    cfg = doc["config"]
    gains = [r["memory_gain"] for rows in rows_of.values() for r in rows[1:]]
    tputs = [
        r[f"tok_s_per_gpu@{c}"] / rows[0][f"tok_s_per_gpu@{c}"]
        for rows in rows_of.values()
        for r in rows[1:]
        for c in contexts
    ]
    runs = {(r["setup"], r["scenario"], r["system"]): r for r in doc["runs"]}
    queued = compute_first = 0
    for s in cfg["setups"]:
        for sc in cfg["scenarios"]:
            r = runs.get((s["name"], sc["name"], "vllm"))
            usage = queue_cause(r) if r else None
            if usage is not None:
                queued += 1
                compute_first += usage < 0.95
    tbt = [
        x
        for _, _, h in heads
        if h["groups"] and (x := _ratio(h["tbt_p50"], h["vllm_tbt_p50"])) is not None
    ]
    bubbles = [h["bubble"] for _, _, h in heads if h["bubble"] is not None]
    out = [
        "**Why the gain is small here.**",
        "",
        f"1. *The overload is mostly on compute, not on KV memory.* In {compute_first} of the "
        f"{queued} scenarios where vLLM's queue reached 50 requests, its KV usage was still below "
        "95 % when it did: the queue waited for prefill compute (or batch seats), which dropping "
        "layers does not add. Azure code requests produce ~28 tokens each, so their KV is freed "
        "almost as soon as it is written; Azure conversations (~1.2k-token prompts, ~210 output "
        "tokens) fill compute and KV at about the same load on these GPUs; a 12k-token Mooncake "
        f"prompt takes {12000 / prefill_tokens_per_s(REFERENCE):.2f} s of prefill on one "
        f"{REFERENCE.gpu.upper()} ({REFERENCE.model}).",
        "2. *At full memory, decode is HBM-bandwidth bound.* A step reads every byte of KV in use, "
        f"so a drop that adds {min(gains) - 1:.0%}-{max(gains) - 1:.0%} KV tokens (table below) "
        "admits that many more sequences but stretches every step nearly as much: decode tokens/s "
        f"per GPU moves by {min(tputs) - 1:+.0%} to {max(tputs) - 1:+.0%}. "
        "Queued requests get in sooner, then everyone decodes slower; the backlog drains at about "
        "the same rate.",
        "3. *Pipelines have costs of their own.* Every micro-batch re-reads the LM head on the "
        "last stage (1.6 GB for Qwen2.5's 152k vocabulary), stage loads differ, and hops add "
        f"latency: the bubble fraction averaged {np.mean(bubbles):.2f} over the groups formed, "
        if bubbles
        else "3. *Pipelines have costs of their own* (LM head per micro-batch, bubbles, hops), ",
    ]
    if tbt:
        out[-1] += (
            f"and KunServe's median TBT was {np.median(tbt):.2f}x vLLM's where it dropped "
            f"(range {min(tbt):.2f}x-{max(tbt):.2f}x)."
        )
    out += [
        "4. *A restore takes GPUs out of service.* A restoring group takes no new requests until "
        "its pipelined requests finish (the issue's rule), so the remaining instances carry the "
        "load meanwhile.",
        "",
    ]
    diag = cfg.get("diagnostics", [])
    if diag and cfg["setups"]:
        first = cfg["setups"][0]["name"]
        for sc in diag:
            h = headline(doc, first, sc["name"])
            if h is None:
                continue
            deeper = [
                (d, runs[key]["latency"]["ttft"]["p99"])
                for d in (4, 8)
                if (key := (first, sc["name"], f"kunserve-deg{d}")) in runs
            ]
            out += [
                f"*Where it does pay* ({first}, `{sc['name']}`, outputs 4x longer so KV fills "
                f"before compute): KunServe's p99 TTFT is {h['ratio']:.2f}x lower than the best "
                f"baseline ({h['best_baseline']}), and {h['burst_ratio']:.1f}x lower for the "
                "requests arriving in the burst window (+30 s), which it admits at once instead "
                "of queueing them for memory; its pipelines then fill with the long outputs and "
                "a backlog forms later, which sets its p99 over the whole slice."
                + "".join(
                    f" Forcing {d} stages per group gives a p99 TTFT of {p99:.1f} s against the "
                    f"greedy plan's {h['kunserve_p99_ttft']:.1f} s."
                    for d, p99 in deeper
                ),
                "",
            ]
    return out
