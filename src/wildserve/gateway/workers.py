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
them all; a worker that exits on its own is logged, its row cleared and a replacement started.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import signal
import socket
import time

from wildserve.gateway.config import GatewayConfig
from wildserve.gateway.gateway_metrics import MetricCounts
from wildserve.gateway.serve import bind_error
from wildserve.gateway.shared_load import SharedLoadTable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # not Linux (no prctl): Ctrl-C still reaches the whole process group
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker(cfg: GatewayConfig, sock: socket.socket, name: str, workers: int, w: int) -> None:
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
    finally:
        table.close()


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

    def _start(w: int):
        proc = ctx.Process(
            target=_worker, args=(cfg, sock, table.name, workers, w), name=f"gateway-{w}"
        )
        proc.start()
        return proc

    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs = [_start(w) for w in range(workers)]
    try:
        if on_ready is not None:
            on_ready(sock.getsockname()[1])
        while not stop:
            for w, proc in enumerate(procs):
                if not proc.is_alive() and not stop:
                    log.warning(
                        "gateway worker %d exited (code %s); restarting it", w, proc.exitcode
                    )
                    table.clear_row(w)
                    procs[w] = _start(w)
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 3.0
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        table.close()
        sock.close()
