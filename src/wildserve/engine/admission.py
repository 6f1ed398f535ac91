"""Why waiting requests stayed waiting: one record per engine step, time-weighted on demand.

Every ``Engine.step`` that runs something appends (start, duration, steps, blocker, tokens): a
fast-forwarded decode run is one record of ``num_steps`` identical steps, all with the same blocker.
Step counts per blocker therefore always sum to the engine's number of steps, and a blocker's *time*
is the step time spent with it, so "blocked on KV 90 % of step time" is a statement about the steps
the engine ran, not about idle gaps between them.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from wildserve.engine.scheduler import AdmissionBlocker

BLOCKERS = tuple(AdmissionBlocker)


class AdmissionLog:
    """Per-step admission blockers of one engine, with the step's share of its token budget."""

    __slots__ = ("blocker", "budget", "duration_s", "num_steps", "num_tokens", "start_s")

    def __init__(self) -> None:
        self.start_s = array("d")
        self.duration_s = array("d")
        self.num_steps = array("q")
        self.blocker = array("b")
        self.num_tokens = array("q")  # tokens computed by the record's steps together
        self.budget = array("q")  # the token budget of one of its steps

    def record(
        self,
        start_s: float,
        duration_s: float,
        num_steps: int,
        blocker: AdmissionBlocker,
        num_tokens: int,
        budget: int,
    ) -> None:
        self.start_s.append(start_s)
        self.duration_s.append(duration_s)
        self.num_steps.append(num_steps)
        self.blocker.append(int(blocker))
        self.num_tokens.append(num_tokens)
        self.budget.append(budget)

    def __len__(self) -> int:
        return len(self.start_s)

    def step_counts(self) -> dict[str, int]:
        """Steps taken under each blocker (they sum to every step the engine ran)."""
        steps = np.frombuffer(self.num_steps, dtype=np.int64) if len(self) else np.zeros(0, int)
        codes = np.frombuffer(self.blocker, dtype=np.int8) if len(self) else np.zeros(0, int)
        return {b.name.lower(): int(steps[codes == b].sum()) for b in BLOCKERS}


def blocker_time(
    logs: Sequence[AdmissionLog], edges: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Step time per (window, blocker) and budget-weighted time, over the windows ``edges`` bound.

    Returns ``(time, budget_time)``: ``time[w, b]`` is the step time of every engine in window
    ``[edges[w], edges[w+1])`` spent under blocker ``b``; ``budget_time[w]`` sums step time times the
    share of the token budget the step used, so ``budget_time / time.sum(1)`` is the mean budget use.
    A record overlapping a window edge is split in proportion to its overlap. One engine's records
    never overlap (it steps sequentially), so each edge needs one binary search per engine.
    """
    edges = np.asarray(edges, dtype=float)
    nb = len(BLOCKERS)
    if len(edges) < 2:
        return np.zeros((0, nb)), np.zeros(0)
    time = np.zeros((len(edges) - 1, nb))
    used = np.zeros(len(edges) - 1)
    for log in logs:
        if not len(log):
            continue
        start = np.frombuffer(log.start_s, dtype=np.float64)
        dur = np.frombuffer(log.duration_s, dtype=np.float64)
        codes = np.frombuffer(log.blocker, dtype=np.int8).astype(np.int64)
        steps = np.frombuffer(log.num_steps, dtype=np.int64)
        share = np.frombuffer(log.num_tokens, dtype=np.int64) / np.maximum(
            1, steps * np.frombuffer(log.budget, dtype=np.int64)
        )
        # cumulative time before each record, per blocker and budget-weighted
        onehot = np.zeros((len(dur), nb))
        onehot[np.arange(len(dur)), codes] = dur
        before = np.vstack([np.zeros(nb), np.cumsum(onehot, axis=0)])
        before_used = np.concatenate(([0.0], np.cumsum(dur * share)))
        # F(x): time in [0, x) = records ending by x + the part of the one running at x
        i = np.searchsorted(start, edges, side="left")  # records starting before x: [0, i)
        last = np.maximum(i - 1, 0)
        part = np.where(i > 0, np.clip(edges - start[last], 0.0, dur[last]), 0.0)
        full = np.where(i > 0, last, 0)  # records [0, i - 1) are wholly before x
        f = before[full].copy()
        f[np.arange(len(edges)), codes[last]] += part
        fu = before_used[full] + part * share[last]
        time += np.diff(f, axis=0)
        used += np.diff(fu)
    return time, used
