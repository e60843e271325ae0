"""Per-process copies of namespaces, for backends that can tell when they went stale.

:class:`Copies` only holds and serves what was read; deciding when copies must be dropped is
the backend's (Redis: announcements on a channel, :mod:`backends.rediscache`; SQLite: the
database's change counter). Bounded: past :data:`MAX_NAMESPACES` namespaces, or
:data:`MAX_KEYS` keys in one, copies are dropped rather than grown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

MAX_NAMESPACES = 2048
MAX_KEYS = 4096

Fetch = Callable[[dict[str, list[str] | None]], dict[str, dict[str, Any]]]


class _Copy:
    """What is held of one namespace: all of it, or some keys (present or known absent)."""

    __slots__ = ("absent", "values", "whole")

    def __init__(self) -> None:
        self.whole = False
        self.values: dict[str, Any] = {}
        self.absent: set[str] = set()

    def covers(self, keys: list[str] | None) -> bool:
        if self.whole:
            return True
        if keys is None:
            return False
        values, absent = self.values, self.absent
        for key in keys:  # a loop, not all(): every read asks, mostly for one or two keys
            if key not in values and key not in absent:
                return False
        return True

    def read(self, keys: list[str] | None) -> dict[str, Any]:
        if keys is None:
            return dict(self.values)
        return {key: self.values[key] for key in keys if key in self.values}

    def keep(self, keys: list[str] | None, found: dict[str, Any]) -> None:
        if keys is None:
            self.whole, self.values, self.absent = True, dict(found), set()
            return
        for key in keys:
            if key in found:
                self.values[key] = found[key]
                self.absent.discard(key)
            else:
                self.values.pop(key, None)
                self.absent.add(key)


class Copies:
    """Namespaces read before; not thread-safe (callers hold their own lock)."""

    def __init__(self) -> None:
        self._copies: dict[str, _Copy] = {}

    def held(self, requests: dict[str, list[str] | None]) -> dict[str, dict[str, Any]]:
        """The requests these copies answer whole (a namespace's keys, or all of it)."""
        held = {}
        for namespace, keys in requests.items():
            copy = self._copies.get(namespace)
            if copy is not None and copy.covers(keys):
                held[namespace] = copy.read(keys)
        return held

    def keep(self, requests: dict[str, list[str] | None], found: dict[str, dict[str, Any]]) -> None:
        """Remember what a read of ``requests`` found."""
        if len(self._copies) + len(requests) > MAX_NAMESPACES:
            self._copies.clear()
        for namespace, keys in requests.items():
            self._keep(namespace, self._copies.setdefault(namespace, _Copy()), keys, found[namespace])

    def update(self, namespace: str, keys: list[str], found: dict[str, Any]) -> None:
        """Follow a write of ``keys`` (those in ``found`` now hold these values, the others
        are gone) in a copy already held; nothing is added for a namespace not held."""
        copy = self._copies.get(namespace)
        if copy is not None:
            self._keep(namespace, copy, keys, found)

    def _keep(self, namespace: str, copy: _Copy, keys: list[str] | None, found: dict[str, Any]) -> None:
        copy.keep(keys, found)
        if len(copy.values) + len(copy.absent) > MAX_KEYS:  # followed writes count too
            del self._copies[namespace]

    def drop(self, namespaces: Iterable[str]) -> None:
        for namespace in namespaces:
            self._copies.pop(namespace, None)

    def clear(self) -> None:
        self._copies.clear()
