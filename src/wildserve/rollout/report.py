"""Per-epoch figures of rollout runs, compared with the plain-decoding run of the same prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wildserve.rollout.planner import NO_DRAFTER
from wildserve.rollout.runner import RolloutReport


def summary_rows(reports: Sequence[RolloutReport]) -> list[dict[str, Any]]:
    """One row per (mode, epoch); speedups are against the 'none' run's same epoch, if any."""
    base = {e.epoch: e for r in reports if r.config.spec_mode == "none" for e in r.epochs}
    rows = []
    for r in reports:
        mode = r.config.spec_mode + (
            " +decoupled" if r.config.decoupled and r.config.spec_mode != "none" else ""
        )
        for e in r.epochs:
            s = e.stats
            b = base.get(e.epoch)
            rows.append(
                {
                    "mode": mode,
                    "epoch": e.epoch,
                    "wall_s": round(s.wall_time_s, 2),
                    "cpu_s": round(e.cpu_s, 2),
                    "tokens": s.num_tokens,
                    "tokens_per_s": round(e.tokens_per_s, 1),
                    "target_forwards": s.num_target_forwards,
                    "tokens_per_forward": round(s.tokens_per_forward, 3),
                    "drafters": {
                        name: {
                            "row_steps": d.num_row_steps,
                            "tokens_per_forward": round(d.tokens_per_forward, 3),
                            "acceptance": round(d.acceptance_rate, 3),
                            "draft_s": round(d.draft_time_s, 2),
                        }
                        for name, d in sorted(s.by_drafter.items())
                    },
                    "speedup_wall": round(b.stats.wall_time_s / s.wall_time_s, 3) if b else None,
                    "speedup_tokens_per_s": round(e.tokens_per_s / b.tokens_per_s, 3)
                    if b
                    else None,
                    "speedup_cpu_per_token": round(
                        (b.cpu_s / b.stats.num_tokens) / (e.cpu_s / s.num_tokens), 3
                    )
                    if b
                    else None,
                    "reward": round(e.mean_reward, 3),
                    "mean_len": round(e.mean_response_tokens, 1),
                    "max_len": e.max_response_tokens,
                }
            )
    return rows


def summary_table(rows: Sequence[dict[str, Any]], title: str):
    """A rich table of ``summary_rows`` (per-drafter tokens/forward in one column)."""
    from rich.table import Table

    table = Table(title=title)
    for col in (
        "mode",
        "epoch",
        "wall s",
        "tokens",
        "tok/s",
        "tok/fwd",
        "per drafter tok/fwd (acc)",
        "speedup wall",
        "speedup tok/s",
        "speedup cpu/tok",
        "reward",
    ):
        table.add_column(
            col, justify="left" if col in ("mode", "per drafter tok/fwd (acc)") else "right"
        )
    for r in rows:
        per = ", ".join(
            f"{n} {d['tokens_per_forward']:.2f} ({d['acceptance']:.2f})"
            for n, d in r["drafters"].items()
            if n != NO_DRAFTER
        )
        table.add_row(
            r["mode"],
            str(r["epoch"]),
            f"{r['wall_s']:.1f}",
            str(r["tokens"]),
            f"{r['tokens_per_s']:.1f}",
            f"{r['tokens_per_forward']:.2f}",
            per or "-",
            "-" if r["speedup_wall"] is None else f"{r['speedup_wall']:.2f}x",
            "-" if r["speedup_tokens_per_s"] is None else f"{r['speedup_tokens_per_s']:.2f}x",
            "-" if r["speedup_cpu_per_token"] is None else f"{r['speedup_cpu_per_token']:.2f}x",
            f"{r['reward']:.2f}",
        )
    return table
