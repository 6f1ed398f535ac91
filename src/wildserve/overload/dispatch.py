"""Capacity-aware dispatch: how the cluster router sees instances that serve as one unit.

The rule, the same for every system of the overload comparison: a *serving unit* is a set of g
instances that share one queue and one KV pool (a KunServe pipeline group; in every other case one
instance, g = 1). The router is shown one view per member instance, each carrying the member's share
of the unit: ``1/g`` of its running and waiting requests, queued prefill tokens and KV blocks
(integer shares; the remainder goes to the first members), and the unit's KV usage and prefix cache.
Whatever a routing policy computes from a view (requests, free blocks per request, prefill backlog)
is therefore load per instance's worth of memory and seats: a group holds g instances' KV blocks
and ``g x max_num_seqs`` seats, and a policy that evens load over views sends it g times the
requests of one instance. A request routed to any member goes to the unit's leader, whose engine
serves the unit. With singleton units the views pass through unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from wildserve.routing.view import InstanceView


def share(total: int, k: int, g: int) -> int:
    """Member ``k``'s integer share of ``total`` split over ``g`` members (shares sum to total)."""
    q, r = divmod(total, g)
    return q + (1 if k < r else 0)


def member_views(unit: InstanceView, members: Sequence[int]) -> list[InstanceView]:
    """The unit's view split into one view per member (``members[k]`` gets share ``k``)."""
    g = len(members)
    if g == 1:
        return [unit]
    return [
        dataclasses.replace(
            unit,
            instance_id=m,
            num_running=share(unit.num_running, k, g),
            num_waiting=share(unit.num_waiting, k, g),
            queued_prefill_tokens=share(unit.queued_prefill_tokens, k, g),
            num_kv_blocks=share(unit.num_kv_blocks, k, g),
        )
        for k, m in enumerate(members)
    ]


def unit_views(views: Sequence[InstanceView], units: Sequence[Sequence[int]]) -> list[InstanceView]:
    """Views of every instance with each unit's view (its leader's, ``unit[0]``) split over its members.

    ``units`` lists the multi-instance units only; instances in none keep their own view.
    """
    out = list(views)
    for members in units:
        for k, v in enumerate(member_views(views[members[0]], members)):
            out[members[k]] = v
    return out
