"""Batched speculative generation: draft, verify with one target forward, commit, repeat.

Plain batched decoding is the same loop with no drafters (every row feeds one token per forward),
so the baseline and the speculative runs share every line except the drafts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from wildserve.errors import ConfigError
from wildserve.rollout.cache import RaggedLM
from wildserve.rollout.config import SamplingConfig
from wildserve.rollout.drafters.base import Draft
from wildserve.rollout.planner import NO_DRAFTER, DraftPlanner, StepPlan
from wildserve.rollout.sampling import record_logprobs, sampling_probs
from wildserve.rollout.state import SeqState
from wildserve.rollout.verify import NO_TOKEN, verify

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DrafterStats:
    """What one drafter did: row-steps are (sequence, target forward) pairs it drafted for."""

    num_row_steps: int = 0
    num_drafted: int = 0  # tokens sent to verification (every node of a tree)
    num_accepted: int = 0
    num_emitted: int = 0  # tokens those row-steps produced (accepted + residual/bonus, after stops)
    draft_time_s: float = 0.0

    def merge(self, other: DrafterStats) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def tokens_per_forward(self) -> float:
        return self.num_emitted / self.num_row_steps if self.num_row_steps else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_drafted if self.num_drafted else 0.0


@dataclass(slots=True)
class GenerationStats:
    """Totals of one generate() call; ``by_drafter['none']`` counts rows that had no draft."""

    num_target_forwards: int = 0
    target_time_s: float = 0.0
    wall_time_s: float = 0.0
    by_drafter: dict[str, DrafterStats] = field(default_factory=dict)

    def drafter(self, name: str) -> DrafterStats:
        return self.by_drafter.setdefault(name, DrafterStats())

    @property
    def num_tokens(self) -> int:
        return sum(d.num_emitted for d in self.by_drafter.values())

    @property
    def tokens_per_forward(self) -> float:
        """Tokens each sequence gained per target forward it took part in (1.0 without drafts)."""
        steps = sum(d.num_row_steps for d in self.by_drafter.values())
        return self.num_tokens / steps if steps else 0.0

    def merge(self, other: GenerationStats) -> None:
        self.num_target_forwards += other.num_target_forwards
        self.target_time_s += other.target_time_s
        self.wall_time_s += other.wall_time_s
        for name, d in other.by_drafter.items():
            self.drafter(name).merge(d)


def _add_late_drafts(planner: DraftPlanner, seqs: Sequence[SeqState], plan: StepPlan) -> None:
    """Background drafters may have drafted past the fed chunk while the target ran; the first such
    token is verified against the bonus position for free."""
    for name, drafter in planner.drafters.items():
        if not drafter.has_late_drafts:
            continue
        rows = [
            i
            for i, c in enumerate(plan.chosen)
            if c in (name, NO_DRAFTER) and plan.drafter[i] in (name, NO_DRAFTER)
        ]
        if not rows:
            continue
        late = drafter.late([seqs[i] for i in rows], [len(plan.drafts[i].tokens) for i in rows])
        for i, extra in zip(rows, late, strict=True):
            if not extra.tokens:
                continue
            d = plan.drafts[i]
            if d.parents is not None or (d.tokens and (d.q is None) != (extra.q is None)):
                continue
            q = extra.q if not d.tokens else (None if d.q is None else torch.cat([d.q, extra.q]))
            plan.drafts[i] = Draft(d.tokens + extra.tokens[:1], q)
            plan.drafter[i] = plan.chosen[i] = name


def generate(
    target: torch.nn.Module,
    seqs: Sequence[SeqState],
    sampling: SamplingConfig,
    planner: DraftPlanner,
    gen: torch.Generator,
    stop_ids: frozenset[int],
    on_step: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> GenerationStats:
    """Generate every sequence to a stop token or ``max_new_tokens``; fills ``seqs`` in place."""
    if any(len(s.prompt) < 2 for s in seqs):
        raise ConfigError("every prompt needs at least 2 tokens")
    start = clock()
    stats = GenerationStats()
    lm = RaggedLM(target)
    lm.start([s.prompt[:-1] for s in seqs])
    for d in planner.drafters.values():
        d.begin(seqs)
    active = [s for s in seqs if not s.status.is_finished]
    while active:
        plan = planner.plan(active)
        for name, seconds in plan.draft_time_s.items():
            stats.drafter(name).draft_time_s += seconds
        chunks = [[s.tokens[-1], *d.tokens] for s, d in zip(active, plan.drafts, strict=True)]
        trees = [
            None if d.parents is None else [-1, *(p + 1 for p in d.parents)] for d in plan.drafts
        ]
        t0 = clock()
        logits = lm.extend(chunks, parents=trees)
        verify_s = clock() - t0
        stats.num_target_forwards += 1
        stats.target_time_s += verify_s
        _add_late_drafts(planner, active, plan)
        probs = sampling_probs(logits, sampling)
        verdict = verify(
            probs,
            [d.tokens for d in plan.drafts],
            [d.q for d in plan.drafts],
            sampling.is_greedy,
            gen,
            [len(c) for c in chunks],
            [d.parents for d in plan.drafts],
        )
        new_tokens = 0
        keep = torch.ones(len(active), logits.shape[1], dtype=torch.bool)
        for b, s in enumerate(active):
            path, nxt = verdict.paths[b], verdict.next_token[b]
            a = len(path)
            emitted = [plan.drafts[b].tokens[i] for i in path] + ([nxt] if nxt != NO_TOKEN else [])
            # emitted token j was predicted at the chunk slot of the path node before it
            slots = [0, *(i + 1 for i in path)][: len(emitted)]
            lps = record_logprobs(logits[b, slots], torch.tensor(emitted), sampling).tolist()
            if plan.drafts[b].parents is not None:
                keep[b, 1:] = False
                keep[b, torch.tensor(path, dtype=torch.long) + 1] = True
            kept = s.append(emitted, lps, stop_ids, sampling.max_new_tokens)
            s.num_target_forwards += 1
            d_stats = stats.drafter(plan.drafter[b])
            d_stats.num_row_steps += 1
            d_stats.num_emitted += kept
            if plan.drafter[b] != NO_DRAFTER:
                d_stats.num_drafted += len(plan.drafts[b].tokens)
                d_stats.num_accepted += a
            new_tokens += kept
        planner.observe(
            active, plan, verdict.num_accepted, logits.shape[0] * logits.shape[1], verify_s
        )
        lm.drop_chunk_slots(keep)  # rejected tree branches; chains are cut by truncate
        lm.truncate([len(s.tokens) - 1 for s in active])
        running = [s for s in active if not s.status.is_finished]
        for d in planner.drafters.values():
            d.sync(running)
        done = [s for s in active if s.status.is_finished]
        if on_step is not None:
            on_step(new_tokens, len(done))  # tokens emitted and sequences finished this step
        if done:
            for d in planner.drafters.values():
                d.finish(done)
            planner.finish(done)
            keep = [i for i, s in enumerate(active) if not s.status.is_finished]
            active = [active[i] for i in keep]
            if active:
                lm.select(torch.tensor(keep))
    stats.wall_time_s = clock() - start
    log.debug(
        "generated %d tokens in %d target forwards", stats.num_tokens, stats.num_target_forwards
    )
    return stats
