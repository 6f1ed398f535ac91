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
    A record overlapping a window edge is split in proportion to its overlap.
    """
    edges = np.asarray(edges, dtype=float)
    nwin = len(edges) - 1
    time = np.zeros((max(nwin, 0), len(BLOCKERS)))
    used = np.zeros(max(nwin, 0))
    if nwin < 1:
        return time, used
    for log in logs:
        if not len(log):
            continue
        start = np.frombuffer(log.start_s, dtype=np.float64)
        end = start + np.frombuffer(log.duration_s, dtype=np.float64)
        codes = np.frombuffer(log.blocker, dtype=np.int8).astype(np.int64)
        steps = np.frombuffer(log.num_steps, dtype=np.int64)
        share = np.frombuffer(log.num_tokens, dtype=np.int64) / np.maximum(
            1, steps * np.frombuffer(log.budget, dtype=np.int64)
        )
        for w in range(nwin):
            lo, hi = edges[w], edges[w + 1]
            overlap = np.clip(np.minimum(end, hi) - np.maximum(start, lo), 0.0, None)
            if not overlap.any():
                continue
            time[w] += np.bincount(codes, weights=overlap, minlength=len(BLOCKERS))
            used[w] += float((overlap * share).sum())
    return time, used
