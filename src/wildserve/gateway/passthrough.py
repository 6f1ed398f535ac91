"""vLLM's side routes through the gateway: ``/tokenize``, ``/detokenize``, ``/version``, ``/v1/models``.

Clients such as ``vllm bench serve`` call these on whatever URL they are given. ``/tokenize`` goes
to the backend the same prompt would be routed to (backends of one fleet serve one model, but a
heterogeneous fleet then answers with the tokenizer that would serve the request); the others go to
any healthy backend, taken in turn. A backend that fails to connect is skipped for the next one.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from wildserve.gateway import openai_api as api
from wildserve.gateway.tokens import PromptError

if TYPE_CHECKING:
    from wildserve.gateway.proxy import Gateway

_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


class SideRoutes:
    """The side routes of one gateway; the turn counter only spreads load (no result depends on it)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._turns = itertools.count()

    def routes(self) -> list[tuple[str, str, api.Handler]]:
        return [
            ("POST", "/tokenize", self.tokenize),
            ("POST", "/detokenize", self.detokenize),
            ("GET", "/version", self.version),
            ("GET", "/v1/models", self.models),
        ]

    def _candidates(self, first: int | None) -> list[int]:
        healthy = [b.index for b in self.gw.backends if b.healthy]
        if first is None and healthy:
            k = next(self._turns) % len(healthy)
            return healthy[k:] + healthy[:k]
        return ([first] if first is not None else []) + [i for i in healthy if i != first]

    async def forward(
        self, method: str, path: str, raw: bytes | None, first: int | None = None
    ) -> web.Response:
        """Send one request to ``first`` (or any healthy backend) and return its answer unchanged."""
        gw = self.gw
        headers = {"Content-Type": "application/json"} if raw is not None else {}
        status, last_error = 503, "no healthy backend"
        for i in self._candidates(first):
            backend = gw.backends[i]
            try:
                async with gw.session.request(  # type: ignore[union-attr]
                    method, backend.url + path, data=raw, headers=headers, timeout=gw.timeout
                ) as resp:
                    body = await resp.read()
                    ctype = resp.headers.get("Content-Type", "application/json").split(";")[0]
                    return web.Response(
                        status=resp.status,
                        body=body,
                        content_type=ctype,
                        headers={"x-wildserve-backend": str(i)},
                    )
            except _FAILURES as exc:
                status, last_error = 502, f"backend {backend.url} failed: {exc!r}"
        return api.error_response(status, last_error)

    async def tokenize(self, request: web.Request) -> web.Response:
        """To the backend this prompt would be routed to (no dispatch is recorded)."""
        raw = await api.read_raw_body(request)
        body = api.parse_json_body(raw)
        gw = self.gw
        try:
            first = gw.choose(gw.route_request(body, chat="messages" in body))
        except PromptError:  # let the engine word the error about its own API
            first = None
        return await self.forward("POST", "/tokenize", raw, first)

    async def detokenize(self, request: web.Request) -> web.Response:
        return await self.forward("POST", "/detokenize", await api.read_raw_body(request))

    async def version(self, request: web.Request) -> web.Response:
        return await self.forward("GET", "/version", None)

    async def models(self, request: web.Request) -> web.Response:
        return await self.forward("GET", "/v1/models", None)
