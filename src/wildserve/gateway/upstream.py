"""Pooled keep-alive connections to one backend, parsed with httptools, driven by callbacks.

A request is one ``write`` of prepared head bytes plus the client's raw body. The response's parts go
straight to the exchange that owns the connection (``on_head``, ``on_body``, ``on_complete``,
``on_lost``): a streamed answer is relayed chunk by chunk from these callbacks, with no task switch
per chunk. A connection goes back to the pool only after a complete response that allows keep-alive;
idle ones close after ``keepalive_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol
from urllib.parse import urlsplit

import httptools


class Exchange(Protocol):
    """What the pool's connections report to (the proxy's per-attempt state)."""

    def on_head(self, status: int, content_type: bytes) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_complete(self) -> None: ...

    def on_lost(self, exc: BaseException | None) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a backend; carries one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.last_active = 0.0
        self.num_exchanges = 0  # responses received on this connection
        self.got_bytes = False  # any byte of the current response arrived
        self._ctype = b""

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_active = self.pool.loop.time()
        if self.exchange is None:  # nothing was asked: a confused or closing backend
            self.transport.close()  # type: ignore[union-attr]
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(ConnectionError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.discard(self)
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.on_lost(exc or ConnectionResetError("backend closed the connection"))

    def pause_writing(self) -> None:  # a huge request body; the kernel will take it
        pass

    def resume_writing(self) -> None:
        pass

    # ---- httptools callbacks -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 12 and name.lower() == b"content-type":
            self._ctype = value

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.on_head(self.parser.get_status_code(), self._ctype)

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.on_body(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        self.exchange = None
        self.num_exchanges += 1
        self._ctype = b""
        if self.parser.should_keep_alive() and self.transport is not None:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()
        if ex is not None:
            ex.on_complete()

    # ---- used by the proxy -------------------------------------------------------------------
    def send(self, exchange: Exchange, data: bytes) -> None:
        self.exchange = exchange
        self.got_bytes = False
        self.last_active = self.pool.loop.time()
        self.transport.write(data)  # type: ignore[union-attr]

    def fail(self, exc: BaseException) -> None:
        """Abandon the current exchange (timeout, client gone): close, and tell the exchange."""
        ex = self.exchange
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()  # the backend sees the close and aborts the request
        if ex is not None:
            ex.on_lost(exc)

    def pause_reading(self, paused: bool) -> None:
        if self.transport is not None:
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()


class UpstreamPool:
    """Idle keep-alive connections to one backend, handed out last-in first-out."""

    def __init__(self, url: str, connect_timeout_s: float, keepalive_s: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl.create_default_context()
        self.port = parts.port or (443 if self.ssl else 80)
        self.prefix = parts.path.rstrip("/").encode()
        host_header = parts.netloc.encode()
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.idle: list[UpstreamConnection] = []
        self.active: set[UpstreamConnection] = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._heads: dict[bytes, bytes] = {}
        self._host_line = b"Host: " + host_header + b"\r\n"

    def request_head(self, path: bytes) -> bytes:
        """``POST path HTTP/1.1`` and the fixed headers, up to ``Content-Length: `` (cached)."""
        head = self._heads.get(path)
        if head is None:
            head = (b"POST " + self.prefix + path + b" HTTP/1.1\r\n" + self._host_line +
                    b"Content-Type: application/json\r\nContent-Length: ")  # fmt: skip
            self._heads[path] = head
        return head

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A connection ready for one exchange, and whether it was reused from the pool."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                self.active.add(conn)
                return conn, True
        loop = self.loop = asyncio.get_running_loop()
        connect = loop.create_connection(
            lambda: UpstreamConnection(self),
            self.host,
            self.port,
            ssl=self.ssl,
            server_hostname=self.host if self.ssl else None,
        )
        _, conn = await asyncio.wait_for(connect, self.connect_timeout_s)
        self.active.add(conn)
        return conn, False

    def release(self, conn: UpstreamConnection) -> None:
        self.active.discard(conn)
        conn.last_active = self.loop.time()
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        self.active.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def drop_idle(self) -> None:
        for c in self.idle:
            if c.transport is not None:
                c.transport.close()
        self.idle.clear()

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than ``keepalive_s``."""
        keep = [c for c in self.idle if now - c.last_active <= self.keepalive_s]
        for c in self.idle:
            if now - c.last_active > self.keepalive_s and c.transport is not None:
                c.transport.close()
        self.idle = keep

    def close(self) -> None:
        for conn in [*self.idle, *self.active]:
            if conn.transport is not None:
                conn.transport.abort()
        self.idle.clear()
        self.active.clear()
