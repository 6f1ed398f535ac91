"""``wildserve experiment kvcache``: eviction policies on real traces, offline and in the cluster.

Part 1 replays each trace's block stream (trace-sized blocks) on caches of 1%..100% of its ideal
working set under every policy and both structural variants, and states per capacity what share of
the LRU->OPT gap WA (and RWA) closes. Part 2 simulates the cluster (engine blocks, routing, queues)
at two KV capacities, and with a host-memory tier, to show what eviction does to queued TTFT.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from wildserve.config_cli import Jobs, bounded
from wildserve.experiments.runner import Executor, RunSpec, run_progress, run_sweep
from wildserve.experiments.sweep_options import ExecutorOption, RayAddressOption

NO_HISTORY = "wa/no-history"  # WA fitted only on its own cache hits (the ablation)


@dataclass
class KVCacheExperiment:
    """What the experiment runs; every field has its default here only."""

    traces: tuple[str, ...] = ("builtin:mooncake-conversation", "builtin:weka-claude-code")
    policies: tuple[str, ...] = ("lru", "lfu", "gdsf", "wa", "rwa", "opt")
    fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    cluster_trace: str = "builtin:mooncake-conversation"
    cluster_policies: tuple[str, ...] = ("lru", "lfu", "gdsf", "wa", "rwa")
    # KV blocks per instance as fractions of what GPU memory gives (qwen2.5-7b on h20: 81,437)
    cluster_capacities: tuple[float, ...] = (1.0, 0.25)
    host_memory_gb: float = 64.0  # host tier per instance for the runs with one (0: none)
    host_policies: tuple[str, ...] = ("lru", "wa")
    router: str = "sglang-cache-aware"
    instances: int = 16
    max_requests: int = 0  # 0: whole traces


# ---- part 1: offline sweeps --------------------------------------------------------------------
def sweep_run(params: dict, loaded: tuple) -> list:
    """One policy's hit ratio at every capacity of one trace's block stream (``loaded``)."""
    from wildserve.kvcache.replay import capacity_grid, replay

    _, stream = loaded
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


_STREAM_CACHE: dict[tuple[str, int], Any] = {}


def _streams(trace: str, max_requests: int):
    """One stream per trace per process (forked workers inherit what the parent built)."""
    from wildserve.kvcache.stream import load_stream

    key = (trace, max_requests)
    if key not in _STREAM_CACHE:
        _STREAM_CACHE[key] = load_stream(trace, max_requests=max_requests or None)
    return _STREAM_CACHE[key]


# ---- part 2: cluster simulation ----------------------------------------------------------------
def _categorized(loaded: tuple):
    """The trace's requests with their (possibly inferred) category names, for the engines."""
    requests, stream = loaded
    names = stream.categories.names
    return [
        dataclasses.replace(r, category=names[c])
        for r, c in zip(requests, stream.categories.ids, strict=True)
    ]


def cluster_run(params: dict, loaded: tuple) -> dict:
    """The cluster simulation under one eviction policy at one KV capacity (and host tier)."""
    from wildserve.engine import EngineConfig
    from wildserve.engine.cluster import ClusterConfig
    from wildserve.metrics import DEFAULT_SLO
    from wildserve.sim.run import run_policy

    policy, blocks, host_gb = params["policy"], params["blocks"], params["host_memory_gb"]
    requests = _categorized(loaded)
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


@dataclass
class Results:
    config: KVCacheExperiment
    sweeps: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # trace -> spec -> rows
    streams: dict[str, dict] = field(default_factory=dict)  # trace -> sizes
    cluster: list[dict] = field(default_factory=list)
    engine_blocks_working_set: int = 0


def run(
    cfg: KVCacheExperiment,
    executor: Executor | int = 1,
    on_progress: Callable[[str, int, int], None] | None = None,
    offline: bool = True,
    cluster: bool = True,
    *,
    jobs: int | None = None,
) -> Results:
    """Both parts, as one sweep; ``executor``: where runs execute (an int: local workers)."""
    executor = executor if jobs is None else jobs
    out = Results(cfg)
    specs = [p + v for p in cfg.policies for v in ("", ":leaf")] + [NO_HISTORY]
    runs: list[RunSpec] = []
    shared: dict[str, Any] = {}
    sweep_of: dict[str, tuple[str, str]] = {}  # run key -> (trace, spec)
    n = cfg.max_requests
    if offline:
        for trace in cfg.traces:
            shared[trace] = _streams(trace, n)  # built once, shared by every run of the trace
            stream = shared[trace][1]
            out.streams[trace] = {
                "requests": stream.num_requests,
                "accesses": stream.num_accesses,
                "blocks": stream.num_blocks,
                "block_size": stream.block_size,
                "categories": dict(zip(stream.categories.names,
                                       stream.categories.counts().tolist(), strict=True)),
            }  # fmt: skip
            for spec in specs:
                key = f"{trace} {spec}"
                sweep_of[key] = (trace, spec)
                params = {"trace": trace, "max_requests": n, "spec": spec,
                          "fractions": list(cfg.fractions)}  # fmt: skip
                runs.append(RunSpec(key, f"{__name__}:sweep_run", params, (trace,)))
    if cluster:
        shared[cfg.cluster_trace] = _streams(cfg.cluster_trace, n)
        from wildserve.kvcache.stream import build_stream

        out.engine_blocks_working_set = build_stream(shared[cfg.cluster_trace][0], 16).num_blocks
        full = gpu_blocks()
        common = {"trace": cfg.cluster_trace, "max_requests": n, "instances": cfg.instances,
                  "router": cfg.router}  # fmt: skip
        for frac in cfg.cluster_capacities:
            blocks = max(1, round(frac * full))
            points = [(p, 0.0) for p in cfg.cluster_policies]
            if cfg.host_memory_gb > 0:
                points += [(p, cfg.host_memory_gb) for p in cfg.host_policies]
            for policy, host_gb in points:
                params = {**common, "policy": policy, "blocks": blocks, "host_memory_gb": host_gb}
                key = f"{policy} {blocks} {host_gb:g}"
                runs.append(RunSpec(key, f"{__name__}:cluster_run", params, (cfg.cluster_trace,)))
    sweep = run_sweep(runs, shared, executor, None, on_progress).raise_on_failure()
    for key, outcome in sweep.outcomes.items():
        if key in sweep_of:
            trace, spec = sweep_of[key]
            out.sweeps.setdefault(trace, {})[spec] = outcome.value
        else:
            out.cluster.append({**outcome.value, "wall_s": outcome.wall_s})
    return out


def kvcache(
    out: Annotated[Path, typer.Option(help="folder for kvcache.md, kvcache.json and the PNGs")] = (
        Path("results/kvcache")
    ),
    max_requests: Annotated[
        int,
        typer.Option(
            parser=bounded(int, ge=0), metavar="INT", help="first N requests of each trace (0: all)"
        ),
    ] = 0,
    offline: Annotated[bool, typer.Option(help="run the offline capacity sweeps")] = True,
    cluster: Annotated[bool, typer.Option(help="run the cluster simulations")] = True,
    instances: Annotated[
        int,
        typer.Option(
            parser=bounded(int, ge=1), metavar="INT", help="serving instances in the cluster part"
        ),
    ] = 16,
    jobs: Jobs = 0,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Hit ratio vs capacity for every eviction policy on the Mooncake and WEKA traces, and queued
    TTFT in the cluster simulator at two KV capacities (with and without a host-memory tier)."""

    from wildserve.console import make_console, make_progress
    from wildserve.experiments.kvcache_report import write
    from wildserve.experiments.runner import make_executor

    cfg = KVCacheExperiment(max_requests=max_requests, instances=instances)
    console = make_console()
    with make_progress(console, 58) as bar:
        ids: dict[str, Any] = {}

        def on_progress(key: str, done: int, total: int) -> None:
            if key not in ids:
                ids[key] = bar.add_task(key, total=total)
            bar.update(ids[key], completed=done, total=total)

        results = run(
            cfg, make_executor(executor, jobs, ray_address), on_progress, offline, cluster
        )
    path = write(results, out, "wildserve " + shlex.join(sys.argv[1:]))
    console.print(f"report: {path}")
