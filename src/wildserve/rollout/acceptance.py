"""Measured acceptance of each drafter on a policy's own samples (what drives the rollout simulator).

Two exact measurements and one standard estimate:
  * deterministic drafters (history, n-gram): replay. Verified losslessly, a deterministic draft
    (chain or tree) emits each token exactly as the target samples it and keeps going while that
    token is a drafted child, so on a response y sampled from the target the accepted depth at
    position t is the longest draft path y[t:] follows. ``replay_depths`` gives it for every
    position and draft budget: the exact count the engine would have had on y.
  * model drafters (3-bit re-quantized policy, early exit): the overlap beta_t = sum_x min(p_t, q_t)
    of target and drafter distributions after y[:t], exactly the probability that the first draft
    token is accepted there. Chains use 1 + beta_t + beta_t beta_{t+1} + ...: exact for one draft,
    the usual i.i.d. estimate beyond (after an accepted draft the next context is the draft's).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wildserve.errors import ConfigError
from wildserve.rollout.drafters.base import Draft, Drafter
from wildserve.rollout.state import SeqState


def accepted_depth(draft: Draft, continuation: Sequence[int]) -> int:
    """Draft tokens a lossless verifier accepts when the target samples ``continuation``."""
    if draft.parents is None:
        n = 0
        for tok, nxt in zip(draft.tokens, continuation, strict=False):
            if tok != nxt:
                break
            n += 1
        return n
    children: dict[int, dict[int, int]] = {}
    for i, (tok, parent) in enumerate(zip(draft.tokens, draft.parents, strict=True)):
        children.setdefault(parent, {})[tok] = i  # siblings are distinct (Draft checks it)
    node, depth = -1, 0
    while depth < len(continuation):
        nxt = children.get(node, {}).get(continuation[depth])
        if nxt is None:
            break
        node, depth = nxt, depth + 1
    return depth


def replay_depths(
    drafter: Drafter, seq_id: int, prompt_id: int, prompt: list[int], output: list[int], budget: int
) -> np.ndarray:
    """[len(output), budget] uint8: accepted depth at position t when drafting the first k of the
    drafter's ``budget`` proposals (``Draft.head``: the best smaller tree), column k - 1.

    Only ``propose`` is called: the caller decides what the drafter learns from the response."""
    out = np.zeros((len(output), budget), dtype=np.uint8)
    for t in range(len(output)):
        view = SeqState(seq_id, prompt_id, prompt, list(output[:t]))
        draft = drafter.propose([view], budget)[0]
        if not draft.tokens:
            continue
        rest = output[t:]
        for k in range(1, budget + 1):
            out[t, k - 1] = accepted_depth(draft.head(k), rest)
    return out


def overlap(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """beta = sum_x min(p(x), q(x)) per row: the probability a draft drawn from q is accepted."""
    return torch.minimum(p, q).sum(-1)


def walk_tokens_per_forward(depths: np.ndarray, k: int) -> float:
    """Tokens per target forward when one response is generated drafting ``k`` every forward."""
    n, t, forwards = len(depths), 0, 0
    while t < n:
        t += int(depths[t, k - 1]) + 1
        forwards += 1
    return n / forwards if forwards else 0.0


def chain_tokens_per_forward(beta: np.ndarray, k: int) -> float:
    """Expected tokens per forward along a response for a k-token chain from a model drafter:
    at position t, 1 + b_t + b_t b_{t+1} + ...; forwards advance by that expectation."""
    n = len(beta)
    if n == 0:
        return 0.0
    gains = np.ones(n)
    run = np.ones(n)
    for j in range(k):
        shifted = np.concatenate([beta[j:], np.zeros(j)])
        run = run * shifted
        gains += run
    t, forwards = 0.0, 0
    while t < n:
        t += gains[int(t)]
        forwards += 1
    return n / forwards


def quantize_groups(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Asymmetric round-to-nearest ``bits``-bit quantization in groups of ``group`` input columns,
    returned dequantized (what a 3-bit group-32 drafter copy of the policy computes with)."""
    out_dim, in_dim = weight.shape
    if in_dim % group:
        raise ConfigError(f"quantization group {group} does not divide the input width {in_dim}")
    w = weight.detach().float().reshape(out_dim, in_dim // group, group)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    levels = 2**bits - 1
    scale = ((hi - lo) / levels).clamp(min=1e-12)
    q = ((w - lo) / scale).round().clamp(0, levels)
    return (q * scale + lo).reshape(out_dim, in_dim).to(weight.dtype)


def effective_weight(module: torch.nn.Module) -> torch.Tensor:
    """A linear layer's weight with any LoRA delta merged in (peft's lora.Linear has base_layer)."""
    base = getattr(module, "base_layer", None)
    if base is None:
        return module.weight.detach()
    delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
    return (base.weight + delta).detach()


@dataclass(slots=True)
class QuantizedDrafter:
    """A re-quantized copy of the policy's decoder layers, refreshed from the policy every step
    (a drafter that tracks the policy, as a quantized copy synced after each update would)."""

    model: torch.nn.Module
    bits: int
    group: int

    @classmethod
    def of(cls, model: torch.nn.Module, bits: int, group: int) -> QuantizedDrafter:
        """Copy ``model`` before any LoRA is attached; ``refresh`` then fills in quantized weights."""
        return cls(copy.deepcopy(model).eval().requires_grad_(False), bits, group)

    @torch.no_grad()
    def refresh(self, policy: torch.nn.Module) -> None:
        source = dict(policy.model.layers.named_modules())
        for name, mod in self.model.model.layers.named_modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(
                    quantize_groups(effective_weight(source[name]), self.bits, self.group)
                )
