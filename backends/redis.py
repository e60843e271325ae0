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
``settings:``) and ``timeout`` (seconds; default the ``timeout`` passed to
:meth:`RedisStore.from_url`, else 2.0). Other
query options go to redis-py unchanged.

Beyond one server, with the same options (and no others):

* ``redis+sentinel://[[user]:password@]host:port[,host:port]/service[/db]``: the master of
  ``service`` as the sentinels report it (redis-py ``Sentinel.master_for``); after a failover the
  next call finds the new master. The credentials are the master's; sentinels are asked without.
* ``redis+cluster://[[user]:password@]host:port[,host:port]``: a Redis Cluster (redis-py
  ``RedisCluster``), the nodes given being where discovery starts. A cluster transaction cannot
  span hash slots, so :meth:`RedisStore.set_many` runs one ``MULTI``/``EXEC`` per group (hash
  slot): all-or-nothing within each group, group after group across groups
  (:attr:`~backends.base.KeyValueStore.atomic_across_groups` is ``False``).
"""

from __future__ import annotations

import math
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from .base import (
    COUNTERS,
    ConfigurationError,
    KeyValueStore,
    ReadsThroughGetEach,
    StorageUnavailable,
    decode,
    decode_many,
    encode,
)
from .rediscache import DELETED, NamespaceCache

DEFAULT_PREFIX = "settings:"
DEFAULT_TIMEOUT = 2.0
ACCEPTED_FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path/to/redis.sock, "
    "redis+sentinel://host:port[,host:port]/service[/db], redis+cluster://host:port[,host:port] "
    "(options: ?prefix=settings:&timeout=2.0&cache=off)"
)
SENTINEL, CLUSTER = "redis+sentinel", "redis+cluster"
DEFAULT_PORTS = {SENTINEL: 26379, CLUSTER: 6379}
CLUSTER_ATTEMPTS = 3  # redis-py retries a failed cluster call (re-reading the slot map) this often

# KEYS[1]: hash, ARGV: field, expected encoding, new encoding.
_COMPARE_AND_SET = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    return 1
end
return 0
"""


class _ThreadState(threading.local):
    """What a thread keeps of a store: whether it defers writes, and what reads the answers it
    is owed (see :meth:`RedisStore.defer_writes`) in the process that sent them."""

    def __init__(self) -> None:
        self.deferring = False
        self.owed: list[Callable[[], list[Any]]] = []
        self.pid = os.getpid()


def _group_and_rest(namespace: str) -> tuple[str, str]:
    group, slash, rest = namespace.partition("/")
    return group, slash + rest


def _nodes(url: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """``(username, password, [(host, port), ...])`` of a sentinel or cluster URL."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = item, str(DEFAULT_PORTS[parts.scheme.lower()])
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"bad node {item!r} in the Redis URL; give host:port[,host:port], "
                f"use {ACCEPTED_FORMS}"
            )
        nodes.append((host, int(port)))
    return unquote(username) or None, unquote(password) or None, nodes


def _plain_client(url: str, timeout: float) -> Callable[[], redis.Redis]:
    try:
        pool = redis.ConnectionPool.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, decode_responses=True
        )
    except ValueError as exc:
        raise ConfigurationError(f"malformed Redis URL: {exc}; use {ACCEPTED_FORMS}") from exc
    client = redis.Redis(connection_pool=pool)
    return lambda: client


def _sentinel_client(url: str, timeout: float) -> Callable[[], redis.Redis]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    username, password, nodes = _nodes(url)
    service, _, db = urlsplit(url).path.strip("/").partition("/")
    if not service or not (db or "0").isdigit():
        raise ConfigurationError(
            f"a Sentinel URL's path is /service_name[/db], got {urlsplit(url).path!r}; "
            f"use {ACCEPTED_FORMS}"
        )
    timeouts = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    # One attempt per sentinel: the master's own connection retries, as plain clients do.
    once = {**timeouts, "retry": Retry(NoBackoff(), 0)}
    sentinel = Sentinel(nodes, sentinel_kwargs=once, **timeouts)
    client = sentinel.master_for(
        service, db=int(db or 0), username=username, password=password, decode_responses=True
    )
    return lambda: client


def _cluster_client(url: str, timeout: float) -> Callable[[], redis.RedisCluster]:
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    username, password, nodes = _nodes(url)
    if urlsplit(url).path.strip("/"):
        raise ConfigurationError(
            f"a Redis Cluster has only database 0: no path in redis+cluster:// URLs; "
            f"use {ACCEPTED_FORMS}"
        )

    def connect() -> redis.RedisCluster:  # RedisCluster reads the slot map as it is built
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            username=username,
            password=password,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), CLUSTER_ATTEMPTS - 1),
            decode_responses=True,
        )

    return connect


_CLIENT_FACTORIES = {SENTINEL: _sentinel_client, CLUSTER: _cluster_client}


class RedisStore(ReadsThroughGetEach, KeyValueStore):
    """One Redis hash per namespace, all keys under one prefix; thread-safe (a connection pool)."""

    schemes = ("redis", "rediss", "unix", SENTINEL, CLUSTER)

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        cache: bool = False,
    ):
        """``url`` is redis-py's, or a sentinel/cluster URL (without our options); nothing
        connects until the first call. ``cache``: keep per-process copies of what is read
        (see :mod:`backends.rediscache`); not on a cluster."""
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"the Redis key prefix may not contain braces, got {prefix!r}; use {ACCEPTED_FORMS}"
            )
        self.prefix = prefix
        self.timeout = timeout
        scheme = urlsplit(url).scheme.lower()
        self.atomic_across_groups = scheme != CLUSTER
        # Every write announces its namespace, so that caching processes drop their copies
        # (a cluster cannot publish inside a transaction: it neither announces nor caches).
        self._channel = f"{prefix}invalidations" if scheme != CLUSTER else None
        if cache and self._channel is None:
            raise ConfigurationError("the cache option needs one Redis server or Sentinel, "
                                     "not a cluster")
        # Names this store's own announcements (with the process id: forked workers of one
        # preloaded app share the store object, not their copies).
        self._writer = secrets.token_hex(8)
        self._cache = (
            NamespaceCache(self._subscriber_connection, self._channel, timeout, self._writer)
            if cache
            else None
        )
        password = url.rpartition("@")[0].partition("://")[2].partition(":")[2]
        self._secrets = [text for text in {password, unquote(password)} if text]
        try:
            self._connect = _CLIENT_FACTORIES.get(scheme, _plain_client)(url, timeout)
        except ConfigurationError as exc:
            raise ConfigurationError(self._hide_password(str(exc))) from None
        self._client: redis.Redis | redis.RedisCluster | None = None
        self._client_lock = threading.Lock()
        self._held = _ThreadState()
        self._where = self._hide_password(url.partition("?")[0])

    @classmethod
    def from_url(cls, url: str, *, timeout: float | str | None = None) -> RedisStore:
        """``timeout``: seconds for connecting and for each reply, unless the URL's ``?timeout=``
        says otherwise (default 2.0)."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in cls.schemes:
            raise ConfigurationError(f"not a Redis URL: {parts.scheme}://...; use {ACCEPTED_FORMS}")
        if parts.scheme.lower() not in ("unix", SENTINEL, CLUSTER):  # several nodes: see _nodes
            if not parts.hostname:
                raise ConfigurationError(f"no host in the Redis URL; use {ACCEPTED_FORMS}")
            if not (parts.path.strip("/") or "0").isdigit():
                raise ConfigurationError(
                    f"the path of a Redis URL is the database number, got {parts.path!r}; "
                    f"use {ACCEPTED_FORMS}"
                )

        options = parse_qsl(parts.query, keep_blank_values=True)
        ours = {name: value for name, value in options if name in ("prefix", "timeout", "cache")}
        theirs = [(name, value) for name, value in options if name not in ours]
        if theirs and parts.scheme.lower() in (SENTINEL, CLUSTER):
            raise ConfigurationError(
                f"{parts.scheme}:// URLs take only the options prefix, timeout and cache, got "
                f"{', '.join(sorted({name for name, _ in theirs}))}; use {ACCEPTED_FORMS}"
            )
        prefix = ours.get("prefix", DEFAULT_PREFIX)
        timeout_text = ours.get("timeout") or timeout or DEFAULT_TIMEOUT
        try:
            seconds = float(timeout_text)
        except ValueError:
            seconds = math.nan
        if not 0 < seconds < math.inf:
            raise ConfigurationError(
                f"the Redis timeout must be a positive number of seconds, got {timeout_text!r} "
                f"(URL option ?timeout= or the storage timeout); use {ACCEPTED_FORMS}"
            )
        cache = ours.get("cache", "off").lower()
        if cache not in ("on", "off"):
            raise ConfigurationError(f"the cache option is on or off, got {cache!r}")
        return cls(
            # not urlunsplit, which writes unix:///path as unix:/path
            url.partition("?")[0] + (f"?{urlencode(theirs)}" if theirs else ""),
            prefix=prefix,
            timeout=seconds,
            cache=cache == "on",
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
        """Turn every redis-py error into :class:`StorageUnavailable`, password removed. Every
        call goes through here, and first reads the answers this thread is owed (see
        :meth:`defer_writes`): calls see the writes before them."""
        try:
            self._read_owed()
            yield
        except (redis.RedisError, RedisClusterException) as exc:
            text = str(exc)
            if type(exc).__name__ == "MasterNotFoundError":  # drop its dump of every sentinel
                text = text.partition(" : ")[0]
            message = self._hide_password(f"Redis at {self._where}: {type(exc).__name__}: {text}")
            raise StorageUnavailable(message) from exc

    @property
    def _redis(self) -> redis.Redis | redis.RedisCluster:
        """The client, made on first use (a cluster client connects as it is made)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    client = self._connect()
                    self._compare_and_set = client.register_script(_COMPARE_AND_SET)
                    self._client = client
        return self._client

    def _send_transaction(self, *commands: tuple[str, ...]) -> Callable[[], list[Any]]:
        """Send ``MULTI``, ``commands``, ``EXEC`` at once on a connection from the pool (which
        checks it first, as for any call); what reads ``EXEC``'s answer and gives the
        connection back. Cheaper than redis-py's pipeline, and the answer may be read later
        (see :meth:`defer_writes`). Any failure closes the connection, so that a late reply is
        never read as another's."""
        pool = self._redis.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(
                connection.pack_commands([("MULTI",), *commands, ("EXEC",)])
            )
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise

        def receive() -> list[Any]:
            try:
                replies = [connection.read_response() for _ in range(len(commands) + 2)]
            except BaseException:
                connection.disconnect()
                raise
            finally:
                pool.release(connection)
            results = replies[-1]
            if results is None:
                raise redis.ResponseError("EXEC was aborted")
            for result in results:  # a command refused as it ran (WRONGTYPE, OOM...)
                if isinstance(result, redis.ResponseError):
                    raise result
            return results

        return receive

    def _subscriber_connection(self) -> redis.Connection:
        """A connection of its own (to the master, under Sentinel) for the subscription."""
        with self._errors():
            return self._redis.connection_pool.make_connection()

    def _write(
        self,
        announced: list[str],
        send: Callable[[], Callable[[], list[Any]]],
        changes: Callable[[list[Any]], dict[str, dict[str, Any]]],
        *,
        deferrable: bool = False,
    ) -> list[Any] | None:
        """``send()`` sends a write that announces ``announced`` atomically with itself, and
        returns what reads its results; ``changes(results)`` tells what the write did,
        namespace -> {key: new value or ``DELETED``}, so that this process's copies follow
        (see :mod:`backends.rediscache`). A ``deferrable`` write made while this thread defers
        writes (:meth:`defer_writes`) returns ``None`` at once; its results are read later."""
        seen = self._cache.seen() if self._cache is not None else 0

        def forgetting_on_failure(step: Callable[[], Any]) -> Any:
            try:
                return step()
            except BaseException:  # the write's outcome is unknown: copies may be stale
                if self._cache is not None:
                    self._cache.drop(announced)
                raise

        receive = forgetting_on_failure(send)

        def finish() -> list[Any]:
            results = forgetting_on_failure(receive)
            if self._cache is not None:
                self._cache.wrote(seen, announced, changes(results))
            return results

        if deferrable and self._held.deferring:
            self._held.owed.append(finish)
            self._held.pid = os.getpid()
            return None
        return finish()

    def defer_writes(self) -> None:
        """From now on, until :meth:`settle`, a ``set`` in this thread is sent but its answer
        is read by the next call on this store or by :meth:`settle`, whichever is first. The
        API defers for the length of a request, so that the response is rendered while Redis
        applies the write, and settles before the response leaves."""
        self._held.deferring = True

    def settle(self) -> None:
        """Stop deferring, and read the answers owed: raises :class:`StorageUnavailable` if a
        deferred write failed or its outcome is unknown."""
        self._held.deferring = False
        with self._errors():
            pass  # which reads them

    def _read_owed(self) -> None:
        """Read the answers owed (at most one: every call reads them before it sends)."""
        owed = self._held.owed
        if owed and self._held.pid != os.getpid():  # a forked child owes nothing
            owed.clear()
        while owed:
            owed.pop(0)()

    def _transaction(
        self, announced: list[str], commands: Callable[[Any], Any]
    ) -> Callable[[], Callable[[], list[Any]]]:
        """A MULTI/EXEC of ``commands`` (added to the pipeline) that ends announcing, as a
        ``send`` for :meth:`_write` (which, a pipeline being run whole, has its answer)."""

        def send() -> Callable[[], list[Any]]:
            pipe = self._redis.pipeline(transaction=True)
            commands(pipe)
            if self._channel is not None:
                for namespace in announced:
                    pipe.publish(self._channel, self._announcement(namespace))
            results = pipe.execute()
            return lambda: results

        return send

    def _announcement(self, namespace: str) -> str:
        return f"{self._writer}.{os.getpid()}|{namespace}"

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

    def get_each(self, requests: Mapping[str, Iterable[str] | None]) -> dict[str, dict[str, Any]]:
        """One pipeline (not a transaction) of ``HGETALL``/``HMGET``: one round trip, or none
        for what the cache holds."""
        requests = {ns: None if keys is None else list(keys) for ns, keys in requests.items()}
        if self._cache is not None:
            with self._errors():
                return self._cache.read(requests, self._fetch_each)
        return self._fetch_each(requests)

    def _fetch_each(self, requests: dict[str, list[str] | None]) -> dict[str, dict[str, Any]]:
        asked = {ns: keys for ns, keys in requests.items() if keys is None or keys}
        replies: list[Any] = []
        if asked:
            with self._errors():
                pipe = self._redis.pipeline(transaction=False)
                for namespace, keys in asked.items():
                    if keys is None:
                        pipe.hgetall(self._key(namespace))
                    else:
                        pipe.hmget(self._key(namespace), keys)
                replies = pipe.execute()
        found: dict[str, dict[str, Any]] = {namespace: {} for namespace in requests}
        for (namespace, keys), reply in zip(asked.items(), replies, strict=True):
            if keys is None:
                found[namespace] = decode_many(reply)
            else:
                found[namespace] = decode_many(
                    {key: raw for key, raw in zip(keys, reply, strict=True) if raw is not None}
                )
        return found

    def set(self, namespace: str, key: str, value: Any) -> None:
        text, hash_key = encode(value), self._key(namespace)
        if self._channel is None:
            send = self._transaction([namespace], lambda pipe: pipe.hset(hash_key, key, text))
        else:  # the hot path of every settings write
            announcement = self._announcement(namespace)

            def send() -> Callable[[], list[Any]]:
                return self._send_transaction(
                    ("HSET", hash_key, key, text), ("PUBLISH", self._channel, announcement)
                )

        with self._errors():
            self._write(
                [namespace], send, lambda _: {namespace: {key: decode(text)}}, deferrable=True
            )

    def set_many(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        encoded = {
            namespace: {key: encode(value) for key, value in values.items()}
            for namespace, values in entries.items()
            if values
        }
        if not encoded:
            return
        batches = [encoded]
        if not self.atomic_across_groups:  # one transaction per hash slot
            slots: dict[int, dict[str, dict[str, str]]] = {}
            for namespace, mapping in encoded.items():
                slot = key_slot(self._key(namespace).encode())
                slots.setdefault(slot, {})[namespace] = mapping
            batches = list(slots.values())
        with self._errors():
            for batch in batches:
                commands = lambda pipe, batch=batch: [
                    pipe.hset(self._key(ns), mapping=mapping) for ns, mapping in batch.items()
                ]
                self._write(
                    list(batch),
                    self._transaction(list(batch), commands),
                    lambda _, batch=batch: {ns: decode_many(m) for ns, m in batch.items()},
                )

    def delete(self, namespace: str, key: str) -> bool:
        with self._errors():
            results = self._write(
                [namespace],
                self._transaction([namespace], lambda pipe: pipe.hdel(self._key(namespace), key)),
                lambda _: {namespace: {key: DELETED}},
            )
        return bool(results[0])

    def compare_and_set(self, namespace: str, key: str, expected: Any | None, value: Any) -> bool:
        hash_key, text = self._key(namespace), encode(value)

        def changes(results: list[Any]) -> dict[str, dict[str, Any]]:
            return {namespace: {key: decode(text)} if results[0] else {}}

        def command(pipe: Any) -> Any:
            if expected is None:
                return pipe.hsetnx(hash_key, key, text)
            return self._compare_and_set(
                keys=[hash_key], args=[key, encode(expected), text], client=pipe
            )

        with self._errors():
            if expected is not None and self._channel is None:  # a cluster: one script call
                args = [key, encode(expected), text]
                return bool(self._compare_and_set(keys=[hash_key], args=args))
            results = self._write([namespace], self._transaction([namespace], command), changes)
        return bool(results[0])

    def incr(self, counter: str, amount: int = 1) -> int:
        with self._errors():
            results = self._write(
                [COUNTERS],
                self._transaction(
                    [COUNTERS], lambda pipe: pipe.hincrby(self._key(COUNTERS), counter, amount)
                ),
                lambda results: {COUNTERS: {counter: int(results[0])}},
            )
        return int(results[0])

    def namespaces(self) -> Iterator[str]:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix) + "*"
        with self._errors():
            keys = set(self._redis.scan_iter(match=pattern, count=1000, _type="hash"))
        return iter([self._namespace(key) for key in keys])

    def ping(self) -> None:
        with self._errors():
            self._redis.ping()

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        self._held = _ThreadState()
        client, self._client = self._client, None
        if client is None:
            return
        with self._errors():
            client.close()
            if isinstance(client, redis.Redis):
                client.connection_pool.disconnect()
                sentinel = getattr(client.connection_pool, "sentinel_manager", None)
                if sentinel is not None:
                    sentinel.close()
