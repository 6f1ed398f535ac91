"""Model-free drafters: n-gram prompt lookup and a suffix index over earlier rollouts.

Both index token substrings in a trie. The n-gram drafter continues the longest suffix of the
context that already occurred in the sequence. RL repeats each prompt every epoch (and samples
several responses per prompt), so finished responses predict much of the current one (SuffixDecoding;
SpecActor's history drafter): the history drafter mixes the continuation counts of every matching
suffix length, over all finished responses and over those of the same prompt, and proposes a token
tree of the most probable continuations, verified in one target forward.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

from wildserve.rollout.drafters.base import DRAFTERS, Draft, Drafter, DrafterContext, SeqView

START = -1  # marks the start of a response so the first tokens can be drafted from history


class _Node:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[int, _Node] = {}


class SuffixTrie:
    """Counts every substring of at most ``depth`` tokens of the sequences fed to it."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.root = _Node()
        self._open: list[_Node] = []  # nodes of the suffixes ending at the last appended token

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the current sequence (every suffix of it gains one token)."""
        for tok in tokens:
            nxt = []
            for node in [self.root, *self._open]:
                child = node.children.get(tok)
                if child is None:
                    child = node.children[tok] = _Node()
                child.count += 1
                nxt.append(child)
            self._open = nxt[: self.depth - 1]

    def add_sequence(self, tokens: Sequence[int]) -> None:
        """Insert a whole sequence, independent of the one being extended."""
        saved, self._open = self._open, []
        self.extend(tokens)
        self._open = saved

    def draft(self, context: Sequence[int], max_match: int, min_match: int, k: int) -> list[int]:
        """Most frequent continuation after the longest suffix of ``context`` that has one."""
        for length in range(min(max_match, len(context), self.depth - 1), min_match - 1, -1):
            node: _Node | None = self.root
            for tok in context[len(context) - length :]:
                node = node.children.get(tok)
                if node is None:
                    break
            if node is None or not node.children:
                continue
            out: list[int] = []
            while node.children and len(out) < k:
                tok, node = max(node.children.items(), key=lambda kv: kv[1].count)
                out.append(tok)
            return out
        return []

    def node(self, tail: Sequence[int]) -> _Node | None:
        """The node of the substring ``tail`` (None if it never occurred)."""
        node: _Node | None = self.root
        for tok in tail:
            node = node.children.get(tok)
            if node is None:
                return None
        return node


def smoothed_next(
    tries: Sequence[SuffixTrie], context: Sequence[int], max_match: int, smoothing: float
) -> dict[int, float]:
    """Next-token estimate after ``context`` from counts of every matching suffix length.

    Witten-Bell interpolation, from the shortest suffix in the first (broadest) trie to the longest
    in the last (most specific): P_L(x) = (c_L(x) + b P_prev(x)) / (n_L + b), b = smoothing x
    (distinct continuations). A long match seen once no longer overrides what many shorter matches
    agree on, which is what a sampled policy's next token follows.
    """
    probs: dict[int, float] = {}
    for trie in tries:
        for length in range(1, min(max_match, len(context), trie.depth - 1) + 1):
            node = trie.node(context[len(context) - length :])
            if node is None or not node.children:
                break  # a longer suffix extends this one: it cannot have matched either
            total = sum(c.count for c in node.children.values())
            if not probs:
                probs = {tok: c.count / total for tok, c in node.children.items()}
                continue
            b = smoothing * len(node.children)
            scale = b / (total + b)
            probs = {tok: p * scale for tok, p in probs.items()}
            for tok, c in node.children.items():
                probs[tok] = probs.get(tok, 0.0) + c.count / (total + b)
    return probs


def draft_tree(
    tries: Sequence[SuffixTrie],
    context: Sequence[int],
    max_match: int,
    smoothing: float,
    budget: int,
    tree: bool = True,
) -> Draft:
    """The ``budget`` continuations most likely to be accepted, best first (SuffixDecoding's rule).

    A node's score is the estimated probability of its whole path; a child never outscores its
    parent, so parents come first and any head of the list is itself the best smaller tree.
    ``tree=False`` keeps one chain of the most probable tokens.
    """
    tail = list(context[-max_match:])
    tokens: list[int] = []
    parents: list[int] = []
    order = itertools.count()  # tie-break: first pushed, first taken
    heap: list[tuple[float, int, int, int, list[int]]] = []

    def expand(ctx: list[int], parent: int, score: float) -> None:
        probs = smoothed_next(tries, ctx, max_match, smoothing)
        room = budget - len(tokens) if tree else 1
        for tok, p in heapq.nlargest(room, probs.items(), key=lambda kv: kv[1]):
            heapq.heappush(heap, (-score * p, next(order), tok, parent, ctx))

    expand(tail, -1, 1.0)
    while heap and len(tokens) < budget:
        neg_score, _, tok, parent, ctx = heapq.heappop(heap)
        tokens.append(tok)
        parents.append(parent)
        if len(tokens) < budget:
            expand([*ctx, tok][-max_match:], len(tokens) - 1, -neg_score)
    return Draft(tokens, None, parents if tree else None)


@DRAFTERS.register("ngram")
class NgramDrafter(Drafter):
    """Prompt lookup: continue the longest recent n-gram that already occurred in this sequence."""

    def __init__(self, ctx: DrafterContext) -> None:
        self.max_n, self.min_n = ctx.spec.ngram_max, ctx.spec.ngram_min
        self.depth = ctx.spec.ngram_max + max(ctx.spec.num_draft_tokens, 1)
        self._tries: dict[int, tuple[SuffixTrie, int]] = {}  # seq_id -> (trie, tokens fed)

    def propose(self, seqs: Sequence[SeqView], k: int) -> list[Draft]:
        out = []
        for s in seqs:
            tokens = s.tokens
            trie, fed = self._tries.get(s.seq_id, (None, 0))
            if trie is None or fed > len(tokens):
                trie, fed = SuffixTrie(self.depth), 0
            trie.extend(tokens[fed:])
            self._tries[s.seq_id] = (trie, len(tokens))
            out.append(Draft(trie.draft(tokens, self.max_n, self.min_n, k)))
        return out

    def finish(self, seqs: Sequence[SeqView]) -> None:
        for s in seqs:
            self._tries.pop(s.seq_id, None)


@DRAFTERS.register("suffix")
class HistoryDrafter(Drafter):
    """Suffix indexes over finished responses: of every prompt, and of the same prompt (earlier
    epochs and the group's samples that finished before this one)."""

    def __init__(self, ctx: DrafterContext) -> None:
        spec = ctx.spec
        self.max_match, self.smoothing = spec.history_max_match, spec.history_smoothing
        self.tree = spec.history_tree
        self.depth = self.max_match + 1  # drafting re-matches at most max_match tokens each step
        self._tries: dict[int, SuffixTrie] = {}  # prompt_id -> its responses so far
        self._global = SuffixTrie(self.depth) if spec.history_global else None

    def propose(self, seqs: Sequence[SeqView], k: int) -> list[Draft]:
        out = []
        for s in seqs:
            own = self._tries.get(s.prompt_id)
            tries = [t for t in (self._global, own) if t is not None]
            context = [START, *s.output[-self.max_match :]]
            if not tries or k <= 0:
                out.append(Draft([]))
                continue
            out.append(draft_tree(tries, context, self.max_match, self.smoothing, k, self.tree))
        return out

    def finish(self, seqs: Sequence[SeqView]) -> None:
        for s in seqs:
            trie = self._tries.get(s.prompt_id)
            if trie is None:
                trie = self._tries[s.prompt_id] = SuffixTrie(self.depth)
            trie.add_sequence([START, *s.output])
            if self._global is not None:
                self._global.add_sequence([START, *s.output])

    def num_responses(self, prompt_id: int) -> int:
        """Responses indexed for a prompt (the count on the START node)."""
        trie = self._tries.get(prompt_id)
        node = trie.root.children.get(START) if trie else None
        return node.count if node else 0
