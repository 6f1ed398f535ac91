"""`wildserve rollout`: time a multi-epoch RL rollout of SmolLM2 with and without speculation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from wildserve.rollout.config import RolloutConfig, SamplingConfig, SpecConfig


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in fields(cls) if f.name == name)


def rollout(
    model: str = typer.Option("smollm2", help="target model (registry name)"),
    prompts: int = typer.Option(64, min=1, help="word problems per epoch"),
    epochs: int = typer.Option(
        _default(RolloutConfig, "epochs"), min=1, help="passes over the same prompts (RL epochs)"
    ),
    spec: str = typer.Option(
        "fastest-of-n",
        help="comma list of: none, ngram, suffix, early-exit, draft-model, fastest-of-n",
    ),
    decoupled: bool = typer.Option(
        _default(RolloutConfig, "decoupled"), help="model drafters may also run ahead in a thread"
    ),
    samples_per_prompt: int = typer.Option(
        _default(RolloutConfig, "samples_per_prompt"), min=1, help="responses per prompt per epoch"
    ),
    temperature: float = typer.Option(_default(SamplingConfig, "temperature")),
    top_p: float = typer.Option(_default(SamplingConfig, "top_p")),
    max_new_tokens: int = typer.Option(_default(SamplingConfig, "max_new_tokens")),
    draft_len: int = typer.Option(
        _default(SpecConfig, "num_draft_tokens"), help="max draft length k"
    ),
    fixed_draft_len: bool = typer.Option(False, help="always draft k (no cost-model planner)"),
    early_exit_layers: int = typer.Option(_default(SpecConfig, "early_exit_layers")),
    seed: int = typer.Option(_default(RolloutConfig, "seed")),
    baseline: bool = typer.Option(
        True, help="also run plain batched generation ('none') to compare"
    ),
    threads: int = typer.Option(
        1,
        help="torch CPU threads; 1 avoids OpenMP spin-waits on a busy shared machine (0: default)",
    ),
    output_json: Path | None = typer.Option(None, help="write per-epoch figures here"),
) -> None:
    """Generate word-problem rollouts per speculation mode and print speed, acceptance and reward."""
    import numpy as np
    import torch

    from wildserve.console import make_console, make_progress
    from wildserve.io import atomic_write_json
    from wildserve.rollout.models import MODELS
    from wildserve.rollout.prompts import make_problems
    from wildserve.rollout.report import summary_rows, summary_table
    from wildserve.rollout.runner import run_rollouts

    if threads > 0:
        torch.set_num_threads(threads)
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    spec_cfg = SpecConfig(
        num_draft_tokens=draft_len,
        adaptive_draft_len=not fixed_draft_len,
        early_exit_layers=early_exit_layers,
    )
    modes = [m.strip() for m in spec.split(",") if m.strip()]
    if baseline and "none" not in modes:
        modes.insert(0, "none")
    configs = [
        RolloutConfig(
            spec_mode=m,
            epochs=epochs,
            samples_per_prompt=samples_per_prompt,
            seed=seed,
            decoupled=decoupled,
        )
        for m in modes
    ]
    console = make_console(200)
    loaded = MODELS.get(model)()
    problems = make_problems(prompts, np.random.default_rng(seed))
    with torch.no_grad():  # one-time kernel and allocator warm-up outside every timed run
        loaded.model(input_ids=torch.tensor([loaded.encode_chat("warm up")]))
    per_mode = epochs * prompts * samples_per_prompt
    with make_progress(console, description_width=28) as progress:
        tasks = {
            c.spec_mode: progress.add_task(
                f"{c.spec_mode}{' +decoupled' if decoupled else ''} (responses)", total=per_mode
            )
            for c in configs
        }
        reports = run_rollouts(
            loaded,
            problems,
            configs,
            sampling,
            spec_cfg,
            on_step=lambda mode, _tokens, finished: progress.advance(tasks[mode], finished),
        )
    rows = summary_rows(reports)
    console.print(
        summary_table(rows, title=f"rollout of {prompts} prompts x {epochs} epochs, {model}")
    )
    if output_json is not None:
        args = {
            "prompts": prompts,
            "epochs": epochs,
            "spec": modes,
            "decoupled": decoupled,
            "samples_per_prompt": samples_per_prompt,
            "fixed_draft_len": fixed_draft_len,
            "seed": seed,
        }
        atomic_write_json(
            output_json,
            {"args": args, "sampling": repr(sampling), "spec_config": repr(spec_cfg), "rows": rows},
        )
