"""Seeded arrivals: one meaning of ``--seed`` for every trace.

Traces whose reader places sessions itself (WEKA's sessions carry no absolute start) take the seed as
their reader option ``seed``: it draws the Poisson session starts. Traces with recorded arrival times
(Mooncake, Azure, Bailian) keep them when no seed is given; with a seed they are re-timed as a Poisson
process at the trace's own mean rate (sessions start at Poisson times and keep their internal gaps,
see ``poisson_retime``). Either way a seed changes arrival times and nothing else: the same requests
with the same tokens, prefixes and sessions.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from wildserve.errors import ConfigError
from wildserve.workload.formats import load_trace, resolve_spec
from wildserve.workload.request import Request
from wildserve.workload.transforms import poisson_retime


def reader_takes_seed(spec: str) -> bool:
    """True if the trace's reader draws arrivals itself from a ``seed`` option."""
    fmt, _, _ = resolve_spec(spec)
    return "seed" in inspect.signature(fmt.read).parameters


def load_seeded(
    spec: str, seed: int | None = None, options: dict[str, Any] | None = None
) -> list[Request]:
    """Load a trace with seeded arrivals (None: the trace's recorded or default arrivals).

    ``options`` are reader options (``-o KEY=VALUE``); a ``seed`` among them must agree with ``seed``.
    """
    options = dict(options or {})
    if seed is not None and seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if not reader_takes_seed(spec):
        requests = load_trace(spec, **options)
        if seed is None or len(requests) < 2:
            return requests
        span = requests[-1].arrival_s - requests[0].arrival_s
        if span <= 0:
            raise ConfigError(f"trace {spec}: every request arrives at once; no rate to re-time at")
        rate = (len(requests) - 1) / span
        return poisson_retime(requests, rate, np.random.default_rng(seed))
    if seed is not None:
        if "seed" in options and options["seed"] != seed:
            raise ConfigError(f"--seed {seed} contradicts the reader option seed={options['seed']}")
        options = {**options, "seed": seed}
    return load_trace(spec, **options)
