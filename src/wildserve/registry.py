"""Name -> class registries: one table per kind, duplicates raise, unknown names list the choices."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from wildserve.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A table from names to objects (usually classes) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator; a registered class gets ``cls.name = name`` (its name is spelled once)."""

        def decorator(obj: T) -> T:
            if isinstance(obj, type):
                own = obj.__dict__.get("name")
                if isinstance(own, str) and own != name:
                    raise ValueError(f"{self.kind} '{name}': class says name = '{own}'")
                obj.name = name  # type: ignore[attr-defined]
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(sorted(self._items))
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; choose one of: {choices}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
