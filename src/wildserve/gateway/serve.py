"""Running the servers: bind (port 0 picks a free one), serve until stopped, on uvloop when present.

Two kinds of app run here: aiohttp ``web.Application`` (the emulated engine) and apps with their own
``start(host, port)`` / ``stop()`` (the gateway's server core). Both stop within a second of SIGINT or
SIGTERM, and a taken port is one line (``PortInUseError``), not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from wildserve.errors import WildserveError

log = logging.getLogger(__name__)


class PortInUseError(WildserveError):
    """The address to listen on is taken."""


def bind_error(exc: OSError, host: str, port: int) -> WildserveError:
    """The one-line error for a failed ``bind``."""
    if exc.errno == errno.EADDRINUSE:
        return PortInUseError(f"{host}:{port} is already in use (pick another --port)")
    return WildserveError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


class _CoreRunner:
    """``cleanup()`` for apps with their own ``stop()``, like aiohttp's AppRunner."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def cleanup(self) -> None:
        await self.app.stop()


async def start_app(app: Any, host: str, port: int) -> tuple[Any, int]:
    """Start ``app`` on ``host:port``; returns a runner (``await runner.cleanup()``) and the port."""
    if not isinstance(app, web.Application):
        return _CoreRunner(app), await app.start(host, port)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise bind_error(exc, host, port) from None
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound


def run_forever(
    make_app: Callable[[], Any],
    host: str,
    port: int,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; the app is built inside the loop that runs it."""

    async def main() -> None:
        runner, bound = await start_app(make_app(), host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready(bound)
        try:
            await stop.wait()
        finally:
            try:
                await asyncio.wait_for(runner.cleanup(), 1.5)
            except TimeoutError:
                log.warning("shutdown took over 1.5 s; leaving the rest to the process exit")

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
