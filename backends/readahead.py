"""Reads gathered ahead into one round trip, answered from memory for the rest of a request.

A web request typically reads a token, its user and some settings, one after the other. When
what it will read is known up front, :meth:`ReadAheadStore.read_ahead` fetches all of it in one
:meth:`~backends.base.KeyValueStore.get_each` call; the reads that follow are answered from that
batch instead of going to the store again. The batch belongs to the current context (thread or
task) and lives until :meth:`ReadAheadStore.forget`; any write to a namespace drops what the
batch holds of it, so a request always reads its own writes. Nothing is kept across batches:
every batch is read fresh from the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from .base import COUNTERS, ChangeWatch, KeyValueStore


class _Read:
    """What a batch holds of one namespace: all of it, or the listed keys."""

    __slots__ = ("keys", "values", "whole")

    def __init__(self, keys: Iterable[str] | None, values: dict[str, Any]) -> None:
        self.whole = keys is None
        self.keys = frozenset(values if keys is None else keys)
        self.values = values

    def covers(self, keys: Iterable[str]) -> bool:
        return self.whole or self.keys.issuperset(keys)


class ReadAheadStore(KeyValueStore):
    """Wraps a store; reads come from the current batch when it covers them."""

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store
        self._batch: ContextVar[dict[str, _Read] | None] = ContextVar(
            f"read_ahead_{id(self)}", default=None
        )

    @classmethod
    def from_url(cls, url: str, *, timeout: float | str | None = None) -> ReadAheadStore:
        from . import store_from_url

        return cls(store_from_url(url, timeout=timeout))

    def __repr__(self) -> str:
        return f"ReadAheadStore({self.store!r})"

    # -- batches ---------------------------------------------------------------------------

    def read_ahead(self, requests: Mapping[str, Iterable[str] | None]) -> None:
        """Fetch ``requests`` (as for ``get_each``) in one call and start a batch with them."""
        requests = {ns: None if keys is None else list(keys) for ns, keys in requests.items()}
        found = self.store.get_each(requests) if requests else {}
        self._batch.set({ns: _Read(keys, found[ns]) for ns, keys in requests.items()})

    def forget(self) -> None:
        """End the current batch: reads go to the store again."""
        self._batch.set(None)

    def _held(self, namespace: str, keys: Iterable[str] | None) -> _Read | None:
        batch = self._batch.get()
        read = batch.get(namespace) if batch else None
        if read is None or (keys is None and not read.whole) or (keys and not read.covers(keys)):
            return None
        return read

    def _drop(self, namespace: str) -> None:
        batch = self._batch.get()
        if batch:
            batch.pop(namespace, None)

    # -- reads -----------------------------------------------------------------------------

    def get(self, namespace: str, key: str) -> Any | None:
        read = self._held(namespace, (key,))
        return self.store.get(namespace, key) if read is None else read.values.get(key)

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        read = self._held(namespace, keys)
        if read is None:
            return self.store.get_many(namespace, keys)
        return {key: read.values[key] for key in keys if key in read.values}

    def get_all(self, namespace: str) -> dict[str, Any]:
        read = self._held(namespace, None)
        return self.store.get_all(namespace) if read is None else dict(read.values)

    def get_each(self, requests: Mapping[str, Iterable[str] | None]) -> dict[str, dict[str, Any]]:
        return self.store.get_each(requests)

    # -- writes drop what the batch holds of their namespaces -------------------------------

    def set(self, namespace: str, key: str, value: Any) -> None:
        self._drop(namespace)
        self.store.set(namespace, key, value)

    def set_many(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        for namespace in entries:
            self._drop(namespace)
        self.store.set_many(entries)

    def delete(self, namespace: str, key: str) -> bool:
        self._drop(namespace)
        return self.store.delete(namespace, key)

    def delete_many(self, namespace: str, keys: Iterable[str]) -> int:
        self._drop(namespace)
        return self.store.delete_many(namespace, keys)

    def compare_and_set(self, namespace: str, key: str, expected: Any | None, value: Any) -> bool:
        self._drop(namespace)
        return self.store.compare_and_set(namespace, key, expected, value)

    def commit(self, writes, *, expect=None, log=()) -> int | None:
        for namespace in {*writes, *(namespace for namespace, _ in log), COUNTERS}:
            self._drop(namespace)
        return self.store.commit(writes, expect=expect, log=log)

    def incr(self, counter: str, amount: int = 1) -> int:
        self._drop(COUNTERS)
        return self.store.incr(counter, amount)

    # -- the rest goes straight through ----------------------------------------------------

    @property
    def atomic_across_groups(self) -> bool:  # type: ignore[override]
        return self.store.atomic_across_groups

    def namespaces(self) -> Iterator[str]:
        return self.store.namespaces()

    def change_watch(self) -> ChangeWatch:
        return self.store.change_watch()

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self.forget()
        self.store.close()
