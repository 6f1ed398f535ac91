from __future__ import annotations

from hypothesis import strategies as st

from wildserve.kvcache.stream import stream_from_chains

POLICIES = ["lru", "lfu", "gdsf", "wa", "rwa", "opt"]
SPECS = [p + v for p in POLICIES for v in ("", ":leaf")]
# WA settings small enough that short random traces exercise refits, windows and idle gaps
WA_TEST = {"life_s": 3.0, "window_s": 8.0, "refit_s": 2.0, "min_obs": 2}


@st.composite
def random_streams(draw, max_requests: int = 30, num_categories: int = 3):
    """Requests that start chains from a few shared roots, extend or repeat earlier requests."""
    n = draw(st.integers(1, max_requests))
    chains: list[list[int]] = []
    for _ in range(n):
        mode = draw(st.sampled_from(["new", "extend", "extend", "repeat"])) if chains else "new"
        if mode == "new":
            root = [draw(st.integers(0, 2))] * draw(st.integers(0, 2))
            chain = root + draw(st.lists(st.integers(0, 5), min_size=1, max_size=6))
        else:
            base = chains[draw(st.integers(0, len(chains) - 1))]
            keep = draw(st.integers(1, len(base)))
            tail = [] if mode == "repeat" else draw(st.lists(st.integers(0, 5), max_size=5))
            chain = base[:keep] + tail
        chains.append(chain)
    gaps = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0, 20.0]), min_size=n, max_size=n))
    times = [sum(gaps[: i + 1]) for i in range(n)]
    cats = draw(st.lists(st.integers(0, num_categories - 1), min_size=n, max_size=n))
    return stream_from_chains(chains, times, cats, num_categories)
