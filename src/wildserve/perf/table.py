"""Step cost from measured operator tables (Vidur ``mlp.csv``), analytic for what was not measured.

Per-layer ops and the embedding are interpolated linearly in the token count between measured points
(exact at them) and scaled proportionally beyond the largest one; attention, collectives, LM head
and the step overhead come from :class:`StepCostBase` (no attention profiles exist).
"""

from __future__ import annotations

import numpy as np

from wildserve.errors import ConfigError
from wildserve.perf.analytic import LAYER_OPS, StepCostBase
from wildserve.perf.calibration import Efficiency
from wildserve.perf.gpus import GPUSpec
from wildserve.perf.models import ModelConfig
from wildserve.perf.profiles import OpCurve, Profile, builtin_profile

# Our GPU name -> Vidur's profile directory; a table is a measurement, so no family fallback.
PROFILED_GPUS = {"h100": "h100", "a100": "a100"}


def interpolate(curve: OpCurve, num_tokens: int) -> float:
    """Piecewise linear in tokens; beyond the last point time grows in proportion to tokens."""
    xs, ys = curve.num_tokens, curve.seconds
    if num_tokens >= xs[-1]:
        return float(ys[-1]) * num_tokens / float(xs[-1])
    return float(np.interp(num_tokens, xs, ys))


class TableCostModel(StepCostBase):
    """Cost model whose layer ops are the measured medians of one profile at one TP degree."""

    def __init__(
        self,
        model: ModelConfig,
        gpu: GPUSpec,
        tp: int = 1,
        efficiency: Efficiency | None = None,
        profile: Profile | None = None,
    ) -> None:
        super().__init__(model, gpu, tp, efficiency)
        if profile is None:
            if gpu.name not in PROFILED_GPUS:
                raise ConfigError(
                    f"no measured profiles for gpu '{gpu.name}'; the table model needs one of "
                    f"{', '.join(sorted(PROFILED_GPUS))} (use the analytic model instead)"
                )
            profile = builtin_profile(PROFILED_GPUS[gpu.name], model.hf_id)
        _check_shape(model, profile)
        if tp not in profile.curves:
            raise ConfigError(
                f"{profile.path}: no rows for tp={tp}; measured tp: {sorted(profile.curves)}"
            )
        self.profile = profile
        self._curves = profile.curves[tp]
        self._layer_ops = [op for op in LAYER_OPS if op in self._curves]

    def layer_op_times(self, num_tokens: int) -> dict[str, float]:
        if num_tokens <= 0:
            return {}
        return {op: interpolate(self._curves[op], num_tokens) for op in self._layer_ops}

    def embed_time(self, num_tokens: int) -> float:
        curve = self._curves.get("emb")
        return interpolate(curve, num_tokens) if curve is not None and num_tokens > 0 else 0.0


def _check_shape(model: ModelConfig, profile: Profile) -> None:
    """A table only describes the shape it was measured on: refuse a different model."""
    want = {
        "n_head": model.num_heads,
        "n_kv_head": model.num_kv_heads,
        "n_embd": model.hidden_size,
        "n_expanded_embd": model.mlp_width,
        "use_gated_mlp": model.gated_mlp,
    }
    for key, value in want.items():
        if profile.shape.get(key) != value:
            raise ConfigError(
                f"{profile.path}: field '{key}' is {profile.shape.get(key)}, "
                f"but model '{model.name}' has {value}"
            )
