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

import numpy as np

from wildserve.experiments.lmetric import DEFAULT_WORKLOADS, LMetricExperiment, run_experiment
from wildserve.experiments.runcache import RunCache


def switch_rate(sessions: np.ndarray, instance: np.ndarray) -> float:
    """Share of follow-ups (a request whose session was seen before) sent to another instance."""
    last: dict[int, int] = {}
    switches = follow_ups = 0
    for s, i in zip(sessions.tolist(), instance.tolist(), strict=True):
        if s in last:
            follow_ups += 1
            switches += last[s] != i
        last[s] = i
    return switches / follow_ups if follow_ups else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="weka", choices=[w.name for w in DEFAULT_WORKLOADS])
    ap.add_argument("--model", default="qwen2.5-7b@h20")
    ap.add_argument("--rate-scales", default="0.5,1,2")
    ap.add_argument("--policies", default="lmetric,vllm-v1,sglang-cache-aware,llm-d")
    ap.add_argument("--betas", default="512,8192,32768", help="linear-tuned grid points")
    ap.add_argument("--cache-dir", type=Path, default=Path("results/lmetric-runs"))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()

    # the workload's own loads are all run (they key the run cache); --rate-scales picks the rows
    spec = next(w for w in DEFAULT_WORKLOADS if w.name == args.workload)
    shown = {float(x) for x in args.rate_scales.split(",")}
    model, _, gpu = args.model.partition("@")
    exp = LMetricExperiment(
        workloads=(spec,),
        setups=((model, gpu or "h20"),),
        policies=tuple(args.policies.split(",")),
        linear_betas=tuple(float(b) for b in args.betas.split(",") if b),
    )
    requests = spec.load()
    sessions = np.array([-1 if r.session_id is None else r.session_id for r in requests])
    if (sessions < 0).all():
        raise SystemExit(f"trace {spec.spec} has no session ids")
    doc, metrics = run_experiment(exp, args.jobs, cache=RunCache(args.cache_dir))
    print("| load | policy | session switches | prefix hit ratio | TTFT mean (s) | preemptions |")
    print("|---:|---|---:|---:|---:|---:|")
    for run in doc["runs"]:
        if run["rate_scale"] not in shown:
            continue
        m = metrics[run["key"]]
        hit = m.hit_tokens.sum() / m.prompt_tokens.sum()
        name = run["policy"] + (f" (beta={run['kwargs']['beta']:g})" if run["kwargs"] else "")
        print(
            f"| x{run['rate_scale']:g} | {name} | {switch_rate(sessions, m.instance):.1%} | "
            f"{hit:.3f} | {run['summary']['ttft']['mean']:.1f} | {run['summary']['preemptions']} |"
        )


if __name__ == "__main__":
    main()
