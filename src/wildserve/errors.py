"""One error family so the CLI can turn any expected failure into a one-line message."""

from __future__ import annotations


class WildserveError(Exception):
    """Base class of every error the CLI reports as one line and a non-zero exit."""


class ConfigError(WildserveError):
    """A configuration value is out of range or inconsistent with another one."""


class UnknownNameError(WildserveError):
    """A registry lookup failed; the message lists the names that exist."""


class TraceFormatError(WildserveError):
    """A trace file is malformed; the message names the file, the line and the field."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {problem}")
        self.path = path
        self.line = line
        self.field = field
