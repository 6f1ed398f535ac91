"""Rollout at cluster scale on a fixed GPU pool: one RL step's time under each speculation mode.

Step times come only from ``StepCostModel``s (the project's GPU model, or a measured calibration);
acceptance comes from ``sim_acceptance`` (per-request traces measured on a real RL run, or the Beta
sensitivity mode). This module adds the rollout dynamics: long-tailed response lengths, the step
ending when the longest response ends, and how a fixed pool of GPUs is split.

Every mode gets the same ``pool_gpus`` (the paper's setting, its Algorithm 1): the target runs in
tensor-parallel groups of ``target_tp``; modes without a separate drafter run ``pool // tp``
instances; decoupled modes build workers of ``tp + draft_gpus`` GPUs, so there are fewer workers,
each verifying a bigger batch. The requests of the step are dealt round-robin over the instances.
GPUs left over by the division count against the mode (idle). Modes:
  * ``no-spec``: one token per request per iteration;
  * ``coupled``: the draft model drafts k tokens on the target's GPUs, then the target verifies;
  * ``decoupled``: the draft model runs on its own GPUs, k tokens ahead; iteration max(D, V); a
    request whose chunk was rejected finds its look-ahead stale and verifies no draft next time;
  * ``specactor``: the planner (``sim_planner``): per-request windows, coupled or decoupled by batch
    size, and a ladder of drafters (history, n-gram, draft model) chosen per request.
``extra_gpus=True`` gives decoupled workers their draft GPUs on top of the pool (the old setup),
reported separately and labelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from wildserve.errors import ConfigError
from wildserve.perf.batch import BatchShape, StepCostModel
from wildserve.rollout.sim_acceptance import AcceptanceTable
from wildserve.rollout.sim_planner import Ladder, plan_step
from wildserve.workload.lengths import LengthDist, reasoning_lengths

# (model role, number of GPUs) -> step-time model; roles are "target" and a drafter's cost role
CostFactory = Callable[[str, int], StepCostModel]

MODES = ("no-spec", "coupled", "decoupled", "specactor")
DRAFT_ROLE = "draft-model"


@dataclass(frozen=True, slots=True)
class LengthSpec:
    """Response lengths: log-normal with this median and sigma, clipped at ``cap``."""

    name: str
    median: float
    sigma: float
    cap: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raw = self.median * np.exp(self.sigma * rng.standard_normal(n))
        return np.clip(np.ceil(raw), 1, self.cap).astype(np.int64)


@dataclass(frozen=True, slots=True)
class WorkloadLengths:
    """A ``workload.lengths.LengthDist`` under a name (the simulator's length source)."""

    name: str
    dist: LengthDist

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.dist.sample(rng, n)


# the earlier default: median 2048, sigma 1, capped at 16k
LOGNORMAL_16K = LengthSpec("lognormal-16k", 2048.0, 1.0, 16384)
# DAPO-like reasoning responses: workload's reasoning lengths (log-normal, mean 6,000 tokens, sigma
# 0.8; sources in workload.lengths) capped at DAPO's 20,480-token maximum response length
DAPO_20K = WorkloadLengths("dapo-20k", reasoning_lengths(20480))
LENGTHS = {s.name: s for s in (LOGNORMAL_16K, DAPO_20K)}


@dataclass(frozen=True, slots=True)
class RolloutSimConfig:
    """One RL step of a pool of GPUs."""

    pool_gpus: int = 20
    target_tp: int = 4
    draft_gpus: int = 1  # per decoupled worker, taken from the pool
    requests_per_instance: int = 256  # per plain instance: the step has pool // tp times this
    prompt_tokens: int = 512
    lengths: LengthSpec | WorkloadLengths = LOGNORMAL_16K
    draft_len: int = 4  # k of the coupled / decoupled baselines
    max_window: int = 8  # the planner's largest per-request window
    replan_every: int = 256  # iterations between re-plans (also re-planned as the batch shrinks)
    extra_gpus: bool = False  # decoupled workers get their draft GPUs on top of the pool
    seed_offset: int = 0

    def __post_init__(self) -> None:
        if self.target_tp < 1 or self.draft_gpus < 1:
            raise ConfigError(
                f"target_tp ({self.target_tp}) and draft_gpus ({self.draft_gpus}) must be >= 1"
            )
        if self.pool_gpus < self.target_tp + self.draft_gpus:
            raise ConfigError(
                f"pool_gpus ({self.pool_gpus}) must hold one decoupled worker "
                f"({self.target_tp} + {self.draft_gpus} GPUs)"
            )
        if self.draft_len < 1 or self.max_window < 1 or self.requests_per_instance < 1:
            raise ConfigError("draft_len, max_window and requests_per_instance must be >= 1")

    @property
    def num_requests(self) -> int:
        return (self.pool_gpus // self.target_tp) * self.requests_per_instance

    def layout(self, mode: str) -> tuple[int, int]:
        """(instances, GPUs charged) of a mode: the same pool for every mode unless extra_gpus."""
        if mode in ("no-spec", "coupled"):
            return self.pool_gpus // self.target_tp, self.pool_gpus
        if self.extra_gpus:
            n = self.pool_gpus // self.target_tp
            return n, self.pool_gpus + n * self.draft_gpus
        return self.pool_gpus // (self.target_tp + self.draft_gpus), self.pool_gpus


@dataclass(slots=True)
class ModeResult:
    mode: str
    step_time_s: float  # until the last response of the step ends
    num_gpus: int  # GPUs the mode is charged for
    num_instances: int
    num_tokens: int
    num_iterations: int  # summed over instances
    tokens_per_iteration: float  # per running request, averaged over iterations
    ladder: list[tuple[float, str, str]] = field(default_factory=list)  # (progress, mode, drafters)

    @property
    def tokens_per_gpu_s(self) -> float:
        return self.num_tokens / (self.step_time_s * self.num_gpus)


def verify_shape(ctx: np.ndarray, new_tokens: np.ndarray) -> BatchShape:
    """Aggregate shape of one forward where request i adds new_tokens[i] after ctx[i] in KV.

    Every verified position needs its logits (accept/reject and the bonus token), so the LM head
    runs on every new token, not once per request."""
    q, c = new_tokens.astype(float), ctx.astype(float)
    dec = q == 1
    return BatchShape(
        num_prefill_tokens=int(q[~dec].sum()),
        num_prefill_seqs=int((~dec).sum()),
        prefill_attn_pairs=float((q * c + q * (q + 1) / 2)[~dec].sum()),
        prefill_ctx_tokens=int(c[~dec].sum()),
        num_decode_tokens=int(dec.sum()),
        decode_ctx_tokens=int((c + 1)[dec].sum()),
        num_sampled=int(q.sum()),
    )


def draft_time(cost: StepCostModel, ctx: np.ndarray, steps: int) -> float:
    """Seconds for a draft model to draft ``steps`` tokens for these requests (batched)."""
    if steps <= 0 or len(ctx) == 0:
        return 0.0
    return float(cost.decode_run_times(len(ctx), int(ctx.sum()) + len(ctx), steps).sum())


@dataclass(slots=True)
class _Instance:
    """One target instance (or decoupled worker) and its share of the step's requests."""

    lengths: np.ndarray
    rows: np.ndarray  # request indices into the acceptance assignment
    done: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.done = np.zeros(len(self.lengths), dtype=np.int64)


def _no_spec(
    cfg: RolloutSimConfig, target: StepCostModel, inst: _Instance
) -> tuple[float, int, float]:
    """Plain decoding, fast-forwarded between finishing events (the batch is constant between)."""
    clock, iters, order = 0.0, 0, np.sort(inst.lengths)
    done, i = 0, 0
    while i < len(order):
        b = len(order) - i
        steps = int(order[i] - done)
        ctx = b * (cfg.prompt_tokens + done)  # KV before the first step, summed over requests
        clock += float(target.decode_run_times(b, ctx + b, steps).sum())
        iters += steps
        done = int(order[i])
        while i < len(order) and order[i] == done:
            i += 1
    return clock, iters, float(iters and 1.0)


def simulate_instance(
    mode: str,
    cfg: RolloutSimConfig,
    costs: CostFactory,
    inst: _Instance,
    acc: AcceptanceTable,
    rng: np.random.Generator,
    ladder_log: list[tuple[float, str, str]] | None = None,
) -> tuple[float, int, float]:
    """(seconds, iterations, mean tokens per running request per iteration) for one instance."""
    target = costs("target", cfg.target_tp)
    if mode == "no-spec":
        return _no_spec(cfg, target, inst)
    decoupled_worker = mode in ("decoupled", "specactor")
    d_gpus = cfg.draft_gpus if decoupled_worker else cfg.target_tp
    model_names = [d.name for d in acc.drafters if d.uses_gpu]
    is_model_drafter = np.array([d.uses_gpu for d in acc.drafters])
    draft_costs = {n: costs(DRAFT_ROLE, d_gpus) for n in model_names}
    stale = np.zeros(len(inst.lengths), dtype=bool)
    ladder = Ladder(acc, len(inst.lengths), cfg.max_window)
    total = int(inst.lengths.sum())
    clock, iters, tok_sum, plan, planned_at, num_plans = 0.0, 0, 0.0, None, (0, 0), 0
    while True:
        live = np.flatnonzero(inst.done < inst.lengths)
        if len(live) == 0:
            break
        ctx = cfg.prompt_tokens + inst.done[live]
        rows = inst.rows[live]
        pos = inst.done[live]
        if mode == "specactor":
            b = len(live)
            # re-plan as the batch shrinks, and often at first while the estimates settle
            every = min(cfg.replan_every, 8 << num_plans)
            if plan is None or b < 0.9 * planned_at[0] or iters - planned_at[1] >= every:
                plan = plan_step(ladder, live, ctx, target, draft_costs, cfg.max_window)
                planned_at, num_plans = (b, iters), num_plans + 1
                if ladder_log is not None:
                    progress = float(inst.done.sum()) / total
                    on = "+".join(plan.drafters) or "lookups only"
                    ladder_log.append((progress, plan.mode, f"{on}, cap {plan.cap}"))
            which, n = ladder.assign(live, plan, stale[live])
            coupled = plan.mode == "coupled"
        else:  # fixed baselines: the first model drafter, k = draft_len for every request
            which = np.full(len(live), acc.index(model_names[0]))
            n = np.full(len(live), cfg.draft_len)
            if mode == "decoupled":
                n[stale[live]] = 0
            coupled = mode == "coupled"
        accepted = acc.accepted(which, rows, pos, n, rng)
        verify_s = target.step_time(verify_shape(ctx, 1 + n))
        draft_s = 0.0
        for name in model_names:
            used = (which == acc.index(name)) & (n > 0)
            if used.any():
                draft_s += draft_time(draft_costs[name], ctx[used], int(n[used].max()))
        clock += draft_s + verify_s if coupled else max(draft_s, verify_s)
        is_model = is_model_drafter[which]
        # decoupled: a rejected model chunk makes the chunk drafted meanwhile stale
        stale[live] = False if coupled else is_model & (n > 0) & (accepted < n)
        if mode == "specactor":
            ladder.observe(live, rows, pos, which, n, accepted)
        gained = np.minimum(accepted + 1, inst.lengths[live] - inst.done[live])
        inst.done[live] += gained
        tok_sum += float(gained.mean())
        iters += 1
    return clock, iters, tok_sum / max(iters, 1)


def simulate_mode(
    mode: str,
    cfg: RolloutSimConfig,
    costs: CostFactory,
    lengths: np.ndarray,
    acc: AcceptanceTable,
    rng: np.random.Generator,
) -> ModeResult:
    """Every instance of the mode; the step ends with the slowest one."""
    num_instances, gpus = cfg.layout(mode)
    times, iters, tpi = [], 0, []
    log: list[tuple[float, str, str]] = []
    for j in range(num_instances):
        rows = np.arange(j, len(lengths), num_instances)
        inst = _Instance(lengths[rows].copy(), rows)
        t, it, per = simulate_instance(mode, cfg, costs, inst, acc, rng, log if j == 0 else None)
        times.append(t)
        iters += it
        tpi.append(per)
    return ModeResult(
        mode, max(times), gpus, num_instances, int(lengths.sum()), iters, float(np.mean(tpi)), log
    )


def simulate_rollout(
    cfg: RolloutSimConfig,
    costs: CostFactory,
    acc: AcceptanceTable,
    seed: int,
    modes: Sequence[str] = MODES,
) -> dict[str, ModeResult]:
    """Every mode on the same step: the same response lengths and the same requests' traces."""
    rng = np.random.default_rng([seed, cfg.seed_offset])
    lengths = cfg.lengths.sample(rng, cfg.num_requests)
    assigned = acc.assign(cfg.num_requests, rng)
    # a mode's own draws are keyed by the mode, so a subset of modes reproduces the full run
    return {
        m: simulate_mode(
            m, cfg, costs, lengths, assigned, np.random.default_rng([seed, MODES.index(m), 7])
        )
        for m in modes
    }


def with_extra_gpus(cfg: RolloutSimConfig) -> RolloutSimConfig:
    return replace(cfg, extra_gpus=True)
