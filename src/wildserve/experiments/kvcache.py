"""``wildserve experiment kvcache``: eviction policies on real traces, offline and in the cluster.

Part 1 replays each trace's block stream (trace-sized blocks) on caches of 1%..100% of its ideal
working set under every policy, both structural variants (any block / leaves only) and, for the
policies that read request categories (WA, WA-paper, RWA), every category scheme; the report states
per capacity the hit-ratio gain over LRU and over the best non-oracle baseline and the share of the
LRU->OPT gap closed. Part 2 simulates the cluster (engine blocks, routing, queues) at two KV
capacities, and with a host-memory tier, to show what eviction does to queued TTFT. Part 3 measures
each trace's WA indicators (``kvcache.analyze``), the properties that predict whether WA wins.

Runs go through the sweep runner (``experiments.runner``): every finished run is kept in the run
cache (``OUT/runs``) under a fingerprint of its parameters and the code, so an interrupted
experiment resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wildserve.errors import ConfigError, WildserveError
from wildserve.experiments.runcache import RunCache
from wildserve.experiments.runner import Executor, RunSpec, run_progress, run_sweep

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
    # reader options (``-o KEY=VALUE``) applied to every trace the experiment reads
    reader_options: dict[str, Any] = field(default_factory=dict)

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
Options = tuple[tuple[str, Any], ...]  # reader options, hashable (sorted KEY=VALUE pairs)
_REQUESTS: dict[tuple[str, int, Options], list] = {}
_STREAMS: dict[tuple[str, str, int, Options], Any] = {}


def _requests(trace: str, max_requests: int, options: Options = ()) -> list:
    from wildserve.workload import load_trace
    from wildserve.workload.transforms import limit

    key = (trace, max_requests, options)
    if key not in _REQUESTS:
        requests = load_trace(trace, **dict(options))
        _REQUESTS[key] = list(limit(requests, max_requests)) if max_requests else requests
    return _REQUESTS[key]


def _stream(trace: str, scheme: str, max_requests: int, options: Options = ()):
    """The trace's block stream under ``scheme``; schemes share the block arrays (built once per
    process; forked workers inherit what the parent built)."""
    from wildserve.kvcache.categories import categorize
    from wildserve.kvcache.stream import build_stream

    key = (trace, scheme, max_requests, options)
    if key not in _STREAMS:
        requests = _requests(trace, max_requests, options)
        cats = categorize(requests, scheme)
        same = (trace, max_requests, options)
        other = next((s for (t, _, m, o), s in _STREAMS.items() if (t, m, o) == same), None)
        if other is None:
            _STREAMS[key] = build_stream(requests, None, cats, name=trace)
        else:  # same blocks, other categories; the derived caches depend on them: fresh ones
            _STREAMS[key] = dataclasses.replace(other, cats=cats.ids, categories=cats,
                                                _order=(None, other.blocks[:0]), _next_use={},
                                                _history={})  # fmt: skip
    return _STREAMS[key]


# ---- part 1: offline sweeps --------------------------------------------------------------------
def sweep_run(params: dict, stream: Any) -> list:
    """One policy's hit ratio at every capacity of one trace's block stream under one scheme."""
    from wildserve.kvcache.replay import capacity_grid, replay

    spec = params["spec"]
    caps = capacity_grid(stream, tuple(params["fractions"]))
    progress = run_progress()
    out = []
    for i, c in enumerate(caps):
        if spec == NO_HISTORY:
            r = replay(stream, "wa", c, history=False)
        else:
            r = replay(stream, spec, c)
        out.append({"capacity": c, "fraction": c / stream.num_blocks, "hit_ratio": r.hit_ratio,
                    "accesses_per_s": r.accesses_per_s})  # fmt: skip
        if progress is not None:
            progress(i + 1, len(caps))
    return out


def _short(trace: str) -> str:
    return trace.replace("builtin:", "").rsplit("/", 1)[-1][:28]


# ---- part 2: cluster simulation ----------------------------------------------------------------
def _categorized(trace: str, scheme: str, max_requests: int, options: Options = ()):
    """The trace's requests with their category names under ``scheme``, for the engines."""
    requests = _requests(trace, max_requests, options)
    stream = _stream(trace, scheme, max_requests, options)
    names = stream.categories.names
    return [
        dataclasses.replace(r, category=names[c])
        for r, c in zip(requests, stream.categories.ids, strict=True)
    ]


def cluster_run(params: dict, requests: list) -> dict:
    """The cluster simulation under one eviction policy at one KV capacity (and host tier)."""
    from wildserve.engine import EngineConfig
    from wildserve.engine.cluster import ClusterConfig
    from wildserve.metrics import DEFAULT_SLO
    from wildserve.sim.run import run_policy

    policy, blocks, host_gb = params["policy"], params["blocks"], params["host_memory_gb"]
    engine = EngineConfig(eviction_policy=policy, num_gpu_blocks=blocks, host_memory_gb=host_gb)
    cluster = ClusterConfig(num_instances=params["instances"], engine=engine)
    res = run_policy(requests, cluster, params["router"], progress=run_progress())
    s = res.metrics().summary(params["instances"], DEFAULT_SLO.ttft_slo, DEFAULT_SLO.tpot_slo)
    return {
        "policy": policy,
        "blocks_per_instance": blocks,
        "host_memory_gb": host_gb,
        "hit_ratio": s["hit_ratio"],
        "ttft": s["ttft"],
        "queueing": s["queueing"],
        "finished": s["finished"],
        "evictions": sum(e.load().num_evictions for e in res.engines),
        "preemptions": sum(e.num_preemptions for e in res.engines),
        "host_hit_blocks": sum(e.host.num_hits for e in res.engines if e.host is not None),
    }


def gpu_blocks(instances: int = 1) -> int:
    """KV blocks one default instance gets from GPU memory."""
    from wildserve.engine.cluster import ClusterConfig, build_engines

    return build_engines(ClusterConfig(num_instances=instances))[0].num_kv_blocks


# ---- part 3: what predicts a WA win ----------------------------------------------------------
def indicators(trace: str, scheme: str, max_requests: int, options: Options = ()) -> dict:
    """The trace's WA indicators under ``scheme``, or why they cannot be measured."""
    from wildserve.kvcache.analyze import characterize

    try:
        stream = _stream(trace, scheme, max_requests, options)
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
    executor: Executor | int = 1,
    on_progress: Callable[[str, int, int], None] | None = None,
    offline: bool = True,
    cluster: bool = True,
    cache: RunCache | None = None,
) -> Results:
    """All parts as one sweep; ``executor``: where runs execute (an int: local workers); finished
    runs are kept in ``cache`` (a ``ReadOnlyRunCache``: run nothing, report what is done)."""
    out = Results(cfg)
    runs: list[RunSpec] = []
    shared: dict[str, Any] = {}
    where: dict[str, tuple[str, str, str]] = {}  # run key -> (trace, scheme, spec)
    m = cfg.max_requests
    o: Options = tuple(sorted(cfg.reader_options.items()))
    # in the run parameters (and so the cache fingerprint) only when given
    extra = {"reader_options": [list(kv) for kv in o]} if o else {}
    if offline:
        for trace in cfg.traces:
            _requests(trace, m, o)  # a bad file or reader option fails here, not as a skip
            try:  # built once, shared by every run of the trace
                for scheme in cfg.schemes:
                    shared[f"{trace} [{scheme}]"] = _stream(trace, scheme, m, o)
            except ConfigError as exc:  # e.g. no block ids (Azure): nothing to replay
                out.skipped[trace] = str(exc)
                continue
            out.streams[trace] = _stream_info(_stream(trace, cfg.schemes[0], m, o))
            for scheme in cfg.schemes:
                for spec in cfg.specs(scheme):
                    key = f"{trace} {scheme} {spec}"
                    where[key] = (trace, scheme, spec)
                    params = {"trace": trace, "scheme": scheme, "spec": spec,
                              "fractions": list(cfg.fractions), "max_requests": m,
                              **extra}  # fmt: skip
                    runs.append(RunSpec(key, f"{__name__}:sweep_run", params,
                                        (f"{trace} [{scheme}]",)))  # fmt: skip
        for trace in dict.fromkeys((*cfg.traces, *cfg.indicator_traces)):
            out.indicators.append(indicators(trace, cfg.schemes[0], m, o))
    if cluster:
        trace, scheme = cfg.cluster_trace, cfg.schemes[0]
        shared["cluster"] = _categorized(trace, scheme, m, o)
        from wildserve.kvcache.stream import build_stream

        out.engine_blocks_working_set = build_stream(_requests(trace, m, o), 16).num_blocks
        full = gpu_blocks()
        common = {"trace": trace, "scheme": scheme, "max_requests": m,
                  "instances": cfg.instances, "router": cfg.router, **extra}  # fmt: skip
        for frac in cfg.cluster_capacities:
            blocks = max(1, round(frac * full))
            points = [(p, 0.0) for p in cfg.cluster_policies]
            if cfg.host_memory_gb > 0:
                points += [(p, cfg.host_memory_gb) for p in cfg.host_policies]
            for policy, host_gb in points:
                params = {**common, "policy": policy, "blocks": blocks, "host_memory_gb": host_gb}
                key = f"{policy} {blocks} {host_gb:g}"
                runs.append(RunSpec(key, f"{__name__}:cluster_run", params, ("cluster",)))
    sweep = run_sweep(runs, shared, executor, cache, on_progress).raise_on_failure()
    for key, outcome in sweep.outcomes.items():
        if isinstance(outcome.value, dict) and outcome.value.get("missing"):
            out.missing.append(key)  # a read-only cache: not finished yet
        elif key in where:
            trace, scheme, spec = where[key]
            out.sweeps.setdefault(trace, {}).setdefault(scheme, {})[spec] = outcome.value
        else:
            out.cluster.append({**outcome.value, "wall_s": outcome.wall_s})
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
