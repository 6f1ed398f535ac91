"""A multi-epoch rollout: the same prompts every epoch (as in RL), one speculation mode per run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from wildserve.rollout.config import SPEC_MODES, RolloutConfig, SamplingConfig, SpecConfig
from wildserve.rollout.drafters import DRAFTERS, Drafter, DrafterContext
from wildserve.rollout.generation import GenerationStats, generate
from wildserve.rollout.models import LoadedModel
from wildserve.rollout.planner import DraftPlanner
from wildserve.rollout.prompts import WordProblem, reward
from wildserve.rollout.state import SeqState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EpochReport:
    """One epoch's totals, its mean reward and its drafters' statistics."""

    epoch: int
    stats: GenerationStats
    cpu_s: float  # process CPU time (all threads): less sensitive than wall time to other load
    mean_reward: float
    mean_response_tokens: float
    max_response_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.stats.num_tokens / self.stats.wall_time_s if self.stats.wall_time_s else 0.0


@dataclass(slots=True)
class RolloutReport:
    """All epochs of one run."""

    config: RolloutConfig
    epochs: list[EpochReport] = field(default_factory=list)
    responses: list[list[int]] = field(default_factory=list)  # last epoch, in problem order

    @property
    def total(self) -> GenerationStats:
        out = GenerationStats()
        for e in self.epochs:
            out.merge(e.stats)
        return out


def build_drafters(
    names: Sequence[str], ctx: DrafterContext, decoupled: bool
) -> dict[str, Drafter]:
    """Instantiate drafters by name; ``decoupled`` adds, for each model drafter, a second copy that
    runs ahead in a thread, and the planner picks coupled or decoupled per request and step."""
    drafters = {name: DRAFTERS.get(name)(ctx) for name in names}
    if decoupled:
        from wildserve.rollout.decoupled import DecoupledDrafter

        for i, name in enumerate(names):
            if drafters[name].uses_model:
                own = replace(
                    ctx, gen=torch.Generator().manual_seed(ctx.gen.initial_seed() + 1 + i)
                )
                ahead = DecoupledDrafter(DRAFTERS.get(name)(own), ctx.spec.decoupled_window)
                drafters[ahead.name] = ahead
    return drafters


class RolloutSession:
    """One speculation mode across epochs: its drafters (and their history) live as long as it."""

    def __init__(
        self,
        loaded: LoadedModel,
        problems: Sequence[WordProblem],
        cfg: RolloutConfig,
        sampling: SamplingConfig,
        spec: SpecConfig,
        draft_model: torch.nn.Module | None = None,
    ) -> None:
        self.loaded, self.problems, self.cfg = loaded, list(problems), cfg
        self.sampling, self.spec = sampling, spec
        self.gen = torch.Generator().manual_seed(cfg.seed)
        ctx = DrafterContext(
            sampling=sampling,
            spec=spec,
            gen=torch.Generator().manual_seed(cfg.seed + 1),
            target=loaded.model,
            draft_model=draft_model,
        )
        self.drafters = build_drafters(SPEC_MODES.get(cfg.spec_mode), ctx, cfg.decoupled)
        self.prompts = [loaded.encode_chat(p.text) for p in problems]
        self.report = RolloutReport(cfg)

    def run_epoch(self, on_step: Callable[[int, int], None] | None = None) -> EpochReport:
        """Generate every problem ``samples_per_prompt`` times; CPU time is this process's."""
        n = self.cfg.samples_per_prompt
        seqs = [
            SeqState(seq_id=i * n + j, prompt_id=p.prompt_id, prompt=self.prompts[i])
            for i, p in enumerate(self.problems)
            for j in range(n)
        ]
        cpu0 = time.process_time()
        stats = generate(
            self.loaded.model,
            seqs,
            self.sampling,
            DraftPlanner(self.drafters, self.spec),
            self.gen,
            self.loaded.stop_ids,
            on_step,
        )
        cpu_s = time.process_time() - cpu0
        answers = [self.problems[s.seq_id // n].answer for s in seqs]
        rewards = [
            reward(self.loaded.decode(s.output), a) for s, a in zip(seqs, answers, strict=True)
        ]
        lengths = [len(s.output) for s in seqs]
        epoch = EpochReport(
            len(self.report.epochs) + 1,
            stats,
            cpu_s,
            float(np.mean(rewards)),
            float(np.mean(lengths)),
            max(lengths),
        )
        self.report.epochs.append(epoch)
        self.report.responses = [s.output for s in seqs]
        log.info(
            "%s epoch %d: %d tokens, %.2f tokens/forward",
            self.cfg.spec_mode,
            epoch.epoch,
            stats.num_tokens,
            stats.tokens_per_forward,
        )
        return epoch

    def close(self) -> None:
        for d in self.drafters.values():
            close = getattr(d, "close", None)
            if close is not None:
                close()


def run_rollouts(
    loaded: LoadedModel,
    problems: Sequence[WordProblem],
    configs: Sequence[RolloutConfig],
    sampling: SamplingConfig,
    spec: SpecConfig,
    on_step: Callable[[str, int, int], None] | None = None,
) -> list[RolloutReport]:
    """Epoch-major: every mode runs epoch e before any runs e+1, so modes see similar machine load."""
    sessions = [RolloutSession(loaded, problems, c, sampling, spec) for c in configs]
    try:
        for _ in range(max(c.epochs for c in configs)):
            for s in sessions:
                if len(s.report.epochs) < s.cfg.epochs:
                    label = s.cfg.spec_mode
                    s.run_epoch(
                        None if on_step is None else (lambda k, f, m=label: on_step(m, k, f))
                    )
    finally:
        for s in sessions:
            s.close()
    return [s.report for s in sessions]
