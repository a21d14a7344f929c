"""A name -> builder catalogue shared by the model and dataset registries (timm-style).

Besides the names registered one by one, a registry can hold families behind a prefix
(``timm/resnet10t``, ``folder:data/pets``): ``get`` builds their entries on demand, so a worker
process resolves such a name with nothing carried over from its parent. Before its first lookup a
registry calls its ``loader`` once (the plugins: ``bench.core.plugins.load``).
"""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Callable, Generic, TypeVar

from bench.core.errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps the names users type (``gradattn-rope``, ``pad-ufes-20``) to registered entries."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._prefixes: dict[str, Callable[[str], T]] = {}
        self._loader = loader

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def add_prefix(self, prefix: str, resolve: Callable[[str], T]) -> None:
        """Names ``prefix + rest`` resolve to ``resolve(rest)``, which raises a BenchError for a bad rest."""
        self._prefixes[prefix] = resolve

    def _from_prefix(self, name: str) -> T | None:
        for prefix, resolve in self._prefixes.items():
            if name.startswith(prefix):
                entry = resolve(name[len(prefix) :])
                self._entries.setdefault(name, entry)  # resolved once per process
                return entry
        return None

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise BenchError(f"{self.kind} {name!r} is already registered; give the new one another name")
            self._entries[name] = entry
            return entry

        return decorator

    @contextlib.contextmanager
    def isolated(self):
        """Entries registered inside the block are forgotten after it; those before it stay."""
        self._load()
        entries, prefixes = dict(self._entries), dict(self._prefixes)
        try:
            yield self
        finally:
            self._entries, self._prefixes = entries, prefixes

    def add(self, name: str, entry: T) -> T:
        return self.register(name)(entry)

    def get(self, name: str) -> T:
        self._load()
        if name in self._entries:
            return self._entries[name]
        entry = self._from_prefix(name)
        if entry is None:
            raise BenchError(f"Unknown {self.kind} {name!r}; choose one of: {self._known()}.")
        return entry

    def _known(self) -> str:
        return ", ".join([*self._names(), *(f"{prefix}..." for prefix in self._prefixes)])

    def _names(self) -> list[str]:
        # Prefixed names resolved in this process are cached in _entries but are not catalogue names.
        return [n for n in self._entries if not n.startswith(tuple(self._prefixes))]

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names in registration order, optionally filtered by a shell wildcard."""
        self._load()
        if pattern is None:
            return self._names()
        return [n for n in self._names() if fnmatch.fnmatchcase(n, pattern)]

    def expand(self, spec: str) -> list[str]:
        """Turn a user's comma list (``all``, exact names, wildcards) into registered names.

        Every item must match something, so a typo is an error rather than a silently smaller grid.
        """
        chosen: list[str] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if item.startswith(tuple(self._prefixes)):
                self.get(item)  # a bad prefixed name fails here, with its family's reason
                matches = [item]
            else:
                matches = self.names() if item == "all" else self.names(item)
            if not matches:
                raise BenchError(f"Unknown {self.kind} {item!r}; choose from: {self._known()} (or 'all').")
            chosen.extend(m for m in matches if m not in chosen)
        if not chosen:
            raise BenchError(f"No {self.kind} given; name at least one (or 'all').")
        return chosen

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self):
        self._load()
        return iter(list(self._entries.items()))
