"""`wildserve rollout`: time a multi-epoch RL rollout of SmolLM2 with and without speculation."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from wildserve.rollout.config import RolloutConfig, SamplingConfig, SpecConfig, TrainConfig


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


def _config_command(cls: type, run: Callable[..., None], extra: list[inspect.Parameter]):
    """A typer command whose options are ``cls``'s fields (default, help, ``ge`` bound) plus
    ``extra``; ``run(config, **extra)`` gets the built config, so defaults live only in ``cls``."""
    params = list(extra)
    for f in fields(cls):
        kind = type(f.default)
        flag = f"--{f.name.replace('_', '-')}"
        if kind is bool:
            flag = f"{flag}/--no-{f.name.replace('_', '-')}"
        option = typer.Option(
            f.default,
            flag,
            help=f.metadata.get("help"),
            min=f.metadata.get("ge") if kind in (int, float) else None,
        )
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind
            )
        )
    names = {p.name for p in extra}

    def command(**kwargs: Any) -> None:
        config = cls(**{k: v for k, v in kwargs.items() if k not in names})
        run(config, **{k: v for k, v in kwargs.items() if k in names})

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = run.__doc__
    return command


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


train = _config_command(
    TrainConfig,
    _train,
    [
        inspect.Parameter(
            "out",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(..., "--out", help="run folder (resumed if it has a checkpoint)"),
            annotation=Path,
        ),
        inspect.Parameter(
            "threads",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(1, "--threads", min=0, help="torch CPU threads (0: default)"),
            annotation=int,
        ),
        inspect.Parameter(
            "steps",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                0, "--steps", min=0, help="stop after this many more steps (0: all)"
            ),
            annotation=int,
        ),
    ],
)
