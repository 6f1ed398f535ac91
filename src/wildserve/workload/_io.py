"""Shared plumbing of the trace readers: gzip-aware line streams and one-line decode errors."""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any, TypeVar

import msgspec

from wildserve.errors import TraceFormatError

T = TypeVar("T")

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]

_GZIP_MAGIC = b"\x1f\x8b"
_AT_PATH = re.compile(r" - at `\$\.?(?P<field>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")
_BYTE = re.compile(r"\(byte (?P<byte>\d+)\)")


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for reading, transparently gunzipping it when it starts with the gzip magic."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            magic = fh.read(2)
        return gzip.open(p, "rb") if magic == _GZIP_MAGIC else p.open("rb")
    except OSError as exc:
        raise TraceFormatError(
            str(path), None, None, f"cannot read: {exc.strerror or exc}"
        ) from None


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line) for every non-blank line, one line in memory at a time."""
    with open_binary(path) as fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    yield lineno, line
        except (OSError, EOFError) as exc:  # truncated or corrupt gzip stream
            raise TraceFormatError(str(path), None, None, f"cannot read: {exc}") from None


def decode_error(
    path: str | Path, lineno: int, exc: msgspec.MsgspecError, text: bytes
) -> TraceFormatError:
    """Turn a msgspec error into a one-line TraceFormatError naming the field it points at."""
    msg = str(exc)
    field = None
    m = _AT_PATH.search(msg)
    if m:
        field = m.group("field") or None
        msg = msg[: m.start()]
    m = _MISSING.search(msg)
    if m:  # nested: "missing required field `in` - at `$.requests[1]`" -> requests[1].in
        field = f"{field}.{m.group('field')}" if field else m.group("field")
        msg = "missing required field"
    if not isinstance(exc, msgspec.ValidationError):  # ValidationError subclasses DecodeError
        b = _BYTE.search(msg)
        if b:  # multi-line documents: report the line the bad byte is on
            lineno += text.count(b"\n", 0, int(b.group("byte")))
        msg = f"invalid JSON: {msg}"
    return TraceFormatError(str(path), lineno, field, msg.strip())


def decode(decoder: msgspec.json.Decoder, path: str | Path, lineno: int, text: bytes) -> T:
    """Decode one JSON document with a typed decoder, raising TraceFormatError on any problem."""
    try:
        return decoder.decode(text)
    except msgspec.MsgspecError as exc:
        raise decode_error(path, lineno, exc, text) from None


def check_num_blocks(
    path: str | Path,
    lineno: int,
    field: str,
    num_ids: int,
    prompt_tokens: int,
    block_size: int,
    allow_floor: bool = False,
) -> None:
    """Check a prompt's block-id count: ceil(prompt/block), or also floor(prompt/block) when allowed."""
    expected = math.ceil(prompt_tokens / block_size)
    if num_ids == expected or (allow_floor and num_ids == prompt_tokens // block_size):
        return
    want = f"ceil({prompt_tokens}/{block_size}) = {expected}"
    if allow_floor:
        want += f" or floor = {prompt_tokens // block_size}"
    raise TraceFormatError(str(path), lineno, field, f"has {num_ids} block ids, expected {want}")


def check_order(path: str | Path, lineno: int, field: str, prev: float, now: float) -> None:
    """Time-ordered logs must not go back in time; a decrease means a corrupted or spliced file."""
    if now < prev:
        raise TraceFormatError(
            str(path), lineno, field, f"decreases from {prev:g} to {now:g} (must be non-decreasing)"
        )


def iter_block_records(
    path: str | Path, decoder: msgspec.json.Decoder, block_size: int
) -> Iterator[tuple[int, Any]]:
    """Decode a JSONL trace of ``timestamp`` / ``input_length`` / ``hash_ids`` records, checked.

    Shared by the Mooncake and Bailian readers: block-id count must be ceil(input/block) and
    ``timestamp`` must not decrease. Yields (1-based line number, record).
    """
    prev = 0.0
    for lineno, text in iter_lines(path):
        rec = decode(decoder, path, lineno, text)
        check_num_blocks(path, lineno, "hash_ids", len(rec.hash_ids), rec.input_length, block_size)
        check_order(path, lineno, "timestamp", prev, rec.timestamp)
        prev = rec.timestamp
        yield lineno, rec
