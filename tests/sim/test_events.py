from __future__ import annotations

from wildserve.sim.events import Event, EventQueue


class _E(Event):
    def __init__(self, name: str, priority: int) -> None:
        self.name = name
        self.priority = priority  # type: ignore[misc]

    def handle(self, sim, now):
        return []


def test_same_time_orders_by_priority_then_insertion():
    q = EventQueue()
    q.push(1.0, _E("late-step", 1))
    q.push(1.0, _E("arrival-a", 0))
    q.push(0.5, _E("early", 1))
    q.push(1.0, _E("arrival-b", 0))
    q.push(1.0, _E("step-2", 1))
    order = [q.pop()[1].name for _ in range(len(q))]
    assert order == ["early", "arrival-a", "arrival-b", "late-step", "step-2"]
