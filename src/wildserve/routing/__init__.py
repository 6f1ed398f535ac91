"""Routing policies and the views they decide on; shared by the simulator and the gateway.

A policy is a registered ``RoutingPolicy`` whose ``choose(request, views)`` returns an index into
``views``. The same object decides in the simulator (``sim``, views from the engines or a router-local
index) and in the HTTP gateway (views from backends' metrics and KV events), so there is one rule.

Add a policy in one file plus a test:

1. write the rule in a module here (``routing/NAME.py``), e.g. "the longest cached prefix, then the
   fewest requests"::

       from collections.abc import Sequence

       from wildserve.routing.policy import ROUTING_POLICIES, RoutingPolicy, argmin
       from wildserve.routing.view import InstanceView, RouteRequest


       @ROUTING_POLICIES.register("most-cached")
       class MostCached(RoutingPolicy):
           \"\"\"Where most of the prompt is cached; fewest unfinished requests among equals.\"\"\"

           name = "most-cached"

           def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
               hashes = request.block_hashes
               return argmin([(-v.cached_blocks(hashes), v.num_requests) for v in views])

   A policy reads no clock and never changes a view. State it keeps across requests (a counter, a
   prefix tree per instance) is keyed by ``views[i].instance_id``, never by position: the views may
   be a subset (an ejected backend, a retry, the targets a controller narrowed);
2. import the module at the end of this file; ``make_policy("most-cached")``, ``simulate --policy``,
   ``gateway --policy`` and the experiments then find it by name;
3. test its choice on hand-built ``InstanceView``s (``tests/routing/test_basic_policies.py``) and in
   a small simulated cluster (``tests/routing/test_recipe.py`` runs this very recipe).
"""

from wildserve.routing.policy import ROUTING_POLICIES, RoutingPolicy, make_policy
from wildserve.routing.view import InstanceView, RouteRequest

__all__ = ["ROUTING_POLICIES", "InstanceView", "RouteRequest", "RoutingPolicy", "make_policy"]

# Importing the modules registers their policies.
from wildserve.routing import baselines, llumnix, lmetric  # noqa: F401
