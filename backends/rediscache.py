"""Per-process copies of Redis namespaces, dropped when any process writes them (opt-in).

Every write through :class:`~backends.redis.RedisStore` publishes the namespaces it changed on
the store's invalidation channel (one message, ``writer.pid|namespace|namespace...``), inside the same transaction as the write. A process that
caches keeps one subscriber connection of its own and, before every read, takes the messages
that have arrived since the last read and drops those namespaces. Redis writes the message to
every subscriber's connection in the same step as it answers the write (microseconds apart), so
a read that follows an acknowledged write by at least a network round trip (the next request,
through any process) finds the message waiting. This is not a lock: a read in another process
within those microseconds can still see the old value.

A copy is only trusted while the subscription is: when the connection breaks or was made anew
(messages may have been missed) every copy is dropped and reads go to Redis until the
subscription is back (a subscription that cannot be made is tried again after a back-off,
:data:`RETRY_FIRST` seconds doubling up to :data:`RETRY_MAX`, and logged once until it works);
after :data:`HEARTBEAT` seconds without a message the next read first
pings the channel and waits for the answer. A silent network failure can therefore leave a
process reading copies for up to :data:`HEARTBEAT` seconds; that bound is the price of
answering reads from memory, and why the cache is off unless asked for.
"""

from __future__ import annotations

import logging
import math
import os
import select
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import hiredis
import redis

from .copies import Copies, Fetch

HEARTBEAT = 1.0  # seconds of silence after which the subscriber pings
RETRY_FIRST = 0.1  # seconds before a failed subscription is tried again, doubled each time
RETRY_MAX = 5.0
LOGGER = logging.getLogger("backends.rediscache")
DELETED = object()  # in a write's changes: the key was removed


class NamespaceCache:
    """The copies and the subscription that keeps them honest; thread-safe."""

    def __init__(
        self,
        make_connection: Callable[[], redis.Connection],
        channel: str,
        timeout: float,
        writer: str,
    ) -> None:
        """``writer``, with ``.`` and the process id, names this process's own announcements,
        which it skips: its copies already follow its own writes (:meth:`wrote`)."""
        self._writer = writer
        # Bumped by every message taken and every write this process makes: copies are kept
        # or updated only if nothing happened between a read (or write) and its result.
        self._generation = 0
        self._make_connection = make_connection
        self.channel = channel
        self._timeout = timeout
        self._copies = Copies()
        self._subscription: Subscription | None = None
        self._pid: int | None = None
        self._heard = 0.0  # monotonic time of the last message or pong
        self._failures = 0  # subscription failures in a row
        self._retry_at = 0.0  # monotonic time before which no new subscription is tried
        self._lock = threading.Lock()

    def read(self, requests: dict[str, list[str] | None], fetch: Fetch) -> dict[str, dict[str, Any]]:
        """``requests`` as for ``get_each``: held copies where trusted, the rest from ``fetch``
        (one call), which are then kept."""
        with self._lock:
            trusted = self._catch_up()
            held = self._copies.held(requests) if trusted else {}
            generation = self._generation
        missing = {ns: keys for ns, keys in requests.items() if ns not in held}
        if not missing:
            return held
        found = fetch(missing)
        with self._lock:
            if trusted and generation == self._generation:  # else it may be stale already
                self._copies.keep(missing, found)
        return {**held, **found}

    def drop(self, namespaces: Iterable[str]) -> None:
        """Forget copies (after a write whose outcome is unknown)."""
        with self._lock:
            self._generation += 1
            self._copies.drop(namespaces)

    def seen(self) -> int:
        """A mark to pass to :meth:`wrote`, taken before a write is sent."""
        with self._lock:
            return self._generation

    def wrote(self, seen: int, namespaces: list[str], changes: dict[str, dict[str, Any]]) -> None:
        """Make the copies follow this process's own write of ``changes``. Only if nothing
        happened since ``seen``: a message taken meanwhile may be about a later write by
        someone else, which the update would then hide; the copies are dropped instead."""
        with self._lock:
            unchanged = self._generation == seen
            self._generation += 1
            if not unchanged:
                self._copies.drop(namespaces)
                return
            for namespace, values in changes.items():
                keys = list(values)
                found = {k: v for k, v in values.items() if v is not DELETED}
                self._copies.update(namespace, keys, found)

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    # -- the subscription ----------------------------------------------------------------

    def _catch_up(self) -> bool:
        """Apply the messages waiting on the subscription; whether copies can be trusted."""
        if self._pid != os.getpid():  # new process (fork): nothing inherited is trusted
            self._subscription, self._pid = None, os.getpid()
            self._copies.clear()
        if self._subscription is None and time.monotonic() < self._retry_at:
            return False  # backing off: reads go to Redis meanwhile
        try:
            if self._subscription is None:
                self._subscription = Subscription(
                    self._make_connection(), self.channel, self._timeout
                )
                if self._failures:
                    LOGGER.warning("invalidation channel %s subscribed again", self.channel)
                    self._failures = 0
                self._copies.clear()
                self._generation += 1
                self._heard = time.monotonic()
                return False  # copies made before this subscription may have missed messages
            for message in self._subscription.messages():
                self._apply(message)
            if self._subscription.backlog or time.monotonic() - self._heard > HEARTBEAT:
                self._confirm()
            return True
        except (redis.RedisError, OSError, hiredis.ProtocolError) as exc:
            self._disconnect()
            self._failed(exc)
            return False

    def _failed(self, exc: BaseException) -> None:
        """Back off before the next subscription; log the first failure of a series only."""
        if not self._failures:
            LOGGER.warning(
                "invalidation channel %s failed (%s: %s); reading from Redis, retrying with "
                "back-off", self.channel, type(exc).__name__, exc,
            )
        self._failures += 1
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay

    def _confirm(self) -> None:
        """After a silence: a ping, and every message up to its answer, within the timeout."""
        self._subscription.ping()
        deadline = time.monotonic() + self._timeout
        answered = False
        while not answered:
            for message in self._subscription.messages(deadline):
                answered |= self._apply(message)  # every message, the pong's followers too
            if not answered and time.monotonic() > deadline:
                raise redis.TimeoutError("the invalidation channel did not answer a ping")

    def _apply(self, message: Any) -> bool:
        """Drop what an invalidation names; whether ``message`` answered a ping."""
        self._generation += 1
        self._heard = time.monotonic()
        if isinstance(message, list) and message:
            kind = str(message[0]).lower()
            if kind == "message":
                writer, *namespaces = str(message[2]).split("|")
                if writer != f"{self._writer}.{self._pid}":
                    self._copies.drop(namespaces)
            return kind == "pong"
        return str(message).lower() == "pong"

    def _disconnect(self) -> None:
        self._copies.clear()
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None


class Subscription:
    """A subscribed connection read without blocking (the cache's, and each change watch's:
    :meth:`~backends.redis.RedisStore.change_watch`): taking what has arrived is one ``recv``
    (redis-py's ``can_read``/``read_response`` take several system calls per message)."""

    BUFFER = 65536

    def __init__(self, connection: redis.Connection, channel: str, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self.backlog = False
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        connection.connect()  # redis-py's handshake: TLS, credentials, database
        try:
            # redis-py offers no public handle on the socket. Kept because every cached read
            # catches up first: with nothing waiting (local Redis, best of 5 x 20,000 calls)
            # one recv here costs 4.1 us, redis-py's PubSub.get_message(timeout=0) 17.6 us,
            # Connection.can_read(0) 7.3 us.
            self._socket = connection._sock
            # A short read drains a TCP or Unix socket; TLS hands out one record at a time.
            self._short_read_drains = not isinstance(self._socket, ssl.SSLSocket)
            self._send(connection.pack_command("SUBSCRIBE", channel))
            # Whatever follows the reply needs no applying: the caller holds no copies yet.
            replies = self.messages(time.monotonic() + timeout)
            if not replies or not isinstance(replies[0], list) or replies[0][0] != "subscribe":
                raise redis.ConnectionError(f"unexpected reply to SUBSCRIBE: {replies!r}")
        except BaseException:
            connection.disconnect()
            raise

    def ping(self) -> None:
        self._send([b"*1\r\n$4\r\nPING\r\n"])

    def messages(self, deadline: float | None = None) -> list[Any]:
        """What has arrived, without blocking; with a ``deadline`` (monotonic), if nothing
        has, what arrives until then (possibly nothing). Sets :attr:`backlog` when this took
        a buffer's worth or more: Redis may hold more for us that the socket could not take,
        which only a ping (answered after them) can tell."""
        self.backlog = False
        found = self._parsed()
        if not found:
            self.backlog = self._receive() >= self.BUFFER
            found = self._parsed()
        if not found and deadline is not None and self._readable(deadline - time.monotonic()):
            self.backlog = self._receive() >= self.BUFFER
            found = self._parsed()
        return found

    def close(self) -> None:
        try:
            self._connection.disconnect()
        except (redis.RedisError, OSError):
            pass

    def _send(self, chunks: list[bytes]) -> None:
        self._socket.settimeout(self._timeout)
        self._socket.sendall(b"".join(chunks))
        self._socket.settimeout(0)

    def _receive(self) -> int:
        """Take what the socket holds; how many bytes."""
        received = 0
        while True:
            try:
                data = self._socket.recv(self.BUFFER)
            except (BlockingIOError, ssl.SSLWantReadError):
                return received
            if not data:
                raise redis.ConnectionError("Redis closed the invalidation channel")
            self._reader.feed(data)
            received += len(data)
            if self._short_read_drains and len(data) < self.BUFFER:
                return received

    def _readable(self, seconds: float) -> bool:
        if isinstance(self._socket, ssl.SSLSocket) and self._socket.pending():
            return True
        poller = select.poll()
        poller.register(self._socket, select.POLLIN)
        return bool(poller.poll(max(1, math.ceil(seconds * 1000))))

    def _parsed(self) -> list[Any]:
        found = []
        while (message := self._reader.gets()) is not False:
            found.append(message)
        return found
