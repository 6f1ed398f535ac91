"""The gateway's per-request prefix path, piece by piece, in one process (CPU time, not wall time).

For prompts of each size (one of 16 tenants' shared prefixes plus a unique tenth): JSON parse, prompt
-> tokens (bytes, or a Hugging Face ``tokenizer.json`` with ``--tokenizer``: ``encode`` one prompt and
``encode_batch`` of 32), chained block hashes (the native kernel vs the CPython definition it
reproduces), the router-local radix index (match + insert) and the LMetric decision over 4 views.

    .venv/bin/python benchmarks/gateway_prefix_path.py [--tokenizer path/to/tokenizer.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from wildserve.blocks import ROOT_HASH, load_native, token_block_hashes  # noqa: E402
from wildserve.routing import RouteRequest, make_policy  # noqa: E402
from wildserve.routing.local import RouterLocalViews  # noqa: E402


def cpu_us(fn, items) -> float:
    """Mean CPU microseconds of ``fn(item)`` over ``items``."""
    t0 = time.process_time()
    for x in items:
        fn(x)
    return (time.process_time() - t0) / len(items) * 1e6


def python_hashes(tokens, bs: int) -> list[int]:
    out, h = [], ROOT_HASH
    for s in range(0, len(tokens) - bs + 1, bs):
        h = hash((h, tuple(tokens[s : s + bs])))
        out.append(h)
    return out


def prompts(chars: int, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ", dtype=np.uint8)
    suffix = max(16, chars // 10)
    tenants = [letters[rng.integers(0, 27, chars - suffix)].tobytes().decode() for _ in range(16)]
    return [tenants[i % 16] + f"{i:016d}" + "z" * (suffix - 16) for i in range(n)]


def _router(views: RouterLocalViews, policy):
    """One routing decision as the gateway makes it: views, policy, dispatch and release."""

    def route(r: RouteRequest) -> None:
        chosen = policy.choose(r, views.views(r))
        policy.on_dispatch(chosen, r)
        views.on_dispatch(chosen, r)
        views.on_finish(r.request_id)

    return route


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--tokenizer", default=None, help="a Hugging Face tokenizer.json")
    args = ap.parse_args()
    load_native()
    tok = None
    if args.tokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(args.tokenizer)
    print("| prompt | step | CPU us/request | per 1k tokens |")
    print("| --- | --- | ---: | ---: |")
    for chars in (int(x) for x in args.sizes.split(",")):
        texts = prompts(chars, args.requests)
        bodies = [orjson.dumps({"model": "m", "prompt": t, "max_tokens": 4}) for t in texts]
        encoded = [t.encode() for t in texts]
        hashes = [token_block_hashes(b, 16) for b in encoded]
        rows = [
            ("orjson.loads of the body", cpu_us(orjson.loads, bodies), chars),
            ("bytes tokens (str.encode)", cpu_us(str.encode, texts), chars),
            ("block hashes, native", cpu_us(lambda b: token_block_hashes(b, 16), encoded), chars),
            ("block hashes, CPython tuples", cpu_us(lambda b: python_hashes(b, 16), encoded[:200]),
             chars),
        ]  # fmt: skip
        if tok is not None:
            ids = [tok.encode(t, add_special_tokens=False).ids for t in texts[:300]]
            ntok = float(np.mean([len(x) for x in ids]))
            rows.append(("HF encode, one prompt", cpu_us(
                lambda t: tok.encode(t, add_special_tokens=False), texts[:300]), ntok))  # fmt: skip
            batches = [texts[i : i + 32] for i in range(0, 288, 32)]
            per = cpu_us(lambda b: tok.encode_batch_fast(b, add_special_tokens=False), batches)
            rows.append(("HF encode_batch_fast of 32, per prompt", per / 32, ntok))
            rows.append(("block hashes of HF ids, native",
                         cpu_us(lambda x: token_block_hashes(x, 16), ids), ntok))  # fmt: skip
        reqs = [RouteRequest(i, chars, h, 16) for i, h in enumerate(hashes)]
        route = _router(RouterLocalViews(4, 16), make_policy("lmetric"))
        rows.append(("views + LMetric + radix insert (4 backends)", cpu_us(route, reqs), chars))
        for name, us, ntokens in rows:
            print(f"| {chars:,} chars | {name} | {us:,.1f} | {us / ntokens * 1000:,.1f} |")


if __name__ == "__main__":
    main()
