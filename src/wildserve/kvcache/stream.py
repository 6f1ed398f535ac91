"""A trace as a prefix cache sees it: per request, its chain of block ids, its time and its category.

Blocks are the prompt's full ``block_size``-token blocks, hashed by the one shared chain hash
(``Request.engine_block_hashes``), then renumbered densely so the replay can index arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from wildserve.blocks import ROOT_HASH, chain_hash
from wildserve.errors import ConfigError
from wildserve.kvcache._core import AccessHints
from wildserve.kvcache.categories import DEFAULT_SCHEME, Categories, categorize
from wildserve.workload.request import Request

NEVER = np.inf  # next use of a block that is not used again


@dataclass
class BlockStream:
    """Arrays over requests (``times``, ``cats``...) and over block accesses (``blocks``)."""

    req_start: np.ndarray  # int64 [R+1]: request r accesses blocks[req_start[r]:req_start[r+1]]
    blocks: np.ndarray  # int64 [N]: dense block id, in prefix order within each request
    times: np.ndarray  # float64 [R]: arrival, seconds
    cats: np.ndarray  # int64 [R]: category id
    categories: Categories
    block_size: int
    num_blocks: int  # distinct block ids
    name: str = ""
    prompt_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # derived arrays, one of each kept (they are large): keyed by the replayed set (and max age)
    _order: tuple[int | None, np.ndarray] = field(default=(None, np.zeros(0, np.int64)), repr=False)
    _next_use: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _history: dict[tuple[float, int], AccessHints] = field(default_factory=dict, repr=False)

    @property
    def num_requests(self) -> int:
        return len(self.times)

    @property
    def num_accesses(self) -> int:
        return len(self.blocks)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.req_start)

    def request_of_access(self) -> np.ndarray:
        """Request index of every access."""
        return np.repeat(np.arange(self.num_requests, dtype=np.int64), self.lengths)

    def depths(self) -> np.ndarray:
        """Position of every access within its request's prefix."""
        return np.arange(self.num_accesses, dtype=np.int64) - np.repeat(
            self.req_start[:-1], self.lengths
        )

    def processed_mask(self, capacity: int | None) -> np.ndarray | None:
        """Accesses a ``capacity``-block cache replays (a request uses at most ``capacity`` blocks)."""
        if capacity is None or int(self.lengths.max(initial=0)) <= capacity:
            return None
        return self.depths() < capacity

    def _replay_order(self, capacity: int | None) -> tuple[int, np.ndarray]:
        """The replayed accesses sorted by block, then time; and a cache key for that set."""
        mask = self.processed_mask(capacity)
        key = -1 if mask is None else int(capacity)
        if self._order[0] != key:
            idx = np.arange(self.num_accesses) if mask is None else np.flatnonzero(mask)
            self._order = (key, idx[np.argsort(self.blocks[idx], kind="stable")])
        return self._order

    def next_use(self, capacity: int | None = None) -> np.ndarray:
        """Request index of each access's block's next replayed access (``NEVER`` if none)."""
        key, order = self._replay_order(capacity)
        if key in self._next_use:
            return self._next_use[key]
        req = self.request_of_access().astype(np.float64)
        out = np.full(self.num_accesses, NEVER)
        same = self.blocks[order[1:]] == self.blocks[order[:-1]]
        out[order[:-1][same]] = req[order[1:][same]]
        self._next_use = {key: out}
        return out

    def history(self, max_age_s: float, capacity: int | None = None) -> AccessHints:
        """Access-history hints per access: seconds since the block's previous replayed access,
        that access's category, and how many accesses of the block came before this one; an access
        more than ``max_age_s`` after the previous one starts afresh: (inf, -1, 0). Read-only."""
        key, order = self._replay_order(capacity)
        if (max_age_s, key) in self._history:
            return self._history[(max_age_s, key)]
        req = self.request_of_access()
        t = self.times[req]
        age_s = np.full(self.num_accesses, np.inf)
        prev_cat = np.full(self.num_accesses, -1, np.int64)
        prior = np.zeros(self.num_accesses, np.int64)
        if len(order):
            age = np.full(len(order), np.inf)
            same = self.blocks[order[1:]] == self.blocks[order[:-1]]
            age[1:][same] = t[order[1:][same]] - t[order[:-1][same]]
            linked = age <= max_age_s  # continues the previous access's history
            starts = np.flatnonzero(~linked)
            run_start = starts[np.cumsum(~linked) - 1]
            cur, prev = order[linked], order[np.flatnonzero(linked) - 1]
            age_s[cur] = age[linked]
            prev_cat[cur] = self.cats[req[prev]]
            prior[order] = np.arange(len(order)) - run_start
        out = AccessHints.make(age_s=age_s, prev_category=prev_cat, prior_accesses=prior)
        for x in out:
            x.flags.writeable = False  # shared by every replay of this stream
        self._history = {(max_age_s, key): out}
        return out


def build_stream(
    requests: Sequence[Request],
    block_size: int | None = None,
    categories: Categories | None = None,
    name: str = "",
) -> BlockStream:
    """Hash every request's full blocks (default size: the trace's own) and number them densely."""
    if not requests:
        raise ConfigError(f"trace {name or ''} has no requests".replace("  ", " "))
    bs = block_size or requests[0].block_size
    if bs <= 0:
        raise ConfigError(f"trace {name}: its requests carry no block ids (no prefix information)")
    cats = categories if categories is not None else categorize(requests)
    chains = [r.engine_block_hashes(bs) for r in requests]
    lengths = np.fromiter((len(c) for c in chains), np.int64, len(chains))
    if lengths.sum() == 0:
        raise ConfigError(f"trace {name}: no request has a full {bs}-token block")
    flat = np.fromiter((h for c in chains for h in c), np.int64, int(lengths.sum()))
    uniq, dense = np.unique(flat, return_inverse=True)
    req_start = np.zeros(len(requests) + 1, np.int64)
    np.cumsum(lengths, out=req_start[1:])
    return BlockStream(
        req_start=req_start,
        blocks=dense.astype(np.int64),
        times=np.fromiter((r.arrival_s for r in requests), np.float64, len(requests)),
        cats=cats.ids,
        categories=cats,
        block_size=bs,
        num_blocks=len(uniq),
        name=name,
        prompt_tokens=np.fromiter((r.prompt_tokens for r in requests), np.int64, len(requests)),
    )


def load_stream(
    spec: str,
    block_size: int | None = None,
    scheme: str = DEFAULT_SCHEME,
    max_requests: int | None = None,
    source: str = "auto",
    **options: object,
) -> tuple[list[Request], BlockStream]:
    """Load a trace spec (reader ``options``), categorize it (``scheme``, types and turns from
    ``source``) and build its block stream."""
    from wildserve.workload import load_trace
    from wildserve.workload.transforms import limit

    requests = load_trace(spec, **options)
    if max_requests:
        requests = list(limit(requests, max_requests))
    cats = categorize(requests, scheme, source)
    return requests, build_stream(requests, block_size, cats, name=spec)


def stream_from_chains(
    chains: Sequence[Sequence[int]],
    times: Sequence[float],
    cats: Sequence[int],
    num_categories: int | None = None,
    name: str = "",
) -> BlockStream:
    """A stream from per-request content ids (equal prefixes share blocks), for tests and synthetics."""
    if not (len(chains) == len(times) == len(cats)):
        raise ConfigError("chains, times and cats must have one entry per request")
    dense: dict[int, int] = {}
    flat: list[int] = []
    for ids in chains:
        h = ROOT_HASH
        for x in ids:
            h = chain_hash(h, x)
            flat.append(dense.setdefault(h, len(dense)))
    lengths = np.fromiter((len(c) for c in chains), np.int64, len(chains))
    req_start = np.zeros(len(chains) + 1, np.int64)
    np.cumsum(lengths, out=req_start[1:])
    cat_ids = np.asarray(cats, np.int64)
    ncat = num_categories or (int(cat_ids.max()) + 1 if len(cat_ids) else 1)
    n = len(chains)
    categories = Categories(cat_ids, [f"c{i}" for i in range(ncat)], np.ones(n, np.int64),
                            np.full(n, -1, np.int64), np.full(n, -1, np.int64), "given")  # fmt: skip
    return BlockStream(req_start, np.asarray(flat, np.int64), np.asarray(times, np.float64), cat_ids,
                       categories, 1, len(dense), name)  # fmt: skip
