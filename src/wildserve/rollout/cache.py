"""A causal LM with a batch KV cache whose rows hold different numbers of real tokens.

Speculative steps append a padded chunk to every row and then keep a different number of tokens per
row. Instead of re-laying the cache each step, slots carry a validity mask that is passed as the
attention mask; rejected and padding slots become holes that a periodic compaction squeezes out.
Positions are the count of real tokens before a slot, so RoPE never sees the holes.

A chunk may also be a token tree (several drafted continuations verified in one forward): each
chunk token then attends to the row's cached slots and to its own ancestors in the chunk, and its
position is the prefix length plus its depth. Afterwards ``drop_chunk_slots`` turns the branches
that were not accepted into holes, and the accepted path reads exactly like a chain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from wildserve.errors import ConfigError

COMPACT_BELOW = 0.5  # compact when fewer than this fraction of cache slots are real tokens
COMPACT_MIN_WIDTH = 64


class RaggedLM:
    """Rows of token sequences with their KV cache; every call appends to or trims rows."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.cache: DynamicCache | None = None
        self.valid = torch.zeros(0, 0, dtype=torch.bool)  # [rows, slots]: slot holds a real token

    @property
    def num_rows(self) -> int:
        return self.valid.shape[0]

    def num_tokens(self) -> torch.Tensor:
        """Real tokens cached per row."""
        return self.valid.sum(1)

    @torch.no_grad()
    def start(self, prompts: Sequence[Sequence[int]]) -> None:
        """Prefill one row per prompt (left padded); no logits are kept."""
        if not prompts or min(len(p) for p in prompts) < 1:
            raise ConfigError("every row needs at least one token to prefill")
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        valid = torch.zeros(len(prompts), width, dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            valid[i, width - len(p) :] = True
        positions = (valid.cumsum(1) - 1).clamp(min=0)
        self.cache = DynamicCache(config=self.model.config)
        self.model(
            input_ids=ids,
            attention_mask=valid.long(),
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.valid = valid

    @torch.no_grad()
    def extend(
        self,
        chunks: Sequence[Sequence[int]],
        rows: torch.Tensor | None = None,
        parents: Sequence[Sequence[int] | None] | None = None,
    ) -> torch.Tensor:
        """Append one chunk per row (all rows, or ``rows``); logits [len(chunks), max_len, V].

        Position j of a row's logits is the next-token distribution after chunk[j]; positions past
        the row's chunk are padding. ``parents[i]`` (when given and not None) makes chunk i a tree:
        ``parents[i][j]`` is the chunk index of token j's parent, -1 for the cached prefix.
        """
        assert self.cache is not None, "start() first"
        if self._real_fraction() < COMPACT_BELOW and self.valid.shape[1] >= COMPACT_MIN_WIDTH:
            self._compact()
        n = len(chunks)
        width = max(max(len(c) for c in chunks), 1)
        ids = torch.zeros(n, width, dtype=torch.long)
        new_valid = torch.zeros(n, width, dtype=torch.bool)
        for i, c in enumerate(chunks):
            ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
            new_valid[i, : len(c)] = True
        if rows is None:
            assert n == self.num_rows, f"{n} chunks for {self.num_rows} rows"
            cache, valid = self.cache, self.valid
        else:
            cache = DynamicCache(
                ddp_cache_data=[(lay.keys[rows], lay.values[rows]) for lay in self.cache.layers],
                config=self.model.config,
            )
            valid = self.valid[rows]
        if parents is None or all(p is None for p in parents):
            mask = torch.cat([valid, new_valid], 1).long()
            positions = valid.sum(1, keepdim=True) + torch.arange(width)
        else:
            mask, depth = _tree_mask(valid, chunks, parents, width)
            positions = valid.sum(1, keepdim=True) + depth
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        if rows is None:
            self.valid = torch.cat([valid, new_valid], 1)
        else:
            self._scatter_new_slots(cache, rows, new_valid)
        return out.logits

    def truncate(
        self, num_keep: Sequence[int] | torch.Tensor, rows: torch.Tensor | None = None
    ) -> None:
        """Keep only the first ``num_keep`` real tokens of each row (of ``rows``)."""
        keep = torch.as_tensor(num_keep, dtype=torch.long).unsqueeze(1)
        if rows is None:
            self.valid &= self.valid.cumsum(1) <= keep
        else:
            sub = self.valid[rows]
            self.valid[rows] = sub & (sub.cumsum(1) <= keep)

    def drop_chunk_slots(self, keep: torch.Tensor) -> None:
        """``keep`` [rows, width of the last chunk]: turn the last chunk's other slots into holes."""
        width = keep.shape[1]
        self.valid[:, -width:] &= keep

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (in that order), e.g. to drop finished sequences."""
        assert self.cache is not None
        for layer in self.cache.layers:
            layer.keys = layer.keys[rows]
            layer.values = layer.values[rows]
        self.valid = self.valid[rows]

    def _real_fraction(self) -> float:
        return float(self.valid.float().mean()) if self.valid.numel() else 1.0

    def _scatter_new_slots(
        self, sub: DynamicCache, rows: torch.Tensor, new_valid: torch.Tensor
    ) -> None:
        """Widen every row by the chunk width and copy the subset's new slots into their rows."""
        assert self.cache is not None
        width = new_valid.shape[1]
        for layer, sub_layer in zip(self.cache.layers, sub.layers, strict=True):
            for name in ("keys", "values"):
                full = getattr(layer, name)
                new = getattr(sub_layer, name)[:, :, -width:]
                pad = full.new_zeros(full.shape[0], full.shape[1], width, full.shape[3])
                pad[rows] = new
                setattr(layer, name, torch.cat([full, pad], 2))
        grown = torch.zeros(self.num_rows, width, dtype=torch.bool)
        grown[rows] = new_valid
        self.valid = torch.cat([self.valid, grown], 1)

    def _compact(self) -> None:
        """Move each row's real slots to the right end (order kept) and drop all-hole columns."""
        assert self.cache is not None
        width = int(self.valid.sum(1).max())
        # a stable sort puts holes (0) first and real slots (1) last, each in their original order
        order = torch.sort(self.valid.to(torch.int8), dim=1, stable=True).indices[:, -width:]
        for layer in self.cache.layers:
            idx = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = layer.keys.gather(2, idx)
            layer.values = layer.values.gather(2, idx)
        self.valid = self.valid.gather(1, order)


def _tree_mask(
    valid: torch.Tensor,
    chunks: Sequence[Sequence[int]],
    parents: Sequence[Sequence[int] | None],
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """4D boolean mask [rows, 1, width, slots + width] and each chunk token's depth [rows, width].

    A chunk token sees the row's real cached slots, itself and its ancestors; a chain is the tree
    whose parent is the previous token. Padding sees itself only, so no attention row is empty.
    """
    n = len(chunks)
    see = torch.zeros(n, width, width, dtype=torch.bool)
    depth = torch.zeros(n, width, dtype=torch.long)
    for i, chunk in enumerate(chunks):
        par = parents[i]
        if par is None:
            par = list(range(-1, len(chunk) - 1))
        assert len(par) == len(chunk), "one parent per chunk token"
        for j, pj in enumerate(par):
            assert -1 <= pj < j, "a parent precedes its child"
            if pj >= 0:
                see[i, j] = see[i, pj]
                depth[i, j] = depth[i, pj] + 1
            see[i, j, j] = True
        for j in range(len(chunk), width):
            see[i, j, j] = True
    past = valid[:, None, :].expand(n, width, valid.shape[1])
    return torch.cat([past, see], 2)[:, None], depth
