"""Batched lossless verification of drafted tokens against the target's distributions.

Row b drafted ``x_1..x_n``; ``p[b, j]`` is the target's distribution for draft position j (the
positions after the row's last verified token). A draft with a drafter distribution ``q`` is
accepted with probability min(1, p(x)/q(x)); at the first rejection the next token is drawn from
normalize(max(0, p - q)). A deterministic drafter is the case q = one-hot(x): accept with p(x), and
on rejection draw from p with x removed. When every draft is accepted and the target has a position
left, a bonus token is drawn from it. Greedy accepts while the draft equals argmax p. Each emitted
token is then distributed exactly as the target's own sample would be (Leviathan et al., 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from wildserve.rollout.sampling import sample

NO_TOKEN = -1  # every position held a draft and all were accepted: nothing left to sample


@dataclass(slots=True)
class Verdict:
    """Outcome per row: how many leading drafts survive and the token that follows them."""

    num_accepted: list[int]
    next_token: list[int]  # residual or bonus sample, or NO_TOKEN
    paths: list[list[int]]  # indices of the accepted draft tokens (a prefix, for a chain)


def verify(
    p: torch.Tensor,
    drafts: Sequence[Sequence[int]],
    q: Sequence[torch.Tensor | None],
    greedy: bool,
    gen: torch.Generator,
    num_positions: Sequence[int] | None = None,
    parents: Sequence[Sequence[int] | None] | None = None,
) -> Verdict:
    """Accept or reject every row's drafts at once; ``q[b]`` is [len(drafts[b]), V] or None.

    ``num_positions[b]`` (default: all) is how many of p's positions are real for row b.
    ``parents[b]``, when given and not None, makes row b's drafts a tree (see ``Draft``): position
    i + 1 of p is then the distribution after draft token i, position 0 after the committed prefix.
    """
    num_rows, width, _ = p.shape
    positions = list(num_positions) if num_positions is not None else [width] * num_rows
    trees = {b: list(par) for b, par in enumerate(parents or ()) if par is not None and drafts[b]}
    tokens_of = {b: list(drafts[b]) for b in trees}
    drafts = [[] if b in trees else d for b, d in enumerate(drafts)]
    lengths = torch.tensor([len(d) for d in drafts], dtype=torch.long)
    if any(len(d) > n for d, n in zip(drafts, positions, strict=True)):
        raise ValueError("a row drafted more tokens than it has target positions")
    tokens = torch.zeros(num_rows, width, dtype=torch.long)
    q_x = torch.ones(num_rows, width)
    for b, d in enumerate(drafts):
        if d:
            tokens[b, : len(d)] = torch.tensor(d, dtype=torch.long)
            qb = q[b]
            if qb is not None:
                q_x[b, : len(d)] = qb.gather(1, tokens[b, : len(d), None]).squeeze(1)
    in_draft = torch.arange(width) < lengths[:, None]
    if greedy:
        ok = tokens == p.argmax(-1)
    else:
        p_x = p.gather(2, tokens[..., None]).squeeze(-1)
        ok = torch.rand(num_rows, width, generator=gen) * q_x < p_x
    num_accepted = (ok & in_draft).to(torch.int32).cumprod(1).sum(1)

    rows, dists = [], []
    next_token = [NO_TOKEN] * num_rows
    paths = [list(range(int(a))) for a in num_accepted]
    for b in range(num_rows):
        if b in trees:
            continue
        a, n = int(num_accepted[b]), int(lengths[b])
        if a == n == positions[b]:
            continue
        target = p[b, a]
        if greedy:
            next_token[b] = int(target.argmax())
            continue
        if a < n:  # rejected at position a: draw from the residual
            target = _residual(target, int(tokens[b, a]), q[b][a] if q[b] is not None else None)
        rows.append(b)
        dists.append(target)
    accepted = num_accepted.tolist()
    for b, par in trees.items():
        path, nxt = _walk_tree(p[b], tokens_of[b], par, greedy, gen)
        paths[b], accepted[b] = path, len(path)
        if isinstance(nxt, int):
            next_token[b] = nxt
        else:
            rows.append(b)
            dists.append(nxt)
    if rows:
        drawn = sample(torch.stack(dists), gen).tolist()
        for b, t in zip(rows, drawn, strict=True):
            next_token[b] = t
    return Verdict(num_accepted=accepted, next_token=next_token, paths=paths)


def _walk_tree(
    p: torch.Tensor,
    tokens: Sequence[int],
    parents: Sequence[int],
    greedy: bool,
    gen: torch.Generator,
) -> tuple[list[int], int | torch.Tensor]:
    """Accepted path of one tree row, and the next token (greedy) or the distribution to draw it from.

    Every node of a tree has a target position, so an accepted leaf always gets a bonus token.
    """
    children: dict[int, list[int]] = {}
    for i, parent in enumerate(parents):
        children.setdefault(parent, []).append(i)
    node, path = -1, []
    while True:
        target = p[node + 1]
        kids = children.get(node, [])
        if greedy:
            best = int(target.argmax())
            node = next((c for c in kids if tokens[c] == best), -2)
            if node == -2:
                return path, best
            path.append(node)
            continue
        draws = torch.rand(len(kids), generator=gen).tolist() if kids else []
        remaining, rejected, chosen = 1.0, [], -2
        for c, u in zip(kids, draws, strict=True):
            mass = float(target[tokens[c]])
            if u * remaining < mass:
                chosen = c
                break
            remaining -= mass
            rejected.append(tokens[c])
        if chosen == -2:
            if not rejected:
                return path, target  # a leaf: the bonus token
            return path, _residual(target, rejected, None)
        path.append(chosen)
        node = chosen


def _residual(p: torch.Tensor, rejected: int | list[int], q: torch.Tensor | None) -> torch.Tensor:
    """normalize(max(0, p - q)); deterministic drafts are q = one-hot(rejected), so p without them."""
    if q is None:
        r = p.clone()
        r[rejected] = 0.0
    else:
        r = (p - q).clamp(min=0.0)
    total = r.sum()
    # a rejection implies p(x) < q(x), so the residual has mass; float rounding is the only way out
    return r / total if total > 0 else p
