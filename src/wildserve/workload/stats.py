"""One pass over a workload -> the numbers ``wildserve trace info`` shows (no rendering here)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from wildserve import metrics
from wildserve.blocks import trace_block_hashes
from wildserve.workload.request import Request

PERCENTILES = (50, 90, 99)


@dataclass
class TraceSummary:
    """Descriptive statistics of a workload; ``block_reuse`` is the infinite-cache prefix hit ratio."""

    num_requests: int = 0
    duration_s: float = 0.0  # last arrival - first arrival
    prompt_pcts: dict[str, float] = field(default_factory=dict)  # mean, p50, p90, p99, max
    output_pcts: dict[str, float] = field(default_factory=dict)
    num_sessions: int = 0  # distinct session ids (0: the trace has none)
    categories: Counter = field(default_factory=Counter)
    block_sizes: Counter = field(default_factory=Counter)  # trace block size -> requests
    num_prompt_blocks: int = 0  # full trace blocks over all prompts
    num_reused_blocks: int = 0  # of those, blocks whose whole prefix appeared in an earlier prompt

    @property
    def rate(self) -> float:
        """Mean arrival rate in requests/s (0 for fewer than two distinct arrival times)."""
        return (self.num_requests - 1) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def block_reuse(self) -> float | None:
        """Fraction of full prompt blocks seen before, or None when the trace has no block ids."""
        return self.num_reused_blocks / self.num_prompt_blocks if self.num_prompt_blocks else None


def _pcts(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    out = metrics.summarize(arr, PERCENTILES)
    out["max"] = float(arr.max())
    return out


def summarize(requests: Iterable[Request]) -> TraceSummary:
    """Summarize in one streaming pass; memory holds two ints per request and the seen-block set."""
    s = TraceSummary()
    prompts: list[int] = []
    outputs: list[int] = []
    sessions: set[int] = set()
    seen: set[int] = set()
    first = last = 0.0
    for r in requests:
        if not s.num_requests:
            first = r.arrival_s
        last = r.arrival_s
        s.num_requests += 1
        prompts.append(r.prompt_tokens)
        outputs.append(r.output_tokens)
        if r.session_id is not None:
            sessions.add(r.session_id)
        if r.category is not None:
            s.categories[r.category] += 1
        if r.hash_ids and r.block_size > 0:
            s.block_sizes[r.block_size] += 1
            # chained at the trace's own block size: a block counts only if its whole prefix recurs
            chain = trace_block_hashes(r.hash_ids, r.block_size, r.prompt_tokens, r.block_size)
            s.num_prompt_blocks += len(chain)
            for h in chain:
                if h in seen:
                    s.num_reused_blocks += 1
                else:
                    seen.add(h)
    s.duration_s = last - first
    s.prompt_pcts, s.output_pcts = _pcts(prompts), _pcts(outputs)
    s.num_sessions = len(sessions)
    return s
