"""Model shapes, GPU specs and the step-time models the engine asks how long a batch takes."""

from wildserve.perf.analytic import AnalyticCostModel
from wildserve.perf.batch import BatchShape, StepCostModel
from wildserve.perf.calibration import Efficiency, get_calibration
from wildserve.perf.cost import COST_MODELS, build_cost_model
from wildserve.perf.gpus import GPUS, GPUSpec, get_gpu
from wildserve.perf.memory import KVCapacity, MemoryConfig, kv_capacity
from wildserve.perf.models import MODELS, ModelConfig, get_model
from wildserve.perf.table import TableCostModel

__all__ = [
    "COST_MODELS",
    "GPUS",
    "MODELS",
    "AnalyticCostModel",
    "BatchShape",
    "Efficiency",
    "GPUSpec",
    "KVCapacity",
    "MemoryConfig",
    "ModelConfig",
    "StepCostModel",
    "TableCostModel",
    "build_cost_model",
    "get_calibration",
    "get_gpu",
    "get_model",
    "kv_capacity",
]
