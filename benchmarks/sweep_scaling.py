"""Sweep scaling: one sweep of LMetric simulations on the local executor (1 and 2 workers) and on a
local Ray with 2 CPUs; wall time, speed-up over one worker, and what Ray costs per task.

    python benchmarks/sweep_scaling.py [--max-requests 400] [--out docs/results/sweep-scaling.md]

The sweep: 4 policies x 4 loads of the first N Mooncake requests on 16 instances (16 simulations, no
run cache). Every executor must give byte-identical result JSON (checked). Ray's start-up is
timed apart from the sweep. Its per-task overhead is measured with empty runs (the runner's
``empty_run``) that each receive the shared trace from the object store, like a real run: overhead
per task = wall x CPUs / tasks, set beside the local pool's figure for the same empty runs. The
machine's load average is printed beside every figure: other work on the cores shrinks speed-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from wildserve.experiments.lmetric import (
    LMetricExperiment,
    WorkloadSpec,
    load_inputs,
    plan_runs,
    plan_specs,
)
from wildserve.experiments.ray_executor import RayExecutor
from wildserve.experiments.runner import LocalExecutor, RunSpec, run_sweep
from wildserve.io import atomic_write_json, atomic_write_text

POLICIES = ("round-robin", "least-requests", "vllm-v1", "lmetric")
SCALES = (0.5, 1.0, 1.5, 2.0)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def timed_sweep(specs, inputs, executor) -> tuple[float, str, object]:
    before = load()
    t0 = time.perf_counter()
    result = run_sweep(specs, inputs, executor).raise_on_failure()
    return time.perf_counter() - t0, before, result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--max-requests", type=int, default=400, help="first N requests of the trace")
    ap.add_argument("--instances", type=int, default=16)
    ap.add_argument("--empty-tasks", type=int, default=64, help="empty runs for Ray's overhead")
    ap.add_argument("--out", type=Path, default=None, help="markdown report (and .json beside it)")
    args = ap.parse_args()

    exp = LMetricExperiment(
        workloads=[WorkloadSpec("mooncake", "builtin:mooncake-conversation", SCALES, seeds=(0,))],
        policies=POLICIES,
        setups=[("qwen2.5-7b", "h20")],
        linear_grids={},
        num_instances=args.instances,
        max_requests=args.max_requests,
    )
    inputs, sizes = load_inputs(exp)
    specs = plan_specs(exp, plan_runs(exp))
    lines = [
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores; "
        f"sweep: {len(specs)} simulations of {sizes['mooncake']} requests on {args.instances} "
        f"instances ({len(POLICIES)} policies x {len(SCALES)} loads)",
    ]
    print(lines[0], flush=True)
    print(f"load average 1/5 min at start: {load()}", flush=True)
    rows = []
    results = {}
    for name, executor in (("local, 1 worker", 1), ("local, 2 workers", 2)):
        wall, before, res = timed_sweep(specs, inputs, LocalExecutor(executor))
        results[name] = res
        rows.append({"executor": name, "wall_s": wall, "load_before": before, "load_after": load()})
        print(f"{name}: {wall:.1f} s (load {before} -> {load()})", flush=True)

    import ray

    before = load()
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - t0
    print(f"ray.init: {ray_start_s:.1f} s (load {before})", flush=True)
    try:
        # cold: Ray starts its worker processes, each imports wildserve (the local pool forks);
        # warm: the same sweep again on the workers the first one left
        for name in ("ray, 2 CPUs (cold workers)", "ray, 2 CPUs (warm workers)"):
            wall, before, res = timed_sweep(specs, inputs, RayExecutor())
            results[name] = res
            rows.append(
                {"executor": name, "wall_s": wall, "load_before": before, "load_after": load()}
            )
            print(f"{name}: {wall:.1f} s (load {before} -> {load()})", flush=True)
        empty = [
            RunSpec(
                f"empty{i}", "wildserve.experiments.runner:empty_run", {"i": i}, specs[0].inputs
            )
            for i in range(args.empty_tasks)
        ]
        overhead = {}
        for name, executor in (
            ("ray, 2 CPUs", RayExecutor()),
            ("local, 2 workers", LocalExecutor(2)),
        ):
            run_sweep(empty[:4], inputs, executor)  # warm: workers started, modules imported
            before = load()
            t0 = time.perf_counter()
            run_sweep(empty, inputs, executor)
            ms = (time.perf_counter() - t0) * 2 / len(empty) * 1000
            overhead[name] = {"ms_per_task": ms, "load_before": before}
            print(f"overhead per task, {name}: {ms:.1f} ms (load {before})", flush=True)
    finally:
        ray.shutdown()

    blobs = {name: r.to_json() for name, r in results.items()}
    identical = len(set(blobs.values())) == 1
    base = rows[0]["wall_s"]
    cpu = sum(o.cpu_s for o in results["local, 1 worker"].outcomes.values())
    for r in rows:
        r["speedup"] = base / r["wall_s"]
    table = [
        "| executor | wall s | speed-up vs 1 worker | load avg 1/5 min before -> after |",
        "|---|---:|---:|---|",
        *(
            f"| {r['executor']} | {r['wall_s']:.1f} | {r['speedup']:.2f}x | "
            f"{r['load_before']} -> {r['load_after']} |"
            for r in rows
        ),
    ]
    over = [
        f"- {name}: {o['ms_per_task']:.1f} ms per task (CPU-ms: wall x 2 / {args.empty_tasks} "
        f"empty runs, each receiving the {sizes['mooncake']}-request trace; load {o['load_before']})"
        for name, o in overhead.items()
    ]
    over.append(
        "  (local: each sweep forks a fresh pool and a manager process; its workers inherit the "
        "trace; Ray: workers kept warm, the trace read from the object store by every task)"
    )
    share = cpu / base  # of one core, what the one-worker sweep got
    cores = os.cpu_count() or 1
    worst = max(float(r["load_before"].split("/")[0]) for r in rows)
    caveat = (
        f"Load average up to {worst:.1f} on {cores} cores: the one-worker sweep got {share:.0%} of "
        "a core, so these wall times and speed-ups measure the competition for the cores as much "
        "as the executors."
        if worst > cores
        else f"Load average at most {worst:.1f} on {cores} cores."
    )
    text = "\n".join(
        [
            *lines,
            f"simulation CPU time (1 worker, summed over runs): {cpu:.1f} s; Ray start-up "
            f"{ray_start_s:.1f} s (not in the sweep's wall time)",
            "",
            *table,
            "",
            "Per-task overhead:",
            *over,
            "",
            f"result JSON byte-identical across the executors: {identical}",
            "",
            caveat,
        ]
    )
    print("\n" + "\n".join(text.splitlines()[1:]))
    if args.out is not None:
        command = "python " + shlex.join(["benchmarks/sweep_scaling.py", *sys.argv[1:]])
        doc = f"# Sweep scaling: local pool and Ray\n\nCommand: `{command}`\n\n```\n{text}\n```\n"
        atomic_write_text(args.out, doc)
        atomic_write_json(
            args.out.with_suffix(".json"),
            {
                "command": command,
                "rows": rows,
                "overhead": overhead,
                "ray_start_s": ray_start_s,
                "simulation_cpu_s": cpu,
                "identical": identical,
                "runs": len(specs),
                "requests": sizes["mooncake"],
            },
        )
    if not identical:
        sys.exit("result JSON differs between executors")


if __name__ == "__main__":
    main()
