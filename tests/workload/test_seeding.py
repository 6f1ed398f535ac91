"""A seed changes arrival times and nothing else, for recorded and reader-placed traces alike."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from wildserve.errors import ConfigError
from wildserve.workload.seeding import load_seeded, reader_takes_seed

MOONCAKE = "builtin:mooncake-conversation"
WEKA = "builtin:weka-claude-code"


def _content(r):
    return (r.prompt_tokens, r.output_tokens, r.hash_ids, r.session_id, r.category, r.turn)


def test_recorded_trace_is_poisson_retimed_at_its_own_rate_and_keeps_everything_else():
    recorded = load_seeded(MOONCAKE)
    a = load_seeded(MOONCAKE, seed=1)
    b = load_seeded(MOONCAKE, seed=2)
    assert not reader_takes_seed(MOONCAKE)
    assert [_content(r) for r in a] == [_content(r) for r in recorded] == [_content(r) for r in b]
    ta, tb, tr = (np.array([r.arrival_s for r in x]) for x in (a, b, recorded))
    assert not np.array_equal(ta, tb) and not np.array_equal(ta, tr)
    assert (np.diff(ta) >= 0).all()
    # the mean rate is the recorded one: 12k exponential gaps put the mean within ~1% (3 sigma)
    for t in (ta, tb):
        assert abs(t[-1] / tr[-1] - 1) < 0.03
    # exponential gaps: coefficient of variation 1 (within 3 sigma of ~0.013)
    gaps = np.diff(ta)
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05
    assert [r.arrival_s for r in load_seeded(MOONCAKE, seed=1)] == ta.tolist()  # reproducible


def test_session_trace_seed_moves_session_starts_only():
    assert reader_takes_seed(WEKA)
    runs = [load_seeded(WEKA, s, {"max_idle_s": 30.0}) for s in (1, 2)]
    sessions = []
    for reqs in runs:
        by_session = defaultdict(list)
        for r in reqs:
            by_session[r.session_id].append(r)
        sessions.append(
            {
                r0[0].extra["session"]: (
                    r0[0].arrival_s,
                    [(_content(r)[:3], r.turn, r.arrival_s - r0[0].arrival_s) for r in r0],
                )
                for r0 in by_session.values()
            }
        )
    a, b = sessions
    assert a.keys() == b.keys() and len(a) == 41
    # every session's requests, their content and their offsets from its start are unchanged
    for name in a:
        assert [x[:2] for x in a[name][1]] == [x[:2] for x in b[name][1]]
        np.testing.assert_allclose([x[2] for x in a[name][1]], [x[2] for x in b[name][1]])
    starts_a = sorted(v[0] for v in a.values())
    starts_b = sorted(v[0] for v in b.values())
    assert starts_a != starts_b  # ... but the sessions start at other times


def test_seed_equal_to_the_reader_option_default_and_conflicts_are_errors():
    same = load_seeded(WEKA, 0, {"max_idle_s": 30.0})
    default = load_seeded(WEKA, None, {"max_idle_s": 30.0})
    assert [r.arrival_s for r in same] == [r.arrival_s for r in default]
    with pytest.raises(ConfigError, match="contradicts"):
        load_seeded(WEKA, 3, {"seed": 4})
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        load_seeded(MOONCAKE, seed=-1)
