from __future__ import annotations

import itertools

import numpy as np
import pytest

from wildserve.errors import ConfigError
from wildserve.workload import iter_trace, load_trace
from wildserve.workload.synthetic import LengthDist, SyntheticConfig, synthetic_workload
from wildserve.workload.transforms import limit, poisson_retime, rate_scale, sample, window


def _chats(num_sessions=2000, turns=3, seed=0):
    cfg = SyntheticConfig(
        num_sessions=num_sessions,
        session_rate=0.5,
        turns=LengthDist("constant", mean=turns),
        prompt=LengthDist("constant", mean=100),
        output=LengthDist("constant", mean=10),
        think_time_s=20.0,
    )
    return synthetic_workload(cfg, np.random.default_rng(seed))


def _per_session(reqs):
    out: dict[int, list] = {}
    for r in reqs:
        out.setdefault(r.session_id, []).append(r)
    return out


def test_rate_scale_divides_gaps_and_copies():
    reqs = load_trace()[:1000]
    before = [r.arrival_s for r in reqs]
    fast = list(rate_scale(reqs, 2.0))
    assert [r.arrival_s for r in reqs] == before  # inputs untouched
    assert [r.arrival_s for r in fast] == pytest.approx([t / 2 for t in before])
    late = [r for r in reqs if r.arrival_s > 10]
    slow = list(rate_scale(iter(late), 0.5))  # the first arrival stays, gaps double
    t0 = late[0].arrival_s
    assert slow[0].arrival_s == t0
    assert [r.arrival_s for r in slow] == pytest.approx([t0 + 2 * (r.arrival_s - t0) for r in late])
    with pytest.raises(ConfigError):
        list(rate_scale(reqs, 0.0))


def test_poisson_retime_hits_rate_without_sessions():
    reqs = load_trace()
    out = poisson_retime(reqs, 20.0, np.random.default_rng(1))
    gaps = np.diff([r.arrival_s for r in out])
    # 12,030 Exp gaps: the mean is within ~1% (1 sigma), their CV is ~1 for a Poisson process
    assert (len(out) - 1) / out[-1].arrival_s == pytest.approx(20.0, rel=0.04)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert [r.request_id for r in out] == list(range(len(reqs)))
    # without sessions each request is its own session: lengths travel with their request
    assert sorted(r.prompt_tokens for r in out) == sorted(r.prompt_tokens for r in reqs)


@pytest.mark.parametrize("keep_gaps", [True, False])
def test_poisson_retime_keeps_session_order_and_rate(keep_gaps):
    reqs = _chats()
    out = poisson_retime(reqs, 3.0, np.random.default_rng(2), keep_session_gaps=keep_gaps)
    assert len(out) == len(reqs)
    sessions = _per_session(out)
    for s, turns in _per_session(reqs).items():
        new = sessions[s]
        assert [r.turn for r in new] == [r.turn for r in turns] == [1, 2, 3]
        assert [r.parent_id for r in new[1:]] == [r.request_id for r in new[:-1]]
        if keep_gaps:  # follow-ups keep their recorded offset from the first turn
            assert [r.arrival_s - new[0].arrival_s for r in new] == pytest.approx(
                [r.arrival_s - turns[0].arrival_s for r in turns]
            )
    # measured over the span of session starts: 2,000 starts, std of the rate estimate ~2.2%
    span = max(v[0].arrival_s for v in sessions.values())
    arrived = sum(r.arrival_s <= span for r in out)
    assert arrived / span == pytest.approx(3.0, rel=0.08)


def test_poisson_retime_is_seeded():
    reqs = _chats(200)
    a = poisson_retime(reqs, 3.0, np.random.default_rng(5))
    b = poisson_retime(reqs, 3.0, np.random.default_rng(5))
    c = poisson_retime(reqs, 3.0, np.random.default_rng(6))
    assert [r.arrival_s for r in a] == [r.arrival_s for r in b] != [r.arrival_s for r in c]


def test_window_rebases_and_stops_early():
    reqs = load_trace()
    got = list(window(reqs, 100.0, 200.0))
    expect = [r for r in reqs if 100.0 <= r.arrival_s < 200.0]
    assert len(got) == len(expect) > 0
    assert [r.arrival_s for r in got] == pytest.approx([r.arrival_s - 100.0 for r in expect])
    kept = list(window(reqs, 100.0, 200.0, rebase=False))
    assert [r.arrival_s for r in kept] == [r.arrival_s for r in expect]

    def counting():
        for n, r in enumerate(iter_trace()):
            counting.n = n
            yield r

    list(window(counting(), 0.0, 10.0))
    assert counting.n < 100  # stopped at the window's end, not the file's
    with pytest.raises(ConfigError):
        list(window(reqs, 5.0, 1.0))


def test_sample_fraction_keeps_sessions_whole():
    reqs = _chats(1000)
    got = list(sample(reqs, np.random.default_rng(3), fraction=0.3))
    sessions = _per_session(got)
    assert all(len(v) == 3 for v in sessions.values())
    assert len(sessions) == pytest.approx(300, abs=4 * (1000 * 0.3 * 0.7) ** 0.5)
    assert all(a.arrival_s <= b.arrival_s for a, b in itertools.pairwise(got))


def test_sample_fraction_without_sessions_is_per_request():
    reqs = load_trace()
    got = list(sample(reqs, np.random.default_rng(4), fraction=0.1))
    sd = (len(reqs) * 0.1 * 0.9) ** 0.5
    assert abs(len(got) - 0.1 * len(reqs)) < 4 * sd


def test_sample_count():
    reqs = _chats(100)
    got = list(sample(reqs, np.random.default_rng(5), count=10))
    assert len(_per_session(got)) == 10 and len(got) == 30
    again = list(sample(reqs, np.random.default_rng(5), count=10))
    assert [r.request_id for r in got] == [r.request_id for r in again]
    assert len(list(sample(load_trace(), np.random.default_rng(5), count=77))) == 77
    with pytest.raises(ConfigError, match="exceeds the 100 sessions"):
        list(sample(reqs, np.random.default_rng(5), count=101))
    with pytest.raises(ConfigError, match="exactly one"):
        sample(reqs, np.random.default_rng(5))


def test_limit_and_composition():
    out = list(limit(rate_scale(iter_trace(), 4.0), 50))
    assert len(out) == 50
    assert out[-1].arrival_s == pytest.approx(load_trace()[49].arrival_s / 4)
    with pytest.raises(ConfigError):
        limit(iter_trace(), -1)
