"""Other packages read an engine only through its public face (``Engine.load()``, its counters and
queries, ``kv_events()``, the driving calls), never through its scheduler or block pool."""

from __future__ import annotations

import re
from pathlib import Path

import wildserve

SRC = Path(wildserve.__file__).parent
ENGINE = SRC / "engine"
# an attribute read of ``.scheduler`` or ``.pool`` (not ``.pools``, ``.scheduler_x``)
INTERNAL = re.compile(r"\.(scheduler|pool)\b(?!\s*=[^=])")
# files whose ``.pool`` is not an engine's: the gateway's upstream connections and their pool
NOT_ENGINES = {"gateway/upstream.py"}


def _offenders() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        if ENGINE in path.parents:
            continue
        rel = path.relative_to(SRC).as_posix()
        if rel in NOT_ENGINES:
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if code.lstrip().startswith(("from ", "import ")):
                continue  # types of the engine's plug-in API (PreemptionPolicy, SchedulerOutput)
            if INTERNAL.search(code):
                out.append(f"{rel}:{n}: {line.strip()}")
    return out


def test_nothing_outside_engine_reads_an_engines_scheduler_or_pool():
    offenders = _offenders()
    assert not offenders, "use the engine's public face instead:\n" + "\n".join(offenders)


def test_the_check_catches_an_internal_read(tmp_path):
    assert INTERNAL.search("n = e.pool.num_free")
    assert INTERNAL.search("for r in source.scheduler.running:")
    assert INTERNAL.search("match = e.pool")
    assert not INTERNAL.search("for pool in self.pools:")
    assert not INTERNAL.search("self.pool = pool")
