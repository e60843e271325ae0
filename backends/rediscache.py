"""Per-process copies of Redis namespaces, dropped when any process writes them (opt-in).

Every write through :class:`~backends.redis.RedisStore` publishes the namespace it changed on
the store's invalidation channel, inside the same transaction as the write. A process that
caches keeps one subscriber connection of its own and, before every read, takes the messages
that have arrived since the last read and drops those namespaces. Redis writes the message to
every subscriber's connection in the same step as it answers the write (microseconds apart), so
a read that follows an acknowledged write by at least a network round trip (the next request,
through any process) finds the message waiting. This is not a lock: a read in another process
within those microseconds can still see the old value.

A copy is only trusted while the subscription is: when the connection breaks or was made anew
(messages may have been missed) every copy is dropped and reads go to Redis until the
subscription is back; after :data:`HEARTBEAT` seconds without a message the next read first
pings the channel and waits for the answer. A silent network failure can therefore leave a
process reading copies for up to :data:`HEARTBEAT` seconds; that bound is the price of
answering reads from memory, and why the cache is off unless asked for.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from .copies import Copies, Fetch

HEARTBEAT = 1.0  # seconds of silence after which the subscriber pings
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
        """``writer`` names this process's own announcements, which it skips: its copies
        already follow its own writes (:meth:`wrote`)."""
        self._writer = writer
        # Bumped by every message taken and every write this process makes: copies are kept
        # or updated only if nothing happened between a read (or write) and its result.
        self._generation = 0
        self._make_connection = make_connection
        self.channel = channel
        self._timeout = timeout
        self._copies = Copies()
        self._connection: redis.Connection | None = None
        self._pid: int | None = None
        self._heard = 0.0  # monotonic time of the last message or pong
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
            self._connection, self._pid = None, os.getpid()
            self._copies.clear()
        try:
            if self._connection is None:
                self._subscribe()
                return False  # copies made before this subscription may have missed messages
            connection = self._connection
            while connection.can_read(timeout=0):
                self._generation += 1
                self._apply(connection.read_response(push_request=True, timeout=self._timeout))
            if time.monotonic() - self._heard > HEARTBEAT:
                self._confirm()
            return True
        except (redis.RedisError, OSError):
            self._disconnect()
            return False

    def _confirm(self) -> None:
        """After a silence: a ping, and every message up to its answer, within the timeout."""
        connection = self._connection
        connection.send_command("PING")
        self._generation += 1
        deadline = time.monotonic() + self._timeout
        while not self._apply(
            connection.read_response(
                push_request=True, timeout=max(0.001, deadline - time.monotonic())
            )
        ):
            if time.monotonic() > deadline:
                raise redis.TimeoutError("the invalidation channel did not answer a ping")

    def _apply(self, message: Any) -> bool:
        """Drop what an invalidation names; whether ``message`` answered a ping."""
        self._heard = time.monotonic()
        if isinstance(message, list) and message:
            kind = str(message[0]).lower()
            if kind == "message":
                writer, _, namespace = str(message[2]).partition("|")
                if writer != self._writer:
                    self._copies.drop([namespace])
            return kind == "pong"
        return str(message).lower() == "pong"

    def _subscribe(self) -> None:
        self._copies.clear()
        self._generation += 1
        connection = self._make_connection()
        connection.connect()
        connection.send_command("SUBSCRIBE", self.channel)
        reply = connection.read_response(push_request=True, timeout=self._timeout)
        if not reply or str(reply[0]).lower() != "subscribe":
            connection.disconnect()
            raise redis.ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}")
        self._connection, self._heard = connection, time.monotonic()

    def _disconnect(self) -> None:
        self._copies.clear()
        if self._connection is not None:
            try:
                self._connection.disconnect()
            except (redis.RedisError, OSError):
                pass
            self._connection = None
