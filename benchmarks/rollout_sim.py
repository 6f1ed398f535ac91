"""Rollout step time on a fixed GPU pool: no-spec / coupled / decoupled / specactor (the planner).

Acceptance comes from a `wildserve rollout-train` run folder (per-request traces measured on the
policy's own samples at T = 1.0 or 0.7, at chosen RL steps); `--beta` runs the Beta sensitivity sweep
instead. Step times come from the project's analytic GPU model (wildserve.perf) or, with
`--calibration FILE`, from a file `benchmarks/rollout_gpu_calibration.py` wrote on a real GPU.
Every mode gets the same pool; the headline is per-GPU throughput (= step-time ratio on one pool).

Run: python benchmarks/rollout_sim.py --run docs/results/rollout/train --seeds 8 [--steps 7,8]
     python benchmarks/rollout_sim.py --beta --seeds 8
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from wildserve.io import atomic_write_json
from wildserve.metrics import mean_interval
from wildserve.perf import ModelConfig, build_cost_model, get_model
from wildserve.rollout.calibration import load_calibration
from wildserve.rollout.sim_acceptance import AcceptanceTable, load_measured
from wildserve.rollout.simulate import LENGTHS, MODES, RolloutSimConfig, simulate_rollout

# Qwen/Qwen2.5-0.5B config.json: the draft model's cost (its acceptance is the measured one)
QWEN25_05B = ModelConfig(
    "qwen2.5-0.5b",
    24,
    896,
    14,
    2,
    64,
    4864,
    151936,
    tie_word_embeddings=True,
    qkv_bias=True,
    hf_id="Qwen/Qwen2.5-0.5B",
)
PAPER = {"vs no-spec": "1.3-1.7x", "vs coupled": "1.3-1.5x"}


def analytic(target: str, gpu: str):
    cache: dict = {}

    def costs(role: str, gpus: int):
        if (role, gpus) not in cache:
            # the 0.5B drafter runs unsharded (TP1): on one of the target's GPUs when coupled,
            # on its own GPU when decoupled (14 heads do not split over 4 GPUs anyway)
            model, tp = (get_model(target), gpus) if role == "target" else (QWEN25_05B, 1)
            cache[role, gpus] = build_cost_model("analytic", model, gpu, tp=tp)
        return cache[role, gpus]

    return costs


def beta_tables(
    rng: np.random.Generator, means: tuple[float, ...] = (0.3, 0.45, 0.6, 0.75)
) -> dict[str, AcceptanceTable]:
    """Sensitivity sweep: the draft model's per-token rate, with a history drafter at 0.3."""
    return {
        f"beta draft={m}": AcceptanceTable.beta(
            {"history": (0.30, 2.0, False), "draft-model": (m, 8.0, True)}, 4096, rng
        )
        for m in means
    }


def run_point(cfg, costs, acc, seeds: int, baselines: list[dict] | None = None) -> tuple:
    """Every mode over ``seeds`` seeds; with ``baselines`` (the fixed-pool runs of the same seeds)
    only the decoupled modes run (the extra-GPU variant changes nothing else)."""
    modes = MODES if baselines is None else MODES[2:]
    runs = [simulate_rollout(cfg, costs, acc, seed, modes) for seed in range(seeds)]
    if baselines is not None:
        runs = [{**b, **r} for b, r in zip(baselines, runs, strict=True)]
    out = {}
    for mode in MODES:
        t = np.array([r[mode].step_time_s for r in runs])
        base = np.array([r["no-spec"].tokens_per_gpu_s for r in runs])
        coup = np.array([r["coupled"].tokens_per_gpu_s for r in runs])
        per_gpu = np.array([r[mode].tokens_per_gpu_s for r in runs])
        out[mode] = {
            "gpus": runs[0][mode].num_gpus,
            "instances": runs[0][mode].num_instances,
            "step_s": mean_interval(t),
            "tokens_per_iteration": float(np.mean([r[mode].tokens_per_iteration for r in runs])),
            "vs_no_spec": mean_interval(per_gpu / base),
            "vs_coupled": mean_interval(per_gpu / coup),
            "ladder": runs[0][mode].ladder[:: max(1, len(runs[0][mode].ladder) // 12)],
        }
    return out, runs


def table(title: str, point: dict) -> str:
    lines = [
        f"\n#### {title}",
        "| mode | GPUs | instances | step time s | tokens/iter | per-GPU vs no-spec | per-GPU vs coupled |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in point.items():
        (s, sh), (a, ah), (c, ch) = r["step_s"], r["vs_no_spec"], r["vs_coupled"]
        lines.append(
            f"| {mode} | {r['gpus']} | {r['instances']} | {s:.0f} ± {sh:.0f} | "
            f"{r['tokens_per_iteration']:.2f} | {a:.2f}x ± {ah:.2f} | {c:.2f}x ± {ch:.2f} |"
        )
    ladder = point["specactor"]["ladder"]
    if ladder:
        lines.append(
            "\nspecactor plans (progress: mode, model drafters on): "
            + "; ".join(f"{p:.0%}: {m} {d}" for p, m, d in ladder)
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="rollout-train run folder with measured traces")
    ap.add_argument(
        "--steps", default="", help="comma list of RL steps whose traces to use (default: all)"
    )
    ap.add_argument("--temperature", default="T1,T07", help="T1, T07 or both")
    ap.add_argument("--beta", action="store_true", help="Beta sensitivity sweep instead")
    ap.add_argument(
        "--beta-means", default="0.3,0.45,0.6,0.75", help="draft-model means of the Beta sweep"
    )
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--target", default="qwen2.5-32b")
    ap.add_argument("--lengths", default="lognormal-16k,dapo-20k")
    ap.add_argument("--extra-gpus", action="store_true", help="also the labelled extra-GPU variant")
    ap.add_argument(
        "--calibration", type=Path, help="GPU calibration JSON (replaces the analytic model)"
    )
    ap.add_argument("--requests-per-instance", type=int, default=256)
    ap.add_argument("--output-json", type=Path)
    args = ap.parse_args()
    if args.run is None and not args.beta:
        sys.exit("rollout_sim: give --run FOLDER (measured acceptance) or --beta")
    costs = (
        load_calibration(args.calibration) if args.calibration else analytic(args.target, args.gpu)
    )
    tables: dict[str, AcceptanceTable] = {}
    if args.beta:
        means = tuple(float(m) for m in args.beta_means.split(","))
        tables = beta_tables(np.random.default_rng(0), means)
    else:
        steps = [int(s) for s in args.steps.split(",") if s] or None
        for temp in args.temperature.split(","):
            acc = load_measured(args.run, temp, steps)
            tables[f"measured {acc.label}"] = acc
    results = {}
    for name, acc in tables.items():
        rates = {d.name: round(acc.mean_rate(j, 4), 3) for j, d in enumerate(acc.drafters)}
        for lengths in args.lengths.split(","):
            cfg = RolloutSimConfig(
                lengths=LENGTHS[lengths], requests_per_instance=args.requests_per_instance
            )
            variants = [("fixed pool", cfg)] + (
                [
                    (
                        "extra GPUs (labelled: decoupled workers get 4 + 1 GPUs on top of the pool)",
                        replace(cfg, extra_gpus=True),
                    )
                ]
                if args.extra_gpus
                else []
            )
            baselines = None
            for label, c in variants:
                t0 = time.process_time()
                point, runs = run_point(c, costs, acc, args.seeds, baselines)
                baselines = runs
                title = (
                    f"{name} | {lengths} | {label}: {c.pool_gpus} GPUs, {args.target} TP{c.target_tp}, "
                    f"{c.num_requests} requests, {args.seeds} seeds, mean per-token rate at k=4 {rates} "
                    f"({time.process_time() - t0:.0f} CPU s)"
                )
                print(table(title, point), flush=True)
                results[title] = point
                if args.output_json:  # after every point: a stopped run keeps what it finished
                    atomic_write_json(args.output_json, results)
    print(f"\npaper (SpecActor): {PAPER}; intervals are 95% t-intervals over seeds")


if __name__ == "__main__":
    main()
