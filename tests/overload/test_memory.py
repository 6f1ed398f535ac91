"""Memory that changes shape: per-layer weights, KV bytes per token, and a pool that grows and shrinks."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from wildserve.engine.block_pool import BlockPool
from wildserve.engine.memory import GpuMemory
from wildserve.errors import ConfigError
from wildserve.overload.layout import group_blocks, stage_bounds, staged_memory
from wildserve.perf import MemoryConfig, get_gpu, get_model, kv_capacity


def qwen14_memory() -> GpuMemory:
    model = get_model("qwen2.5-14b")
    cap = kv_capacity(model, get_gpu("h100"), 1, MemoryConfig())
    return GpuMemory.from_capacity(cap, 16, model.num_layers, model.param_bytes_per_gpu(1, 1))


def test_layers_partition_the_model_once():
    for layers, g in [(48, 2), (48, 4), (80, 8), (28, 3), (5, 5)]:
        bounds = stage_bounds(layers, g)
        assert bounds[0][0] == 0 and bounds[-1][1] == layers
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(bounds))
        assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    with pytest.raises(ConfigError):
        stage_bounds(48, 49)


def test_holding_a_share_of_layers_stores_that_many_times_more_tokens_per_byte():
    mem = qwen14_memory()
    full_per_token = mem.kv_bytes_per_token
    for g in (2, 4, 8):
        lo, hi = stage_bounds(mem.num_layers, g)[0]
        staged = staged_memory(mem, lo, hi)
        assert staged.kv_bytes_per_token * g == full_per_token
        dropped = (mem.num_layers - (hi - lo)) * mem.layer_param_bytes
        assert staged.kv_bytes == mem.kv_bytes + dropped  # dropped weights become KV, byte for byte
        assert staged.num_blocks() >= g * mem.num_blocks()  # more tokens per byte AND more bytes
        assert staged.fits(staged.num_blocks()) and not staged.fits(staged.num_blocks() + 1)


def test_reloading_layers_while_kv_stays_staged_and_back():
    mem = qwen14_memory()
    initial = dataclasses.replace(mem)
    mem.hold_layers(12, 24)
    assert mem.num_held_layers == 12 and mem.kv_layers == 12
    mem.hold_layers(0, 48, kv_layers=12)  # weights back, KV still for 12 layers
    assert mem.param_bytes == initial.param_bytes
    assert mem.kv_bytes_per_token * 4 == initial.kv_bytes_per_token
    mem.hold_layers(0, 48)
    assert mem == initial
    with pytest.raises(ConfigError):
        mem.hold_layers(10, 10)
    with pytest.raises(ConfigError):
        dataclasses.replace(mem, num_layers=0).hold_layers(0, 1)


def test_group_blocks_is_the_smallest_stage():
    mem = qwen14_memory()
    a = staged_memory(mem, 0, 24)
    b = dataclasses.replace(staged_memory(mem, 24, 48), reserve_bytes=mem.reserve_bytes * 2)
    assert group_blocks([a, b]) == b.num_blocks() < a.num_blocks()


def test_pool_grows_and_shrinks_without_touching_blocks_in_use():
    pool = BlockPool(8)
    held = pool.allocate(3, 0.0)
    cached = pool.allocate(2, 0.0)
    pool.cache(cached, [101, 102], 0.0, 0, 0)
    pool.release(cached, 1.0)  # evictable
    assert (pool.num_used, pool.num_free) == (3, 5)
    pool.shrink(4, 2.0)  # 3 empty blocks go first, then the first evictable victim
    assert pool.num_blocks == 4 and pool.num_free == 1 and pool.num_used == 3
    assert set(pool.hash_to_block) == {101}  # the victim was the deeper block 102
    assert all(pool.ref_cnt[b] == 1 for b in held)
    with pytest.raises(RuntimeError):
        pool.shrink(2, 3.0)  # only one block is free
    pool.grow(6)
    assert pool.num_blocks == 10 and pool.num_free == 7 and len(pool.ref_cnt) == 8 + 2
    got = pool.allocate(7, 4.0)
    assert not set(got) & set(held) and len(set(got)) == 7
    assert pool.num_free == 0 and pool.usage() == 1.0
