"""The schedulers LMetric is compared with, each reduced to its decision rule over the same views.

Every class cites the system it stands for; constants are those systems' defaults. Ties go to the
lowest index unless a rule says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wildserve.routing.local import PrefixIndex
from wildserve.routing.policy import ROUTING_POLICIES, RoutingPolicy, argmin
from wildserve.routing.view import InstanceView, RouteRequest


def minmax(values: Sequence[float]) -> list[float]:
    """Scale to [0, 1]; a constant input (no information) maps to all ones."""
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [1.0] * len(values)
    return [(x - lo) / (hi - lo) for x in values]


def _argmax(keys: Sequence[float]) -> int:
    best = 0
    for i in range(1, len(keys)):
        if keys[i] > keys[best]:
            best = i
    return best


@ROUTING_POLICIES.register("vllm-v1")
class VllmV1(RoutingPolicy):
    """vLLM v1's data-parallel balancer: least ``4 x waiting + running``."""

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        return argmin([4 * v.num_waiting + v.num_running for v in views])


@ROUTING_POLICIES.register("llm-d")
class LlmD(RoutingPolicy):
    """llm-d's inference scheduler: weighted min-max scorers, prefix 3 : queue 2 : KV usage 2."""

    def __init__(
        self, prefix_weight: float = 3.0, queue_weight: float = 2.0, kv_weight: float = 2.0
    ):
        self.weights = (prefix_weight, queue_weight, kv_weight)

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        total = max(1, len(request.block_hashes))
        prefix = minmax([v.cached_blocks(request.block_hashes) / total for v in views])
        queue = minmax([-float(v.num_waiting) for v in views])  # shorter queue scores higher
        kv = minmax([1.0 - v.kv_usage for v in views])
        wp, wq, wk = self.weights
        return _argmax(
            [wp * p + wq * q + wk * k for p, q, k in zip(prefix, queue, kv, strict=True)]
        )


@ROUTING_POLICIES.register("dynamo")
class Dynamo(RoutingPolicy):
    """NVIDIA Dynamo's KV router: least ``overlap_weight x prefill blocks + active decode blocks``."""

    def __init__(self, overlap_weight: float = 1.0) -> None:
        self.overlap_weight = overlap_weight

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        n = len(request.block_hashes)
        costs = []
        for v in views:
            prefill = n - v.cached_blocks(request.block_hashes)
            decode = v.kv_usage * v.num_kv_blocks + n
            costs.append(self.overlap_weight * prefill + decode)
        return argmin(costs)


@ROUTING_POLICIES.register("production-weighted")
class ProductionWeighted(RoutingPolicy):
    """A production-style scorer: cache hit %, batch size, token load at 1/3 each; sampled by score."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        prompt = max(1, request.prompt_tokens)
        hit = minmax([v.cached_tokens(request.block_hashes) / prompt for v in views])
        batch = minmax([-float(v.num_requests) for v in views])
        load = minmax([-float(v.queued_prefill_tokens) for v in views])
        scores = np.array([(h + b + t) / 3 for h, b, t in zip(hit, batch, load, strict=True)])
        total = scores.sum()
        p = scores / total if total > 0 else None
        return int(self._rng.choice(len(views), p=p))


@ROUTING_POLICIES.register("aibrix-prefix")
class AibrixPrefix(RoutingPolicy):
    """AIBrix's prefix-cache router: balance when running counts drift, else follow the prefix."""

    def __init__(self, imbalance_abs: int = 16, std_factor: float = 2.0) -> None:
        self.imbalance_abs = imbalance_abs
        self.std_factor = std_factor

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        running = [v.num_running for v in views]
        if max(running) - min(running) > self.imbalance_abs:
            return argmin(running)
        limit = float(np.mean(running) + self.std_factor * np.std(running))
        candidates = [i for i, r in enumerate(running) if r <= limit] or list(range(len(views)))
        matches = {i: views[i].cached_blocks(request.block_hashes) for i in candidates}
        if max(matches.values()) == 0:
            return min(candidates, key=lambda i: (running[i], i))
        return min(candidates, key=lambda i: (-matches[i], running[i], i))


@ROUTING_POLICIES.register("sglang-cache-aware")
class SglangCacheAware(RoutingPolicy):
    """SGLang router's cache_aware policy over its own approximate per-instance prefix trees.

    The trees hold what this router sent where (not what the engines cached), bounded per instance,
    one per instance id; ``on_dispatch`` inserts the request's blocks into the tree of the instance
    it went to.
    """

    def __init__(
        self,
        balance_abs_threshold: int = 64,
        balance_rel_threshold: float = 1.5,
        cache_threshold: float = 0.3,
        max_tree_blocks: int = 1 << 20,
    ) -> None:
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.cache_threshold = cache_threshold
        self.max_tree_blocks = max_tree_blocks
        self.trees: dict[int, PrefixIndex] = {}  # instance id -> what was sent there

    def tree(self, instance_id: int) -> PrefixIndex:
        tree = self.trees.get(instance_id)
        if tree is None:
            tree = self.trees[instance_id] = PrefixIndex(self.max_tree_blocks)
        return tree

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        loads = [v.num_requests for v in views]
        hi, lo = max(loads), min(loads)
        if hi - lo > self.balance_abs_threshold and hi > self.balance_rel_threshold * lo:
            return argmin(loads)
        hashes = request.block_hashes
        matches = [self.tree(v.instance_id).match(hashes) for v in views]
        best = _argmax(matches)
        ratio = matches[best] / len(hashes) if hashes else 0.0
        return best if ratio > self.cache_threshold else argmin(loads)

    def on_dispatch(self, instance_id: int, request: RouteRequest) -> None:
        self.tree(instance_id).insert(request.block_hashes)


@ROUTING_POLICIES.register("linear-tuned")
class LinearTuned(RoutingPolicy):
    """``queued_prefill_tokens + new_tokens + w x requests``: LMetric's two indicators, combined linearly.

    The family the paper compares LMetric's product with: the same prefill backlog, the same uncached
    tokens and the same request count, added with one weight ``w`` (tokens per request) that has to be
    tuned for each workload and load. The experiment grid-searches ``w`` per load.
    """

    def __init__(self, w: float = 4096.0) -> None:
        self.w = w

    def scores(self, request: RouteRequest, views: Sequence[InstanceView]) -> list[float]:
        w = self.w
        return [v.queued_prefill_tokens + v.new_tokens(request) + w * v.num_requests for v in views]

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        return argmin(self.scores(request, views))


@ROUTING_POLICIES.register("linear-new")
class LinearNew(RoutingPolicy):
    """``alpha x new_tokens + beta x requests``: a narrower linear family with no backlog term.

    It was this project's first tuned baseline; LMetric beats its best grid point on Mooncake where
    it does not beat ``linear-tuned``'s, so both are reported.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1000.0) -> None:
        self.alpha = alpha
        self.beta = beta

    def scores(self, request: RouteRequest, views: Sequence[InstanceView]) -> list[float]:
        a, b = self.alpha, self.beta
        return [a * v.new_tokens(request) + b * v.num_requests for v in views]

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        return argmin(self.scores(request, views))
