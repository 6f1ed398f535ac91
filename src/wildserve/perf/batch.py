"""What one engine step computes, reduced to the sums a step-time model needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(slots=True)
class BatchShape:
    """Aggregate shape of one forward pass mixing prefill chunks and decodes.

    For a prefill chunk of ``q`` new tokens after ``c`` tokens already in KV (cached prefix or earlier
    chunks), attention scores ``q*c + q*(q+1)/2`` query-key pairs and reads ``c`` tokens of KV. A decode
    of a sequence with ``c`` tokens in KV is a chunk with ``q = 1``.
    """

    num_prefill_tokens: int = 0  # new tokens of sequences still in prefill
    num_prefill_seqs: int = 0
    prefill_attn_pairs: float = 0.0  # sum over prefill chunks of q*c + q*(q+1)/2
    prefill_ctx_tokens: int = 0  # sum over prefill chunks of c (KV read from earlier tokens)
    num_decode_tokens: int = 0  # one per decoding sequence
    decode_ctx_tokens: int = 0  # sum over decodes of tokens attended (KV read)
    num_sampled: int = 0  # sequences that sample a token this step (LM head rows)

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens

    def add_chunk(self, new_tokens: int, context_tokens: int, samples: bool) -> None:
        """Add one sequence's work: ``new_tokens`` computed on top of ``context_tokens`` in KV."""
        if new_tokens == 1 and context_tokens > 0 and samples:
            self.num_decode_tokens += 1
            self.decode_ctx_tokens += context_tokens + 1
        else:
            self.num_prefill_tokens += new_tokens
            self.num_prefill_seqs += 1
            self.prefill_attn_pairs += (
                new_tokens * context_tokens + new_tokens * (new_tokens + 1) / 2
            )
            self.prefill_ctx_tokens += context_tokens
        if samples:
            self.num_sampled += 1


class StepCostModel(Protocol):
    """Seconds one engine step takes; the only place latency numbers come from."""

    def step_time(self, shape: BatchShape) -> float:
        """Duration of one step of the whole model (all layers, embedding and LM head)."""
        ...

    def decode_run_times(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> np.ndarray:
        """Durations of ``num_steps`` consecutive pure-decode steps of ``num_seqs`` sequences.

        ``ctx_tokens`` is the KV tokens attended in the first step (sum over sequences, each counting
        the token being decoded); it grows by ``num_seqs`` every step.
        """
        ...
