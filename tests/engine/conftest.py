from __future__ import annotations

import pytest

from wildserve.engine import Engine, EngineConfig, EngineRequest
from wildserve.perf.batch import BatchShape
from wildserve.perf.linear import LinearCostModel


class RecordingCost(LinearCostModel):
    """The linear model, remembering every step shape it was asked about."""

    def __init__(self, **kw):
        super().__init__(**kw)
        object.__setattr__(self, "shapes", [])

    def step_time(self, shape: BatchShape) -> float:
        self.shapes.append(shape)
        return super().step_time(shape)


def run_to_completion(engine: Engine, now: float = 0.0, horizon: float | None = None) -> float:
    """Drive one engine alone until it is idle; returns the final time."""
    while engine.has_work:
        res = engine.step(now, horizon=horizon)
        assert res.num_steps > 0, "engine has work but scheduled nothing"
        now = res.end_s
    return now


@pytest.fixture
def make_engine():
    def _make(num_blocks=1000, cost=None, **cfg):
        return Engine(EngineConfig(**cfg), cost or LinearCostModel(), num_blocks=num_blocks)

    return _make


def hashes(*ids: int) -> list[int]:
    """Distinct stand-in block hashes (chain semantics are the caller's business)."""
    return [1000 + i for i in ids]


__all__ = ["EngineRequest", "RecordingCost", "hashes", "run_to_completion"]
