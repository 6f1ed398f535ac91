"""Why a router loses cache affinity under load: session switches and prefix hit ratio per policy.

    python benchmarks/lmetric_session_switches.py [--workload weka] [--rate-scales 0.5,1,2] \
        [--cache-dir results/lmetric-runs]

A session switch is a follow-up request routed to a different instance than its session's previous
request: on agent traces with long contexts each one re-prefills the whole session. Runs go through
`wildserve experiment lmetric`'s machinery and run cache, so after that experiment (same source,
same cache dir) this only reads finished runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wildserve.experiments.lmetric import (
    DEFAULT_WORKLOADS,
    LINEAR_GRIDS,
    LMetricExperiment,
    run_experiment,
)
from wildserve.experiments.lmetric_points import fold
from wildserve.experiments.lmetric_report import _pm
from wildserve.experiments.runcache import RunCache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="weka", choices=[w.name for w in DEFAULT_WORKLOADS])
    ap.add_argument("--model", default="qwen2.5-7b@h20")
    ap.add_argument("--rate-scales", default="0.5,1,2")
    ap.add_argument("--policies", default="lmetric,vllm-v1,sglang-cache-aware,llm-d")
    ap.add_argument("--linear", default="linear-tuned,linear-new", help="linear families (grids)")
    ap.add_argument("--cache-dir", type=Path, default=Path("results/lmetric-runs"))
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()

    # the workload's own loads and seeds are all run (they key the run cache); --rate-scales picks
    # the rows
    spec = next(w for w in DEFAULT_WORKLOADS if w.name == args.workload)
    shown = {float(x) for x in args.rate_scales.split(",")}
    model, _, gpu = args.model.partition("@")
    exp = LMetricExperiment(
        workloads=(spec,),
        setups=((model, gpu or "h20"),),
        policies=tuple(args.policies.split(",")),
        linear_grids={f: LINEAR_GRIDS[f] for f in args.linear.split(",") if f},
    )
    doc, _ = run_experiment(exp, args.jobs, cache=RunCache(args.cache_dir))
    print(
        "| load | arrivals | policy | session switches | prefix hit ratio | TTFT mean (s) | "
        "preemptions |"
    )
    print("|---:|---|---|---:|---:|---:|---:|")
    for p in fold(doc["runs"]):
        if p.rate_scale not in shown:
            continue
        print(
            f"| x{p.rate_scale:g} | {p.arrivals} | {p.label} | {_pm(p.stat('switch_rate'), 100, 1)}% | "
            f"{_pm(p.stat('hit_ratio'))} | {_pm(p.stat('ttft_mean'), digits=1)} | "
            f"{_pm(p.stat('preemptions'), digits=0)} |"
        )


if __name__ == "__main__":
    main()
