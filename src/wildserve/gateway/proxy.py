"""The gateway: a reverse proxy that places each OpenAI request with a routing policy.

Per request: parse the body once (orjson), check it, tokenize the prompt and chain its block hashes
(native), ask the policy (the same object the simulator uses) over views of the healthy backends that
serve the model, and forward the client's raw bytes on a pooled keep-alive connection. The answer is
relayed as it arrives, without parsing it: a whole response in one write, a stream chunk by chunk.

Failure handling, all before the client has seen a byte: a refused or reset connection, or a backend
that closes before answering, is retried on the next-best backend (``max_attempts`` in all); a
streamed answer's 200 header is held back until its first chunk (the first token), so a backend that
dies while the request is queued is retried too. A backend that dies mid-stream ends the client's
stream with an SSE error event and ``data: [DONE]``. Every dispatch is released exactly once (the
view source's in-flight count is the only one), whatever happened.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from array import array
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from wildserve.blocks import load_native, token_block_hash_array
from wildserve.gateway import openai_api as api
from wildserve.gateway.backends import Backend, HealthChecker, MetricsPoller
from wildserve.gateway.config import GatewayConfig
from wildserve.gateway.gateway_metrics import GatewayMetrics
from wildserve.gateway.httpcore import Connection, HttpServer, Request, Response
from wildserve.gateway.serve import cancel_and_wait
from wildserve.gateway.tokens import ByteTokenizer, PromptError, make_tokenizer, prompt_token_ids
from wildserve.gateway.upstream import UpstreamConnection, UpstreamPool
from wildserve.routing import RouteRequest, make_policy
from wildserve.routing.kv_index import KVEventIndex, KVEventViews
from wildserve.routing.local import RouterLocalViews

if TYPE_CHECKING:
    from wildserve.gateway.shared_load import SharedLoadTable

log = logging.getLogger(__name__)

_STREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)
_SSE = b"text/event-stream"
_JSON_CT = "application/json"


class Gateway:
    """Backends, the policy, the view source and the metrics of one running gateway."""

    def __init__(self, cfg: GatewayConfig, load_table: SharedLoadTable | None = None) -> None:
        """``load_table``: the table all of one gateway's workers share (this worker's row of
        load and of metric counts)."""
        self.cfg = cfg
        n = len(cfg.backends)
        self.local = RouterLocalViews(n, cfg.block_size, capacity_blocks=cfg.prefix_index_blocks)
        if load_table is not None:
            self.local.share_load(load_table)
        # the router's in-flight count per backend lives in the view source, once
        self.backends = [Backend(i, url, self.local.load) for i, url in enumerate(cfg.backends)]
        self.pools = [
            UpstreamPool(url, cfg.connect_timeout_s, cfg.upstream_keepalive_s)
            for url in cfg.backends
        ]
        self.policy = make_policy(cfg.policy)
        self.tokenizer = make_tokenizer(cfg.tokenizer)
        self._tokenize_pool: ThreadPoolExecutor | None = None
        if not isinstance(self.tokenizer, ByteTokenizer):
            self._tokenize_pool = ThreadPoolExecutor(2, thread_name_prefix="tokenize")
        self.kv_index: KVEventIndex | None = None
        if cfg.kv_events:
            self.kv_index = KVEventIndex(n, cfg.block_size)
            self.views: RouterLocalViews | KVEventViews = KVEventViews(self.kv_index, self.local)
        else:
            self.views = self.local
        self._ids = itertools.count()
        self.session: aiohttp.ClientSession | None = None  # health checks, polls, side routes
        self.subscribers: list = []
        self.health: HealthChecker | None = None
        self._tasks: list[asyncio.Task] = []
        self.active: set[_Attempt] = set()  # exchanges in progress (for the read timeout)
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s
        )
        self.metrics = GatewayMetrics(self, load_table)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        load_native()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=cfg.upstream_keepalive_s)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        loop = asyncio.get_running_loop()
        for pool in self.pools:
            pool.loop = loop
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
        self._tasks.append(loop.create_task(self._watchdog()))
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
        for attempt in list(self.active):
            attempt.conn.fail(ConnectionAbortedError("gateway shutting down"))
        for pool in self.pools:
            pool.close()
        for sub in self.subscribers:
            await sub.close()
        if self.session is not None:
            await self.session.close()
        if self._tokenize_pool is not None:
            self._tokenize_pool.shutdown(wait=False, cancel_futures=True)

    async def _watchdog(self) -> None:
        """Fail exchanges whose backend sent nothing for ``read_timeout_s``; close idle sockets."""
        timeout = self.cfg.read_timeout_s
        period = min(0.25, timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for attempt in list(self.active):
                if now - attempt.conn.last_active > timeout:
                    attempt.conn.fail(TimeoutError(f"no data for {timeout:g} s"))
            for pool in self.pools:
                pool.sweep(now)

    def _replay_finder(self, instance: int):
        from wildserve.gateway.kv_replay import discover_replay_endpoint

        url = self.backends[instance].url
        return lambda: discover_replay_endpoint(self.session, url, self.cfg.health_timeout_s)

    def on_readmit(self, instance: int) -> None:
        """A backend came back, maybe restarted: forget the prefixes and models it may have lost,
        and reload its KV-event index from its replay endpoint where it has one."""
        self.local.reset_index(instance)
        self.backends[instance].models = None
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
        """The prompt's routing key. Its block hashes are an ``array('q')`` made from the native
        kernel's int64 output in one copy: the prefix index reads O(log blocks) of them and stores
        the unmatched tail as packed int64 runs, so the 1,250 Python ints of a 20k-token prompt's
        ``tolist()`` (~15 us) are never made."""
        tokens = prompt_token_ids(body, chat, self.tokenizer)
        bs = self.cfg.block_size
        hashes = array("q")
        hashes.frombytes(token_block_hash_array(tokens, bs).tobytes())
        return RouteRequest(next(self._ids), len(tokens), hashes, bs)

    def choose(
        self, route: RouteRequest, exclude: Sequence[int] = (), model: str | None = None
    ) -> int | None:
        """Index of the backend the policy picks among the healthy ones serving ``model`` (any if
        None or not yet known); None if there is none."""
        candidates = [
            b.index
            for b in self.backends
            if b.healthy and b.index not in exclude and b.serves(model)
        ]
        if not candidates:
            return None
        t0 = time.perf_counter()
        chosen = self.policy.choose_among(route, self.views.views(route), candidates)
        self.metrics.decision.observe(time.perf_counter() - t0)
        return chosen

    def check_model(self, model: object) -> Response | None:
        """400 if ``model`` is missing, 404 ``model_not_found`` if no backend is known to serve it."""
        if not isinstance(model, str) or not model:
            return self.reject(400, "you must provide a model parameter ('model')", "model")
        known = [b.models for b in self.backends if b.models is not None]
        if known and not any(model in names for names in known):
            self.metrics.rejected(404, "model_not_found")
            resp = api.model_not_found(model, sorted(set().union(*known)))
            return Response(404, resp.body)  # type: ignore[arg-type]
        return None

    def reject(self, status: int, message: str, param: str | None = None) -> Response:
        """An answer from the gateway itself, counted in ``wildserve_gateway_rejected_total``."""
        self.metrics.rejected(status)
        body = api.error_body(status, message)
        body["error"]["param"] = param
        return Response(status, orjson.dumps(body))

    # ---- proxying ----------------------------------------------------------------------------
    async def proxy(self, request: Request, path: bytes, chat: bool) -> Response | None:
        loop = asyncio.get_running_loop()
        t_start = loop.time()
        raw = request.body
        try:
            body = api.parse_json_body(raw)
            api.check_generation(body)
            if self._tokenize_pool is None:
                route = self.route_request(body, chat)
            else:  # a real tokenizer costs ms per prompt: off the event loop (it drops the GIL)
                route = await loop.run_in_executor(
                    self._tokenize_pool, self.route_request, body, chat
                )
        except api.OpenAIHTTPError as exc:
            return self.reject(exc.status, str(exc))
        except PromptError as exc:
            return self.reject(400, str(exc))
        model = body.get("model")
        refused = self.check_model(model)
        if refused is not None:
            return refused
        stream = body.get("stream") is True
        auth = request.header(b"authorization")
        tail = b"%d\r\n" % len(raw)
        if auth is not None:
            tail += b"Authorization: " + auth + b"\r\n"
        tail += b"\r\n"
        tried: list[int] = []
        last_failure = ""
        while len(tried) < self.cfg.max_attempts:
            chosen = self.choose(route, tried, model)
            if chosen is None:
                break
            outcome = await self._attempt(
                request.conn, chosen, route, path, tail + raw, stream, t_start
            )
            if outcome is None or isinstance(outcome, Response):
                self.metrics.finished(chosen, loop.time() - t_start)
                return outcome
            tried.append(chosen)
            last_failure = outcome
        if tried:
            return self.reject(502, f"every backend tried failed: {last_failure}")
        return self.reject(503, "no healthy backend serves this model")

    async def _attempt(
        self,
        client: Connection,
        index: int,
        route: RouteRequest,
        path: bytes,
        payload: bytes,
        stream: bool,
        t_start: float,
    ) -> Response | str | None:
        """One try on backend ``index``: the answer (None if already written), or why to retry."""
        backend = self.backends[index]
        pool = self.pools[index]
        metrics = self.metrics
        self.policy.on_dispatch(index, route)
        self.views.on_dispatch(index, route)
        metrics.sent(index)
        try:
            for fresh_retry in (False, True):  # a reused connection may have died while idle
                if fresh_retry:
                    pool.drop_idle()  # the others are likely dead too (the backend restarted)
                try:
                    conn, reused = await pool.acquire()
                except (TimeoutError, OSError) as exc:
                    metrics.error(index, "connect")
                    self._eject(backend, f"connection failed: {exc!r}")
                    return f"backend {backend.url} failed to connect: {exc!r}"
                attempt = _Attempt(self, client, conn, index, route.request_id, stream, t_start)
                self.active.add(attempt)
                try:
                    conn.send(attempt, pool.request_head(path) + payload)
                    result = await attempt.done
                finally:
                    self.active.discard(attempt)
                    client.on_lost = None
                    client.on_drain = None
                if isinstance(result, BaseException):  # nothing reached the client yet
                    if reused and not conn.got_bytes and not fresh_retry and _is_reset(result):
                        continue
                    kind = "timeout" if isinstance(result, TimeoutError) else "reset"
                    metrics.error(index, kind)
                    if isinstance(result, TimeoutError):
                        return self.reject(504, f"backend {backend.url} timed out: {result}")
                    self._eject(backend, f"connection failed before answering: {result!r}")
                    return f"backend {backend.url} failed before answering: {result!r}"
                return result
            raise AssertionError("unreachable")
        finally:
            self.views.on_finish(route.request_id)

    def _eject(self, backend: Backend, why: str) -> None:
        if self.health is not None:  # None only before start()
            self.health.eject(backend, why)


def _is_reset(exc: BaseException) -> bool:
    return isinstance(exc, (ConnectionError, EOFError)) and not isinstance(exc, TimeoutError)


class _Attempt:
    """One request on one upstream connection: relays its answer, or reports why it failed.

    ``done`` resolves to a ``Response`` (a whole answer to write), ``None`` (a stream, already
    relayed and ended), or an exception when the backend failed before the client saw any byte.
    """

    __slots__ = ("chunks", "client", "conn", "ctype", "done", "gw", "index", "mode", "request_id",
                 "sent", "status", "stream", "t_start")  # fmt: skip

    def __init__(
        self,
        gw: Gateway,
        client: Connection,
        conn: UpstreamConnection,
        index: int,
        request_id: object,
        stream: bool,
        t_start: float,
    ) -> None:
        self.gw = gw
        self.t_start = t_start
        self.client = client
        self.conn = conn
        self.index = index
        self.request_id = request_id
        self.stream = stream
        self.done: asyncio.Future = client.loop.create_future()
        self.status = 0
        self.ctype = b""
        self.chunks: list[bytes] = []
        self.mode = 0  # 0: waiting for the head, 1: collecting a whole body, 2: relaying a stream
        self.sent = False  # a byte of this answer reached the client: no retry from here on
        client.on_lost = self.client_gone
        client.on_drain = conn.pause_reading

    # ---- from the upstream connection --------------------------------------------------------
    def on_head(self, status: int, content_type: bytes) -> None:
        self.status = status
        self.ctype = content_type
        self.mode = 2 if self.stream and status == 200 and content_type.startswith(_SSE) else 1

    def on_body(self, data: bytes) -> None:
        if self.mode != 2:
            self.chunks.append(data)
            return
        if self.sent:
            self.client.write_chunk(data)
            return
        # the first token: only now does the client get the 200
        self.sent = True
        gw = self.gw
        gw.views.on_first_token(self.request_id)
        gw.metrics.first_token(self.index, self.client.loop.time() - self.t_start)
        self.client.start_stream(200, "text/event-stream", _stream_headers(self.index), data)

    def on_complete(self) -> None:
        if self.done.done():
            return
        gw = self.gw
        if self.mode == 2:
            if not self.sent:  # a stream that ended with no event at all
                self.done.set_result(ConnectionResetError("stream ended before any token"))
                return
            self.client.end_stream()
            self.done.set_result(None)
            return
        gw.views.on_first_token(self.request_id)
        gw.metrics.first_token(self.index, self.client.loop.time() - self.t_start)
        if self.status >= 500:
            gw.metrics.error(self.index, f"http_{self.status}")
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        ctype = self.ctype.split(b";")[0].decode("latin-1") or _JSON_CT
        self.done.set_result(
            Response(self.status, body, ctype, {"x-wildserve-backend": str(self.index)})
        )

    def on_lost(self, exc: BaseException | None) -> None:
        if self.done.done():
            return
        exc = exc or ConnectionResetError("backend closed the connection")
        gw = self.gw
        if isinstance(exc, _ClientGone):  # nothing to retry or to tell: the client left
            gw.metrics.error(self.index, "client_gone")
            self.done.set_result(None)
            return
        if not self.sent:
            self.done.set_result(exc)
            return
        gw.metrics.error(self.index, "mid_stream")
        url = gw.backends[self.index].url
        log.warning("backend %s failed mid-stream: %r", url, exc)
        msg = f"backend {url} failed mid-stream: {type(exc).__name__}"
        event = b"\n\n" + api.sse(api.error_body(502, msg)) + api.SSE_DONE
        self.client.end_stream(event)
        self.done.set_result(None)

    # ---- from the client connection ----------------------------------------------------------
    def client_gone(self) -> None:
        """The client disconnected: drop the upstream connection (the backend aborts)."""
        if not self.done.done():
            self.conn.fail(_ClientGone())


class _ClientGone(ConnectionAbortedError):
    """The client closed its connection while its request was being answered."""


_STREAM_HEADS: dict[int, bytes] = {}


def _stream_headers(index: int) -> bytes:
    head = _STREAM_HEADS.get(index)
    if head is None:
        head = b"Cache-Control: no-cache\r\nx-wildserve-backend: %d\r\n" % index
        _STREAM_HEADS[index] = head
    return head


GATEWAY = "gateway"


async def _completions(request: Request) -> Response | None:
    return await request.app.gateway.proxy(request, b"/v1/completions", chat=False)


async def _chat(request: Request) -> Response | None:
    return await request.app.gateway.proxy(request, b"/v1/chat/completions", chat=True)


async def _health(request: Request) -> Response:
    gw = request.app.gateway
    healthy = sum(b.healthy for b in gw.backends)
    body = orjson.dumps({"healthy_backends": healthy, "backends": len(gw.backends)})
    return Response(200 if healthy else 503, body)


async def _metrics(request: Request) -> Response:
    body, ctype = request.app.gateway.metrics.render()
    return Response(200, body, ctype)


class GatewayApp:
    """The gateway and its HTTP server: ``app["gateway"]`` is the Gateway (as with aiohttp apps)."""

    def __init__(
        self, cfg: GatewayConfig, load_table: SharedLoadTable | None = None, sock: Any = None
    ) -> None:
        """``load_table`` and ``sock``: a worker's shared load and the listening socket it inherited."""
        from wildserve.gateway.passthrough import SideRoutes

        self.gateway = Gateway(cfg, load_table)
        self.sock = sock
        routes = [
            ("POST", "/v1/completions", _completions),
            ("POST", "/v1/chat/completions", _chat),
            ("GET", "/health", _health),
            ("GET", "/metrics", _metrics),
            *SideRoutes(self.gateway).routes(),  # /tokenize, /detokenize, /version, /v1/models
        ]
        self.server = HttpServer(self, routes, cfg.max_body_bytes, self.gateway.metrics.rejected)

    def __getitem__(self, key: str) -> Gateway:
        if key != GATEWAY:
            raise KeyError(key)
        return self.gateway

    async def start(self, host: str, port: int) -> int:
        await self.gateway.start()
        try:
            return await self.server.start(host, port, self.sock)
        except BaseException:
            await self.gateway.stop()
            raise

    async def stop(self) -> None:
        await self.server.close()
        await self.gateway.stop()


def make_gateway_app(cfg: GatewayConfig) -> GatewayApp:
    """The gateway's app: its server, backends' pools, health checks and subscribers."""
    return GatewayApp(cfg)
