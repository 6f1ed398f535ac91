"""Qwen-Bailian JSONL reader (Alibaba Bailian traces): seconds, multi-turn chats, 16-token blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec

from wildserve.errors import TraceFormatError
from wildserve.workload._io import NonNegFloat, NonNegInt, iter_block_records
from wildserve.workload.request import Request

BAILIAN_BLOCK_SIZE = 16


class _BailianLine(msgspec.Struct):
    chat_id: int
    parent_chat_id: Annotated[int, msgspec.Meta(ge=-1)]  # -1: first turn of a conversation
    timestamp: NonNegFloat  # seconds since trace start
    input_length: NonNegInt
    output_length: NonNegInt
    type: str
    turn: Annotated[int, msgspec.Meta(ge=1)]
    hash_ids: list[int]


def read_bailian(path: str | Path, block_size: int = BAILIAN_BLOCK_SIZE) -> Iterator[Request]:
    """Stream a Qwen-Bailian trace; a request's session is the root chat of its parent chain.

    Keeps one (request id, root) pair per chat seen so far, so memory grows with the number of chats
    (a few ints each), never with the file. A parent missing from the file (a cut-out window) is
    taken as the root of its chain.
    """
    decoder = msgspec.json.Decoder(_BailianLine)
    seen: dict[int, tuple[int, int]] = {}  # chat_id -> (request_id, root chat_id)
    for request_id, (lineno, rec) in enumerate(iter_block_records(path, decoder, block_size)):
        if rec.chat_id in seen:
            raise TraceFormatError(str(path), lineno, "chat_id", f"{rec.chat_id} appears twice")
        parent_id: int | None = None
        root = rec.chat_id
        if rec.parent_chat_id >= 0:
            parent_id, root = seen.get(rec.parent_chat_id, (None, rec.parent_chat_id))
        seen[rec.chat_id] = (request_id, root)
        yield Request(
            request_id=request_id,
            arrival_s=rec.timestamp,
            prompt_tokens=rec.input_length,
            output_tokens=rec.output_length,
            hash_ids=tuple(rec.hash_ids),
            block_size=block_size,
            session_id=root,
            category=rec.type,
            turn=rec.turn,
            parent_id=parent_id,
            extra={"chat_id": rec.chat_id},
        )
