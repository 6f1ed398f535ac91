"""This gateway (lmetric, round-robin) vs sglang-router (cache_aware) on the same emulated engines.

Part 1, routing quality: four emulated qwen2.5-7b/H20 engines (fresh for each router) and the same
replayed slice of the Mooncake conversation trace; client-side TTFT mean / p99 per router.
Part 2, overhead: the same four engines with zero modeled delay (``--speed inf``); sequential small
streamed requests sent directly to the engines (round-robin) and through each router; the added
latency (p50 / p99 of the router run minus the direct run) and the router process's CPU time per
request. Everything runs on 127.0.0.1 and stops by itself.

    .venv/bin/python benchmarks/gateway_vs_sglang_router.py [--requests 300 --rate-scale 0.3 --speed 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _servers import cpu_seconds, start_engines, start_router, stop  # noqa: E402
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


async def _sequential(urls: list[str], n: int, prompt_bytes: int, seed: int) -> np.ndarray:
    """E2E seconds of ``n`` streamed requests sent one at a time, cycling over ``urls``."""
    import aiohttp

    rng = np.random.default_rng(seed)
    lat = np.empty(n)
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            prompt = rng.integers(97, 123, size=prompt_bytes, dtype=np.uint8).tobytes().decode()
            body = {"model": "qwen2.5-7b", "prompt": prompt, "max_tokens": 4, "stream": True}
            url = urls[i % len(urls)] + "/v1/completions"
            t0 = time.perf_counter()
            async with s.post(url, json=body) as r:
                async for _ in r.content:
                    pass
                assert r.status == 200
            lat[i] = time.perf_counter() - t0
    return lat


def part2(args) -> dict:
    engines, urls, endpoints = start_engines(4, "inf")
    out: dict = {}
    try:
        asyncio.run(_sequential(urls, 200, args.prompt_bytes, seed=1))  # warm-up
        direct = asyncio.run(_sequential(urls, args.overhead_requests, args.prompt_bytes, seed=2))
        out["direct"] = {"p50_ms": float(np.percentile(direct, 50)) * 1e3,
                         "p99_ms": float(np.percentile(direct, 99)) * 1e3}  # fmt: skip
        print(
            f"  {'direct':14s} p50 {out['direct']['p50_ms']:.3f} ms  p99 {out['direct']['p99_ms']:.3f} ms"
        )
        for name in ROUTERS:
            router, url = start_router(name, urls, endpoints)
            try:
                asyncio.run(_sequential([url], 200, args.prompt_bytes, seed=3))  # warm-up
                idle0 = cpu_seconds(router.pid)
                time.sleep(args.idle_seconds)  # background work (health checks, polls) when idle
                idle_rate = (cpu_seconds(router.pid) - idle0) / args.idle_seconds
                cpu0 = cpu_seconds(router.pid)
                t0 = time.perf_counter()
                lat = asyncio.run(
                    _sequential([url], args.overhead_requests, args.prompt_bytes, seed=2)
                )
                wall = time.perf_counter() - t0
                cpu = cpu_seconds(router.pid) - cpu0
            finally:
                stop([router])
            p50, p99 = (float(np.percentile(lat, q)) * 1e3 for q in (50, 99))
            n = args.overhead_requests
            out[name] = {
                "p50_ms": p50,
                "p99_ms": p99,
                "added_p50_ms": p50 - out["direct"]["p50_ms"],
                "added_p99_ms": p99 - out["direct"]["p99_ms"],
                "cpu_us_per_request": cpu / n * 1e6,
                "idle_cpu_fraction": idle_rate,
                "net_cpu_us_per_request": max(0.0, cpu - idle_rate * wall) / n * 1e6,
            }
            r = out[name]
            print(f"  {name:14s} p50 {p50:.3f} ms  p99 {p99:.3f} ms  added p50 {r['added_p50_ms']:+.3f} ms  "
                  f"p99 {r['added_p99_ms']:+.3f} ms  CPU {r['cpu_us_per_request']:.0f} us/request "
                  f"({r['net_cpu_us_per_request']:.0f} net of {r['idle_cpu_fraction']:.2%} idle)",
                  flush=True)  # fmt: skip
    finally:
        stop(engines)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="builtin:mooncake-conversation")
    ap.add_argument("--requests", type=int, default=300, help="first N requests of the trace")
    ap.add_argument("--rate-scale", type=float, default=0.3, help="arrival rate x (modeled time)")
    ap.add_argument("--speed", type=float, default=4.0, help="engines' clock speed-up")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--overhead-requests", type=int, default=2000)
    ap.add_argument("--prompt-bytes", type=int, default=2000)
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU measured this long")
    ap.add_argument("--output-json", type=Path, default=None)
    ap.add_argument("--skip-replay", action="store_true")
    args = ap.parse_args()
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_replay:
        print(f"part 1: {args.requests} Mooncake requests, rate x{args.rate_scale}, engines x{args.speed} "
              "speed (wall-clock seconds; x speed for modeled seconds)", flush=True)  # fmt: skip
        result["replay"] = part1(args)
        lm, sg = result["replay"]["lmetric"], result["replay"]["sglang-router"]
        print(f"  LMetric / sglang-router TTFT mean: {lm['ttft']['mean'] / sg['ttft']['mean']:.3f}")
    print(f"part 2: zero-delay engines, {args.overhead_requests} sequential streamed requests "
          f"of {args.prompt_bytes} bytes", flush=True)  # fmt: skip
    result["overhead"] = part2(args)
    ov = result["overhead"]
    for key in ("cpu_us_per_request", "net_cpu_us_per_request"):
        print(
            f"  LMetric / sglang-router {key}: {ov['lmetric'][key] / ov['sglang-router'][key]:.2f}"
        )
    if args.output_json is not None:
        from wildserve.io import atomic_write_json

        atomic_write_json(args.output_json, result)
        print(f"results: {args.output_json}")


if __name__ == "__main__":
    main()
