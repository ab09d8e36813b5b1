"""A registry you can grep: a dict from name to entry, filled by a decorator next to each definition.

Used for every extension point that is a plain function (baselines, pruning criteria). Unknown
names get one "did you mean" error listing the valid ones (open_lth `pruning/registry.py`,
timm `_registry.py`).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from ticketx.errors import UsageError, did_you_mean

E = TypeVar("E")


class Registry(Generic[E]):
    """Name -> entry, in registration order. `what` names the kind in error messages."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, E] = {}

    def add(self, name: str, entry: E) -> E:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str, wrap: Callable[[str, Callable], E] | None = None) -> Callable[[Callable], Callable]:
        """Decorator: register the function (or `wrap(name, function)`) under `name`."""

        def deco(fn: Callable) -> Callable:
            self.add(name, wrap(name, fn) if wrap is not None else fn)  # type: ignore[arg-type]
            return fn

        return deco

    def __getitem__(self, name: str) -> E:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(did_you_mean(name, list(self._entries), self.what)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[E]:
        return list(self._entries.values())

    def check(self, names: list[str]) -> list[str]:
        """The names, each checked (the first unknown one raises); duplicates dropped, order kept."""
        for n in names:
            self[n]
        return list(dict.fromkeys(names))
