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
exited), as a single-process gateway stops on the same fault.
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
    cfg: GatewayConfig, sock: socket.socket, name: str, workers: int, w: int, cause: Connection
) -> None:
    """One gateway process; what stopped it, if anything did, goes to the parent on ``cause``."""
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
        run_forever(lambda: GatewayApp(cfg, table, sock), cfg.host, cfg.port)
    except WildserveError as exc:  # an expected failure (a bad file, a taken resource): one line
        cause.send(str(exc))
        raise SystemExit(1) from None
    except BaseException as exc:  # a bug: the traceback goes to stderr as well
        cause.send(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        table.close()
        cause.close()


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


def serve_workers(cfg: GatewayConfig, workers: int, on_ready=None) -> None:
    """Run ``workers`` gateway processes on ``cfg.host:cfg.port`` until SIGINT/SIGTERM."""
    sock = bind(cfg.host, cfg.port)
    num_backends = len(cfg.backends)
    table = SharedLoadTable.create(workers, num_backends, MetricCounts.cells_needed(num_backends))
    ctx = mp.get_context("fork")  # the parent runs no event loop or threads: safe to fork
    stop = False

    def _stop(signum, frame) -> None:
        nonlocal stop
        stop = True

    def _start(w: int) -> tuple[mp.Process, Connection]:
        reader, writer = ctx.Pipe(duplex=False)
        args = (cfg, sock, table.name, workers, w, writer)
        proc = ctx.Process(target=_worker, args=args, name=f"gateway-{w}")
        proc.start()
        writer.close()  # the worker's end: EOF on ``reader`` once it is gone
        return proc, reader

    def _cause(proc: mp.Process, reader: Connection) -> str:
        """What the dead worker said stopped it, else how it exited."""
        try:
            if reader.poll():
                return reader.recv()
        except (EOFError, OSError):
            pass
        finally:
            reader.close()
        return _how_it_exited(proc.exitcode)

    budget = RestartBudget(cfg.worker_deaths, cfg.worker_death_window_s)
    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs: list[tuple[mp.Process, Connection] | None] = [_start(w) for w in range(workers)]
    restart_at = [0.0] * workers
    try:
        if on_ready is not None:
            on_ready(sock.getsockname()[1])
        while not stop:
            now = time.monotonic()
            for w, running in enumerate(procs):
                if running is None:
                    if now >= restart_at[w] and not stop:
                        procs[w] = _start(w)
                    continue
                proc, reader = running
                if proc.is_alive() or stop:
                    continue
                procs[w] = None
                cause = _cause(proc, reader)
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
                restart_at[w] = now + delay
            time.sleep(0.05)
    finally:
        started = [running for running in procs if running is not None]
        for proc, _ in started:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 3.0
        for proc, reader in started:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
            reader.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        table.close()
        sock.close()
