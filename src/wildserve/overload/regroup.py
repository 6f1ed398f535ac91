"""What regrouping costs and where requests go: KV exchange at a drop, KV gather at a split.

Inside a pipeline group every member stores the KV of its own stage's layers for every request. At a
drop, member k keeps layers [lo_k, hi_k) of its running requests' KV and sends the other layers to
the members that hold them; at a split (the end of a restore) every request gets a home member, and
the others send it their layers of that request's KV. Both run layer by layer over the group's links,
each GPU with its own link, so a regrouping lasts as long as its busiest sender or receiver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# (bytes, link bandwidth or None) -> seconds, e.g. StepCostModel.p2p_time
P2P = Callable[[float, float | None], float]


def drop_exchange_time(
    bounds: Sequence[tuple[int, int]],
    tokens: Sequence[int],
    layer_bytes_per_token: int,
    num_layers: int,
    p2p: P2P,
    bw: float | None,
) -> float:
    """Seconds until every member holds its layers of every running request's KV.

    ``tokens[k]``: KV tokens member k's running requests had before the drop.
    """
    worst = 0.0
    for k, (lo, hi) in enumerate(bounds):
        held = hi - lo
        send = (num_layers - held) * p2p(tokens[k] * layer_bytes_per_token, bw)
        recv = sum(
            held * p2p(tokens[q] * layer_bytes_per_token, bw) for q in range(len(bounds)) if q != k
        )
        worst = max(worst, send, recv)
    return worst


def gather_time(
    bounds: Sequence[tuple[int, int]],
    home_tokens: Sequence[int],
    layer_bytes_per_token: int,
    num_layers: int,
    p2p: P2P,
    bw: float | None,
) -> float:
    """Seconds until every request's KV sits whole on its home member.

    ``home_tokens[k]``: KV tokens of the requests whose home is member k.
    """
    total = sum(home_tokens)
    worst = 0.0
    for k, (lo, hi) in enumerate(bounds):
        held = hi - lo
        send = held * p2p((total - home_tokens[k]) * layer_bytes_per_token, bw)
        recv = (num_layers - held) * p2p(home_tokens[k] * layer_bytes_per_token, bw)
        worst = max(worst, send, recv)
    return worst


def assign_homes(blocks: Sequence[int], rooms: Sequence[int]) -> list[int]:
    """A home member per request (-1: fits nowhere), largest first into the roomiest member.

    ``blocks[i]``: KV blocks request i needs; ``rooms[k]``: blocks member k can hold. Ties go to the
    lowest member, so the result is deterministic.
    """
    left = list(rooms)
    home = [-1] * len(blocks)
    for i in sorted(range(len(blocks)), key=lambda i: (-blocks[i], i)):
        k = max(range(len(left)), key=lambda k: (left[k], -k))
        if blocks[i] <= left[k]:
            home[i] = k
            left[k] -= blocks[i]
    return home
