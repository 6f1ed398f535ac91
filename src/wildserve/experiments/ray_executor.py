"""Run a sweep on a Ray cluster: one task per run, shared traces put into the object store once.

``pip install 'wildserve[ray]'``. Every node needs the same wildserve installed (the tasks import
their run function by name). The driver keeps the run cache, so workers need no shared disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wildserve.errors import ConfigError
from wildserve.experiments.runner import ATTEMPTS, RunOutcome, RunSpec, call

log = logging.getLogger(__name__)


def _task(spec: RunSpec, *inputs: Any) -> RunOutcome:
    """The body of every Ray task (Ray resolves the input refs to objects before the call)."""
    return call(spec, inputs)


class RayExecutor:
    """Connects to ``address`` (``auto``: the cluster this node belongs to; None: a Ray already
    initialized in this process, else a new local one), and disconnects only from what it started."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus  # only for a local Ray that this executor starts
        self.num_tasks = 0
        self.num_puts = 0  # objects put into the store (one per shared input used)

    def _connect(self) -> bool:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'wildserve[ray]'") from None
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address is None:
            kwargs["num_cpus"] = self.num_cpus
        try:
            ray.init(address=self.address, **kwargs)
        except ConnectionError as e:
            raise ConfigError(f"--ray-address {self.address}: cannot connect ({e})") from None
        return True

    def run(
        self,
        specs: Sequence[RunSpec],
        shared: Mapping[str, Any],
        on_done: Callable[[RunOutcome], None],
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        import ray
        from ray.exceptions import RayError

        started = self._connect()
        pending: dict[Any, RunSpec] = {}
        try:
            used = {n for s in specs for n in s.inputs}
            refs = {n: ray.put(shared[n]) for n in sorted(used)}  # once, not per task
            self.num_puts += len(refs)
            task = ray.remote(_task)
            for s in specs:
                ref = task.options(
                    num_cpus=s.num_cpus,
                    max_retries=ATTEMPTS - 1,
                    retry_exceptions=True,
                    name=s.key,
                ).remote(s, *(refs[n] for n in s.inputs))
                pending[ref] = s
            self.num_tasks += len(pending)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                        outcome.attempts = 1  # Ray does not say whether this was the retry
                    except RayError as e:
                        outcome = RunOutcome(spec, error=str(e), attempts=ATTEMPTS)
                    on_done(outcome)
        finally:
            for ref in pending:  # Ctrl-C or an error in the driver: stop what is still queued
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()
