"""Router-local state: what a router knows from its own decisions alone, for any backend.

The same class serves the simulator and the HTTP gateway. Per instance it keeps in-flight counts
(``bs``: incremented at dispatch, released on completion), queued prefill tokens (the uncached prompt
tokens it estimated at dispatch, released when the first token comes back, which is when prefill is
done) and an approximate prefix index of the block hashes it routed there, bounded by an LRU capacity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from wildserve.routing.view import InstanceView, RouteRequest


class PrefixIndex:
    """Block hashes recently sent to one instance, evicted least recently used first."""

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError(f"prefix index capacity must be >= 1 block, got {capacity_blocks}")
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def insert(self, block_hashes: Sequence[int]) -> None:
        """Mark a request's blocks as just used; deeper blocks count as older, so they go first."""
        blocks = self._blocks
        move = blocks.move_to_end
        for h in reversed(block_hashes):
            if h in blocks:
                move(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)

    def match(self, block_hashes: Sequence[int]) -> int:
        """Length in blocks of the longest indexed prefix of ``block_hashes``."""
        blocks = self._blocks
        n = 0
        for h in block_hashes:
            if h not in blocks:
                break
            n += 1
        return n

    def __len__(self) -> int:
        return len(self._blocks)


@dataclass(slots=True)
class _InFlight:
    instance: int
    queued_prefill: int  # 0 once the first token came back


class RouterLocalViews:
    """Views from the router's own bookkeeping; notified of dispatch, first token and finish."""

    def __init__(self, num_instances: int, block_size: int, capacity_blocks: int = 1 << 20) -> None:
        self.block_size = block_size
        self.indexes = [PrefixIndex(capacity_blocks) for _ in range(num_instances)]
        self.in_flight = [0] * num_instances
        self.queued_prefill = [0] * num_instances
        self._requests: dict[object, _InFlight] = {}

    def views(self, request: RouteRequest) -> list[InstanceView]:
        bs = self.block_size
        return [
            InstanceView(
                instance_id=i,
                num_running=self.in_flight[i],
                num_waiting=0,  # a router cannot tell waiting from running on its own
                queued_prefill_tokens=self.queued_prefill[i],
                block_size=bs,
                match_blocks=self.indexes[i].match,
            )
            for i in range(len(self.indexes))
        ]

    def on_dispatch(
        self,
        instance: int,
        request: RouteRequest,
        engine_request: object = None,
        new_tokens: int | None = None,
    ) -> None:
        """Count the request in flight; ``new_tokens`` overrides the index's uncached estimate
        (a view source with exact cache state, e.g. KV events, knows it better)."""
        index = self.indexes[instance]
        if new_tokens is None:
            new_tokens = request.prompt_tokens - index.match(request.block_hashes) * self.block_size
        new = max(0, new_tokens)
        index.insert(request.block_hashes)
        self._requests[request.request_id] = _InFlight(instance, new)
        self.in_flight[instance] += 1
        self.queued_prefill[instance] += new

    def on_first_token(self, request_id: object) -> None:
        state = self._requests.get(request_id)
        if state is not None and state.queued_prefill:
            self.queued_prefill[state.instance] -= state.queued_prefill
            state.queued_prefill = 0

    def on_finish(self, request_id: object) -> None:
        """Release everything the request held; unknown ids (already released) are ignored."""
        state = self._requests.pop(request_id, None)
        if state is None:
            return
        self.queued_prefill[state.instance] -= state.queued_prefill
        self.in_flight[state.instance] -= 1

    def on_step(self, instance: int, result: object) -> None:
        """Simulator adapter: a step's first tokens and finishes, as the router would observe them."""
        for req in result.first_token:  # type: ignore[attr-defined]
            self.on_first_token(req.request_id)
        for req in result.finished:  # type: ignore[attr-defined]
            self.on_finish(req.request_id)

    def reset_index(self, instance: int) -> None:
        """Forget what was sent to ``instance`` (it restarted with an empty cache)."""
        self.indexes[instance] = PrefixIndex(self.indexes[instance].capacity_blocks)

    @property
    def num_tracked(self) -> int:
        return len(self._requests)
