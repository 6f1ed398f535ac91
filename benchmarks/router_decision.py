"""Routing decision latency: ``choose()`` over exact views with 100k-token prompts.

    python benchmarks/router_decision.py [--instances 16,64,256] [--decisions 2000]

Each instance's KV cache (the engine's real ``BlockPool``) holds a shared 2k-token system prompt and a
few long conversation prefixes; each decision routes a 100k-token prompt that continues one of them (or
none). Reported: ``choose()`` alone (views prebuilt, prefix matching is lazy inside ``choose``) and
views + ``choose`` together, p50/p99 in microseconds, with prefix lookups per engine (galloping in each
pool) and through the shared hash -> holders index. Wall-clock percentiles include time the process was
descheduled on a busy machine; the CPU columns (thread CPU time of ``choose``) do not.
Goal: LMetric p99 < 100 us at 64 instances.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np

from wildserve.engine import Engine, EngineConfig, EngineRequest
from wildserve.perf.linear import LinearCostModel
from wildserve.routing import RouteRequest, make_policy
from wildserve.sim.simulator import ExactViews

BLOCK = 16
PROMPT_TOKENS = 100_000
SYSTEM_BLOCKS = 2048 // BLOCK


def populate(
    engine: Engine, rng: np.random.Generator, conversations: list[list[int]], k: int
) -> None:
    """Cache the system prompt and ``k`` conversation prefixes of random length on one engine."""
    picks = rng.choice(len(conversations), size=k, replace=False)
    for j, c in enumerate(picks):
        hashes = conversations[c][: int(rng.integers(SYSTEM_BLOCKS, len(conversations[c])))]
        req = EngineRequest(
            f"warm-{engine.instance_id}-{j}", 0.0, len(hashes) * BLOCK + 1, 1, hashes
        )
        assert engine.kv.allocate_slots(req, req.num_prompt_tokens, 0.0)
        engine.kv.free(req, 0.0)


def measure(
    num_instances: int, decisions: int, policies: list[str], shared: bool, seed: int = 0
) -> dict:
    rng = np.random.default_rng(seed)
    blocks = PROMPT_TOKENS // BLOCK
    system = list(range(1, SYSTEM_BLOCKS + 1))
    conversations = [
        system + [10**9 * (c + 1) + j for j in range(blocks - SYSTEM_BLOCKS)] for c in range(64)
    ]
    cfg = EngineConfig(num_gpu_blocks=60_000)
    engines = [Engine(cfg, LinearCostModel(), instance_id=i) for i in range(num_instances)]
    for e in engines:
        populate(e, rng, conversations, k=3)
    # The engines' block pools (millions of objects at 256 instances) live in this process only
    # because the benchmark simulates them; a router process does not hold them. Freezing them keeps
    # the cyclic GC from traversing them during decisions (otherwise ~1% of decisions at 256
    # instances pay a ~200 ms full collection).
    gc.collect()
    gc.freeze()
    source = ExactViews(engines, shared_index=shared)
    out = {}
    for name in policies:
        policy = make_policy(name)
        alone, total, cpu = [], [], []
        for d in range(decisions):
            conv = conversations[int(rng.integers(len(conversations)))]
            route = RouteRequest(d, PROMPT_TOKENS, conv, BLOCK)
            t0 = time.perf_counter_ns()
            views = source.views(route)
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
            chosen = policy.choose(route, views)
            c2 = time.thread_time_ns()
            t2 = time.perf_counter_ns()
            policy.on_dispatch(views[chosen].instance_id, route)
            alone.append((t2 - t1) / 1e3)
            total.append((t2 - t0) / 1e3)
            cpu.append((c2 - c1) / 1e3)
        out[name] = (
            np.percentile(alone, [50, 99]),
            np.percentile(total, [50, 99]),
            np.percentile(cpu, [50, 99]),
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--instances", default="16,64,256")
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--policies", default="lmetric,vllm-v1,dynamo,llm-d,least-requests")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    print(
        f"{'instances':>9} {'prefix lookup':>13} {'policy':>14} {'choose p50':>11} {'choose p99':>11} "
        f"{'views+choose p50':>17} {'p99':>8} {'choose CPU p50':>15} {'p99':>8}  (us)"
    )
    for n in (int(x) for x in args.instances.split(",")):
        for shared in (False, True):
            mode = "shared index" if shared else "per engine"
            results = measure(n, args.decisions, args.policies.split(","), shared)
            for name, (alone, total, cpu) in results.items():
                print(
                    f"{n:9d} {mode:>13} {name:>14} {alone[0]:11.1f} {alone[1]:11.1f} "
                    f"{total[0]:17.1f} {total[1]:8.1f} {cpu[0]:15.1f} {cpu[1]:8.1f}"
                )


if __name__ == "__main__":
    main()
