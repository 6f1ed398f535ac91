"""Markdown tables from `wildserve rollout --output-json` files (for docs/results/rollout.md).

Run: python benchmarks/rollout_report.py docs/results/rollout/smollm2_coupled.json [...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"  # no baseline in the run (--no-baseline)


def table(path: Path) -> str:
    data = orjson.loads(path.read_bytes())
    args = data.get("args") or data["command_args"]  # the first results used the older key
    sampling = data.get("sampling") or args.pop("sampling", "")
    args.pop("spec_config", None)
    lines = [
        f"`{path}`: {args}, {sampling}",
        "",
        "| mode | epoch | wall s | CPU s | tokens | target fwds | tok/fwd | per drafter: row-steps, tok/fwd, acc"
        " | speedup wall | speedup cpu/tok | reward | mean/max len |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        per = "; ".join(
            f"{n}: {d['row_steps']}, {d['tokens_per_forward']:.2f}, {d['acceptance']:.2f}"
            for n, d in r["drafters"].items()
            if n != "none"
        )
        lines.append(
            f"| {r['mode']} | {r['epoch']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['tokens']} | "
            f"{r['target_forwards']} | {r['tokens_per_forward']:.3f} | {per or '-'} | "
            f"{_ratio(r['speedup_wall'])} | {_ratio(r['speedup_cpu_per_token'])} | {r['reward']:.2f} | "
            f"{r['mean_len']:.0f}/{r['max_len']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
