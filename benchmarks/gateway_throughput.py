"""Router throughput and CPU per request at 64 connections: this gateway vs sglang-router, one run.

For each prompt size and mode (non-streamed, streamed), and for each router in turn (fresh zero-delay
engines each time, so every router starts from cold caches), ``wrk`` (Debian's package: a compiled load
generator, so the client is not the bottleneck) keeps ``--connections`` requests in flight against the
router for ``--warmup`` then ``--duration`` seconds. Prompts are ``/v1/completions`` of one of
``--tenants`` shared prefixes plus a unique suffix (``--unique-fraction`` of the prompt), ``max_tokens``
4. Reported: requests/s, p50/p99 latency (wrk's), non-2xx answers, and the router's CPU per request:
user + system time of the router process and its children (all threads) during the measured window,
divided by the requests completed in it. Routers and engines share the machine's cores with wrk.
Beside it: the busiest engine's share of the engines' CPU and the largest share of the requests
any one engine served (either shows a placement that overloads one single-threaded engine), the
engines' CPU per request, and the prefix-cache hit ratio (prompt tokens found cached / looked up,
from the engines' ``/metrics`` counters over the window: a placement that splits tenants across
engines misses more and gives the engines more work per request).

Before the first cell, one engine and one gateway serve a few requests of each size and mode: the
engines' numba kernels compile on their first request (or load from numba's cache), which on a cold
cache stalls them for seconds, long enough for the gateway's health checks to eject them all.

Each cell measures its routers in a different order (rotated by one per cell), so that a drift of the
machine's load over a cell, or any effect of going first, does not always fall on the same router.

Run it at nice 0 with the machine's other work niced (``/work/coord/timed`` renices the others but
keeps the caller's own niceness: from a niced shell, call it as ``timed nice -n -19 ...``). Its own
niceness is recorded in the JSON and a warning is printed when it is above 0: a niced benchmark
competes with everything else on equal terms, and its absolute rates then measure the machine's
other work more than the routers (measured: 3-4x lower rates than at nice 0).

    .venv/bin/pip install -e '.[test,gateway,compare]' && apt-get install -y wrk
    .venv/bin/python benchmarks/gateway_throughput.py --output-json results/gateway_throughput.json

``--gateway-workers 2`` runs every gateway router as ``wildserve gateway --workers 2``; a router
written ``lmetric@2w`` does so for that router alone (CPU then counts the parent and its workers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _servers import (  # noqa: E402
    MODEL,
    cpu_seconds,
    dies_with_us,
    exit_on_sigterm,
    start_engines,
    start_router,
    stop,
)

ROUTERS = ["lmetric", "lmetric+kv-events", "round-robin", "sglang-router"]

# wrk's Lua: one body per request, built from a tenant prefix and a per-thread unique counter.
_LUA = r"""
local prefixes = {}
local suffix_fill = ""
local tenants, prefix_chars, suffix_chars, stream = %(tenants)d, %(prefix_chars)d, %(suffix_chars)d, "%(stream)s"
local counter = 0
local threads = {}
thread_id = 0  -- a global: setup() sets each thread's own through thread:set

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local letters = "abcdefghijklmnopqrstuvwxyz "
  for t = 1, tenants do
    local seed = t * 7919
    local parts = {}
    for i = 1, prefix_chars do
      seed = (seed * 1103515245 + 12345) %% 2147483648
      local k = (seed %% 27) + 1
      parts[i] = letters:sub(k, k)
    end
    prefixes[t] = table.concat(parts)
  end
  suffix_fill = string.rep("z", math.max(0, suffix_chars - 16))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local tenant = (counter %% tenants) + 1
  local unique = string.format("%%04d%%012d", thread_id, counter)
  local body = '{"model":"%(model)s","prompt":"' .. prefixes[tenant] .. unique .. suffix_fill ..
    '","max_tokens":4,"stream":' .. stream .. '}'
  return wrk.format(nil, "%(path)s", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"status_errors":%%d,"connect":%%d,' ..
    '"read":%%d,"write":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def lua_script(prompt_chars: int, tenants: int, unique_fraction: float, stream: bool) -> str:
    suffix = max(16, round(prompt_chars * unique_fraction))
    return _LUA % {
        "tenants": tenants,
        "prefix_chars": prompt_chars - suffix,
        "suffix_chars": suffix,
        "stream": "true" if stream else "false",
        "model": MODEL,
        "path": "/v1/completions",
    }


def run_wrk(url: str, script: Path, seconds: float, connections: int, threads: int) -> dict:
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
           "--timeout", "10s", "-s", str(script), url]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, preexec_fn=dies_with_us()
    ).stdout
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line.removeprefix("WRK_JSON "))
    raise RuntimeError(f"wrk printed no summary:\n{out}")


_COUNTERS = {
    "vllm:request_success_total": "requests",
    "vllm:prefix_cache_queries_total": "queries",
    "vllm:prefix_cache_hits_total": "hits",
}


def engine_counters(url: str) -> dict[str, float]:
    """The engine's requests served and prefix-cache queried/hit tokens, from its ``/metrics``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = dict.fromkeys(_COUNTERS.values(), 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in _COUNTERS:
            out[_COUNTERS[name]] += float(line.rsplit(" ", 1)[1])
    return out


def measure(
    router_pid: int, engine_pids: list[int], engine_urls: list[str], url: str, script: Path, args
) -> dict:
    run_wrk(url, script, args.warmup, args.connections, args.wrk_threads)
    cpu0 = cpu_seconds(router_pid)
    eng0 = [cpu_seconds(p) for p in engine_pids]
    ctr0 = [engine_counters(u) for u in engine_urls]
    stats = run_wrk(url, script, args.duration, args.connections, args.wrk_threads)
    cpu = cpu_seconds(router_pid) - cpu0
    eng = [cpu_seconds(p) - c for p, c in zip(engine_pids, eng0, strict=True)]
    ctr = [
        {k: v - before[k] for k, v in engine_counters(u).items()}
        for u, before in zip(engine_urls, ctr0, strict=True)
    ]
    served = [c["requests"] for c in ctr]
    n = max(1, stats["requests"])
    errors = stats["status_errors"] + stats["connect"] + stats["read"] + stats["timeout"]
    return {
        "requests": stats["requests"],
        "req_per_s": stats["requests"] / (stats["duration_us"] / 1e6),
        "p50_ms": stats["p50_us"] / 1e3,
        "p99_ms": stats["p99_us"] / 1e3,
        "errors": errors,
        "router_cpu_s": cpu,
        "cpu_us_per_request": cpu / n * 1e6,
        "engines_cpu_us_per_request": sum(eng) / n * 1e6,
        "engine_cpu_shares": [round(e / max(1e-9, sum(eng)), 3) for e in eng],
        "engine_requests": served,
        "engine_request_shares": [round(r / max(1.0, sum(served)), 3) for r in served],
        # prompt tokens found in the engines' prefix caches / prompt tokens looked up, in the window
        "prefix_hit_ratio": sum(c["hits"] for c in ctr) / max(1.0, sum(c["queries"] for c in ctr)),
        "engine_prefix_hit_ratios": [round(c["hits"] / max(1.0, c["queries"]), 4) for c in ctr],
        "router_threads": _threads(router_pid),
    }


def prime(args) -> None:
    """Serve a few requests of every size and mode once, unmeasured: compiles (or loads) every
    numba kernel the engines and the gateway use, so that no measured cell pays for it."""
    engines, urls, endpoints = start_engines(1, "inf", True)
    proc = None
    try:
        proc, url = start_router("lmetric+kv-events", urls, endpoints)
        for size in [int(x) for x in args.prompt_chars.split(",")]:
            for stream in (False, True):
                prompt = "p" * size
                body = json.dumps(
                    {"model": MODEL, "prompt": prompt, "max_tokens": 4, "stream": stream}
                )
                for _ in range(3):
                    req = urllib.request.Request(f"{url}/v1/completions", body.encode(),
                                                 {"Content-Type": "application/json"})  # fmt: skip
                    with urllib.request.urlopen(req, timeout=120) as resp:
                        resp.read()
    finally:
        stop([p for p in [proc, *engines] if p is not None])


def _threads(pid: int) -> int:
    """Threads of the router process and its children (sglang-router's runtime is multi-threaded)."""
    from _servers import descendants

    return sum(len(os.listdir(f"/proc/{p}/task")) for p in [pid, *descendants(pid)])


def router_problem(kind: str) -> str | None:
    """Why ``kind`` is no router ``start_router`` can start (None if it is one)."""
    from wildserve.routing.policy import ROUTING_POLICIES

    if kind == "sglang-router":
        return None
    base, at, workers = kind.partition("@")
    if at and not (workers.endswith("w") and workers[:-1].isdigit() and int(workers[:-1]) >= 1):
        return "the worker count is written @Nw with N >= 1 (e.g. lmetric@2w)"
    policy = base.removesuffix("+kv-events")
    if policy not in ROUTING_POLICIES:
        known = ", ".join(ROUTING_POLICIES.names())
        return f"unknown policy {policy!r} (sglang-router or one of {known}, optionally +kv-events)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--routers",
        default=",".join(ROUTERS),
        help="routers to measure; a gateway's ROUTER@Nw runs it with --workers N",
    )
    ap.add_argument(
        "--gateway-workers",
        type=int,
        default=1,
        help="--workers for every gateway router not given as ROUTER@Nw",
    )
    ap.add_argument("--backends", type=int, default=4)
    ap.add_argument("--prompt-chars", default="2000,20000")
    ap.add_argument("--modes", default="plain,stream", help="plain (non-streamed) and/or stream")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--duration", type=float, default=15.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each")
    ap.add_argument("--tenants", type=int, default=16)
    ap.add_argument("--unique-fraction", type=float, default=0.1)
    ap.add_argument("--output-json", type=Path, default=None)
    args = ap.parse_args()
    exit_on_sigterm()  # a SIGTERM stops the engines and router of the cell it interrupts
    niceness = os.nice(0)
    if niceness > 0:
        print(f"warning: running at nice {niceness}: the routers share the cores with every other "
              "job on equal terms (see the docstring)", file=sys.stderr)  # fmt: skip
    sizes = [int(x) for x in args.prompt_chars.split(",")]
    modes = args.modes.split(",")
    routers = [
        r if r == "sglang-router" or "@" in r or args.gateway_workers == 1
        else f"{r}@{args.gateway_workers}w"
        for r in args.routers.split(",")
    ]  # fmt: skip
    for r in routers:  # before minutes of priming and cells, not when the router's turn comes
        if (problem := router_problem(r)) is not None:
            sys.exit(f"--routers: {r!r}: {problem}")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    tmp = Path(tempfile.mkdtemp(prefix="gateway-throughput-"))
    results: dict = {
        "args": vars(args) | {"output_json": str(args.output_json)},
        "nice": niceness,
        "cells": [],
    }
    t0 = time.perf_counter()
    prime(args)
    # routers inner: each cell's routers are measured minutes, not an hour, apart
    for num_cell, (size, mode) in enumerate((s, m) for s in sizes for m in modes):
        script = tmp / f"{size}-{mode}.lua"
        script.write_text(lua_script(size, args.tenants, args.unique_fraction, mode == "stream"))
        order = routers[num_cell % len(routers) :] + routers[: num_cell % len(routers)]
        for position, router in enumerate(order):  # fresh engines for each: cold caches
            kv = router.partition("@")[0].endswith("kv-events")
            engines, urls, endpoints = start_engines(args.backends, "inf", kv)
            proc = None
            try:
                proc, url = start_router(router, urls, endpoints)
                cell = {"router": router, "prompt_chars": size, "mode": mode, "position": position}
                cell |= measure(proc.pid, [e.pid for e in engines], urls, url, script, args)
            finally:
                stop([p for p in [proc, *engines] if p is not None])
            results["cells"].append(cell)
            print(f"{size:>6} chars {mode:6s} {router:18s} {cell['req_per_s']:8.0f} req/s  "
                  f"p50 {cell['p50_ms']:6.1f} ms  p99 {cell['p99_ms']:6.1f} ms  "
                  f"CPU {cell['cpu_us_per_request']:6.0f} us/req (engines "
                  f"{cell['engines_cpu_us_per_request']:.0f}, busiest "
                  f"{max(cell['engine_cpu_shares']):.0%}, most requests "
                  f"{max(cell['engine_request_shares']):.0%}, prefix hits "
                  f"{cell['prefix_hit_ratio']:.1%})  threads "
                  f"{cell['router_threads']}  errors {cell['errors']}", flush=True)  # fmt: skip
    results["wall_s"] = time.perf_counter() - t0
    print(markdown(results["cells"]))
    if args.output_json is not None:
        from wildserve.io import atomic_write_json

        atomic_write_json(args.output_json, results)
        print(f"results: {args.output_json}")


def markdown(cells: list[dict]) -> str:
    """One row per (prompt, mode, router), with req/s and CPU per request against sglang-router."""
    base = {(c["prompt_chars"], c["mode"]): c for c in cells if c["router"] == "sglang-router"}
    lines = [
        "| prompt | mode | router | req/s | p50 ms | p99 ms | router CPU us/req | "
        "req/s vs sglang | CPU vs sglang | engines CPU us/req | busiest engine | most requests | "
        "prefix hits | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rank = {r: i for i, r in enumerate(ROUTERS)}
    for c in sorted(
        cells,
        key=lambda c: (c["prompt_chars"], c["mode"], rank.get(c["router"].partition("@")[0], 99)),
    ):
        ref = base.get((c["prompt_chars"], c["mode"]))
        rate = f"{c['req_per_s'] / ref['req_per_s']:.2f}x" if ref else ""
        cpu = f"{c['cpu_us_per_request'] / ref['cpu_us_per_request']:.2f}x" if ref else ""
        # blank for results written before the engines' counters were read
        shares = f"{max(c['engine_request_shares']):.0%}" if "engine_request_shares" in c else ""
        hits = f"{c['prefix_hit_ratio']:.1%}" if "prefix_hit_ratio" in c else ""
        lines.append(
            f"| {c['prompt_chars']:,} chars | {c['mode']} | {c['router']} | {c['req_per_s']:,.0f} | "
            f"{c['p50_ms']:.1f} | {c['p99_ms']:.1f} | {c['cpu_us_per_request']:,.0f} | {rate} | "
            f"{cpu} | {c.get('engines_cpu_us_per_request', 0):,.0f} | "
            f"{max(c.get('engine_cpu_shares', [0])):.0%} | "
            f"{shares} | {hits} | {c['errors']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
