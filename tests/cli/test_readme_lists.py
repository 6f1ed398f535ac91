"""The README's lists of routing policies, eviction policies and overload systems name every
registered one, and only those: one added to a registry without a word in the README fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wildserve.kvcache.policy import EVICTION_POLICIES
from wildserve.overload.systems import SYSTEMS
from wildserve.routing import ROUTING_POLICIES

README = Path(__file__).resolve().parents[2] / "README.md"


def listed(start: str, end: str) -> set[str]:
    """The names in backticks between ``start`` and the next ``end`` (a sentence of the README)."""
    text = README.read_text()
    assert start in text, f"README lost its list starting {start!r}"
    body = text.split(start, 1)[1].split(end, 1)[0]
    return {n for n in re.findall(r"`([^`]+)`", body) if re.fullmatch(r"[a-z][a-z0-9.-]*", n)}


@pytest.mark.parametrize(
    ("registry", "start", "end"),
    [
        (ROUTING_POLICIES, "Policies (`--policy`):", "They decide on"),
        (EVICTION_POLICIES, "`EngineConfig.eviction_policy`):", "Append `:leaf`"),
        (SYSTEMS, "`--systems` spells them", "Every engine step"),
    ],
)
def test_the_readme_lists_every_registered_name(registry, start, end):
    names = listed(start, end)
    assert set(registry.names()) - names == set(), "registered but not in the README"
    assert names - set(registry.names()) == set(), "in the README but not registered"
