"""CPU cost of simulating each overload system on one burst scenario, as a ratio to plain vLLM.

    python benchmarks/kunserve_sim_speed.py [--trace azure-conv] [--factor 3] [--setup qwen2.5-14b@h100]

Every system runs in this process, one after another; the baseline (``vllm``: the engines behind a
sampling controller) and the bare simulator without any controller are measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import time

from wildserve.experiments.kunserve import (
    BASE_SCALES,
    SETUPS,
    TRACES,
    BurstScenario,
    KunServeExperiment,
)
from wildserve.overload.layout import build_layered_cluster
from wildserve.overload.systems import SYSTEMS, run_system
from wildserve.routing import make_policy
from wildserve.sim.simulator import Simulator


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default="azure-conv", choices=sorted(TRACES))
    ap.add_argument("--factor", type=float, default=3.0)
    ap.add_argument("--setup", default=SETUPS[0].name, choices=[s.name for s in SETUPS])
    ap.add_argument("--systems", default=",".join(["vllm", *(s for s in SYSTEMS if s != "vllm")]))
    args = ap.parse_args()

    setup = {s.name: s for s in SETUPS}[args.setup]
    sc = BurstScenario("bench", TRACES[args.trace], BASE_SCALES[args.trace], args.factor)
    reqs = sc.requests()
    cfg = KunServeExperiment().cluster(setup)
    print(f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}")
    print(
        f"{args.trace} x{sc.rate_scale:g} burst x{args.factor:g}: {len(reqs)} requests, {setup.name}"
    )

    cpu0 = time.process_time()
    cluster = build_layered_cluster(cfg)
    Simulator(cluster.engines, make_policy("least-requests")).run(reqs)
    bare = time.process_time() - cpu0
    print(f"{'system':>20} {'CPU s':>7} {'vs vllm':>8}")
    print(f"{'(no controller)':>20} {bare:7.2f}")
    base = None  # the first system listed (vllm by default) is the baseline
    for name in args.systems.split(","):
        cpu0 = time.process_time()
        run_system(name, reqs, cfg)
        cpu = time.process_time() - cpu0
        base = base if base is not None else cpu
        print(f"{name:>20} {cpu:7.2f} {cpu / base:8.2f}")


if __name__ == "__main__":
    main()
