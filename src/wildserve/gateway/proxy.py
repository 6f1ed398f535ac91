"""The gateway: an asyncio reverse proxy that places each OpenAI request with a routing policy.

Per request: read the body once, tokenize the prompt, chain its block hashes, ask the policy (the
same object the simulator uses) over views of the healthy backends, forward the raw body, and pass
the answer through as it arrives. The view source hears dispatch, first byte and finish, on every
path. A connection failure before any byte is retried once on the next-best backend; a backend
dying mid-stream ends the client's stream with an SSE error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from wildserve.blocks import token_block_hashes
from wildserve.gateway import openai_api as api
from wildserve.gateway.backends import Backend, HealthChecker, MetricsPoller
from wildserve.gateway.config import GatewayConfig
from wildserve.gateway.gateway_metrics import GatewayMetrics
from wildserve.gateway.serve import cancel_and_wait
from wildserve.gateway.tokens import PromptError, make_tokenizer, prompt_token_ids
from wildserve.routing import RouteRequest, make_policy
from wildserve.routing.kv_index import KVEventIndex, KVEventViews
from wildserve.routing.local import RouterLocalViews

log = logging.getLogger(__name__)

# Failures of a backend before it sent anything: safe to retry elsewhere.
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError)
_STREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


class Gateway:
    """Backends, the policy, the view source and the metrics of one running gateway."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.backends = [Backend(i, url) for i, url in enumerate(cfg.backends)]
        self.policy = make_policy(cfg.policy)
        self.tokenizer = make_tokenizer(cfg.tokenizer)
        n = len(self.backends)
        self.local = RouterLocalViews(n, cfg.block_size, capacity_blocks=cfg.prefix_index_blocks)
        self.kv_index: KVEventIndex | None = None
        if cfg.kv_events:
            self.kv_index = KVEventIndex(n, cfg.block_size)
            self.views: RouterLocalViews | KVEventViews = KVEventViews(self.kv_index, self.local)
        else:
            self.views = self.local
        self._ids = itertools.count()
        self.session: aiohttp.ClientSession | None = None
        self.subscribers: list = []
        self.health: HealthChecker | None = None
        self._tasks: list[asyncio.Task] = []
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s
        )
        self.metrics = GatewayMetrics(self)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=cfg.upstream_keepalive_s)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        loop = asyncio.get_running_loop()
        self.health = HealthChecker(
            self.backends,
            self.session,
            cfg.health_interval_s,
            cfg.health_timeout_s,
            cfg.unhealthy_after,
            self.on_readmit,
            self.on_eject,
        )
        self._tasks.append(loop.create_task(self.health.run()))
        if self.kv_index is not None:
            from wildserve.gateway.kv_events import KVEventSubscriber

            for i, endpoint in enumerate(cfg.kv_events):
                sub = KVEventSubscriber(
                    self.kv_index, i, endpoint, cfg.kv_events_topic,
                    self._replay_finder(i) if cfg.kv_replay else None,
                    cfg.health_timeout_s, cfg.health_interval_s,
                )  # fmt: skip
                sub.start()
                self.subscribers.append(sub)
            poller = MetricsPoller(self.backends, self.session, cfg.metrics_poll_s, self.on_load)
            self._tasks.append(loop.create_task(poller.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        for sub in self.subscribers:
            await sub.close()
        if self.session is not None:
            await self.session.close()

    def _replay_finder(self, instance: int):
        from wildserve.gateway.kv_replay import discover_replay_endpoint

        url = self.backends[instance].url
        return lambda: discover_replay_endpoint(self.session, url, self.cfg.health_timeout_s)

    def on_readmit(self, instance: int) -> None:
        """A backend came back, maybe restarted: forget the prefixes it may have lost, and reload
        its KV-event index from its replay endpoint where it has one."""
        self.local.reset_index(instance)
        if self.subscribers:
            self.subscribers[instance].request_resync(clear=True)

    def on_eject(self, instance: int) -> None:
        """A dead or unreachable engine's cache cannot be routed to: empty its KV-event index."""
        if self.kv_index is not None:
            self.kv_index.cleared(instance)

    def on_load(self, instance: int, load: dict[str, float]) -> None:
        if isinstance(self.views, KVEventViews):
            slot = self.views.loads[instance]
            slot.num_running = int(load.get("num_running", slot.num_running))
            slot.num_waiting = int(load.get("num_waiting", slot.num_waiting))
            slot.kv_usage = load.get("kv_usage", slot.kv_usage)

    # ---- routing -----------------------------------------------------------------------------
    def route_request(self, body: dict, chat: bool) -> RouteRequest:
        tokens = prompt_token_ids(body, chat, self.tokenizer)
        bs = self.cfg.block_size
        return RouteRequest(next(self._ids), len(tokens), token_block_hashes(tokens, bs), bs)

    def choose(self, route: RouteRequest, exclude: Sequence[int] = ()) -> int | None:
        """Index of the backend the policy picks among the healthy ones; None if there is none."""
        candidates = [b.index for b in self.backends if b.healthy and b.index not in exclude]
        if not candidates:
            return None
        return self.policy.choose_among(route, self.views.views(route), candidates)

    # ---- proxying ----------------------------------------------------------------------------
    async def proxy(self, request: web.Request, path: str, chat: bool) -> web.StreamResponse:
        t_start = time.perf_counter()
        raw = await api.read_raw_body(request)
        body = api.parse_json_body(raw)
        try:
            route = self.route_request(body, chat)
        except PromptError as exc:
            self.metrics.rejected("bad_request")
            return api.error_response(400, str(exc))
        headers = {"Content-Type": "application/json"}
        auth = request.headers.get("Authorization")
        if auth is not None:
            headers["Authorization"] = auth
        tried: list[int] = []
        while True:
            t_decide = time.perf_counter()
            chosen = self.choose(route, tried)
            self.metrics.decision(time.perf_counter() - t_decide)
            if chosen is None:
                self.metrics.rejected("no_backend")
                if tried:
                    return api.error_response(502, "every backend tried failed to connect")
                return api.error_response(503, "no healthy backend")
            backend = self.backends[chosen]
            self.views.on_dispatch(chosen, route)
            backend.in_flight += 1
            self.metrics.sent(chosen)
            try:
                upstream = await self.session.post(  # type: ignore[union-attr]
                    backend.url + path, data=raw, headers=headers, timeout=self.timeout
                )
            except _CONNECT_ERRORS as exc:
                self._release(route, backend)
                self.metrics.error(chosen, "connect")
                self.health.eject(backend, f"connection failed: {exc}")  # type: ignore[union-attr]
                tried.append(chosen)
                if len(tried) < 2:
                    continue
                return api.error_response(502, f"backend {backend.url} failed: {exc}")
            except TimeoutError:
                self._release(route, backend)
                self.metrics.error(chosen, "timeout")
                return api.error_response(504, f"backend {backend.url} timed out")
            break
        try:
            return await self._relay(request, upstream, route, backend, body.get("stream"))
        finally:
            self._release(route, backend)
            if upstream.content.at_eof():
                upstream.release()  # fully read: the connection goes back to the pool
            else:
                upstream.close()  # failed or abandoned: drop it (the backend aborts the request)
            self.metrics.finished(time.perf_counter() - t_start)

    def _release(self, route: RouteRequest, backend: Backend) -> None:
        """Called exactly once per dispatch, on every path."""
        backend.in_flight -= 1
        self.views.on_finish(route.request_id)

    async def _relay(
        self, request, upstream, route, backend: Backend, stream
    ) -> web.StreamResponse:
        rid = route.request_id
        ctype = upstream.headers.get("Content-Type", "application/json")
        extra = {"x-wildserve-backend": str(backend.index)}
        if not (stream and upstream.status == 200 and ctype.startswith("text/event-stream")):
            try:
                data = await upstream.read()
            except _STREAM_ERRORS as exc:
                self.metrics.error(backend.index, "read")
                return api.error_response(502, f"backend {backend.url} failed: {exc}")
            self.views.on_first_token(rid)
            if upstream.status >= 500:
                self.metrics.error(backend.index, f"http_{upstream.status}")
            return web.Response(
                status=upstream.status, body=data, content_type=ctype.split(";")[0], headers=extra
            )
        resp = web.StreamResponse(status=200, headers={**api.SSE_HEADERS, **extra})
        await resp.prepare(request)
        read = upstream.content.readany
        first = True
        failed = False
        while not failed:
            try:
                chunk = await read()
            except _STREAM_ERRORS as exc:
                self.metrics.error(backend.index, "mid_stream")
                log.warning("backend %s failed mid-stream: %r", backend.url, exc)
                msg = f"backend {backend.url} failed mid-stream: {type(exc).__name__}"
                chunk = b"\n\n" + api.sse(api.error_body(502, msg))
                failed = True
            if not chunk:
                break
            if first:
                self.views.on_first_token(rid)
                first = False
            try:
                await resp.write(chunk)
            except ConnectionError:  # the client went away; closing upstream aborts the request
                self.metrics.error(backend.index, "client_gone")
                return resp
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp


GATEWAY = web.AppKey("gateway", Gateway)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].proxy(request, "/v1/completions", chat=False)


async def _chat(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].proxy(request, "/v1/chat/completions", chat=True)


async def _health(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    healthy = sum(b.healthy for b in gw.backends)
    status = 200 if healthy else 503
    return web.json_response(
        {"healthy_backends": healthy, "backends": len(gw.backends)}, status=status
    )


async def _metrics(request: web.Request) -> web.Response:
    body, ctype = request.app[GATEWAY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": ctype})


def make_gateway_app(cfg: GatewayConfig) -> web.Application:
    """The gateway's aiohttp app; backends' sessions, health checks and subscribers live with it."""
    from wildserve.gateway.passthrough import SideRoutes

    gw = Gateway(cfg)
    return api.openai_app(
        GATEWAY,
        gw,
        cfg.max_body_bytes,
        [
            ("POST", "/v1/completions", _completions),
            ("POST", "/v1/chat/completions", _chat),
            ("GET", "/health", _health),
            ("GET", "/metrics", _metrics),
            *SideRoutes(gw).routes(),
        ],
    )
