"""An emulated vLLM server: the simulator's ``Engine`` driven by the wall clock behind an OpenAI API.

One driver task calls ``engine.step(now)`` (no horizon: every step is taken one at a time), sleeps
until the step's modeled end (scaled by ``speed``), then hands each request the tokens the step gave
it. Prefix caching runs on the real token ids of the prompts received. ``/metrics`` uses vLLM's metric
names, responses carry ``usage.prompt_tokens_details.cached_tokens``, and the engine's typed KV events
(drained after each step) feed a vLLM-format KV-event publisher.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Sequence

import orjson
from aiohttp import web

from wildserve.blocks import load_native, token_block_hash_array
from wildserve.engine import Engine, EngineRequest
from wildserve.engine.kv_events import KVEventQueue
from wildserve.gateway import openai_api as api
from wildserve.gateway.config import EngineServerConfig
from wildserve.gateway.kv_events import KVEventPublisher, to_vllm_events
from wildserve.gateway.serve import cancel_and_wait
from wildserve.gateway.tokens import PromptError, Tokenizer, make_tokenizer, prompt_token_ids

log = logging.getLogger(__name__)


def build_engine(cfg: EngineServerConfig) -> Engine:
    """The same engine the simulator builds, sized from the modeled GPU's memory.

    A server runs indefinitely and streams tokens as they come, so it keeps no per-step log.
    """
    import dataclasses

    from wildserve.engine.cluster import ClusterConfig, build_engines

    cluster = ClusterConfig(
        model=cfg.model, gpu=cfg.gpu, tp=cfg.tp, num_instances=1, cost_model=cfg.cost_model,
        engine=dataclasses.replace(cfg.engine, record_token_times=False),
    )  # fmt: skip
    return build_engines(cluster)[0]


def warm_kernels(cfg: EngineServerConfig) -> Engine:
    """Compile (or load from numba's cache) every kernel a request touches, before the server listens.

    On a cold numba cache an engine's first request compiled the KV cache's kernels on the event
    loop: 8 s measured, long enough for a gateway's health checks (1 s timeout) to eject every fresh
    backend at once. A throwaway engine built like the served one, but with 64 KV blocks, serves a few
    dozen short requests sharing a prefix: prefix hits, allocation, freeing and eviction all run.
    Returns that engine (its counters show what ran).
    """
    import dataclasses

    small = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, num_gpu_blocks=64))
    engine = build_engine(small)
    bs = engine.config.block_size
    now = 0.0
    for i in range(48):
        tokens = [1] * (3 * bs) + [2 + i] * (2 * bs)  # 3 shared blocks, 2 of its own
        req = EngineRequest(f"warm-{i}", now, len(tokens), 2, token_block_hash_array(tokens, bs))
        if not engine.add_request(req, now):
            continue
        while engine.has_work:
            result = engine.step(now)
            if result.num_steps == 0:
                break
            now = result.end_s
    return engine


class _Stream:
    """Tokens a request has been given, waiting for its HTTP handler to send them."""

    __slots__ = ("event", "produced", "req")

    def __init__(self, req: EngineRequest) -> None:
        self.req = req
        self.produced = 0  # output tokens whose step has ended on the wall clock
        self.event = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.req.is_finished and self.produced >= self.req.num_output_tokens


class EmulatedEngine:
    """The engine, its wall-clock driver and the per-request token streams."""

    def __init__(self, cfg: EngineServerConfig, engine: Engine | None = None) -> None:
        self.cfg = cfg
        self.engine = engine if engine is not None else build_engine(cfg)
        self.tokenizer: Tokenizer = make_tokenizer(cfg.tokenizer)
        self.block_size = self.engine.config.block_size
        self._ids = itertools.count()
        self._streams: dict[str, _Stream] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._t0 = 0.0
        self._clock = 0.0  # modeled time at the end of the last step
        self.publisher: KVEventPublisher | None = None
        self.kv_events: KVEventQueue | None = None  # the engine's events, drained after each step
        self.counters = dict.fromkeys(
            ("prompt_tokens", "generation_tokens", "success", "aborted", "queries", "hits"), 0
        )

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        warm_kernels(self.cfg)
        load_native()
        self._t0 = time.monotonic()
        self._wake = asyncio.Event()
        cfg = self.cfg
        if cfg.kv_events_endpoint:
            self.publisher = KVEventPublisher(
                cfg.kv_events_endpoint, cfg.kv_events_topic, buffer_steps=cfg.kv_events_buffer_steps
            )
            if cfg.kv_events_replay_endpoint:
                self.publisher.serve_replay(cfg.kv_events_replay_endpoint)
            self.kv_events = self.engine.kv_events()
        self._task = asyncio.get_running_loop().create_task(self._drive())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self.publisher is not None:
            await self.publisher.close_replay()
            self.publisher.close()

    def now(self) -> float:
        """Modeled time: wall time since start times ``speed``; with infinite speed, the step clock."""
        if math.isinf(self.cfg.speed):
            return self._clock
        return max(self._clock, (time.monotonic() - self._t0) * self.cfg.speed)

    # ---- the driver --------------------------------------------------------------------------
    async def _drive(self) -> None:
        engine = self.engine
        wake = self._wake
        assert wake is not None
        speed = self.cfg.speed
        while True:
            if not engine.has_work:
                wake.clear()
                await wake.wait()
                continue
            result = engine.step(self.now())
            if result.num_steps == 0:  # nothing fits until something changes
                wake.clear()
                await wake.wait()
                continue
            self._clock = result.end_s
            if math.isinf(speed):
                await asyncio.sleep(0)
            else:
                delay = self._t0 + result.end_s / speed - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
            self._publish_kv_events()
            for req in result.scheduled:
                stream = self._streams.get(req.request_id)
                if stream is not None and req.num_output_tokens > stream.produced:
                    stream.produced = req.num_output_tokens
                    stream.event.set()

    def submit(self, token_ids: Sequence[int], max_tokens: int) -> _Stream:
        """Queue one request; raises PromptError if it can never fit this instance."""
        rid = f"cmpl-{next(self._ids)}"
        hashes = token_block_hash_array(token_ids, self.block_size)
        now = self.now()
        req = EngineRequest(rid, now, len(token_ids), max_tokens, hashes, token_ids=token_ids)
        if not self.engine.add_request(req, now):
            raise PromptError(
                f"prompt of {len(token_ids)} tokens plus {max_tokens} output tokens does not fit "
                f"in this instance's KV cache"
            )
        self.counters["prompt_tokens"] += len(token_ids)
        self.counters["queries"] += len(token_ids)
        stream = _Stream(req)
        self._streams[rid] = stream
        assert self._wake is not None
        self._wake.set()
        return stream

    def finish(self, stream: _Stream) -> None:
        """The handler is done with the request: abort it if unfinished, drop its state."""
        req = stream.req
        if self._streams.pop(req.request_id, None) is None:
            return
        if req.is_finished:
            self.counters["success"] += 1
        else:
            self.engine.abort_request(req, self.now())
            self.counters["aborted"] += 1
        self.counters["generation_tokens"] += req.num_output_tokens
        self.counters["hits"] += max(0, req.num_hit_tokens)

    def _publish_kv_events(self) -> None:
        """Publish what the engine's cache did since the last call, as one vLLM batch."""
        if self.kv_events is not None and self.publisher is not None:
            self.publisher.publish(to_vllm_events(self.kv_events.drain(), self.block_size))

    def reset_prefix_cache(self) -> int:
        n = self.engine.clear_prefix_cache()  # its removals, then AllCleared
        self._publish_kv_events()
        return n

    def kv_event_sources(self) -> dict:
        """vLLM's ``/kv_event_sources`` answer: the publisher config of data-parallel rank 0."""
        pub = self.publisher
        if pub is None:
            return {}
        return {
            "0": {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": pub.endpoint,
                "replay_endpoint": pub.replay_endpoint,
                "buffer_steps": self.cfg.kv_events_buffer_steps,
                "topic": self.cfg.kv_events_topic,
            }
        }

    def token_text(self, i: int) -> str:
        """Arbitrary but deterministic output text: one short piece per token."""
        vocab = getattr(self.tokenizer, "vocab_size", 256)
        if vocab <= 256:
            return chr(ord("a") + i % 26)
        return self.tokenizer.decode_one((i * 7919 + 1000) % vocab)

    # ---- metrics -----------------------------------------------------------------------------
    def metrics_text(self) -> str:
        """Prometheus text with vLLM's metric names and labels."""
        e = self.engine
        labels = f'{{engine="0",model_name="{self.cfg.api_model_name}"}}'
        c = self.counters
        rows = [
            ("vllm:num_requests_running", "gauge", e.num_running),
            ("vllm:num_requests_waiting", "gauge", e.num_waiting),
            ("vllm:kv_cache_usage_perc", "gauge", e.kv_usage()),
            ("vllm:num_preemptions_total", "counter", e.num_preemptions),
            ("vllm:prompt_tokens_total", "counter", c["prompt_tokens"]),
            ("vllm:generation_tokens_total", "counter", c["generation_tokens"]),
            ("vllm:prefix_cache_queries_total", "counter", c["queries"]),
            ("vllm:prefix_cache_hits_total", "counter", c["hits"]),
        ]
        out = []
        for name, kind, value in rows:
            out.append(f"# TYPE {name} {kind}\n{name}{labels} {float(value)}\n")
        out.append("# TYPE vllm:request_success_total counter\n")
        out.append(
            f'vllm:request_success_total{{engine="0",finished_reason="length",'
            f'model_name="{self.cfg.api_model_name}"}} {float(c["success"])}\n'
        )
        return "".join(out)


# ---- HTTP --------------------------------------------------------------------------------------
EMULATOR = web.AppKey("emulator", EmulatedEngine)


async def _generate(request: web.Request, chat: bool) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    body = await api.read_json_body(request)
    model = body.get("model")
    if model is not None and model != emu.cfg.api_model_name:  # absent: the served one (vLLM)
        return api.model_not_found(model, [emu.cfg.api_model_name])
    try:
        tokens = prompt_token_ids(body, chat, emu.tokenizer)
        max_tokens = api.max_tokens(body, emu.cfg.default_max_tokens)
        if len(tokens) < 1:
            raise PromptError("the prompt is empty")
        stream = emu.submit(tokens, max_tokens)
    except PromptError as exc:
        return api.error_response(400, str(exc))
    fmt = api.ResponseFormat(stream.req.request_id, emu.cfg.api_model_name, chat)
    try:
        if body.get("stream"):
            return await _stream(request, emu, stream, fmt, api.include_usage(body))
        while not stream.done:
            stream.event.clear()
            await stream.event.wait()
        text = "".join(emu.token_text(i) for i in range(stream.req.num_output_tokens))
        return web.Response(
            body=orjson.dumps(fmt.full(text, _usage(stream.req))), content_type="application/json"
        )
    finally:
        emu.finish(stream)


async def _stream(request, emu, stream: _Stream, fmt, include_usage: bool) -> web.StreamResponse:
    resp = web.StreamResponse(headers=api.SSE_HEADERS)
    await resp.prepare(request)
    req = stream.req
    sent = 0
    while True:
        if sent >= stream.produced:
            stream.event.clear()
            await stream.event.wait()
        end = stream.produced
        done = stream.done
        parts = []
        for i in range(sent, end):
            last = done and i == end - 1
            parts.append(api.sse(fmt.chunk(emu.token_text(i), i == 0, "length" if last else None)))
        sent = end
        if done:
            if include_usage:
                parts.append(api.sse(fmt.usage_chunk(_usage(req))))
            parts.append(api.SSE_DONE)
        await resp.write(b"".join(parts))
        if done:
            break
    await resp.write_eof()
    return resp


def _usage(req: EngineRequest) -> dict:
    return api.usage(req.num_prompt_tokens, req.num_output_tokens, max(0, req.num_hit_tokens))


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _models(request: web.Request) -> web.Response:
    return web.json_response(api.models_list([request.app[EMULATOR].cfg.api_model_name]))


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[EMULATOR].metrics_text(), content_type="text/plain")


async def _kv_event_sources(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMULATOR].kv_event_sources())


async def _tokenize(request: web.Request) -> web.Response:
    """vLLM's ``/tokenize``: a ``prompt`` (special tokens added) or chat ``messages`` (not)."""
    emu = request.app[EMULATOR]
    body = await api.read_json_body(request)
    try:
        tokens = list(prompt_token_ids(body, "messages" in body, emu.tokenizer))
    except PromptError as exc:
        return api.error_response(400, str(exc))
    return web.json_response(
        {"count": len(tokens), "max_model_len": None, "tokens": tokens, "token_strs": None}
    )


async def _detokenize(request: web.Request) -> web.Response:
    body = await api.read_json_body(request)
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens
    ):
        return api.error_response(400, "'tokens' must be a list of non-negative integers")
    return web.json_response({"prompt": request.app[EMULATOR].tokenizer.decode(tokens)})


async def _version(request: web.Request) -> web.Response:
    from importlib.metadata import version

    return web.json_response({"version": f"wildserve-{version('wildserve')}"})


async def _reset(request: web.Request) -> web.Response:
    n = request.app[EMULATOR].reset_prefix_cache()
    return web.json_response({"cleared_blocks": n})


def make_engine_app(cfg: EngineServerConfig, engine: Engine | None = None) -> web.Application:
    """The aiohttp app of one emulated instance; the driver runs while the app runs."""
    return api.openai_app(
        EMULATOR,
        EmulatedEngine(cfg, engine),
        api.MAX_BODY_BYTES,
        [
            ("POST", "/v1/completions", _completions),
            ("POST", "/v1/chat/completions", _chat),
            ("GET", "/v1/models", _models),
            ("GET", "/health", _health),
            ("GET", "/metrics", _metrics),
            ("POST", "/reset_prefix_cache", _reset),
            ("GET", "/kv_event_sources", _kv_event_sources),
            ("POST", "/tokenize", _tokenize),
            ("POST", "/detokenize", _detokenize),
            ("GET", "/version", _version),
        ],
    )
