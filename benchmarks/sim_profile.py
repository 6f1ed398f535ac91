"""cProfile of one full-trace simulation: Mooncake conversation (recorded arrivals), 16 x qwen2.5-7b, lmetric.

    python benchmarks/sim_profile.py [--top 18]

numba's kernels are warmed on 200 requests first; prints the run's CPU time and the top functions
by self time.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import time

from wildserve.experiments.lmetric import DEFAULT_WORKLOADS, LMetricExperiment, simulate_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=18)
    ap.add_argument("--policy", default="lmetric")
    args = ap.parse_args()
    reqs = DEFAULT_WORKLOADS[0].load(None)
    cluster = LMetricExperiment(setups=[("qwen2.5-7b", "h20")]).cluster("qwen2.5-7b", "h20")
    params = {
        "cluster": dataclasses.asdict(cluster),
        "rate_scale": 1.0,
        "policy": args.policy,
        "kwargs": {},
        "view_source": "exact",
    }
    simulate_run(params, reqs[:200])
    prof = cProfile.Profile()
    c0 = time.process_time()
    prof.enable()
    simulate_run(params, reqs)
    prof.disable()
    print(f"cpu_s under cProfile {time.process_time() - c0:.1f}, requests {len(reqs)}")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
