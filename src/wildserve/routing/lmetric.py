"""LMetric: route to the smallest (queued prefill + this request's uncached tokens) x (requests + 1).

The first factor is the prefill work the request would wait behind and add; the second the batch it
would join. Their product needs no weights. ``+ 1`` keeps idle instances ranked by prefill backlog.

Two failure modes are counted at run time, at no change to the decision:

- **zero score** (``zero_score_decisions``): a request whose whole prompt is cached on an instance with
  no queued prefill scores 0 there whatever that instance's load, so a hot prefix can pile onto one
  instance. ``mitigate_zero`` floors the uncached tokens at one block and breaks score ties by the
  number of requests, so load always counts.
- **costly switch** (``costly_switch_decisions``): the product prefers an instance other than the one
  holding the request's longest cached prefix although the re-prefill the move causes (its extra
  uncached tokens) exceeds the backlog it avoids (the holder's queued prefill minus the chosen one's).
  Only the ``(requests + 1)`` factor can then win, and on long-context agent sessions each such move
  puts a whole context into another queue: the feedback loop behind LMetric's session collapse.

``lmetric-stay`` (ours, not the paper's; ``lmetric`` is left as published) refuses exactly those
moves: among the instances whose prefill work for this request (queued + uncached) is no more than
the cache holder's, it takes LMetric's product minimum. The holder always qualifies, so a request
leaves its cache only for an instance whose backlog plus re-prefill is no larger than what it would
wait behind at home: the switch that shortens its prefill queue. It adds no knob: the veto compares
the product's own first factor across two instances.

``lmetric-marginal`` (ours, no knob) vetoes by marginal cost instead: an instance is a candidate only
if ``queued + new x (requests + 1)`` there (the request's own wait plus the stall its prefill puts on
the requests it joins) is no more than at the cache holder. A switch's re-prefill then counts once for
each request it stalls, where the product counts it once; LMetric's product picks among the rest.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from wildserve.errors import ConfigError
from wildserve.routing.policy import ROUTING_POLICIES, RoutingPolicy
from wildserve.routing.view import InstanceView, RouteRequest


def prefill_terms(
    request: RouteRequest, views: Sequence[InstanceView]
) -> tuple[list[int], list[int]]:
    """Per instance: its queued prefill tokens and this request's uncached prompt tokens there."""
    prompt = request.prompt_tokens
    hashes = request.block_hashes
    queued = []
    new = []
    for v in views:
        n = prompt - v.match_blocks(hashes) * v.block_size
        new.append(n if n > 0 else 0)
        queued.append(v.queued_prefill_tokens)
    return queued, new


def cache_holder(queued: Sequence[int], new: Sequence[int]) -> int | None:
    """The instance holding the longest cached prefix (fewest uncached tokens), None if none holds any.

    Among equal holders the one with the least prefill work (queued + new) wins, then the lowest index.
    """
    most = max(new)
    fewest = min(new)
    if fewest == most:  # every instance would prefill the same: no cache to lose by moving
        return None
    best = -1
    for i, n in enumerate(new):
        if n == fewest and (best < 0 or queued[i] < queued[best]):
            best = i
    return best


def is_costly_switch(queued: Sequence[int], new: Sequence[int], chosen: int) -> bool:
    """True if ``chosen`` is not the cache holder and its re-prefill exceeds the backlog it avoids."""
    home = cache_holder(queued, new)
    if home is None or chosen == home:
        return False
    return new[chosen] - new[home] > queued[home] - queued[chosen]


@ROUTING_POLICIES.register("lmetric")
class LMetric(RoutingPolicy):
    """The knob-free LMetric scheduler."""

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
        self.num_costly_switch_decisions = 0  # moved off the cache for more prefill than it avoids

    def scores(self, request: RouteRequest, views: Sequence[InstanceView]) -> list[int]:
        """Raw LMetric scores, one per instance."""
        queued, new = prefill_terms(request, views)
        return _products(queued, new, views)

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        queued, new = prefill_terms(request, views)
        chosen = self._choose(request, _products(queued, new, views), queued, views)
        if is_costly_switch(queued, new, chosen):
            self.num_costly_switch_decisions += 1
        return chosen

    def _choose(
        self,
        request: RouteRequest,
        scores: list[int],
        queued: Sequence[int],
        views: Sequence[InstanceView],
    ) -> int:
        self.num_decisions += 1
        best = min(scores)
        if best == 0:
            self.num_zero_score_decisions += 1
        if self.mitigate_zero:
            keys = []
            for s, q, v in zip(scores, queued, views, strict=True):
                bs = v.num_running + v.num_waiting
                floor = (q + request.block_size) * (bs + 1)
                keys.append((s if s >= floor else floor, bs))
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
            "costly_switch_decisions": self.num_costly_switch_decisions,
        }


class _HolderVeto(LMetric):
    """LMetric's product among the instances whose cost, by the subclass's measure, is no more than
    the cache holder's (both variants are ours, no knob). Without a cache holder it is LMetric."""

    def __init__(
        self, mitigate_zero: bool = False, tie_break: str = "lowest", seed: int = 0
    ) -> None:
        super().__init__(mitigate_zero, tie_break, seed)
        self.num_stays = 0  # LMetric's own choice cost more than staying and was refused

    @staticmethod
    @abstractmethod
    def cost(queued: int, new: int, view: InstanceView) -> int:
        """The subclass's measure of placing the request on an instance (lower is better)."""

    @classmethod
    def vetoed_scores(
        cls, queued: Sequence[int], new: Sequence[int], views: Sequence[InstanceView]
    ) -> list[float]:
        """LMetric's products, infinite where the cost exceeds the cache holder's."""
        scores: list[float] = list(_products(queued, new, views))
        home = cache_holder(queued, new)
        if home is not None:
            limit = cls.cost(queued[home], new[home], views[home])
            for i, (q, n, v) in enumerate(zip(queued, new, views, strict=True)):
                if cls.cost(q, n, v) > limit:
                    scores[i] = math.inf
        return scores

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        queued, new = prefill_terms(request, views)
        scores = self.vetoed_scores(queued, new, views)
        if min(scores) > min(_products(queued, new, views)):
            self.num_stays += 1
        chosen = self._choose(request, scores, queued, views)
        if is_costly_switch(queued, new, chosen):
            self.num_costly_switch_decisions += 1
        return chosen

    def stats(self) -> dict:
        return {**super().stats(), "stays": self.num_stays}


@ROUTING_POLICIES.register("lmetric-stay")
class LMetricStay(_HolderVeto):
    """LMetric without its costly switches (ours): a move must not add prefill work for the request.
    (Its choices never are costly switches, so its costly-switch count stays 0.)"""

    name = "lmetric-stay"

    @staticmethod
    def cost(queued: int, new: int, view: InstanceView) -> int:
        return queued + new


@ROUTING_POLICIES.register("lmetric-marginal")
class LMetricMarginal(_HolderVeto):
    """LMetric that leaves the cache holder only for a lower marginal cost (ours, no knob).

    The product ranks instances by this request's own prefill wait times the batch it joins. A switch
    off the cache holder also re-prefills the session's context, and that prefill stalls every
    request running where it lands. The marginal cost of placing the request on an instance is its
    own wait plus that stall, ``queued + new x (requests + 1)``, from the same two indicators the
    product multiplies. Instances whose marginal cost exceeds the holder's are not candidates; among
    the rest the product decides, as in LMetric. Without a cache holder it is LMetric.
    """

    name = "lmetric-marginal"

    @staticmethod
    def cost(queued: int, new: int, view: InstanceView) -> int:
        return queued + new * (view.num_requests + 1)


def _products(
    queued: Sequence[int], new: Sequence[int], views: Sequence[InstanceView]
) -> list[int]:
    return [
        (q + n) * (v.num_running + v.num_waiting + 1)
        for q, n, v in zip(queued, new, views, strict=True)
    ]
