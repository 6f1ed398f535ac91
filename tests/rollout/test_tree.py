"""Token-tree drafts: the history drafter's estimates, tree verification's exactness, greedy identity."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.rollout.test_generation import GREEDY, PROMPTS
from tests.rollout.test_generation import run as run_greedy
from tests.rollout.test_lossless import (
    LENGTH,
    PROMPT,
    SAMPLINGS,
    chi_square_p,
    exact_distribution,
    run,
    small_draft,  # noqa: F401  (fixture)
    small_target,  # noqa: F401  (fixture)
)
from wildserve.rollout.config import SamplingConfig, SpecConfig
from wildserve.rollout.drafters import DRAFTERS, Draft, Drafter, DrafterContext
from wildserve.rollout.drafters.lookup import SuffixTrie, draft_tree, smoothed_next
from wildserve.rollout.state import SeqState
from wildserve.rollout.verify import verify

P_MIN = 1e-3


def history(spec: SpecConfig, sampling: SamplingConfig = GREEDY) -> Drafter:
    return DRAFTERS.get("suffix")(DrafterContext(sampling, spec, torch.Generator()))


def test_smoothed_estimate_mixes_every_matching_suffix_length():
    trie = SuffixTrie(depth=6)
    for seq in ([1, 2, 3], [4, 2, 3], [5, 2, 7], [1, 2, 7]):
        trie.add_sequence(seq)
    # after "1 2": the 2-token match saw 3 and 7 once each; the 1-token match "2" saw 3 twice, 7 twice
    assert smoothed_next([trie], [1, 2], 4, 0.0) == pytest.approx({3: 0.5, 7: 0.5})
    # after "4 2" only 3 followed the long match; smoothing b = 1 x 1 continuation pulls toward 1/2
    assert smoothed_next([trie], [4, 2], 4, 1.0) == pytest.approx({3: 0.75, 7: 0.25})
    assert smoothed_next([trie], [4, 2], 4, 0.0) == pytest.approx({3: 1.0, 7: 0.0})
    assert smoothed_next([trie], [9], 4, 1.0) == {}


def test_tree_takes_the_most_probable_paths_best_first():
    trie = SuffixTrie(depth=6)
    for seq in ([0, 1, 2], [0, 1, 2], [0, 1, 3], [0, 4, 5]):
        trie.add_sequence(seq)
    d = draft_tree([trie], [0], max_match=4, smoothing=0.0, budget=4)
    # P(1) = 3/4, P(1 2) = 1/2, P(4) = 1/4, P(1 3) = 1/4 (tie: pushed earlier wins), P(4 5) = 1/4
    assert d.tokens == [1, 2, 4, 3] and d.parents == [-1, 0, -1, 0] and d.depth == 2
    assert d.head(2) == Draft([1, 2], None, [-1, 0])
    chain = draft_tree([trie], [0], max_match=4, smoothing=0.0, budget=4, tree=False)
    assert chain.tokens == [1, 2] and chain.parents is None


def test_history_indexes_the_group_and_other_prompts():
    spec = SpecConfig(num_draft_tokens=3)
    drafter = history(spec)
    first = SeqState(0, prompt_id=7, prompt=[1, 2], output=[10, 11, 12, 13])
    sibling = SeqState(1, prompt_id=7, prompt=[1, 2], output=[10, 11, 14, 15])
    other = SeqState(2, prompt_id=8, prompt=[1, 2])
    assert drafter.propose([first], 3)[0].tokens == []
    drafter.finish([first, sibling])
    assert drafter.num_responses(7) == 2 and drafter.num_responses(8) == 0
    again = SeqState(3, prompt_id=7, prompt=[1, 2], output=[10, 11])
    d = drafter.propose([again], 3)[0]
    assert sorted(d.tokens[:2]) == [12, 14] and d.parents[:2] == [-1, -1]  # both siblings' ways
    assert drafter.propose([other], 3)[0].tokens[:2] == [10, 11]  # from other prompts' responses
    per_prompt = history(SpecConfig(num_draft_tokens=3, history_global=False))
    per_prompt.finish([first])
    assert per_prompt.propose([other], 3)[0].tokens == []
    assert per_prompt.propose([again], 3)[0].tokens == [12, 13]


def test_tree_verification_emits_exactly_the_target_distribution():
    """One verify call over many identical rows: candidate children 0, 2 (and 4 under 0), with p
    chosen so every branch is accepted and rejected often; the emitted pairs must follow p."""
    vocab, rows = 5, 20_000
    gen = torch.Generator().manual_seed(0)
    p0 = torch.tensor([0.3, 0.1, 0.25, 0.15, 0.2])  # after the committed prefix
    p1 = torch.tensor([0.05, 0.4, 0.1, 0.2, 0.25])  # after candidate 0
    p2 = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2])  # after candidate 2
    p3 = torch.tensor([0.5, 0.1, 0.1, 0.2, 0.1])  # after 0 -> 4
    p = torch.stack([p0, p1, p2, p3])[None].expand(rows, -1, -1)
    tokens, parents = [0, 2, 4], [-1, -1, 0]
    verdict = verify(p, [tokens] * rows, [None] * rows, False, gen, [4] * rows, [parents] * rows)
    emitted = Counter()
    for path, nxt in zip(verdict.paths, verdict.next_token, strict=True):
        emitted[(*(tokens[i] for i in path), nxt)[:2]] += 1
    exact = {}
    for x in range(vocab):
        if x == 0:
            for y in range(vocab):
                exact[(0, y)] = float(p0[0] * p1[y])
        elif x == 2:
            for y in range(vocab):
                exact[(2, y)] = float(p0[2] * p2[y])
        else:
            exact[(x,)] = float(p0[x])
    samples = [k for k, n in emitted.items() for _ in range(n)]
    assert chi_square_p(samples, exact) > P_MIN
    assert sum(len(path) for path in verdict.paths) / rows > 0.5  # p-mass of {0, 2} is 0.55


class _Counting(Drafter):
    """Wraps a drafter to count its branching (non-chain) proposals."""

    name = "suffix"

    def __init__(self, inner: Drafter) -> None:
        self.inner, self.num_branching = inner, 0

    def propose(self, seqs, k):
        out = self.inner.propose(seqs, k)
        self.num_branching += sum(
            d.parents is not None and d.parents != list(range(-1, len(d.tokens) - 1)) for d in out
        )
        return out


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["t1", "t0.8-top0.9"])
def test_history_tree_drafts_are_lossless(small_target, small_draft, sampling):  # noqa: F811
    """The history drafter, fed the draft model's responses, proposes trees for the target."""
    drafter = history(SpecConfig(num_draft_tokens=3), sampling)
    earlier, _ = run(small_draft, sampling, {}, seed=9)
    drafter.finish(
        [SeqState(i, 0, list(PROMPT), output=list(out)) for i, out in enumerate(earlier[:300])]
    )
    counting = _Counting(drafter)
    samples, stats = run(small_target, sampling, {"suffix": counting}, seed=10)
    d = stats.by_drafter["suffix"]
    assert counting.num_branching > 1000
    assert 0.1 < d.num_accepted / d.num_row_steps < LENGTH - 0.5  # accepted path per forward
    assert chi_square_p(samples, exact_distribution(small_target, sampling)) > P_MIN


def test_greedy_with_tree_drafts_is_token_identical(target_model):
    plain, _ = run_greedy(target_model, {})
    drafter = history(SpecConfig(num_draft_tokens=4))
    # history: the greedy responses themselves and corrupted copies, so trees branch and get cut
    fake = [
        SeqState(i, i, list(p), output=list(s.output))
        for i, (p, s) in enumerate(zip(PROMPTS, plain, strict=True))
    ]
    bad = [
        SeqState(
            10 + i,
            i,
            list(p),
            output=[(t + 1) % 32 if j % 5 == 3 else t for j, t in enumerate(s.output)],
        )
        for i, (p, s) in enumerate(zip(PROMPTS, plain, strict=True))
    ]
    drafter.finish(bad + bad + fake)  # the corrupted way is seen twice: often drafted first
    counting = _Counting(drafter)
    spec, stats = run_greedy(target_model, {"suffix": counting})
    for p, s in zip(plain, spec, strict=True):
        assert s.output == p.output
        torch.testing.assert_close(
            torch.tensor(s.logprobs), torch.tensor(p.logprobs), atol=1e-4, rtol=0
        )
    assert counting.num_branching > 0
    assert stats.tokens_per_forward > 2.0


@pytest.mark.parametrize(
    ("tokens", "q", "parents", "message"),
    [
        ([1, 2], torch.full((2, 5), 0.2), [-1, 0], "deterministic: q must be None"),
        ([1, 2, 3], None, [-1, 0], "2 parents for 3 tree tokens"),
        ([1, 2], None, [-1, 1], "parents must come first"),
        ([1, 2], None, [0, -1], "parents must come first"),
        ([1, 2, 1], None, [-1, 0, -1], "repeats sibling token 1 under parent -1"),
        ([1, 2, 3, 3], None, [-1, 0, 0, 0], "repeats sibling token 3 under parent 0"),
    ],
)
def test_malformed_trees_are_rejected(tokens, q, parents, message):
    """Real errors, not asserts (``python -O`` strips those): a stochastic tree or a repeated
    sibling would be verified wrongly (at most one child per token is accepted)."""
    with pytest.raises(ValueError, match=message):
        Draft(tokens, q, parents)


def test_well_formed_trees_and_chains_are_accepted():
    assert Draft([1, 2, 2, 3], None, [-1, 0, -1, 0]).depth == 2  # token 2 twice, other parents
    assert Draft([1, 1, 1], torch.full((3, 5), 0.2)).depth == 3  # a stochastic chain may repeat


def test_history_trees_are_deterministic_with_distinct_siblings():
    """Every tree the history drafter builds from random histories: q is None, each parent comes
    before its children, and no two children of one parent are the same token."""
    import numpy as np

    rng = np.random.default_rng(0)
    num_trees = 0
    for trial in range(30):
        trie = SuffixTrie(depth=6)
        vocab = int(rng.integers(2, 6))  # small vocabularies: many repeated continuations
        for _ in range(int(rng.integers(1, 12))):
            trie.add_sequence(rng.integers(0, vocab, int(rng.integers(2, 20))).tolist())
        for _ in range(5):
            context = rng.integers(0, vocab, int(rng.integers(1, 6))).tolist()
            budget = int(rng.integers(1, 16))
            d = draft_tree([trie], context, max_match=4, smoothing=float(trial % 2), budget=budget)
            assert d.q is None and len(d.tokens) <= budget
            assert len(d.parents) == len(d.tokens)
            assert all(-1 <= p < i for i, p in enumerate(d.parents))
            pairs = list(zip(d.parents, d.tokens, strict=True))
            assert len(set(pairs)) == len(pairs)
            num_trees += any(p >= 0 for p in d.parents) and len(set(d.parents)) < len(d.parents)
    assert num_trees > 20  # most of them really branch
