"""The change feed's waiting room: one watcher per worker process wakes every waiting client.

A client of ``/api/settings/changes/`` or ``/api/settings/events/`` that has seen every change
up to some index waits here for a newer one (:meth:`ChangeFeed.wait`). Waiting costs no store
connection and no thread: one background thread per process (a greenlet under the gevent
worker, where ``threading`` is cooperative) keeps the store's :class:`~backends.ChangeWatch`,
learns the newest change index from it, and sets an event that every waiter of the process
holds. The store decides how it is told (Redis: one subscription; SQLite: the file's change
counter; memory: a condition); nothing here knows which store is in use.

After a wake the waiters read what changed. Those that ask the same question at the same
index (the same caller and filters, after the same index: typically every waiter of one user)
ask the store once (:meth:`ChangeFeed.answer`), and only :data:`READERS` of a process read at
once, so that a change seen by hundreds of waiters does not open hundreds of store
connections.

:func:`end_all_waits` (called by the gevent worker on SIGTERM) wakes every waiter of the
process for good: long-polls answer at once and event streams end, so that the worker exits
well within the graceful timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from backends import KeyValueStore, StorageError

LOGGER = logging.getLogger("settings_server.feed")
RECHECK = 2.0  # seconds: the longest a watch waits before it reads the counter anyway
RETRY_FIRST = 0.1  # seconds before a failed watch is tried again, doubled each time
RETRY_MAX = 5.0
READERS = 8  # waiters of one process that read their changes at once
CLIENT_CHECK = 1.0  # seconds between two looks at whether a waiting client is still there
KEPT_ANSWERS = 1024  # questions answered at one index that are kept for the next to ask

_FEEDS: weakref.WeakSet[ChangeFeed] = weakref.WeakSet()
T = TypeVar("T")


class _Answer:
    """One question's answer, computed by the first waiter that asks it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.failed = False


class ChangeFeed:
    """The newest change index this process knows of, and the wake-up of its waiters."""

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store
        self._latest = 0
        self._waiters: set[threading.Event] = set()  # each set when ``_latest`` moves
        self._ended = False
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._readers: threading.BoundedSemaphore | None = None
        self._answers: tuple[int, dict[Hashable, _Answer]] = (-1, {})
        _FEEDS.add(self)

    @property
    def ended(self) -> bool:
        """Whether the process is shutting down (see :func:`end_all_waits`)."""
        return self._ended

    def wait(self, beyond: int, timeout: float, client: Client | None = None) -> int:
        """Wait until this process has heard of a change index above ``beyond``, at most
        ``timeout`` seconds; stop early when the process shuts down or the ``client`` has hung
        up (as soon as it does under gevent, else looked at every :data:`CLIENT_CHECK`
        seconds). Returns the newest index heard of (which may still be ``beyond`` or less),
        read from the store after the changes it counts were made: a caller may take it as
        read before what it reads next."""
        self._start()
        deadline = time.monotonic() + timeout
        wake = threading.Event()
        self._waiters.add(wake)
        stop_watching = client.notify(wake) if client is not None else None
        try:
            while True:
                wake.clear()  # before ``_latest`` is read: a move after the read sets it
                if self._latest > beyond or self._ended:
                    return self._latest
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (client is not None and client.gone()):
                    return self._latest
                polled = client is not None and stop_watching is None
                wake.wait(min(remaining, CLIENT_CHECK) if polled else remaining)
                if stop_watching is not None and not self._ended and self._latest <= beyond:
                    stop_watching()  # woken by the client: it sent something or hung up
                    stop_watching = None
        finally:
            self._waiters.discard(wake)
            if stop_watching is not None:
                stop_watching()

    def answer(self, index: int, question: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, shared by every waiter of this process that asks ``question`` at
        ``index``: the first computes it (at most :data:`READERS` at once), the others wait
        for its answer. Answers are kept until the index moves; a failure is not kept (each
        waiter of it computes again); at most :data:`KEPT_ANSWERS` of them."""
        with self._lock:
            kept_index, answers = self._answers
            if kept_index != index or len(answers) >= KEPT_ANSWERS:
                answers = {}
                self._answers = (index, answers)
            answer = answers.get(question)
            mine = answer is None or answer.failed
            if mine:
                answer = answers[question] = _Answer()
        if not mine:
            answer.done.wait()
            if not answer.failed:
                return answer.value
            return self.answer(index, question, compute)
        try:
            with self._reading():
                answer.value = compute()
        except BaseException:
            answer.failed = True
            raise
        finally:
            answer.done.set()
        return answer.value

    def _reading(self) -> threading.BoundedSemaphore:
        if self._readers is None:
            self._readers = threading.BoundedSemaphore(READERS)
        return self._readers

    def end(self) -> None:
        """Wake every waiter for good and stop the watcher (the process is shutting down)."""
        self._ended = True
        self._wake_all()

    # -- the watcher ------------------------------------------------------------------------

    def _start(self) -> None:
        """Start this process's watcher on first use (again in a forked child)."""
        if self._pid == os.getpid() or self._ended:
            return
        with self._lock:
            if self._pid != os.getpid():
                self._waiters = set()
                self._readers = None
                self._thread = threading.Thread(
                    target=self._watch, name="settings-change-feed", daemon=True
                )
                self._thread.start()
                self._pid = os.getpid()

    def _watch(self) -> None:
        watch = None
        failures = 0
        while not self._ended:
            try:
                if watch is None:
                    watch = self.store.change_watch()
                self._moved(watch.next_index(self._latest, RECHECK))
                if failures:
                    LOGGER.warning("change feed: the store answers again")
                failures = 0
            except StorageError as exc:
                if not failures:
                    LOGGER.warning("change feed: %s; retrying with back-off", exc)
                failures += 1
                if watch is not None:
                    watch.close()
                    watch = None
                time.sleep(min(RETRY_MAX, RETRY_FIRST * 2 ** (failures - 1)))
            except Exception:  # never let the watcher die: waiters would wait for nothing
                LOGGER.exception("change feed: unexpected error")
                time.sleep(RETRY_MAX)
        if watch is not None:
            watch.close()

    def _moved(self, index: int) -> None:
        if index == self._latest:
            return
        self._latest = index  # before the waiters are woken: see ``wait``
        self._wake_all()

    def _wake_all(self) -> None:
        for wake in list(self._waiters):
            wake.set()


def end_all_waits() -> None:
    """Wake every waiter of every feed of this process for good (worker shutdown)."""
    for feed in list(_FEEDS):
        feed.end()


class Client:
    """The client of a request, as far as a wait needs it: whether it has hung up. Reads
    nothing from the connection: it peeks at the socket gunicorn hands the app (elsewhere,
    in the test client, the client is never gone)."""

    def __init__(self, environ: dict[str, Any]) -> None:
        sock = environ.get("gunicorn.socket")
        self._raw = getattr(sock, "_sock", sock)  # gevent's socket would wait on EAGAIN
        self._cooperative = sock is not None and type(sock).__module__.startswith("gevent")

    def gone(self) -> bool:
        """Whether the client has closed its end of the connection."""
        if self._raw is None:
            return False
        try:
            return self._raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def notify(self, wake: threading.Event) -> Callable[[], None] | None:
        """Under gevent, set ``wake`` as soon as the connection has something to read (the
        client hung up, or sent more); what stops watching. ``None`` elsewhere: then
        :meth:`gone` is looked at now and then."""
        if not self._cooperative:
            return None
        from gevent import get_hub

        # A watcher of the event loop, not a greenlet waiting on it: a greenlet costs a
        # waiting client about 4 KiB more (its object, frames and saved stack).
        watcher = get_hub().loop.io(self._raw.fileno(), 1)  # 1: readable

        def readable() -> None:
            watcher.stop()
            wake.set()

        watcher.start(readable)
        return watcher.close
