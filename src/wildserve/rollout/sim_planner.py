"""The SpecActor planner in the simulator: mode by batch size, per-request windows, a drafter ladder.

Our reading of the paper's Algorithms 1-3, written from its text (no code was released to us):
  1. worker plan (Algorithm 1): for the current batch, compare coupled and decoupled execution of
     each set of model drafters at each window cap, with the step costs V(batch, tokens) and
     D(batch) of the cost model, and keep the plan of highest expected tokens per second. Large
     batches make verification compute-bound and favour decoupling (drafting hidden behind V);
     the tail's small batches favour coupled speculation with long windows (nothing goes stale).
  2. per-request window (Algorithm 2): a request verifies its n-th draft token only if that token's
     acceptance probability alpha_i^n exceeds its marginal cost in throughput terms, tau = R x dV/dn
     (R: the plan's tokens per second, dV/dn: seconds per extra verified token), found by a short
     fixed-point iteration; the cap bounds the serial draft steps.
  3. draft ladder / fastest-of-N (Algorithm 3): each request uses the drafter with the highest
     measured acceptance among the free lookups (history, n-gram) and the model drafters the plan
     switched on; lookups are observed on every request for free (a deterministic draft can be
     checked after the fact), model drafters only where they ran. As the batch shrinks, re-planning
     switches costlier drafters on for the stragglers; the log of plans is the ladder.
Multi-draft verification (several stochastic drafts of one request in one pass) is not modelled:
one drafter per request and iteration, chosen by measured acceptance, never by the realized outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from wildserve.perf.batch import StepCostModel
    from wildserve.rollout.sim_acceptance import AcceptanceTable

CAPS = (1, 2, 3, 4, 6, 8)
LOOKUP_CHECK_EVERY = 4


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str  # "coupled" | "decoupled"
    drafters: tuple[str, ...]  # model drafters switched on (lookups are always eligible)
    cap: int  # largest per-request window
    tau: float  # a draft position is verified while alpha^n >= tau
    rate: float  # expected tokens per second of the instance under this plan


def expected_tokens(alpha: np.ndarray, n: np.ndarray) -> np.ndarray:
    """E = 1 + alpha + ... + alpha^n per request (accepted drafts plus the residual/bonus)."""
    a = np.clip(alpha, 0.0, 0.999)
    return (1 - a ** (n + 1)) / (1 - a)


def windows(alpha: np.ndarray, tau: float, cap: int) -> np.ndarray:
    """Largest n <= cap with alpha^n >= tau (0 when even the first draft is not worth it)."""
    a = np.clip(alpha, 1e-6, 0.999)
    n = np.floor(np.log(max(tau, 1e-9)) / np.log(a))
    return np.clip(n, 0, cap).astype(np.int64)


class Ladder:
    """Per-request, per-drafter acceptance counts shrunk toward the drafter's pooled rate."""

    def __init__(
        self, acc: AcceptanceTable, num_requests: int, max_window: int, prior: float = 4.0
    ):
        self.acc = acc
        self.max_window = max_window
        self.prior = prior
        m = len(acc.drafters)
        self.drafted = np.zeros((num_requests, m))
        self.accepted = np.zeros((num_requests, m))
        self._totals = np.zeros((2, m))  # pooled (drafted, accepted), kept incrementally
        self._num_observed = 0
        self.lookups = [j for j, d in enumerate(acc.drafters) if not d.uses_gpu]
        self.models = [j for j, d in enumerate(acc.drafters) if d.uses_gpu]

    def alpha(self, live: np.ndarray) -> np.ndarray:
        """[len(live), drafters] per-token acceptance estimates."""
        pooled = (self._totals[1] + 1) / (self._totals[0] + 2)
        return (self.accepted[live] + self.prior * pooled) / (self.drafted[live] + self.prior)

    def choose(self, alpha: np.ndarray, drafters: tuple[str, ...], stale: np.ndarray) -> np.ndarray:
        """Drafter per request: the highest estimate among lookups and the switched-on models
        (a stale look-ahead chain rules its model drafter out for this iteration)."""
        on = [self.acc.index(n) for n in drafters]
        masked = np.full_like(alpha, -1.0)
        masked[:, self.lookups] = alpha[:, self.lookups]
        if on:
            masked[:, on] = np.where(stale[:, None], -1.0, alpha[:, on])
        return masked.argmax(1)

    def assign(
        self, live: np.ndarray, plan: Plan, stale: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        alpha = self.alpha(live)
        stale = stale if plan.mode == "decoupled" else np.zeros_like(stale)
        which = self.choose(alpha, plan.drafters, stale)
        a = alpha[np.arange(len(live)), which]
        return which, windows(a, plan.tau, plan.cap)

    def observe(
        self,
        live: np.ndarray,
        rows: np.ndarray,
        pos: np.ndarray,
        which: np.ndarray,
        n: np.ndarray,
        accepted: np.ndarray,
    ) -> None:
        used = n > 0
        self.drafted[live[used], which[used]] += n[used]
        self.accepted[live[used], which[used]] += accepted[used]
        np.add.at(self._totals[0], which[used], n[used])
        np.add.at(self._totals[1], which[used], accepted[used])
        # lookups not used this time are checked after the fact at the full window (every
        # LOOKUP_CHECK_EVERY iterations: a sample is enough for the estimate, and it is cheaper)
        self._num_observed += 1
        if self._num_observed % LOOKUP_CHECK_EVERY:
            return
        full = np.full(len(live), self.max_window)
        for j in self.lookups:
            other = which != j
            if other.any():
                got = self.acc.accepted(
                    np.full(int(other.sum()), j), rows[other], pos[other], full[other], _NO_RNG
                )
                self.drafted[live[other], j] += self.max_window
                self.accepted[live[other], j] += got
                self._totals[:, j] += (self.max_window * int(other.sum()), got.sum())


_NO_RNG = np.random.default_rng(0)  # lookups are deterministic (depth traces draw nothing)


def plan_step(
    ladder: Ladder,
    live: np.ndarray,
    ctx: np.ndarray,
    target: StepCostModel,
    draft_costs: Mapping[str, StepCostModel],
    max_window: int,
) -> Plan:
    """The (mode, model drafters, cap) of highest expected tokens per second for this batch."""
    from wildserve.rollout.simulate import draft_time, verify_shape

    alpha = ladder.alpha(live)
    b = len(live)
    no_stale = np.zeros(b, dtype=bool)
    names = list(draft_costs)
    subsets = [c for r in range(len(names) + 1) for c in combinations(names, r)]
    models = {ladder.acc.index(n): n for n in names}
    best: Plan | None = None
    for mode in ("coupled", "decoupled"):
        for subset in subsets:
            if mode == "decoupled" and not subset:
                continue  # nothing to decouple: the same as coupled with lookups only
            which = ladder.choose(alpha, subset, no_stale)
            a = alpha[np.arange(b), which]
            for cap in (c for c in CAPS if c <= max_window):
                tau, rate = 0.5, 0.0
                for _ in range(3):  # fixed point of tau = R * dV/dtoken
                    n = windows(a, tau, cap)
                    e = expected_tokens(a, n)
                    is_model = np.isin(which, list(models)) & (n > 0)
                    if mode == "decoupled":  # stale after a rejection: one plain token next time
                        keep = np.clip(a, 0, 0.999) ** n
                        fresh = 1.0 / (2.0 - keep)
                        e = np.where(is_model, fresh * e + (1 - fresh), e)
                    verify_s = target.step_time(verify_shape(ctx, 1 + n))
                    draft_s = sum(
                        draft_time(
                            draft_costs[name],
                            ctx[(which == j) & (n > 0)],
                            int(n[which == j].max(initial=0)),
                        )
                        for j, name in models.items()
                        if name in subset
                    )
                    step_s = draft_s + verify_s if mode == "coupled" else max(draft_s, verify_s)
                    rate = float(e.sum()) / step_s
                    slope = (target.step_time(verify_shape(ctx, 2 + n)) - verify_s) / b
                    tau = min(rate * slope, 1.0)
                if best is None or rate > best.rate * (1 + 1e-9):
                    best = Plan(mode, subset, cap, tau, rate)
    assert best is not None
    return best
