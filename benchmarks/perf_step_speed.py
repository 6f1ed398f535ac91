"""Speed of the step-cost model as the simulator calls it; ratios against baselines in the same run.

    python benchmarks/perf_step_speed.py [--calls 200000] [--seed 0]

Baselines: ``breakdown`` (the same cost, built op by op without the per-token-count cache) for
``step_time``, and a Python loop of ``step_time`` calls for ``decode_run_times``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from wildserve.perf.batch import BatchShape
from wildserve.perf.cost import build_cost_model


def make_shapes(n: int, rng: np.random.Generator) -> list[BatchShape]:
    """Engine-like steps: up to 256 decodes, sometimes one prefill chunk under an 8192-token budget."""
    shapes = []
    for _ in range(n):
        shape = BatchShape()
        for ctx in rng.integers(100, 8000, size=int(rng.integers(1, 257))):
            shape.add_chunk(1, int(ctx), samples=True)
        if rng.random() < 0.3:
            shape.add_chunk(
                int(rng.integers(16, 8192 - shape.num_tokens)),
                int(rng.integers(0, 20000)),
                samples=True,
            )
        shapes.append(shape)
    return shapes


def per_call_us(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    shapes = make_shapes(args.calls, rng)
    for model, gpu, tp in (
        ("qwen2.5-7b", "h20", 1),
        ("llama-3-70b", "h100", 4),
        ("qwen3-30b-a3b", "h20", 1),
    ):
        cm = build_cost_model("analytic", model, gpu, tp)
        fast = per_call_us(cm.step_time, shapes)
        slow = per_call_us(cm.breakdown, shapes[: max(1, args.calls // 10)])
        run = 1000
        t0 = time.perf_counter()
        for _ in range(100):
            cm.decode_run_times(128, 128 * 2000, run)
        vec = (time.perf_counter() - t0) / 100
        t0 = time.perf_counter()
        for i in range(run):
            cm.step_time(
                BatchShape(
                    num_decode_tokens=128, decode_ctx_tokens=128 * (2000 + i), num_sampled=128
                )
            )
        loop = time.perf_counter() - t0
        print(
            f"{model} on {gpu} x{tp}: step_time {fast:.2f} us/call ({1e6 / fast:,.0f} calls/s), "
            f"breakdown {slow:.2f} us/call, ratio {slow / fast:.1f}x; decode_run_times({run} steps) "
            f"{vec * 1e6:.0f} us vs loop {loop * 1e6:.0f} us, ratio {loop / vec:.0f}x"
        )


if __name__ == "__main__":
    main()
