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
:meth:`RedisStore.from_url`, else 2.0). Other query options go to redis-py unchanged. URLs
are read, and clients made, by :mod:`backends.redisurl`.

Beyond one server, with the same options (and no others):

* ``redis+sentinel://[[user]:password@]host:port[,host:port]/service[/db]``: the master of
  ``service`` as the sentinels report it (redis-py ``Sentinel.master_for``); after a failover the
  next call finds the new master. The credentials are the master's; sentinels are asked without.
* ``redis+cluster://[[user]:password@]host:port[,host:port]``: a Redis Cluster (redis-py
  ``RedisCluster``), the nodes given being where discovery starts; a store of its own,
  :class:`RedisClusterStore`. A cluster transaction cannot span hash slots, so its
  ``set_many`` runs one ``MULTI``/``EXEC`` per group (hash slot): all-or-nothing within each
  group, group after group across groups
  (:attr:`~backends.base.KeyValueStore.atomic_across_groups` is ``False``).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import hiredis
import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from .base import (
    CHANGES,
    COUNTERS,
    ChangeWatch,
    ConfigurationError,
    KeyValueStore,
    LogItem,
    PollingChangeWatch,
    ReadsThroughGetEach,
    StorageUnavailable,
    decode,
    decode_many,
    encode,
    encode_log,
    log_key,
)
from .rediscache import DELETED, NamespaceCache, Subscription
from .redisurl import ACCEPTED_FORMS, CLUSTER, SCHEMES, RedisTarget, connector, parse_url

# KEYS[1]: hash, ARGV: field, expected encoding, new encoding.
_COMPARE_AND_SET = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    return 1
end
return 0
"""

# KEYS[1]: the counters hash, then the hashes written. ARGV: the counter's field, the first
# change index to use (0: take them from the counter), then three lists, each its length
# first: expectations (key number, field, encoding or "" for absent), writes (key number,
# field, encoding), log entries (key number, text; then for an entry with a Replaced field:
# the key number and field of the write it names, the encoding written there, of absent, of
# shown or "", and the text after the field; else five ""); then the channel to announce on
# ("" for none) and the announcements. Returns false when an expectation fails (nothing
# written), else the change index of the last entry (0 for none) followed by each entry's
# text, or false for one left out. Entries are filled before anything is written, so that
# they see what the writes replace.
_COMMIT = """
local i = 3
local n = tonumber(ARGV[i])
for _ = 1, n do
    if (redis.call('HGET', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]) or '') ~= ARGV[i + 3] then
        return false
    end
    i = i + 3
end
local writes = i + 1
i = writes + 1 + 3 * tonumber(ARGV[writes])
n = tonumber(ARGV[i])
local entries = {}
local result = {0}
for _ = 1, n do
    local text = ARGV[i + 2]
    if ARGV[i + 3] ~= '' then
        local was = redis.call('HGET', KEYS[tonumber(ARGV[i + 3])], ARGV[i + 4]) or ARGV[i + 6]
        if was == ARGV[i + 5] then
            text = false
        elseif ARGV[i + 7] ~= '' then
            text = text .. ARGV[i + 7] .. ARGV[i + 8]
        else
            text = text .. was .. ARGV[i + 8]
        end
    end
    if text then
        entries[#entries + 1] = {KEYS[tonumber(ARGV[i + 1])], text}
    end
    result[#result + 1] = text
    i = i + 8
end
for j = writes + 1, writes + 3 * tonumber(ARGV[writes]), 3 do
    redis.call('HSET', KEYS[tonumber(ARGV[j])], ARGV[j + 1], ARGV[j + 2])
end
local index = tonumber(ARGV[2]) - 1
if #entries > 0 and index < 0 then
    index = redis.call('HINCRBY', KEYS[1], ARGV[1], #entries) - #entries
end
for _, entry in ipairs(entries) do
    index = index + 1
    redis.call('HSET', entry[1], string.format('%012d', index), entry[2])
    result[1] = index
end
if ARGV[i + 1] ~= '' then
    for j = i + 2, #ARGV do
        redis.call('PUBLISH', ARGV[i + 1], ARGV[j])
    end
end
return result
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


class RedisStore(ReadsThroughGetEach, KeyValueStore):
    """One Redis hash per namespace, all keys under one prefix; thread-safe (a connection pool)."""

    schemes = SCHEMES

    def __init__(self, target: RedisTarget) -> None:
        """Nothing connects until the first call. With ``target.cache``, keep per-process
        copies of what is read (see :mod:`backends.rediscache`)."""
        self.target = target
        self.prefix = target.prefix
        self.timeout = target.timeout
        # Every write announces its namespace, so that caching processes drop their copies.
        self._channel = f"{target.prefix}invalidations"
        # Names this store's own announcements (with the process id: forked workers of one
        # preloaded app share the store object, not their copies).
        self._writer = secrets.token_hex(8)
        self._cache = (
            NamespaceCache(self._subscriber_connection, self._channel, self.timeout, self._writer)
            if target.cache
            else None
        )
        self._connect = connector(target)
        self._client: redis.Redis | redis.RedisCluster | None = None
        self._client_lock = threading.Lock()
        self._held = _ThreadState()

    @classmethod
    def from_url(cls, url: str, *, timeout: float | str | None = None) -> RedisStore:
        """``timeout``: seconds for connecting and for each reply, unless the URL's ``?timeout=``
        says otherwise (default 2.0); see :func:`backends.redisurl.parse_url`."""
        target = parse_url(url, timeout=timeout)
        if target.scheme not in cls.schemes:
            raise ConfigurationError(f"not a {cls.__name__} URL: {url!r}; use {ACCEPTED_FORMS}")
        return cls(target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target.where!r}, prefix={self.prefix!r})"

    # -- plumbing -------------------------------------------------------------------------

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
            where = self.target.where
            message = self.target.hide_password(f"Redis at {where}: {type(exc).__name__}: {text}")
            raise StorageUnavailable(message) from exc

    @property
    def _redis(self) -> redis.Redis | redis.RedisCluster:
        """The client, made on first use (a cluster client connects as it is made)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    client = self._connect()
                    self._compare_and_set = client.register_script(_COMPARE_AND_SET)
                    self._commit = client.register_script(_COMMIT)
                    self._client = client
        return self._client

    def _send_transaction(self, *commands: tuple[str, ...]) -> Callable[[], list[Any]]:
        """Send ``MULTI``, ``commands``, ``EXEC`` at once on a connection from the pool (which
        checks it first, as for any call); what reads ``EXEC``'s answer and gives the
        connection back. Cheaper than redis-py's pipeline, and the answer may be read later
        (see :meth:`defer_writes`). Any failure closes the connection, so that a late reply is
        never read as another's."""
        return self._send([("MULTI",), *commands, ("EXEC",)], transaction=True)

    def _send(
        self, commands: list[tuple[Any, ...]], *, transaction: bool = False
    ) -> Callable[[], list[Any]]:
        """Send ``commands`` at once, as :meth:`_send_transaction`; what reads their answers
        (a transaction's: ``EXEC``'s, the commands' own results)."""
        pool = self._redis.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands(commands))
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise

        def receive() -> list[Any]:
            try:
                replies = [connection.read_response() for _ in commands]
            except BaseException:
                connection.disconnect()
                raise
            finally:
                pool.release(connection)
            if not transaction:
                return replies
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
            self._announce(pipe, announced)
            results = pipe.execute()
            return lambda: results

        return send

    def _announce(self, pipe: Any, namespaces: list[str]) -> None:
        """Add the announcement of ``namespaces`` to a transaction."""
        pipe.publish(self._channel, self._announcement(*namespaces))

    def _announcement(self, *namespaces: str) -> str:
        """One message naming every namespace a write changed: ``writer.pid|ns|ns...``
        (namespaces never contain ``|``)."""
        return "|".join((f"{self._writer}.{os.getpid()}", *namespaces))

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
        """The hot path of every settings write: ``MULTI``/``HSET``/``PUBLISH``/``EXEC`` sent
        at once (see :meth:`_send_transaction`)."""
        text, hash_key = encode(value), self._key(namespace)
        announcement = self._announcement(namespace)

        def send() -> Callable[[], list[Any]]:
            return self._send_transaction(
                ("HSET", hash_key, key, text), ("PUBLISH", self._channel, announcement)
            )

        self._set(namespace, key, text, send)

    def _set(
        self, namespace: str, key: str, text: str, send: Callable[[], Callable[[], list[Any]]]
    ) -> None:
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
        with self._errors():
            for batch in self._transactions(encoded):
                commands = lambda pipe, batch=batch: [
                    pipe.hset(self._key(ns), mapping=mapping) for ns, mapping in batch.items()
                ]
                self._write(
                    list(batch),
                    self._transaction(list(batch), commands),
                    lambda _, batch=batch: {ns: decode_many(m) for ns, m in batch.items()},
                )

    def _transactions(
        self, encoded: dict[str, dict[str, str]]
    ) -> list[dict[str, dict[str, str]]]:
        """How a :meth:`set_many` is cut into transactions: one here."""
        return [encoded]

    def commit(self, writes, *, expect=None, log=()) -> int | None:
        """One Lua script, which also announces what it wrote: one round trip."""
        encoded = {ns: {k: encode(v) for k, v in values.items()} for ns, values in writes.items()}
        wanted = {
            ns: {k: "" if v is None else encode(v) for k, v in values.items()}
            for ns, values in (expect or {}).items()
        }
        items = encode_log(log, encoded)
        with self._errors():
            last = 0
            for step in self._commit_steps(encoded, wanted, items):
                index = self._commit_step(*step)
                if index is None:
                    return None
                last = max(last, index)
            return last

    def _commit_steps(
        self,
        encoded: dict[str, dict[str, str]],
        wanted: dict[str, dict[str, str]],
        items: list[LogItem],
    ) -> list[tuple[dict, dict, list, int]]:
        """How a :meth:`commit` is cut into scripts, each ``(writes, expect, log, first
        index)``, the first index 0 for "from the counter": one script here."""
        return [(encoded, wanted, items, 0)]

    def _commit_step(
        self,
        encoded: dict[str, dict[str, str]],
        wanted: dict[str, dict[str, str]],
        items: list[LogItem],
        first: int,
    ) -> int | None:
        namespaces = list(dict.fromkeys([*wanted, *encoded, *(item.namespace for item in items)]))
        number = {namespace: str(n) for n, namespace in enumerate(namespaces, start=2)}
        args: list[str] = [CHANGES, str(first), str(sum(map(len, wanted.values())))]
        for namespace, values in wanted.items():
            for key, text in values.items():
                args += [number[namespace], key, text]
        args.append(str(sum(map(len, encoded.values()))))
        for namespace, values in encoded.items():
            for key, text in values.items():
                args += [number[namespace], key, text]
        args.append(str(len(items)))
        for item in items:
            args += [number[item.namespace], item.text]
            if item.watch is None:
                args += ["", "", "", "", "", ""]
            else:
                namespace, key = item.watch
                written = encoded[namespace][key]
                args += [number[namespace], key, written, item.absent, item.shown or "", item.after]
        # With its first index given, the script leaves the counter alone (and a cluster
        # script may name keys of one slot only).
        keys = [self._key(namespaces[0] if first else COUNTERS), *map(self._key, namespaces)]
        logged = {item.namespace for item in items}
        announced = [ns for ns in namespaces if ns in encoded or ns in logged]
        if items and not first:
            announced.append(COUNTERS)
        args += self._announcements(announced)

        def changes(results: list[Any]) -> dict[str, dict[str, Any]]:
            if results[0] is None:
                return {}
            made = {namespace: decode_many(values) for namespace, values in encoded.items()}
            last, *texts = results[0]
            kept = [(item.namespace, text) for item, text in zip(items, texts) if text is not None]
            index = last - len(kept)
            for namespace, text in kept:
                index += 1
                made.setdefault(namespace, {})[log_key(index)] = decode(text)
            if kept and not first:
                made[COUNTERS] = {CHANGES: last}
            return made

        def send() -> Callable[[], list[Any]]:
            results = [self._run_commit(keys, args)]
            return lambda: results

        results = self._write(announced, send, changes)
        if results[0] is None:
            if self._cache is not None:  # a copy may be what failed the check: read afresh
                self._cache.drop(list(wanted))
            return None
        return int(results[0][0])

    def _run_commit(self, keys: list[str], args: list[str]) -> Any:
        """The commit script's answer. EVALSHA is sent raw (redis-py's call of a script costs
        more than the round trip on a local Redis); a server that lost its scripts is given
        it again."""
        script = self._redis and self._commit  # the client registers the scripts
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return self._send([command])()[0]
        except redis.exceptions.NoScriptError:
            self._redis.script_load(_COMMIT)
            return self._send([command])()[0]

    def _announcements(self, namespaces: list[str]) -> list[str]:
        """The channel and message a script publishes to announce ``namespaces``."""
        return [self._channel, self._announcement(*namespaces)]

    def delete(self, namespace: str, key: str) -> bool:
        with self._errors():
            results = self._write(
                [namespace],
                self._transaction([namespace], lambda pipe: pipe.hdel(self._key(namespace), key)),
                lambda _: {namespace: {key: DELETED}},
            )
        return bool(results[0])

    def delete_many(self, namespace: str, keys: Iterable[str]) -> int:
        keys = list(keys)
        if not keys:
            return 0
        with self._errors():
            results = self._write(
                [namespace],
                self._transaction([namespace], lambda pipe: pipe.hdel(self._key(namespace), *keys)),
                lambda _: {namespace: dict.fromkeys(keys, DELETED)},
            )
        return int(results[0])

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

    def change_watch(self) -> ChangeWatch:
        """A subscription to the invalidation channel (a connection of its own): every write
        that moves the change counter announces :data:`~backends.base.COUNTERS` in the same
        transaction, and the counter is read (from Redis, never from the cache) when one
        arrives, or when ``timeout`` passes. After :data:`WATCH_SILENCE` seconds without a
        message the subscription is pinged; one that does not answer within the store's
        timeout is dropped and made again."""
        return _SubscriptionWatch(self)

    def _read_change_counter(self) -> int:
        with self._errors():
            return int(self._redis.hget(self._key(COUNTERS), CHANGES) or 0)

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
            self._close_client(client)

    def _close_client(self, client: Any) -> None:
        client.close()
        client.connection_pool.disconnect()
        sentinel = getattr(client.connection_pool, "sentinel_manager", None)
        if sentinel is not None:
            sentinel.close()


WATCH_SILENCE = 5.0  # seconds without a message after which a change watch pings


def _announces(message: Any, namespace: str) -> bool:
    """Whether a message of the invalidation channel (``writer.pid|namespace|...``) announces
    a write of ``namespace``."""
    if not isinstance(message, list) or str(message[0]).lower() != "message":
        return False
    return namespace in str(message[2]).split("|")[1:]


class _SubscriptionWatch(ChangeWatch):
    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._subscription: Subscription | None = None
        self._heard = 0.0  # monotonic time of the last message or pong
        self._pinged: float | None = None  # when the unanswered ping was sent

    def next_index(self, after: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        if self._subscription is None:
            connection = self._store._subscriber_connection()
            with self._store._errors():
                self._subscription = Subscription(
                    connection, self._store._channel, self._store.timeout
                )
            self._heard, self._pinged = time.monotonic(), None
        try:
            while True:
                index = self._store._read_change_counter()  # after subscribing: none missed
                if index > after or time.monotonic() >= deadline:
                    return index
                with self._store._errors():
                    try:
                        self._listen(deadline)
                    except (OSError, hiredis.ProtocolError) as exc:
                        raise redis.ConnectionError(f"invalidation channel: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _listen(self, deadline: float) -> None:
        """Return when the counter's namespace is announced, or at ``deadline``."""
        while True:
            now = time.monotonic()
            if self._pinged is None and now - self._heard > WATCH_SILENCE:
                self._subscription.ping()
                self._pinged = now
            if self._pinged is not None and now - self._pinged > self._store.timeout:
                raise redis.TimeoutError("the invalidation channel did not answer a ping")
            wait_until = min(deadline, (self._pinged or now) + self._store.timeout)
            messages = self._subscription.messages(wait_until)
            if messages:
                self._heard, self._pinged = time.monotonic(), None
            if any(_announces(message, COUNTERS) for message in messages):
                return
            if time.monotonic() >= deadline:
                return

    def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()


class RedisClusterStore(RedisStore):
    """Redis Cluster: as :class:`RedisStore`, but a cluster transaction cannot span hash
    slots, and a cluster cannot publish inside a transaction. So :meth:`set_many` runs one
    transaction per slot (all-or-nothing per group, group after group:
    :attr:`atomic_across_groups` is ``False``), writes announce nothing, and there is no
    cache."""

    schemes = (CLUSTER,)
    atomic_across_groups = False

    def set(self, namespace: str, key: str, value: Any) -> None:
        text, hash_key = encode(value), self._key(namespace)
        send = self._transaction([namespace], lambda pipe: pipe.hset(hash_key, key, text))
        self._set(namespace, key, text, send)

    def compare_and_set(self, namespace: str, key: str, expected: Any | None, value: Any) -> bool:
        if expected is None:
            return super().compare_and_set(namespace, key, expected, value)
        with self._errors():  # one script call, no transaction around it
            args = [key, encode(expected), encode(value)]
            return bool(self._compare_and_set(keys=[self._key(namespace)], args=args))

    def _announce(self, pipe: Any, namespaces: list[str]) -> None:
        pass

    def change_watch(self) -> ChangeWatch:
        """Writes announce nothing here: the counter is polled (see
        :class:`~backends.base.PollingChangeWatch`)."""
        return PollingChangeWatch(self)

    def _announcements(self, namespaces: list[str]) -> list[str]:
        return [""]

    def _run_commit(self, keys: list[str], args: list[str]) -> Any:
        """Through redis-py, which finds the node of the keys' slot."""
        return (self._redis and self._commit)(keys=keys, args=args)

    def _commit_steps(self, encoded, wanted, items):
        """One script per slot, the expectations' slot first (they must name one group), each
        with the indexes of its own entries taken from the counter beforehand (an entry left
        out leaves its index unused). An entry with a ``Replaced`` field must be in the group
        of the write it names."""
        slot = lambda namespace: key_slot(self._key(namespace).encode())
        steps: dict[int, tuple[dict, dict, list]] = {}
        if len({slot(namespace) for namespace in wanted}) > 1:
            raise ValueError("a cluster commit's expectations must name one group")
        for namespace in wanted:
            steps.setdefault(slot(namespace), ({}, {}, []))[1][namespace] = wanted[namespace]
        for namespace, values in encoded.items():
            steps.setdefault(slot(namespace), ({}, {}, []))[0][namespace] = values
        for item in items:
            if item.watch is not None and slot(item.watch[0]) != slot(item.namespace):
                raise ValueError("a cluster commit's entry must be in the group it replaces in")
            steps.setdefault(slot(item.namespace), ({}, {}, []))[2].append(item)
        first = self.incr(CHANGES, len(items)) - len(items) + 1 if items else 0
        cut = []
        for writes, expected, entries in steps.values():
            cut.append((writes, expected, entries, first if entries else 0))
            first += len(entries)
        return cut

    def _transactions(
        self, encoded: dict[str, dict[str, str]]
    ) -> list[dict[str, dict[str, str]]]:
        slots: dict[int, dict[str, dict[str, str]]] = {}
        for namespace, mapping in encoded.items():
            slots.setdefault(key_slot(self._key(namespace).encode()), {})[namespace] = mapping
        return list(slots.values())

    def _close_client(self, client: Any) -> None:
        client.close()
