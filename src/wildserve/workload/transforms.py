"""Composable workload transforms: rate scaling, Poisson re-timing, windows, sampling, limits, outputs.

Each takes requests in arrival order and returns them in arrival order. Transforms that change a time
yield copies, so a loaded trace can be reused unchanged; none renumbers ids (``renumber`` does that).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator

import numpy as np

from wildserve.errors import ConfigError
from wildserve.workload.formats import renumber
from wildserve.workload.lengths import LengthDist
from wildserve.workload.request import Request


def _unit(request: Request) -> object:
    """Sampling / re-timing unit: the session when there is one, otherwise the request itself."""
    return (
        ("s", request.session_id) if request.session_id is not None else ("r", request.request_id)
    )


def rate_scale(requests: Iterable[Request], factor: float) -> Iterator[Request]:
    """Divide every inter-arrival time by ``factor`` (2.0 = twice the load); the first arrival stays."""
    if not factor > 0:
        raise ConfigError(f"rate_scale factor must be > 0, got {factor}")
    first: float | None = None
    for r in requests:
        if first is None:
            first = r.arrival_s
        yield (
            r
            if factor == 1.0
            else dataclasses.replace(r, arrival_s=first + (r.arrival_s - first) / factor)
        )


def poisson_retime(
    requests: Iterable[Request],
    rate: float,
    rng: np.random.Generator,
    keep_session_gaps: bool = True,
) -> list[Request]:
    """Re-time a workload as a Poisson process at ``rate`` requests/s, keeping per-session order.

    With ``keep_session_gaps`` (default), sessions start at Poisson times at ``rate * sessions /
    requests`` (the first at 0) and every follow-up turn keeps its recorded offset from its session's
    first turn (think time plus the recorded service time), so the average rate is ``rate`` while
    bursts inside a session stay as recorded. Without it, the i-th request in arrival order gets the
    i-th point of one Poisson process (the first at 0): exact Poisson arrivals, order kept, recorded
    gaps lost. A request without a session is its own one-request session. Returns a renumbered list.
    """
    if not rate > 0:
        raise ConfigError(f"poisson rate must be > 0, got {rate}")
    reqs = sorted(requests, key=lambda r: r.arrival_s)
    if not reqs:
        return []
    if not keep_session_gaps:
        times = np.concatenate(([0.0], np.cumsum(rng.exponential(1.0 / rate, len(reqs) - 1))))
        return renumber(
            dataclasses.replace(r, arrival_s=float(t)) for r, t in zip(reqs, times, strict=True)
        )
    first_of: dict[object, float] = {}
    for r in reqs:
        first_of.setdefault(_unit(r), r.arrival_s)  # dicts keep insertion = first-arrival order
    unit_rate = rate * len(first_of) / len(reqs)
    gaps = rng.exponential(1.0 / unit_rate, len(first_of) - 1)
    start = dict(zip(first_of, np.concatenate(([0.0], np.cumsum(gaps))).tolist(), strict=True))
    return renumber(
        dataclasses.replace(r, arrival_s=start[u] + (r.arrival_s - first_of[u]))
        for r in reqs
        for u in (_unit(r),)
    )


def window(
    requests: Iterable[Request],
    start_s: float = 0.0,
    end_s: float = float("inf"),
    rebase: bool = True,
) -> Iterator[Request]:
    """Requests arriving in ``[start_s, end_s)``, shifted to start at 0 when ``rebase``.

    Stops reading at the first arrival at or after ``end_s`` (input is in arrival order), so a window
    at the head of a large file costs only that head.
    """
    if end_s < start_s:
        raise ConfigError(f"window end {end_s} is before its start {start_s}")
    for r in requests:
        if r.arrival_s >= end_s:
            return
        if r.arrival_s >= start_s:
            yield (
                dataclasses.replace(r, arrival_s=r.arrival_s - start_s) if rebase and start_s else r
            )


def sample(
    requests: Iterable[Request],
    rng: np.random.Generator,
    fraction: float | None = None,
    count: int | None = None,
) -> Iterator[Request]:
    """Keep a seeded random subset of units: whole sessions when requests have sessions, else requests.

    ``fraction`` streams (one draw per unit, in order of first appearance); ``count`` keeps exactly
    ``count`` units chosen uniformly without replacement (the input is materialized to count them).
    """
    if (fraction is None) == (count is None):
        raise ConfigError("sample needs exactly one of fraction or count")
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"sample fraction must be in [0, 1], got {fraction}")
        return _sample_fraction(requests, rng, fraction)
    if count < 0:
        raise ConfigError(f"sample count must be >= 0, got {count}")
    return _sample_count(list(requests), rng, count)


def _sample_fraction(
    requests: Iterable[Request], rng: np.random.Generator, fraction: float
) -> Iterator[Request]:
    keep: dict[object, bool] = {}
    for r in requests:
        u = _unit(r)
        decision = keep.get(u)
        if decision is None:
            decision = keep[u] = bool(rng.random() < fraction)
        if decision:
            yield r


def _sample_count(reqs: list[Request], rng: np.random.Generator, count: int) -> Iterator[Request]:
    units = list(dict.fromkeys(_unit(r) for r in reqs))
    if count > len(units):
        kind = "sessions" if any(r.session_id is not None for r in reqs) else "requests"
        raise ConfigError(f"sample count {count} exceeds the {len(units)} {kind} in the trace")
    chosen = {units[i] for i in rng.choice(len(units), size=count, replace=False).tolist()}
    return (r for r in reqs if _unit(r) in chosen)


def limit(requests: Iterable[Request], n: int) -> Iterator[Request]:
    """The first ``n`` requests."""
    if n < 0:
        raise ConfigError(f"limit must be >= 0, got {n}")
    return itertools.islice(requests, n)


def burst(
    requests: Iterable[Request], start_s: float, duration_s: float, factor: float
) -> list[Request]:
    """Multiply the load of ``[start_s, start_s + duration_s)`` by ``factor`` by replicating requests.

    Each request arriving in the window gets copies arriving with it: ``factor - 1`` of them on
    average, spread evenly (no randomness) when ``factor`` is fractional. A copy's prefix ids and
    session are shifted so copies share prefixes only among themselves (the k-th copies of two
    requests share what the originals share), never with an original; a copy has no parent.
    Returns a renumbered list of new objects (the input is left unchanged).
    """
    if not factor >= 1.0:
        raise ConfigError(f"burst factor must be >= 1, got {factor}")
    if duration_s < 0:
        raise ConfigError(f"burst duration must be >= 0, got {duration_s}")
    reqs = [dataclasses.replace(r) for r in requests]
    next_id = 1 + max((r.request_id for r in reqs), default=0)
    id_stride = 1 + max((max(r.hash_ids, default=0) for r in reqs), default=0)
    session_stride = 1 + max((r.session_id or 0 for r in reqs), default=0)
    out: list[Request] = []
    extra = factor - 1.0
    k = 0  # requests seen in the window so far
    end = start_s + duration_s
    for r in reqs:
        out.append(r)
        if not start_s <= r.arrival_s < end:
            continue
        copies = int((k + 1) * extra + 1e-9) - int(k * extra + 1e-9)
        k += 1
        for c in range(1, copies + 1):
            out.append(
                dataclasses.replace(
                    r,
                    request_id=next_id,
                    parent_id=None,
                    hash_ids=tuple(h + c * id_stride for h in r.hash_ids),
                    session_id=None if r.session_id is None else r.session_id + c * session_stride,
                    extra={**r.extra, "burst_copy": c},
                )
            )
            next_id += 1
    return renumber(out)


def scale_outputs(
    requests: Iterable[Request], factor: float = 1.0, cap: int | None = None
) -> Iterator[Request]:
    """Multiply every output length by ``factor`` (rounded, at least 1), then cap it at ``cap``.

    Turns a prompt-heavy trace decode-heavy while keeping its arrivals and prompts; with ``factor``
    1 and a ``cap`` it only truncates long outputs.
    """
    if not factor > 0:
        raise ConfigError(f"output scale factor must be > 0, got {factor}")
    if cap is not None and cap < 1:
        raise ConfigError(f"output cap must be >= 1, got {cap}")
    return _scaled_outputs(requests, factor, cap)


def _scaled_outputs(
    requests: Iterable[Request], factor: float, cap: int | None
) -> Iterator[Request]:
    for r in requests:
        n = max(1, round(r.output_tokens * factor)) if factor != 1.0 else r.output_tokens
        if cap is not None:
            n = min(n, cap)
        yield r if n == r.output_tokens else dataclasses.replace(r, output_tokens=n)


def resample_outputs(
    requests: Iterable[Request], dist: LengthDist, rng: np.random.Generator
) -> Iterator[Request]:
    """Replace every output length by a draw from ``dist`` (one draw per request, in order)."""
    for r in requests:
        yield dataclasses.replace(r, output_tokens=max(1, int(dist.sample(rng, 1)[0])))
