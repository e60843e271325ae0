"""SQLite store through sqlitedict: one file, shared safely by every process on one machine.

Promises, on top of :mod:`backends.base`:

* A write has been committed when its call returns, and the next read by any process that opens
  the same file sees it. The file runs in WAL mode with ``synchronous=NORMAL``: a committed
  write survives the crash of any process; after a power loss or OS crash the last moments of
  writes may be rolled back, but the file stays consistent.
* Every call is one SQL statement, so each is atomic on its own; :meth:`SQLiteStore.set_many`
  writes all its entries in that one statement.
* Writers in other processes are waited for (SQLite's busy timeout, then a short retry), so a
  caller never sees "database is locked" unless the file stays locked for over half a minute.
* Namespace names must not contain ``"\\x1f"``, the separator of the row keys.

The file is opened on first use, not by :meth:`SQLiteStore.from_url`; a missing directory or an
unopenable file is then raised as :class:`StorageUnavailable`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from queue import Empty, Queue
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlitedict import SqliteDict

from .base import (
    CHANGES,
    COUNTERS,
    ChangeWatch,
    ConfigurationError,
    KeyValueStore,
    ReadsThroughGetEach,
    StorageUnavailable,
    decode,
    decode_many,
    encode,
    encode_log,
)
from .copies import Copies

SEPARATOR = "\x1f"
TABLE = "entries"
BUSY_TIMEOUT_MS = 30_000
LOCKED_RETRIES = 5
LOCKED_RETRY_PAUSE = 0.05  # seconds, doubled on each retry
THREAD_CHECK_INTERVAL = 1.0  # seconds between checks that sqlitedict's thread is alive
WATCH_INTERVAL = 0.1  # seconds between two looks at the file's change counter (change_watch)
ACCEPTED_FORMS = "sqlite:///relative/path.db or sqlite:////absolute/path.db"

_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _row_key(namespace: str, key: str) -> str:
    if SEPARATOR in namespace:
        raise ValueError(f"namespace {namespace!r} contains the reserved character \\x1f")
    return namespace + SEPARATOR + key


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


class SQLiteStore(ReadsThroughGetEach, KeyValueStore):
    """All namespaces in one table of one SQLite file; row key ``namespace + "\\x1f" + key``.

    Thread-safe: one lock serialises the calls of a store, each of which waits for its statement
    to finish on sqlitedict's connection thread, so errors reach the caller that caused them.
    """

    schemes = ("sqlite",)

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dict: SqliteDict | None = None
        self._opened_by_pid: int | None = None
        self._closed = False
        self._copies = Copies()  # see get_each
        self._copies_version: int | None = None
        self._copies_lock = threading.Lock()
        self._version_connection: sqlite3.Connection | None = None
        self._version_pid: int | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout: float | str | None = None) -> SQLiteStore:
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqlite" or not url.lower().startswith("sqlite://"):
            raise ConfigurationError(f"not an SQLite URL: {url!r}; use {ACCEPTED_FORMS}")
        if parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(
                f"an SQLite URL takes a path only (no host or options), got {url!r}; "
                f"use {ACCEPTED_FORMS}"
            )
        path = unquote(parts.path[1:])  # "/relative.db" -> "relative.db", "//abs" -> "/abs"
        if not path or path.endswith("/"):
            raise ConfigurationError(f"no database file in {url!r}; use {ACCEPTED_FORMS}")
        return cls(os.path.abspath(path))

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _open(self) -> SqliteDict:
        """The open sqlitedict, opened on first use (again in a forked child: threads do not
        survive a fork)."""
        if self._closed:
            raise StorageUnavailable(f"{self!r} is closed")
        if self._dict is None or self._opened_by_pid != os.getpid():
            self._prepare_file()
            db = SqliteDict(
                self.path,
                tablename=TABLE,
                autocommit=True,
                journal_mode="WAL",
                encode=encode,
                decode=decode,
                outer_stack=False,
            )
            try:
                # sqlitedict sets synchronous=OFF; NORMAL keeps commits safe from process crashes.
                self._run(db, "PRAGMA synchronous=NORMAL")
                self._run(db, f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            except BaseException:
                db.close(force=True)
                raise
            self._dict, self._opened_by_pid = db, os.getpid()
        return self._dict

    def _prepare_file(self) -> None:
        """Open the file once with plain sqlite3 and switch it to WAL before sqlitedict opens it.

        sqlitedict opens the file in its own thread, which dies with a traceback on stderr when
        the file cannot be opened; here the error reaches the caller. The busy timeout also
        covers several processes creating the same file at once.
        """
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise StorageUnavailable(f"SQLite database {self.path}: {directory} does not exist")
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement to completion and return its rows.

        Blocking and under the store's lock: the statement (autocommitted) is done and any error
        is raised here, never on a later call. Busy/locked errors are retried briefly; every
        driver error becomes :class:`StorageUnavailable`.
        """
        pause = LOCKED_RETRY_PAUSE
        attempt = 0
        with self._lock:
            while True:
                try:
                    return self._run(self._open(), sql, params)
                except sqlite3.Error as exc:
                    attempt += 1
                    if not _is_busy(exc) or attempt > LOCKED_RETRIES:
                        raise StorageUnavailable(f"SQLite database {self.path}: {exc}") from exc
                except RuntimeError as exc:  # sqlitedict's own checks
                    raise StorageUnavailable(f"SQLite database {self.path}: {exc}") from exc
                time.sleep(pause)
                pause *= 2

    def _run(self, db: SqliteDict, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """``db.conn.select`` that also notices when the connection thread has died.

        sqlitedict's thread dies, without answering, if stepping through a statement's rows
        fails (for example a ``RETURNING`` statement whose commit hits a full disk); a plain
        ``select`` would then wait forever. The dict is dropped so the next call reopens.
        """
        replies: Queue[Any] = Queue()
        db.conn.execute(sql, params, replies)
        rows = []
        while True:
            try:
                reply = replies.get(timeout=THREAD_CHECK_INTERVAL)
            except Empty:
                if db.conn.is_alive():
                    continue
                self._dict = None
                raise StorageUnavailable(
                    f"SQLite database {self.path}: connection thread stopped"
                ) from None
            db.conn.check_raise_error()
            if not isinstance(reply, tuple):  # sqlitedict's end-of-results marker
                return rows
            rows.append(reply)

    # -- the interface --------------------------------------------------------------------

    def get_each(self, requests: Mapping[str, Iterable[str] | None]) -> dict[str, dict[str, Any]]:
        """From this process's copies while the file is unchanged, else one statement."""
        requests = {ns: None if keys is None else list(keys) for ns, keys in requests.items()}
        with self._copies_lock:
            version = self._data_version()
            if version != self._copies_version:
                self._copies.clear()
                self._copies_version = version
            held = self._copies.held(requests)
        missing = {ns: keys for ns, keys in requests.items() if ns not in held}
        if not missing:
            return held
        found = self._fetch_each(missing)
        with self._copies_lock:
            if self._copies_version == version:  # else newer data was dropped meanwhile
                self._copies.keep(missing, found)
        return {**held, **found}

    def _data_version(self) -> int:
        """SQLite's change counter, read on a connection of this process's own: it changes
        whenever any other connection, in any process, has committed (our writes included,
        since they go through sqlitedict's connection). Copies are trusted only while it holds."""
        try:
            if self._version_connection is None or self._version_pid != os.getpid():
                with self._lock:
                    self._open()  # the file exists, in WAL mode
                self._version_connection = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
                )
                self._version_pid = os.getpid()
            return self._version_connection.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            self._version_connection = None
            raise StorageUnavailable(f"SQLite database {self.path}: {exc}") from exc

    def _fetch_each(self, requests: dict[str, list[str] | None]) -> dict[str, dict[str, Any]]:
        """One statement: the listed row keys, plus one key range per whole namespace."""
        row_keys = [_row_key(ns, key) for ns, keys in requests.items() for key in keys or ()]
        selects = [f"SELECT key, value FROM {TABLE} WHERE key IN (SELECT value FROM json_each(?))"]
        params: list[Any] = [json.dumps(row_keys)]
        for namespace, keys in requests.items():
            if keys is None:
                selects.append(f"SELECT key, value FROM {TABLE} WHERE key >= ? AND key < ?")
                params += [_row_key(namespace, ""), namespace + chr(ord(SEPARATOR) + 1)]
        raw: dict[str, dict[str, str]] = {namespace: {} for namespace in requests}
        for row_key, value in self._query(" UNION ALL ".join(selects), tuple(params)):
            namespace, _, key = row_key.partition(SEPARATOR)
            raw[namespace][key] = value
        return {namespace: decode_many(values) for namespace, values in raw.items()}

    def set(self, namespace: str, key: str, value: Any) -> None:
        self._query(
            f"INSERT INTO {TABLE} (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (_row_key(namespace, key), encode(value)),
        )

    def set_many(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """One statement over a JSON object of row keys -> encoded values: all or nothing, and
        no limit on the number of entries."""
        rows = {
            _row_key(namespace, key): encode(value)
            for namespace, values in entries.items()
            for key, value in values.items()
        }
        if not rows:
            return
        # "WHERE true" resolves SQLite's parsing ambiguity between a SELECT's ON and an upsert.
        self._query(
            f"INSERT INTO {TABLE} (key, value) SELECT key, value FROM json_each(?) WHERE true "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (json.dumps(rows, ensure_ascii=False),),
        )

    def commit(self, writes, *, expect=None, log=()) -> int | None:
        """One statement, as :meth:`set_many`: the expectations are a condition of its
        ``SELECT``, the log's entries are filled from the rows as it reads them and numbered
        from the change counter, and the counter is one of the rows it writes. SQLite runs one
        writer at a time, so no other write comes between the check and the write; a failure
        anywhere (a trigger's abort, a full disk) undoes all of it."""
        encoded = {ns: {k: encode(v) for k, v in values.items()} for ns, values in writes.items()}
        rows = {
            _row_key(namespace, key): text
            for namespace, values in encoded.items()
            for key, text in values.items()
        }
        wanted = {
            _row_key(namespace, key): None if value is None else encode(value)
            for namespace, values in (expect or {}).items()
            for key, value in values.items()
        }
        logged = []
        for item in encode_log(log, encoded):
            entry = [_row_key(item.namespace, ""), item.text]
            if item.watch is not None:
                watch = _row_key(*item.watch)
                entry += [watch, rows[watch], item.absent, item.shown, item.after]
            logged.append(entry)
        counter = _row_key(COUNTERS, CHANGES)
        result = self._query(
            "WITH expected(key, value) AS (SELECT key, value FROM json_each(?1)),"
            " holds(ok) AS (SELECT NOT EXISTS (SELECT 1 FROM expected LEFT JOIN"
            f"  {TABLE} AS t ON t.key = expected.key WHERE t.value IS NOT expected.value)),"
            f" base(n) AS (SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM {TABLE}"
            "  WHERE key = ?3), 0)),"
            # each entry: [namespace prefix, text] or [prefix, text before the replaced value,
            # the row it replaces, the value written there, absent, shown or null, text after]
            " items(i, prefix, text, watch, written, absent, shown, after) AS (SELECT l.key,"
            "  json_extract(l.value, '$[0]'), json_extract(l.value, '$[1]'),"
            "  json_extract(l.value, '$[2]'), json_extract(l.value, '$[3]'),"
            "  json_extract(l.value, '$[4]'), json_extract(l.value, '$[5]'),"
            "  json_extract(l.value, '$[6]') FROM json_each(?4) AS l),"
            " kept(i, prefix, text) AS (SELECT items.i, items.prefix, CASE WHEN items.watch"
            "  IS NULL THEN items.text ELSE items.text || COALESCE(items.shown, t.value,"
            "  items.absent) || items.after END FROM items LEFT JOIN"
            f"  {TABLE} AS t ON t.key = items.watch WHERE items.watch IS NULL"
            "  OR COALESCE(t.value, items.absent) IS NOT items.written),"
            " numbered(n, prefix, text) AS (SELECT row_number() OVER (ORDER BY i), prefix, text"
            "  FROM kept),"
            " written(key, value) AS (SELECT key, value FROM json_each(?2)"
            "  UNION ALL SELECT numbered.prefix || printf('%012d', base.n + numbered.n),"
            "   numbered.text FROM numbered, base"
            "  UNION ALL SELECT ?3, CAST(base.n + (SELECT count(*) FROM numbered) AS TEXT)"
            "   FROM base WHERE EXISTS (SELECT 1 FROM numbered))"
            f" INSERT INTO {TABLE} (key, value) SELECT key, value FROM written, holds"
            " WHERE holds.ok ON CONFLICT(key) DO UPDATE SET value = excluded.value"
            " RETURNING key, value",
            (
                json.dumps(wanted, ensure_ascii=False),
                json.dumps(rows, ensure_ascii=False),
                counter,
                json.dumps(logged, ensure_ascii=False),
            ),
        )
        if not result:
            if not rows and not logged:  # nothing to write: whether the expectations hold
                return 0 if self._expectations_hold(wanted) else None
            return None
        return next((decode(value) for key, value in result if key == counter), 0)

    def _expectations_hold(self, wanted: dict[str, str | None]) -> bool:
        rows = self._query(
            "SELECT NOT EXISTS (SELECT 1 FROM json_each(?) AS e LEFT JOIN"
            f" {TABLE} AS t ON t.key = e.key WHERE t.value IS NOT e.value)",
            (json.dumps(wanted, ensure_ascii=False),),
        )
        return bool(rows[0][0])

    def delete(self, namespace: str, key: str) -> bool:
        rows = self._query(
            f"DELETE FROM {TABLE} WHERE key = ? RETURNING 1", (_row_key(namespace, key),)
        )
        return bool(rows)

    def delete_many(self, namespace: str, keys: Iterable[str]) -> int:
        row_keys = [_row_key(namespace, key) for key in keys]
        if not row_keys:
            return 0
        rows = self._query(
            f"DELETE FROM {TABLE} WHERE key IN (SELECT value FROM json_each(?)) RETURNING 1",
            (json.dumps(row_keys, ensure_ascii=False),),
        )
        return len(rows)

    def compare_and_set(self, namespace: str, key: str, expected: Any | None, value: Any) -> bool:
        row_key = _row_key(namespace, key)
        if expected is None:
            rows = self._query(
                f"INSERT INTO {TABLE} (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO NOTHING RETURNING 1",
                (row_key, encode(value)),
            )
        else:
            rows = self._query(
                f"UPDATE {TABLE} SET value = ? WHERE key = ? AND value = ? RETURNING 1",
                (encode(value), row_key, encode(expected)),
            )
        return bool(rows)

    def incr(self, counter: str, amount: int = 1) -> int:
        rows = self._query(
            f"INSERT INTO {TABLE} (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
            "SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) RETURNING value",
            (_row_key(COUNTERS, counter), encode(amount), amount),
        )
        return decode(rows[0][0])

    def change_watch(self) -> ChangeWatch:
        """Looks at ``PRAGMA data_version`` every :data:`WATCH_INTERVAL` seconds on a
        connection of its own (a few microseconds, no statement through sqlitedict's thread),
        and reads the change counter only when it has moved: when any connection, in any
        process, has committed."""
        return _DataVersionWatch(self)

    def namespaces(self) -> Iterator[str]:
        rows = self._query(
            f"SELECT DISTINCT substr(key, 1, instr(key, char(?)) - 1) FROM {TABLE}",
            (ord(SEPARATOR),),
        )
        return iter([row[0] for row in rows])

    def ping(self) -> None:
        self._query("SELECT 1")

    def close(self) -> None:
        with self._copies_lock:
            self._copies.clear()
            if self._version_connection is not None and self._version_pid == os.getpid():
                self._version_connection.close()
            self._version_connection = None
        with self._lock:
            self._closed = True
            opened, self._dict = self._dict, None
            if opened is None or self._opened_by_pid != os.getpid():
                return
            try:
                opened.close()
            except (sqlite3.Error, RuntimeError) as exc:
                raise StorageUnavailable(f"SQLite database {self.path}: {exc}") from exc


class _DataVersionWatch(ChangeWatch):
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._connection: sqlite3.Connection | None = None
        self._version: int | None = None
        self._index = 0

    def next_index(self, after: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        try:
            while True:
                version = self._look()
                if version != self._version:  # committed since the last look: read the counter
                    self._version = version
                    self._index = self._read_counter()
                remaining = deadline - time.monotonic()
                if self._index > after or remaining <= 0:
                    return self._index
                time.sleep(min(WATCH_INTERVAL, remaining))
        except sqlite3.Error as exc:
            self.close()
            raise StorageUnavailable(f"SQLite database {self._store.path}: {exc}") from exc

    def _look(self) -> int:
        if self._connection is None:
            with self._store._lock:
                self._store._open()  # the file exists, in WAL mode, with its table
            self._connection = sqlite3.connect(
                self._store.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
            self._version = None
        return self._connection.execute("PRAGMA data_version").fetchone()[0]

    def _read_counter(self) -> int:
        row = self._connection.execute(
            f"SELECT value FROM {TABLE} WHERE key = ?", (_row_key(COUNTERS, CHANGES),)
        ).fetchone()
        return 0 if row is None else int(decode(row[0]))

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
