"""The history of changes: one entry per change of a stored setting, kept beside the value.

An entry is written by the same :meth:`~backends.KeyValueStore.commit` as the value it records,
so neither is ever found without the other. Its ``id`` is the store's change index at that
write: store-wide, increasing, never reused. Global entries are kept in ``global/history``,
per-user ones in ``user:{id}/history``, each under :func:`~backends.base.log_key` of its id.

Retention is by setting: readers see the newest ``limit`` entries of each setting (whatever
older ones are still stored), and :meth:`History.trim` now and then deletes the rest, noting
the highest id it dropped so that a reader after an index can tell that something is missing.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from backends import COUNTERS, KeyValueStore, StorageError
from backends.base import CHANGES, log_key

LOGGER = logging.getLogger("settings_server.history")

SOURCES = ("api", "bulk", "import", "restore")
#: An entry's fields, in the order they are served.
FIELDS = ("id", "kind", "key", "user", "old", "new", "actor", "actor_name", "source", "timestamp")
#: The counter that holds the highest id :meth:`History.trim` has deleted.
TRIMMED = "history_trimmed"
#: Views of the history (one per set of namespaces: a user's), and namespaces read, that a
#: process keeps between changes.
KEPT_VIEWS = 256
#: Entries a process keeps rendered.
KEPT_TEXTS = 8192
#: The history is trimmed after every this many of the store's changes (so at most about this
#: many entries beyond the retained ones are stored).
TRIM_EVERY = 1024


class Viewer(Protocol):
    id: int
    is_superuser: bool


def timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``: ``2026-12-02T03:04:05.678Z``."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 moment (``Z`` or an offset; no offset is UTC); ``ValueError`` otherwise."""
    moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def namespace(per_user: bool, user_id: int | None) -> str:
    """Where the entries of a setting (of ``user_id`` when ``per_user``) are kept."""
    return f"user:{user_id}/history" if per_user else "global/history"


@dataclass(frozen=True)
class Change:
    """What one write of a setting does: ``old`` and ``new`` as served (``"***"`` for
    protected settings, so ``changed`` says whether the value did); ``old`` may be a
    :class:`~backends.Replaced` that the store fills in (``changed`` is then true, and the
    store leaves the entry out if it was not)."""

    kind: str
    key: str
    user: int | None
    old: Any
    new: str
    changed: bool


class History:
    """Builds the entries a write logs, and reads them back as a viewer may see them."""

    def __init__(self, store: KeyValueStore, limit: int) -> None:
        """``limit``: entries kept per setting; 0 turns history off (nothing is logged)."""
        self.store = store
        self.limit = limit
        # namespace, and tuple of namespaces -> (change index, what _visible found): every
        # entry is written with the index it takes, so while the index stands the retained
        # entries do too (a trim only deletes entries readers no longer see). Not on stores
        # whose indexes are taken before their entries are written (atomic_across_groups
        # false: Redis Cluster). Only retained entries are held, each once (the global ones
        # are in every user's view).
        self._seen: dict[str | tuple[str, ...], tuple[int, tuple[list, int]]] = {}
        self._seen_lock = threading.Lock()
        self._texts: dict[int, str] = {}  # id -> JSON text: an entry never changes

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    # -- writing ---------------------------------------------------------------------------

    def log(
        self, changes: Iterable[Change], actor: Any | None, source: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """The ``log`` argument of a :meth:`~backends.KeyValueStore.commit` recording
        ``changes`` by ``actor`` (a user, or ``None`` for the command line): empty when
        history is off; a change whose value stays the same logs nothing."""
        if not self.enabled:
            return []
        when = timestamp()
        return [
            (
                namespace(change.user is not None, change.user),
                {
                    "kind": change.kind,
                    "key": change.key,
                    "user": change.user,
                    "old": change.old,
                    "new": change.new,
                    "actor": None if actor is None else actor.id,
                    "actor_name": None if actor is None else actor.username,
                    "source": source,
                    "timestamp": when,
                },
            )
            for change in changes
            if change.changed
        ]

    def committed(self, index: int | None, logged: int) -> None:
        """Called after each commit with its result and the number of entries it was given
        to log: trims whenever the change index passes a multiple of :data:`TRIM_EVERY`
        (a commit of many entries, or whose entries the store left out, may jump one), and
        never fails the write that triggered it."""
        if not index or (index - logged) // TRIM_EVERY == index // TRIM_EVERY:
            return
        try:
            self.trim()
        except StorageError:
            LOGGER.warning("trimming the history failed; the next trim will try again", exc_info=True)

    def trim(self) -> int:
        """Delete every stored entry beyond the newest ``limit`` of its setting; returns how
        many. Safe to run anywhere at any time: it deletes only what readers no longer see."""
        dropped = 0
        highest = 0
        for name in self._all_namespaces():
            _kept, gone = _retained([self.store.get_all(name)], self.limit)
            if gone:
                dropped += self.store.delete_many(name, [log_key(entry_id) for entry_id in gone])
                highest = max(highest, *gone)
        if highest:
            while True:
                current = self.store.get(COUNTERS, TRIMMED)
                if current is not None and current >= highest:
                    break
                if self.store.compare_and_set(COUNTERS, TRIMMED, current, highest):
                    break
        return dropped

    # -- reading ---------------------------------------------------------------------------

    def index(self) -> int:
        """The store's newest change index (0 before the first change)."""
        return self.store.get(COUNTERS, CHANGES) or 0

    def entries(
        self,
        viewer: Viewer,
        *,
        kind: str | None = None,
        key: str | None = None,
        since: datetime | None = None,
        user: int | None = None,
    ) -> list[dict[str, Any]]:
        """What ``viewer`` may see, newest first: global entries and their own per-user ones,
        or with ``user`` (superusers; others only their own id) that user's per-user ones."""
        kept, _gone = self._visible(viewer, user)
        found = kept[::-1]
        if kind is not None or key is not None:
            found = [entry for entry in found if _matches(entry, kind, key)]
        if since is not None:
            after = timestamp(since)
            found = [entry for entry in found if entry["timestamp"] > after]
        return found

    def after(
        self, index: int, viewer: Viewer, *, kind: str | None = None, key: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """The visible entries with an id above ``index``, oldest first, and whether they are
        complete: ``False`` when retention has dropped an entry above ``index``."""
        kept, highest_gone = self._visible(viewer, None)
        trimmed = self.store.get(COUNTERS, TRIMMED) or 0
        complete = trimmed <= index and highest_gone <= index
        return [e for e in kept if e["id"] > index and _matches(e, kind, key)], complete

    def get(self, entry_id: int, viewer: Viewer) -> dict[str, Any] | None:
        """One entry by id, if ``viewer`` may see it and it is retained."""
        for name in self._namespaces(viewer, None):
            found = self.store.get(name, log_key(entry_id))
            if found is not None:
                entry = {"id": entry_id, **found}
                kept, _gone = self._visible(viewer, None)
                return entry if any(e["id"] == entry_id for e in kept) else None
        return None

    def text(self, entry: Mapping[str, Any]) -> str:
        """An entry as compact JSON in served order (see :func:`served`), rendered once."""
        text = self._texts.get(entry["id"])
        if text is None:
            if len(self._texts) >= KEPT_TEXTS:
                self._texts.clear()
            text = self._texts[entry["id"]] = json.dumps(
                served(entry), separators=(",", ":"), ensure_ascii=False
            )
        return text

    def everything(self, *, kind: str | None = None, key: str | None = None) -> list[dict[str, Any]]:
        """Every retained entry of every user, newest first (for the command line)."""
        found = self.store.get_each({name: None for name in self._all_namespaces()})
        kept, _gone = _retained(found.values(), self.limit)
        return [entry for entry in reversed(kept) if _matches(entry, kind, key)]

    def _all_namespaces(self) -> list[str]:
        return sorted(
            name for name in self.store.namespaces()
            if name == "global/history" or (name.startswith("user:") and name.endswith("/history"))
        )

    def _namespaces(self, viewer: Viewer, user: int | None) -> list[str]:
        if user is not None:
            return [namespace(True, user)]
        return [namespace(False, None), namespace(True, viewer.id)]

    def _visible(self, viewer: Viewer, user: int | None) -> tuple[list[dict[str, Any]], int]:
        """The retained entries of the viewer's namespaces, oldest first, and the highest id
        retention hides from readers (0: none)."""
        names = tuple(self._namespaces(viewer, user))
        keep = self.store.atomic_across_groups
        index = self.index() if keep else None
        with self._seen_lock:
            seen = self._seen.get(names)
            if seen is not None and seen[0] == index:
                return seen[1]
            held = {name: self._seen.get(name) for name in names}
        parts = {name: part[1] for name, part in held.items() if part and part[0] == index}
        missing = [name for name in names if name not in parts]
        found = self.store.get_each({name: None for name in missing}) if missing else {}
        for name in missing:  # a setting's entries are all in one namespace: retained apart
            kept, gone = _retained([found.pop(name)], self.limit)
            parts[name] = (kept, max(gone, default=0))
        if len(parts) == 1:
            (visible,) = parts.values()
        else:
            visible = (
                list(heapq.merge(*(kept for kept, _ in parts.values()), key=_id)),
                max(highest for _, highest in parts.values()),
            )
        if keep:
            with self._seen_lock:
                if len(self._seen) + len(missing) >= 2 * KEPT_VIEWS:
                    self._seen.clear()
                self._seen.update({name: (index, parts[name]) for name in missing})
                self._seen[names] = (index, visible)
        return visible


def served(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry with its fields in the order they are served (:data:`FIELDS`); entries are
    handed around in any order, and put in this one only when they are rendered."""
    return {name: entry.get(name) for name in FIELDS}


def _retained(
    namespaces: Iterable[Mapping[str, Any]], limit: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """The entries of history namespaces as read (kept without their ids, which are their
    keys) split into the newest ``limit`` of each setting, with their ids, and the ids of the
    rest; both oldest first. Only the retained entries are copied: a history that has not
    been trimmed for a while holds many more."""
    stored = sorted(
        ((int(key), entry) for found in namespaces for key, entry in found.items() if key.isdigit()),
        key=_first,
    )
    counts: dict[tuple[Any, ...], int] = {}
    kept, gone = [], []
    for entry_id, entry in reversed(stored):
        setting = (entry["kind"], entry["user"], entry["key"])
        counts[setting] = counts.get(setting, 0) + 1
        if counts[setting] <= limit:
            kept.append({"id": entry_id, **entry})
        else:
            gone.append(entry_id)
    kept.reverse()
    gone.reverse()
    return kept, gone


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _id(entry: Mapping[str, Any]) -> int:
    return entry["id"]


def _matches(entry: Mapping[str, Any], kind: str | None, key: str | None) -> bool:
    return (kind is None or entry["kind"] == kind) and (
        key is None or entry["key"] == key.upper()
    )
