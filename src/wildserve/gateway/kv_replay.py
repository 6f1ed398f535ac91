"""vLLM's KV-event replay: ask an engine for the event batches a subscriber missed.

vLLM's ``ZmqEventPublisher`` keeps its last ``buffer_steps`` batches and, when started with a
``replay_endpoint``, binds a ROUTER socket there: a client sends the first sequence number it wants
(8 bytes big-endian) and gets every buffered batch from that number on as ``(topic, seq, payload)``,
then an end marker with seq -1 (``vllm/distributed/kv_events.py``). The engine says where that
socket is at ``GET /kv_event_sources`` (``{dp_rank: KVEventsConfig}``), with ``*`` for the host when
it binds every interface. Replaying from 0 rebuilds an engine's current blocks for a router that
starts late, as long as the buffer still reaches back to the engine's start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

END_SEQ = -1
_WILDCARD_HOSTS = ("*", "0.0.0.0", "::", "[::]")


def reachable_endpoint(endpoint: str, backend_url: str) -> str:
    """An endpoint as published (``tcp://*:5558``) made connectable from here (the backend's host)."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    rest = endpoint[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or host not in _WILDCARD_HOSTS:
        return endpoint
    backend_host = urlsplit(backend_url).hostname or "127.0.0.1"
    if ":" in backend_host:
        backend_host = f"[{backend_host}]"
    return f"tcp://{backend_host}:{port}"


def replay_endpoint_of(sources: object, backend_url: str) -> str | None:
    """The replay endpoint of data-parallel rank 0 in a ``/kv_event_sources`` answer, if offered."""
    if not isinstance(sources, dict) or not sources:
        return None
    first = sources.get("0", sources.get(0, next(iter(sources.values()))))
    if not isinstance(first, dict):
        return None
    endpoint = first.get("replay_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        return None
    return reachable_endpoint(endpoint, backend_url)


async def discover_replay_endpoint(session, backend_url: str, timeout_s: float) -> str | None:
    """Ask a backend's ``/kv_event_sources`` for its replay endpoint; None when it offers none
    (404, no such field); raises OSError / aiohttp.ClientError / TimeoutError while unreachable."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.get(f"{backend_url}/kv_event_sources", timeout=timeout) as resp:
        if resp.status >= 500:
            raise ConnectionError(f"{backend_url}/kv_event_sources answered {resp.status}")
        if resp.status != 200:
            return None
        try:
            sources = await resp.json(content_type=None)
        except ValueError:
            return None
    return replay_endpoint_of(sources, backend_url)


async def fetch_replay(
    ctx, endpoint: str, start_seq: int, timeout_s: float
) -> list[tuple[int, bytes]] | None:
    """Every buffered batch with seq >= ``start_seq`` as ``(seq, payload)``, in order; None when the
    endpoint does not answer within ``timeout_s`` (each reply resets the wait)."""
    import zmq

    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        await sock.send_multipart([b"", start_seq.to_bytes(8, "big")])
        out: list[tuple[int, bytes]] = []
        while True:
            if not await sock.poll(int(timeout_s * 1000)):
                return None
            frames = await sock.recv_multipart()
            if len(frames) != 4:
                log.warning("replay %s: reply of %d frames ignored", endpoint, len(frames))
                continue
            seq = int.from_bytes(frames[2], "big", signed=True)
            if seq == END_SEQ:
                return out
            out.append((seq, frames[3]))
    finally:
        sock.close(linger=0)


class ReplayBuffer:
    """The publisher side (for the emulated engine): the last N batches and a ROUTER serving them."""

    def __init__(self, buffer_steps: int = 10_000) -> None:
        self.batches: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)

    def add(self, seq: int, payload: bytes) -> None:
        self.batches.append((seq, payload))

    def replies(self, start_seq: int, topic: bytes) -> list[Sequence[bytes]]:
        out: list[Sequence[bytes]] = [
            (topic, seq.to_bytes(8, "big"), payload)
            for seq, payload in self.batches
            if seq >= start_seq
        ]
        out.append((b"", END_SEQ.to_bytes(8, "big", signed=True), b""))
        return out

    async def serve(self, sock, topic: bytes) -> None:
        """Answer replay requests on a bound zmq.asyncio ROUTER socket until cancelled."""
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 3:
                log.warning("replay request of %d frames ignored", len(frames))
                continue
            client, _, start = frames
            for reply in self.replies(int.from_bytes(start, "big"), topic):
                await sock.send_multipart([client, b"", *reply])


def run_replay_server(
    buffer: ReplayBuffer, endpoint: str, topic: bytes
) -> tuple[asyncio.Task, str]:
    """Bind a ROUTER on ``endpoint`` and serve ``buffer`` from the running loop; returns the task
    and the bound endpoint (port 0 picks a free one)."""
    import zmq
    import zmq.asyncio

    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()

    async def run() -> None:
        try:
            await buffer.serve(sock, topic)
        finally:
            sock.close(linger=0)

    return asyncio.get_running_loop().create_task(run()), bound
