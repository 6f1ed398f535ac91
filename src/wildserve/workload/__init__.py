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
from wildserve.workload.synthetic import LengthDist, SyntheticConfig, synthetic_workload
from wildserve.workload.transforms import limit, poisson_retime, rate_scale, sample, window

__all__ = [
    "BUILTINS",
    "DEFAULT_TRACE",
    "FORMATS",
    "LengthDist",
    "Request",
    "SyntheticConfig",
    "iter_trace",
    "limit",
    "load_trace",
    "poisson_retime",
    "rate_scale",
    "renumber",
    "sample",
    "synthetic_workload",
    "window",
]
