"""Pick a step-cost model by name: ``analytic`` (any model and GPU) or ``table`` (profiled pairs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wildserve.perf.analytic import AnalyticCostModel, StepCostBase
from wildserve.perf.calibration import Efficiency
from wildserve.perf.gpus import GPUSpec, get_gpu
from wildserve.perf.models import ModelConfig, get_model
from wildserve.perf.table import TableCostModel
from wildserve.registry import Registry


@dataclass
class CostModelSpec:
    """Which step-time model to build: a model on a GPU type at a tensor-parallel degree (the
    fields every instance config starts with, e.g. ``engine.cluster.ClusterConfig``)."""

    model: str = field(
        default="qwen2.5-7b", metadata={"help": "model name (see `wildserve perf models`)"}
    )
    gpu: str = field(default="h20", metadata={"help": "GPU name: h100, h200, h20, a100, a800"})
    tp: int = field(default=1, metadata={"help": "tensor-parallel GPUs per instance", "ge": 1})
    cost_model: str = field(
        default="analytic",
        metadata={"help": "step-time model: analytic, or table (Vidur profiles)"},
    )


COST_MODELS: Registry[type[StepCostBase]] = Registry("cost model")
COST_MODELS.add("analytic", AnalyticCostModel)
COST_MODELS.add("table", TableCostModel)


def build_cost_model(
    kind: str,
    model: ModelConfig | str,
    gpu: GPUSpec | str,
    tp: int = 1,
    efficiency: Efficiency | None = None,
) -> StepCostBase:
    """A cost model of ``kind`` for ``model`` on ``gpu`` (names or objects) with ``tp`` GPUs."""
    cfg = get_model(model) if isinstance(model, str) else model
    spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    return COST_MODELS.get(kind)(cfg, spec, tp, efficiency)
