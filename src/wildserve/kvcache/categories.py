"""Request categories for per-category cache analysis and WA eviction: native where the trace has them.

- ``native``: the trace's own request type (Qwen-Bailian ``type``; WEKA ``input_types`` joined by
  ``+``) crossed with a turn bucket of its ``turn``.
- ``inferred`` (Mooncake, which has neither): a request whose block list extends an earlier
  request's list, ignoring that earlier request's last block (usually partial, so its id changes once
  the next turn fills it), is a follow-up of the latest such request with the longest match; turn =
  depth in that chain (1 for a first turn) and the chain's root names the session.
- ``auto``: ``native`` when the trace carries turns or types, else ``inferred``.

The literal rule has one failure on real traces: a short request holding only a shared system
prompt plus a partial block (Mooncake: every request starts with block 0, and 2-block requests
exist) would make every later conversation its follow-up (12,014 of 12,031 Mooncake requests).
So a match whose kept prefix is *shared*, i.e. followed somewhere in the trace by at least
``shared_branches`` distinct next blocks, does not count (on Mooncake one prefix has 6,046
successors and every other at most 7). ``shared_branches=0`` gives the literal rule. The inference
reads the whole trace first (it is an offline labelling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from wildserve.blocks import ROOT_HASH, chain_hash
from wildserve.errors import ConfigError
from wildserve.registry import Registry
from wildserve.workload.request import Request

DEFAULT_TURN_EDGES: tuple[int, ...] = (2,)  # turn 1 | turn 2+
DEFAULT_SHARED_BRANCHES = 16  # a prefix followed by this many distinct blocks is a shared prompt


@dataclass(frozen=True)
class Categories:
    """Per request (aligned with the request list): category id, turn, session and parent index."""

    ids: np.ndarray  # int64 category id per request
    names: list[str]  # category id -> name
    turns: np.ndarray  # int64, 1-based
    sessions: np.ndarray  # int64 session id (-1 unknown)
    parents: np.ndarray  # int64 index of the request this one continues (-1 none or unknown)
    scheme: str

    def counts(self) -> np.ndarray:
        return np.bincount(self.ids, minlength=len(self.names))


def turn_bucket(turn: int, edges: Sequence[int] = DEFAULT_TURN_EDGES) -> str:
    """``t1``, ``t2+`` for the default edges; edges (2, 3) give ``t1``, ``t2``, ``t3+``."""
    lo = 1
    for e in edges:
        if turn < e:
            return f"t{lo}" if e - lo == 1 else f"t{lo}-{e - 1}"
        lo = e
    return f"t{lo}+"


def _chains(ids: Sequence[int]) -> list[int]:
    chain: list[int] = []
    h = ROOT_HASH
    for x in ids:
        h = chain_hash(h, x)
        chain.append(h)
    return chain


def infer_followups(
    requests: Sequence[Request], shared_branches: int = DEFAULT_SHARED_BRANCHES
) -> tuple[np.ndarray, np.ndarray]:
    """(parent index, turn) per request from block-list extension (see the module docstring)."""
    n = len(requests)
    chains = [_chains(r.hash_ids) for r in requests]
    successors: dict[int, set[int]] = {}
    if shared_branches > 0:
        for r, chain in zip(requests, chains, strict=True):
            ids = r.hash_ids
            for k in range(1, len(ids) - 1):  # full blocks: the last one may be partial
                successors.setdefault(chain[k - 1], set()).add(ids[k])
    shared = {h for h, nxt in successors.items() if len(nxt) >= shared_branches}
    parents = np.full(n, -1, np.int64)
    turns = np.ones(n, np.int64)
    # chain hash of a request's ids minus its last one -> the latest such request
    latest: dict[int, int] = {}
    for i, (r, chain) in enumerate(zip(requests, chains, strict=True)):
        ids = r.hash_ids
        for k in range(len(ids) - 1, 0, -1):  # longest strict prefix first
            j = latest.get(chain[k - 1])
            if j is not None and chain[k - 1] not in shared and requests[j].hash_ids[:k] == ids[:k]:
                parents[i] = j
                turns[i] = turns[j] + 1
                break
        if len(ids) >= 2:
            latest[chain[len(ids) - 2]] = i
    return parents, turns


def _roots(parents: np.ndarray) -> np.ndarray:
    roots = np.arange(len(parents), dtype=np.int64)
    for i, p in enumerate(parents):  # parents precede children
        if p >= 0:
            roots[i] = roots[p]
    return roots


def _finish(labels: list[str], turns, sessions, parents, scheme: str) -> Categories:
    names = sorted(set(labels))
    index = {name: k for k, name in enumerate(names)}
    ids = np.fromiter((index[x] for x in labels), np.int64, len(labels))
    return Categories(ids, names, np.asarray(turns, np.int64), np.asarray(sessions, np.int64),
                      np.asarray(parents, np.int64), scheme)  # fmt: skip


def _native(requests: Sequence[Request], edges: Sequence[int], shared: int) -> Categories:
    turns = [r.turn if r.turn is not None else 1 for r in requests]
    labels = []
    for r, t in zip(requests, turns, strict=True):
        bucket = turn_bucket(t, edges)
        labels.append(f"{r.category}|{bucket}" if r.category else bucket)
    by_id = {r.request_id: i for i, r in enumerate(requests)}
    parents = [by_id.get(r.parent_id, -1) if r.parent_id is not None else -1 for r in requests]
    sessions = [r.session_id if r.session_id is not None else -1 for r in requests]
    return _finish(labels, turns, sessions, parents, "native")


def _inferred(requests: Sequence[Request], edges: Sequence[int], shared: int) -> Categories:
    parents, turns = infer_followups(requests, shared)
    labels = [turn_bucket(int(t), edges) for t in turns]
    return _finish(labels, turns, _roots(parents), parents, "inferred")


def _auto(requests: Sequence[Request], edges: Sequence[int], shared: int) -> Categories:
    if any(r.turn is not None or r.category is not None for r in requests):
        return _native(requests, edges, shared)
    return _inferred(requests, edges, shared)


CATEGORY_SCHEMES: Registry[Callable[[Sequence[Request], Sequence[int], int], Categories]] = (
    Registry("category scheme")
)
CATEGORY_SCHEMES.add("native", _native)
CATEGORY_SCHEMES.add("inferred", _inferred)
CATEGORY_SCHEMES.add("auto", _auto)


def categorize(
    requests: Sequence[Request],
    scheme: str = "auto",
    turn_edges: Sequence[int] = DEFAULT_TURN_EDGES,
    shared_branches: int = DEFAULT_SHARED_BRANCHES,
) -> Categories:
    """Assign every request a category under ``scheme`` (``auto``, ``native`` or ``inferred``)."""
    if list(turn_edges) != sorted(set(turn_edges)) or any(e < 2 for e in turn_edges):
        raise ConfigError(f"turn edges must be increasing and >= 2, got {list(turn_edges)}")
    if shared_branches < 0:
        raise ConfigError(f"shared_branches must be >= 0, got {shared_branches}")
    return CATEGORY_SCHEMES.get(scheme)(requests, turn_edges, shared_branches)
