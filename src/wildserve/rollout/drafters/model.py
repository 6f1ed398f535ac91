"""Model drafters: a smaller draft LM, and early-exit self-drafting (the target's first layers).

Each keeps its own ragged KV cache. Before drafting it compares what it cached with the sequence's
current tokens, trims the mismatch (rejected drafts) and feeds the rest, so it can serve any subset
of sequences at any time: fastest-of-N may switch a sequence to it mid-response.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from wildserve.errors import ConfigError
from wildserve.rollout.cache import RaggedLM
from wildserve.rollout.drafters.base import DRAFTERS, Draft, Drafter, DrafterContext, SeqView
from wildserve.rollout.sampling import sample, sampling_probs


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ModelDrafter(Drafter):
    """Autoregressive drafting with a causal LM; samples like the target unless the target is greedy."""

    name = "draft-model"
    uses_model = True

    def __init__(self, model: torch.nn.Module, ctx: DrafterContext) -> None:
        self.lm = RaggedLM(model)
        self.sampling = ctx.sampling
        self.gen = ctx.gen
        self._row: dict[int, int] = {}  # seq_id -> cache row
        self._cached: dict[int, list[int]] = {}  # seq_id -> tokens in the cache row

    def begin(self, seqs: Sequence[SeqView]) -> None:
        self.lm.start([s.prompt[:-1] or s.prompt for s in seqs])
        self._row = {s.seq_id: i for i, s in enumerate(seqs)}
        self._cached = {s.seq_id: list(s.prompt[:-1] or s.prompt) for s in seqs}

    @torch.no_grad()
    def propose(self, seqs: Sequence[SeqView], k: int) -> list[Draft]:
        if k == 0 or not seqs:
            return [Draft([]) for _ in seqs]
        rows = torch.tensor([self._row[s.seq_id] for s in seqs])
        keep, feeds = [], []
        for s in seqs:
            tokens = s.tokens
            common = _common_prefix(self._cached[s.seq_id], tokens)
            common = min(common, len(tokens) - 1)  # the last token must be fed to get logits
            keep.append(common)
            feeds.append(tokens[common:])
        self.lm.truncate(keep, rows)
        logits = self.lm.extend(feeds, rows)
        last = logits[torch.arange(len(seqs)), torch.tensor([len(f) for f in feeds]) - 1]
        drafted, dists = [], []
        for i in range(k):
            q = sampling_probs(last, self.sampling)
            x = q.argmax(-1) if self.sampling.is_greedy else sample(q, self.gen)
            drafted.append(x)
            dists.append(q)
            if i < k - 1:
                last = self.lm.extend(x[:, None].tolist(), rows)[:, 0]
        tokens_out = torch.stack(drafted, 1).tolist()
        q_out = torch.stack(dists, 1)
        for s, f, d in zip(seqs, feeds, tokens_out, strict=True):
            self._cached[s.seq_id] = [*s.tokens[: len(s.tokens) - len(f)], *f, *d[:-1]]
        greedy = self.sampling.is_greedy
        return [Draft(d, None if greedy else q_out[i]) for i, d in enumerate(tokens_out)]

    def finish(self, seqs: Sequence[SeqView]) -> None:
        for s in seqs:
            self._row.pop(s.seq_id, None)
            self._cached.pop(s.seq_id, None)
        if not self._row:
            return
        order = sorted(self._row, key=self._row.__getitem__)
        self.lm.select(torch.tensor([self._row[sid] for sid in order]))
        self._row = {sid: i for i, sid in enumerate(order)}


@DRAFTERS.register("draft-model")
def _draft_model(ctx: DrafterContext) -> Drafter:
    if ctx.draft_model is None:
        raise ConfigError("drafter 'draft-model' needs a draft model (none was loaded)")
    return ModelDrafter(ctx.draft_model, ctx)


def early_exit_view(target: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """The target's first ``num_layers`` decoder layers, final norm and LM head, sharing weights."""
    total = target.config.num_hidden_layers
    if not 1 <= num_layers < total:
        raise ConfigError(f"early exit needs 1 <= layers < {total}, got {num_layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = num_layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:num_layers]
    with torch.device("meta"):
        view = type(target)(config)
    view.model.embed_tokens = target.model.embed_tokens
    view.model.layers = torch.nn.ModuleList(list(target.model.layers[:num_layers]))
    view.model.norm = target.model.norm
    view.model.rotary_emb = target.model.rotary_emb
    view.lm_head = target.lm_head
    return view.eval()


class EarlyExitDrafter(ModelDrafter):
    """Self-drafting: no second model, the draft is the target cut after k layers."""

    name = "early-exit"


@DRAFTERS.register("early-exit")
def _early_exit(ctx: DrafterContext) -> Drafter:
    if ctx.target is None:
        raise ConfigError("drafter 'early-exit' needs the target model")
    return EarlyExitDrafter(early_exit_view(ctx.target, ctx.spec.early_exit_layers), ctx)
