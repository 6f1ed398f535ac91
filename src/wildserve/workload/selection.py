"""Which requests of which trace a command runs: one definition of ``--trace``, ``--seed``,
``--rate-scale`` and ``--max-requests`` for every command that reads a trace, and one rule: a
selection with no requests is an error that says what was empty, never a silent empty run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wildserve.errors import ConfigError
from wildserve.workload.formats import DEFAULT_TRACE
from wildserve.workload.request import Request


@dataclass(frozen=True)
class TraceSelection:
    """A trace spec, its arrivals (recorded or seeded), a rate factor and a prefix of it."""

    trace: str = field(
        default=DEFAULT_TRACE,
        metadata={
            "help": "trace spec: builtin:NAME, FORMAT:PATH or a path (`wildserve trace list`)"
        },
    )
    seed: int | None = field(
        default=None,
        metadata={
            "help": "Poisson arrivals from this seed: session starts of traces that place them "
            "(WEKA), else the recorded trace re-timed at its own mean rate (default: recorded)",
            "ge": 0,
        },
    )
    rate_scale: float = field(
        default=1.0, metadata={"help": "multiply the arrival rate (2 = twice as fast)", "gt": 0}
    )
    max_requests: int = field(
        default=0, metadata={"help": "use only the first N requests (0: all)", "ge": 0}
    )

    def load(self, reader_options: dict[str, Any] | None = None) -> list[Request]:
        """The selected requests; ConfigError naming the trace and the options when none are left."""
        from wildserve.workload.seeding import load_seeded
        from wildserve.workload.transforms import limit, rate_scale

        requests = load_seeded(self.trace, self.seed, reader_options)
        require_requests(requests, self.trace, reader_options)
        if self.max_requests:
            requests = list(limit(requests, self.max_requests))
        return list(rate_scale(requests, self.rate_scale))


def require_requests(
    requests: list[Request], spec: str, reader_options: dict[str, Any] | None = None
) -> None:
    """Raise a one-line ConfigError when a trace (after its reader's windows and filters) is empty."""
    if requests:
        return
    shown = "".join(f" -o {k}={v}" for k, v in (reader_options or {}).items())
    with_options = f" (read with{shown})" if shown else ""
    raise ConfigError(
        f"trace {spec} has no requests{with_options}: the file, or what its reader options keep, "
        "is empty; nothing to run"
    )
