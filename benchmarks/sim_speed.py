"""Simulator speed on the full bundled trace: CPU time per policy, one core, before and after a change.

    python benchmarks/sim_speed.py [--policies round-robin,least-requests,lmetric] [--instances 16]
    python benchmarks/sim_speed.py --base main~3     # the same runs on a base commit, in this run

Each policy runs in its own process (one after another, so one core at a time), after a short warm-up
run that loads numba's compiled kernels, so the CPU time is the simulation's own. With ``--base REV``
the base commit is checked out in a temporary git worktree and every policy runs there too,
alternating base and current so that the machine's load drifts over both alike; the table gives
both CPU times, their ratio, and whether the two runs produced the same results: a SHA-256 over
every request's instance, token times, prefix hit and preemptions and every engine's step log
(``same`` means identical to the last digit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_policy():
    """``run_policy`` and ``ClusterConfig`` wherever this checkout keeps them."""
    try:
        from wildserve.engine.cluster import ClusterConfig
        from wildserve.sim.run import run_policy
    except ImportError:
        from wildserve.sim.build import ClusterConfig, run_policy
    return ClusterConfig, run_policy


def result_digest(res) -> str:
    """SHA-256 over everything a run produced that a metric can read."""
    h = hashlib.sha256()
    for inst, r in zip(res.instances, res.requests, strict=True):
        h.update(
            repr(
                (
                    inst,
                    r.request_id,
                    r.first_scheduled_s,
                    r.first_token_s,
                    r.finish_s,
                    r.num_hit_tokens,
                    r.num_preemptions,
                    r.num_output_tokens,
                )
            ).encode()
        )
    for e in res.engines:
        h.update(bytes(e.step_end_s))
        h.update(repr((e.num_finished, e.num_preemptions, e.busy_s)).encode())
    return h.hexdigest()[:16]


def child(args: argparse.Namespace) -> None:
    """One policy in this process: prints one JSON line."""
    from wildserve.workload import load_trace

    cluster_config, run_policy = _run_policy()
    requests = load_trace(args.trace)
    if args.limit:
        requests = requests[: args.limit]
    cfg = cluster_config(model=args.model, gpu=args.gpu, num_instances=args.instances)
    run_policy(requests[:50], cfg, args.child)  # warm-up: numba kernels load on first use
    cpu0 = time.process_time()
    res = run_policy(requests, cfg, args.child)
    cpu = time.process_time() - cpu0
    steps = sum(len(e.step_end_s) for e in res.engines)
    print(
        json.dumps(
            {
                "cpu_s": cpu,
                "wall_s": res.wall_s,
                "requests": len(requests),
                "steps": steps,
                "events": res.extra["events"],
                "end_s": res.end_s,
                "digest": result_digest(res),
            }
        )
    )


def _spawn(src: Path, args: argparse.Namespace, policy: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, __file__, "--child", policy, "--trace", args.trace]
    cmd += ["--instances", str(args.instances), "--model", args.model, "--gpu", args.gpu]
    cmd += ["--limit", str(args.limit)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default="builtin:mooncake-conversation")
    ap.add_argument("--policies", default="round-robin,least-requests,lmetric")
    ap.add_argument("--instances", type=int, default=16)
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--gpu", default="h20")
    ap.add_argument("--limit", type=int, default=0, help="first N requests only (0: all)")
    ap.add_argument("--base", help="also time this git revision (a temporary worktree)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    print(f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"current: {head}{' + uncommitted changes' if dirty else ''}")
    with tempfile.TemporaryDirectory(prefix="sim-speed-base-") as tmp:
        base_src = None
        if args.base:
            rev = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            wt = Path(tmp) / "base"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), rev],
                check=True,
                capture_output=True,
            )
            base_src = wt / "src"
            print(f"base: {args.base} = {rev} (worktree {wt})")
        try:
            _table(args, base_src)
        finally:
            if base_src is not None:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_src.parent)],
                    capture_output=True,
                )


def _table(args: argparse.Namespace, base_src: Path | None) -> None:
    print(
        f"trace {args.trace}{f' (first {args.limit})' if args.limit else ''}, {args.instances} instances"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    cols = f"{'policy':>16} {'CPU s':>7} {'req/s (CPU)':>12} {'engine steps':>13} {'events':>7}"
    if base_src is not None:
        cols += f" {'base CPU s':>10} {'speed-up':>9} {'results':>8}"
    print(cols)
    for name in args.policies.split(","):
        base = _spawn(base_src, args, name) if base_src is not None else None
        cur = _spawn(ROOT / "src", args, name)
        line = (
            f"{name:>16} {cur['cpu_s']:7.2f} {cur['requests'] / cur['cpu_s']:12.0f} "
            f"{cur['steps']:13d} {cur['events']:7d}"
        )
        if base is not None:
            same = "same" if base["digest"] == cur["digest"] else "DIFFER"
            line += f" {base['cpu_s']:10.2f} {base['cpu_s'] / cur['cpu_s']:8.2f}x {same:>8}"
        print(line, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
