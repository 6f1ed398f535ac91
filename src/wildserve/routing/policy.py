"""The routing-policy interface and registry, plus the two load-only baselines.

A policy's decision depends only on ``(request, views)`` and state it owns (a counter, a seeded RNG).
It reads no clock and never changes a view. Ties go to the lowest index.

State a policy keeps about instances is keyed by ``InstanceView.instance_id``, never by the position
of a view: ``choose_among`` hands it a subset of the views (a backend ejected, a request retried, a
controller narrowing the targets), so position ``i`` need not be instance ``i``. What a policy learns
from its own decisions it records in ``on_dispatch``, which the driver calls once per request sent
(the simulator at dispatch, the gateway at every attempt), not in ``choose``: a decision that is
not acted on (the gateway's ``/tokenize`` forwarding) leaves no trace.

Adding a policy: subclass ``RoutingPolicy`` in one module of this package, register it under its name
with ``@ROUTING_POLICIES.register``, implement ``choose`` (and ``on_dispatch``/``stats`` if it keeps
state), import the module in ``routing/__init__.py``, and test it with a candidate subset.
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

    def on_dispatch(self, instance_id: int, request: RouteRequest) -> None:
        """``request`` was sent to instance ``instance_id`` (stateless policies ignore it)."""
        return None

    def stats(self) -> dict:
        """Counters a policy keeps about its own decisions, for run summaries ({}: none)."""
        return {}

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
    """Instances in turn by id, ignoring load and cache: the next id after the last one sent to.

    Among a subset of the instances it continues the same turn (the lowest id above the last
    dispatch, else the lowest id), so an ejected instance is skipped and none is passed over.
    """

    def __init__(self) -> None:
        self._last = -1  # instance id of the last dispatch

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        last = self._last
        after = lowest = -1
        for i, v in enumerate(views):
            vid = v.instance_id
            if vid > last and (after < 0 or vid < views[after].instance_id):
                after = i
            if lowest < 0 or vid < views[lowest].instance_id:
                lowest = i
        return after if after >= 0 else lowest

    def on_dispatch(self, instance_id: int, request: RouteRequest) -> None:
        self._last = instance_id


@ROUTING_POLICIES.register("least-requests")
class LeastRequests(RoutingPolicy):
    """Fewest unfinished requests (running + waiting)."""

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        return argmin([v.num_requests for v in views])


def make_policy(name: str, **kwargs: object) -> RoutingPolicy:
    """Build a routing policy by its registry name."""
    return ROUTING_POLICIES.get(name)(**kwargs)
