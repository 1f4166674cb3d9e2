"""``Registry``: the one way a plug-in kind is declared (stages, delivery functions, worker
operations, schedulers, launchers, storages).

A registry maps names (and aliases) to entries of one kind. Entries register with ``add`` or the
``register`` decorator; a duplicate name for a different entry is refused (the same entry twice is
harmless: modules may be imported twice under ``python -m``); ``get`` of an unknown name raises the
registry's error type with the names it knows, so a CLI or a pipespec error lists the choices.

What an entry must be is declared beside each registry, as a ``typing.Protocol`` or a base class:
``pipeline.stage.STAGES`` (``StageFunction``), ``pipeline.delivery.DELIVERIES``
(``DeliveryFunction``), ``worker.ops.DEFAULT`` (``OperationFunction``),
``pipeline.schedulers.SCHEDULERS`` (``Scheduler``) and ``coordinator.launcher.LAUNCHERS``
(``Launcher``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from foundation.errors import ExcameraError

T = TypeVar("T")


class UnknownName(ExcameraError, KeyError):
    """A name no entry of the registry has."""

    def __str__(self) -> str:       # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateName(ExcameraError):
    """A second, different entry under a name already taken."""


class Registry(Generic[T]):
    """Name -> entry of one plug-in kind (``kind`` names it in errors, e.g. "stage"). ``error`` is
    raised for an unknown name, ``duplicate`` for a name taken twice (a package passes its own
    error type, e.g. ``StageError``, so its callers catch one type)."""

    def __init__(self, kind: str, error: type[Exception] = UnknownName,
                 duplicate: type[Exception] = DuplicateName) -> None:
        self.kind = kind
        self.error = error
        self.duplicate = duplicate
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, entry: T, aliases: tuple[str, ...] = ()) -> T:
        for n in (name, *aliases):
            known = self._entries.get(self._aliases.get(n, n))
            if known is not None and known is not entry and not _same(known, entry):
                raise self.duplicate(f"{self.kind} {n!r} is already registered")
        self._entries[name] = entry
        for a in aliases:
            if a != name:
                self._aliases[a] = name
        return entry

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        def deco(entry: T) -> T:
            return self.add(name, entry, aliases)
        return deco

    def get(self, name: str) -> T:
        entry = self._entries.get(self._aliases.get(name, name))
        if entry is None:
            raise self.error(f"unknown {self.kind} {name!r} (known: {', '.join(self.names()) or 'none'})")
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._aliases.get(name, name) in self._entries

    def canonical(self, name: str) -> str:
        """The name an alias stands for (a name stands for itself)."""
        self.get(name)
        return self._aliases.get(name, name)

    def names(self, aliases: bool = False) -> list[str]:
        return sorted(self._entries) + (sorted(self._aliases) if aliases else [])

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _same(a, b) -> bool:
    """Two registrations of one definition (a module imported twice, e.g. as ``__main__``)."""
    fa, fb = getattr(a, "__qualname__", None), getattr(b, "__qualname__", None)
    return fa is not None and fa == fb and getattr(a, "__module__", None) == getattr(b, "__module__", None)
