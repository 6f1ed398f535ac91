"""Drafters behind one interface; importing this package registers all of them."""

from wildserve.rollout.drafters import lookup, model  # noqa: F401  (registration side effect)
from wildserve.rollout.drafters.base import DRAFTERS, Draft, Drafter, DrafterContext

__all__ = ["DRAFTERS", "Draft", "Drafter", "DrafterContext"]
