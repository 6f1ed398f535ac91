"""What a router sees of one instance, and of the request it is placing.

Views are built by a view source (the engines' exact state in the simulator, a router-local index, or
KV events in the gateway) so that the same policy object runs everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """The parts of a request a routing policy may use."""

    request_id: int | str
    prompt_tokens: int
    block_hashes: Sequence[int]  # chained hashes of the prompt's full blocks (engine block size)
    block_size: int
    session_id: int | None = None
    category: str | None = None
    # the same hashes as an int64 array, when the driver holds one (the simulator's engines look
    # prefixes up in int64 tables: 16 lookups per decision then convert nothing)
    block_hash_array: np.ndarray | None = field(default=None, compare=False, repr=False)


def _no_match(block_hashes: Sequence[int]) -> int:
    return 0


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One instance's load and cache, as a router can know them at decision time."""

    instance_id: int
    num_running: int = 0
    num_waiting: int = 0
    queued_prefill_tokens: int = 0  # uncached prompt tokens sent to it whose prefill is not done
    kv_usage: float = 0.0  # fraction of KV blocks in use
    num_kv_blocks: int = 0  # KV blocks in total (0: unknown)
    block_size: int = 16
    match_blocks: Callable[[Sequence[int]], int] = field(
        default=_no_match, compare=False, repr=False
    )

    @property
    def num_requests(self) -> int:
        """Requests sent to the instance and not finished (running + waiting): LMetric's ``bs``."""
        return self.num_running + self.num_waiting

    def cached_blocks(self, block_hashes: Sequence[int]) -> int:
        """Length in blocks of the longest prefix of ``block_hashes`` this instance holds."""
        return self.match_blocks(block_hashes)

    def cached_tokens(self, block_hashes: Sequence[int]) -> int:
        return self.match_blocks(block_hashes) * self.block_size

    def new_tokens(self, request: RouteRequest) -> int:
        """Prompt tokens ``request`` would have to prefill here."""
        return max(0, request.prompt_tokens - self.cached_tokens(request.block_hashes))


class ViewSource(Protocol):
    """Builds the views a policy decides on and hears what happened to the requests it placed.

    The driver (simulator or gateway) calls ``on_dispatch`` once per request sent to an instance,
    ``on_first_token`` when its first token is out (its prefill is done) and ``on_finish`` exactly
    once when it leaves the instance (finished, aborted, failed or rejected). Implementations:
    ``sim.simulator.ExactViews`` (the engines' own state, no bookkeeping), ``routing.local``'s
    ``RouterLocalViews`` (the router's own record) and ``routing.kv_index``'s ``KVEventViews``.
    """

    def views(self, request: RouteRequest) -> list[InstanceView]: ...

    def on_dispatch(self, instance_id: int, request: RouteRequest) -> None: ...

    def on_first_token(self, request_id: object) -> None: ...

    def on_finish(self, request_id: object) -> None: ...
