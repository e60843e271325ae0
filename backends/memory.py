"""In-process store: for tests and single-process development only.

Every worker process gets a store of its own, so under several gunicorn workers each would see
different data. The server refuses to start it under more than one worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from .base import (
    CHANGES,
    COUNTERS,
    ChangeWatch,
    ConfigurationError,
    KeyValueStore,
    LogItem,
    decode,
    decode_many,
    encode,
    encode_log,
    log_key,
)


class MemoryStore(KeyValueStore):
    """Thread-safe (one lock around every call); nothing survives the process."""

    schemes = ("memory",)

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}
        self._lock = threading.RLock()
        self._change_counter_moved = threading.Condition(self._lock)

    @classmethod
    def from_url(cls, url: str, *, timeout: float | str | None = None) -> MemoryStore:
        if url.rstrip("/") != "memory:":
            raise ConfigurationError(f"memory:// takes no host, path or options, got {url!r}")
        return cls()

    def get(self, namespace: str, key: str) -> Any | None:
        with self._lock:
            raw = self._data.get(namespace, {}).get(key)
        return None if raw is None else decode(raw)

    def get_many(self, namespace, keys):
        with self._lock:
            entries = self._data.get(namespace, {})
            raw = {key: entries[key] for key in keys if key in entries}
        return decode_many(raw)

    def get_all(self, namespace: str) -> dict[str, Any]:
        with self._lock:
            raw = dict(self._data.get(namespace, {}))
        return decode_many(raw)

    def set(self, namespace: str, key: str, value: Any) -> None:
        text = encode(value)
        with self._lock:
            self._data.setdefault(namespace, {})[key] = text

    def set_many(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        encoded = {ns: {k: encode(v) for k, v in values.items()} for ns, values in entries.items()}
        with self._lock:
            for namespace, values in encoded.items():
                self._data.setdefault(namespace, {}).update(values)

    def commit(self, writes, *, expect=None, log=()) -> int | None:
        encoded = {ns: {k: encode(v) for k, v in values.items()} for ns, values in writes.items()}
        items = encode_log(log, encoded)
        wanted = {
            ns: {k: None if v is None else encode(v) for k, v in values.items()}
            for ns, values in (expect or {}).items()
        }
        with self._lock:
            for namespace, values in wanted.items():
                entries = self._data.get(namespace, {})
                if any(entries.get(key) != want for key, want in values.items()):
                    return None
            logged = [
                (item.namespace, text)
                for item in items
                if (text := self._filled(item, encoded)) is not None
            ]
            for namespace, values in encoded.items():
                self._data.setdefault(namespace, {}).update(values)
            if not logged:
                return 0
            counters = self._data.setdefault(COUNTERS, {})
            index = decode(counters.get(CHANGES, "0"))
            for namespace, text in logged:
                index += 1
                self._data.setdefault(namespace, {})[log_key(index)] = text
            counters[CHANGES] = encode(index)
            self._change_counter_moved.notify_all()
            return index

    def _filled(self, item: LogItem, encoded: dict[str, dict[str, str]]) -> str | None:
        if item.watch is None:
            return item.text
        namespace, key = item.watch
        return item.filled(self._data.get(namespace, {}).get(key), encoded[namespace][key])

    def delete(self, namespace: str, key: str) -> bool:
        with self._lock:
            return self._data.get(namespace, {}).pop(key, None) is not None

    def compare_and_set(self, namespace, key, expected, value) -> bool:
        want = None if expected is None else encode(expected)
        with self._lock:
            entries = self._data.setdefault(namespace, {})
            if entries.get(key) != want:
                return False
            entries[key] = encode(value)
            return True

    def incr(self, counter: str, amount: int = 1) -> int:
        with self._lock:
            counters = self._data.setdefault(COUNTERS, {})
            result = decode(counters.get(counter, "0")) + amount
            counters[counter] = encode(result)
            if counter == CHANGES:
                self._change_counter_moved.notify_all()
            return result

    def change_watch(self) -> ChangeWatch:
        """Wakes on a condition every move of the change counter notifies."""
        return _ConditionWatch(self)

    def _change_index(self) -> int:
        return decode(self._data.get(COUNTERS, {}).get(CHANGES, "0"))

    def namespaces(self) -> Iterator[str]:
        with self._lock:
            names = [ns for ns, entries in self._data.items() if entries]
        return iter(names)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._data.clear()


class _ConditionWatch(ChangeWatch):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def next_index(self, after: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._store._lock:
            while True:
                index = self._store._change_index()
                remaining = deadline - time.monotonic()
                if index > after or remaining <= 0:
                    return index
                self._store._change_counter_moved.wait(remaining)
