"""Rollout step time at cluster scale for no-spec / coupled / decoupled / decoupled+fastest-of-n.

Step times come from the project's analytic GPU model (wildserve.perf); the draft model's shape is
Qwen2.5-0.5B's public config. Run: python benchmarks/rollout_sim.py [--seeds 3]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from wildserve.perf import ModelConfig, build_cost_model, get_model
from wildserve.rollout.simulate import MODES, DrafterSpec, RolloutSimConfig, simulate_rollout

# Qwen/Qwen2.5-0.5B config.json: the drafter SpecActor-style setups pair with Qwen2.5 targets
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
PAPER = {"vs no-spec": "1.3-1.7x", "decoupled vs coupled": "1.3-1.5x"}


def factory(target: str, gpu: str):
    cache = {}

    def costs(role: str, gpus: int):
        key = (role, gpus)
        if key not in cache:
            model = get_model(target) if role == "target" else QWEN25_05B
            cache[key] = build_cost_model(
                "analytic", model, gpu, tp=gpus if role == "target" else 1
            )
        return cache[key]

    return costs


SCENARIOS = {
    "qwen2.5-32b tp4 + 0.5b drafter, 256 prompts": ("qwen2.5-32b", RolloutSimConfig(target_gpus=4)),
    "qwen2.5-32b tp4 + 0.5b drafter, 128 prompts": (
        "qwen2.5-32b",
        RolloutSimConfig(num_prompts=128, target_gpus=4),
    ),
    "qwen2.5-7b tp1 + 0.5b drafter, 256 prompts": ("qwen2.5-7b", RolloutSimConfig(target_gpus=1)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--gpu", default="h100")
    args = ap.parse_args()
    for title, (target, cfg) in SCENARIOS.items():
        cfg = replace(
            cfg,
            drafters=(DrafterSpec("qwen2.5-0.5b", 0.75), DrafterSpec("history", 0.55, 2.0, False)),
        )
        costs = factory(target, args.gpu)
        runs = [simulate_rollout(cfg, costs, seed) for seed in range(args.seeds)]
        print(
            f"\n## {title} on {args.gpu} ({args.seeds} seeds; median response {cfg.median_response_tokens}, "
            f"lognormal sigma {cfg.length_sigma}, cap {cfg.max_response_tokens}, k=w={cfg.draft_len})"
        )
        print(
            "| mode | GPUs | step time s | tokens/iter | vs no-spec | vs coupled | GPU-s vs no-spec |"
        )
        print("|---|---|---|---|---|---|---|")
        for mode in MODES:
            t = np.array([r[mode].step_time_s for r in runs])
            base = np.array([r["no-spec"].step_time_s for r in runs])
            coup = np.array([r["coupled"].step_time_s for r in runs])
            gpus = runs[0][mode].num_gpus
            gpu_s = (base * runs[0]["no-spec"].num_gpus) / (t * gpus)
            tpi = np.mean([r[mode].tokens_per_iteration for r in runs])
            print(
                f"| {mode} | {gpus} | {t.mean():.1f} | {tpi:.2f} | {np.mean(base / t):.2f}x | "
                f"{np.mean(coup / t):.2f}x | {np.mean(gpu_s):.2f}x |"
            )
    print(f"\npaper (SpecActor): {PAPER}")


if __name__ == "__main__":
    main()
