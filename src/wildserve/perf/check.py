"""Predicted vs measured per-layer time on Vidur profiles, and the markdown report built from it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from wildserve.perf.analytic import LAYER_OPS, AnalyticCostModel, StepCostBase
from wildserve.perf.calibration import CALIBRATIONS
from wildserve.perf.fit import COMPUTE_PARAMS, HOLDOUT, profile_gpu
from wildserve.perf.gpus import get_gpu
from wildserve.perf.models import get_model
from wildserve.perf.profiles import Profile, read_collective

# Token counts shown in the report's per-file tables (errors are computed over every measured row).
REPORT_TOKENS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass(frozen=True, slots=True)
class CheckRow:
    """Per-layer sum of the profiled ops (embedding excluded) at one token count and TP degree."""

    gpu: str
    hf_id: str
    tp: int
    num_tokens: int
    measured_s: float
    predicted_s: float

    @property
    def rel_error(self) -> float:
        return (self.predicted_s - self.measured_s) / self.measured_s


@dataclass(frozen=True, slots=True)
class ErrorStats:
    count: int
    median: float  # of |relative error|
    p90: float
    worst: float

    @staticmethod
    def of(rows: Sequence[CheckRow]) -> ErrorStats:
        errs = np.abs([r.rel_error for r in rows])
        return ErrorStats(
            len(errs), float(np.median(errs)), float(np.quantile(errs, 0.9)), float(errs.max())
        )


def check_profile(
    profile: Profile, make_model: Callable[[Profile, int], StepCostBase]
) -> list[CheckRow]:
    """Compare ``make_model(profile, tp).layer_op_times`` with every measured row of ``profile``."""
    rows = []
    for tp, by_op in profile.curves.items():
        ops = [op for op in LAYER_OPS if op in by_op]
        model = make_model(profile, tp)
        tokens = sorted(set.intersection(*(set(by_op[op].num_tokens.tolist()) for op in ops)))
        lookup = {
            op: dict(zip(by_op[op].num_tokens.tolist(), by_op[op].seconds.tolist(), strict=True))
            for op in ops
        }
        for m in tokens:
            pred = model.layer_op_times(m)
            rows.append(
                CheckRow(
                    profile.gpu,
                    profile.hf_id,
                    tp,
                    m,
                    sum(lookup[op][m] for op in ops),
                    sum(pred.get(op, 0.0) for op in ops),
                )
            )
    return rows


def analytic_for(profile: Profile, tp: int) -> StepCostBase:
    return AnalyticCostModel(profile.model_config(), profile_gpu(profile), tp)


def render_markdown(rows_by_profile: dict[str, list[CheckRow]], command: str, source: str) -> str:
    """The report: summary table, then per-file predicted vs measured at :data:`REPORT_TOKENS`."""
    all_rows = [r for rows in rows_by_profile.values() for r in rows]
    overall = ErrorStats.of(all_rows)
    held = [r for r in all_rows if r.hf_id in HOLDOUT]
    trained = [r for r in all_rows if r.hf_id not in HOLDOUT]
    lines = [
        "# Analytic step-cost model vs measured Vidur operator profiles",
        "",
        f"Produced by `{command}` from {source}. Each row of a profile is one layer at one token count",
        "and TP degree; *measured* is the sum of the medians of every profiled op of that layer",
        "(norms, QKV projection, RoPE, output projection, MLP up/act/down, residual add; embedding and",
        "attention excluded as Vidur profiles no attention here), *predicted* is the same sum from",
        "`AnalyticCostModel.layer_op_times`. Errors are |pred - meas| / meas over **every** measured row;",
        f"the per-file tables show the token counts {', '.join(map(str, REPORT_TOKENS))} where measured.",
        f"Efficiencies were fitted with `wildserve perf fit` on all models except the held-out {', '.join(HOLDOUT)}",
        "(per GPU family); held-out rows never influenced the constants.",
        "",
        "## Summary",
        "",
        "| GPU | profile | rows | median err | p90 err | worst err |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for rows in rows_by_profile.values():
        s = ErrorStats.of(rows)
        tag = " (held out)" if rows[0].hf_id in HOLDOUT else ""
        lines.append(
            f"| {rows[0].gpu} | {rows[0].hf_id}{tag} | {s.count} | {s.median:.1%} | {s.p90:.1%} | {s.worst:.1%} |"
        )
    for label, rows in (
        ("all fitted models", trained),
        ("held-out models", held),
        ("**overall**", all_rows),
    ):
        if rows:
            s = ErrorStats.of(rows)
            lines.append(
                f"| all | {label} | {s.count} | {s.median:.1%} | {s.p90:.1%} | {s.worst:.1%} |"
            )
    verdict = "met" if overall.median <= 0.15 else "NOT met"
    lines += ["", f"Goal median ≤ 15%: **{verdict}** (overall median {overall.median:.1%}).", ""]
    lines += _by_batch_size(all_rows) + _constants() + _collectives() + _not_calibrated()
    for rows in rows_by_profile.values():
        tps = sorted({r.tp for r in rows})
        by = {(r.tp, r.num_tokens): r for r in rows}
        lines += [f"## {rows[0].gpu} / {rows[0].hf_id}", ""]
        head = (
            "| tokens | "
            + " | ".join(f"TP{tp} meas ms | TP{tp} pred ms | TP{tp} err" for tp in tps)
            + " |"
        )
        lines += [head, "| ---: |" + " ---: | ---: | ---: |" * len(tps)]
        for m in REPORT_TOKENS:
            cells = []
            for tp in tps:
                r = by.get((tp, m))
                cells += (
                    [
                        f"{r.measured_s * 1e3:.4f}",
                        f"{r.predicted_s * 1e3:.4f}",
                        f"{r.rel_error:+.1%}",
                    ]
                    if r
                    else ["", "", ""]
                )
            if any(cells):
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _by_batch_size(rows: Sequence[CheckRow]) -> list[str]:
    """Signed and absolute error per octave of token count: where the model is biased."""
    lines = [
        "## Error by token count",
        "",
        "Signed error > 0 means the model predicts slower than measured.",
        "",
        "| GPU | tokens | rows | median signed err | median err | worst err |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for gpu in sorted({r.gpu for r in rows}):
        buckets: dict[int, list[float]] = {}
        for r in rows:
            if r.gpu == gpu:
                buckets.setdefault(min(int(np.log2(r.num_tokens)), 12), []).append(r.rel_error)
        for octave, errs in sorted(buckets.items()):
            label = f"{2**octave}-{2 ** (octave + 1) - 1}" if octave < 12 else f">= {2**octave}"
            e = np.array(errs)
            lines.append(
                f"| {gpu} | {label} | {len(e)} | {np.median(e):+.1%} | {np.median(np.abs(e)):.1%} | {np.abs(e).max():.1%} |"
            )
    return [*lines, ""]


def _constants() -> list[str]:
    fitted = set(COMPUTE_PARAMS) | {
        "allreduce_latency_s",
        "allreduce_bw",
        "p2p_latency_s",
        "p2p_bw",
    }
    families = list(CALIBRATIONS)
    lines = [
        "## Constants in use (`wildserve/perf/calibration.py`)",
        "",
        "| field | " + " | ".join(families) + " | source |",
        "| --- |" + " ---: |" * len(families) + " --- |",
    ]
    for name in CALIBRATIONS.get(families[0]).__dataclass_fields__:
        values = " | ".join(f"{getattr(CALIBRATIONS.get(f), name):.4g}" for f in families)
        lines.append(
            f"| {name} | {values} | {'fitted' if name in fitted else 'default (not measured here)'} |"
        )
    return [*lines, ""]


def _collectives() -> list[str]:
    """All-reduce and send/recv constants against the H100 DGX network profile they were fitted on."""
    samples = read_collective("all_reduce")
    lines = [
        "## Collectives (H100 DGX network profile)",
        "",
        "| collective | GPUs | rows | median err | worst err |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for tp in sorted(set(samples.num_workers.tolist())):
        keep = (samples.num_workers == tp) & (samples.devices_per_node == tp)
        cm = AnalyticCostModel(get_model("llama-3-70b"), get_gpu("h100"), tp)
        pred = np.array([cm.all_reduce_time(b) for b in samples.size_bytes[keep]])
        rel = np.abs(pred - samples.seconds[keep]) / samples.seconds[keep]
        lines.append(
            f"| all_reduce | {tp} | {keep.sum()} | {np.median(rel):.1%} | {rel.max():.1%} |"
        )
    p2p = read_collective("send_recv")
    keep = p2p.devices_per_node == 2
    cm = AnalyticCostModel(get_model("llama-3-70b"), get_gpu("h100"), 1)
    pred = np.array([cm.p2p_time(b) for b in p2p.size_bytes[keep]])
    rel = np.abs(pred - p2p.seconds[keep]) / p2p.seconds[keep]
    lines.append(f"| send_recv | 2 | {keep.sum()} | {np.median(rel):.1%} | {rel.max():.1%} |")
    return [*lines, ""]


def _not_calibrated() -> list[str]:
    return [
        "## Not calibrated here",
        "",
        "- Attention kernels: Vidur's attention profiles are not shipped, so prefill attention uses",
        "  `attn_compute` (fraction of dense peak, FlashAttention-2/3 papers report 50-75% at long",
        "  sequences) and decode attention `attn_memory` (fraction of HBM bandwidth reading KV).",
        "- Host overhead per step (`step_overhead_s`, `seq_overhead_s`) is an assumption, not a fit.",
        "- MoE expert GEMMs: no MoE profile exists; they use the dense efficiencies and the expected",
        "  number of distinct experts under uniform routing.",
        "- H200, H20 and A800 were not profiled: they use their family's fractions (Hopper, Ampere)",
        "  with their own datasheet peaks. Collectives were profiled on H100 only; A100/A800 use the",
        "  same fraction of their own NVLink bandwidth.",
        "",
    ]
