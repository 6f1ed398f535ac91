from __future__ import annotations

from wildserve.routing import InstanceView, RouteRequest, make_policy

REQ = RouteRequest(request_id=1, prompt_tokens=100, block_hashes=[1, 2, 3], block_size=16)


def views(*loads: tuple[int, int]) -> list[InstanceView]:
    return [InstanceView(i, num_running=r, num_waiting=w) for i, (r, w) in enumerate(loads)]


def test_round_robin_cycles_regardless_of_load():
    p = make_policy("round-robin")
    v = views((9, 9), (0, 0), (5, 0))
    picks = []
    for _ in range(5):
        picks.append(p.choose(REQ, v))
        p.on_dispatch(v[picks[-1]].instance_id, REQ)
    assert picks == [0, 1, 2, 0, 1]
    assert p.choose(REQ, v) == p.choose(REQ, v) == 2  # a decision alone does not take a turn


def test_least_requests_counts_running_plus_waiting_and_breaks_ties_low():
    p = make_policy("least-requests")
    assert p.choose(REQ, views((3, 0), (1, 1), (0, 2), (4, 0))) == 1
    assert p.choose(REQ, views((0, 0), (0, 0))) == 0
    assert p.choose(REQ, views((2, 5), (1, 0), (0, 1))) == 1


def test_view_cached_and_new_tokens():
    v = InstanceView(0, block_size=16, match_blocks=lambda hs: 2)
    assert v.cached_tokens(REQ.block_hashes) == 32 and v.new_tokens(REQ) == 68
    assert v.num_requests == 0
