"""Simulator speed on the full bundled trace: wall time and simulated requests/s per policy, one core.

    python benchmarks/sim_speed.py [--policies round-robin,least-requests,lmetric] [--instances 16]

Each policy runs in this process, one after another (one core). Goal: under 30 s per policy.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from wildserve.engine.cluster import ClusterConfig
from wildserve.sim.run import run_policy
from wildserve.workload import load_trace


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default="builtin:mooncake-conversation")
    ap.add_argument("--policies", default="round-robin,least-requests,lmetric")
    ap.add_argument("--instances", type=int, default=16)
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--gpu", default="h20")
    args = ap.parse_args()

    t0 = time.perf_counter()
    requests = load_trace(args.trace)
    load_s = time.perf_counter() - t0
    print(f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}")
    print(f"trace {args.trace}: {len(requests)} requests loaded in {load_s:.2f} s")
    cfg = ClusterConfig(model=args.model, gpu=args.gpu, num_instances=args.instances)
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    print(
        f"{'policy':>16} {'wall s':>8} {'CPU s':>7} {'req/s (CPU)':>12} {'engine steps':>13} "
        f"{'events':>9} {'sim end s':>10}"
    )
    for name in args.policies.split(","):
        cpu0 = time.process_time()
        res = run_policy(requests, cfg, name)
        cpu = time.process_time() - cpu0
        steps = sum(len(e.step_end_s) for e in res.engines)
        events = res.extra["events"]
        print(
            f"{name:>16} {res.wall_s:8.2f} {cpu:7.2f} {len(requests) / cpu:12.0f} {steps:13d} "
            f"{events:9d} {res.end_s:10.0f}"
        )
    print(
        "vidur (PyPI 0.0.26) is not timed here: its execution-time predictor downloads its profiling "
        "datasets from the Hugging Face Hub at run time (no network here) and needs attention-kernel "
        "profiles that are not available offline."
    )


if __name__ == "__main__":
    main()
