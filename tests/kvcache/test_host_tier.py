"""Host-memory accounting, the host KV victim cache, and what a host hit does to an engine's TTFT."""

from __future__ import annotations

import pytest

from tests.engine.conftest import run_to_completion
from wildserve.engine import Engine, EngineConfig, EngineRequest
from wildserve.engine.memory import GpuMemory
from wildserve.errors import ConfigError
from wildserve.kvcache.host import GIB, HostKVCache, HostMemory
from wildserve.perf import BatchShape, build_cost_model, get_gpu, get_model
from wildserve.perf.linear import LinearCostModel

BS = 16


def test_host_memory_counts_bytes_and_prices_copies_with_the_perf_model():
    cost = build_cost_model("analytic", "qwen2.5-7b", "h100")
    mem = HostMemory.for_cost_model(10_000, cost)
    assert mem.try_reserve(6_000) and not mem.try_reserve(5_000) and mem.free_bytes == 4_000
    mem.release(6_000)
    with pytest.raises(RuntimeError):
        mem.release(1)
    nbytes = 1 << 20
    assert mem.load_time(nbytes) == cost.p2p_time(nbytes, get_gpu("h100").pcie_bw)
    assert mem.bytes_loaded == nbytes and mem.load_time(0) == 0.0
    with pytest.raises(ConfigError, match="needs a perf cost model"):
        HostMemory.for_cost_model(1, LinearCostModel())


def test_host_kv_cache_is_an_lru_over_its_byte_budget():
    mem = HostMemory(3 * 100, lambda n: n * 1e-9)
    kv = HostKVCache(mem, 100)
    for h in (1, 2, 3):
        kv.store(h)
    kv.store(1)  # refreshed
    kv.store(4)  # evicts 2, the least recently stored
    assert 2 not in kv and kv.match([1, 3, 4, 2]) == 3 and mem.used_bytes == 300
    assert kv.take([3]) == pytest.approx(100e-9) and kv.num_hits == 1
    kv.store(5)  # 1 is now the oldest (3 was refreshed by take)
    assert 1 not in kv and 3 in kv
    tiny = HostKVCache(HostMemory(50, lambda n: 0.0), 100)
    tiny.store(1)
    assert len(tiny) == 0


def _engine(host_gb: float, num_blocks: int = 40, host_blocks: int | None = None):
    model, gpu = get_model("qwen2.5-7b"), get_gpu("h100")
    cost = build_cost_model("analytic", model, gpu)
    per_token = model.kv_bytes_per_token()
    memory = GpuMemory(num_blocks * per_token * BS, 0, 0, per_token, BS)
    host = None
    if host_blocks is not None:
        host = HostMemory.for_cost_model(host_blocks * memory.block_bytes, cost)
    engine = Engine(EngineConfig(host_memory_gb=host_gb), cost, memory=memory, host_memory=host)
    return engine, cost, memory


def _hashes(base: int, n: int) -> list[int]:
    return [base + i for i in range(n)]


def _replay_abc(host_gb: float):
    """a's prompt, then b fills the GPU (a's blocks go to host), then a's prompt again as c."""
    eng, cost, memory = _engine(host_gb)
    a = EngineRequest("a", 0.0, 20 * BS + 1, 1, _hashes(100, 20))
    eng.add_request(a, 0.0)
    t = run_to_completion(eng)
    b = EngineRequest("b", t, 38 * BS + 1, 1, _hashes(500, 38))  # needs 39 of the 40 blocks
    eng.add_request(b, t)
    t = run_to_completion(eng, t)
    c = EngineRequest("c", t, 20 * BS + 1, 1, _hashes(100, 20))
    eng.add_request(c, t)
    run_to_completion(eng, t)
    return eng, cost, memory, c


def test_an_evicted_prefix_is_loaded_from_host_instead_of_recomputed():
    eng0, cost, memory, c0 = _replay_abc(0.0)
    eng1, _, _, c1 = _replay_abc(1.0)
    # b evicted 19 of a's 20 blocks; the tail-first free order kept a's first block on the GPU
    assert c0.num_hit_tokens == BS and eng0.host is None
    assert c1.num_hit_tokens == 20 * BS and eng1.host.num_hits == 19
    load = cost.p2p_time(19 * memory.block_bytes, get_gpu("h100").pcie_bw)
    shape = BatchShape()
    shape.add_chunk(1, 20 * BS, True)  # with the host hits only the last prompt token is computed
    ttft1 = c1.first_token_s - c1.arrival_s
    assert ttft1 == pytest.approx(cost.step_time(shape) + load)
    recompute = BatchShape()
    recompute.add_chunk(19 * BS + 1, BS, True)
    assert c0.first_token_s - c0.arrival_s == pytest.approx(cost.step_time(recompute))
    assert eng1.host.memory.bytes_loaded == 19 * memory.block_bytes
    assert len(eng1.host) == 19 + 19  # a's 19 blocks, then the 19 of b's that c's blocks evicted


def test_host_tier_needs_gpu_memory_and_a_perf_model():
    with pytest.raises(ConfigError, match="GPU memory model"):
        Engine(EngineConfig(host_memory_gb=1.0), LinearCostModel(), num_blocks=10)
    mem = GpuMemory(10 * GIB, 0, 0, 1024, BS)
    with pytest.raises(ConfigError, match="perf cost model"):
        Engine(EngineConfig(host_memory_gb=1.0), LinearCostModel(), memory=mem)


def test_a_small_host_tier_under_pressure_keeps_its_accounting(seed=5):
    """Loads whose GPU blocks push other blocks into a nearly full host tier (a regression: the
    offloads used to evict the very blocks being loaded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    eng, _, memory = _engine(0.0, num_blocks=60, host_blocks=25)
    prompts = [_hashes(1000 * k, int(rng.integers(5, 30))) for k in range(12)]
    now = 0.0
    for i in range(150):
        hs = prompts[int(rng.integers(len(prompts)))]
        req = EngineRequest(i, now, len(hs) * BS + 1, int(rng.integers(1, 4)), hs)
        eng.add_request(req, now)
        now = run_to_completion(eng, now)
    mem = eng.host.memory
    assert eng.host.num_hits > 0 and len(eng.host) <= 25
    assert mem.used_bytes == len(eng.host) * memory.block_bytes <= mem.capacity_bytes
