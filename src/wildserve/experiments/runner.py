"""One sweep runner for every experiment: plain run specs in, one outcome per run out, on any executor.

A sweep is a list of :class:`RunSpec`: a key, the run function's import path, its plain (JSON)
parameters and the names of the shared inputs (whole traces) it reads. A run is a pure function of
its spec: ``fn(params, *inputs)``, seeded through ``params``. Finished runs go to the run cache
under the spec's fingerprint as soon as each one returns (written here, in the driver, so a cluster
needs no shared disk), so a sweep killed at any point resumes where it stopped and never recomputes
a finished run. Executors: :class:`LocalExecutor` (worker processes on this machine) and
``RayExecutor`` (``wildserve.experiments.ray_executor``: one Ray task per run, on a cluster). A run
that raises is retried once, then reported with its spec and traceback; the others go on.
"""

from __future__ import annotations

import hashlib
import importlib
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from wildserve.errors import WildserveError
from wildserve.experiments.runcache import RunCache, fingerprint
from wildserve.metrics import RequestMetrics

_JSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
ATTEMPTS = 2  # a failed run is retried once
_FORMAT = 2  # bump when what a cached run holds changes


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep; everything that shapes its result is in ``fn`` and ``params``.

    ``params`` must also determine the shared ``inputs`` (name the trace, its seed and its slice in
    them): the inputs are not hashed, the spec is.
    """

    key: str  # unique in its sweep, for progress and reports
    fn: str  # "package.module:function", importable on every worker
    params: Mapping[str, Any]  # plain JSON values
    inputs: tuple[str, ...] = ()  # names of shared objects, passed after params in this order
    num_cpus: float = 1.0  # what a Ray task of this run requests
    code: tuple[str, ...] = ()  # more modules whose source shapes the result (beside fn's own)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "fn": self.fn, "params": self.params, "inputs": list(self.inputs)}

    def fingerprint(self) -> str:
        """Key of the run cache: the function, its module's source, the parameters, the core's code."""
        return fingerprint(
            {
                "format": _FORMAT,
                "fn": self.fn,
                "code": [_module_digest(m) for m in (self.fn.partition(":")[0], *self.code)],
                "params": self.params,
                "inputs": list(self.inputs),
            }
        )


@dataclass
class RunResult:
    """What a run function may return: a JSON value, and request metrics kept beside it."""

    value: Any
    metrics: RequestMetrics | None = None


@dataclass
class RunOutcome:
    """A run's result, or its error after every attempt; ``wall_s``/``cpu_s`` of the computing run."""

    spec: RunSpec
    value: Any = None
    metrics: RequestMetrics | None = None
    cached: bool = False
    error: str | None = None  # the last attempt's traceback
    attempts: int = 1
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class SweepFailed(WildserveError):
    """Runs failed after their retry; the finished ones are in the run cache (rerun to resume)."""

    def __init__(self, failed: Sequence[RunOutcome]) -> None:
        first = failed[0]
        lines = [f"{len(failed)} run(s) failed after {first.attempts} attempts:"]
        for o in failed:
            lines.append(f"  {o.spec.key}: {orjson.dumps(o.spec.to_json(), option=_JSON).decode()}")
        lines.append(f"first traceback ({first.spec.key}):\n{first.error}")
        super().__init__("\n".join(lines))
        self.failed = list(failed)


@dataclass
class SweepResult:
    """Every run's outcome in spec order, and how many were computed, read from the cache or failed."""

    outcomes: dict[str, RunOutcome] = field(default_factory=dict)
    wall_s: float = 0.0

    def __getitem__(self, key: str) -> RunOutcome:
        return self.outcomes[key]

    @property
    def num_computed(self) -> int:
        return sum(o.ok and not o.cached for o in self.outcomes.values())

    @property
    def num_cached(self) -> int:
        return sum(o.cached for o in self.outcomes.values())

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes.values() if not o.ok]

    def value(self, key: str) -> Any:
        outcome = self.outcomes[key]
        if not outcome.ok:
            raise SweepFailed([outcome])
        return outcome.value

    def raise_on_failure(self) -> SweepResult:
        if self.failed:
            raise SweepFailed(self.failed)
        return self

    def to_json(self) -> bytes:
        """The results alone (no timings), deterministic: the same sweep gives the same bytes anywhere."""
        runs = [
            {
                "spec": o.spec.to_json(),
                "value": o.value,
                "metrics_sha256": metrics_digest(o.metrics),
                "error": None if o.ok else o.error.strip().splitlines()[-1],
            }
            for o in self.outcomes.values()
        ]
        return orjson.dumps({"runs": runs}, option=_JSON | orjson.OPT_INDENT_2) + b"\n"


def metrics_digest(metrics: RequestMetrics | None) -> str | None:
    if metrics is None:
        return None
    h = hashlib.sha256()
    for name in RequestMetrics.__dataclass_fields__:
        h.update(name.encode())
        h.update(np.ascontiguousarray(getattr(metrics, name)).tobytes())
    return h.hexdigest()


class Executor(Protocol):
    """Runs specs and calls ``on_done`` in the driver as each finishes (any order)."""

    name: str

    def run(
        self,
        specs: Sequence[RunSpec],
        shared: Mapping[str, Any],
        on_done: Callable[[RunOutcome], None],
        on_progress: Callable[[str, int, int], None] | None,
    ) -> None: ...


def run_sweep(
    specs: Sequence[RunSpec],
    shared: Mapping[str, Any] | None = None,
    executor: Executor | int = 1,
    cache: RunCache | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> SweepResult:
    """Run every spec not already in ``cache``; ``on_progress(key, 1, 1)`` marks each finished run.

    Returns every outcome (failures included: call :meth:`SweepResult.raise_on_failure`).
    """
    shared = shared or {}
    executor = as_executor(executor)
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise WildserveError(f"sweep has the key '{dup}' twice")
    for s in specs:
        missing = [n for n in s.inputs if n not in shared]
        if missing:
            raise WildserveError(f"run {s.key}: shared input(s) {', '.join(missing)} not given")
    t0 = time.perf_counter()
    done: dict[str, RunOutcome] = {}
    todo = []
    fps = {s.key: s.fingerprint() for s in specs} if cache is not None else {}
    for s in specs:
        hit = cache.get(fps[s.key]) if cache is not None else None
        if hit is None:
            todo.append(s)
            continue
        record, metrics = hit
        if "value" not in record:  # a read-only cache's miss: nothing runs, its summary stands in
            done[s.key] = RunOutcome(s, record, None)
            continue
        done[s.key] = RunOutcome(
            s, record["value"], metrics, True, wall_s=record["wall_s"], cpu_s=record["cpu_s"]
        )
        if on_progress is not None:
            on_progress(s.key, 1, 1)

    def finished(outcome: RunOutcome) -> None:
        key = outcome.spec.key
        if outcome.ok:
            # the value as the cache gives it back, so a fresh run and a cached one are alike
            outcome.value = orjson.loads(orjson.dumps(outcome.value, option=_JSON))
            if cache is not None:
                record = {"value": outcome.value, "wall_s": outcome.wall_s, "cpu_s": outcome.cpu_s}
                cache.put(fps[key], {**record, "spec": outcome.spec.to_json()}, outcome.metrics)
        done[key] = outcome
        if on_progress is not None:
            on_progress(key, 1, 1)

    if todo:
        executor.run(todo, shared, finished, on_progress)
    return SweepResult({k: done[k] for k in keys}, time.perf_counter() - t0)


def as_executor(executor: Executor | int) -> Executor:
    """An executor, or an int: that many local worker processes."""
    return LocalExecutor(executor) if isinstance(executor, int) else executor


def make_executor(kind: str, jobs: int, ray_address: str | None = None) -> Executor:
    """``--executor local|ray`` with ``--jobs`` (local workers) and ``--ray-address ADDRESS|auto``."""
    from wildserve.errors import ConfigError

    if kind == "local":
        if ray_address is not None:
            raise ConfigError("--ray-address needs --executor ray")
        from wildserve.process_pool import default_jobs

        return LocalExecutor(jobs or default_jobs(64))
    if kind == "ray":
        from wildserve.experiments.ray_executor import RayExecutor

        return RayExecutor(ray_address)
    raise ConfigError(f"--executor: '{kind}' is neither local nor ray")


# ---- running one spec (in a worker) ----------------------------------------------------------
_CURRENT_KEY: str | None = None


def run_progress() -> Callable[[int, int], None] | None:
    """A ``progress(done, total)`` for the running run's own bar (local executor only), or None."""
    from wildserve import process_pool

    key = _CURRENT_KEY
    if key is None or process_pool._QUEUE is None:
        return None
    return lambda done, total: process_pool.report_progress(key, done, total)


@cache
def resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise WildserveError(f"run function '{path}' cannot be imported: {e}") from None


@cache
def _module_digest(module: str) -> str:
    path = getattr(importlib.import_module(module), "__file__", None)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""


def call(spec: RunSpec, inputs: Sequence[Any]) -> RunOutcome:
    """One attempt; raises what the run function raises."""
    global _CURRENT_KEY
    t0, cpu0 = time.perf_counter(), time.process_time()
    _CURRENT_KEY = spec.key
    try:
        out = resolve(spec.fn)(dict(spec.params), *inputs)
    finally:
        _CURRENT_KEY = None
    if not isinstance(out, RunResult):
        out = RunResult(out)
    return RunOutcome(
        spec,
        out.value,
        out.metrics,
        wall_s=time.perf_counter() - t0,
        cpu_s=time.process_time() - cpu0,
    )


def call_with_retry(spec: RunSpec, inputs: Sequence[Any], attempts: int = ATTEMPTS) -> RunOutcome:
    """Up to ``attempts`` tries; the last error comes back as a value (the sweep goes on)."""
    for attempt in range(1, attempts + 1):
        try:
            outcome = call(spec, inputs)
        except Exception:
            if attempt == attempts:
                return RunOutcome(spec, error=traceback.format_exc(), attempts=attempt)
        else:
            outcome.attempts = attempt
            return outcome
    raise AssertionError("unreachable")


def empty_run(params: Mapping[str, Any], *inputs: Any) -> Any:
    """A run that does nothing (it only receives its inputs): what an executor costs per run."""
    return params.get("value")


# ---- the local executor ------------------------------------------------------------------------
# Shared inputs of the running sweep; forked workers inherit them instead of unpickling per task.
_SHARED: dict[str, Any] = {}


def _run_local(spec: RunSpec) -> RunOutcome:
    return call_with_retry(spec, [_SHARED[n] for n in spec.inputs])


class LocalExecutor:
    """Worker processes on this machine (``wildserve.process_pool``: one live bar per run, clean Ctrl-C)."""

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, jobs)

    def run(self, specs, shared, on_done, on_progress) -> None:
        from wildserve.process_pool import run_parallel

        _SHARED.clear()
        _SHARED.update(shared)
        tasks = [(s.key, _run_local, (s,)) for s in specs]
        try:
            run_parallel(tasks, self.jobs, on_progress, lambda _key, outcome: on_done(outcome))
        finally:
            _SHARED.clear()
