"""Rollout at cluster scale: one RL worker's step time with and without speculation.

Step times come only from ``StepCostModel``s (the project's GPU performance model); this module
adds the rollout dynamics: a long-tailed response-length distribution, per-request acceptance,
the step ending when the longest response ends, and how GPUs are split between drafter and target.

Modes (the target always runs on ``target_gpus`` GPUs):
  * ``no-spec``: the target decodes one token per request per iteration;
  * ``coupled``: the drafter shares the target's GPUs; an iteration drafts k tokens, then verifies;
  * ``decoupled``: the drafter gets ``draft_gpus`` GPUs of its own and drafts chunk i+1 while the target
    verifies chunk i; iteration time max(w*D, V); a request whose chunk was rejected finds its next
    chunk stale, verifies no draft in the following iteration while the drafter redrafts it;
  * ``decoupled+fastest-of-n``: as decoupled, each request uses the drafter of highest expected
    tokens per iteration; once fewer than ``spread_below`` requests remain, the freed drafter
    capacity drafts every drafter for each straggler and all chunks are verified together
    (multi-draft verification; accepted length modelled as the best of the drafts).
Acceptance per request and drafter is drawn once from a Beta distribution; drafts are accepted
token by token with that rate, as in the planner's cost model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from wildserve.errors import ConfigError
from wildserve.perf.batch import BatchShape, StepCostModel

# (model role, number of GPUs) -> step-time model; roles are "target" and each drafter's name
CostFactory = Callable[[str, int], StepCostModel]


@dataclass(frozen=True, slots=True)
class DrafterSpec:
    """A drafter in the simulation: its acceptance distribution and whether it costs GPU time."""

    name: str
    alpha_mean: float  # mean per-token acceptance over requests
    alpha_concentration: float = 8.0  # Beta(a, b) with a + b = this: spread across requests
    uses_gpu: bool = True  # a model drafter (step time from the cost factory) or a free lookup


@dataclass(frozen=True, slots=True)
class RolloutSimConfig:
    """One worker's rollout step."""

    num_prompts: int = 256
    prompt_tokens: int = 512
    median_response_tokens: int = 2048
    length_sigma: float = 1.0  # lognormal sigma of response lengths: the long tail
    max_response_tokens: int = 16384
    target_gpus: int = 4  # the target's tensor-parallel group
    draft_gpus: int = 1  # extra GPUs the drafter gets in decoupled modes
    draft_len: int = 4  # k (coupled) and w (decoupled)
    spread_below: int = 32  # fastest-of-n drafts every drafter for the last requests
    drafters: tuple[DrafterSpec, ...] = field(
        default_factory=lambda: (
            DrafterSpec("draft-model", 0.75),
            DrafterSpec("history", 0.55, 2.0, False),
        )
    )

    def __post_init__(self) -> None:
        if self.target_gpus < 1 or self.draft_gpus < 1:
            raise ConfigError(
                f"target_gpus ({self.target_gpus}) and draft_gpus ({self.draft_gpus}) must be >= 1"
            )
        if self.draft_len < 1 or self.num_prompts < 1:
            raise ConfigError("draft_len and num_prompts must be >= 1")
        if self.median_response_tokens > self.max_response_tokens:
            raise ConfigError("median_response_tokens exceeds max_response_tokens")


@dataclass(slots=True)
class ModeResult:
    mode: str
    step_time_s: float
    num_gpus: int  # GPUs the mode occupies
    num_iterations: int
    tokens_per_iteration: float  # per request still running, averaged over iterations


def _verify_shape(ctx: np.ndarray, new_tokens: np.ndarray) -> BatchShape:
    """Aggregate shape of one forward where request i adds new_tokens[i] after ctx[i] in KV."""
    q, c = new_tokens.astype(float), ctx.astype(float)
    dec = q == 1
    return BatchShape(
        num_prefill_tokens=int(q[~dec].sum()),
        num_prefill_seqs=int((~dec).sum()),
        prefill_attn_pairs=float((q * c + q * (q + 1) / 2)[~dec].sum()),
        prefill_ctx_tokens=int(c[~dec].sum()),
        num_decode_tokens=int(dec.sum()),
        decode_ctx_tokens=int((c + 1)[dec].sum()),
        num_sampled=len(q),
    )


def _accepted(alpha: np.ndarray, n: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Leading accepts among n drafts, each accepted with probability alpha (truncated geometric)."""
    u = rng.random(alpha.shape)
    with np.errstate(divide="ignore"):
        geo = np.floor(np.log(u) / np.log(np.clip(alpha, 1e-9, 1 - 1e-9)))
    return np.minimum(geo, n).astype(int)


def _expected(alpha: np.ndarray, n: int) -> np.ndarray:
    return (1 - alpha ** (n + 1)) / (1 - alpha)


def sample_workload(
    cfg: RolloutSimConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Response lengths (lognormal, capped) and acceptance [requests, drafters]."""
    lengths = np.minimum(
        np.ceil(
            cfg.median_response_tokens
            * np.exp(cfg.length_sigma * rng.standard_normal(cfg.num_prompts))
        ),
        cfg.max_response_tokens,
    ).astype(int)
    alphas = np.stack(
        [
            rng.beta(
                d.alpha_mean * d.alpha_concentration,
                (1 - d.alpha_mean) * d.alpha_concentration,
                cfg.num_prompts,
            )
            for d in cfg.drafters
        ],
        axis=1,
    )
    return np.maximum(lengths, 1), np.clip(alphas, 0.0, 0.99)


def _draft_time(
    costs: CostFactory, d: DrafterSpec, gpus: int, ctx: np.ndarray, steps: int
) -> float:
    """Seconds for a model drafter to draft ``steps`` tokens for these requests."""
    if not d.uses_gpu or steps == 0 or len(ctx) == 0:
        return 0.0
    return float(
        costs(d.name, gpus).decode_run_times(len(ctx), int(ctx.sum()) + len(ctx), steps).sum()
    )


def simulate_mode(
    mode: str,
    cfg: RolloutSimConfig,
    costs: CostFactory,
    lengths: np.ndarray,
    alphas: np.ndarray,
    rng: np.random.Generator,
) -> ModeResult:
    """Time to finish every response of the step under one mode."""
    done = np.zeros(cfg.num_prompts, dtype=int)  # tokens generated
    stale = np.zeros(cfg.num_prompts, dtype=bool)  # decoupled: look-ahead chunk was rejected
    k = cfg.draft_len
    decoupled = mode.startswith("decoupled")
    target = costs("target", cfg.target_gpus)
    d_gpus = cfg.draft_gpus if decoupled else cfg.target_gpus
    # single-drafter modes use the first (model) drafter, fastest-of-n picks per request
    best = (
        np.argmax(_expected(alphas, k), axis=1)
        if mode.endswith("fastest-of-n")
        else np.zeros(len(alphas), int)
    )
    clock, iters, tok_sum = 0.0, 0, 0.0
    while True:
        live = np.flatnonzero(done < lengths)
        if len(live) == 0:
            break
        ctx = cfg.prompt_tokens + done[live]
        if mode == "no-spec":
            gained = np.ones(len(live), dtype=int)
            clock += target.step_time(_verify_shape(ctx, gained))
        else:
            spread = mode.endswith("fastest-of-n") and len(live) < cfg.spread_below
            n = np.full(len(live), k)
            if decoupled:
                n[stale[live]] = 0
            if spread:  # every drafter's chunk, verified together; keep the longest accepted run
                acc = np.max(
                    [_accepted(alphas[live, j], n, rng) for j in range(len(cfg.drafters))], axis=0
                )
                new = 1 + n * len(cfg.drafters)
                users = list(cfg.drafters)
            else:
                acc = _accepted(alphas[live, best[live]], n, rng)
                new = 1 + n
                users = [d for j, d in enumerate(cfg.drafters) if np.any(best[live] == j)]
            verify_s = target.step_time(_verify_shape(ctx, new))
            draft_s = sum(_draft_time(costs, d, d_gpus, ctx, k) for d in users)
            clock += max(draft_s, verify_s) if decoupled else draft_s + verify_s
            gained = acc + 1
            if decoupled:
                stale[live] = acc < n  # the chunk drafted meanwhile assumed every draft passes
        gained = np.minimum(gained, lengths[live] - done[live])
        done[live] += gained
        tok_sum += float(gained.mean())
        iters += 1
    gpus = cfg.target_gpus + (cfg.draft_gpus if decoupled else 0)
    return ModeResult(mode, clock, gpus, iters, tok_sum / max(iters, 1))


MODES = ("no-spec", "coupled", "decoupled", "decoupled+fastest-of-n")


def simulate_rollout(
    cfg: RolloutSimConfig, costs: CostFactory, seed: int, modes: Sequence[str] = MODES
) -> dict[str, ModeResult]:
    """Every mode on the same sampled workload (same lengths and acceptance rates)."""
    rng = np.random.default_rng(seed)
    lengths, alphas = sample_workload(cfg, rng)
    return {
        m: simulate_mode(m, cfg, costs, lengths, alphas, np.random.default_rng([seed, i]))
        for i, m in enumerate(modes)
    }
