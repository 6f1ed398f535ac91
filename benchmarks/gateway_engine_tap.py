"""What each engine receives from a router, and what its KV bookkeeping costs per request.

Four emulated engines (``--speed inf``) with a tap, one router in front (this gateway with any
``--policy``, or ``sglang-router``), ``wrk -t2 -c64`` for ``--seconds`` with the prompts of
``gateway_throughput.py``. Each engine counts, from its first routed request on: the request headers
(values of Host and Content-Length masked), body bytes, socket reads and client connections; the
requests in flight there when one arrives; the tenants it served (a tenant is its prompt's first 16
characters); its engine steps and their CPU; and the KV blocks whose reference count went to 0 on
release (pushed to the eviction policy) or came from 0 on a prefix hit (removed from it). A tenant whose
prefix blocks are still held by another of its requests when the next one arrives moves none.

Taps are monkeypatches in the engine process (``engine`` sub-command); their timers add to the step
CPU, equally for every router. Not a timed benchmark: it shows what differs between routers.

    .venv/bin/python benchmarks/gateway_engine_tap.py --router lmetric --prompt-chars 20000
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

_S: dict = {}


def _install_taps() -> None:
    """Patch the engine server, engine and block pool of this process to count into ``_S``."""
    import numpy as np
    import orjson
    from aiohttp import web, web_protocol

    from wildserve.engine import block_pool, engine
    from wildserve.gateway import engine_server

    s = _S
    s.update(on=False, reqs=0, in_flight=0, reads=0, read_bytes=0, steps=0, step_cpu=0.0,
             to_policy=0, from_policy=0, headers=collections.Counter(),
             conns=collections.Counter(), tenants=collections.Counter(),
             in_flight_hist=collections.Counter())  # fmt: skip

    data_received = web_protocol.RequestHandler.data_received

    def tap_data(self, data):
        if s["on"]:
            s["reads"] += 1
            s["read_bytes"] += len(data)
        return data_received(self, data)

    step = engine.Engine.step

    def tap_step(self, *args, **kwargs):
        t = time.thread_time()
        result = step(self, *args, **kwargs)
        if s["on"]:
            s["step_cpu"] += time.thread_time() - t
            s["steps"] += 1
        return result

    acquire = block_pool.BlockPool.acquire

    def tap_acquire(self, block_ids, *args, **kwargs):
        if s["on"] and len(block_ids):
            ids = np.asarray(block_ids, np.int64)
            s["from_policy"] += int(np.count_nonzero(self.ref_cnt[ids] == 0))
        return acquire(self, block_ids, *args, **kwargs)

    release = block_pool.BlockPool.release

    def tap_release(self, block_ids, *args, **kwargs):
        result = release(self, block_ids, *args, **kwargs)
        if s["on"] and len(block_ids):
            ids = np.asarray(block_ids, np.int64)
            s["to_policy"] += int(np.count_nonzero(self.ref_cnt[ids] == 0))
        return result

    web_protocol.RequestHandler.data_received = tap_data
    engine.Engine.step = tap_step
    block_pool.BlockPool.acquire = tap_acquire
    block_pool.BlockPool.release = tap_release

    @web.middleware
    async def tap(request, handler):
        if request.path != "/v1/completions":
            return await handler(request)
        s["on"] = True
        s["reqs"] += 1
        masked = ("content-length", "host")
        key = tuple(sorted((k.lower(), "*" if k.lower() in masked else v)
                           for k, v in request.headers.items()))  # fmt: skip
        s["headers"][key] += 1
        s["conns"][request.transport.get_extra_info("peername")[1]] += 1
        raw = await request.read()
        at = raw.find(b'"prompt":"') + 10
        s["tenants"][raw[at : at + 16]] += 1
        s["in_flight_hist"][s["in_flight"]] += 1
        s["in_flight"] += 1
        try:
            return await handler(request)
        finally:
            s["in_flight"] -= 1

    async def report(request):
        n = max(1, s["reqs"])
        hist = s["in_flight_hist"]
        out = {
            "requests": s["reqs"],
            "headers": [[dict(k), v] for k, v in s["headers"].items()],
            "connections": len(s["conns"]),
            "reads_per_request": s["reads"] / n,
            "bytes_per_request": s["read_bytes"] / n,
            "in_flight_at_arrival": sum(k * v for k, v in hist.items()) / n,
            "tenants": sorted(s["tenants"].values(), reverse=True),
            "steps_per_request": s["steps"] / n,
            "step_cpu_us_per_request": s["step_cpu"] / n * 1e6,
            "blocks_to_policy_per_request": s["to_policy"] / n,
            "blocks_from_policy_per_request": s["from_policy"] / n,
        }
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    openai_app = engine_server.api.openai_app

    def tapped_app(key, service, max_size, routes):
        app = openai_app(key, service, max_size, [*routes, ("GET", "/tap", report)])
        app.middlewares.insert(0, tap)
        return app

    engine_server.api.openai_app = tapped_app


def _engine(argv: list[str]) -> None:
    _install_taps()
    from wildserve.cli import main

    sys.argv = ["wildserve", "engine", *argv]
    main()


def main() -> None:
    if sys.argv[1:2] == ["engine"]:
        _engine(sys.argv[2:])
        return
    import _servers as sv
    from gateway_throughput import lua_script

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--router", default="lmetric", help="a gateway --policy, or sglang-router")
    ap.add_argument("--prompt-chars", type=int, default=20000)
    ap.add_argument("--mode", choices=["plain", "stream"], default="plain")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--backends", type=int, default=4)
    ap.add_argument("--output-json", type=Path, default=None)
    args = ap.parse_args()
    sv.exit_on_sigterm()
    procs, urls = [], []
    for _ in range(args.backends):
        port = sv.free_port()
        cmd = [sv.PY, __file__, "engine", "--model", sv.MODEL, "--gpu", "h20", "--speed", "inf",
               "--port", str(port)]  # fmt: skip
        procs.append(sv.spawn(cmd))
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        sv.wait_http(f"{url}/health")
    router = None
    try:
        router, url = sv.start_router(args.router, urls, [])
        script = Path(f"/tmp/engine-tap-{args.prompt_chars}-{args.mode}.lua")
        script.write_text(lua_script(args.prompt_chars, 16, 0.1, args.mode == "stream"))
        cmd = ["wrk", "-t", "2", "-c", "64", "-d", f"{args.seconds}s", "--timeout", "10s",
               "-s", str(script), url]  # fmt: skip
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=True, preexec_fn=sv.dies_with_us()
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
        wrk = json.loads(line.removeprefix("WRK_JSON "))
        engines = []
        for u in urls:
            with urllib.request.urlopen(f"{u}/tap", timeout=10) as resp:
                engines.append(json.loads(resp.read()))
    finally:
        sv.stop([p for p in [router, *procs] if p is not None])
    rate = wrk["requests"] / (wrk["duration_us"] / 1e6)
    print(f"{args.router}, {args.prompt_chars} chars {args.mode}: {rate:,.0f} req/s (untimed)")
    for i, e in enumerate(engines):
        print(f"  engine {i}: {e['requests']} requests on {e['connections']} connections, "
              f"{e['reads_per_request']:.2f} reads and {e['bytes_per_request']:,.0f} B each, "
              f"{e['in_flight_at_arrival']:.1f} in flight at arrival, {len(e['tenants'])} tenants; "
              f"per request {e['steps_per_request']:.2f} steps, "
              f"{e['step_cpu_us_per_request']:.0f} us step CPU, "
              f"{e['blocks_to_policy_per_request']:.0f} blocks to the eviction policy, "
              f"{e['blocks_from_policy_per_request']:.0f} from it")  # fmt: skip
    for headers, count in engines[0]["headers"]:
        print(f"  engine 0 headers ({count} requests): {headers}")
    if args.output_json is not None:
        args.output_json.write_text(
            json.dumps(
                {"args": vars(args) | {"output_json": None}, "req_per_s": rate, "engines": engines},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
