"""Routing policies and the views they decide on; shared by the simulator and the gateway."""

from wildserve.routing.policy import ROUTING_POLICIES, RoutingPolicy, make_policy
from wildserve.routing.view import InstanceView, RouteRequest

__all__ = ["ROUTING_POLICIES", "InstanceView", "RouteRequest", "RoutingPolicy", "make_policy"]

# Importing the modules registers their policies.
from wildserve.routing import baselines, llumnix, lmetric  # noqa: F401
