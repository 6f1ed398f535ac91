"""A transparent affine step-cost model: hand-computable times for tests and what-if studies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wildserve.perf.batch import BatchShape


@dataclass(frozen=True)
class LinearCostModel:
    """``step = base + per_token * tokens + per_pair * prefill pairs + per_ctx * decode context``."""

    base_s: float = 0.005
    per_token_s: float = 50e-6
    per_attn_pair_s: float = 0.0
    per_decode_ctx_s: float = 0.0

    def step_time(self, shape: BatchShape) -> float:
        return (
            self.base_s
            + self.per_token_s * shape.num_tokens
            + self.per_attn_pair_s * shape.prefill_attn_pairs
            + self.per_decode_ctx_s * shape.decode_ctx_tokens
        )

    def decode_run_times(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> np.ndarray:
        ctx = ctx_tokens + num_seqs * np.arange(num_steps, dtype=np.float64)
        return self.base_s + self.per_token_s * num_seqs + self.per_decode_ctx_s * ctx
