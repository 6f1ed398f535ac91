"""Router-local state: what a router knows from its own decisions alone, for any backend.

The same class serves the simulator and the HTTP gateway. Per instance it keeps in-flight counts
(``bs``: incremented at dispatch, released on completion), queued prefill tokens (the uncached prompt
tokens it estimated at dispatch, released when the first token comes back, which is when prefill is
done) and an approximate prefix index of the block hashes it routed there, bounded by an LRU capacity.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from typing import Protocol

from wildserve.routing.view import InstanceView, RouteRequest


def _run(data: bytes) -> memoryview:
    """A run's block hashes (packed int64) as a sequence of ints, without copying."""
    return memoryview(data).cast("q")


class PrefixIndex:
    """Block hashes recently sent to one instance, evicted least recently used first.

    A radix tree over chained block hashes (``wildserve.blocks``): a node is a run of blocks, and a
    request's blocks are one root path. Matching walks the path and, inside a run, binary-searches
    the first differing block (chained hashes agree at ``j`` only if they agree before ``j``), so a
    lookup costs O(nodes on the path + log run) dict/list reads, not one per matched block. Recency is
    per node: an insert stamps every node on its path, and eviction takes the deepest blocks of the
    least recently stamped leaf first -- the same order as a per-block LRU in which each insert
    touches its blocks deepest first.

    Nodes are integer ids into parallel columns, not objects: a run is ``bytes`` (packed int64), a
    node's children one ``{first hash: id}`` dict of ints, parents, stamps and births ``array('q')``
    columns, and the eviction heap holds tuples of ints. The garbage collector tracks none of the
    per-node values (bytes and ints are never tracked; a dict or tuple holding only ints is
    untracked), so a full index adds a handful of objects for a collection to walk, not one per node.
    With ``_Node`` objects, ``array`` runs (tracked: CPython 3.11 makes every array a GC object) and
    heap tuples holding nodes, a gateway's four indexes grew the tracked objects by ~12k a second at
    2k-character prompts, and each full collection stalled the event loop for 10-50 ms: p99 latency
    52-81 ms, against 14-16 ms with these columns (12 s under wrk at 64 connections; 14.6 ms with the
    collector off). Memory: at most ``capacity_blocks`` hashes (8 bytes each) plus ~300 bytes per
    node (a fork or an eviction boundary, with its heap entry).
    """

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError(f"prefix index capacity must be >= 1 block, got {capacity_blocks}")
        self.capacity_blocks = capacity_blocks
        # node 0 is the root (empty run, parent -1); a freed node's parent is -1 too
        self._runs: list[bytes] = [b""]
        self._children: list[dict[int, int] | None] = [{}]
        self._parent = array("q", [-1])
        self._stamps = array("q", [0])
        self._births = array("q", [0])  # tells a reused id from the node a heap entry was for
        self._free: list[int] = []
        self._size = 0
        self._stamp = 0
        self._num_nodes_made = 0
        self._num_leaves = 0
        self._leaves: list[tuple[int, int, int, int]] = []  # heap of (stamp, seq, id, birth)
        self._seq = 0

    # ---- queries -----------------------------------------------------------------------------
    def match(self, block_hashes: Sequence[int]) -> int:
        """Length in blocks of the longest indexed prefix of ``block_hashes``."""
        return self._walk(block_hashes)[0]

    def __len__(self) -> int:
        return self._size

    def _walk(self, hashes: Sequence[int]) -> tuple[int, int, int]:
        """(blocks matched, last node entered, blocks of it matched) along ``hashes``' path."""
        runs = self._runs
        children = self._children
        node = 0
        pos = 0
        n = len(hashes)
        while pos < n:
            kids = children[node]
            child = kids.get(hashes[pos]) if kids else None
            if child is None:
                return pos, node, len(runs[node]) >> 3
            run = _run(runs[child])
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
        return pos, node, len(runs[node]) >> 3

    # ---- updates -----------------------------------------------------------------------------
    def insert(self, block_hashes: Sequence[int]) -> int:
        """Mark a request's blocks as just used (deeper blocks count as older, so they go first);
        returns how many of them were indexed before."""
        hashes = block_hashes if isinstance(block_hashes, (list, array)) else list(block_hashes)
        matched, node, used = self._walk(hashes)
        self._stamp += 1
        stamp = self._stamp
        runs = self._runs
        children = self._children
        if used < len(runs[node]) >> 3:  # the path ends inside ``node``'s run: split it there
            node = self._split(node, used)
        if matched < len(hashes):
            rest = array("q", hashes[matched:]).tobytes()
            if not children[node] and node:
                runs[node] += rest  # a leaf grows
            else:  # ``node`` forks here (or is the root): a new leaf
                child = self._new_node(rest, node, stamp)
                kids = children[node]
                if kids is None:
                    children[node] = {hashes[matched]: child}
                else:
                    kids[hashes[matched]] = child
                self._num_leaves += 1
                node = child
            self._size += len(hashes) - matched
        leaf = node
        parent = self._parent
        stamps = self._stamps
        while node >= 0:
            stamps[node] = stamp
            node = parent[node]
        if not children[leaf] and leaf:
            self._push_leaf(leaf)
        if self._size > self.capacity_blocks:
            self._evict(self._size - self.capacity_blocks)
        return matched

    def _new_node(self, run: bytes, parent: int, stamp: int) -> int:
        self._num_nodes_made += 1
        if self._free:
            node = self._free.pop()
            self._runs[node] = run
            self._parent[node] = parent
            self._stamps[node] = stamp
            self._births[node] = self._num_nodes_made
            return node
        self._runs.append(run)
        self._children.append(None)
        self._parent.append(parent)
        self._stamps.append(stamp)
        self._births.append(self._num_nodes_made)
        return len(self._runs) - 1

    def _split(self, node: int, keep: int) -> int:
        """Cut ``node``'s run after ``keep`` blocks; returns the new upper part (node's old place)."""
        parent = self._parent[node]
        run = self._runs[node]
        top = self._new_node(run[: 8 * keep], parent, self._stamps[node])
        lower = run[8 * keep :]
        self._children[parent][_run(run)[0]] = top  # type: ignore[index]
        self._runs[node] = lower
        self._parent[node] = top
        self._children[top] = {_run(lower)[0]: node}
        return top

    def _is_leaf(self, node: int, stamp: int, birth: int) -> bool:
        """Whether a heap entry still names a live leaf as it was when pushed."""
        return (
            self._births[node] == birth
            and self._parent[node] >= 0
            and not self._children[node]
            and self._stamps[node] == stamp
        )

    def _push_leaf(self, leaf: int) -> None:
        self._seq += 1
        heapq.heappush(self._leaves, (self._stamps[leaf], self._seq, leaf, self._births[leaf]))
        if len(self._leaves) > 2 * self._num_leaves + 64:  # drop stale entries now and then
            self._leaves = [e for e in self._leaves if self._is_leaf(e[2], e[0], e[3])]
            heapq.heapify(self._leaves)

    def _evict(self, excess: int) -> None:
        """Drop ``excess`` blocks: the deepest ones of the least recently used leaves."""
        heap = self._leaves
        runs = self._runs
        while excess > 0:
            entry = heapq.heappop(heap)
            stamp, _, leaf, birth = entry
            if not self._is_leaf(leaf, stamp, birth):
                continue  # stale: removed, grew children, or touched since
            run = runs[leaf]
            k = len(run) >> 3
            if k > excess:
                runs[leaf] = run[: 8 * (k - excess)]
                self._size -= excess
                heapq.heappush(heap, entry)  # what is left stays the oldest leaf
                return
            excess -= k
            self._size -= k
            parent = self._parent[leaf]
            del self._children[parent][_run(run)[0]]  # type: ignore[index]
            self._parent[leaf] = -1
            runs[leaf] = b""
            self._children[leaf] = None
            self._free.append(leaf)
            self._num_leaves -= 1
            if not self._children[parent] and parent:
                self._num_leaves += 1
                self._push_leaf(parent)


class SharedLoad(Protocol):
    """Per-instance load shared by several routers (``gateway.shared_load.SharedLoadTable``)."""

    def load_rows(self) -> tuple[MutableSequence[int], MutableSequence[int]]: ...
    def in_flight(self) -> Sequence[int]: ...
    def queued_prefill(self) -> Sequence[int]: ...


@dataclass(slots=True)
class _InFlight:
    instance: int
    queued_prefill_tokens: int  # 0 once the first token came back


class RouterLocalViews:
    """Views from the router's own bookkeeping; notified of dispatch, first token and finish."""

    def __init__(self, num_instances: int, block_size: int, capacity_blocks: int = 1 << 20) -> None:
        self.block_size = block_size
        self.indexes = [PrefixIndex(capacity_blocks) for _ in range(num_instances)]
        self.in_flight: MutableSequence[int] = [0] * num_instances
        self.queued_prefill_tokens: MutableSequence[int] = [0] * num_instances
        self._requests: dict[object, _InFlight] = {}
        self.shared: SharedLoad | None = None

    def share_load(self, table: SharedLoad) -> None:
        """Keep this router's counts in its row of ``table`` (a gateway worker's shared load table)
        instead of lists of its own, and route on the sums over every worker's row."""
        if self._requests:
            raise RuntimeError("share_load() after requests were counted: they would be lost")
        self.in_flight, self.queued_prefill_tokens = table.load_rows()
        self.shared = table

    def load(self) -> tuple[Sequence[int], Sequence[int]]:
        """In-flight requests and queued prefill tokens per instance, over every worker if shared."""
        shared = self.shared
        if shared is None:
            return self.in_flight, self.queued_prefill_tokens
        return shared.in_flight().tolist(), shared.queued_prefill().tolist()

    def views(self, request: RouteRequest) -> list[InstanceView]:
        bs = self.block_size
        in_flight, queued = self.load()
        return [
            InstanceView(
                instance_id=i,
                num_running=in_flight[i],
                num_waiting=0,  # a router cannot tell waiting from running on its own
                queued_prefill_tokens=queued[i],
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
