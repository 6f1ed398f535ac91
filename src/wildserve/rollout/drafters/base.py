"""The drafter interface: propose up to k tokens per sequence, optionally with their distributions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from wildserve.registry import Registry
from wildserve.rollout.config import SamplingConfig, SpecConfig


class SeqView(Protocol):
    """What a drafter may read of a sequence (``SeqState`` or a decoupled drafter's look-ahead)."""

    seq_id: int
    prompt_id: int
    prompt: list[int]
    output: list[int]

    @property
    def tokens(self) -> list[int]: ...


@dataclass(slots=True)
class Draft:
    """Proposed continuation; ``q`` [len(tokens), V] is the distribution each token was drawn from.

    ``q is None`` marks a deterministic proposal (lookup, greedy model): verified with p(x).
    ``parents`` makes the tokens a tree (several candidate continuations verified in one forward):
    ``parents[i]`` is the index of token i's parent, -1 for a child of the last committed token,
    always < i. None is a chain. Trees are deterministic (``q is None``).
    """

    tokens: list[int]
    q: torch.Tensor | None = None
    parents: list[int] | None = None

    def __post_init__(self) -> None:
        # real checks, not asserts: a malformed tree silently breaks losslessness (python -O strips
        # asserts); siblings must differ because verification accepts at most one child per token
        if self.parents is None:
            return
        if self.q is not None:
            raise ValueError("tree drafts are deterministic: q must be None")
        if len(self.parents) != len(self.tokens):
            raise ValueError(f"{len(self.parents)} parents for {len(self.tokens)} tree tokens")
        seen: set[tuple[int, int]] = set()
        for i, (tok, parent) in enumerate(zip(self.tokens, self.parents, strict=True)):
            if not -1 <= parent < i:
                raise ValueError(f"tree token {i} has parent {parent}: parents must come first")
            if (parent, tok) in seen:
                raise ValueError(
                    f"tree token {i} repeats sibling token {tok} under parent {parent}"
                )
            seen.add((parent, tok))

    @property
    def depth(self) -> int:
        """Longest root-to-leaf path: the most tokens one verification can accept."""
        if self.parents is None:
            return len(self.tokens)
        depths: list[int] = []
        for p in self.parents:
            depths.append(1 if p < 0 else depths[p] + 1)
        return max(depths, default=0)

    def head(self, n: int) -> Draft:
        """The first ``n`` tokens (still a tree: parents precede their children)."""
        if len(self.tokens) <= n:
            return self
        q = None if self.q is None else self.q[:n]
        parents = None if self.parents is None else self.parents[:n]
        return Draft(self.tokens[:n], q, parents)


@dataclass(slots=True)
class DrafterContext:
    """Everything a drafter factory may need; fields a drafter does not use stay None."""

    sampling: SamplingConfig
    spec: SpecConfig
    gen: torch.Generator  # draws of stochastic drafters (decoupled threads get their own)
    target: torch.nn.Module | None = None
    draft_model: torch.nn.Module | None = None


class Drafter(ABC):
    """Stateful per sequence; ``begin`` sees every sequence of a batch, ``finish`` each one once."""

    name: ClassVar[str]
    uses_model: ClassVar[bool] = False  # costs real compute, so the planner weighs its time
    has_late_drafts: ClassVar[bool] = False  # drafts in the background (see ``late``)

    def begin(self, seqs: Sequence[SeqView]) -> None:  # noqa: B027  (optional hook)
        """A new batch starts; sequences keep their ``seq_id`` until finished."""

    @abstractmethod
    def propose(self, seqs: Sequence[SeqView], k: int) -> list[Draft]:
        """At most ``k`` tokens for each sequence, continuing its ``tokens``."""

    def late(self, seqs: Sequence[SeqView], num_drafted: Sequence[int]) -> list[Draft]:
        """Drafts that became ready during verification, continuing the ``num_drafted`` already
        verified; the verifier checks the first against its bonus position. Default: none."""
        return [Draft([]) for _ in seqs]

    def sync(self, seqs: Sequence[SeqView]) -> None:  # noqa: B027  (optional hook)
        """Verification committed new tokens to these running sequences."""

    def finish(self, seqs: Sequence[SeqView]) -> None:  # noqa: B027  (optional hook)
        """These sequences are done; drop their state (or learn from them)."""


DrafterFactory = Callable[[DrafterContext], Drafter]
DRAFTERS: Registry[DrafterFactory] = Registry("drafter")
