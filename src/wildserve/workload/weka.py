"""WEKA Claude Code session reader: one agent session per JSON document, placed by Poisson starts.

Timing, as measured on the 400 sessions of kv-cache-tester @ 94f6046d (see docs/results/trace-loading.md):
- a top-level request's ``t`` is seconds since the session start; ``t`` never decreases;
- ``api_time`` is that call's latency and ``think_time`` the idle time before it, so
  ``t[i+1] ~= t[i] + api_time[i] + think_time[i+1]`` (within 1 s: ``t`` and ``think_time`` are rounded);
- a completed ``subagent``'s ``t`` is when it *finished*: it started ``duration_ms`` earlier, which is
  0.1-1 s after the end of the parent call that launched it; its nested ``t`` count from that start;
- an ``async_launched`` subagent has no ``duration_ms``; its ``t`` is its launch time;
- ``len(hash_ids) == floor(in / block_size)`` in every request (only full blocks carry an id).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import numpy as np

from wildserve.errors import ConfigError, TraceFormatError
from wildserve.workload._io import (
    NonNegFloat,
    NonNegInt,
    check_num_blocks,
    decode,
    iter_lines,
    open_binary,
)
from wildserve.workload.request import Request

DEFAULT_SESSION_RATE = 0.1  # sessions per second: the 400 shared sessions start over ~67 min
NAMESPACE_BITS = 32  # global block id = (session number << 32) | local id


class _Call(msgspec.Struct, tag_field="type"):
    t: NonNegFloat
    in_: NonNegInt = msgspec.field(name="in")
    out: NonNegInt
    hash_ids: list[int]
    model: str = ""
    input_types: list[str] = []
    api_time: float | None = None
    think_time: float | None = None


class _StreamingCall(_Call, tag="s"):
    pass


class _PlainCall(_Call, tag="n"):
    pass


class _Subagent(msgspec.Struct, tag_field="type", tag="subagent"):
    t: NonNegFloat
    requests: list[_StreamingCall | _PlainCall | _Subagent]
    agent_id: str = ""
    duration_ms: NonNegFloat | None = None  # None for async_launched subagents
    status: str | None = None


class _Session(msgspec.Struct):
    requests: list[_StreamingCall | _PlainCall | _Subagent]
    block_size: Annotated[int, msgspec.Meta(ge=1)]
    id: str = ""
    hash_id_scope: Literal["local", "global"] = "local"


_DECODER = msgspec.json.Decoder(_Session)


def _iter_documents(path: Path) -> Iterator[tuple[Path, int, bytes]]:
    """(file, line, JSON text) per session: a directory of files, one file, or a JSONL bundle."""
    if path.is_dir():
        found = sorted(
            p for p in path.iterdir() if p.name.endswith((".json", ".json.gz")) and p.is_file()
        )
        if not found:
            raise TraceFormatError(str(path), None, None, "directory holds no .json/.json.gz files")
        for p in found:
            with open_binary(p) as fh:
                try:
                    data = fh.read()
                except (OSError, EOFError) as exc:
                    raise TraceFormatError(str(p), None, None, f"cannot read: {exc}") from None
            yield p, 1, data
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        for lineno, text in iter_lines(path):
            yield path, lineno, text
    else:
        with open_binary(path) as fh:
            yield path, 1, fh.read()


class _Flattener:
    """Turns one decoded session into (offset_s, call, agent_id, field path) in time order."""

    def __init__(self, path: Path, lineno: int, session: _Session) -> None:
        self.path, self.lineno, self.block_size = path, lineno, session.block_size
        self.calls: list[tuple[float, _Call, str, str]] = []

    def walk(self, items: list, start_s: float, agent_id: str, where: str) -> None:
        prev_t = 0.0
        for i, item in enumerate(items):
            field = f"{where}[{i}]"
            if item.t < prev_t:
                raise TraceFormatError(
                    str(self.path),
                    self.lineno,
                    f"{field}.t",
                    f"decreases from {prev_t:g} to {item.t:g}",
                )
            prev_t = item.t
            if isinstance(item, _Subagent):
                # a completed subagent's t is its finish time; never start it before its parent
                began = (
                    item.t - item.duration_ms / 1000.0 if item.duration_ms is not None else item.t
                )
                self.walk(
                    item.requests, start_s + max(began, 0.0), item.agent_id, f"{field}.requests"
                )
                continue
            check_num_blocks(
                self.path,
                self.lineno,
                f"{field}.hash_ids",
                len(item.hash_ids),
                item.in_,
                self.block_size,
                allow_floor=True,
            )
            self.calls.append((start_s + item.t, item, agent_id, field))


def _session_requests(
    path: Path, lineno: int, text: bytes, number: int, start_s: float, max_idle_s: float | None
) -> list[Request]:
    """Flatten one session into requests at ``start_s`` + internal time, ids namespaced by ``number``."""
    session: _Session = decode(_DECODER, path, lineno, text)
    flat = _Flattener(path, lineno, session)
    flat.walk(session.requests, 0.0, "", "requests")
    flat.calls.sort(key=lambda c: c[0])  # stable: nested calls interleave with the parent's
    is_local = session.hash_id_scope == "local"
    namespace = number << NAMESPACE_BITS
    requests: list[Request] = []
    interned: dict[int, int] = {}  # one int object per id: later turns repeat earlier prefixes
    offset = prev = 0.0
    for turn, (at, call, agent_id, field) in enumerate(flat.calls, start=1):
        gap = at - prev if turn > 1 else at
        offset += gap if max_idle_s is None else min(gap, max_idle_s)
        prev = at
        ids = call.hash_ids
        if is_local and ids:
            try:
                ids_np = np.asarray(ids, dtype=np.int64)
            except OverflowError:
                ids_np = np.array([-1])
            if ids_np.min() < 0 or ids_np.max() >> NAMESPACE_BITS:
                raise TraceFormatError(
                    str(path), lineno, f"{field}.hash_ids", "local ids must lie in [0, 2**32)"
                )
            ids = [interned.setdefault(h, h) for h in (ids_np | namespace).tolist()]
        extra = {"session": session.id or path.name, "model": call.model, "api_time": call.api_time}
        if agent_id:
            extra["agent_id"] = agent_id
        requests.append(
            Request(
                request_id=-1,  # set when merged into the workload
                arrival_s=start_s + offset,
                prompt_tokens=call.in_,
                output_tokens=call.out,
                hash_ids=tuple(ids),
                block_size=session.block_size,
                session_id=number,
                category="+".join(call.input_types) or None,
                turn=turn,
                extra=extra,
            )
        )
    return requests


def read_weka(
    path: str | Path,
    session_rate: float = DEFAULT_SESSION_RATE,
    seed: int = 0,
    max_idle_s: float | None = None,
) -> Iterator[Request]:
    """Stream WEKA sessions merged in arrival order; session k starts at a Poisson time.

    The first session starts at 0, later ones after Exp(1/session_rate) gaps (seeded); each keeps its
    internal timing, with idle gaps capped at ``max_idle_s`` when given. Only sessions that have
    started and not finished are in memory (a heap of their next requests).
    """
    if not session_rate > 0:
        raise ConfigError(f"session_rate must be > 0, got {session_rate}")
    if max_idle_s is not None and max_idle_s < 0:
        raise ConfigError(f"max_idle_s must be >= 0, got {max_idle_s}")
    return _merge(
        _iter_documents(Path(path)), session_rate, np.random.default_rng(seed), max_idle_s
    )


def _merge(
    documents: Iterator[tuple[Path, int, bytes]],
    session_rate: float,
    rng: np.random.Generator,
    max_idle_s: float | None,
) -> Iterator[Request]:
    """Heap-merge sessions in arrival order, decoding each one only when its start is reached."""
    heap: list[tuple[float, int, int]] = []  # (arrival, session number, index in session)
    active: dict[int, list[Request]] = {}
    numbers = itertools.count()
    next_start = 0.0
    pending = next(documents, None)
    request_id = 0
    while pending is not None or heap:
        # admit every session that starts no later than the earliest pending request
        while pending is not None and (not heap or next_start <= heap[0][0]):
            number = next(numbers)
            reqs = _session_requests(*pending, number, next_start, max_idle_s)
            if reqs:
                active[number] = reqs
                heapq.heappush(heap, (reqs[0].arrival_s, number, 0))
                next_start += float(rng.exponential(1.0 / session_rate))
            pending = next(documents, None)
        if not heap:
            break
        _, number, index = heapq.heappop(heap)
        reqs = active[number]
        req = reqs[index]
        req.request_id = request_id
        request_id += 1
        yield req
        if index + 1 < len(reqs):
            heapq.heappush(heap, (reqs[index + 1].arrival_s, number, index + 1))
        else:
            del active[number]
