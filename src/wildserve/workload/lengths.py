"""Token-count distributions: a small registry of kinds, and the named ones workloads are built from.

``LengthDist`` draws lengths of one kind, rounds them and clips them to ``[low, high]``. Named
distributions state where their numbers come from:

- ``reasoning_lengths(cap)``: chain-of-thought responses of a reasoning model. Log-normal with mean
  6,000 tokens, the average DeepSeek-R1 response length on the OpenThoughts data (Hugging Face,
  "Open-R1: Update #1", 2025-02-02: "on average very long with the average response being 6,000
  tokens long and some responses containing more than 20,000 tokens"). The post gives no spread;
  sigma = 0.8 is our choice, which puts 2.8 % of draws above 20,000 tokens (median 4,360, p90
  12,150). Draws are clipped at ``cap``: 16,384 by default, as KunServe's authors cap their CoT
  workload (open-r1/codeforces-cots, prompt + response truncated to 16,384 tokens,
  SJTU-IPADS/kunserve ``evaluation/data/code-cot.py``); 4.9 % of draws hit that cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wildserve.errors import ConfigError
from wildserve.registry import Registry

Sampler = Callable[[np.random.Generator, "LengthDist", int], np.ndarray]
LENGTH_DISTS: Registry[Sampler] = Registry("length distribution")


@dataclass(frozen=True)
class LengthDist:
    """A token-count distribution, clipped to ``[low, high]`` and rounded to integers."""

    kind: str = "lognormal"  # constant, uniform (low..high), exponential, lognormal
    mean: float = 512.0
    sigma: float = 1.0  # lognormal shape (std of the underlying normal)
    low: int = 1
    high: int = 32768

    def __post_init__(self) -> None:
        LENGTH_DISTS.get(self.kind)  # unknown kinds fail at construction, listing the choices
        if not 0 <= self.low <= self.high:
            raise ConfigError(
                f"length bounds need 0 <= low <= high, got low={self.low} high={self.high}"
            )
        if self.mean < 0 or self.sigma < 0:
            raise ConfigError(f"length mean and sigma must be >= 0, got {self.mean}, {self.sigma}")

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        raw = LENGTH_DISTS.get(self.kind)(rng, self, size)
        return np.clip(np.rint(raw), self.low, self.high).astype(np.int64)


LENGTH_DISTS.add("constant", lambda rng, d, n: np.full(n, d.mean))
LENGTH_DISTS.add("uniform", lambda rng, d, n: rng.integers(d.low, d.high, n, endpoint=True))
LENGTH_DISTS.add("exponential", lambda rng, d, n: rng.exponential(d.mean, n))
# mu chosen so that the (unclipped) mean is ``mean``
LENGTH_DISTS.add(
    "lognormal",
    lambda rng, d, n: rng.lognormal(np.log(max(d.mean, 1e-9)) - d.sigma**2 / 2, d.sigma, n),
)

REASONING_MEAN_TOKENS = 6000.0  # DeepSeek-R1 on OpenThoughts (module doc)
REASONING_SIGMA = 0.8  # our choice (module doc)
REASONING_CAP = 16384  # KunServe's CoT workload cap (module doc)


def reasoning_lengths(cap: int = REASONING_CAP) -> LengthDist:
    """Long-tailed chain-of-thought response lengths, clipped at ``cap`` (module doc)."""
    if cap < 1:
        raise ConfigError(f"reasoning length cap must be >= 1, got {cap}")
    return LengthDist("lognormal", REASONING_MEAN_TOKENS, REASONING_SIGMA, low=1, high=cap)


NAMED_LENGTHS: dict[str, Callable[[int], LengthDist]] = {"reasoning": reasoning_lengths}
