"""A discrete-event queue with one explicit ordering key: (time, priority, sequence number)."""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from wildserve.sim.simulator import Simulator


class Event(ABC):
    """Something that happens at a time; handling it returns the events it causes."""

    priority: ClassVar[int]  # lower runs first among events at the same time

    @abstractmethod
    def handle(self, sim: Simulator, now: float) -> Iterable[tuple[float, Event]]: ...


class Call(Event):
    """A controller's own event: call ``fn(sim, now)`` and schedule the events it returns.

    Runs after arrivals and step ends at the same time, so it sees the state they leave.
    """

    priority = 2

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Simulator, float], Iterable[tuple[float, Event]]]) -> None:
        self.fn = fn

    def handle(self, sim: Simulator, now: float) -> Iterable[tuple[float, Event]]:
        return self.fn(sim, now)


class EventQueue:
    """Min-heap of events; ties at equal time go by priority, then by insertion order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Event]] = []
        self._seq = itertools.count()

    def push(self, time: float, event: Event) -> None:
        heapq.heappush(self._heap, (time, event.priority, next(self._seq), event))

    def pop(self) -> tuple[float, Event]:
        time, _, _, event = heapq.heappop(self._heap)
        return time, event

    def __len__(self) -> int:
        return len(self._heap)
