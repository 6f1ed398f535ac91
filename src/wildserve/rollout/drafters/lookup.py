"""Model-free drafters: n-gram prompt lookup and a suffix index over earlier rollouts of a prompt.

Both match the longest suffix of the context in a trie of token substrings and propose the most
frequent continuation. RL repeats each prompt every epoch, so earlier responses of the same prompt
predict much of the current one (SuffixDecoding; SpecActor's history drafter).
"""

from __future__ import annotations

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


@DRAFTERS.register("ngram")
class NgramDrafter(Drafter):
    """Prompt lookup: continue the longest recent n-gram that already occurred in this sequence."""

    name = "ngram"

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
    """Suffix index over finished responses of the same prompt (earlier epochs and samples)."""

    name = "suffix"

    def __init__(self, ctx: DrafterContext) -> None:
        self.max_match = ctx.spec.history_max_match
        self.depth = self.max_match + max(ctx.spec.num_draft_tokens, 1) + 1
        self._tries: dict[int, SuffixTrie] = {}  # prompt_id -> responses seen so far

    def propose(self, seqs: Sequence[SeqView], k: int) -> list[Draft]:
        out = []
        for s in seqs:
            trie = self._tries.get(s.prompt_id)
            context = [START, *s.output]  # draft() reads only its last max_match tokens
            out.append(Draft(trie.draft(context, self.max_match, 1, k) if trie else []))
        return out

    def finish(self, seqs: Sequence[SeqView]) -> None:
        for s in seqs:
            trie = self._tries.get(s.prompt_id)
            if trie is None:
                trie = self._tries[s.prompt_id] = SuffixTrie(self.depth)
            trie.add_sequence([START, *s.output])

    def num_responses(self, prompt_id: int) -> int:
        """Responses indexed for a prompt (the count on the START node)."""
        trie = self._tries.get(prompt_id)
        node = trie.root.children.get(START) if trie else None
        return node.count if node else 0
