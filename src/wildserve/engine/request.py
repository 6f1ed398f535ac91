"""A request's life inside one engine: one status enum, transitions that check where they start."""

from __future__ import annotations

import enum
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np

from wildserve.engine.hash_index import as_hashes


class RequestStatus(enum.IntEnum):
    """Every status after PREEMPTED is a finished one, so ``is_finished`` is one comparison."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED_LENGTH = 3  # produced its requested number of output tokens
    FINISHED_ABORTED = 4  # cancelled by the client or the driver

    @property
    def is_finished(self) -> bool:
        return self > RequestStatus.PREEMPTED


class EngineRequest:
    """Scheduling state of one request on one engine (vLLM's ``Request``)."""

    __slots__ = (
        "arrival_s",
        "block_hashes",
        "block_ids",
        "category_id",
        "engine_id",
        "finish_s",
        "first_scheduled_s",
        "first_token_s",
        "max_output_tokens",
        "num_cached_blocks",
        "num_computed_tokens",
        "num_hit_tokens",
        "num_output_tokens",
        "num_preemptions",
        "num_prompt_tokens",
        "past_token_times",
        "queued_prefill_tokens",
        "request_id",
        "source",
        "status",
        "token_ids",
        "token_runs",
    )

    def __init__(
        self,
        request_id: int | str,
        arrival_s: float,
        num_prompt_tokens: int,
        max_output_tokens: int,
        block_hashes: Sequence[int] = (),
        category_id: int = 0,
        source: Any = None,
        token_ids: Sequence[int] | None = None,
    ) -> None:
        if num_prompt_tokens < 1:
            raise ValueError(f"request {request_id}: prompt must have at least one token")
        self.request_id = request_id
        self.arrival_s = arrival_s
        self.num_prompt_tokens = num_prompt_tokens
        # Every request yields at least one token: that token is what TTFT measures.
        self.max_output_tokens = max(1, max_output_tokens)
        # chained hashes of the prompt's full blocks, as the int64 array the block pool takes (held
        # once per request: converting a list per pool call was a tenth of the simulator's time)
        self.block_hashes: np.ndarray = as_hashes(block_hashes)
        self.category_id = category_id
        self.source = source  # the workload request this came from, for metrics by category
        self.token_ids = (
            token_ids  # the prompt's tokens when known (an emulated server's KV events)
        )
        self.status = RequestStatus.WAITING
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        # the blocks it holds, in prefix order: int64 words the block pool reads without converting
        self.block_ids: array = array("q")
        self.num_cached_blocks = 0  # leading blocks of block_ids registered in the prefix cache
        self.num_hit_tokens = -1  # prompt tokens served from the prefix cache at first admission
        self.queued_prefill_tokens = 0  # uncached prompt tokens not yet computed (set when queued)
        self.num_preemptions = 0
        self.first_scheduled_s = -1.0
        self.first_token_s = -1.0
        self.finish_s = -1.0
        # Output tokens were produced at the engine's step-log entries [a, b) for each pair (a, b).
        self.token_runs: array = array("q")
        self.engine_id = -1  # instance whose step log ``token_runs`` refers to
        self.past_token_times: list[float] = []  # tokens produced on engines it moved away from

    @property
    def num_tokens(self) -> int:
        """Prompt plus the output tokens produced so far: what must sit in KV to decode the next."""
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def in_prefill(self) -> bool:
        """True until the KV cache catches up with every token the request has."""
        return self.num_computed_tokens < self.num_tokens - 1 or self.num_output_tokens == 0

    def record_tokens(self, first_step: int, num_steps: int) -> None:
        """Note one output token at each of ``num_steps`` consecutive step-log entries."""
        runs = self.token_runs
        if runs and runs[-1] == first_step:
            runs[-1] = first_step + num_steps
        else:
            runs.append(first_step)
            runs.append(first_step + num_steps)

    def token_times(self, step_end_s: Sequence[float]) -> list[float]:
        """Wall or virtual time of every output token, from the (current) engine's step log."""
        runs = self.token_runs
        out: list[float] = list(self.past_token_times)
        for i in range(0, len(runs), 2):
            out.extend(step_end_s[runs[i] : runs[i + 1]])
        return out

    def freeze_token_times(self, step_end_s: Sequence[float]) -> None:
        """Turn the step-log references into times before the request moves to another engine."""
        self.past_token_times = self.token_times(step_end_s)
        self.token_runs = array("q")

    def __repr__(self) -> str:
        return (
            f"EngineRequest({self.request_id!r}, {self.status.name}, prompt={self.num_prompt_tokens}, "
            f"out={self.num_output_tokens}/{self.max_output_tokens}, computed={self.num_computed_tokens})"
        )
