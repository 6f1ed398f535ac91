"""Workloads: trace readers (Mooncake, Qwen-Bailian, WEKA, Azure) -> Request, transforms, synthetic."""

from wildserve.workload.formats import (
    BUILTINS,
    DEFAULT_TRACE,
    FORMATS,
    iter_trace,
    load_trace,
    renumber,
)
from wildserve.workload.request import Request

__all__ = [
    "BUILTINS",
    "DEFAULT_TRACE",
    "FORMATS",
    "Request",
    "iter_trace",
    "load_trace",
    "renumber",
]
