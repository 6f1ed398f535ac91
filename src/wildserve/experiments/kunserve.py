"""The KunServe regime map: burst size swept finely, KunServe against vLLM, InferCept and Llumnix.

A scenario is a slice of a workload replayed at a base load, with a burst made by replicating the
requests arriving in ``[burst_start_s, burst_start_s + burst_s)`` so that window carries ``factor``
times its load. The base loads leave KV headroom by construction: a calibration run of vLLM without a
burst at the workload's nominal rate measures its peak KV demand (blocks used plus blocks the queues
need) and its prefill demand, and each base load is the highest rate at which both, scaled linearly,
stay within target shares of the cluster's KV blocks and prefill throughput (``base_targets``: 50 % /
35 % and 70 % / 50 %), so neither memory nor compute is saturated before the burst. Every system runs
every (workload, setup, base, factor) on a fresh cluster in the same simulator; each run records its
latency percentiles (whole slice and burst window), its per-step admission blockers, its sampled
timeline and, for vLLM, the KV demand at the peak that sets the regime map's x axis. Finished runs
are kept in a run cache, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wildserve.engine import EngineConfig
from wildserve.engine.cluster import ClusterConfig
from wildserve.engine.kv_manager import cdiv
from wildserve.experiments.kunserve_runs import run_summary
from wildserve.experiments.runcache import RunCache
from wildserve.experiments.runner import Executor, RunResult, RunSpec, run_progress, run_sweep
from wildserve.overload.layout import build_layered_cluster, pipeline_blocks
from wildserve.overload.systems import run_system
from wildserve.perf import BatchShape, build_cost_model
from wildserve.workload import load_trace
from wildserve.workload.request import Request
from wildserve.workload.seeding import reader_takes_seed
from wildserve.workload.transforms import burst, rate_scale, window


@dataclass(frozen=True)
class Workload:
    """A trace with its output-length options, the rate of its calibration run and its slice."""

    name: str
    trace: str
    options: dict = field(default_factory=dict)  # reader and output-length options (-o)
    nominal_rate: float = 1.0  # rate multiplier of the calibration run
    trace_offset_s: float = 600.0  # where the slice starts in the original trace
    # > 0: the slice starts up to this much later than trace_offset_s, where the burst window holds
    # the most arrivals of the trace (busiest_offset), so a clumpy trace's burst is not in a gap
    busy_search_s: float = 0.0
    description: str = ""

    def load(self, seed: int) -> list[Request]:
        """The whole trace; ``seed`` draws resampled outputs and WEKA's session starts."""
        options = dict(self.options)
        if "output_lengths" in options:
            options.setdefault("output_seed", seed)
        if reader_takes_seed(self.trace):
            options.setdefault("seed", seed)
        return load_trace(self.trace, **options)


WORKLOADS = (
    Workload(
        "azure-conv-x4",
        "builtin:azure-conv",
        {"output_scale": 4, "output_cap": 16384},
        nominal_rate=1.0,
        description="Azure conversations, every output 4x longer (capped at 16k): prompts ~1.2k, "
        "outputs ~0.85k tokens",
    ),
    Workload(
        "azure-code-x16",
        "builtin:azure-code",
        {"output_scale": 16, "output_cap": 16384},
        nominal_rate=1.0,
        trace_offset_s=1560.0,  # the trace pauses for minutes at 600 s; from 26 min it is steadier
        busy_search_s=600.0,  # but still comes in clumps with gaps of tens of seconds
        description="Azure code completions (outputs ~28 tokens) with outputs 16x longer (capped "
        "at 16k): prompts ~2k, outputs ~0.45k tokens",
    ),
    Workload(
        "reasoning",
        "builtin:azure-conv",
        {"output_lengths": "reasoning", "output_cap": 16384},
        nominal_rate=0.2,
        description="Azure conversation arrivals and prompts, outputs drawn from the chain-of-"
        "thought distribution of wildserve.workload.lengths (log-normal, mean 6k, capped at 16k)",
    ),
    Workload(
        "weka",
        "builtin:weka-claude-code",
        {},
        nominal_rate=0.5,
        description="WEKA Claude Code agent sessions (prompts ~100k tokens, mostly cached "
        "prefixes; outputs ~0.4k); Poisson session starts",
    ),
)


@dataclass(frozen=True)
class Setup:
    """``num_instances`` instances of ``model`` on ``tp`` GPUs of kind ``gpu`` each."""

    name: str
    model: str
    gpu: str
    tp: int = 1
    num_instances: int = 4
    gpu_memory_utilization: float = 0.9
    skip: tuple[str, ...] = ()  # workloads that do not fit this setup
    description: str = ""


SETUPS = (
    Setup("qwen2.5-14b@h100", "qwen2.5-14b", "h100", description="weights 41 % of usable memory"),
    Setup(
        "llama-3-70b@h100-tp4",
        "llama-3-70b",
        "h100",
        tp=4,
        description="weights 49 % of usable memory",
    ),
    Setup(
        "qwen2.5-14b@h100-48g",
        "qwen2.5-14b",
        "h100",
        gpu_memory_utilization=0.54,
        skip=("weka",),
        description="H100 compute with 43 GB usable, as a 48 GB card at 0.9 (the perf model has "
        "no L40S); weights 68 % of usable memory; WEKA's 100k-token prompts do not fit",
    ),
)
SYSTEM_NAMES = ("vllm", "infercept", "llumnix", "kunserve")
BURST_FACTORS = tuple(float(x) for x in np.round(np.arange(2.0, 6.0001, 0.25), 2))
# base loads: (peak KV demand, prefill demand) as shares of the cluster's KV blocks and prefill rate
BASE_TARGETS = ((0.5, 0.35), (0.7, 0.5))


@dataclass
class KunServeExperiment:
    """What to run; defaults are the report's sweep."""

    setups: Sequence[Setup] = SETUPS
    workloads: Sequence[Workload] = WORKLOADS
    systems: Sequence[str] = SYSTEM_NAMES
    factors: Sequence[float] = BURST_FACTORS
    base_targets: Sequence[tuple[float, float]] = BASE_TARGETS
    burst_start_s: float = 60.0
    burst_s: float = 20.0
    burst_tail_s: float = 30.0  # the burst window's requests: arrivals until this long after it
    duration_s: float = 180.0  # simulated arrivals: [0, duration_s)
    router: str = "least-requests"
    period_s: float = 0.5  # timeline sampling period
    seed: int = 0
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(watermark=0.01))

    def cluster(self, setup: Setup) -> ClusterConfig:
        return ClusterConfig(
            model=setup.model,
            gpu=setup.gpu,
            tp=setup.tp,
            num_instances=setup.num_instances,
            engine=dataclasses.replace(
                self.engine, gpu_memory_utilization=setup.gpu_memory_utilization
            ),
        )

    def pairs(self) -> list[tuple[Workload, Setup]]:
        return [(w, s) for w in self.workloads for s in self.setups if w.name not in s.skip]


def memory_facts(cfg: ClusterConfig, degrees: Sequence[int] = (2, 4, 8)) -> dict:
    """KV blocks per instance and the cluster-wide blocks a drop into groups of each degree frees."""
    cluster = build_layered_cluster(cfg)
    mem = cluster.engines[0].memory
    blocks = cluster.engines[0].num_kv_blocks
    n = cfg.num_instances
    freed = {}
    for g in degrees:
        if g <= n:
            gained = pipeline_blocks([mem] * g, cluster.num_layers) - g * blocks
            freed[str(g)] = gained * (n // g)
    return {
        "blocks_per_instance": blocks,
        "block_size": cfg.engine.block_size,
        "cluster_blocks": blocks * n,
        "weights_share": mem.param_bytes / mem.usable_bytes,
        "freed_blocks": freed,
    }


# Workloads are loaded once in the parent; forked workers read them from here instead of unpickling.
_LOADED: dict[str, list[Request]] = {}


def scenario_requests(
    exp: KunServeExperiment,
    workload: Workload,
    setup: Setup,
    base: float,
    factor: float,
    trace: Sequence[Request] | None = None,
) -> tuple[list[Request], int]:
    """The slice at ``base`` with its burst; requests that fit no instance are left out (counted).

    ``trace``: the workload's whole trace (default: as the last sweep in this process loaded it).
    """
    reqs = _LOADED[workload.name] if trace is None else trace
    off = busiest_offset(exp, workload, base, reqs)
    sliced = list(rate_scale(window(reqs, off, off + exp.duration_s * base), base))
    facts = _facts(exp, setup)
    usable = facts["blocks_per_instance"] - int(exp.engine.watermark * facts["blocks_per_instance"])
    bs = facts["block_size"]
    fits = [r for r in sliced if cdiv(r.prompt_tokens + max(1, r.output_tokens), bs) <= usable]
    out = burst(fits, exp.burst_start_s, exp.burst_s, factor) if factor > 1 else fits
    return out, len(sliced) - len(fits)


def busiest_offset(
    exp: KunServeExperiment, workload: Workload, base: float, reqs: Sequence[Request]
) -> float:
    """Where the slice starts in the trace: ``trace_offset_s``, or, with ``busy_search_s``, later.

    The rule: the slice at ``base`` maps the burst window ``[burst_start_s, + burst_s)`` onto
    ``burst_s * base`` seconds of the trace; of the trace windows of that length starting every
    second in ``[trace_offset_s + burst_start_s * base, trace_offset_s + busy_search_s]``, the one
    with the most arrivals (the earliest of ties) becomes the burst window.
    """
    off = workload.trace_offset_s
    if workload.busy_search_s <= 0:
        return off
    t = np.sort(np.fromiter((r.arrival_s for r in reqs), float, len(reqs)))
    lead, length = exp.burst_start_s * base, exp.burst_s * base
    starts = np.arange(off + lead, off + max(lead, workload.busy_search_s) + 0.5, 1.0)
    counts = np.searchsorted(t, starts + length, "left") - np.searchsorted(t, starts, "left")
    return float(starts[int(np.argmax(counts))] - lead)


_FACTS: dict[str, dict] = {}


def _facts(exp: KunServeExperiment, setup: Setup) -> dict:
    if setup.name not in _FACTS:
        _FACTS[setup.name] = memory_facts(exp.cluster(setup))
    return _FACTS[setup.name]


# What a run spec carries of the experiment (the rest of it shapes no single run).
_SCENARIO_FIELDS = (
    "burst_start_s",
    "burst_s",
    "burst_tail_s",
    "duration_s",
    "router",
    "period_s",
    "seed",
)


def system_run(params: dict, trace: Sequence[Request]) -> RunResult:
    """One run of the sweep: ``system`` on the (workload, setup) scenario at ``base`` x ``factor``."""
    engine = EngineConfig(**params["engine"])
    exp = KunServeExperiment(engine=engine, **{k: params[k] for k in _SCENARIO_FIELDS})
    workload = Workload(**params["workload"])
    setup = Setup(**{**params["setup"], "skip": tuple(params["setup"]["skip"])})
    base, factor = params["base"], params["factor"]
    requests, filtered = scenario_requests(exp, workload, setup, base, factor, trace)
    run = run_system(
        params["system"],
        requests,
        exp.cluster(setup),
        router=exp.router,
        period_s=exp.period_s,
        progress=run_progress(),
    )
    window_s = (exp.burst_start_s, exp.burst_start_s + exp.burst_s + exp.burst_tail_s)
    summary = run_summary(run, window_s, exp.duration_s)
    summary.pop("wall_s", None)  # the runner times every run; the result holds no timing
    m = run.metrics
    cfg = exp.cluster(setup)
    prefill = float((m.prompt_tokens - m.hit_tokens).sum()) / exp.duration_s
    summary.update(
        requests=len(requests),
        filtered=filtered,
        prefill_use=prefill / (cfg.num_instances * prefill_tokens_per_s(cfg)),
    )
    return RunResult(summary, run.metrics)


def run_key(w: str, s: str, level: int, factor: float, system: str) -> str:
    return f"{w}/{s}/L{level}/x{factor:g}/{system}"


def run_spec(
    exp: KunServeExperiment,
    key: str,
    workload: Workload,
    setup: Setup,
    base: float,
    factor: float,
    system: str,
) -> RunSpec:
    params = {
        **{k: getattr(exp, k) for k in _SCENARIO_FIELDS},
        "engine": dataclasses.asdict(exp.engine),
        "workload": dataclasses.asdict(workload),
        "setup": dataclasses.asdict(setup),
        "base": base,
        "factor": factor,
        "system": system,
    }
    code = ("wildserve.experiments.kunserve_runs",)  # run_summary: what a run keeps
    return RunSpec(key, f"{__name__}:system_run", params, (workload.name,), code=code)


def prefill_tokens_per_s(cfg: ClusterConfig, chunk: int = 8192) -> float:
    """One instance's prefill throughput (a full chunk from scratch), from the perf model."""
    shape = BatchShape()
    shape.add_chunk(chunk, 0, True)
    return chunk / build_cost_model(cfg.cost_model, cfg.model, cfg.gpu, cfg.tp).step_time(shape)


def base_rate(
    workload: Workload, calibration: dict, kv_target: float, compute_target: float
) -> tuple[float, str]:
    """The base load with both KV and compute headroom, and which of the two bounds it.

    Scaled linearly from the calibration run: vLLM's peak KV demand without a burst is at most
    ``kv_target`` of the cluster's KV blocks, and its prefill demand (uncached prompt tokens per
    second) at most ``compute_target`` of the cluster's prefill throughput.
    """
    peak = calibration["peak_demand_blocks"] / max(1.0, calibration["kv_blocks"])
    kv_rate = workload.nominal_rate * kv_target / max(peak, 1e-3)
    compute = calibration["prefill_use"]
    compute_rate = workload.nominal_rate * compute_target / max(compute, 1e-3)
    rate, bound = (kv_rate, "kv") if kv_rate <= compute_rate else (compute_rate, "compute")
    return float(f"{min(rate, 64 * workload.nominal_rate):.3g}"), bound


def run_experiment(
    exp: KunServeExperiment,
    executor: Executor | int = 1,
    on_progress: Callable[[str, int, int], None] | None = None,
    on_plan: Callable[[list[dict[str, Any]]], None] | None = None,
    cache: RunCache | None = None,
    *,
    jobs: int | None = None,
) -> dict:
    """Calibrate the base loads, then run the sweep; returns the JSON document of the report.

    ``executor``: where runs execute (an int: that many local workers; ``jobs`` says the same).
    """
    executor = executor if jobs is None else jobs
    for w in exp.workloads:
        if w.name not in _LOADED:
            _LOADED[w.name] = w.load(exp.seed)
    traces = {w.name: _LOADED[w.name] for w in exp.workloads}
    pairs = exp.pairs()
    for _, s in pairs:
        _facts(exp, s)
    calib_runs = [
        {"key": f"{w.name}/{s.name}/calibration", "workload": w.name, "setup": s.name}
        for w, s in pairs
    ]
    sweep = [
        {"workload": w.name, "setup": s.name, "level": lv, "factor": f, "system": sys}
        for w, s in pairs
        for lv in range(len(exp.base_targets))
        for f in exp.factors
        for sys in exp.systems
    ]
    for r in sweep:
        r["key"] = run_key(r["workload"], r["setup"], r["level"], r["factor"], r["system"])
    if on_plan is not None:
        on_plan(calib_runs + sweep)
    works = {w.name: w for w in exp.workloads}
    setups = {s.name: s for s in exp.setups}

    def spec(r: dict, base: float, factor: float, system: str) -> RunSpec:
        w, s = works[r["workload"]], setups[r["setup"]]
        return run_spec(exp, r["key"], w, s, base, factor, system)

    def run(runs: list[dict], specs: list[RunSpec]) -> None:
        done = run_sweep(specs, traces, executor, cache, on_progress).raise_on_failure()
        for r in runs:
            o = done[r["key"]]
            r["summary"] = {**o.value, "cpu_s": o.cpu_s, "wall_s": o.wall_s}
            if o.cached:
                r["summary"]["cached"] = True

    run(calib_runs, [spec(r, works[r["workload"]].nominal_rate, 1.0, "vllm") for r in calib_runs])
    bases = {
        (r["workload"], r["setup"], lv): base_rate(works[r["workload"]], r["summary"], *t)
        for r in calib_runs
        for lv, t in enumerate(exp.base_targets)
    }
    for r in sweep:
        r["base"], r["bound"] = bases[(r["workload"], r["setup"], r["level"])]
    run(sweep, [spec(r, r["base"], r["factor"], r["system"]) for r in sweep])
    return {
        "calibration": calib_runs,
        "runs": sweep,
        "config": {
            "setups": [{**dataclasses.asdict(s), **_facts(exp, s)} for s in exp.setups],
            "workloads": [dataclasses.asdict(w) for w in exp.workloads],
            "systems": list(exp.systems),
            "factors": list(exp.factors),
            "base_targets": [list(t) for t in exp.base_targets],
            "burst_start_s": exp.burst_start_s,
            "burst_s": exp.burst_s,
            "burst_tail_s": exp.burst_tail_s,
            "duration_s": exp.duration_s,
            "router": exp.router,
            "seed": exp.seed,
            "engine": dataclasses.asdict(exp.engine),
            "cpu_s": sum(r["summary"]["cpu_s"] for r in (*calib_runs, *sweep)),
        },
    }
