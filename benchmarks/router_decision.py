"""Routing decision latency: ``choose()`` over exact views with 100k-token prompts.

    python benchmarks/router_decision.py [--instances 16,64,256] [--decisions 2000]

Each instance's KV cache (the engine's real ``BlockPool``) holds a shared 2k-token system prompt and a
few long conversation prefixes; each decision routes a 100k-token prompt that continues one of them (or
none). Reported: ``choose()`` alone (views prebuilt, prefix matching is lazy inside ``choose``) and
views + ``choose`` together, p50/p99 in microseconds. Goal: LMetric p99 < 100 us at 64 instances.
"""

from __future__ import annotations

import argparse
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


def measure(num_instances: int, decisions: int, policies: list[str], seed: int = 0) -> dict:
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
    source = ExactViews(engines)
    out = {}
    for name in policies:
        policy = make_policy(name)
        alone, total = [], []
        for d in range(decisions):
            conv = conversations[int(rng.integers(len(conversations)))]
            route = RouteRequest(d, PROMPT_TOKENS, conv, BLOCK)
            t0 = time.perf_counter_ns()
            views = source.views(route)
            t1 = time.perf_counter_ns()
            policy.choose(route, views)
            t2 = time.perf_counter_ns()
            alone.append((t2 - t1) / 1e3)
            total.append((t2 - t0) / 1e3)
        out[name] = (np.percentile(alone, [50, 99]), np.percentile(total, [50, 99]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--instances", default="16,64,256")
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--policies", default="lmetric,vllm-v1,dynamo,llm-d,least-requests")
    args = ap.parse_args()
    print(
        f"{'instances':>9} {'policy':>14} {'choose p50':>11} {'choose p99':>11} {'views+choose p50':>17} {'p99':>8}  (us)"
    )
    for n in (int(x) for x in args.instances.split(",")):
        for name, (alone, total) in measure(n, args.decisions, args.policies.split(",")).items():
            print(
                f"{n:9d} {name:>14} {alone[0]:11.1f} {alone[1]:11.1f} {total[0]:17.1f} {total[1]:8.1f}"
            )


if __name__ == "__main__":
    main()
