"""`wildserve rollout`: time a multi-epoch RL rollout of SmolLM2 with and without speculation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from wildserve.config_cli import Fields, OutputJson, bounded, bounded_option, config_options
from wildserve.rollout.config import RolloutConfig, SamplingConfig, SpecConfig, TrainConfig

Threads = Annotated[
    int,
    bounded_option(
        int,
        "torch CPU threads; 1 avoids OpenMP spin-waits on a busy shared machine (0: default)",
        ge=0,
    ),
]


@config_options(
    run_cfg=Fields(RolloutConfig, exclude=("spec_mode",)),
    sampling=SamplingConfig,
    spec_cfg=Fields(
        SpecConfig,
        only=("num_draft_tokens", "early_exit_layers"),
        flags={"num_draft_tokens": "draft-len"},
    ),
)
def rollout(
    run_cfg: RolloutConfig,
    sampling: SamplingConfig,
    spec_cfg: SpecConfig,
    model: Annotated[str, typer.Option(help="target model (registry name)")] = "smollm2",
    prompts: Annotated[
        int, typer.Option(parser=bounded(int, ge=1), metavar="INT", help="word problems per epoch")
    ] = 64,
    spec: Annotated[
        str,
        typer.Option(
            help="comma list of: none, ngram, suffix, early-exit, draft-model, fastest-of-n"
        ),
    ] = "fastest-of-n",
    fixed_draft_len: Annotated[
        bool, typer.Option(help="always draft k (no cost-model planner)")
    ] = False,
    baseline: Annotated[
        bool, typer.Option(help="also run plain batched generation ('none') to compare")
    ] = True,
    threads: Threads = 1,
    output_json: OutputJson = None,
) -> None:
    """Generate word-problem rollouts per speculation mode and print speed, acceptance and reward."""
    import numpy as np
    import torch

    from wildserve.console import make_console, make_progress
    from wildserve.io import atomic_write_json
    from wildserve.rollout.config import SPEC_MODES
    from wildserve.rollout.models import MODELS
    from wildserve.rollout.prompts import make_problems
    from wildserve.rollout.report import summary_rows, summary_table
    from wildserve.rollout.runner import run_rollouts

    if threads > 0:
        torch.set_num_threads(threads)
    spec_cfg = dataclasses.replace(spec_cfg, adaptive_draft_len=not fixed_draft_len)
    modes = [m.strip() for m in spec.split(",") if m.strip()]
    if baseline and "none" not in modes:
        modes.insert(0, "none")
    for m in modes:
        SPEC_MODES.get(m)  # fail on a typo before loading the model
    configs = [dataclasses.replace(run_cfg, spec_mode=m) for m in modes]
    epochs, samples_per_prompt, seed, decoupled = (
        run_cfg.epochs,
        run_cfg.samples_per_prompt,
        run_cfg.seed,
        run_cfg.decoupled,
    )
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


def _train(config: TrainConfig, out: Path, threads: int, steps: int) -> None:
    """GRPO + LoRA on SmolLM2 over the word problems, rollouts from the speculative loop; resumes
    from OUT/checkpoint.pt; writes metrics.json, steps/*.json.gz and reward/entropy/acceptance plots."""
    import numpy as np
    import torch

    from wildserve.console import make_console, make_progress
    from wildserve.rollout.models import MODELS
    from wildserve.rollout.prompts import make_problems
    from wildserve.rollout.train import GRPOTrainer, plot_run, word_problem_task

    if threads > 0:
        torch.set_num_threads(threads)
    console = make_console(120)
    loaded = MODELS.get("smollm2")()
    problems = make_problems(config.num_problems, np.random.default_rng(config.seed))
    trainer = GRPOTrainer(loaded.model, word_problem_task(loaded, problems), config, out)
    with make_progress(console, description_width=24) as progress:
        task = progress.add_task("GRPO steps", total=config.num_steps, completed=trainer.step)

        def on_step(r) -> None:
            progress.advance(task)
            hist = r.tokens_per_forward.get("T1", {}).get("history", 0.0)
            console.print(
                f"step {r.step}: reward {r.mean_reward:.3f} entropy {r.mean_entropy:.3f} "
                f"len {r.mean_len:.0f} history tok/fwd (T=1) {hist:.3f} cpu {r.cpu_s}"
            )

        trainer.run(None if steps <= 0 else steps, on_step=on_step)
    plot_run(out)
    console.print(f"wrote {out}/metrics.json and plots")


@config_options(config=TrainConfig)
def train(
    config: TrainConfig,
    out: Annotated[Path, typer.Option("--out", help="run folder (resumed if it has a checkpoint)")],
    threads: Threads = 1,
    steps: Annotated[
        int, bounded_option(int, "stop after this many more steps (0: all)", ge=0)
    ] = 0,
) -> None:
    """GRPO + LoRA on SmolLM2 over the word problems, rollouts from the speculative loop; resumes
    from OUT/checkpoint.pt; writes metrics.json, steps/*.json.gz and reward/entropy/acceptance plots."""
    _train(config, out, threads, steps)
