"""Predicted vs measured per-layer time on Vidur profiles, and the markdown report built from it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from wildserve.perf.analytic import LAYER_OPS, StepCostBase
from wildserve.perf.fit import HOLDOUT, profile_gpu
from wildserve.perf.profiles import Profile

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
    from wildserve.perf.analytic import AnalyticCostModel

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
