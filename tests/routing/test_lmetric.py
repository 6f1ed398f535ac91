from __future__ import annotations

import pytest

from tests.routing.conftest import req, view
from wildserve.errors import ConfigError
from wildserve.routing import make_policy


def test_score_is_backlog_plus_new_times_batch_plus_one():
    p = make_policy("lmetric")
    r = req(prompt=160, blocks=10)
    vs = [
        view(0, run=3, queued=100, match=5),
        view(1, run=0, queued=0, match=0),
        view(2, wait=1, queued=40, match=10),
    ]
    # (100 + 160 - 80) * 4 = 720; (0 + 160) * 1 = 160; (40 + 0) * 2 = 80
    assert p.scores(r, vs) == [720, 160, 80]
    assert p.choose(r, vs) == 2


def test_idle_instances_ranked_by_prefill_backlog_and_ties_lowest():
    p = make_policy("lmetric")
    r = req()
    assert p.choose(r, [view(0, queued=500), view(1, queued=20), view(2, queued=20)]) == 1
    assert p.choose(r, [view(0), view(1), view(2)]) == 0


def test_random_tie_break_is_seeded_and_covers_ties():
    r = req()
    vs = [view(0, run=5), view(1), view(2), view(3)]
    picks = {make_policy("lmetric", tie_break="random", seed=s).choose(r, vs) for s in range(30)}
    assert picks == {1, 2, 3}
    a = [make_policy("lmetric", tie_break="random", seed=7).choose(r, vs) for _ in range(3)]
    assert len(set(a)) == 1
    with pytest.raises(ConfigError):
        make_policy("lmetric", tie_break="sideways")


def test_fully_cached_request_scores_zero_whatever_the_load_and_is_counted():
    p = make_policy("lmetric")
    r = req(prompt=160, blocks=10)
    hot = view(0, run=200, queued=0, match=10)
    vs = [hot, view(1, run=0), view(2, run=1)]
    assert p.scores(r, vs)[0] == 0
    assert p.choose(r, vs) == 0  # the failure: 200 requests deep, still chosen
    assert p.num_zero_score_decisions == 1


def test_mitigation_floors_new_tokens_and_breaks_ties_by_load():
    p = make_policy("lmetric", mitigate_zero=True)
    r = req(prompt=160, blocks=10)
    # hot instance: (0 + 16) * 201 = 3216 > idle cold instance (0 + 160) * 1 = 160
    assert p.choose(r, [view(0, run=200, match=10), view(1), view(2, run=1)]) == 1
    # two fully cached instances with no backlog: the less loaded wins despite a higher index
    assert p.choose(r, [view(0, run=3, match=10), view(1, run=1, match=10)]) == 1
    assert p.num_zero_score_decisions == 2  # still detected, no longer harmful


def test_costly_switch_is_counted_when_the_re_prefill_exceeds_the_backlog_avoided():
    p = make_policy("lmetric")
    r = req(prompt=160, blocks=10)
    # instance 0 holds 9 of the 10 blocks (16 new tokens) behind 1000 queued tokens and 9 requests;
    # instance 1 holds nothing (160 new) behind 900 queued tokens and no request.
    home = view(0, run=9, queued=1000, match=9)
    assert p.scores(r, [home, view(1, queued=900)]) == [(1000 + 16) * 10, (900 + 160) * 1]
    assert p.choose(r, [home, view(1, queued=900)]) == 1
    # the move re-prefills 144 tokens to avoid 100 tokens of backlog: the product's batch factor won
    assert p.stats()["costly_switch_decisions"] == 1
    # behind 100 queued tokens the same move avoids 900 tokens of backlog: a switch worth making
    assert p.choose(r, [home, view(1, queued=100)]) == 1
    # staying on the cache holder is never a costly switch
    assert p.choose(r, [view(0, queued=0, match=9), view(1, queued=900)]) == 0
    assert p.stats() == {
        "decisions": 3,
        "zero_score_decisions": 0,
        "costly_switch_decisions": 1,
    }


def test_no_costly_switch_without_a_cache_to_lose():
    p = make_policy("lmetric")
    r = req(prompt=160, blocks=10)
    # nothing cached anywhere: moving to the smaller batch costs no re-prefill
    assert p.choose(r, [view(0, run=9, queued=100), view(1, queued=150)]) == 1
    # the same prefix cached everywhere: no instance is the holder
    assert p.choose(r, [view(0, run=9, queued=100, match=5), view(1, queued=150, match=5)]) == 1
    assert p.stats()["costly_switch_decisions"] == 0


def _two_sessions(home_running: int, home_queued: int, other_running: int = 0) -> tuple:
    """Session A's follow-up (10 of 11 blocks cached on instance 0, which also serves session B's
    decodes) and an instance 1 holding nothing of A (idle unless ``other_running``)."""
    r = req(prompt=176, blocks=11)
    home = view(0, run=home_running, queued=home_queued, match=10)
    return r, [home, view(1, run=other_running)]


def test_stay_variant_refuses_the_switch_lmetric_makes_for_its_batch_factor():
    r, vs = _two_sessions(home_running=12, home_queued=0)
    # LMetric: home (0 + 16) x 13 = 208 > idle (0 + 176) x 1 = 176: it moves and re-prefills 160
    # tokens to avoid no backlog at all
    lm = make_policy("lmetric")
    assert lm.choose(r, vs) == 1 and lm.stats()["costly_switch_decisions"] == 1
    stay = make_policy("lmetric-stay")
    assert stay.vetoed_scores(*prefill_terms_of(r, vs), vs) == [208, float("inf")]
    assert stay.choose(r, vs) == 0
    assert stay.stats()["stays"] == 1 and stay.stats()["costly_switch_decisions"] == 0


def test_a_holder_veto_variant_without_a_cost_cannot_be_built():
    from wildserve.routing.lmetric import _HolderVeto

    class Forgot(_HolderVeto):
        pass

    with pytest.raises(TypeError, match="cost"):
        Forgot()

    class Costed(_HolderVeto):
        @staticmethod
        def cost(queued: int, new: int, view) -> int:
            return queued + new

    r, vs = _two_sessions(home_running=12, home_queued=0)
    assert Costed().choose(r, vs) == make_policy("lmetric-stay").choose(r, vs) == 0


def test_stay_variant_switches_when_the_home_backlog_exceeds_the_re_prefill():
    # behind 400 queued tokens at home, the idle instance's 176-token prefill is the shorter wait
    r, vs = _two_sessions(home_running=12, home_queued=400)
    assert make_policy("lmetric").choose(r, vs) == 1
    stay = make_policy("lmetric-stay")
    assert stay.choose(r, vs) == 1 and stay.stats()["stays"] == 0


def test_stay_variant_is_lmetric_without_a_cache_holder_or_a_costly_choice():
    r = req(prompt=160, blocks=10)
    cases = [
        [view(0, run=9, queued=100), view(1, queued=150)],  # nothing cached
        [view(0, run=9, queued=100, match=5), view(1, queued=150, match=5)],  # cached everywhere
        [view(0, run=3, queued=100, match=5), view(1, run=0, queued=0), view(2, wait=1, match=10)],
    ]
    for vs in cases:
        assert make_policy("lmetric-stay").choose(r, vs) == make_policy("lmetric").choose(r, vs)


def prefill_terms_of(r, vs):
    from wildserve.routing.lmetric import prefill_terms

    return prefill_terms(r, vs)


def test_marginal_variant_stays_where_lmetric_switches_for_the_backlog_times_batch():
    r, vs = _two_sessions(home_running=12, home_queued=100, other_running=4)
    # LMetric: home (100 + 16) x 13 = 1508 > other (0 + 176) x 5 = 880: it moves, re-prefilling 160
    # tokens that stall the other instance's 4 running requests
    assert make_policy("lmetric").choose(r, vs) == 1
    # marginal cost: home 100 + 16 x 13 = 308, other 0 + 176 x 5 = 880 > 308: not a candidate
    mc = make_policy("lmetric-marginal")
    assert mc.vetoed_scores(*prefill_terms_of(r, vs), vs) == [1508, float("inf")]
    assert mc.choose(r, vs) == 0
    assert mc.stats()["stays"] == 1 and mc.stats()["costly_switch_decisions"] == 0


def test_marginal_variant_switches_when_staying_costs_more():
    # 400 queued tokens at home: home 400 + 16 x 13 = 608 > idle 0 + 176 x 1 = 176
    r, vs = _two_sessions(home_running=12, home_queued=400)
    assert make_policy("lmetric").choose(r, vs) == 1
    mc = make_policy("lmetric-marginal")
    assert mc.choose(r, vs) == 1 and mc.stats()["stays"] == 0


def test_marginal_variant_is_lmetric_without_a_cache_holder():
    r = req(prompt=160, blocks=10)
    for vs in (
        [view(0, run=9, queued=100), view(1, queued=150)],
        [view(0, run=9, queued=100, match=5), view(1, queued=150, match=5)],
    ):
        assert make_policy("lmetric-marginal").choose(r, vs) == make_policy("lmetric").choose(r, vs)
