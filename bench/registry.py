"""A name -> builder catalogue shared by the model and dataset registries (timm-style)."""

from __future__ import annotations

import fnmatch
from typing import Callable, Generic, TypeVar

from bench.errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps the names users type (``gradattn-rope``, ``pad-ufes-20``) to registered entries."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def add(self, name: str, entry: T) -> T:
        return self.register(name)(entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries)
            raise BenchError(f"Unknown {self.kind} {name!r}; choose one of: {known}.") from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names in registration order, optionally filtered by a shell wildcard."""
        if pattern is None:
            return list(self._entries)
        return [n for n in self._entries if fnmatch.fnmatchcase(n, pattern)]

    def expand(self, spec: str) -> list[str]:
        """Turn a user's comma list (``all``, exact names, wildcards) into registered names.

        Every item must match something, so a typo is an error rather than a silently smaller grid.
        """
        chosen: list[str] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            matches = self.names() if item == "all" else self.names(item)
            if not matches:
                known = ", ".join(self._entries)
                raise BenchError(f"Unknown {self.kind} {item!r}; choose from: {known} (or 'all').")
            chosen.extend(m for m in matches if m not in chosen)
        if not chosen:
            raise BenchError(f"No {self.kind} given; name at least one (or 'all').")
        return chosen

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.items())
