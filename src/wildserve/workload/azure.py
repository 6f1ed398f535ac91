"""Azure LLM inference trace reader (CSV, Nov 2023): datetimes and token counts, no prefix ids."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from wildserve.errors import TraceFormatError
from wildserve.workload._io import check_order, iter_lines
from wildserve.workload.request import Request

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def _count(path: Path | str, lineno: int, field: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TraceFormatError(
            str(path), lineno, field, f"expected an integer, got {text!r}"
        ) from None
    if value < 0:
        raise TraceFormatError(str(path), lineno, field, f"must be >= 0, got {value}")
    return value


def read_azure(path: str | Path) -> Iterator[Request]:
    """Stream an Azure trace; arrival is seconds since the first row's ``TIMESTAMP``."""
    lines = iter_lines(path)
    header = next(lines, None)
    if header is None:
        raise TraceFormatError(str(path), 1, None, "empty file: expected a CSV header")
    names = [c.strip() for c in header[1].decode("utf-8", "replace").split(",")]
    missing = [c for c in AZURE_COLUMNS if c not in names]
    if missing:
        raise TraceFormatError(str(path), header[0], missing[0], "missing from the CSV header")
    i_ts, i_in, i_out = (names.index(c) for c in AZURE_COLUMNS)
    start: datetime | None = None
    prev_s = 0.0
    for request_id, (lineno, raw) in enumerate(lines):
        cells = raw.decode("utf-8", "replace").rstrip("\r\n").split(",")
        if len(cells) != len(names):
            raise TraceFormatError(
                str(path), lineno, None, f"has {len(cells)} columns, the header has {len(names)}"
            )
        try:
            when = datetime.fromisoformat(cells[i_ts].strip())
        except ValueError:
            raise TraceFormatError(
                str(path), lineno, "TIMESTAMP", f"not a datetime: {cells[i_ts]!r}"
            ) from None
        if start is None:
            start = when
        arrival_s = (when - start).total_seconds()
        check_order(path, lineno, "TIMESTAMP", prev_s, arrival_s)
        prev_s = arrival_s
        yield Request(
            request_id=request_id,
            arrival_s=arrival_s,
            prompt_tokens=_count(path, lineno, "ContextTokens", cells[i_in].strip()),
            output_tokens=_count(path, lineno, "GeneratedTokens", cells[i_out].strip()),
        )
