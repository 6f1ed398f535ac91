"""Llumnix's dispatch rule: send a request where the KV memory per running request is most free.

Llumnix (Sun et al., OSDI 2024) rates an instance by its *freeness*,
``(free blocks - blocks its queued requests need) / batch size``: memory that is not yet promised to
anyone, shared by the requests that will compete for it. Views give free blocks as
``(1 - kv_usage) x num_kv_blocks`` and the queued demand as the uncached prompt tokens not yet
prefilled (``queued_prefill_tokens``). An idle instance has batch size 1. Ties go to the lowest index.
"""

from __future__ import annotations

from collections.abc import Sequence

from wildserve.routing.policy import ROUTING_POLICIES, RoutingPolicy, argmin
from wildserve.routing.view import InstanceView, RouteRequest


def unpromised_blocks(view: InstanceView) -> float:
    """Free KV blocks not already owed to queued prefill (may be negative)."""
    return (1.0 - view.kv_usage) * view.num_kv_blocks - view.queued_prefill_tokens / view.block_size


def freeness(view: InstanceView) -> float:
    """Llumnix's freeness of one instance, in blocks per running request (may be negative)."""
    return unpromised_blocks(view) / max(1, view.num_running)


@ROUTING_POLICIES.register("llumnix")
class LlumnixDispatch(RoutingPolicy):
    """Highest freeness; falls back to fewest requests when no view knows its KV size."""

    def choose(self, request: RouteRequest, views: Sequence[InstanceView]) -> int:
        if not any(v.num_kv_blocks for v in views):
            return argmin([v.num_requests for v in views])
        return argmin([-freeness(v) for v in views])
