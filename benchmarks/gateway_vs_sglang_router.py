"""This gateway (lmetric, round-robin) vs sglang-router (cache_aware): routing quality on a replay.

Four emulated qwen2.5-7b/H20 engines (fresh for each router) and the same replayed slice of the
Mooncake conversation trace; client-side TTFT mean / p99 per router. Everything runs on 127.0.0.1 and
stops by itself. Throughput and CPU per request are ``gateway_throughput.py``'s (a compiled load
generator at 64 connections): sequential requests from a Python client measured that client, not the
routers.

    .venv/bin/python benchmarks/gateway_vs_sglang_router.py [--requests 300 --rate-scale 0.3 --speed 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _servers import exit_on_sigterm, start_engines, start_router, stop  # noqa: E402
from wildserve.gateway.config import ReplayConfig  # noqa: E402
from wildserve.gateway.replay import PromptBuilder, replay, summarize_records  # noqa: E402
from wildserve.workload import load_trace  # noqa: E402
from wildserve.workload.transforms import limit, rate_scale  # noqa: E402

ROUTERS = ["lmetric", "sglang-router", "round-robin", "lmetric+kv-events"]


def part1(args) -> dict:
    requests = list(
        rate_scale(limit(load_trace(args.trace), args.requests), args.rate_scale * args.speed)
    )
    out = {}
    for name in ROUTERS:
        engines, urls, endpoints = start_engines(4, str(args.speed))
        router, url = start_router(name, urls, endpoints)
        try:
            cfg = ReplayConfig(url=url, model="qwen2.5-7b", timeout_s=args.timeout)
            t0 = time.perf_counter()
            records = asyncio.run(replay(requests, cfg, PromptBuilder()))
            wall = time.perf_counter() - t0
        finally:
            stop([router, *engines])
        s = summarize_records(records, 5.0, 0.1, wall)
        out[name] = s
        print(f"  {name:14s} TTFT mean {s['ttft']['mean']:.3f} s  p99 {s['ttft']['p99']:.3f} s  "
              f"E2E mean {s['e2e']['mean']:.2f} s  hit {s['hit_ratio']:.3f}  "
              f"finished {s['finished']}/{s['sent']}  errors {s['errors']}  wall {wall:.0f} s",
              flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="builtin:mooncake-conversation")
    ap.add_argument("--requests", type=int, default=300, help="first N requests of the trace")
    ap.add_argument("--rate-scale", type=float, default=0.3, help="arrival rate x (modeled time)")
    ap.add_argument("--speed", type=float, default=4.0, help="engines' clock speed-up")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--output-json", type=Path, default=None)
    args = ap.parse_args()
    exit_on_sigterm()
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    print(f"{args.requests} Mooncake requests, rate x{args.rate_scale}, engines x{args.speed} "
          "speed (wall-clock seconds; x speed for modeled seconds)", flush=True)  # fmt: skip
    result["replay"] = part1(args)
    lm, sg = result["replay"]["lmetric"], result["replay"]["sglang-router"]
    print(f"  LMetric / sglang-router TTFT mean: {lm['ttft']['mean'] / sg['ttft']['mean']:.3f}")
    if args.output_json is not None:
        from wildserve.io import atomic_write_json

        atomic_write_json(args.output_json, result)
        print(f"results: {args.output_json}")


if __name__ == "__main__":
    main()
