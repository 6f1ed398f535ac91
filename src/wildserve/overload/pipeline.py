"""Pipelined execution of one engine's batch over the stages of a group: micro-batches, period, bubbles.

A step's batch is cut into micro-batches (as many as stages) balanced by token count: prefills go
first, longest first, and a prefill that does not fit the remaining room of a micro-batch is chunked
across consecutive micro-batches (a later chunk never precedes an earlier one at any stage, so causal
attention sees its prefix). Pure-decode batches are dealt to micro-batches in snake order of context
length, which does not change while the same requests keep decoding, so a fast-forwarded decode run
costs exactly what single steps cost.

Stage s costs ``step_time(mb, num_layers=layers_s, with_embed=s == 0, with_head=s == last)`` per
micro-batch, except that the fixed host overhead of a step (scheduling, input preparation:
``overhead_time`` of an empty batch) is paid once per step, by the first micro-batch, since the group
schedules its batch once; each hop between stages sends the micro-batch's hidden states
(``activation_transfer_time``). Micro-batches cycle through the stages continuously (each one's next
iteration enters stage 0 once it has left the last stage), so a step lasts the steady-state period of
that cyclic flow shop: the larger of the busiest stage's total work, the longest micro-batch round
trip (its stage times plus its hops) and the busiest link's total transfer time. The bubble fraction
is the share of stage time left idle: 1 - (sum of stage work) / (stages x period).

Pipeline fill: the first step a new group runs starts with empty stages, so its tokens come out only
when its last micro-batch leaves the last stage: the makespan of one pass of the flow shop
(``fill_makespan``), longer than the steady-state period. With ``charge_fill`` the first step costs
``max(period, makespan)``; later steps cost the period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wildserve.engine.scheduler import SchedulerOutput
from wildserve.perf.analytic import StepCostBase
from wildserve.perf.batch import BatchShape


def mixed_microbatches(out: SchedulerOutput, num_microbatches: int) -> list[BatchShape]:
    """Token-balanced micro-batches of a batch: prefills longest first (chunked), then decodes."""
    prefills: list[tuple[int, int, bool]] = []
    decodes: list[tuple[int, int, bool]] = []
    for req, n, ctx in zip(out.scheduled, out.num_new_tokens, out.context_tokens, strict=True):
        samples = ctx + n >= req.num_tokens
        item = (n, ctx, samples)
        if n == 1 and ctx > 0 and samples:
            decodes.append(item)
        else:
            prefills.append(item)
    prefills.sort(key=lambda it: -it[0])
    decodes.sort(key=lambda it: -it[1])
    total = sum(it[0] for it in prefills) + len(decodes)
    m = max(1, min(num_microbatches, total))
    target = -(-total // m)
    shapes = [BatchShape() for _ in range(m)]
    j, room = 0, target
    for n, ctx, samples in prefills + decodes:
        while n > 0:
            take = n if j == m - 1 else min(n, room)
            n -= take
            shapes[j].add_chunk(take, ctx, samples and n == 0)
            ctx += take
            room -= take
            if room <= 0 and j < m - 1:
                j, room = j + 1, target
    return [s for s in shapes if s.num_tokens]


def decode_microbatches(out: SchedulerOutput, num_microbatches: int) -> tuple[list[int], list[int]]:
    """(sequences, KV tokens read) per micro-batch of a pure-decode batch, dealt in snake order."""
    ctx = [c + 1 for c in out.context_tokens]
    m = max(1, min(num_microbatches, len(ctx)))
    order = sorted(range(len(ctx)), key=lambda i: -ctx[i])
    seqs, reads = [0] * m, [0] * m
    for rank, i in enumerate(order):
        lap, pos = divmod(rank, m)
        j = pos if lap % 2 == 0 else m - 1 - pos
        seqs[j] += 1
        reads[j] += ctx[i]
    return seqs, reads


def cyclic_period(
    stage_times: list[list[np.ndarray]], hops: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(period, total stage work) per step from ``stage_times[s][j]`` and ``hops[j]`` arrays.

    Sums are explicit elementwise additions in a fixed order, so the value for one step does not
    depend on how many steps are computed together.
    """
    g, m = len(stage_times), len(hops)
    period = None
    work = None
    for s in range(g):
        load = stage_times[s][0].copy()
        for j in range(1, m):
            load += stage_times[s][j]
        period = load.copy() if period is None else np.maximum(period, load)
        work = load.copy() if work is None else work + load
    assert period is not None and work is not None
    link = hops[0].copy()
    for j in range(1, m):
        link += hops[j]
    if g > 1:
        period = np.maximum(period, link)
    for j in range(m):
        trip = stage_times[0][j].copy()
        for s in range(1, g):
            trip += stage_times[s][j]
        if g > 1:
            trip += (g - 1) * hops[j]
        period = np.maximum(period, trip)
    return period, work


def fill_makespan(stage_times: list[list[np.ndarray]], hops: list[np.ndarray]) -> np.ndarray:
    """When the last micro-batch leaves the last stage if the stages start empty (flow shop)."""
    g, m = len(stage_times), len(hops)
    prev: list[np.ndarray] = []
    for s in range(g):
        row: list[np.ndarray] = []
        for j in range(m):
            ready = row[j - 1] if j else np.zeros_like(stage_times[s][j])
            if s:
                ready = np.maximum(ready, prev[j] + hops[j])
            row.append(ready + stage_times[s][j])
        prev = row
    return prev[-1]


@dataclass
class PipelineStats:
    """Stage time used and offered over the steps a pipeline group ran."""

    num_stages: int
    num_steps: int = 0
    period_s: float = 0.0  # sum of step durations
    work_s: float = 0.0  # sum over steps and stages of stage compute time
    fill_s: float = 0.0  # extra time of the first step: makespan - period (charge_fill)

    @property
    def bubble_fraction(self) -> float:
        capacity = self.num_stages * self.period_s
        return 1.0 - self.work_s / capacity if capacity > 0 else 0.0


class PipelineCosting:
    """``Engine.costing`` for a group running its batch through pipeline stages (see module doc)."""

    def __init__(
        self,
        cost_model: StepCostBase,
        stage_layers: Sequence[int],
        link_bw: float | None = None,
        num_microbatches: int = 0,
        charge_fill: bool = False,
    ) -> None:
        if not stage_layers or min(stage_layers) < 1:
            raise ValueError(f"every stage needs at least one layer, got {list(stage_layers)}")
        self.cost_model = cost_model
        self.stage_layers = list(stage_layers)
        self.link_bw = link_bw
        self.num_microbatches = num_microbatches or len(stage_layers)
        self.stats = PipelineStats(len(stage_layers))
        self.last_work: np.ndarray = np.zeros(0)  # stage work of each step of the last call
        self._fill_pending = charge_fill  # the next step is the first: the stages are empty

    def _stage_kwargs(self) -> list[dict]:
        g = len(self.stage_layers)
        return [
            {"num_layers": n, "with_embed": s == 0, "with_head": s == g - 1}
            for s, n in enumerate(self.stage_layers)
        ]

    def step_time(self, out: SchedulerOutput) -> float:
        if out.is_pure_decode:
            return float(self.decode_run_times(out, 1)[0])
        shapes = mixed_microbatches(out, self.num_microbatches)
        cost = self.cost_model
        times = [
            [np.array([cost.step_time(sh, **kw)]) for sh in shapes] for kw in self._stage_kwargs()
        ]
        self._once_per_step(times)
        hops = [
            np.array([cost.activation_transfer_time(sh.num_tokens, self.link_bw)]) for sh in shapes
        ]
        period, self.last_work = cyclic_period(times, hops)
        self._charge_fill(period, times, hops)
        return float(period[0])

    def decode_run_times(self, out: SchedulerOutput, num_steps: int) -> np.ndarray:
        seqs, reads = decode_microbatches(out, self.num_microbatches)
        cost = self.cost_model
        times = [
            [cost.decode_run_times(n, c, num_steps, **kw) for n, c in zip(seqs, reads, strict=True)]
            for kw in self._stage_kwargs()
        ]
        self._once_per_step(times)
        hops = [np.full(num_steps, cost.activation_transfer_time(n, self.link_bw)) for n in seqs]
        period, self.last_work = cyclic_period(times, hops)
        self._charge_fill(period, times, hops)
        return period

    def _charge_fill(
        self, period: np.ndarray, times: list[list[np.ndarray]], hops: list[np.ndarray]
    ) -> None:
        """The group's first step lasts its fill makespan (module doc); later ones the period."""
        if not self._fill_pending:
            return
        self._fill_pending = False
        first = [[t[:1] for t in stage] for stage in times]
        makespan = float(fill_makespan(first, [h[:1] for h in hops])[0])
        if makespan > period[0]:
            self.stats.fill_s = makespan - float(period[0])
            period[0] = makespan

    def _once_per_step(self, times: list[list[np.ndarray]]) -> None:
        """Take the fixed step overhead back out of every stage-0 micro-batch but the first."""
        fixed = self.cost_model.overhead_time(BatchShape())
        for t in times[0][1:]:
            t -= fixed

    def record(self, num_steps: int, duration_s: float) -> None:
        """Account the steps the engine actually took from the last call (it may cut a run short)."""
        self.stats.num_steps += num_steps
        self.stats.period_s += duration_s
        self.stats.work_s += float(self.last_work[:num_steps].sum())
