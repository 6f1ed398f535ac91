"""Exact offline replay of the history drafter on SmolLM2's own samples (tokens per target forward).

A deterministic draft (chain or tree) verified losslessly emits each token exactly as the target
would sample it, and keeps going while that token is a drafted child. So for a response y sampled
from the target, the forwards speculation needs are found by walking y: at position t the drafter
proposes from y[:t], the accepted path is the longest path of the draft that y follows, and the
step emits it plus y's next token. Averaging over sampled responses gives the drafter's expected
tokens per target forward without running a single verification, so drafting rules can be compared
on the same samples. (Model drafters draw random drafts: they cannot be replayed this way.)

The rollout has ``epochs x samples`` responses per prompt, all plain samples of the same policy
(nothing is trained between epochs, as in the `wildserve rollout` runs). Response j of epoch e is
replayed with the history of all earlier epochs plus samples < j of epoch e (of its own prompt;
other prompts' responses of epoch e enter the global index after sample j of every prompt).

Run: python benchmarks/rollout_history_replay.py --prompts 16 --samples 4 --epochs 3 \
         --temperature 1.0 [--samples-file samples.json] [--ceiling]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import torch

from wildserve.io import atomic_write_json
from wildserve.rollout.config import SamplingConfig, SpecConfig
from wildserve.rollout.drafters import DRAFTERS, Draft, Drafter, DrafterContext
from wildserve.rollout.drafters.lookup import START, SuffixTrie
from wildserve.rollout.generation import generate
from wildserve.rollout.models import load_smollm2
from wildserve.rollout.planner import DraftPlanner
from wildserve.rollout.prompts import make_problems
from wildserve.rollout.sampling import sampling_probs
from wildserve.rollout.state import SeqState


class PreviousRule(Drafter):
    """The history drafter before the token-tree change: per-prompt index, longest match, then
    the most frequent child of that node (one chain)."""

    name = "previous"

    def __init__(self, spec: SpecConfig) -> None:
        self.max_match = spec.history_max_match
        self.depth = self.max_match + max(spec.num_draft_tokens, 1) + 1
        self._tries: dict[int, SuffixTrie] = {}

    def propose(self, seqs, k):
        out = []
        for s in seqs:
            trie = self._tries.get(s.prompt_id)
            ctx = [START, *s.output]
            out.append(Draft(trie.draft(ctx, self.max_match, 1, k) if trie else []))
        return out

    def finish(self, seqs):
        for s in seqs:
            trie = self._tries.setdefault(s.prompt_id, SuffixTrie(self.depth))
            trie.add_sequence([START, *s.output])


def variants(k: int, sampling: SamplingConfig) -> dict[str, Callable[[], Drafter]]:
    def history(**kw) -> Callable[[], Drafter]:
        spec = SpecConfig(num_draft_tokens=k, **kw)
        return lambda: DRAFTERS.get("suffix")(DrafterContext(sampling, spec, torch.Generator()))

    return {
        "previous: per-prompt, longest match, chain": lambda: PreviousRule(SpecConfig(k)),
        "per-prompt, smoothed, chain": history(history_global=False, history_tree=False),
        "per-prompt, smoothed, tree": history(history_global=False),
        "global+per-prompt, smoothed, chain": history(history_tree=False),
        "default: global+per-prompt, smoothed, tree": history(),
        "default, unsmoothed (longest match)": history(history_smoothing=0.0),
    }


def accepted_path(draft: Draft, y: list[int], t: int) -> int:
    """Length of the longest path of ``draft`` that y[t:] follows."""
    parents = draft.parents if draft.parents is not None else list(range(-1, len(draft.tokens) - 1))
    node, a = -1, 0
    while t + a < len(y):
        nxt = next(
            (i for i, p in enumerate(parents) if p == node and draft.tokens[i] == y[t + a]), None
        )
        if nxt is None:
            break
        node, a = nxt, a + 1
    return a


def replay(
    make: Callable[[], Drafter],
    responses: list[list[list[list[int]]]],
    prompts: list[list[int]],
    k: int,
) -> list[dict[str, float]]:
    """responses[e][i][j]: epoch e, prompt i, sample j. Per epoch: tokens/forward, drafting ms/call."""
    drafter = make()
    out = []
    for epoch in responses:
        tokens = forwards = calls = 0
        seconds = 0.0
        for j in range(len(epoch[0])):
            done = []
            for i, samples in enumerate(epoch):
                y, t = samples[j], 0
                view = SeqState(seq_id=j, prompt_id=i, prompt=prompts[i])
                while t < len(y):
                    view.output = y[:t]
                    t0 = time.perf_counter()
                    draft = drafter.propose([view], k)[0].head(k)
                    seconds += time.perf_counter() - t0
                    t += accepted_path(draft, y, t) + 1
                    forwards += 1
                    calls += 1
                tokens += len(y)
                done.append(SeqState(seq_id=j, prompt_id=i, prompt=prompts[i], output=list(y)))
            drafter.finish(done)
        out.append({"tokens_per_forward": tokens / forwards, "ms_per_call": 1e3 * seconds / calls})
    return out


@torch.no_grad()
def ceiling(loaded, prompts, responses, sampling: SamplingConfig) -> dict[str, float]:
    """Mean probability of the target's most likely token (what an oracle deterministic draft
    is accepted with) and of its top 4, along the sampled responses."""
    top1, top4 = [], []
    for epoch in responses:
        for i, samples in enumerate(epoch):
            for y in samples:
                if not y:
                    continue
                ids = torch.tensor([prompts[i] + y])
                logits = loaded.model(input_ids=ids).logits[0, len(prompts[i]) - 1 : -1]
                top = sampling_probs(logits, sampling).topk(4, -1).values
                top1.append(top[:, 0].numpy())
                top4.append(top.sum(-1).numpy())
    return {
        "mean_p_max": float(np.concatenate(top1).mean()),
        "mean_top4_mass": float(np.concatenate(top4).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4, help="responses per prompt per epoch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--draft-len", type=int, default=6, help="draft tokens (tree nodes) k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples-file", type=Path, help="reuse (or save) the sampled responses")
    ap.add_argument("--ceiling", action="store_true", help="also measure the oracle bound")
    ap.add_argument("--output-json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sampling = SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    loaded = load_smollm2()
    problems = make_problems(args.prompts, np.random.default_rng(args.seed))
    prompts = [loaded.encode_chat(p.text) for p in problems]
    if args.samples_file is not None and args.samples_file.exists():
        responses = orjson.loads(args.samples_file.read_bytes())
    else:
        e, n = args.epochs, args.samples
        seqs = [
            SeqState(seq_id=(x * len(prompts) + i) * n + j, prompt_id=i, prompt=p)
            for x in range(e)
            for i, p in enumerate(prompts)
            for j in range(n)
        ]
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(args.seed)
        generate(loaded.model, seqs, sampling, DraftPlanner({}, SpecConfig()), gen, loaded.stop_ids)
        print(f"sampled {len(seqs)} responses in {time.perf_counter() - t0:.0f} s")
        it = iter(s.output for s in seqs)
        responses = [[[next(it) for _ in range(n)] for _ in prompts] for _ in range(e)]
        if args.samples_file is not None:
            atomic_write_json(args.samples_file, responses)
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "variants": {}}
    print(
        f"| drafter (k = {args.draft_len}) | "
        + " | ".join(f"epoch {e + 1} tok/fwd" for e in range(len(responses)))
        + " | ms/draft |"
    )
    print("|---|" + "---|" * (len(responses) + 1))
    for name, make in variants(args.draft_len, sampling).items():
        per_epoch = replay(make, responses, prompts, args.draft_len)
        result["variants"][name] = per_epoch
        cells = " | ".join(f"{r['tokens_per_forward']:.3f}" for r in per_epoch)
        ms = np.mean([r["ms_per_call"] for r in per_epoch])
        print(f"| {name} | {cells} | {ms:.2f} |", flush=True)
    if args.ceiling:
        result["ceiling"] = ceiling(loaded, prompts, responses, sampling)
        print(f"oracle bound: {result['ceiling']}")
    if args.output_json is not None:
        atomic_write_json(args.output_json, result)


if __name__ == "__main__":
    main()
