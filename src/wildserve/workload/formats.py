"""Trace specs -> requests: the format registry, the builtin traces, sniffing, load_trace / iter_trace.

A spec is ``builtin:NAME`` (shipped in the package), ``FORMAT:PATH`` (``mooncake``, ``bailian``,
``weka``, ``azure``) or a bare path whose format is sniffed from its first bytes.

Besides its reader's options, every trace takes the output-length options of ``OUTPUT_OPTIONS``
(``output_scale``, ``output_cap``, ``output_lengths``, ``output_seed``), applied after reading, so any
command that passes ``-o KEY=VALUE`` to a trace can make it decode-heavy.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from wildserve.errors import ConfigError, TraceFormatError
from wildserve.registry import Registry
from wildserve.workload._io import open_binary
from wildserve.workload.azure import AZURE_COLUMNS, read_azure
from wildserve.workload.bailian import read_bailian
from wildserve.workload.mooncake import read_mooncake
from wildserve.workload.request import Request
from wildserve.workload.weka import read_weka

DEFAULT_TRACE = "builtin:mooncake-conversation"  # the default trace of every command
SNIFF_BYTES = 1 << 16


@dataclass(frozen=True)
class TraceFormat:
    """One on-disk trace format: a streaming reader and a test that recognizes its first bytes."""

    name: str
    read: Callable[..., Iterator[Request]]  # read(path, **options), yields in arrival order
    sniff: Callable[[Path, bytes], bool]  # (path, first bytes) -> is it this format?
    description: str


@dataclass(frozen=True)
class BuiltinTrace:
    """A trace shipped gzipped inside the package, so no command depends on files outside it."""

    name: str
    format: str
    resource: str  # file name under wildserve/data/traces/
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # reader defaults for this trace

    @property
    def path(self) -> Path:
        return Path(str(files("wildserve") / "data" / "traces" / self.resource))


FORMATS: Registry[TraceFormat] = Registry("trace format")
BUILTINS: Registry[BuiltinTrace] = Registry("builtin trace")


def _has_keys(head: bytes, *keys: str) -> bool:
    return all(re.search(rb'"' + k.encode() + rb'"\s*:', head) for k in keys)


def _sniff_mooncake(path: Path, head: bytes) -> bool:
    return (
        head.lstrip().startswith(b"{")
        and _has_keys(head, "timestamp", "input_length", "output_length", "hash_ids")
        and not _has_keys(head, "chat_id")
    )


def _sniff_bailian(path: Path, head: bytes) -> bool:
    return head.lstrip().startswith(b"{") and _has_keys(head, "chat_id", "parent_chat_id")


def _sniff_weka(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return any(p.name.endswith((".json", ".json.gz")) for p in path.iterdir())
    return head.lstrip().startswith(b"{") and (
        _has_keys(head, "hash_id_scope") or _has_keys(head, "block_size", "requests")
    )


def _sniff_azure(path: Path, head: bytes) -> bool:
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    return all(c in first for c in AZURE_COLUMNS)


for _fmt in (
    TraceFormat(
        "mooncake",
        read_mooncake,
        _sniff_mooncake,
        "Mooncake JSONL: timestamp (ms), input_length, output_length, hash_ids (512-token blocks)",
    ),
    TraceFormat(
        "bailian",
        read_bailian,
        _sniff_bailian,
        "Qwen-Bailian JSONL: chat_id, parent_chat_id, timestamp (s), type, turn, hash_ids (16-token)",
    ),
    TraceFormat(
        "weka",
        read_weka,
        _sniff_weka,
        "WEKA Claude Code sessions: a directory of .json[.gz], one session file, or a .jsonl[.gz] "
        "bundle of one session a line; sessions start at Poisson times",
    ),
    TraceFormat(
        "azure",
        read_azure,
        _sniff_azure,
        "Azure LLM inference CSV: TIMESTAMP, ContextTokens, GeneratedTokens (no prefix ids)",
    ),
):
    FORMATS.add(_fmt.name, _fmt)

for _builtin in (
    BuiltinTrace(
        "mooncake-conversation",
        "mooncake",
        "mooncake_conversation.jsonl.gz",
        "Mooncake (Kimi) conversation trace: 12,031 requests over ~59 min (Apache-2.0)",
    ),
    BuiltinTrace(
        "azure-conv",
        "azure",
        "azure_conv.csv.gz",
        "Azure LLM inference, conversation, Nov 2023: 19,366 requests over ~58 min (CC-BY-4.0)",
    ),
    BuiltinTrace(
        "azure-code",
        "azure",
        "azure_code.csv.gz",
        "Azure LLM inference, code, Nov 2023: 8,819 requests over ~57 min (CC-BY-4.0)",
    ),
    BuiltinTrace(
        "weka-claude-code",
        "weka",
        "weka_claude_code_41.jsonl.gz",
        "WEKA Claude Code agent sessions trace_0001-0044 (41 sessions), Poisson starts (Apache-2.0)",
    ),
):
    BUILTINS.add(_builtin.name, _builtin)


def _read_head(path: Path) -> bytes:
    with open_binary(path) as fh:
        try:
            return fh.read(SNIFF_BYTES)
        except (OSError, EOFError) as exc:
            raise TraceFormatError(str(path), None, None, f"cannot read: {exc}") from None


def sniff_format(path: Path) -> TraceFormat:
    """Pick the one format whose sniff test accepts the file's first 64 KiB (or directory)."""
    head = b"" if path.is_dir() else _read_head(path)
    matches = [FORMATS.get(name) for name in FORMATS if FORMATS.get(name).sniff(path, head)]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(FORMATS.names())
    if not matches:
        problem = (
            f"cannot tell the trace format from its content; prefix the path with one of: {names}"
        )
    else:
        found = ", ".join(m.name for m in matches)
        problem = f"content matches several formats ({found}); prefix the path with one of: {names}"
    raise TraceFormatError(str(path), None, None, problem)


def resolve_spec(spec: str) -> tuple[TraceFormat, Path, dict[str, Any]]:
    """Split a spec into (format, path, reader defaults); a bare path gets its format sniffed."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "builtin":
        builtin = BUILTINS.get(rest)
        return FORMATS.get(builtin.format), builtin.path, dict(builtin.options)
    if sep and prefix in FORMATS:
        path = Path(rest).expanduser()
        if not path.exists():
            raise TraceFormatError(rest, None, None, "no such file or directory")
        return FORMATS.get(prefix), path, {}
    path = Path(spec).expanduser()
    if sep and prefix.replace("-", "").replace("_", "").isalnum() and not path.exists():
        raise TraceFormatError(
            spec,
            None,
            None,
            f"unknown trace format '{prefix}'; a trace spec is builtin:NAME "
            f"({', '.join(BUILTINS.names())}), FORMAT:PATH ({', '.join(FORMATS.names())}) or a path",
        )
    if not path.exists():
        raise TraceFormatError(
            spec,
            None,
            None,
            "no such file or directory; a trace spec is builtin:NAME "
            f"({', '.join(BUILTINS.names())}), FORMAT:PATH ({', '.join(FORMATS.names())}) or a path",
        )
    return sniff_format(path), path, {}


def _check_options(fmt: TraceFormat, options: dict[str, Any]) -> None:
    accepted = list(inspect.signature(fmt.read).parameters)[1:]  # the first one is the path
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"trace format '{fmt.name}' has no option {', '.join(unknown)}; "
            f"its options are: {', '.join(accepted) or '(none)'}"
        )


# options every trace accepts: they reshape output lengths after the reader (see iter_trace)
OUTPUT_OPTIONS = ("output_scale", "output_cap", "output_lengths", "output_seed")


def iter_trace(spec: str = DEFAULT_TRACE, **options: Any) -> Iterator[Request]:
    """Stream a trace's requests in arrival order with bounded memory.

    Options go to the reader, except the output-length options: ``output_lengths=NAME`` replaces
    every output length by a draw from a named distribution (``reasoning``; seeded by
    ``output_seed``, default 0), then ``output_scale`` multiplies them and ``output_cap`` caps them
    (``workload.transforms.scale_outputs``; the cap also bounds the named distribution).
    """
    fmt, path, defaults = resolve_spec(spec)
    merged = {**defaults, **options}
    shaping = {k: merged.pop(k) for k in OUTPUT_OPTIONS if k in merged}
    _check_options(fmt, merged)
    requests = fmt.read(path, **merged)
    return _shape_outputs(requests, **shaping) if shaping else requests


def _shape_outputs(
    requests: Iterator[Request],
    output_scale: float = 1.0,
    output_cap: int | None = None,
    output_lengths: str | None = None,
    output_seed: int = 0,
) -> Iterator[Request]:
    import numpy as np

    from wildserve.workload import transforms
    from wildserve.workload.lengths import NAMED_LENGTHS, REASONING_CAP

    if output_lengths is not None:
        if output_lengths not in NAMED_LENGTHS:
            raise ConfigError(
                f"output_lengths '{output_lengths}': choose one of {', '.join(NAMED_LENGTHS)}"
            )
        dist = NAMED_LENGTHS[output_lengths](output_cap or REASONING_CAP)
        requests = transforms.resample_outputs(requests, dist, np.random.default_rng(output_seed))
    if not isinstance(output_scale, (int, float)) or isinstance(output_scale, bool):
        raise ConfigError(f"output_scale must be a number, got {output_scale!r}")
    if output_cap is not None and (not isinstance(output_cap, int) or isinstance(output_cap, bool)):
        raise ConfigError(f"output_cap must be an integer, got {output_cap!r}")
    return transforms.scale_outputs(requests, float(output_scale), output_cap)


def renumber(requests: Iterable[Request]) -> list[Request]:
    """Sort by arrival (stable), give ids 0.. in that order and remap ``parent_id``; mutates ``requests``."""
    reqs = sorted(requests, key=operator.attrgetter("arrival_s"))
    new_id = {r.request_id: i for i, r in enumerate(reqs)}
    remap = any(r.parent_id is not None for r in reqs)
    for i, r in enumerate(reqs):
        r.request_id = i
        if remap and r.parent_id is not None:
            r.parent_id = new_id.get(r.parent_id)
    return reqs


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building millions of acyclic objects (halves a 1M-request load)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_trace(spec: str = DEFAULT_TRACE, **options: Any) -> list[Request]:
    """Load a whole trace, sorted by arrival with request ids 0.. in arrival order."""
    with _gc_paused():
        return renumber(iter_trace(spec, **options))
