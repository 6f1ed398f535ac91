"""Markdown tables of a `wildserve rollout-train` run: reward, entropy and every drafter's measured
tokens per target forward per RL step (for docs/results/rollout.md).

Tokens per target forward of a request at draft length k: for lookup drafters the exact replay walk
(the engine would take exactly that many forwards on that response), for model drafters the overlap
estimate (module doc of wildserve.rollout.acceptance). Per step: mean over requests, and the history
drafter's per-request p10 / median / p90; plus the best k per drafter.

Run: python benchmarks/rollout_acceptance_report.py docs/results/rollout/train [--k 6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wildserve.rollout.acceptance import chain_tokens_per_forward, walk_tokens_per_forward
from wildserve.rollout.sim_acceptance import load_steps

LOOKUPS, MODELS = ("history", "ngram"), ("quant3", "early-exit")


def per_request(traces: list[dict], name: str, k: int) -> np.ndarray:
    walk = walk_tokens_per_forward if name in LOOKUPS else chain_tokens_per_forward
    return np.array([walk(np.asarray(t[name]), k) for t in traces if name in t and t["len"]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--k", type=int, default=6)
    args = ap.parse_args()
    steps = load_steps(args.run)
    k = args.k
    print(
        f"`{args.run}`, k = {k} (history/n-gram: tree/chain of k tokens; model drafters: chain of k)\n"
    )
    print(
        "| step | epoch | reward | entropy | mean len | truncated | live history tok/fwd (row-steps) |"
        " T | history (p10/med/p90) | ngram | quant3 | early-exit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for body in steps:
        r = body["record"]
        live = r["live_history"]
        for temp in ("T1", "T07"):
            traces = body["traces"].get(temp, [])
            if not traces:
                continue
            cells = []
            for name in (*LOOKUPS, *MODELS):
                v = per_request(traces, name, k)
                if not len(v):
                    cells.append("-")
                elif name == "history":
                    p10, med, p90 = np.percentile(v, [10, 50, 90])
                    cells.append(f"**{v.mean():.3f}** ({p10:.2f}/{med:.2f}/{p90:.2f}, n={len(v)})")
                else:
                    cells.append(f"{v.mean():.3f} (n={len(v)})")
            head = (
                f"| {r['step']} | {r['epoch']} | {r['mean_reward']:.3f} | {r['mean_entropy']:.3f} | "
                f"{r['mean_len']:.0f} | {r['frac_truncated']:.2f} | "
                f"{live['tokens_per_forward']:.2f} ({live['row_steps']}) |"
                if temp == "T1"
                else "| | | | | | | |"
            )
            print(f"{head} {'1.0' if temp == 'T1' else '0.7'} | " + " | ".join(cells) + " |")
    print("\nbest k per drafter over the last step's T = 1 requests (mean tokens per forward):")
    last = steps[-1]["traces"]["T1"]
    budget = len(last[0]["history"][0]) if last and last[0]["history"] else 8
    for name in (*LOOKUPS, *MODELS):
        means = {
            kk: per_request(last, name, kk).mean()
            for kk in range(1, budget + 1)
            if len(per_request(last, name, kk))
        }
        if means:
            best = max(means, key=means.get)
            print(f"- {name}: k = {best}: {means[best]:.3f}  (k = 1: {means[1]:.3f})")


if __name__ == "__main__":
    main()
