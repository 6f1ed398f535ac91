"""``wildserve gateway --workers 2``: real processes, one port, load counted once per backend."""

from __future__ import annotations

import re
import threading
import urllib.request

import orjson
import psutil
import pytest

from tests.gateway.conftest import eventually, start_engines

OPEN = 8


def _in_flight(url: str) -> list[float]:
    """The in-flight gauge per backend, from one scrape on a fresh connection."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [
        float(v) for v in re.findall(r"^wildserve_gateway_in_flight\{[^}]*\} (\S+)$", text, re.M)
    ]


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    """The gateway's worker processes (not multiprocessing's resource tracker)."""
    out = []
    for p in parent.children():
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:  # gone, or a zombie the parent has not reaped yet
            pass
    return out


def _complete(url: str, out: list) -> None:
    body = orjson.dumps({"model": "qwen2.5-7b", "prompt": "hello " * 20, "max_tokens": 60})
    req = urllib.request.Request(
        f"{url}/v1/completions", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            out.append(r.status)
    except OSError:  # its worker was killed mid-request
        out.append(-1)


def _two_workers(loop_thread, processes, num_engines: int, *options: str):
    """A ``--workers 2`` gateway in front of slow engines (requests stay open for seconds); returns
    it, its parent process and its two workers, once both run."""
    urls, _ = start_engines(loop_thread, num_engines, speed=1.0)
    args = ["gateway", "--workers", "2", *options]
    for u in urls:
        args += ["--backend", u]
    gw = processes(args)
    parent = psutil.Process(gw.proc.pid)
    assert eventually(lambda: len(_workers(parent)) == 2, 10)
    return gw, parent, _workers(parent)


@pytest.mark.timeout(120)
def test_two_workers_count_open_requests_once_and_stop_cleanly(loop_thread, processes):
    gw, _, workers = _two_workers(loop_thread, processes, 2, "--policy", "least-requests")
    done: list[int] = []
    threads = [threading.Thread(target=_complete, args=(gw.url, done)) for _ in range(OPEN)]
    for t in threads:
        t.start()
    # every scrape, whichever worker answers it, reports all open requests, not its share
    assert eventually(lambda: sum(_in_flight(gw.url)) == OPEN, 10)
    scrapes = [_in_flight(gw.url) for _ in range(10)]
    assert all(sum(s) == OPEN for s in scrapes), scrapes
    # least-requests on the summed counts splits them evenly over the backends
    assert all(s == [OPEN / 2, OPEN / 2] for s in scrapes), scrapes
    for t in threads:
        t.join(60)
    assert done == [200] * OPEN
    assert eventually(lambda: _in_flight(gw.url) == [0.0, 0.0], 5)
    gw.stop()
    assert gw.proc.returncode is not None
    assert eventually(
        lambda: not any(p.is_running() and p.status() != "zombie" for p in workers), 5
    )


@pytest.mark.timeout(120)
def test_a_killed_worker_is_replaced_and_its_load_forgotten(loop_thread, processes):
    gw, parent, _ = _two_workers(loop_thread, processes, 1)
    done: list[int] = []
    threads = [threading.Thread(target=_complete, args=(gw.url, done)) for _ in range(4)]
    for t in threads:
        t.start()
    assert eventually(lambda: sum(_in_flight(gw.url)) == 4, 10)
    victim = _workers(parent)[0]
    victim.kill()  # dies holding whatever it had open
    assert eventually(lambda: victim.pid not in [p.pid for p in _workers(parent)]
                      and len(_workers(parent)) == 2, 10)  # fmt: skip
    for t in threads:
        t.join(60)
    assert eventually(lambda: _in_flight(gw.url) == [0.0], 5)  # no phantom load left
    children = parent.children()
    parent.kill()  # the parent dies without cleaning up: the workers follow it
    assert eventually(
        lambda: not any(p.is_running() and p.status() != "zombie" for p in children), 5
    )


def _scrape_counts(url: str) -> tuple[float, float, float]:
    """Requests sent, TTFT observations and latency observations over every backend (one scrape)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))

    return (
        total("wildserve_gateway_requests_total"),
        total("wildserve_gateway_ttft_seconds_count"),
        total("wildserve_gateway_request_seconds_count"),
    )


def _by_worker(url: str) -> list[float]:
    """Requests each worker sent, from one scrape."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [
        float(v)
        for v in re.findall(
            r'^wildserve_gateway_worker_requests_total\{worker="\d+"\} (\S+)$', text, re.M
        )
    ]


@pytest.mark.timeout(180)
def test_every_scrape_counts_the_requests_of_all_workers(loop_thread, processes):
    gw, parent, workers = _two_workers(loop_thread, processes, 2)
    done: list[int] = []
    # requests, each on its own connection, until both workers sent some: the test is only worth
    # something if each worker's own counts are a part of the total
    threads: list[threading.Thread] = []
    while len(threads) < 64 and not all(_by_worker(gw.url) or [0]):
        batch = [threading.Thread(target=_complete, args=(gw.url, done)) for _ in range(8)]
        for t in batch:
            t.start()
        for t in batch:
            t.join(60)
        threads += batch
    shares = _by_worker(gw.url)
    assert len(shares) == 2 and all(shares), f"every request went to one worker: {shares}"
    sent = len(threads)
    assert done == [200] * sent
    # every scrape, whichever worker answers it, counts all of them, once
    scrapes = [_scrape_counts(gw.url) for _ in range(12)]
    assert all(s == (sent, sent, sent) for s in scrapes), (sent, scrapes)
    assert sum(_by_worker(gw.url)) == sent
    # a worker that dies keeps its counts: its replacement goes on from them
    victim = workers[0]
    victim.kill()
    assert eventually(lambda: victim.pid not in [p.pid for p in _workers(parent)]
                      and len(_workers(parent)) == 2, 10)  # fmt: skip
    _complete(gw.url, done)
    assert done[-1] == 200
    assert eventually(lambda: _scrape_counts(gw.url) == (sent + 1,) * 3, 10)
    scrapes = [_scrape_counts(gw.url) for _ in range(6)]
    assert all(s == (sent + 1,) * 3 for s in scrapes), scrapes
