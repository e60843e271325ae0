"""The storage contract every backend fulfils.

Data is kept as *namespaces* of JSON values. A namespace is a flat mapping of string keys to
JSON-serialisable values (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``); values are
stored as JSON, never pickled. The server keeps, for example, all global settings in one
namespace and each user's settings in a namespace of that user's own, so that one call reads a
whole namespace without touching anybody else's data.

A namespace name may have a *group*: the part before the first ``/`` (``user:17/settings`` is in
group ``user:17``). Backends that shard (Redis Cluster) keep a group's namespaces together.

Counters live in the reserved namespace :data:`COUNTERS` and are read like any other entry.

Promises every backend keeps:

* A write that returns has been made durable to the degree the backend offers (see each
  backend) and is visible to every process that reads the same store afterwards.
* Each call on a single entry is atomic: concurrent writers to the same entry leave one of the
  written values, never a mix; writers to different entries of one namespace never lose each
  other's writes.
* Missing entries read as ``None`` (``get``) or are simply absent (``get_many``, ``get_all``).
* Driver failures (server unreachable, I/O error, lock timeouts) are raised as
  :class:`StorageUnavailable`; nothing else escapes from a driver.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

COUNTERS = "counters"
#: The counter of :meth:`KeyValueStore.commit`'s log entries: the store's *change index*.
CHANGES = "changes"
#: Seconds between two reads of the change counter by the default :class:`ChangeWatch`.
POLL_INTERVAL = 0.25


def log_key(index: int) -> str:
    """The key of the log entry with change index ``index``: zero-padded, so that the keys of
    a namespace sort as their indexes do."""
    return f"{index:012d}"


class StorageError(Exception):
    """Base class of every error raised by this package."""


class StorageUnavailable(StorageError):
    """The store could not be reached or failed to carry out a request (HTTP 503)."""


class ConfigurationError(StorageError, ValueError):
    """A storage URL that names no known backend or is malformed."""


def encode(value: Any) -> str:
    """Canonical JSON: equal values always encode to equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Replaced:
    """A field of a :meth:`KeyValueStore.commit` log entry that the store fills in, in the
    commit's atomic step, with the value that the same commit's write of ``key`` in
    ``namespace`` replaces: the stored value, ``absent`` when nothing was stored, or ``shown``
    in either's place when given (a value that must not be copied). The entry is left out,
    and takes no index, when that write leaves the value (or ``absent``) as it was.

    So a writer can log what it overwrote without reading it first and checking that it
    still holds: two writers of one key never have to retry to get their entries right."""

    namespace: str
    key: str
    absent: Any
    shown: Any | None = None


#: Stands for a :class:`Replaced` field while an entry is encoded; random, so that no value
#: a client sends can be taken for it.
_SLOT = f"\x00{uuid.uuid4().hex}"
_SLOT_TEXT = encode(_SLOT)


@dataclass(frozen=True)
class LogItem:
    """One log entry of a commit, encoded: ``text`` whole, or, when it holds a
    :class:`Replaced` field (``watch``, its namespace and key), the text before that field's
    value and ``after`` it, with the encodings of ``absent`` and ``shown``."""

    namespace: str
    text: str
    after: str = ""
    watch: tuple[str, str] | None = None
    absent: str = ""
    shown: str | None = None

    @classmethod
    def of(cls, namespace: str, value: Any) -> LogItem:
        replaced = [
            (field, v) for field, v in (value.items() if isinstance(value, Mapping) else ())
            if isinstance(v, Replaced)
        ]  # fmt: skip
        if not replaced:
            return cls(namespace, encode(value))
        ((field, marker),) = replaced  # one per entry
        before, after = encode({**value, field: _SLOT}).split(_SLOT_TEXT)
        shown = None if marker.shown is None else encode(marker.shown)
        return cls(
            namespace, before, after, (marker.namespace, marker.key), encode(marker.absent), shown
        )

    def filled(self, stored: str | None, written: str) -> str | None:
        """The entry's text, given the encoding of the value its write replaces (``None``:
        absent) and of the value written; ``None`` when the write changes nothing."""
        if self.watch is None:
            return self.text
        was = self.absent if stored is None else stored
        if was == written:
            return None
        return self.text + (was if self.shown is None else self.shown) + self.after


def encode_log(
    log: Sequence[tuple[str, Any]], encoded: Mapping[str, Mapping[str, str]]
) -> list[LogItem]:
    """A commit's ``log`` encoded, checking that every :class:`Replaced` field names a key the
    commit writes (``encoded``: the commit's writes, encoded)."""
    items = [LogItem.of(namespace, value) for namespace, value in log]
    for item in items:
        if item.watch is not None and item.watch[1] not in encoded.get(item.watch[0], {}):
            raise ValueError(f"a log entry replaces {item.watch}, which the commit does not write")
    return items


def decode(text: str | bytes) -> Any:
    return json.loads(text)


def decode_many(texts: Mapping[str, str]) -> dict[str, Any]:
    """Decode many stored values with one parser call (a namespace read is on the hot path)."""
    if not texts:
        return {}
    return dict(zip(texts.keys(), json.loads(f"[{','.join(texts.values())}]"), strict=True))


class KeyValueStore(ABC):
    """A store of namespaced JSON values, selected by URL scheme (see :func:`store_from_url`)."""

    #: URL schemes this class serves.
    schemes: ClassVar[tuple[str, ...]] = ()

    #: Whether :meth:`set_many` is all-or-nothing across groups too. ``False`` only for Redis
    #: Cluster, where it is all-or-nothing per group and written group after group.
    atomic_across_groups: bool = True

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, *, timeout: float | str | None = None) -> KeyValueStore:
        """Build a store from its URL; raise :class:`ConfigurationError` for a malformed one.

        ``timeout``: seconds a connection or a reply may take (an option the URL may override);
        ``None`` for the backend's default. Stores without a network to wait for ignore it.

        Must not connect: the first request does, so that nothing touches a store at import
        or configuration time.
        """

    @abstractmethod
    def get(self, namespace: str, key: str) -> Any | None:
        """The value stored at ``key``, or ``None`` when there is none."""

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of ``keys`` that exist, in one round trip where the backend can."""
        found = {}
        for key in keys:
            value = self.get(namespace, key)
            if value is not None:
                found[key] = value
        return found

    @abstractmethod
    def get_all(self, namespace: str) -> dict[str, Any]:
        """Every entry of ``namespace`` in one round trip; ``{}`` for an empty namespace."""

    def get_each(self, requests: Mapping[str, Iterable[str] | None]) -> dict[str, dict[str, Any]]:
        """Several reads at once, in one round trip where the backend can: for each namespace,
        the stored values of the listed keys (as :meth:`get_many`), or for ``None`` the whole
        namespace (as :meth:`get_all`). Every requested namespace is in the result."""
        return {
            namespace: self.get_all(namespace) if keys is None else self.get_many(namespace, keys)
            for namespace, keys in requests.items()
        }

    @abstractmethod
    def set(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` at ``key``, replacing what was there."""

    def set_many(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Store ``{namespace: {key: value}}`` all at once: all of it is written or none.

        Every value is encoded before anything is written, so an unstorable value writes
        nothing. Where :attr:`atomic_across_groups` is ``False`` (Redis Cluster) this holds per
        group; a failure of the store midway can leave earlier groups written. The default is
        not atomic; every shipped backend overrides it with a transaction.
        """
        for namespace, values in entries.items():
            for key, value in values.items():
                self.set(namespace, key, value)

    @abstractmethod
    def commit(
        self,
        writes: Mapping[str, Mapping[str, Any]],
        *,
        expect: Mapping[str, Mapping[str, Any | None]] | None = None,
        log: Sequence[tuple[str, Any]] = (),
    ) -> int | None:
        """Check, write and log in one atomic step: if every entry of ``expect``
        (``{namespace: {key: value or None for absent}}``, compared on the canonical JSON
        encoding) still holds, store ``writes`` (as :meth:`set_many`) and append each
        ``(namespace, value)`` of ``log``; otherwise write nothing and return ``None``.

        Each logged value gets the next *change index*: the counter :data:`CHANGES` goes up by
        one per entry in the same step, and the entry is stored at :func:`log_key` of its index
        in its namespace. So a reader that sees a value also sees its log entry and the other
        way round, and indexes are never reused; on stores where :attr:`atomic_across_groups`
        holds, an entry with a lower index is never written after one with a higher index.
        Where it does not (Redis Cluster), the indexes are allocated first, the step is atomic
        per group, and ``expect`` must name namespaces of one group.

        A logged value may hold a :class:`Replaced` field (one), which the store fills in the
        same step with what the commit's write of that key replaces; such an entry is left out
        when the write changes nothing.

        Returns the change index of the last logged entry, or ``0`` when nothing was logged.
        Every value is encoded before anything is written.
        """

    @abstractmethod
    def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; ``True`` if it existed."""

    def delete_many(self, namespace: str, keys: Iterable[str]) -> int:
        """Remove ``keys`` of ``namespace`` (absent ones are skipped) in one round trip where
        the backend can; returns how many existed. Each key's removal is atomic; the batch as
        a whole need not be."""
        return sum(self.delete(namespace, key) for key in list(keys))

    @abstractmethod
    def compare_and_set(self, namespace: str, key: str, expected: Any | None, value: Any) -> bool:
        """Store ``value`` only if the current value equals ``expected`` (``None``: absent).

        Returns whether the write happened. Equality is on the canonical JSON encoding. This is
        the building block for optimistic concurrency: read, compute, compare-and-set, retry.
        """

    @abstractmethod
    def incr(self, counter: str, amount: int = 1) -> int:
        """Atomically add ``amount`` to ``counter`` (absent counts as 0) and return the result.

        Counters are entries of the :data:`COUNTERS` namespace.
        """

    def change_watch(self) -> ChangeWatch:
        """A new :class:`ChangeWatch` on this store: how one process waits for the change index
        (counter :data:`CHANGES`) to move, whichever process or machine moved it.

        The default reads the counter every :data:`POLL_INTERVAL` seconds; backends override it
        with a cheaper signal (a subscription, a file's change counter, a condition). A process
        keeps one and shares it between all of its waiting clients; it holds at most one
        connection of its own. Must not connect: the first :meth:`ChangeWatch.next_index`
        does.
        """
        return PollingChangeWatch(self)

    @abstractmethod
    def namespaces(self) -> Iterator[str]:
        """Every namespace that holds at least one entry (for backup and migration; may scan)."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the store answers; raise :class:`StorageUnavailable` otherwise."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads. The store may not be used afterwards."""



class ChangeWatch:
    """Waits for the change index of a store to move (see :meth:`KeyValueStore.change_watch`).

    Used from one thread at a time (one per process: the server's change feed), which then
    wakes everybody waiting in that process.
    """

    def next_index(self, after: int, timeout: float) -> int:
        """The change index (counter :data:`CHANGES`, 0 when absent) as soon as it is
        above ``after``, or as it is when ``timeout`` seconds have passed, read from the store
        itself (never from a copy a process keeps). Raises :class:`StorageUnavailable` when the
        store cannot be read or watched; the next call tries again."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the watch's connection, if any. The watch may not be used afterwards."""


class PollingChangeWatch(ChangeWatch):
    """The default: the counter read every ``interval`` seconds through the store's own
    ``get``."""

    def __init__(self, store: KeyValueStore, interval: float = POLL_INTERVAL) -> None:
        self.store = store
        self.interval = interval

    def next_index(self, after: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            index = int(self.store.get(COUNTERS, CHANGES) or 0)
            remaining = deadline - time.monotonic()
            if index > after or remaining <= 0:
                return index
            time.sleep(min(self.interval, remaining))


@runtime_checkable
class DefersWrites(Protocol):
    """A store whose writes can return before the backend has answered (Redis: the answer is
    a round trip away). Not part of :class:`KeyValueStore`: stores without a round trip to
    save do not implement it, and callers check with ``isinstance``."""

    def defer_writes(self) -> None:
        """Allow this thread's next writes to return before the backend has answered, until
        :meth:`settle`; every other call on the store still sees them."""

    def settle(self) -> None:
        """Stop deferring (see :meth:`defer_writes`) and wait for the answers owed; raise
        :class:`StorageUnavailable` if a deferred write failed or its outcome is unknown."""


class ReadsThroughGetEach:
    """Mixin for backends whose every read goes through :meth:`KeyValueStore.get_each`, so
    that one code path serves copies and fetches alike (list it before ``KeyValueStore``)."""

    def get(self, namespace: str, key: str) -> Any | None:
        return self.get_each({namespace: [key]})[namespace].get(key)

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        return self.get_each({namespace: list(keys)})[namespace]

    def get_all(self, namespace: str) -> dict[str, Any]:
        return self.get_each({namespace: None})[namespace]
