"""How long one engine step takes, from its plan: the hook a non-default executor (a pipeline) replaces.

The default costs the whole batch as one forward pass of the whole model. ``Engine.costing`` may be
swapped at run time (``wildserve.overload`` costs a batch as micro-batches through pipeline stages).
Both methods must agree: ``decode_run_times(out, k)[i]`` is exactly what ``step_time`` would return
for the i-th of k identical pure-decode steps, so fast-forwarding never changes a result.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from wildserve.engine.scheduler import SchedulerOutput
from wildserve.perf.batch import BatchShape, StepCostModel


class StepCosting(Protocol):
    """Seconds of a planned step (and of a run of identical decode steps)."""

    def step_time(self, out: SchedulerOutput) -> float: ...

    def decode_run_times(self, out: SchedulerOutput, num_steps: int) -> np.ndarray:
        """Durations of ``num_steps`` pure-decode steps of ``out.scheduled``, the first being ``out``."""
        ...


def batch_shape(out: SchedulerOutput) -> BatchShape:
    """The aggregate shape of a planned step."""
    shape = BatchShape()
    for req, n, ctx in zip(out.scheduled, out.num_new_tokens, out.context_tokens, strict=True):
        shape.add_chunk(n, ctx, ctx + n >= req.num_tokens)
    return shape


class ModelCosting:
    """The default: one forward pass of the whole model per step."""

    __slots__ = ("cost_model",)

    def __init__(self, cost_model: StepCostModel) -> None:
        self.cost_model = cost_model

    def step_time(self, out: SchedulerOutput) -> float:
        return self.cost_model.step_time(batch_shape(out))

    def decode_run_times(self, out: SchedulerOutput, num_steps: int) -> np.ndarray:
        reqs = out.scheduled
        ctx = sum(out.context_tokens) + len(reqs)
        return self.cost_model.decode_run_times(len(reqs), ctx, num_steps)
