"""Seeded synthetic workloads for tests: length distributions, a shared system prompt, multi-turn chats.

Block ids follow the trace convention (equal id at equal position = equal prefix): the system prompt's
full blocks carry ids shared by every session, and turn k's prompt (the previous prompt, its answer and
new user text) keeps turn k-1's full prompt blocks and gets fresh ids for the rest.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from wildserve.errors import ConfigError
from wildserve.workload.formats import renumber
from wildserve.workload.lengths import LengthDist
from wildserve.workload.request import Request


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of a synthetic chat workload; every field has a default usable in tests."""

    num_sessions: int = 100
    session_rate: float = 1.0  # Poisson session starts per second (the first at 0)
    turns: LengthDist = field(default_factory=lambda: LengthDist("constant", mean=1, low=1))
    prompt: LengthDist = field(default_factory=lambda: LengthDist("lognormal", mean=512, sigma=1.0))
    output: LengthDist = field(default_factory=lambda: LengthDist("lognormal", mean=128, sigma=1.0))
    system_prompt_tokens: int = 0  # shared prefix of every session's first prompt
    think_time_s: float = 10.0  # mean exponential gap between consecutive turns of a session
    block_size: int = 16
    category: str | None = None

    def __post_init__(self) -> None:
        if self.num_sessions < 0 or self.system_prompt_tokens < 0 or self.block_size < 1:
            raise ConfigError(
                "synthetic workload needs num_sessions >= 0, system_prompt_tokens >= 0, block_size >= 1"
            )
        if not self.session_rate > 0 or self.think_time_s < 0:
            raise ConfigError(
                f"session_rate must be > 0 and think_time_s >= 0, got {self.session_rate}, {self.think_time_s}"
            )
        if self.turns.low < 1:
            raise ConfigError(f"a session needs at least one turn; turns.low is {self.turns.low}")


def synthetic_workload(config: SyntheticConfig, rng: np.random.Generator) -> list[Request]:
    """Generate the workload: sorted by arrival, ids 0.., ``parent_id`` the previous turn."""
    bs = config.block_size
    num_system_blocks = config.system_prompt_tokens // bs
    fresh = itertools.count(
        num_system_blocks
    )  # ids 0..num_system_blocks-1: the shared system prompt
    starts = np.concatenate(
        (
            [0.0],
            np.cumsum(rng.exponential(1.0 / config.session_rate, max(config.num_sessions - 1, 0))),
        )
    )[: config.num_sessions]
    turns = config.turns.sample(rng, config.num_sessions)
    requests: list[Request] = []
    for session, (start, num_turns) in enumerate(zip(starts.tolist(), turns.tolist(), strict=True)):
        new_tokens = config.prompt.sample(rng, num_turns).tolist()
        outputs = config.output.sample(rng, num_turns).tolist()
        gaps = (
            rng.exponential(config.think_time_s, num_turns).tolist()
            if config.think_time_s
            else [0.0] * num_turns
        )
        arrival, ids, parent, prompt = start, list(range(num_system_blocks)), None, 0
        for turn in range(num_turns):
            if (
                turn
            ):  # the previous prompt's full blocks stay; its partial block now holds more text
                arrival += gaps[turn]
                kept, context = ids[: prompt // bs], prompt + outputs[turn - 1]
            else:
                kept, context = ids, config.system_prompt_tokens
            prompt = context + new_tokens[turn]
            ids = kept + [next(fresh) for _ in range(-(-prompt // bs) - len(kept))]
            req = Request(
                request_id=len(requests),
                arrival_s=arrival,
                prompt_tokens=prompt,
                output_tokens=outputs[turn],
                hash_ids=tuple(ids),
                block_size=bs,
                session_id=session,
                category=config.category,
                turn=turn + 1,
                parent_id=parent,
            )
            requests.append(req)
            parent = req.request_id
    return renumber(requests)
