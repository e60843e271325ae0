"""Storage backends for settings-server, chosen by URL (see :func:`store_from_url`)."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from .base import (
    CHANGES,
    COUNTERS,
    ChangeWatch,
    ConfigurationError,
    DefersWrites,
    KeyValueStore,
    Replaced,
    StorageError,
    StorageUnavailable,
)

# scheme -> (module, class); drivers are imported only when their scheme is used.
_BACKENDS = {
    "memory": ("backends.memory", "MemoryStore"),
    "sqlite": ("backends.sqlite", "SQLiteStore"),
    "redis": ("backends.redis", "RedisStore"),
    "rediss": ("backends.redis", "RedisStore"),
    "unix": ("backends.redis", "RedisStore"),
    "redis+sentinel": ("backends.redis", "RedisStore"),
    "redis+cluster": ("backends.redis", "RedisClusterStore"),
}

ACCEPTED_FORMS = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "redis://[:password@]host[:port][/db], rediss://..., unix:///path/to/redis.sock, "
    "redis+sentinel://host:port[,host:port]/service[/db], redis+cluster://host:port[,host:port]"
)


def store_from_url(url: str, **options: Any) -> KeyValueStore:
    """Build the store a URL names, without connecting to it.

    ``options`` go to the backend's :meth:`~KeyValueStore.from_url` (as limits'
    ``storage_from_string`` passes them to the storage class): ``timeout``, seconds a
    connection or a reply may take, where the store has a network between it and us. The app
    passes its configuration here; no backend reads the environment.

    Raises :class:`ConfigurationError` naming the accepted forms for an unknown scheme or a
    malformed URL.
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigurationError(
            f"malformed storage URL {url!r}; use one of: {ACCEPTED_FORMS}"
        ) from exc
    if scheme not in _BACKENDS or "://" not in url:
        raise ConfigurationError(
            f"unknown storage URL {url!r}; use one of: {ACCEPTED_FORMS}"
        )
    module_name, class_name = _BACKENDS[scheme]
    store_class = getattr(importlib.import_module(module_name), class_name)
    return store_class.from_url(url, **options)


__all__ = [
    "ACCEPTED_FORMS",
    "CHANGES",
    "COUNTERS",
    "ChangeWatch",
    "ConfigurationError",
    "DefersWrites",
    "KeyValueStore",
    "Replaced",
    "StorageError",
    "StorageUnavailable",
    "store_from_url",
]
