"""Redis store through redis-py: shared by any number of processes and machines.

Promises, on top of :mod:`backends.base`:

* A write has been applied by the server when its call returns and every client reads it from
  then on. How long it survives depends on the server's persistence (RDB/AOF): with
  ``appendonly yes`` and ``appendfsync everysec`` at most about a second of writes can be lost
  if the server crashes.
* Each namespace is one hash at ``prefix + "{" + group + "}" + rest`` (``settings:{user:17}/
  settings`` for ``user:17/settings``), so the namespaces of one group share a Redis Cluster
  slot. Counters are fields of the ``counters`` hash, changed with ``HINCRBY``.
* :meth:`RedisStore.set_many` is one ``MULTI``/``EXEC`` transaction; :meth:`compare_and_set`
  is one Lua script (or ``HSETNX``), so both are atomic on the server.
* Every call is bounded by the timeout (connect and read); a slow or unreachable server raises
  :class:`StorageUnavailable`, whose message never contains the password.

URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
``unix:///path/to/redis.sock[?db=N]``, plus our own query options ``prefix`` (default
``settings:``) and ``timeout`` (seconds; default ``SETTINGS_STORAGE_TIMEOUT``, else 2.0). Other
query options go to redis-py unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis

from .base import (
    COUNTERS,
    ConfigurationError,
    KeyValueStore,
    StorageUnavailable,
    decode,
    decode_many,
    encode,
)

DEFAULT_PREFIX = "settings:"
DEFAULT_TIMEOUT = 2.0
TIMEOUT_VARIABLE = "SETTINGS_STORAGE_TIMEOUT"
ACCEPTED_FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path/to/redis.sock "
    "(options: ?prefix=settings:&timeout=2.0)"
)
NOT_YET_SUPPORTED = ("redis+sentinel", "redis+cluster")

# KEYS[1]: hash, ARGV: field, expected encoding, new encoding.
_COMPARE_AND_SET = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    return 1
end
return 0
"""


def _group_and_rest(namespace: str) -> tuple[str, str]:
    group, slash, rest = namespace.partition("/")
    return group, slash + rest


class RedisStore(KeyValueStore):
    """One Redis hash per namespace, all keys under one prefix; thread-safe (a connection pool)."""

    schemes = ("redis", "rediss", "unix", *NOT_YET_SUPPORTED)

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT):
        """``url`` is redis-py's (without our options); nothing connects until the first call."""
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"the Redis key prefix may not contain braces, got {prefix!r}; use {ACCEPTED_FORMS}"
            )
        self.prefix = prefix
        self.timeout = timeout
        password = urlsplit(url).password
        self._secrets = [text for text in {password, password and unquote(password)} if text]
        try:
            pool = redis.ConnectionPool.from_url(
                url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                decode_responses=True,
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"malformed Redis URL: {self._hide_password(str(exc))}; use {ACCEPTED_FORMS}"
            ) from exc
        self._client = redis.Redis(connection_pool=pool)
        self._compare_and_set = self._client.register_script(_COMPARE_AND_SET)
        self._where = self._hide_password(urlunsplit(urlsplit(url)._replace(query="")))

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        parts = urlsplit(url)
        if parts.scheme.lower() in NOT_YET_SUPPORTED:
            raise ConfigurationError(
                f"{parts.scheme}:// is not supported yet; use {ACCEPTED_FORMS}"
            )
        if parts.scheme.lower() not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"not a Redis URL: {parts.scheme}://...; use {ACCEPTED_FORMS}")
        if parts.scheme.lower() != "unix":
            if not parts.hostname:
                raise ConfigurationError(f"no host in the Redis URL; use {ACCEPTED_FORMS}")
            if not (parts.path.strip("/") or "0").isdigit():
                raise ConfigurationError(
                    f"the path of a Redis URL is the database number, got {parts.path!r}; "
                    f"use {ACCEPTED_FORMS}"
                )

        options = parse_qsl(parts.query, keep_blank_values=True)
        ours = {name: value for name, value in options if name in ("prefix", "timeout")}
        theirs = [(name, value) for name, value in options if name not in ours]
        prefix = ours.get("prefix", DEFAULT_PREFIX)
        timeout_text = ours.get("timeout") or os.environ.get(TIMEOUT_VARIABLE) or DEFAULT_TIMEOUT
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = math.nan
        if not 0 < timeout < math.inf:
            raise ConfigurationError(
                f"the Redis timeout must be a positive number of seconds, got {timeout_text!r} "
                f"(URL option ?timeout= or {TIMEOUT_VARIABLE}); use {ACCEPTED_FORMS}"
            )
        return cls(
            urlunsplit(parts._replace(query=urlencode(theirs))), prefix=prefix, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _hide_password(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn every redis-py error into :class:`StorageUnavailable`, password removed."""
        try:
            yield
        except redis.RedisError as exc:
            message = self._hide_password(f"Redis at {self._where}: {type(exc).__name__}: {exc}")
            raise StorageUnavailable(message) from exc

    def _key(self, namespace: str) -> str:
        group, rest = _group_and_rest(namespace)
        return f"{self.prefix}{{{group}}}{rest}"

    def _namespace(self, key: str) -> str:
        """Inverse of :meth:`_key`: the group ends at the ``}`` before the first ``/``."""
        tagged = key[len(self.prefix) :]
        end = tagged.find("/")
        end = len(tagged) if end == -1 else end
        return tagged[1 : end - 1] + tagged[end:]

    # -- the interface --------------------------------------------------------------------

    def get(self, namespace: str, key: str) -> Any | None:
        with self._errors():
            raw = self._client.hget(self._key(namespace), key)
        return None if raw is None else decode(raw)

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        if not keys:
            return {}
        with self._errors():
            values = self._client.hmget(self._key(namespace), keys)
        return {key: decode(raw) for key, raw in zip(keys, values, strict=True) if raw is not None}

    def get_all(self, namespace: str) -> dict[str, Any]:
        with self._errors():
            raw = self._client.hgetall(self._key(namespace))
        return decode_many(raw)

    def set(self, namespace: str, key: str, value: Any) -> None:
        text = encode(value)
        with self._errors():
            self._client.hset(self._key(namespace), key, text)

    def set_many(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        encoded = {
            self._key(namespace): {key: encode(value) for key, value in values.items()}
            for namespace, values in entries.items()
            if values
        }
        if not encoded:
            return
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            for hash_key, mapping in encoded.items():
                pipe.hset(hash_key, mapping=mapping)
            pipe.execute()

    def delete(self, namespace: str, key: str) -> bool:
        with self._errors():
            return bool(self._client.hdel(self._key(namespace), key))

    def compare_and_set(self, namespace: str, key: str, expected: Any | None, value: Any) -> bool:
        hash_key, text = self._key(namespace), encode(value)
        with self._errors():
            if expected is None:
                return bool(self._client.hsetnx(hash_key, key, text))
            return bool(self._compare_and_set(keys=[hash_key], args=[key, encode(expected), text]))

    def incr(self, counter: str, amount: int = 1) -> int:
        with self._errors():
            return int(self._client.hincrby(self._key(COUNTERS), counter, amount))

    def namespaces(self) -> Iterator[str]:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix) + "*"
        with self._errors():
            keys = set(self._client.scan_iter(match=pattern, count=1000, _type="hash"))
        return iter([self._namespace(key) for key in keys])

    def ping(self) -> None:
        with self._errors():
            self._client.ping()

    def close(self) -> None:
        with self._errors():
            self._client.close()
            self._client.connection_pool.disconnect()
