"""Router-local state: what a router knows from its own decisions alone, for any backend.

The same class serves the simulator and the HTTP gateway. Per instance it keeps in-flight counts
(``bs``: incremented at dispatch, released on completion), queued prefill tokens (the uncached prompt
tokens it estimated at dispatch, released when the first token comes back, which is when prefill is
done) and an approximate prefix index of the block hashes it routed there, bounded by an LRU capacity.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from wildserve.routing.view import InstanceView, RouteRequest


class _Node:
    """A run of consecutive blocks that were always touched together, and where paths fork after it."""

    __slots__ = ("children", "hashes", "parent", "stamp")

    def __init__(self, hashes: array, parent: _Node | None, stamp: int) -> None:
        self.hashes = hashes
        self.parent = parent
        self.children: dict[int, _Node] = {}  # first block hash of each child's run -> child
        self.stamp = stamp  # the insert that last touched this run (every block in it)


class PrefixIndex:
    """Block hashes recently sent to one instance, evicted least recently used first.

    A radix tree over chained block hashes (``wildserve.blocks``): a node is a run of blocks, and a
    request's blocks are one root path. Matching walks the path and, inside a run, binary-searches
    the first differing block (chained hashes agree at ``j`` only if they agree before ``j``), so a
    lookup costs O(nodes on the path + log run) dict/list reads, not one per matched block. Recency is
    per node: an insert stamps every node on its path, and eviction takes the deepest blocks of the
    least recently stamped leaf first -- the same order as a per-block LRU in which each insert
    touches its blocks deepest first. Memory: at most ``capacity_blocks`` hashes (8 bytes each, in
    ``array('q')`` runs, which the garbage collector never has to walk) plus one node (~300 bytes)
    per fork or eviction boundary.
    """

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError(f"prefix index capacity must be >= 1 block, got {capacity_blocks}")
        self.capacity_blocks = capacity_blocks
        self._root = _Node(array("q"), None, 0)
        self._size = 0
        self._stamp = 0
        self._num_leaves = 0
        self._leaves: list[tuple[int, int, _Node]] = []  # (stamp, seq, leaf) heap; stale entries
        self._seq = 0

    # ---- queries -----------------------------------------------------------------------------
    def match(self, block_hashes: Sequence[int]) -> int:
        """Length in blocks of the longest indexed prefix of ``block_hashes``."""
        return self._walk(block_hashes)[0]

    def __len__(self) -> int:
        return self._size

    def _walk(self, hashes: Sequence[int]) -> tuple[int, _Node, int]:
        """(blocks matched, last node entered, blocks of it matched) along ``hashes``' path."""
        node = self._root
        pos = 0
        n = len(hashes)
        while pos < n:
            child = node.children.get(hashes[pos])
            if child is None:
                return pos, node, len(node.hashes)
            run = child.hashes
            k = len(run)
            if pos + k <= n and run[k - 1] == hashes[pos + k - 1]:
                pos += k
                node = child
                continue
            lo, hi = 1, min(k, n - pos)  # run[:lo] matches; find the longest matching prefix
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if run[mid - 1] == hashes[pos + mid - 1]:
                    lo = mid
                else:
                    hi = mid - 1
            return pos + lo, child, lo
        return pos, node, len(node.hashes)

    # ---- updates -----------------------------------------------------------------------------
    def insert(self, block_hashes: Sequence[int]) -> int:
        """Mark a request's blocks as just used (deeper blocks count as older, so they go first);
        returns how many of them were indexed before."""
        hashes = block_hashes if isinstance(block_hashes, (list, array)) else list(block_hashes)
        matched, node, used = self._walk(hashes)
        self._stamp += 1
        stamp = self._stamp
        if used < len(node.hashes):  # the path ends inside ``node``'s run: split it there
            node = self._split(node, used)
        if matched < len(hashes):
            rest = array("q", hashes[matched:])
            if not node.children and node is not self._root:
                node.hashes.extend(rest)  # a leaf grows in place
            else:  # ``node`` forks here (or is the root): a new leaf
                child = _Node(rest, node, stamp)
                node.children[rest[0]] = child
                self._num_leaves += 1
                node = child
            self._size += len(rest)
        leaf = node
        while node is not None:
            node.stamp = stamp
            node = node.parent
        if not leaf.children and leaf is not self._root:
            self._push_leaf(leaf)
        if self._size > self.capacity_blocks:
            self._evict(self._size - self.capacity_blocks)
        return matched

    def _split(self, node: _Node, keep: int) -> _Node:
        """Cut ``node``'s run after ``keep`` blocks; returns the new upper part (node's old place)."""
        parent = node.parent
        assert parent is not None
        top = _Node(node.hashes[:keep], parent, node.stamp)
        parent.children[top.hashes[0]] = top
        node.hashes = node.hashes[keep:]
        node.parent = top
        top.children[node.hashes[0]] = node
        return top

    def _push_leaf(self, leaf: _Node) -> None:
        self._seq += 1
        heapq.heappush(self._leaves, (leaf.stamp, self._seq, leaf))
        if len(self._leaves) > 2 * self._num_leaves + 64:  # drop stale entries now and then
            self._leaves = [
                (e[0], e[1], e[2])
                for e in self._leaves
                if e[2].parent is not None and not e[2].children and e[0] == e[2].stamp
            ]
            heapq.heapify(self._leaves)

    def _evict(self, excess: int) -> None:
        """Drop ``excess`` blocks: the deepest ones of the least recently used leaves."""
        heap = self._leaves
        while excess > 0:
            stamp, _, leaf = heapq.heappop(heap)
            if leaf.parent is None or leaf.children or stamp != leaf.stamp:
                continue  # stale: removed, grew children, or touched since
            run = leaf.hashes
            if len(run) > excess:
                del run[len(run) - excess :]
                self._size -= excess
                heapq.heappush(heap, (stamp, _, leaf))  # what is left stays the oldest leaf
                return
            excess -= len(run)
            self._size -= len(run)
            parent = leaf.parent
            del parent.children[run[0]]
            leaf.parent = None
            self._num_leaves -= 1
            if not parent.children and parent is not self._root:
                self._num_leaves += 1
                self._push_leaf(parent)


@dataclass(slots=True)
class _InFlight:
    instance: int
    queued_prefill_tokens: int  # 0 once the first token came back


class RouterLocalViews:
    """Views from the router's own bookkeeping; notified of dispatch, first token and finish."""

    def __init__(self, num_instances: int, block_size: int, capacity_blocks: int = 1 << 20) -> None:
        self.block_size = block_size
        self.indexes = [PrefixIndex(capacity_blocks) for _ in range(num_instances)]
        self.in_flight = [0] * num_instances
        self.queued_prefill_tokens = [0] * num_instances
        self._requests: dict[object, _InFlight] = {}

    def views(self, request: RouteRequest) -> list[InstanceView]:
        bs = self.block_size
        return [
            InstanceView(
                instance_id=i,
                num_running=self.in_flight[i],
                num_waiting=0,  # a router cannot tell waiting from running on its own
                queued_prefill_tokens=self.queued_prefill_tokens[i],
                block_size=bs,
                match_blocks=self.indexes[i].match,
            )
            for i in range(len(self.indexes))
        ]

    def on_dispatch(self, instance_id: int, request: RouteRequest) -> None:
        """Count the request in flight, its uncached tokens estimated from the router's own index."""
        self.add_in_flight(instance_id, request)

    def add_in_flight(
        self, instance_id: int, request: RouteRequest, new_tokens: int | None = None
    ) -> None:
        """Count the request in flight; ``new_tokens`` overrides the index's uncached estimate
        (a view source with exact cache state, e.g. KV events, knows it better)."""
        matched = self.indexes[instance_id].insert(request.block_hashes)
        if new_tokens is None:
            new_tokens = request.prompt_tokens - matched * self.block_size
        new = max(0, new_tokens)
        self._requests[request.request_id] = _InFlight(instance_id, new)
        self.in_flight[instance_id] += 1
        self.queued_prefill_tokens[instance_id] += new

    def on_first_token(self, request_id: object) -> None:
        state = self._requests.get(request_id)
        if state is not None and state.queued_prefill_tokens:
            self.queued_prefill_tokens[state.instance] -= state.queued_prefill_tokens
            state.queued_prefill_tokens = 0

    def on_finish(self, request_id: object) -> None:
        """Release everything the request held; unknown ids (already released) are ignored."""
        state = self._requests.pop(request_id, None)
        if state is None:
            return
        self.queued_prefill_tokens[state.instance] -= state.queued_prefill_tokens
        self.in_flight[state.instance] -= 1

    def reset_index(self, instance: int) -> None:
        """Forget what was sent to ``instance`` (it restarted with an empty cache)."""
        self.indexes[instance] = PrefixIndex(self.indexes[instance].capacity_blocks)

    @property
    def num_tracked(self) -> int:
        return len(self._requests)
