"""Request categories for per-category cache analysis and WA eviction: schemes as data.

A category is built from a request's *type* and *turn*. Where they come from is the ``source``:

- ``native``: the trace's own fields (Qwen-Bailian ``type`` and ``turn``; WEKA: the call's
  ``input_types`` joined by ``+`` as the type, its position in the session as the turn);
- ``inferred`` (Mooncake, which has neither): a request whose block list extends an earlier
  request's list, ignoring that earlier request's last block (usually partial, so its id changes once
  the next turn fills it), is a follow-up of the latest such request with the longest match; turn =
  depth in that chain (1 for a first turn), the chain's root names the session, and there is no type;
- ``auto``: ``native`` when the trace carries turns or types, else ``inferred``.

How type and turn become a category is the ``scheme``, a ``CategoryScheme`` (data, one registry):

- ``type``: the type alone;
- ``type+turn`` (the paper's, the default): type and raw turn, ``type|t1``, ``type|t2``...; turns at
  or beyond ``pool_turn`` (10) and every (type, turn) with fewer than ``min_requests`` (32) requests
  share one bucket per type, ``type|pooled`` (a per-category fit needs samples);
- ``type+t1/t2+``: type and first turn vs follow-up, ``type|t1`` / ``type|t2+`` (``turn_edges``);
- ``input-types+agent`` (WEKA): the input types crossed with who made the call, the main agent
  (``main``) or a subagent (``sub``), whose context starts afresh.

A spec may override a scheme's settings, ``type+turn@pool_turn=5@min_requests=8``. A request without
a type gets none in its label (Mooncake: ``t1``, ``t2``...; ``type`` alone then gives one category,
``all``).

The literal inference rule has one failure on real traces: a short request holding only a shared
system prompt plus a partial block (Mooncake: every request starts with block 0, and 2-block requests
exist) would make every later conversation its follow-up (12,014 of 12,031 Mooncake requests).
So a match whose kept prefix is *shared*, i.e. followed somewhere in the trace by at least
``shared_branches`` distinct next blocks, does not count (on Mooncake one prefix has 6,046
successors and every other at most 7). ``shared_branches=0`` gives the literal rule. The inference
reads the whole trace first (it is an offline labelling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

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
    source: str = ""  # where types and turns came from: native, inferred (or given)

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


@dataclass(frozen=True)
class CategoryScheme:
    """How a request's type and turn become its category (see the module docstring)."""

    name: str
    help: str
    by_type: bool = True  # include the request type
    turns: str = "none"  # "none", "buckets" (turn_edges) or "raw" (pool_turn, min_requests)
    turn_edges: tuple[int, ...] = DEFAULT_TURN_EDGES
    pool_turn: int = 10  # raw turns at or beyond this share the type's pooled bucket
    min_requests: int = 32  # raw: a (type, turn) with fewer requests joins the pooled bucket
    by_agent: bool = False  # WEKA: main agent vs subagent

    def __post_init__(self) -> None:
        edges = list(self.turn_edges)
        if edges != sorted(set(edges)) or any(e < 2 for e in edges):
            raise ConfigError(f"category scheme {self.name}: turn edges must be increasing and "
                              f">= 2, got {edges}")  # fmt: skip
        if self.turns not in ("none", "buckets", "raw"):
            raise ConfigError(f"category scheme {self.name}: turns must be none, buckets or raw")
        if self.pool_turn < 2 or self.min_requests < 0:
            raise ConfigError(f"category scheme {self.name}: need pool_turn >= 2 and "
                              f"min_requests >= 0 (got {self.pool_turn}, {self.min_requests})")  # fmt: skip

    def labels(self, requests: Sequence[Request], turns: Sequence[int]) -> list[str]:
        """One label per request."""
        types = [r.category if self.by_type else None for r in requests]
        if self.by_agent:
            role = ["sub" if "agent_id" in r.extra else "main" for r in requests]
            types = [f"{t}|{a}" if t else a for t, a in zip(types, role, strict=True)]
        if self.turns == "none":
            return [t or "all" for t in types]
        if self.turns == "buckets":
            parts = [turn_bucket(int(k), self.turn_edges) for k in turns]
        else:
            parts = [f"t{k}" if k < self.pool_turn else POOLED for k in turns]
            pairs = [(t, x) for t, x in zip(types, parts, strict=True)]
            size: dict[tuple[str | None, str], int] = {}
            for pair in pairs:
                size[pair] = size.get(pair, 0) + 1
            parts = [POOLED if size[pr] < self.min_requests else pr[1] for pr in pairs]
        return [f"{t}|{x}" if t else x for t, x in zip(types, parts, strict=True)]


POOLED = "pooled"
DEFAULT_SCHEME = "type+turn"  # the paper's
CATEGORY_SCHEMES: Registry[CategoryScheme] = Registry("category scheme")
for _scheme in (
    CategoryScheme("type", "the request type alone", turns="none"),
    CategoryScheme(
        "type+turn",
        "type and raw turn; deep turns and rare pairs pooled (the paper's)",
        turns="raw",
    ),
    CategoryScheme("type+t1/t2+", "type and first turn vs follow-up", turns="buckets"),
    CategoryScheme(
        "input-types+agent",
        "WEKA: input types and main agent vs subagent",
        turns="none",
        by_agent=True,
    ),
):
    CATEGORY_SCHEMES.add(_scheme.name, _scheme)
SOURCES = ("auto", "native", "inferred")


def parse_scheme(spec: str) -> CategoryScheme:
    """``NAME[@KEY=VALUE...]`` -> a registered scheme with its settings overridden."""
    from wildserve.kvcache.policy import parse_settings

    name, *settings = spec.split("@")
    scheme = CATEGORY_SCHEMES.get(name)
    if not settings:
        return scheme
    allowed = sorted({f.name for f in fields(CategoryScheme)} - {"name", "help"})
    values = parse_settings(f"category scheme '{spec}'", settings, allowed)
    if "turn_edges" in values:
        edges = values["turn_edges"]
        values["turn_edges"] = tuple(edges) if isinstance(edges, (tuple, list)) else (edges,)
    return replace(scheme, **values)


def _source(requests: Sequence[Request], source: str, shared: int):
    """(source used, turns, sessions, parents) per request."""
    if source not in SOURCES:
        raise ConfigError(
            f"unknown category source '{source}'; choose one of: {', '.join(SOURCES)}"
        )
    if source == "auto":
        native = any(r.turn is not None or r.category is not None for r in requests)
        source = "native" if native else "inferred"
    if source == "inferred":
        parents, turns = infer_followups(requests, shared)
        return source, turns, _roots(parents), parents
    turns = [r.turn if r.turn is not None else 1 for r in requests]
    by_id = {r.request_id: i for i, r in enumerate(requests)}
    parents = [by_id.get(r.parent_id, -1) if r.parent_id is not None else -1 for r in requests]
    sessions = [r.session_id if r.session_id is not None else -1 for r in requests]
    return source, turns, sessions, parents


def categorize(
    requests: Sequence[Request],
    scheme: str | CategoryScheme = DEFAULT_SCHEME,
    source: str = "auto",
    shared_branches: int = DEFAULT_SHARED_BRANCHES,
) -> Categories:
    """Assign every request a category under ``scheme`` (a spec or a scheme), types and turns
    taken from ``source`` (``auto``, ``native`` or ``inferred``)."""
    sch = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    if shared_branches < 0:
        raise ConfigError(f"shared_branches must be >= 0, got {shared_branches}")
    used, turns, sessions, parents = _source(requests, source, shared_branches)
    labels = sch.labels(requests, [int(t) for t in turns])
    names = sorted(set(labels))
    index = {name: k for k, name in enumerate(names)}
    ids = np.fromiter((index[x] for x in labels), np.int64, len(labels))
    spec = scheme if isinstance(scheme, str) else sch.name
    return Categories(ids, names, np.asarray(turns, np.int64), np.asarray(sessions, np.int64),
                      np.asarray(parents, np.int64), spec, used)  # fmt: skip
