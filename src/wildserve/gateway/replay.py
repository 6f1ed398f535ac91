"""Replay a trace against an OpenAI-compatible URL and measure latency on the client side.

Each trace block id becomes a fixed text block (same id, same text, exactly the trace's block size in
tokens), so real prompts share exactly the prefixes the trace says they share, and prefix caches and
cache-aware routers see the trace's reuse. Requests are sent at the trace's arrival times, streamed,
and timed with ``wildserve.metrics``' definitions (TTFT, TPOT, E2E).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from wildserve.errors import WildserveError
from wildserve.gateway.config import ReplayConfig
from wildserve.gateway.tokens import ByteTokenizer, Tokenizer
from wildserve.metrics import RequestMetrics
from wildserve.workload.request import Request

log = logging.getLogger(__name__)

_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)


class PromptBuilder:
    """Trace blocks -> text whose token blocks reproduce the trace's prefix structure."""

    def __init__(self, tokenizer: Tokenizer | None = None, seed: int = 0) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        self.seed = seed
        self._words: list[str] | None = None
        if not isinstance(self.tokenizer, ByteTokenizer):
            self._words = single_token_words(self.tokenizer)

    def _tokens_text(self, key: Sequence[int], n: int) -> str:
        """``n`` tokens of text, a pure function of ``key``."""
        rng = np.random.default_rng([self.seed, *key])
        if self._words is None:
            return _LETTERS[rng.integers(0, _LETTERS.size, size=n)].tobytes().decode("ascii")
        words = self._words
        return "".join(words[i] for i in rng.integers(0, len(words), size=n))

    def prompt(self, req: Request) -> str:
        """The prompt of one trace request: its blocks' texts, then per-request filler if needed."""
        parts: list[str] = []
        remaining = req.prompt_tokens
        bs = req.block_size
        if bs > 0:
            for h in req.hash_ids:
                if remaining <= 0:
                    break
                n = min(bs, remaining)
                text = self._tokens_text((0, h & 0xFFFFFFFF, h >> 32 & 0xFFFFFFFF), bs)
                parts.append(text if n == bs else self._prefix(text, n))
                remaining -= n
        if remaining > 0:
            parts.append(self._tokens_text((1, req.request_id & 0xFFFFFFFF), remaining))
        return "".join(parts)

    def _prefix(self, text: str, n: int) -> str:
        if self._words is None:
            return text[:n]
        pieces = text.split(" ")  # words are " w": pieces[0] is empty
        return "".join(" " + w for w in pieces[1 : n + 1])


def single_token_words(tokenizer: Tokenizer, max_words: int = 4096) -> list[str]:
    """Vocabulary pieces `` word`` that encode to one token alone and stay one token in a run."""
    vocab = getattr(tokenizer, "vocab_size", 0)
    words: list[str] = []
    for tid in range(vocab):
        text = tokenizer.decode_one(tid)
        if not text.startswith(" "):  # word-level vocabularies decode without the space
            text = " " + text
        if len(text) < 3 or not text[1:].isalpha():
            continue
        if not text[1:].isascii() or list(tokenizer.encode(text)) != [tid]:
            continue
        words.append(text)
        if len(words) >= max_words:
            break
    if len(words) < 16:
        raise ValueError("tokenizer has too few single-token words to build prompts from")
    probe = "".join(words[:64])
    if len(tokenizer.encode(probe)) != 64:
        raise ValueError("tokenizer merges words across spaces; cannot build exact-length prompts")
    return words


@dataclass(slots=True)
class ClientRecord:
    """One request as the client saw it; times in seconds from the start of the replay."""

    request_id: int
    arrival_s: float
    num_prompt_tokens: int
    first_token_s: float = -1.0
    finish_s: float = -1.0
    first_scheduled_s: float = math.nan  # not observable from the client
    num_output_tokens: int = 0
    num_hit_tokens: int = 0
    backend: int = 0
    error: str | None = None


def _payload(cfg: ReplayConfig, model: str, prompt: str, max_tokens: int) -> dict:
    body: dict = {
        "model": model,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,  # vLLM: generate exactly max_tokens, as the trace says
    }
    if cfg.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


async def _send(session, url: str, body: dict, rec: ClientRecord, t0: float) -> None:
    loop = asyncio.get_running_loop()
    chunks = 0
    usage = None
    try:
        async with session.post(url, data=orjson.dumps(body), headers=_JSON) as resp:
            rec.backend = int(resp.headers.get("x-wildserve-backend", 0))
            if resp.status != 200:
                rec.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                obj = orjson.loads(data)
                if "error" in obj:
                    rec.error = str(obj["error"].get("message", obj["error"]))[:200]
                    return
                if obj.get("choices"):
                    if rec.first_token_s < 0:
                        rec.first_token_s = loop.time() - t0
                    chunks += 1
                if obj.get("usage"):
                    usage = obj["usage"]
        if rec.first_token_s < 0:
            rec.error = "no token received"
            return
        rec.finish_s = loop.time() - t0
        rec.num_output_tokens = chunks
        if usage:
            rec.num_output_tokens = usage.get("completion_tokens") or chunks
            details = usage.get("prompt_tokens_details") or {}
            rec.num_hit_tokens = details.get("cached_tokens") or 0
    except Exception as exc:  # timeouts, OS and aiohttp errors, bad JSON: recorded, never raised
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if rec.error is not None:
            rec.finish_s = -1.0


_JSON = {"Content-Type": "application/json"}


async def check_reachable(url: str, timeout_s: float = 10.0) -> None:
    """A TCP connect to ``url``'s host and port; a one-line WildserveError if nothing listens."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", port), timeout_s
        )
    except (OSError, TimeoutError) as exc:
        raise WildserveError(
            f"cannot reach {url}: {exc!r} (is the server running? --url)"
        ) from None
    writer.close()


async def fetch_model(url: str, timeout_s: float = 10.0) -> str:
    """The first model ``url`` serves; a one-line WildserveError if it cannot be reached."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(f"{url}/v1/models") as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise WildserveError(f"{url}/v1/models answered HTTP {resp.status}: {raw[:120]!r}")
            doc = orjson.loads(raw)  # some routers label it text/plain
            return doc["data"][0]["id"]
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise WildserveError(
            f"cannot reach {url}: {exc!r} (is the server running? --url)"
        ) from None
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise WildserveError(f"{url}/v1/models did not list any model; pass --model") from None


async def replay(
    requests: Sequence[Request],
    cfg: ReplayConfig,
    builder: PromptBuilder,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[ClientRecord]:
    """Send ``requests`` at their arrival times; returns one record per request sent."""
    import aiohttp

    if cfg.model:
        await check_reachable(cfg.url)
    model = cfg.model or await fetch_model(cfg.url)
    path = "/v1/chat/completions" if cfg.endpoint == "chat" else "/v1/completions"
    url = cfg.url.rstrip("/") + path
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    records: list[ClientRecord] = []
    done = 0

    def finished(_task: asyncio.Task) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, len(records))

    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = loop.time()
        base = requests[0].arrival_s if requests else 0.0
        tasks = []
        for req in requests:
            when = req.arrival_s - base
            if cfg.max_seconds and when > cfg.max_seconds:
                break
            body = _payload(cfg, model, builder.prompt(req), max(1, req.output_tokens))
            delay = t0 + when - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            rec = ClientRecord(req.request_id, loop.time() - t0, req.prompt_tokens)
            records.append(rec)
            task = loop.create_task(_send(session, url, body, rec, t0))
            task.add_done_callback(finished)
            tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=cfg.timeout_s)
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return records


def records_metrics(records: Sequence[ClientRecord]) -> RequestMetrics:
    """The shared metric definitions over what the client measured."""
    return RequestMetrics.from_requests(records, [r.backend for r in records])


def summarize_records(
    records: Sequence[ClientRecord], ttft_slo_s: float, tpot_slo_s: float, wall_s: float
) -> dict:
    """The per-policy JSON block ``simulate`` writes, plus client-side error counts."""
    metrics = records_metrics(records)
    num_instances = max((r.backend for r in records), default=0) + 1
    summary = metrics.summary(num_instances, ttft_slo_s, tpot_slo_s)
    errors = [r.error for r in records if r.error is not None]
    summary["sent"] = len(records)
    summary["errors"] = len(errors)
    summary["error_examples"] = sorted(set(errors))[:5]
    summary["wall_s"] = wall_s
    return summary
