"""Which instances drop layers together, and into how many stages.

Greedy rule (``greedy``): let O be the overloaded instances (KV usage >= the trigger and queued demand
>= free blocks), most short of blocks first. For each pipeline degree g in increasing order, deal O in
snake order into ceil(|O|/g) groups and fill the missing seats with the least-used instances that are
not overloaded (so the fewest of them are touched, and only when O does not split evenly). Take the
first g for which every group covers its queued demand: group blocks after the drop >= blocks its
running requests use + blocks its queued requests need. If no degree covers, take the largest
degree that fits. Instances already in a group are never planned again.

Fixed groups (``fixed``): instances are pre-partitioned into consecutive groups of one degree; a group
drops when any of its members is overloaded and all of them are still normal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from wildserve.registry import Registry

# members (leader first) -> KV blocks the group would have after dropping to len(members) stages
GroupCapacity = Callable[[Sequence[int]], int]


@dataclass(frozen=True, slots=True)
class InstanceLoad:
    """One normal instance's KV state at planning time, in blocks of block_size tokens."""

    instance: int
    num_blocks: int
    num_used: int  # blocks held by requests
    num_free: int  # blocks a new allocation can take (empty + evictable cached)
    demand: int  # blocks the queued requests need to be admitted
    overloaded: bool

    @property
    def deficit(self) -> int:
        return self.demand - self.num_free

    @property
    def usage(self) -> float:
        return self.num_used / self.num_blocks


def covers(group: Sequence[InstanceLoad], capacity: GroupCapacity) -> bool:
    """Whether the group, dropped, holds its running requests' KV and its queued demand."""
    need = sum(x.num_used + x.demand for x in group)
    return capacity([x.instance for x in group]) >= need


class DropPlanner(ABC):
    """Turns the current loads into groups to drop (each a member list, leader first)."""

    name: ClassVar[str]

    @abstractmethod
    def plan(self, loads: Sequence[InstanceLoad], capacity: GroupCapacity) -> list[list[int]]: ...


DROP_PLANNERS: Registry[type[DropPlanner]] = Registry("drop planner")


@DROP_PLANNERS.register("greedy")
class GreedyPlanner(DropPlanner):
    """Smallest pipeline degree, then fewest instances, that covers the queued demand."""

    def __init__(self, degrees: Sequence[int] = (2, 4, 8)) -> None:
        self.degrees = sorted(set(degrees))

    def plan(self, loads: Sequence[InstanceLoad], capacity: GroupCapacity) -> list[list[int]]:
        over = sorted((x for x in loads if x.overloaded), key=lambda x: (-x.deficit, x.instance))
        if not over:
            return []
        spare = sorted(
            (x for x in loads if not x.overloaded), key=lambda x: (x.usage, x.demand, x.instance)
        )
        fallback: list[list[InstanceLoad]] = []
        for g in self.degrees:
            k = -(-len(over) // g)
            if k * g > len(loads):
                break
            groups: list[list[InstanceLoad]] = [[] for _ in range(k)]
            for rank, x in enumerate(over):
                lap, pos = divmod(rank, k)
                groups[pos if lap % 2 == 0 else k - 1 - pos].append(x)
            pad = iter(spare)
            for grp in groups:
                while len(grp) < g:
                    grp.append(next(pad))
            fallback = groups
            if all(covers(grp, capacity) for grp in groups):
                break
        return [sorted(x.instance for x in grp) for grp in fallback]


@DROP_PLANNERS.register("fixed")
class FixedPlanner(DropPlanner):
    """Consecutive groups of one degree; a group drops as a whole when a member is overloaded."""

    def __init__(self, degree: int = 2) -> None:
        if degree < 2:
            raise ValueError(f"a fixed group needs degree >= 2, got {degree}")
        self.degree = degree

    def plan(self, loads: Sequence[InstanceLoad], capacity: GroupCapacity) -> list[list[int]]:
        by_id = {x.instance: x for x in loads}
        out = []
        for start in sorted({x.instance // self.degree * self.degree for x in loads}):
            members = list(range(start, start + self.degree))
            if all(m in by_id for m in members) and any(by_id[m].overloaded for m in members):
                out.append(members)
        return out
