"""Mooncake JSONL reader (Kimi production traces, FAST'25): ms timestamps, 512-token prefix blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from wildserve.workload._io import NonNegFloat, NonNegInt, iter_block_records
from wildserve.workload.request import Request

MOONCAKE_BLOCK_SIZE = 512


class _MooncakeLine(msgspec.Struct):
    timestamp: NonNegFloat  # ms since trace start
    input_length: NonNegInt
    output_length: NonNegInt
    hash_ids: list[int]


def read_mooncake(path: str | Path, block_size: int = MOONCAKE_BLOCK_SIZE) -> Iterator[Request]:
    """Stream a Mooncake trace; ``len(hash_ids)`` must be ceil(input_length / block_size)."""
    decoder = msgspec.json.Decoder(_MooncakeLine)
    for request_id, (_, rec) in enumerate(iter_block_records(path, decoder, block_size)):
        yield Request(
            request_id=request_id,
            arrival_s=rec.timestamp / 1000.0,
            prompt_tokens=rec.input_length,
            output_tokens=rec.output_length,
            hash_ids=tuple(rec.hash_ids),
            block_size=block_size,
        )
