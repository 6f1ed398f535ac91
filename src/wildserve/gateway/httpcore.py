"""A small HTTP/1.1 server core for the gateway: asyncio protocols, httptools' C parser, no framework.

The gateway forwards thousands of requests a second on a shared core; aiohttp's server spent more per
request building request/response objects than the proxy spent on everything else. Here a connection
parses with httptools, hands each complete request to its route's handler, and writes whole responses
with one ``write`` (streams as chunked encoding). Handlers receive a ``Request`` (the parts of
aiohttp's ``web.Request`` that the side routes use: ``read()``, ``headers``, ``app``) and return a
``Response``, an aiohttp ``web.Response`` (converted), or ``None`` when they wrote the answer
themselves through ``Request.conn``. Unknown paths get 404 and wrong methods 405, as OpenAI-style JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import orjson
from multidict import CIMultiDict

from wildserve.gateway.serve import bind_error

log = logging.getLogger(__name__)

_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_END_CHUNKS = b"0\r\n\r\n"
_HIGH_WATER = 1 << 20  # bytes buffered for a slow client before its upstream is paused


def error_json(status: int, message: str, err_type: str, code: str | int | None = None) -> bytes:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    err = {"message": message, "type": err_type, "param": None, "code": code or status}
    return orjson.dumps({"error": err})


class Response:
    """A whole response: status, body and its content type, plus any extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


class Request:
    """One parsed request; ``read()`` and ``headers`` mirror aiohttp's for handlers written for it."""

    __slots__ = ("_headers", "app", "body", "conn", "method", "path", "raw_headers", "url")

    def __init__(
        self, conn: Connection, method: str, url: bytes, raw_headers: list, body: bytes
    ) -> None:
        self.conn = conn
        self.app = conn.server.app
        self.method = method
        self.url = url
        self.path = url.split(b"?", 1)[0].decode("latin-1")
        self.raw_headers = raw_headers  # [(name, value)] as bytes, in order
        self.body = body
        self._headers: CIMultiDict | None = None

    @property
    def headers(self) -> CIMultiDict:
        if self._headers is None:
            self._headers = CIMultiDict(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw_headers
            )
        return self._headers

    @property
    def client_max_size(self) -> int:
        return self.conn.server.max_body_bytes

    async def read(self) -> bytes:
        return self.body

    def header(self, lower_name: bytes) -> bytes | None:
        """One header's raw value by its lower-case name (no mapping built)."""
        for k, v in self.raw_headers:
            if len(k) == len(lower_name) and k.lower() == lower_name:
                return v
        return None


Handler = Callable[[Request], Awaitable[Any]]


class Connection(asyncio.Protocol):
    """One client connection: parse, dispatch one request at a time, write, keep alive."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # a handler is running (answers go out in request order)
        self.pending: deque[tuple[Handler, Request, bool]] = deque()
        self.last_active = 0.0
        self.streaming = False
        self.on_lost: Callable[[], None] | None = None  # the running handler's abort hook
        self.on_drain: Callable[[bool], None] | None = None  # (paused?) for a streaming handler
        self.write_paused = False
        self._url = b""
        self._headers: list = []
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.last_active = self.loop.time()
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.pending.clear()
        hook = self.on_lost
        if hook is not None:
            self.on_lost = None
            hook()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.on_drain is not None:
            self.on_drain(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.on_drain is not None:
            self.on_drain(False)

    # ---- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            low = name.lower()
            if low == b"content-length":
                with contextlib.suppress(ValueError):
                    self._too_large = int(value) > self.server.max_body_bytes
            elif low == b"expect" and value.lower() == b"100-continue" and not self._too_large:
                self.transport.write(_CONTINUE)  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            self._too_large = True
        if not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        method = parser.get_method().decode("latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(self, method, self._url, self._headers, body)
        server = self.server
        handler = server.too_large if self._too_large else server.resolve(req)
        self.pending.append((handler, req, parser.should_keep_alive()))
        if not self.busy:
            self._next()

    # ---- dispatch ----------------------------------------------------------------------------
    def _next(self) -> None:
        if not self.pending or self.closed:
            return
        handler, req, keep_alive = self.pending.popleft()
        self.busy = True
        self.loop.create_task(self._run(handler, req, keep_alive))

    async def _run(self, handler: Handler, req: Request, keep_alive: bool) -> None:
        try:
            resp = await handler(req)
        except Exception as exc:
            answer = getattr(exc, "response", None)  # OpenAIHTTPError and friends
            if callable(answer):
                resp = answer()
            else:
                log.exception("handler of %s %s failed", req.method, req.path)
                resp = Response(500, error_json(500, f"internal error: {exc!r}", "server_error"))
        if resp is not None and not self.closed:
            self.respond_any(resp, keep_alive)
        self.busy = False
        self.on_lost = None
        self.on_drain = None
        self.streaming = False
        if self.closed:
            return
        if not keep_alive:
            self.transport.close()  # type: ignore[union-attr]
            return
        self.last_active = self.loop.time()
        self._next()

    def _fail(self, status: int, message: str) -> None:
        self.server.count_reject(status)
        if self.transport is not None and not self.closed:
            body = error_json(status, message, "invalid_request_error")
            self.transport.write(_head(status, "application/json", len(body), None, False) + body)
            self.transport.close()

    # ---- writing -----------------------------------------------------------------------------
    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: bytes | None = None,
        keep_alive: bool = True,
    ) -> None:
        """Write one whole response; ``extra`` is raw header lines (``b"Name: value\\r\\n"``)."""
        if not self.closed:
            head = _head(status, content_type, len(body), extra, keep_alive)
            self.transport.write(head + body)  # type: ignore[union-attr]

    def respond_any(self, resp: Any, keep_alive: bool) -> None:
        if isinstance(resp, Response):
            extra = _header_lines(resp.headers) if resp.headers else None
            self.respond(resp.status, resp.body, resp.content_type, extra, keep_alive)
            return
        # an aiohttp web.Response from a handler written for aiohttp
        headers = {k: v for k, v in resp.headers.items() if k.lower() != "content-length"}
        ctype = headers.pop("Content-Type", None) or resp.content_type or "application/octet-stream"
        body = resp.body if isinstance(resp.body, bytes) else bytes(resp.body or b"")
        self.respond(resp.status, body, ctype, _header_lines(headers) or None, keep_alive)

    def start_stream(self, status: int, content_type: str, extra: bytes | None, first: bytes):
        """Send the head of a chunked response together with its first chunk."""
        self.streaming = True
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n" % (
            status,
            _REASONS.get(status, b"Unknown"),
            content_type.encode("latin-1"),
        )
        out = head + (extra or b"") + b"\r\n"
        if first:
            out += b"%x\r\n%s\r\n" % (len(first), first)
        if not self.closed:
            self.transport.write(out)  # type: ignore[union-attr]

    def write_chunk(self, data: bytes) -> None:
        if data and not self.closed:
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))  # type: ignore[union-attr]

    def end_stream(self, last: bytes = b"") -> None:
        if not self.closed:
            out = (b"%x\r\n%s\r\n" % (len(last), last) if last else b"") + _END_CHUNKS
            self.transport.write(out)  # type: ignore[union-attr]


def _head(
    status: int, content_type: str, length: int, extra: bytes | None, keep_alive: bool
) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
        status,
        _REASONS.get(status, b"Unknown"),
        content_type.encode("latin-1"),
        length,
    )
    if extra:
        head += extra
    if not keep_alive:
        head += b"Connection: close\r\n"
    return head + b"\r\n"


def _header_lines(headers: Any) -> bytes:
    return b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in
                    headers.items())  # fmt: skip


class HttpServer:
    """Routes (method, path) -> handler; serves them on one listening socket."""

    def __init__(
        self,
        app: Any,
        routes: list[tuple[str, str, Handler]],
        max_body_bytes: int,
        on_reject: Callable[[int], None] | None = None,
        idle_timeout_s: float = 75.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_reject = on_reject
        self.idle_timeout_s = idle_timeout_s
        self.routes: dict[str, dict[str, Handler]] = {}
        for method, path, handler in routes:
            self.routes.setdefault(path, {})[method] = handler
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    def count_reject(self, status: int) -> None:
        if self.on_reject is not None:
            self.on_reject(status)

    def resolve(self, req: Request) -> Handler:
        by_method = self.routes.get(req.path)
        if by_method is None:
            return self._not_found
        handler = by_method.get(req.method)
        if handler is None:
            if req.method == "HEAD" and "GET" in by_method:
                return by_method["GET"]
            return self._method_not_allowed
        return handler

    async def too_large(self, req: Request) -> Response:
        self.count_reject(413)
        msg = f"request body too large: limit is {self.max_body_bytes} bytes"
        return Response(413, error_json(413, msg, "invalid_request_error"))

    async def _not_found(self, req: Request) -> Response:
        self.count_reject(404)
        msg = f"no route {req.method} {req.path}"
        return Response(404, error_json(404, msg, "not_found_error", "not_found"))

    async def _method_not_allowed(self, req: Request) -> Response:
        self.count_reject(405)
        allowed = ", ".join(sorted(self.routes[req.path]))
        msg = f"method {req.method} not allowed on {req.path}; use {allowed}"
        body = error_json(405, msg, "invalid_request_error", "method_not_allowed")
        return Response(405, body, headers={"Allow": allowed})

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> int:
        """Listen on ``host:port`` (0: any free port), or accept on ``sock`` if given (a worker's
        share of a socket its parent bound); returns the bound port."""
        self.loop = asyncio.get_running_loop()
        # a worker's inherited socket, or one bound here
        where: dict[str, Any] = (
            {"sock": sock}
            if sock is not None
            else {"host": host, "port": port, "reuse_address": True}
        )
        try:
            self._server = await self.loop.create_server(
                lambda: Connection(self), backlog=1024, **where
            )
        except OSError as exc:
            raise bind_error(exc, host, port) from None
        self._sweeper = self.loop.create_task(self._sweep())
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        """Close client connections idle longer than ``idle_timeout_s``."""
        while True:
            await asyncio.sleep(min(5.0, self.idle_timeout_s / 2))
            now = self.loop.time()
            for conn in list(self.connections):
                if not conn.busy and now - conn.last_active > self.idle_timeout_s:
                    conn.transport.close()  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
