"""The LMetric experiment: every routing policy on real traces, swept over load, on a simulated cluster.

Setting (the paper's): 16 instances, one GPU each, 16-token blocks, prefix caching, max_num_seqs 256;
Qwen2.5-7B and Qwen3-30B-A3B on H20. Workloads: the Mooncake conversation trace and the WEKA Claude Code
agent sessions, each swept from light load to where ``vllm-v1``'s TTFT blows up. ``linear-tuned`` is
grid-searched on the same trace, load and seeds and reported with its best point, for two linear
families (with and without the backlog term). Every point runs over several Poisson seeds. A synthetic hot-prompt
workload shows LMetric's zero-score failure and its mitigation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wildserve.engine import EngineConfig
from wildserve.engine.cluster import ClusterConfig
from wildserve.experiments.runcache import RunCache
from wildserve.experiments.runner import Executor, RunResult, RunSpec, run_progress, run_sweep
from wildserve.metrics import DEFAULT_SLO, RequestMetrics
from wildserve.routing.policy import make_policy
from wildserve.sim.run import run_policy
from wildserve.workload.formats import renumber
from wildserve.workload.request import Request
from wildserve.workload.seeding import load_seeded
from wildserve.workload.synthetic import LengthDist, SyntheticConfig, synthetic_workload
from wildserve.workload.transforms import rate_scale

UNTUNED_BASELINES = (
    "round-robin",
    "least-requests",
    "vllm-v1",
    "sglang-cache-aware",
    "llm-d",
    "dynamo",
    "production-weighted",
    "aibrix-prefix",
)
# The tuned linear families and the grid each is searched over (alpha = 1: only the ratio matters).
# linear-tuned: queued_prefill_tokens + new_tokens + w x requests (the paper's baseline);
# linear-new: new_tokens + beta x requests (no backlog term).
LINEAR_GRIDS: dict[str, tuple[str, tuple[float, ...]]] = {
    "linear-tuned": ("w", (512.0, 2048.0, 8192.0, 32768.0, 131072.0)),
    "linear-new": ("beta", (512.0, 2048.0, 8192.0, 32768.0)),
}
LINEAR_FAMILIES = tuple(LINEAR_GRIDS)


def parse_linear(text: str) -> dict[str, tuple[str, tuple[float, ...]]]:
    """``--linear``: ``family`` (its whole grid) or ``family=v1/v2`` (those grid values), comma-separated."""
    from wildserve.errors import ConfigError

    out: dict[str, tuple[str, tuple[float, ...]]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        family, _, values = item.partition("=")
        if family not in LINEAR_GRIDS:
            raise ConfigError(
                f"unknown linear family '{family}'; choose from {', '.join(LINEAR_GRIDS)}"
            )
        param, grid = LINEAR_GRIDS[family]
        if values:
            try:
                grid = tuple(float(v) for v in values.split("/"))
            except ValueError:
                raise ConfigError(f"--linear: '{item}' is not family=v1/v2/...") from None
            if any(v <= 0 for v in grid):
                raise ConfigError(f"--linear: '{item}': grid values must be positive")
        out[family] = (param, grid)
    return out


@dataclass(frozen=True)
class WorkloadSpec:
    """A trace, its reader options, the loads (rate scales) it is swept over and the seeds of each.

    A seed draws Poisson arrivals (``wildserve.workload.seeding``); ``None`` keeps the recorded ones.
    """

    name: str
    spec: str
    rate_scales: tuple[float, ...]
    options: dict = field(default_factory=dict)
    seeds: tuple[int | None, ...] = (None,)

    def load(self, seed: int | None = None) -> list[Request]:
        return load_seeded(self.spec, seed, self.options)


DEFAULT_WORKLOADS = (
    # three Poisson re-timings at the trace's own rate, and the recorded arrivals
    WorkloadSpec(
        "mooncake", "builtin:mooncake-conversation", (0.5, 1.0, 1.5, 2.0), seeds=(0, 1, 2, None)
    ),
    # five Poisson placements of the session starts; idle gaps over 30 s (users away for hours)
    # are shortened so sessions overlap
    WorkloadSpec(
        "weka",
        "builtin:weka-claude-code",
        (0.25, 0.5, 1.0, 2.0),
        {"max_idle_s": 30.0},
        seeds=(0, 1, 2, 3, 4),
    ),
)
DEFAULT_SETUPS = (("qwen2.5-7b", "h20"), ("qwen3-30b-a3b", "h20"))
DEFAULT_POLICIES = ("lmetric", "lmetric-stay", "lmetric-marginal", *UNTUNED_BASELINES)


@dataclass
class LMetricExperiment:
    """What to run; defaults reproduce the paper's setting."""

    workloads: Sequence[WorkloadSpec] = DEFAULT_WORKLOADS
    setups: Sequence[tuple[str, str]] = DEFAULT_SETUPS
    policies: Sequence[str] = DEFAULT_POLICIES
    linear_grids: Mapping[str, tuple[str, Sequence[float]]] = field(
        default_factory=lambda: dict(LINEAR_GRIDS)
    )
    # the linear grids run on each workload's first N seeds (0: on all of them); the untuned
    # policies always run on every seed
    linear_seeds: int = 0
    num_instances: int = 16
    view_source: str = "exact"
    max_requests: int = 0  # 0: the whole trace
    engine: EngineConfig = field(default_factory=EngineConfig)

    def cluster(self, model: str, gpu: str) -> ClusterConfig:
        return ClusterConfig(
            model=model, gpu=gpu, num_instances=self.num_instances, engine=self.engine
        )


def session_switch_rate(requests: Sequence[Request], instances: Sequence[int]) -> float | None:
    """Share of follow-ups (a request whose session was seen before) sent to another instance."""
    last: dict[int, int] = {}
    switches = follow_ups = 0
    for r, i in zip(requests, instances, strict=True):
        s = r.session_id
        if s is None or i < 0:
            continue
        prev = last.get(s)
        if prev is not None:
            follow_ups += 1
            switches += prev != i
        last[s] = i
    return switches / follow_ups if follow_ups else None


def cluster_config(d: Mapping[str, Any]) -> ClusterConfig:
    """A ``ClusterConfig`` back from its ``dataclasses.asdict`` form (how a run spec carries it)."""
    return ClusterConfig(**{**d, "engine": EngineConfig(**d["engine"])})


def simulate_run(params: Mapping[str, Any], requests: Sequence[Request]) -> RunResult:
    """One run of the sweep: ``requests`` at ``rate_scale`` under one policy on a fresh cluster."""
    cfg = cluster_config(params["cluster"])
    requests = list(rate_scale(requests, params["rate_scale"]))
    policy = make_policy(params["policy"], **params["kwargs"])
    result = run_policy(
        requests, cfg, policy, progress=run_progress(), view_source=params["view_source"]
    )
    metrics = result.metrics()
    summary = metrics.summary(cfg.num_instances, DEFAULT_SLO.ttft_slo, DEFAULT_SLO.tpot_slo)
    summary["preemptions"] = sum(e.num_preemptions for e in result.engines)
    summary["policy_stats"] = result.extra.get("policy_stats")
    summary["session_switch_rate"] = session_switch_rate(requests, result.instances)
    return RunResult(summary, metrics)


_SIMULATE = f"{__name__}:simulate_run"


def run_label(run: Mapping[str, Any]) -> str:
    """``policy`` or ``policy[w=8192]`` for a grid point."""
    extra = ",".join(f"{k}={v:g}" for k, v in sorted(run["kwargs"].items()) if k != "alpha")
    return f"{run['policy']}[{extra}]" if extra else run["policy"]


def plan_runs(exp: LMetricExperiment) -> list[dict[str, Any]]:
    """Every (workload, setup, load, seed, policy) run, the linear grid points included."""
    runs = []
    for w in exp.workloads:
        for model, gpu in exp.setups:
            for scale in w.rate_scales:
                for seed in w.seeds:
                    base = {
                        "workload": w.name,
                        "model": model,
                        "gpu": gpu,
                        "rate_scale": scale,
                        "seed": seed,
                    }
                    for p in exp.policies:
                        runs.append({**base, "policy": p, "kwargs": {}})
                    if exp.linear_seeds and seed not in w.seeds[: exp.linear_seeds]:
                        continue
                    for family, (param, grid) in exp.linear_grids.items():
                        for value in grid:
                            runs.append({**base, "policy": family, "kwargs": {param: value}})
    for run in runs:
        seed = "rec" if run["seed"] is None else f"s{run['seed']}"
        run["key"] = (
            f"{run['workload']}/{run['model']}/x{run['rate_scale']:g}/{seed}/{run_label(run)}"
        )
    return runs


def input_name(workload: str, seed: int | None) -> str:
    return f"{workload}/{'rec' if seed is None else f's{seed}'}"


def plan_specs(exp: LMetricExperiment, runs: Sequence[Mapping[str, Any]]) -> list[RunSpec]:
    """The sweep's run specs: each names its trace (workload, seed) as a shared input."""
    specs = {w.name: w for w in exp.workloads}
    out = []
    for r in runs:
        w = specs[r["workload"]]
        params = {
            "workload": {"spec": w.spec, "options": w.options, "seed": r["seed"]},
            "max_requests": exp.max_requests,
            "cluster": dataclasses.asdict(exp.cluster(r["model"], r["gpu"])),
            "rate_scale": r["rate_scale"],
            "policy": r["policy"],
            "kwargs": r["kwargs"],
            "view_source": exp.view_source,
        }
        out.append(RunSpec(r["key"], _SIMULATE, params, (input_name(w.name, r["seed"]),)))
    return out


def load_inputs(exp: LMetricExperiment) -> tuple[dict[str, list[Request]], dict[str, int]]:
    """Every (workload, seed) trace the sweep reads, loaded once here; and each workload's size."""
    inputs, sizes = {}, {}
    for w in exp.workloads:
        for seed in w.seeds:
            reqs = w.load(seed)
            if exp.max_requests:
                reqs = reqs[: exp.max_requests]
            inputs[input_name(w.name, seed)] = reqs
            sizes[w.name] = len(reqs)
    return inputs, sizes


def run_experiment(
    exp: LMetricExperiment,
    executor: Executor | int = 1,
    on_progress: Callable[[str, int, int], None] | None = None,
    on_plan: Callable[[list[dict[str, Any]], dict[str, int]], None] | None = None,
    cache: RunCache | None = None,
    *,
    jobs: int | None = None,
) -> tuple[dict, dict[str, RequestMetrics]]:
    """Run every planned simulation (reusing cached ones); returns the JSON document and metrics.

    ``executor``: where runs execute (an int: that many local workers; ``jobs`` says the same).
    """
    executor = executor if jobs is None else jobs
    inputs, sizes = load_inputs(exp)
    runs = plan_runs(exp)
    if on_plan is not None:
        on_plan(runs, sizes)
    sweep = run_sweep(plan_specs(exp, runs), inputs, executor, cache, on_progress)
    sweep.raise_on_failure()
    for r in runs:
        r["summary"] = sweep.value(r["key"])
    doc = {
        "runs": runs,
        "requests": sizes,
        "config": {
            "instances": exp.num_instances,
            "view_source": exp.view_source,
            "setups": [list(s) for s in exp.setups],
            "workloads": [dataclasses.asdict(w) for w in exp.workloads],
            "linear_grids": {k: [p, list(g)] for k, (p, g) in exp.linear_grids.items()},
            "linear_seeds": exp.linear_seeds,
            "engine": dataclasses.asdict(exp.engine),
        },
        "sweep": {"computed": sweep.num_computed, "cached": sweep.num_cached},
    }
    return doc, {r["key"]: sweep[r["key"]].metrics for r in runs}


def hot_prompt_workload(
    num_hot: int = 2400,
    num_background: int = 600,
    duration_s: float = 300.0,
    hot_tokens: int = 4096,
    hot_output: int = 1000,
    seed: int = 0,
) -> list[Request]:
    """Many identical block-aligned prompts (fully cacheable) among ordinary chat requests.

    Once the hot prompt is cached on several instances with no prefill queued, LMetric scores them all
    0 and sends every hot request to the lowest-index one whatever its load.
    """
    rng = np.random.default_rng(seed)
    hot = synthetic_workload(
        SyntheticConfig(
            num_sessions=num_hot,
            session_rate=num_hot / duration_s,
            prompt=LengthDist("constant", mean=0, low=0),
            output=LengthDist("constant", mean=hot_output, low=hot_output),
            system_prompt_tokens=hot_tokens,
            category="hot",
        ),
        rng,
    )
    background = synthetic_workload(
        SyntheticConfig(
            num_sessions=num_background,
            session_rate=num_background / duration_s,
            prompt=LengthDist("lognormal", mean=2048, sigma=1.0, low=16, high=32768),
            output=LengthDist("lognormal", mean=300, sigma=1.0, low=1, high=4096),
            category="background",
        ),
        rng,
    )
    offset = 1 << 40  # keep the two generators' block ids apart
    for r in background:
        r.hash_ids = tuple(offset + h for h in r.hash_ids)
        r.session_id = None if r.session_id is None else r.session_id + num_hot
    return renumber(hot + background)


def run_zero_score_demo(
    num_instances: int = 4,
    model: str = "qwen2.5-7b",
    gpu: str = "h20",
    executor: Executor | int = 2,
):
    """LMetric with and without the zero-score mitigation (and least-requests) on the hot-prompt trace."""
    cfg = dataclasses.asdict(ClusterConfig(model=model, gpu=gpu, num_instances=num_instances))
    variants = {
        "lmetric": ("lmetric", {}),
        "lmetric+mitigation": ("lmetric", {"mitigate_zero": True}),
        "least-requests": ("least-requests", {}),
    }
    base = {"cluster": cfg, "rate_scale": 1.0, "view_source": "exact"}
    specs = [
        RunSpec(name, _SIMULATE, {**base, "policy": p, "kwargs": kw}, ("hot-prompt",))
        for name, (p, kw) in variants.items()
    ]
    sweep = run_sweep(specs, {"hot-prompt": hot_prompt_workload()}, executor).raise_on_failure()
    return {n: sweep.value(n) for n in variants}, {n: sweep[n].metrics for n in variants}
