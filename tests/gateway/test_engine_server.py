"""The emulated engine: OpenAI shapes, prefix caching on real tokens, the modeled clock, metrics."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import pytest

from tests.gateway.conftest import engine_cfg
from wildserve.blocks import token_block_hashes
from wildserve.gateway.engine_server import EMULATOR, build_engine, make_engine_app
from wildserve.gateway.serve import start_app


async def _serve(cfg):
    app = make_engine_app(cfg)
    runner, port = await start_app(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{port}", app[EMULATOR]


def test_cached_tokens_grow_on_a_repeated_prefix_and_usage_is_exact():
    async def main():
        runner, url, _emu = await _serve(engine_cfg(speed=50))
        prefix = "system prompt words " * 40  # 800 bytes = 50 blocks of 16
        async with aiohttp.ClientSession() as s:
            out = []
            for q in ("first question", "second question"):
                r = await s.post(
                    f"{url}/v1/completions", json={"prompt": prefix + q, "max_tokens": 3}
                )
                assert r.status == 200
                out.append(await r.json())
        await runner.cleanup()
        return out, prefix

    (a, b), prefix = asyncio.run(main())
    assert a["usage"]["prompt_tokens"] == len(prefix) + len("first question")
    assert a["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert a["usage"]["completion_tokens"] == 3 and len(a["choices"][0]["text"]) == 3
    # the shared prefix's full 16-byte blocks hit; the request's own tail does not
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] == len(prefix) // 16 * 16


def test_tokens_stream_at_the_modeled_times_scaled_by_speed():
    """A streamed request's first token comes after the modeled prefill time / speed, not before."""
    cfg = engine_cfg(speed=2.0)
    engine = build_engine(cfg)
    from wildserve.perf.batch import BatchShape

    shape = BatchShape()
    shape.add_chunk(4000, 0, True)
    prefill_s = engine.cost_model.step_time(shape)

    async def main():
        runner, url, _ = await _serve(cfg)
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            r = await s.post(
                f"{url}/v1/completions",
                json={"prompt": "x" * 4000, "max_tokens": 4, "stream": True},
            )
            stamps = []
            async for line in r.content:
                if line.startswith(b"data: {"):
                    stamps.append(time.monotonic() - t0)
        await runner.cleanup()
        return stamps

    stamps = asyncio.run(main())
    assert len(stamps) == 4
    assert stamps[0] >= prefill_s / 2.0 * 0.95
    assert all(b >= a for a, b in itertools.pairwise(stamps))


def test_concurrent_requests_are_batched_continuously():
    """Two requests in flight share steps: the engine ran fewer steps than their tokens summed."""

    async def main():
        runner, url, emu = await _serve(engine_cfg(speed=50))
        async with aiohttp.ClientSession() as s:

            async def one(p):
                r = await s.post(f"{url}/v1/completions", json={"prompt": p, "max_tokens": 20})
                return await r.json()

            res = await asyncio.gather(one("a" * 300), one("b" * 300))
        steps = len(emu.engine.step_end_s)
        await runner.cleanup()
        return res, steps

    res, steps = asyncio.run(main())
    assert all(r["usage"]["completion_tokens"] == 20 for r in res)
    assert steps < 40


def test_metrics_use_vllm_names_and_errors_are_openai_shaped():
    async def main():
        runner, url, _ = await _serve(engine_cfg(speed=50))
        async with aiohttp.ClientSession() as s:
            await s.post(f"{url}/v1/completions", json={"prompt": "hello world", "max_tokens": 2})
            metrics = await (await s.get(f"{url}/metrics")).text()
            bad = await s.post(f"{url}/v1/completions", data=b"{not json")
            bad_body = await bad.json()
            empty = await s.post(f"{url}/v1/completions", json={"prompt": "", "max_tokens": 2})
            huge = await s.post(
                f"{url}/v1/completions", json={"prompt": "x" * 10, "max_tokens": 10**9}
            )
            models = await (await s.get(f"{url}/v1/models")).json()
        await runner.cleanup()
        return metrics, bad.status, bad_body, empty.status, huge.status, models

    metrics, bad, bad_body, empty, huge, models = asyncio.run(main())
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    ):
        assert f'{name}{{engine="0",model_name="qwen2.5-7b"}}' in metrics
    assert 'vllm:request_success_total{engine="0",finished_reason="length"' in metrics
    assert bad == 400 and bad_body["error"]["type"] == "invalid_request_error"
    assert empty == 400 and huge == 400  # more output than the KV cache can ever hold
    assert models["data"][0]["id"] == "qwen2.5-7b"


def test_client_disconnect_aborts_the_request():
    async def main():
        runner, url, emu = await _serve(engine_cfg(speed=1))
        async with aiohttp.ClientSession() as s:
            r = await s.post(
                f"{url}/v1/completions",
                json={"prompt": "x" * 64, "max_tokens": 5000, "stream": True},
            )
            await r.content.readline()
            r.close()
        for _ in range(200):
            if not emu.engine.has_work:
                break
            await asyncio.sleep(0.02)
        state = (emu.engine.has_work, len(emu._streams), emu.counters["aborted"])
        await runner.cleanup()
        return state

    has_work, streams, aborted = asyncio.run(main())
    assert (has_work, streams, aborted) == (False, 0, 1)


def test_speed_must_be_positive():
    from wildserve.errors import ConfigError

    with pytest.raises(ConfigError, match="speed"):
        engine_cfg(speed=0)


@pytest.mark.parametrize("policy", ["lru", "lru:leaf"])
def test_kernel_warm_up_runs_hits_and_evictions_before_listening(policy):
    """The warm-up must reach the KV cache's eviction and prefix-hit paths (their kernels compile on
    first use) and finish every request, for the served engine's eviction policy."""
    from wildserve.gateway.engine_server import warm_kernels

    engine = warm_kernels(engine_cfg(eviction_policy=policy))
    load = engine.load()
    assert load.num_evictions > 0
    assert load.num_finished == 48 and load.num_running == 0 and load.num_waiting == 0
    bs = engine.config.block_size
    shared = [1] * (3 * bs)  # the prefix every warm-up request starts with stays cached (hits)
    assert engine.cached_blocks(token_block_hashes(shared, bs)) == 3
