"""LMetric: route to the smallest (queued prefill + this request's uncached tokens) x (requests + 1).

The first factor is the prefill work the request would wait behind and add; the second the batch it
would join. Their product needs no weights. ``+ 1`` keeps idle instances ranked by prefill backlog.

Failure mode: a request whose whole prompt is cached on an instance with no queued prefill scores 0
there whatever that instance's load, so a hot prefix can pile onto one instance. Such decisions are
counted (``num_zero_score_decisions``). ``mitigate_zero`` floors the uncached tokens at one block and
breaks score ties by the number of requests, so load always counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wildserve.errors import ConfigError
from wildserve.routing.policy import ROUTING_POLICIES, RoutingPolicy
from wildserve.routing.view import InstanceView, RouteRequest


@ROUTING_POLICIES.register("lmetric")
class LMetric(RoutingPolicy):
    """The knob-free LMetric scheduler."""

    name = "lmetric"

    def __init__(
        self, mitigate_zero: bool = False, tie_break: str = "lowest", seed: int = 0
    ) -> None:
        if tie_break not in ("lowest", "random"):
            raise ConfigError(f"lmetric tie_break must be 'lowest' or 'random', got '{tie_break}'")
        self.mitigate_zero = mitigate_zero
        self.tie_break = tie_break
        self._rng = np.random.default_rng(seed)
        self.num_decisions = 0
        self.num_zero_score_decisions = 0  # the best raw score was 0: load was ignored

    def scores(self, request: RouteRequest, views: Sequence[InstanceView]) -> list[int]:
        """Raw LMetric scores, one per instance."""
        prompt = request.prompt_tokens
        hashes = request.block_hashes
        out = []
        for v in views:
            new = prompt - v.match_blocks(hashes) * v.block_size
            if new < 0:
                new = 0
            out.append((v.queued_prefill_tokens + new) * (v.num_running + v.num_waiting + 1))
        return out

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        scores = self.scores(request, views)
        self.num_decisions += 1
        best = min(scores)
        if best == 0:
            self.num_zero_score_decisions += 1
        if self.mitigate_zero:
            floor = request.block_size
            keys = []
            for s, v in zip(scores, views, strict=True):
                bs = v.num_running + v.num_waiting
                if s < (v.queued_prefill_tokens + floor) * (bs + 1):
                    s = (v.queued_prefill_tokens + floor) * (bs + 1)
                keys.append((s, bs))
            best_key = min(keys)
            candidates = [i for i, k in enumerate(keys) if k == best_key]
        else:
            candidates = [i for i, s in enumerate(scores) if s == best]
        if len(candidates) == 1 or self.tie_break == "lowest":
            return candidates[0]
        return candidates[int(self._rng.integers(len(candidates)))]

    def stats(self) -> dict:
        return {
            "decisions": self.num_decisions,
            "zero_score_decisions": self.num_zero_score_decisions,
        }
