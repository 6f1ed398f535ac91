"""The routing-policy interface and registry, plus the two load-only baselines.

A policy's decision depends only on ``(request, views)`` and state it owns (a counter, a seeded RNG).
It reads no clock and never changes a view. Ties go to the lowest index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from wildserve.registry import Registry
from wildserve.routing.view import InstanceView, RouteRequest


class RoutingPolicy(ABC):
    """Picks the instance a request goes to."""

    name: ClassVar[str]

    @abstractmethod
    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        """Index into ``views`` of the chosen instance."""

    def choose_among(
        self,
        request: RouteRequest,
        views: Sequence[InstanceView],
        candidates: Sequence[int] | None,
    ) -> int:
        """Instance id chosen among ``candidates`` (None: all); the policy sees only their views."""
        if candidates is None or len(candidates) == len(views):
            return self.choose(request, views)
        return candidates[self.choose(request, [views[i] for i in candidates])]


ROUTING_POLICIES: Registry[type[RoutingPolicy]] = Registry("routing policy")


def argmin(keys: Sequence[object]) -> int:
    """Index of the smallest key; the lowest index wins ties."""
    best = 0
    for i in range(1, len(keys)):
        if keys[i] < keys[best]:  # type: ignore[operator]
            best = i
    return best


@ROUTING_POLICIES.register("round-robin")
class RoundRobin(RoutingPolicy):
    """Instances in turn, ignoring load and cache."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        i = self._next % len(views)
        self._next = i + 1
        return i


@ROUTING_POLICIES.register("least-requests")
class LeastRequests(RoutingPolicy):
    """Fewest unfinished requests (running + waiting)."""

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        return argmin([v.num_requests for v in views])


def make_policy(name: str, **kwargs: object) -> RoutingPolicy:
    """Build a routing policy by its registry name."""
    return ROUTING_POLICIES.get(name)(**kwargs)
