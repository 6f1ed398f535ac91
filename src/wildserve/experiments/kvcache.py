"""``wildserve experiment kvcache``: eviction policies on real traces, offline and in the cluster.

Part 1 replays each trace's block stream (trace-sized blocks) on caches of 1%..100% of its ideal
working set under every policy, both structural variants (any block / leaves only) and, for the
policies that read request categories (WA, WA-paper, RWA), every category scheme; the report states
per capacity the hit-ratio gain over LRU and over the best non-oracle baseline and the share of the
LRU->OPT gap closed. Part 2 simulates the cluster (engine blocks, routing, queues) at two KV
capacities, and with a host-memory tier, to show what eviction does to queued TTFT. Part 3 measures
each trace's WA indicators (``kvcache.analyze``), the properties that predict whether WA wins.

Every finished task is kept under ``OUT/runs`` keyed by a fingerprint of its parameters and the
source code (``experiments.runcache``): an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from wildserve.errors import ConfigError, WildserveError
from wildserve.sim.parallel import report_progress

NO_HISTORY = "wa/no-history"  # WA fitted only on its own cache hits (the ablation)
# policies whose decisions depend on the request categories (run under every scheme)
CATEGORY_POLICIES = ("wa", "wa-paper", "rwa")
BASELINES = ("lru", "lfu", "gdsf")  # the non-oracle, non-workload-aware policies


@dataclass
class KVCacheExperiment:
    """What the experiment runs; every field has its default here only."""

    traces: tuple[str, ...] = ("builtin:mooncake-conversation", "builtin:weka-claude-code")
    policies: tuple[str, ...] = (
        "lru", "lfu", "gdsf", "wa", "wa-paper", "wa-paper@refit_s=60", "rwa", "opt",
    )  # fmt: skip
    fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    # category schemes (``kvcache.categories``); the first one is the main tables'
    schemes: tuple[str, ...] = ("type+turn", "type+t1/t2+", "type", "input-types+agent")
    leaf_variants: bool = True  # also replay every policy leaf-only (main scheme only)
    cluster_trace: str = "builtin:mooncake-conversation"
    cluster_policies: tuple[str, ...] = ("lru", "gdsf", "wa", "wa-paper@refit_s=60")
    # KV blocks per instance as fractions of what GPU memory gives (qwen2.5-7b on h20: 81,437)
    cluster_capacities: tuple[float, ...] = (1.0, 0.25)
    host_memory_gb: float = 64.0  # host tier per instance for the runs with one (0: none)
    host_policies: tuple[str, ...] = ("lru", "wa")
    router: str = "sglang-cache-aware"
    instances: int = 16
    max_requests: int = 0  # 0: whole traces
    # traces whose WA indicators are reported besides ``traces`` (Azure: no block ids)
    indicator_traces: tuple[str, ...] = ("builtin:azure-conv", "builtin:azure-code")

    def __post_init__(self) -> None:
        from wildserve.kvcache.categories import parse_scheme
        from wildserve.kvcache.policy import parse_policy_spec

        if not self.traces:
            raise ConfigError("experiment kvcache: give at least one trace")
        if not self.schemes:
            raise ConfigError("experiment kvcache: give at least one category scheme")
        for spec in (*self.policies, *self.cluster_policies, *self.host_policies):
            parse_policy_spec(spec)  # a typo fails before any work
        for scheme in self.schemes:
            parse_scheme(scheme)
        bad = [f for f in (*self.fractions, *self.cluster_capacities) if not 0 < f <= 1]
        if bad or not self.fractions:
            raise ConfigError(f"experiment kvcache: capacities must lie in (0, 1], got {bad}")
        if self.instances < 1 or self.max_requests < 0:
            raise ConfigError("experiment kvcache: need instances >= 1 and max_requests >= 0")

    def specs(self, scheme: str) -> list[str]:
        """Policy specs replayed under ``scheme`` (all of them under the main scheme)."""
        if scheme == self.schemes[0]:
            variants = ("", ":leaf") if self.leaf_variants else ("",)
            out = [_with_variant(p, v) for p in self.policies for v in variants]
            return out + ([NO_HISTORY] if "wa" in self.policies else [])
        return [p for p in self.policies if base_name(p) in CATEGORY_POLICIES]


def base_name(spec: str) -> str:
    return spec.split("@")[0].split(":")[0]


def _with_variant(spec: str, variant: str) -> str:
    head, at, settings = spec.partition("@")
    return head + variant + at + settings


# ---- loading: one request list per trace, one stream per (trace, scheme) -----------------------
_REQUESTS: dict[tuple[str, int], list] = {}
_STREAMS: dict[tuple[str, str, int], Any] = {}


def _requests(trace: str, max_requests: int) -> list:
    from wildserve.workload import load_trace
    from wildserve.workload.transforms import limit

    key = (trace, max_requests)
    if key not in _REQUESTS:
        requests = load_trace(trace)
        _REQUESTS[key] = list(limit(requests, max_requests)) if max_requests else requests
    return _REQUESTS[key]


def _stream(trace: str, scheme: str, max_requests: int):
    """The trace's block stream under ``scheme``; schemes share the block arrays (built once per
    process; forked workers inherit what the parent built)."""
    from wildserve.kvcache.categories import categorize
    from wildserve.kvcache.stream import build_stream

    key = (trace, scheme, max_requests)
    if key not in _STREAMS:
        requests = _requests(trace, max_requests)
        cats = categorize(requests, scheme)
        other = next((s for (t, _, m), s in _STREAMS.items() if (t, m) == key[::2]), None)
        if other is None:
            _STREAMS[key] = build_stream(requests, None, cats, name=trace)
        else:  # same blocks, other categories; the derived caches depend on them: fresh ones
            _STREAMS[key] = dataclasses.replace(other, cats=cats.ids, categories=cats,
                                                _order=(None, other.blocks[:0]), _next_use={},
                                                _history={})  # fmt: skip
    return _STREAMS[key]


# ---- resumable tasks -------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskFile:
    """Where a task's result is kept; ``run=False``: never compute it (report what is there)."""

    path: Path
    run: bool = True


def _cached(file: TaskFile | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or what an earlier run of the same task left in ``file`` (``None`` when
    nothing is there and the task may not run)."""
    if file is not None and file.path.exists():
        return orjson.loads(file.path.read_bytes())
    if file is not None and not file.run:
        return None
    result = fn(*args)
    if file is not None:
        from wildserve.io import atomic_write_bytes

        atomic_write_bytes(file.path, orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY))
    return result


def _task_file(runs_dir: Path | None, params: dict, cached_only: bool = False) -> TaskFile | None:
    if runs_dir is None:
        return None
    from wildserve.experiments.runcache import fingerprint

    return TaskFile(runs_dir / f"{params['kind']}-{fingerprint(params)}.json", not cached_only)


def _sweep(trace: str, spec: str, scheme: str, fractions: tuple[float, ...], max_requests: int):
    from wildserve.kvcache.replay import capacity_grid, replay

    stream = _stream(trace, scheme, max_requests)
    caps = capacity_grid(stream, fractions)
    out = []
    for i, c in enumerate(caps):
        if spec == NO_HISTORY:
            r = replay(stream, "wa", c, history=False)
        else:
            r = replay(stream, spec, c)
        out.append({"capacity": c, "fraction": c / stream.num_blocks, "hit_ratio": r.hit_ratio,
                    "accesses_per_s": r.accesses_per_s})  # fmt: skip
        report_progress(f"{_short(trace)} {spec} [{scheme}]", i + 1, len(caps))
    return out


def _sweep_task(file: TaskFile | None, *args: Any) -> list:
    return _cached(file, _sweep, *args)


def _short(trace: str) -> str:
    return trace.replace("builtin:", "").rsplit("/", 1)[-1][:28]


# ---- part 2: cluster simulation ----------------------------------------------------------------
def _categorized(trace: str, scheme: str, max_requests: int):
    """The trace's requests with their category names under ``scheme``, for the engines."""
    requests = _requests(trace, max_requests)
    stream = _stream(trace, scheme, max_requests)
    names = stream.categories.names
    return [
        dataclasses.replace(r, category=names[c])
        for r, c in zip(requests, stream.categories.ids, strict=True)
    ]


def _cluster(cfg: KVCacheExperiment, policy: str, blocks: int, host_gb: float) -> dict:
    from wildserve.engine import EngineConfig
    from wildserve.sim.build import ClusterConfig, run_policy

    requests = _categorized(cfg.cluster_trace, cfg.schemes[0], cfg.max_requests)
    engine = EngineConfig(eviction_policy=policy, num_gpu_blocks=blocks, host_memory_gb=host_gb)
    cluster = ClusterConfig(num_instances=cfg.instances, engine=engine)
    key = f"{policy} {blocks} {host_gb:g}"
    res = run_policy(requests, cluster, cfg.router,
                     progress=lambda d, t: report_progress(key, d, t))  # fmt: skip
    s = res.metrics().summary(cfg.instances, 5.0, 0.1)
    return {
        "policy": policy,
        "blocks_per_instance": blocks,
        "host_memory_gb": host_gb,
        "hit_ratio": s["hit_ratio"],
        "ttft": s["ttft"],
        "queueing": s["queueing"],
        "finished": s["finished"],
        "evictions": sum(e.pool.num_evictions for e in res.engines),
        "preemptions": sum(e.num_preemptions for e in res.engines),
        "host_hit_blocks": sum(e.host.num_hits for e in res.engines if e.host is not None),
        "wall_s": res.wall_s,
    }


def _cluster_task(file: TaskFile | None, *args: Any) -> dict:
    return _cached(file, _cluster, *args)


def gpu_blocks(instances: int = 1) -> int:
    """KV blocks one default instance gets from GPU memory."""
    from wildserve.sim.build import ClusterConfig, build_engines

    return build_engines(ClusterConfig(num_instances=instances))[0].pool.num_blocks


# ---- part 3: what predicts a WA win ----------------------------------------------------------
def indicators(trace: str, scheme: str, max_requests: int) -> dict:
    """The trace's WA indicators under ``scheme``, or why they cannot be measured."""
    from wildserve.kvcache.analyze import characterize

    try:
        stream = _stream(trace, scheme, max_requests)
    except WildserveError as exc:
        return {"trace": trace, "error": str(exc)}
    a = characterize(stream)
    return {"trace": trace, "scheme": scheme, "categories": len(a.categories),
            "ideal_hit_ratio": a.ideal_hit_ratio, **a.wa_indicators()}  # fmt: skip


@dataclass
class Results:
    config: KVCacheExperiment
    # trace -> scheme -> spec -> rows (one per capacity)
    sweeps: dict[str, dict[str, dict[str, list[dict]]]] = field(default_factory=dict)
    streams: dict[str, dict] = field(default_factory=dict)  # trace -> sizes
    cluster: list[dict] = field(default_factory=list)
    indicators: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # trace -> why it has no sweeps
    missing: list[str] = field(default_factory=list)  # tasks not finished (cached_only)
    engine_blocks_working_set: int = 0


def _stream_info(stream) -> dict:
    return {
        "requests": stream.num_requests,
        "accesses": stream.num_accesses,
        "blocks": stream.num_blocks,
        "block_size": stream.block_size,
        "categories": dict(
            zip(stream.categories.names, stream.categories.counts().tolist(), strict=True)
        ),
    }


def run(
    cfg: KVCacheExperiment,
    jobs: int,
    on_progress: Callable[[str, int, int], None] | None = None,
    offline: bool = True,
    cluster: bool = True,
    runs_dir: Path | None = None,
    cached_only: bool = False,
) -> Results:
    """All parts; tasks run in ``jobs`` worker processes, finished ones kept in ``runs_dir``
    (``cached_only``: run nothing, report what ``runs_dir`` holds; partial sweeps are left out)."""
    from wildserve.sim.parallel import run_parallel

    out = Results(cfg)
    tasks: list = []
    where: dict[str, tuple[str, str, str]] = {}  # task key -> (trace, scheme, spec)
    m = cfg.max_requests
    if offline:
        for trace in cfg.traces:
            try:  # built once, before the fork
                for scheme in cfg.schemes:
                    _stream(trace, scheme, m)
            except ConfigError as exc:  # e.g. no block ids (Azure): nothing to replay
                out.skipped[trace] = str(exc)
                continue
            out.streams[trace] = _stream_info(_stream(trace, cfg.schemes[0], m))
            for scheme in cfg.schemes:
                for spec in cfg.specs(scheme):
                    key = f"{trace} {scheme} {spec}"
                    where[key] = (trace, scheme, spec)
                    params = {"kind": "sweep", "trace": trace, "scheme": scheme, "spec": spec,
                              "fractions": cfg.fractions, "max_requests": m}  # fmt: skip
                    args = (trace, spec, scheme, cfg.fractions, m)
                    path = _task_file(runs_dir, params, cached_only)
                    tasks.append((key, _sweep_task, (path, *args)))
        for trace in dict.fromkeys((*cfg.traces, *cfg.indicator_traces)):
            out.indicators.append(indicators(trace, cfg.schemes[0], m))
    if cluster:
        requests = _requests(cfg.cluster_trace, m)
        _stream(cfg.cluster_trace, cfg.schemes[0], m)
        from wildserve.kvcache.stream import build_stream

        out.engine_blocks_working_set = build_stream(requests, 16).num_blocks
        full = gpu_blocks()
        runs: list[tuple[str, int, float]] = []
        for frac in cfg.cluster_capacities:
            blocks = max(1, round(frac * full))
            runs += [(policy, blocks, 0.0) for policy in cfg.cluster_policies]
            if cfg.host_memory_gb > 0:
                runs += [(policy, blocks, cfg.host_memory_gb) for policy in cfg.host_policies]
        for policy, blocks, host_gb in runs:
            params = {"kind": "cluster", "config": dataclasses.asdict(cfg), "policy": policy,
                      "blocks": blocks, "host_gb": host_gb}  # fmt: skip
            for k in ("traces", "policies", "fractions", "schemes", "indicator_traces"):
                params["config"].pop(k)  # what only part 1 reads
            path = _task_file(runs_dir, params, cached_only)
            tasks.append((f"{policy} {blocks} {host_gb:g}", _cluster_task,
                          (path, cfg, policy, blocks, host_gb)))  # fmt: skip
    results = run_parallel(tasks, jobs, on_progress)
    for key, value in results.items():
        if value is None:  # cached_only and not finished
            out.missing.append(key)
        elif key in where:
            trace, scheme, spec = where[key]
            out.sweeps.setdefault(trace, {}).setdefault(scheme, {})[spec] = value
        else:
            out.cluster.append(value)
    return out


def parse_fractions(text: str) -> tuple[float, ...]:
    """``0.01,0.02`` or percentages ``1%,2%`` -> fractions."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            value = float(item[:-1]) / 100 if item.endswith("%") else float(item)
        except ValueError:
            raise ConfigError(f"capacity '{item}' is not a number or a percentage") from None
        if not (math.isfinite(value) and 0 < value <= 1):
            raise ConfigError(f"capacity '{item}' must lie in (0, 1] (or (0%, 100%])")
        out.append(value)
    return tuple(out)
