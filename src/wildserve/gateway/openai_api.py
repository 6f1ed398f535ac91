"""The OpenAI wire shapes both servers speak: error bodies, SSE framing, response and usage objects."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from wildserve.gateway.tokens import PromptError

MAX_BODY_BYTES = 64 << 20  # the emulated engine's request size limit
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
SSE_DONE = b"data: [DONE]\n\n"

_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "invalid_request_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(status: int, message: str, code: str | None = None) -> dict:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    err_type = _ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": err_type, "param": None, "code": code or status}}


def error_response(status: int, message: str, code: str | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(error_body(status, message, code)),
        content_type="application/json",
    )


def model_not_found(model: object, served: list[str]) -> web.Response:
    """OpenAI's answer to an unknown model: 404, ``code: model_not_found``."""
    body = error_body(404, f"The model `{model}` does not exist. Served: {', '.join(served)}")
    body["error"].update(type="invalid_request_error", param="model", code="model_not_found")
    return web.Response(status=404, body=orjson.dumps(body), content_type="application/json")


class OpenAIHTTPError(Exception):
    """Raised while reading a request; becomes an OpenAI-style error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> web.Response:
        return error_response(self.status, str(self))


async def read_raw_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise OpenAIHTTPError(
            413, f"request body too large: limit is {request.client_max_size} bytes"
        ) from None


def parse_json_body(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise OpenAIHTTPError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise OpenAIHTTPError(400, "the JSON body must be an object")
    return body


async def read_json_body(request: web.Request) -> dict:
    return parse_json_body(await read_raw_body(request))


@web.middleware
async def openai_errors(request: web.Request, handler):
    """Map request-reading failures (bad JSON, too large) and unknown routes (404, 405) to
    OpenAI-style JSON errors."""
    try:
        return await handler(request)
    except OpenAIHTTPError as exc:
        return exc.response()
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        resp = error_response(
            405, f"method {request.method} not allowed on {request.path}; use {allowed}",
            "method_not_allowed",
        )  # fmt: skip
        resp.headers["Allow"] = allowed
        return resp
    except web.HTTPNotFound:
        return error_response(404, f"no route {request.method} {request.path}", "not_found")


def check_generation(body: dict) -> None:
    """The sampling fields both servers support, checked before any work: PromptError if not."""
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise PromptError(f"'n' must be 1 (one completion per request), got {n!r}")
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise PromptError("'max_tokens' must be a positive integer")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise PromptError("'stream' must be true or false")


def max_tokens(body: dict, default: int) -> int:
    """The request's output budget (after ``check_generation``'s checks)."""
    check_generation(body)
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return default if value is None else value


def include_usage(body: dict) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def models_list(names: list[str]) -> dict:
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": created, "owned_by": "wildserve"} for n in names
        ],
    }


class ResponseFormat:
    """Builds the completion / chat-completion objects and stream chunks of one request."""

    __slots__ = ("chat", "created", "model", "rid")

    def __init__(self, rid: str, model: str, chat: bool) -> None:
        self.rid = rid
        self.model = model
        self.chat = chat
        self.created = int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str, first: bool, finish_reason: str | None) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, usage_obj: dict) -> dict:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": usage_obj}

    def full(self, text: str, usage_obj: dict) -> dict:
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "length",
            }
            return {**self._head("chat.completion"), "choices": [choice], "usage": usage_obj}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        return {**self._head("text_completion"), "choices": [choice], "usage": usage_obj}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
S = TypeVar("S")


def openai_app(
    key: web.AppKey[S],
    service: S,
    client_max_size: int,
    routes: list[tuple[str, str, Handler]],
) -> web.Application:
    """An app serving ``routes`` (method, path, handler) with ``service`` under ``key``;
    ``service.start()`` / ``service.stop()`` run with the app (aiohttp's cleanup context)."""
    app = web.Application(client_max_size=client_max_size, middlewares=[openai_errors])
    app[key] = service

    async def lifecycle(app: web.Application):
        await service.start()  # type: ignore[attr-defined]
        yield
        await service.stop()  # type: ignore[attr-defined]

    app.cleanup_ctx.append(lifecycle)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app
