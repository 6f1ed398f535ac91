"""Turn logits into the distribution a model samples from (temperature, top-p) and sample from it."""

from __future__ import annotations

import torch

from wildserve.rollout.config import SamplingConfig


def sampling_probs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """The exact distribution tokens are drawn from: softmax(logits/T) truncated to top-p mass.

    Greedy (T=0) returns the one-hot of the argmax, so the speculative rules degenerate to greedy.
    """
    logits = logits.float()
    if cfg.is_greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    probs = torch.softmax(logits / cfg.temperature, dim=-1)
    if cfg.top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # keep a token while the mass strictly before it is below top_p (the top token always stays)
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < cfg.top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def record_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, cfg: SamplingConfig
) -> torch.Tensor:
    """Target log-probabilities of ``tokens`` as RL training reads them: log_softmax(logits / T).

    Greedy uses T=1. Top-p is not applied, matching what the trainer recomputes.
    """
    temperature = 1.0 if cfg.is_greedy else cfg.temperature
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def sample(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs`` ([..., V] -> [...]) using the passed-in generator."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=gen).reshape(probs.shape[:-1])
