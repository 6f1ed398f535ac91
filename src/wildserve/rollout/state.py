"""One sequence being generated: its tokens, recorded log-probabilities and lifecycle status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum


class SeqStatus(IntEnum):
    """Every member after RUNNING is finished."""

    RUNNING = 0
    FINISHED_STOPPED = 1  # emitted a stop token
    FINISHED_LENGTH = 2  # hit max_new_tokens

    @property
    def is_finished(self) -> bool:
        return self > SeqStatus.RUNNING


@dataclass(slots=True)
class SeqState:
    """A prompt and its response so far; drafters read ``tokens`` and ``output``."""

    seq_id: int  # unique within one generate() call
    prompt_id: int  # the same problem across epochs and samples: the history drafter's key
    prompt: list[int]
    output: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # the target's, one per output token
    status: SeqStatus = SeqStatus.RUNNING
    num_target_forwards: int = 0  # verification passes this sequence took part in

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    def append(
        self,
        tokens: Sequence[int],
        logprobs: Sequence[float],
        stop_ids: frozenset[int],
        max_new_tokens: int,
    ) -> int:
        """Add emitted tokens, cutting at a stop token or the length cap; returns how many were kept."""
        assert self.status == SeqStatus.RUNNING, f"sequence {self.seq_id} already finished"
        kept = 0
        for tok, lp in zip(tokens, logprobs, strict=True):
            self.output.append(tok)
            self.logprobs.append(lp)
            kept += 1
            if tok in stop_ids:
                self.status = SeqStatus.FINISHED_STOPPED
                break
            if len(self.output) >= max_new_tokens:
                self.status = SeqStatus.FINISHED_LENGTH
                break
        return kept
