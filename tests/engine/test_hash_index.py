"""BlockHashIndex against a dict: random streams of inserts, lookups, prefix queries and deletions."""

from __future__ import annotations

import numpy as np
import pytest

from wildserve.engine.hash_index import BlockHashIndex, as_hashes


def _check(index: BlockHashIndex, ref: dict[int, int]) -> None:
    assert len(index) == len(ref)
    assert index.to_dict() == ref
    assert 2 * len(index) <= index.capacity


def _ref_match(ref: dict[int, int], hashes: list[int]) -> list[int]:
    out = []
    for h in hashes:
        if h not in ref:
            break
        out.append(ref[h])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_stream_matches_a_dict(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # a small key universe, so that inserts collide with held keys and deletions hit long probe
    # runs; half of the keys share their top bits (the slot bits) to force clustering
    universe = rng.integers(-(2**63), 2**63 - 1, 3000, dtype=np.int64)
    universe[::2] = (universe[::2] & 0xFFFF) | np.int64(0x5A5A << 48)
    index = BlockHashIndex(expected=0 if seed == 0 else 500)
    ref: dict[int, int] = {}
    next_block = 0
    for _ in range(400):
        op = rng.integers(5)
        if op == 0:  # setdefault a chain (with repeats within it)
            hashes = rng.choice(universe, rng.integers(1, 300))
            blocks = np.arange(next_block, next_block + len(hashes), dtype=np.int64)
            next_block += len(hashes)
            holders, num_held = index.setdefault_many(hashes, blocks)
            want = [
                ref.setdefault(h, b) for h, b in zip(hashes.tolist(), blocks.tolist(), strict=True)
            ]
            assert holders.tolist() == want
            assert num_held == sum(w != b for w, b in zip(want, blocks.tolist(), strict=True))
        elif op == 1 and ref:  # delete many present keys
            keys = list(ref)
            pick = rng.choice(len(keys), min(len(keys), int(rng.integers(1, 400))), replace=False)
            gone = [keys[i] for i in pick]
            index.delete_many(as_hashes(gone))
            for h in gone:
                del ref[h]
        elif op == 2:  # single-key paths
            h = int(rng.choice(universe))
            assert (h in index) == (h in ref)
            assert index.get(h) == ref.get(h, -1)
            if h in ref and rng.integers(2):
                del index[h]
                del ref[h]
            else:
                index[h] = ref[h] = next_block
                next_block += 1
        elif op == 3:  # prefix queries: present keys, then an absent one, then present again
            present = list(ref)
            if not present:
                continue
            n = int(rng.integers(0, min(len(present), 200) + 1))
            chain = [present[i] for i in rng.choice(len(present), n, replace=False)]
            absent = int(rng.choice(universe))
            while absent in ref:
                absent = int(rng.choice(universe))
            tail = chain[: int(rng.integers(0, n + 1))]
            for hashes in (chain, chain + [absent], chain + [absent] + tail):
                arr = as_hashes(hashes)
                assert index.match_prefix(arr).tolist() == _ref_match(ref, hashes)
                want = len(_ref_match(ref, hashes))
                assert index.num_matched(arr, gallop=False) == want
                if len(hashes) <= n + 1:  # galloping assumes presence is monotone along the chain
                    assert index.num_matched(arr, gallop=True) == want
        elif op == 4 and ref and rng.integers(4) == 0:  # delete everything in a random order
            keys = list(ref)
            rng.shuffle(keys)
            index.delete_many(as_hashes(keys))
            ref.clear()
        _check(index, ref)
    assert next_block > 0


def test_absent_keys_raise_and_bad_ids_are_refused() -> None:
    index = BlockHashIndex()
    index[5] = 1
    with pytest.raises(KeyError):
        index[6]
    with pytest.raises(KeyError):
        del index[6]
    with pytest.raises(KeyError):
        index.delete_many(as_hashes([5, 6]))
    assert len(index) == 0  # 5 went before 6 was found missing, as a loop of del would do
    with pytest.raises(ValueError):
        index[7] = -1


def test_growth_keeps_every_key() -> None:
    index = BlockHashIndex()
    start = index.capacity
    hashes = np.arange(10 * start, dtype=np.int64) * 1_000_003
    index.setdefault_many(hashes, np.arange(len(hashes), dtype=np.int64))
    assert index.capacity >= 2 * len(hashes) > start
    assert index.match_prefix(hashes).tolist() == list(range(len(hashes)))
    assert index.num_matched(hashes, gallop=True) == len(hashes)
