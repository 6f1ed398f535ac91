"""A process pool for independent tasks (simulations, sweep runs) with one live progress display.

Not simulation: `simulate`, every `experiment` and the sweep runner hand it `(key, fn, args)` tasks.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.managers import SyncManager
from typing import Any, TypeVar

T = TypeVar("T")

_QUEUE: Any = None


def _init(queue: Any, parent_pid: int) -> None:
    global _QUEUE
    _QUEUE = queue
    # Ctrl-C reaches the whole process group; the parent decides, and terminates the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker forked while a Ctrl-C unwinds ``pool.submit`` is in neither the pool's nor
    # multiprocessing's list, so ``_stop_workers`` cannot see it: it must die with its parent.
    die_with_parent()
    if os.getppid() != parent_pid:  # the parent is already gone
        os._exit(1)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: send this process ``sig`` when its parent exits (``prctl(PR_SET_PDEATHSIG)``; kept
    across exec, so a child can call it before exec). Elsewhere a no-op: the caller's own cleanup
    covers the usual case."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass


def report_progress(key: str, done: int, total: int) -> None:
    """Called inside a worker (or inline) to move the bar of ``key``."""
    if _QUEUE is not None:
        _QUEUE.put((key, done, total))


def default_jobs(num_tasks: int) -> int:
    return max(
        1, min(num_tasks, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    )


def run_parallel(
    tasks: Sequence[tuple[str, Callable[..., T], tuple]],
    jobs: int,
    on_progress: Callable[[str, int, int], None] | None = None,
    on_result: Callable[[str, T], None] | None = None,
) -> dict[str, T]:
    """Run ``fn(*args)`` for each ``(key, fn, args)``; ``fn`` may call :func:`report_progress`.

    ``on_result(key, result)`` runs in this process as each task finishes (a run cache writes there,
    so what finished before a Ctrl-C is kept).
    """
    results: dict[str, T] = {}
    if jobs <= 1 or len(tasks) <= 1:
        global _QUEUE
        for key, fn, args in tasks:
            _QUEUE = _InlineQueue(on_progress)
            try:
                results[key] = fn(*args)
            finally:
                _QUEUE = None
            if on_result is not None:
                on_result(key, results[key])
        return results
    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    # The manager's server process must also die with this one: a SIGTERM or SIGKILL skips the
    # ``finally`` below, and the workers (PDEATHSIG) would go while the manager lived on, orphaned.
    manager = SyncManager(ctx=ctx)
    manager.start(die_with_parent)
    queue = manager.Queue()
    pool = ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_init, initargs=(queue, os.getpid())
    )
    try:
        results = _collect(pool, queue, tasks, on_progress, on_result)
    except BaseException:  # Ctrl-C (or a failed task): stop every worker now, not after the queue
        _stop_workers(pool)
        raise
    else:
        pool.shutdown()
    finally:
        manager.shutdown()
    return {key: results[key] for key, _, _ in tasks}


def _collect(pool: ProcessPoolExecutor, queue: Any, tasks, on_progress, on_result=None) -> dict:
    futures = {key: pool.submit(fn, *args) for key, fn, args in tasks}
    results: dict = {}
    pending = set(futures)
    while pending:
        while not queue.empty():
            msg = queue.get()
            if on_progress is not None:
                on_progress(*msg)
        for key in list(pending):
            if futures[key].done():
                results[key] = futures[key].result()
                pending.discard(key)
                if on_result is not None:
                    on_result(key, results[key])
        if pending:
            try:
                msg = queue.get(timeout=0.2)
                if on_progress is not None:
                    on_progress(*msg)
            except queue_mod.Empty:
                continue
    return results


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers (shutdown alone waits for them).

    The task queue's feeder thread may be blocked writing a large task (a whole trace) into the pipe
    of a worker that is gone; without ``cancel_join_thread`` the interpreter waits for it at exit,
    forever (``ProcessPoolExecutor`` internals, read before ``shutdown`` clears them).
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    call_queue = getattr(pool, "_call_queue", None)
    if call_queue is not None:
        call_queue.cancel_join_thread()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(1.0)


class _InlineQueue:
    def __init__(self, on_progress: Callable[[str, int, int], None] | None) -> None:
        self.on_progress = on_progress

    def put(self, msg: tuple[str, int, int]) -> None:
        if self.on_progress is not None:
            self.on_progress(*msg)
