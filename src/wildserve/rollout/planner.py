"""Choosing drafters and draft length per step from measured costs (fastest-of-N and the planner).

Cost model (all terms measured online on this machine):
  * acceptance: each drafted token is accepted independently with rate alpha (per request and
    drafter, shrunk toward the drafter's pooled rate), so n drafts yield on average
    E(alpha, n) = 1 + alpha + ... + alpha^n = (1 - alpha^(n+1)) / (1 - alpha) tokens per target
    forward (accepted drafts plus the residual or bonus token);
  * verify: one target forward over ``rows x width`` padded tokens takes V = a + b * rows * width,
    fitted by least squares on recent forwards;
  * drafting: a model drafter costs D seconds per draft position (k positions: k * D), an EWMA of
    measured calls; lookup drafters cost ~0 and propose first, so their true draft length is known.
  * token trees (history drafter): alpha is then the rate per tree level (accepted path length over
    tree depth), E uses the depth, and the verify width is the number of tree nodes.

Fastest-of-N rule, re-decided every step: for each candidate k <= K and each subset of model
drafters, every request takes the option with the most expected tokens E (lookup drafts use their
actual length, model drafts k); the step's rate is sum(E) / (V(rows, width) + sum of used model
drafters' k * D). The step runs the (k, subset) of highest rate. When requests finish, V shrinks, so
the remaining stragglers get longer drafts and costlier drafters: freed capacity goes to them.

Decoupled mode (drafter running ahead within window w, overlapping the verifier) has, per request,
iteration time T_dec(w) = alpha^w * max(w*D, V) + (1 - alpha^w) * (V + w*D): when all w drafts pass,
the next chunk was drafted during verification (latency max(w*D, V)); after a rejection the
look-ahead is stale and the drafter restarts (V + w*D). Coupled: T_c(k) = k*D + V. The planner
compares E(alpha, w) / T_dec(w) with E(alpha, k) / T_c(k) per request (``choose_mode``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from wildserve.rollout.config import SpecConfig
from wildserve.rollout.drafters.base import Draft, Drafter
from wildserve.rollout.state import SeqState

NO_DRAFTER = "none"


def expected_tokens(alpha: float, num_drafts: int) -> float:
    """E(alpha, n): mean tokens one verification yields for n drafts accepted i.i.d. with alpha."""
    if num_drafts <= 0:
        return 1.0
    if alpha >= 1.0:
        return float(num_drafts + 1)
    return (1.0 - alpha ** (num_drafts + 1)) / (1.0 - alpha)


def coupled_time(k: int, draft_s: float, verify_s: float) -> float:
    """T_c(k) = k*D + V: draft, then verify."""
    return k * draft_s + verify_s


def decoupled_time(w: int, alpha: float, draft_s: float, verify_s: float) -> float:
    """T_dec(w) = alpha^w max(wD, V) + (1 - alpha^w)(V + wD): overlap unless the look-ahead is stale."""
    keep = alpha**w
    return keep * max(w * draft_s, verify_s) + (1 - keep) * (verify_s + w * draft_s)


def choose_mode(alpha: float, draft_s: float, verify_s: float, max_len: int) -> tuple[str, int]:
    """('coupled' | 'decoupled', k or w) with the most expected tokens per second for one request."""
    best = ("coupled", 0, expected_tokens(alpha, 0) / verify_s)
    for n in range(1, max_len + 1):
        e = expected_tokens(alpha, n)
        for mode, t in (
            ("coupled", coupled_time(n, draft_s, verify_s)),
            ("decoupled", decoupled_time(n, alpha, draft_s, verify_s)),
        ):
            if e / t > best[2] * (1 + 1e-9):
                best = (mode, n, e / t)
    return best[0], best[1]


@dataclass(slots=True)
class CostModel:
    """Verify time linear in padded tokens (least squares) and per-drafter seconds per draft step."""

    window: int = 48  # recent verify forwards used by the fit
    ewma: float = 0.3
    _tokens: list[int] = field(default_factory=list)
    _seconds: list[float] = field(default_factory=list)
    draft_step_s: dict[str, float] = field(default_factory=dict)
    _fit: tuple[float, float] | None = None  # (slope, intercept) of the current window

    def observe_verify(self, num_tokens: int, seconds: float) -> None:
        self._tokens.append(num_tokens)
        self._seconds.append(seconds)
        del self._tokens[: -self.window], self._seconds[: -self.window]
        self._fit = None

    def observe_draft(self, drafter: str, num_steps: int, seconds: float) -> None:
        if num_steps <= 0:
            return
        per = seconds / num_steps
        old = self.draft_step_s.get(drafter)
        self.draft_step_s[drafter] = per if old is None else (1 - self.ewma) * old + self.ewma * per

    @property
    def is_ready(self) -> bool:
        return len(set(self._tokens)) >= 2

    def verify_time(self, num_tokens: int) -> float:
        """V for a forward of ``num_tokens`` padded tokens (needs ``is_ready``)."""
        if self._fit is None:  # refitted once per new observation, not per candidate plan
            x = np.asarray(self._tokens, dtype=float)
            y = np.asarray(self._seconds, dtype=float)
            slope, intercept = np.polyfit(x, y, 1)
            if slope < 0:  # noise on a flat curve: fall back to the mean
                slope, intercept = 0.0, float(y.mean())
            self._fit = (float(slope), float(intercept))
        slope, intercept = self._fit
        return max(intercept + slope * num_tokens, 1e-6)

    def draft_time(self, drafter: str, k: int) -> float:
        return k * self.draft_step_s.get(drafter, 0.0)  # unmeasured: optimistic, so it gets tried


@dataclass(slots=True)
class AcceptanceTracker:
    """Per-request, per-drafter acceptance counts shrunk toward the drafter's pooled rate."""

    prior_strength: float
    _pooled: dict[str, list[int]] = field(default_factory=dict)  # drafter -> [drafted, accepted]
    _per_seq: dict[tuple[int, str], list[int]] = field(default_factory=dict)

    def observe(self, seq_id: int, drafter: str, drafted: int, accepted: int) -> None:
        for table, key in ((self._pooled, drafter), (self._per_seq, (seq_id, drafter))):
            counts = table.setdefault(key, [0, 0])
            counts[0] += drafted
            counts[1] += accepted

    def pooled(self, drafter: str) -> float:
        drafted, accepted = self._pooled.get(drafter, (0, 0))
        return (accepted + 1) / (drafted + 2)  # Laplace: untried drafters start at 0.5

    def rate(self, seq_id: int, drafter: str) -> float:
        drafted, accepted = self._per_seq.get((seq_id, drafter), (0, 0))
        m = self.prior_strength
        return (accepted + m * self.pooled(drafter)) / (drafted + m)

    def forget(self, seq_id: int) -> None:
        for key in [k for k in self._per_seq if k[0] == seq_id]:
            del self._per_seq[key]


@dataclass(slots=True)
class StepPlan:
    """Drafts for one target forward: per row its drafter name (or 'none') and tokens."""

    drafts: list[Draft]
    drafter: list[str]  # who drafted the row's tokens ('none' when it got none)
    chosen: list[str]  # who the row was assigned to, even if that drafter had nothing ready
    draft_time_s: dict[str, float]


class DraftPlanner:
    """Fastest-of-N over the given drafters (one drafter: just picks k; none: plain decoding)."""

    def __init__(
        self,
        drafters: Mapping[str, Drafter],
        spec: SpecConfig,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.drafters = dict(drafters)
        self.spec = spec
        self.clock = clock
        self.cost = CostModel()
        self.acceptance = AcceptanceTracker(spec.prior_strength)
        self._num_steps = 0
        self.lookup = [n for n, d in self.drafters.items() if not d.uses_model]
        self.models = [n for n, d in self.drafters.items() if d.uses_model]

    def plan(self, seqs: Sequence[SeqState]) -> StepPlan:
        """Draft for every sequence; lookup drafters run first, model drafters only where chosen."""
        k_max = self.spec.num_draft_tokens if self.drafters else 0
        times: dict[str, float] = {}
        proposals: dict[str, list[Draft]] = {}
        for name in self.lookup:
            t0 = self.clock()
            proposals[name] = self.drafters[name].propose(seqs, k_max)
            times[name] = self.clock() - t0
        k, used, choice = self._decide(seqs, proposals, k_max)
        for name in used:
            rows = [i for i, c in enumerate(choice) if c == name]
            t0 = self.clock()
            drafted = self.drafters[name].propose([seqs[i] for i in rows], k)
            times[name] = self.clock() - t0
            self.cost.observe_draft(name, k, times[name])
            proposals[name] = [Draft([])] * len(seqs)
            for i, d in zip(rows, drafted, strict=True):
                proposals[name][i] = d
        drafts = []
        for i, name in enumerate(choice):
            d = proposals[name][i] if name != NO_DRAFTER else Draft([])
            drafts.append(d.head(k) if d.tokens and k > 0 else Draft([]))
        self._num_steps += 1
        drafter = [c if drafts[i].tokens else NO_DRAFTER for i, c in enumerate(choice)]
        return StepPlan(drafts, drafter, choice, times)

    def observe(
        self,
        seqs: Sequence[SeqState],
        plan: StepPlan,
        accepted: Sequence[int],
        num_tokens: int,
        verify_s: float,
    ) -> None:
        self.cost.observe_verify(num_tokens, verify_s)
        for s, name, d, a in zip(seqs, plan.drafter, plan.drafts, accepted, strict=True):
            if name != NO_DRAFTER:
                self.acceptance.observe(s.seq_id, name, d.depth, a)

    def finish(self, seqs: Sequence[SeqState]) -> None:
        for s in seqs:
            self.acceptance.forget(s.seq_id)

    def _decide(
        self, seqs: Sequence[SeqState], proposals: Mapping[str, list[Draft]], k_max: int
    ) -> tuple[int, tuple[str, ...], list[str]]:
        """(k, model drafters to run, drafter per row) of the highest expected tokens per second."""
        if k_max == 0:
            return 0, (), [NO_DRAFTER] * len(seqs)
        if not self.spec.adaptive_draft_len or not self.cost.is_ready:
            # explore: first step at full length, the next plain, so the verify fit has two sizes
            ks = [k_max] if self._num_steps != 1 or not self.spec.adaptive_draft_len else [0]
        else:
            ks = list(range(k_max + 1))
        subsets = [c for r in range(len(self.models) + 1) for c in combinations(self.models, r)]
        best: tuple[float, int, tuple[str, ...], list[str]] | None = None
        for k in ks:
            by_lookup = []  # per row, the best lookup draft at this k: the same for every subset
            for i, s in enumerate(seqs):
                name, e, n = NO_DRAFTER, 1.0, 0
                for cand in self.lookup:
                    d_c = proposals[cand][i].head(k)
                    e_c = expected_tokens(self.acceptance.rate(s.seq_id, cand), d_c.depth)
                    if e_c > e:
                        name, e, n = cand, e_c, len(d_c.tokens)
                by_lookup.append((name, e, n))
            for used in subsets:
                choice, total_e, width = [], 0.0, 1
                for i, s in enumerate(seqs):
                    name, e, n = by_lookup[i]
                    for cand in used:
                        e_c = expected_tokens(self.acceptance.rate(s.seq_id, cand), k)
                        if e_c > e:
                            name, e, n = cand, e_c, k
                    choice.append(name)
                    total_e += e
                    width = max(width, n + 1)
                if any(u not in choice for u in used):
                    continue  # a drafter no row would use costs time for nothing
                if self.cost.is_ready:
                    step_s = self.cost.verify_time(len(seqs) * width)
                    step_s += sum(self.cost.draft_time(u, k) for u in used)
                    rate = total_e / step_s
                else:
                    rate = total_e
                if best is None or rate > best[0] * (1 + 1e-9):
                    best = (rate, k, used, choice)
        assert best is not None
        return best[1], best[2], best[3]
