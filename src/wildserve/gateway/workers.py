"""``wildserve gateway --workers N``: N gateway processes accepting on one socket, sharing their load.

The parent binds the listening socket once and forks the workers, which inherit it: one accept queue
that every idle worker takes connections from (SO_REUSEPORT would give each worker its own queue and
let the kernel's hash pin a few keep-alive clients to one worker; an inherited socket also leaves no
window in which a restarted worker's port is free for another program). The parent creates the
:class:`SharedLoadTable`; each worker routes on its column sums and writes only its own row.

What is shared and what is not:
- in-flight requests and queued prefill per backend: exact sums over the workers (the table);
- prefix state: with KV events every worker subscribes to every engine's PUB stream, so all hold
  the same index; router-local, each worker's index learns only its own dispatches (approximate);
- ``/metrics``: request, error and rejection counters, the TTFT/latency/decision histograms and the
  in-flight gauge are the whole gateway's (each worker's cells in the table, summed at scrape
  time); backend health (each worker checks on its own), the policy's decision counters and the
  KV-event counts are the answering worker's.

Workers get SIGTERM when the parent dies (``PR_SET_PDEATHSIG``); SIGINT/SIGTERM to the parent stops
them all; a worker that exits on its own is logged, its load row cleared and a replacement started
after a backoff that doubles with each of that worker's recent deaths (a worker that cannot start
is not respawned ten times a second). ``worker_deaths`` deaths within ``worker_death_window_s``
stop the gateway with one error line naming the last worker's cause (what it raised, or how it
exited), as a single-process gateway stops on the same fault. Each worker reports on its pipe
when it serves; the parent announces the gateway once all do.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import signal
import socket
import time
from collections import deque
from multiprocessing.connection import Connection

from wildserve.errors import WildserveError
from wildserve.gateway.config import GatewayConfig
from wildserve.gateway.gateway_metrics import MetricCounts
from wildserve.gateway.serve import bind_error
from wildserve.gateway.shared_load import SharedLoadTable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_FIRST_RESTART_DELAY_S = 0.1
_MAX_RESTART_DELAY_S = 5.0


class WorkerFailure(WildserveError):
    """The gateway's workers kept dying: the gateway stops rather than respawn them forever."""


class RestartBudget:
    """When to restart a dead worker: after a delay that doubles with each of its deaths in the
    window, and not at all once the workers together died ``max_deaths`` times in it."""

    def __init__(
        self,
        max_deaths: int,
        window_s: float,
        first_delay_s: float = _FIRST_RESTART_DELAY_S,
        max_delay_s: float = _MAX_RESTART_DELAY_S,
    ) -> None:
        self.max_deaths = max_deaths
        self.window_s = window_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._deaths: deque[tuple[float, int]] = deque()  # (when, which worker), oldest first

    def on_death(self, worker: int, now: float) -> float | None:
        """Seconds to wait before restarting ``worker``, or None: give up."""
        deaths = self._deaths
        deaths.append((now, worker))
        while deaths[0][0] <= now - self.window_s:
            deaths.popleft()
        if len(deaths) >= self.max_deaths:
            return None
        recent = sum(1 for _, w in deaths if w == worker)
        return min(self.first_delay_s * 2 ** (recent - 1), self.max_delay_s)


def _die_with_parent() -> None:
    # not Linux (no prctl): Ctrl-C still reaches the whole process group
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker(
    cfg: GatewayConfig, sock: socket.socket, name: str, workers: int, w: int, report: Connection
) -> None:
    """One gateway process. It tells the parent on ``report`` when it serves (``("ready", "")``)
    and, if something stops it, what (``("failed", why)``)."""
    from wildserve.gateway.proxy import GatewayApp
    from wildserve.gateway.serve import run_forever

    _die_with_parent()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    num_backends = len(cfg.backends)
    table = SharedLoadTable.attach(
        name, workers, num_backends, w, MetricCounts.cells_needed(num_backends)
    )
    try:
        run_forever(
            lambda: GatewayApp(cfg, table, sock),
            cfg.host,
            cfg.port,
            lambda port: report.send(("ready", "")),
        )
    except WildserveError as exc:  # an expected failure (a bad file, a taken resource): one line
        report.send(("failed", str(exc)))
        raise SystemExit(1) from None
    except BaseException as exc:  # a bug: the traceback goes to stderr as well
        report.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        table.close()
        report.close()


def _how_it_exited(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        return f"killed by {signal.Signals(-exitcode).name}"
    except ValueError:  # a signal with no name (a real-time one)
        return f"killed by signal {-exitcode}"


def bind(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), backlog=1024)
    except OSError as exc:
        raise bind_error(exc, host, port) from None
    sock.setblocking(False)
    return sock


class _Slot:
    """One worker's place: its process (None while it waits to be restarted) and what it said."""

    def __init__(self) -> None:
        self.proc: mp.Process | None = None
        self.reader: Connection | None = None
        self.ready = False
        self.cause: str | None = None
        self.restart_at = 0.0

    def start(self, ctx, w: int, args: tuple) -> None:
        """Start worker ``w``: ``_worker(*args, w, its end of the pipe)``."""
        self.reader, writer = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker, args=(*args, w, writer), name=f"gateway-{w}")
        self.proc.start()
        writer.close()  # the worker's end: EOF on ``reader`` once it is gone
        self.ready, self.cause = False, None

    def read(self) -> None:
        """Take what the worker sent so far."""
        try:
            while self.reader is not None and self.reader.poll():
                kind, text = self.reader.recv()
                if kind == "ready":
                    self.ready = True
                else:
                    self.cause = text
        except (EOFError, OSError):  # it is gone; it said all it had to say
            pass

    def reap(self) -> str:
        """Forget the dead worker; returns what stopped it (what it said, else how it exited)."""
        assert self.proc is not None and self.reader is not None
        self.read()
        cause = self.cause or _how_it_exited(self.proc.exitcode)
        self.reader.close()
        self.proc = self.reader = None
        return cause


def serve_workers(cfg: GatewayConfig, workers: int, on_ready=None) -> None:
    """Run ``workers`` gateway processes on ``cfg.host:cfg.port`` until SIGINT/SIGTERM;
    ``on_ready(port)`` once every worker serves."""
    from wildserve.blocks import load_native
    from wildserve.gateway import proxy  # noqa: F401  (imported once here, not in every worker)

    # compiled (or loaded from numba's cache) before the fork: a worker, and each restart of one,
    # starts without loading them (~0.5 s each here) and the workers share their pages
    load_native()
    sock = bind(cfg.host, cfg.port)
    num_backends = len(cfg.backends)
    table = SharedLoadTable.create(workers, num_backends, MetricCounts.cells_needed(num_backends))
    ctx = mp.get_context("fork")  # the parent runs no event loop or threads: safe to fork
    stop = False

    def _stop(signum, frame) -> None:
        nonlocal stop
        stop = True

    budget = RestartBudget(cfg.worker_deaths, cfg.worker_death_window_s)
    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    slots = [_Slot() for _ in range(workers)]
    args = (cfg, sock, table.name, workers)
    announced = on_ready is None
    try:
        for w, slot in enumerate(slots):
            slot.start(ctx, w, args)
        while not stop:
            now = time.monotonic()
            for w, slot in enumerate(slots):
                if slot.proc is None:
                    if now >= slot.restart_at:
                        slot.start(ctx, w, args)
                    continue
                slot.read()
                if slot.proc.is_alive():
                    continue
                cause = slot.reap()
                table.clear_row(w)
                delay = budget.on_death(w, now)
                if delay is None:
                    raise WorkerFailure(
                        f"gateway workers died {budget.max_deaths} times within "
                        f"{budget.window_s:g} s; last, worker {w}: {cause}"
                    )
                log.warning(
                    "gateway worker %d stopped (%s); restarting it in %.1f s", w, cause, delay
                )
                slot.restart_at = now + delay
            if not announced and all(slot.ready for slot in slots):
                announced = True
                on_ready(sock.getsockname()[1])
            time.sleep(0.05)
    finally:
        started = [slot for slot in slots if slot.proc is not None]
        for slot in started:
            if slot.proc.is_alive():
                slot.proc.terminate()
        deadline = time.monotonic() + 3.0
        for slot in started:
            slot.proc.join(max(0.0, deadline - time.monotonic()))
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(1.0)
            slot.reader.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        table.close()
        sock.close()
