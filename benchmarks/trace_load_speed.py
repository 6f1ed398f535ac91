"""Trace loading speed: a generated 1M-request Mooncake file, streamed, vs a naive json.loads loop.

Usage: python benchmarks/trace_load_speed.py [--requests N] [--materialize]

Each measurement runs in a fresh child process so its peak RSS is its own; RSS growth is the peak
minus the RSS right before reading. The file copies the builtin trace's length and block-count
distribution with fresh ids and evenly spread timestamps.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    """This process's peak RSS (VmHWM); ru_maxrss would include the parent's peak from before exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def generate(path: Path, num_requests: int, seed: int = 0) -> None:
    """Write a Mooncake-format file whose lengths resample the builtin conversation trace."""
    from wildserve.workload import load_trace

    base = load_trace()
    rng = np.random.default_rng(seed)
    lengths = np.array([(r.prompt_tokens, r.output_tokens) for r in base])
    picks = rng.integers(0, len(base), num_requests)
    next_id = 0
    with path.open("wb") as fh:
        for i, k in enumerate(picks.tolist()):
            inp, out = int(lengths[k, 0]), int(lengths[k, 1])
            n = -(-inp // 512)
            shared = min(n, int(rng.integers(0, 4)))  # a short shared prefix, like a system prompt
            ids = list(range(shared)) + list(range(next_id + 4, next_id + 4 + n - shared))
            next_id += n - shared
            rec = {"timestamp": i * 3, "input_length": inp, "output_length": out, "hash_ids": ids}
            fh.write(orjson.dumps(rec) + b"\n")


def child(mode: str, path: str) -> None:
    """Run one measurement and print it as JSON (called in a fresh interpreter)."""
    from wildserve.workload import iter_trace, load_trace
    from wildserve.workload.request import Request

    before = _rss_mib()
    t0 = time.perf_counter()
    if mode == "streaming":
        n = sum(1 for _ in iter_trace(f"mooncake:{path}"))
    elif mode == "materialize":
        n = len(load_trace(f"mooncake:{path}"))
    else:  # naive: json.loads per line, no validation, same Request objects
        n = 0
        with open(path, "rb") as fh:
            for line in fh:
                d = json.loads(line)
                Request(
                    request_id=n,
                    arrival_s=d["timestamp"] / 1000.0,
                    prompt_tokens=d["input_length"],
                    output_tokens=d["output_length"],
                    hash_ids=tuple(d["hash_ids"]),
                    block_size=512,
                )
                n += 1
    seconds = time.perf_counter() - t0
    print(json.dumps({"requests": n, "seconds": seconds, "rss_growth_mib": _peak_mib() - before}))


def measure(mode: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--materialize", action="store_true", help="also time load_trace (a list)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mooncake_1m.jsonl"
        t0 = time.perf_counter()
        generate(path, args.requests)
        size_mib = path.stat().st_size / 2**20
        print(
            f"generated {args.requests:,} requests, {size_mib:,.0f} MiB in {time.perf_counter() - t0:.1f} s"
        )
        modes = ["streaming", "naive"] + (["materialize"] if args.materialize else [])
        results = {mode: measure(mode, path) for mode in modes}
    print(f"{'mode':<12} {'requests':>10} {'seconds':>8} {'req/s':>10} {'peak RSS growth':>16}")
    for mode, r in results.items():
        rate = r["requests"] / r["seconds"]
        print(
            f"{mode:<12} {r['requests']:>10,} {r['seconds']:>8.2f} {rate:>10,.0f} {r['rss_growth_mib']:>12.1f} MiB"
        )
    ratio = results["naive"]["seconds"] / results["streaming"]["seconds"]
    print(
        f"streaming iter_trace vs naive json.loads loop: {ratio:.2f}x the speed (naive s / ours s)"
    )


if __name__ == "__main__":
    main()
