"""The ragged KV cache must give the same logits as a plain full forward of each row."""

from __future__ import annotations

import torch

from wildserve.rollout import cache
from wildserve.rollout.cache import RaggedLM


def full_logits(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([tokens])).logits[0]


def test_ragged_extend_truncate_select_compact_match_full_forward(target_model, monkeypatch):
    monkeypatch.setattr(cache, "COMPACT_BELOW", 0.8)  # compact often so compaction is exercised
    monkeypatch.setattr(cache, "COMPACT_MIN_WIDTH", 8)
    rng = torch.Generator().manual_seed(0)
    rows = [torch.randint(2, 32, (n,), generator=rng).tolist() for n in (3, 7, 5)]
    lm = RaggedLM(target_model)
    lm.start(rows)
    appended = 7
    for step in range(40):  # enough rejected slots to trigger compaction
        chunks = [
            torch.randint(2, 32, (1 + (i + step) % 4,), generator=rng).tolist() for i in range(3)
        ]
        if step % 3 == 2:  # a row subset, like a drafter serving only some requests
            sub = torch.tensor([2, 0])
            logits = lm.extend([chunks[2], chunks[0]], sub)
            appended += max(len(chunks[2]), len(chunks[0]))
            pairs = [(2, 0), (0, 1)]
        else:
            logits = lm.extend(chunks)
            appended += max(len(c) for c in chunks)
            pairs = [(i, i) for i in range(3)]
        for row, pos in pairs:
            seq = rows[row] + chunks[row]
            ref = full_logits(target_model, seq)[-len(chunks[row]) :]
            torch.testing.assert_close(logits[pos, : len(chunks[row])], ref, atol=1e-4, rtol=1e-4)
            kept = 1 + (row + step) % len(
                chunks[row]
            )  # keep a prefix of the chunk, like acceptance
            rows[row] = seq[: len(rows[row]) + kept]
            lm.truncate([len(rows[row])], torch.tensor([row]))
        assert lm.num_tokens().tolist() == [len(r) for r in rows]
    assert lm.valid.shape[1] < appended, "holes were never compacted"
    lm.select(torch.tensor([2, 0]))
    rows = [rows[2], rows[0]]
    logits = lm.extend([[5], [6]])
    for i, tok in enumerate((5, 6)):
        torch.testing.assert_close(
            logits[i, 0], full_logits(target_model, rows[i] + [tok])[-1], atol=1e-4, rtol=1e-4
        )


def test_tree_chunk_gives_each_branch_its_own_logits_and_keeps_only_the_accepted_path(
    target_model,
):
    rng = torch.Generator().manual_seed(1)
    rows = [torch.randint(2, 32, (n,), generator=rng).tolist() for n in (4, 6)]
    lm = RaggedLM(target_model)
    lm.start(rows)
    # row 0: last token 5, then two branches [7 -> 9] and [8]; row 1: a plain chain
    chunks = [[5, 7, 8, 9], [6, 10, 11]]
    parents = [[-1, 0, 0, 1], None]
    logits = lm.extend(chunks, parents=parents)
    branches = {0: [5], 1: [5, 7], 2: [5, 8], 3: [5, 7, 9]}  # chunk slot -> tokens through it
    for slot, path in branches.items():
        ref = full_logits(target_model, rows[0] + path)[-1]
        torch.testing.assert_close(logits[0, slot], ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        logits[1, :3], full_logits(target_model, rows[1] + chunks[1])[-3:], atol=1e-4, rtol=1e-4
    )
    # accept 7 -> 9 in row 0 (drop the 8 branch), 10 in row 1; the next step must see exactly that
    keep = torch.tensor([[True, True, False, True], [True, True, True, True]])
    lm.drop_chunk_slots(keep)
    rows = [rows[0] + [5, 7, 9], rows[1] + [6, 10]]
    lm.truncate([len(r) for r in rows])
    assert lm.num_tokens().tolist() == [len(r) for r in rows]
    logits = lm.extend([[3], [4]])
    for i, tok in enumerate((3, 4)):
        torch.testing.assert_close(
            logits[i, 0], full_logits(target_model, rows[i] + [tok])[-1], atol=1e-4, rtol=1e-4
        )
