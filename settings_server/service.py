"""The settings service: registry definitions plus stored values, as the API serves them.

Only stored values are kept in the store (wire strings, one namespace per kind and owner);
every other field is derived from the registry. Reads never write (docs/contract.md §14 row 5), except
that a generated default (``INVENTREE_INSTANCE_ID``) is fixed the first time it is read.

Primary keys are stable integers: each key of a kind gets an *ordinal* once, from a store
counter, kept in the store forever. A global setting's pk is its ordinal; a per-user setting's
pk is ``user_id * PK_STRIDE + ordinal``, unique across users and unchanged by restarts or by
registry growth.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from marshmallow import ValidationError
from marshmallow import fields as ma_fields

from backends import KeyValueStore, Replaced, StorageUnavailable

from .fields import WireValue, load_value
from .history import Change, History
from .registry import SettingDefinition, SettingsRegistry
from .rendering import FixedRows, Row, RowTemplate, compact, encode_string, slot
from .validators import Context

PK_STRIDE = 10_000  # room for this many keys per kind; ordinals beyond it are refused
KEPT_DETAILS = 1024  # details kept with the stored values they were made from (see ``get``)
MISSING = object()  # a write body without a ``value``
PINNED = "This setting is fixed by the server configuration."
UNKNOWN = "No such setting."
DUPLICATE = "This setting is given more than once (keys are case-insensitive)."
#: Attempts of a write whose reads another writer changed before it could commit: the second
#: at once, then each after a random pause of up to RETRY_PAUSE seconds doubled each time and
#: capped at RETRY_PAUSE_MAX (writers racing for one key fall out of step; measured with four
#: writers alternating values on one Redis key, about one write in five needs a retry).
WRITE_ATTEMPTS = 30
RETRY_PAUSE = 0.001
RETRY_PAUSE_MAX = 0.016


def _attempts(what: str) -> Iterator[int]:
    """The attempts of an optimistic write, with a growing random pause between them (so that
    writers racing for the same keys fall out of step); 503 when they run out."""
    for attempt in range(WRITE_ATTEMPTS):
        if attempt > 1:
            time.sleep(random.uniform(0, min(RETRY_PAUSE * 2 ** (attempt - 2), RETRY_PAUSE_MAX)))
        yield attempt
    raise StorageUnavailable(f"{what} kept changing while it was written")


class SettingNotFound(LookupError):
    """No such setting for this caller (answered 404 ``Not found.``)."""


class PreconditionFailed(Exception):
    """The caller's ``If-Match`` no longer names the setting's value (answered 412)."""


class Listing(FixedRows):
    """A kind's rows (see :meth:`SettingsService.list`) and their strong ETag."""

    version: str = ""


@dataclass(frozen=True)
class Detail:
    """One served setting with what its detail answer says besides the row: its ETag and
    where its value comes from (``default``, ``stored`` or ``override``)."""

    row: Row
    etag: str
    source: str
    #: For a write's answer: the change index the write was made on (its own history entry,
    #: if any, comes right after), when known without a read; else ``None``.
    made_on: int | None = None


@dataclass(frozen=True, eq=False)  # one instance per kind: compared and hashed by identity
class Kind:
    """Global, user or notification settings: where they are stored and how they are shown."""

    name: str
    typ: str  # the constant ``typ`` field on the wire
    per_user: bool

    def namespace(self, user_id: int | None) -> str:
        return f"user:{user_id}/{self.name}" if self.per_user else self.name


GLOBAL = Kind("global", "inventree", per_user=False)
USER = Kind("user", "user", per_user=True)
NOTIFICATION = Kind("notification", "notification", per_user=True)
KINDS = {kind.name: kind for kind in (GLOBAL, USER, NOTIFICATION)}

ALL_KINDS = frozenset(KINDS)


@dataclass(frozen=True)
class RowField:
    """One field of a served setting: which kinds' rows have it, what it holds, how the
    OpenAPI document describes it. :data:`ROW_FIELDS` is the one list of them, in wire
    order; the pre-rendered rows (:meth:`SettingsService._fields`) and the OpenAPI schemas
    (``api/schemas.py``) are both made from it."""

    name: str
    #: ``(kind, definition, key, static choices)`` -> the field's JSON, or a rendering slot
    content: Callable[[Kind, SettingDefinition, str, list[dict[str, str]]], Any]
    #: a new marshmallow field describing it (each schema gets its own instance)
    schema_field: Callable[[], ma_fields.Field]
    kinds: frozenset[str] = ALL_KINDS


def _read_only(field_class: type[ma_fields.Field], **options: Any) -> Callable[[], ma_fields.Field]:
    return lambda: field_class(dump_only=True, **options)


ROW_FIELDS: tuple[RowField, ...] = (
    RowField("pk", lambda kind, d, key, static: slot("pk"), _read_only(ma_fields.Integer)),
    RowField("key", lambda kind, d, key, static: key, _read_only(ma_fields.String)),
    RowField(
        "value",
        lambda kind, d, key, static: "***" if d.protected else slot("value"),
        lambda: WireValue(
            allow_none=True,
            required=True,
            error_messages={"required": "This field is required."},
            metadata={"description": "Always a string"},
        ),
    ),
    RowField("name", lambda kind, d, key, static: d.name, _read_only(ma_fields.String)),
    RowField(
        "description", lambda kind, d, key, static: d.description, _read_only(ma_fields.String)
    ),
    RowField(
        "user", lambda kind, d, key, static: slot("user"), _read_only(ma_fields.Integer),
        kinds=frozenset({"user"}),
    ),
    RowField(
        "type",
        lambda kind, d, key, static: d.wire_type,
        _read_only(ma_fields.String, metadata={"enum": ["boolean", "integer", "string"]}),
    ),
    RowField(
        "units", lambda kind, d, key, static: d.units, _read_only(ma_fields.String),
        kinds=frozenset({"global", "user"}),
    ),
    RowField(
        "choices",
        lambda kind, d, key, static: slot("choices") if d.choices_from else static,
        _read_only(ma_fields.List, cls_or_instance=ma_fields.Dict()),
    ),
    RowField(
        "model_name", lambda kind, d, key, static: None,
        _read_only(ma_fields.String, allow_none=True),
    ),
    RowField(
        "model_filters", lambda kind, d, key, static: d.model_filters,
        _read_only(ma_fields.Dict, allow_none=True), kinds=frozenset({"notification"}),
    ),
    RowField(
        "api_url", lambda kind, d, key, static: None,
        _read_only(ma_fields.String, allow_none=True),
    ),
    RowField("typ", lambda kind, d, key, static: kind.typ, _read_only(ma_fields.String)),
    RowField(
        "required", lambda kind, d, key, static: d.required, _read_only(ma_fields.Boolean),
        kinds=frozenset({"notification"}),
    ),
    RowField(
        "method", lambda kind, d, key, static: d.method, _read_only(ma_fields.String),
        kinds=frozenset({"notification"}),
    ),
)

_ORPHAN = SettingDefinition(key="")  # stored key no longer in the registry: empty definition


class SettingsService:
    """Read and write settings of every kind for one store and one registry."""

    def __init__(
        self,
        store: KeyValueStore,
        registry: SettingsRegistry,
        currency_codes_override: str | None = None,
        *,
        history: History | None = None,
        etag_secret: Callable[[], str] = lambda: "",
    ) -> None:
        """``history``: where writes are logged (default: kept, 100 per setting);
        ``etag_secret``: what keys the ETags, the same on every server of a store (an ETag
        must not let anyone test guesses of a protected value)."""
        self.store = store
        self.registry = registry
        self.history = history if history is not None else History(store, 100)
        self._etag_secret = etag_secret
        self._etag_key: bytes | None = None
        self._pinned: dict[str, str] = {}
        self._currency_override = currency_codes_override
        self._definitions = {
            GLOBAL: {k: d for k, d in registry.global_settings.items() if not k.startswith("_")},
            USER: {k: d for k, d in registry.user_settings.items() if not k.startswith("_")},
            NOTIFICATION: registry.notification_settings,
        }
        self._static_choices = {
            key: [{"value": c.value, "display_name": c.label} for c in d.choices]
            for defs in self._definitions.values()
            for key, d in defs.items()
        }
        self._templates: dict[Kind, dict[str, RowTemplate]] = {kind: {} for kind in KINDS.values()}
        self._ordinals: dict[Kind, dict[str, int]] = {}
        self._last_list: dict[Kind, tuple[int | None, dict, list[Row]]] = {}
        #: (kind, key, user id) -> the stored values a detail was made from, and the detail
        self._last_details: dict[tuple[Kind, str, int | None], tuple[dict, Detail]] = {}
        self._keys_by_ordinal: dict[Kind, dict[int, str]] = {}
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------

    def definitions(self, kind: Kind) -> Mapping[str, SettingDefinition]:
        return self._definitions[kind]

    def list(self, kind: Kind, user_id: int | None = None) -> Listing:
        """Every served setting of ``kind`` (for ``user_id``), in pk order, in one read."""
        ordinals = self._ordinals_for(kind)
        (namespace,) = self.planned_reads(kind, None, user_id)
        stored = self.store.get_all(namespace)
        last = self._last_list.get(kind)
        if last is not None and last[0] == user_id and last[1] == stored:
            return last[2]  # the same stored values render to the same rows
        definitions = self._definitions[kind]
        rows = Listing(
            self._row(kind, definition, ordinals[key], stored, user_id)
            for key, definition in definitions.items()
        )
        for key in stored.keys() - definitions.keys():
            if key in ordinals and not key.startswith("_"):
                rows.append(self._row(kind, _ORPHAN, ordinals[key], stored, user_id, key=key))
        rows.sort(key=lambda row: row.pk)
        # The ETag of what is served: a tag of the stored values would change when the first
        # read fixes a generated default (INVENTREE_INSTANCE_ID), the rows staying the same.
        rows.version = self._tag(f"{kind.name}\x1f{user_id}\x1f" + "\x1e".join(r.json for r in rows))
        self._last_list[kind] = (user_id, stored, rows)
        return rows

    def get(self, kind: Kind, key: str, user_id: int | None = None) -> Detail:
        """One setting by key (case-insensitive); :class:`SettingNotFound` if not served."""
        definition = self._definition(kind, key)
        stored = self._read(kind, definition, user_id)
        kept = (kind, definition.key, user_id)
        last = self._last_details.get(kept)
        if last is not None and last[0] == stored:
            return last[1]  # the same stored values make the same detail
        detail = self._detail(kind, definition, stored, user_id)
        if definition.default_factory is None:  # a generated default is written when read
            if len(self._last_details) >= KEPT_DETAILS:
                self._last_details.clear()
            self._last_details[kept] = (stored, detail)
        return detail

    def _etag(self, kind: Kind, definition: SettingDefinition, stored: Mapping, user_id) -> str:
        """The strong ETag (unquoted) of a setting: changes exactly when what its detail
        serves does: its value (unmasked, so a protected one counts too) and, for choices
        computed from other settings, those choices."""
        choices = compact(self._choices(kind, definition, stored, user_id)) if definition.choices_from else ""
        value = self._value(kind, definition, stored, user_id)
        return self._tag(f"{kind.name}\x1f{definition.key}\x1f{user_id}\x1f{value}\x1f{choices}")

    def _tag(self, text: str) -> str:
        if self._etag_key is None:
            self._etag_key = hashlib.sha256(self._etag_secret().encode()).digest()
        digest = hashlib.blake2b(text.encode(), key=self._etag_key, digest_size=12)
        return digest.hexdigest()

    def pin(self, values: Mapping[str, Any]) -> None:
        """Fix global settings to ``values`` (``{KEY: value}``, validated as writes are, in
        order): every read serves them, every write to them is refused. Raises
        :class:`ValueError` naming the first bad key or value; pins nothing then."""
        pinned: dict[str, str] = {}
        for key, value in values.items():
            definition = self._definitions[GLOBAL].get(str(key).upper())
            if definition is None:
                raise ValueError(f"{key}: no such global setting")
            try:
                pinned[definition.key] = self.validate(GLOBAL, key, value, pinned)
            except ValidationError as exc:
                messages = "; ".join(m for ms in exc.messages.values() for m in ms)
                raise ValueError(f"{definition.key}: {messages}") from None
        self._pinned = pinned
        self._last_list.clear()
        self._last_details.clear()

    def pinned(self, kind: Kind, key: str) -> bool:
        return kind is GLOBAL and str(key).upper() in self._pinned

    def locate(self, kind: Kind, pk: int) -> tuple[int, str]:
        """``(owner's user id, key)`` of a per-user setting's pk; :class:`SettingNotFound` if
        the pk names no served setting (whether the owner exists is the caller's question)."""
        owner, ordinal = divmod(pk, PK_STRIDE)
        self._ordinals_for(kind)
        key = self._keys_by_ordinal[kind].get(ordinal)
        if owner < 1 or key not in self._definitions[kind]:
            raise SettingNotFound(pk)
        return owner, key

    def planned_reads(
        self, kind: Kind, key: str | None, user_id: int | None = None, *, unchecked: bool = False
    ) -> dict[str, list[str] | None]:
        """What :meth:`list` (``key`` None), :meth:`get` or :meth:`update` of
        ``key`` with a value (``unchecked``: without ``if_match``) will read, as
        ``{namespace: keys or None for all}``, to fetch it ahead in one round trip. Computed
        by the same helpers as those reads."""
        if key is None:
            return {kind.namespace(user_id): None}
        definition = self._definitions[kind].get(str(key).upper())
        if definition is None:
            return {}
        if unchecked and self._stands_alone(definition):
            return {}  # see update: such a write reads nothing
        return self._reads(kind, definition, user_id)

    def values(self, kind: Kind, keys: Iterable[str], user_id: int | None = None) -> dict[str, str]:
        """Current wire values of ``keys`` (defaults where nothing is stored), in one read."""
        definitions = [self._definition(kind, key) for key in keys]
        stored = self.store.get_many(kind.namespace(user_id), [d.key for d in definitions])
        return {d.key: self._value(kind, d, stored, user_id) for d in definitions}

    def stored(self, kind: Kind, user_id: int | None = None) -> dict[str, str]:
        """The wire values stored for ``kind`` (and ``user_id``), by key, without defaults:
        which settings were ever written, for the settings page's "source" of a value."""
        return dict(self.store.get_all(kind.namespace(user_id)))

    # -- writing ---------------------------------------------------------------------------

    def update(
        self,
        kind: Kind,
        key: str,
        value: Any = MISSING,
        user_id: int | None = None,
        *,
        actor: Any | None = None,
        if_match: Callable[[str], bool] | None = None,
        source: str = "api",
    ) -> Detail:
        """Validate and store ``value`` (docs/contract.md §5.3), logging the change by
        ``actor`` as from ``source``; ``MISSING`` re-saves the current value.

        ``if_match`` is asked whether the setting's current ETag is still the caller's; the
        check and the write are one compare-and-set, so of two writers holding one ETag only
        one writes. Raises :class:`SettingNotFound`, :class:`PreconditionFailed` or
        :class:`marshmallow.ValidationError` (whose ``messages`` are the 400 body).
        """
        definition = self._definition(kind, key)
        if self.pinned(kind, key):
            raise ValidationError({"value": [PINNED]})
        # A value that no other setting's value checks, written unconditionally, needs no
        # read: nothing is checked, and the store logs what the write replaces.
        unchecked = if_match is None and value is not MISSING and self._stands_alone(definition)
        for _attempt in _attempts(definition.key):
            stored = {} if unchecked else self._read(kind, definition, user_id)
            if if_match is not None and not if_match(self._etag(kind, definition, stored, user_id)):
                raise PreconditionFailed(key)
            if value is MISSING:
                writes = {}
            else:
                writes = {definition.key: self.validate(kind, key, value, stored, user_id)}
            read = [] if unchecked else self._reads(kind, definition, user_id)[kind.namespace(user_id)]
            restart = definition.requires_restart
            committed = self._commit(kind, writes, stored, read, user_id, actor, source, restart)
            if committed is not None:
                index, logged = committed
                detail = self._detail(kind, definition, {**stored, **writes}, user_id)
                return replace(detail, made_on=index - logged) if index else detail
        raise AssertionError("unreachable: _attempts raises when they run out")

    def update_many(
        self, kind: Kind, values: Mapping[str, Any], user_id: int | None = None, *, actor: Any
    ) -> list[Detail]:
        """Validate every entry of ``values`` (``{key: value}``), then write them all at once
        with their history (source ``bulk``), or nothing. Raises
        :class:`marshmallow.ValidationError` whose ``messages`` name every failing key."""
        errors: dict[str, list[str]] = {}
        definitions: dict[str, SettingDefinition] = {}
        for key in values:
            definition = self._definitions[kind].get(str(key).upper())
            if definition is None:
                errors[key] = [UNKNOWN]
            elif any(d.key == definition.key for d in definitions.values()):
                errors[key] = [DUPLICATE]
            elif self.pinned(kind, key):
                errors[key] = [PINNED]
            else:
                definitions[key] = definition
        reads = {
            k for d in definitions.values() for k in (d.key, *d.related_keys)
        }
        if all(map(self._stands_alone, definitions.values())):
            reads = set()  # nothing to check: the store logs what the writes replace
        for _attempt in _attempts("the settings"):
            stored = self.store.get_many(kind.namespace(user_id), sorted(reads))
            pending, writes = dict(stored), {}
            for key, value in values.items():
                if key not in definitions:
                    continue
                try:
                    text = self.validate(kind, key, value, pending, user_id)
                except ValidationError as exc:
                    errors[key] = [m for ms in exc.messages.values() for m in ms]
                    continue
                pending[definitions[key].key] = writes[definitions[key].key] = text
            if errors:
                raise ValidationError(errors)
            restart = any(d.requires_restart for d in definitions.values())
            if self._commit(kind, writes, stored, reads, user_id, actor, "bulk", restart) is not None:
                return [self._detail(kind, definitions[key], pending, user_id) for key in values]
        raise AssertionError("unreachable: _attempts raises when they run out")

    def _commit(
        self,
        kind: Kind,
        writes: Mapping[str, str],
        stored: Mapping[str, str],
        read: Iterable[str],
        user_id: int | None,
        actor: Any | None,
        source: str,
        restart: bool,
    ) -> tuple[int, int] | None:
        """Write ``writes`` (key -> string) if the keys ``read`` (every key written and every
        key checking them read) still hold what they held (``stored``), with their history;
        ``None`` if one changed, else the store's answer (the change index of the last entry,
        or 0) and the number of entries it was given to log. With nothing ``read``, nothing is checked and the history
        records what the store finds replaced. With ``restart`` (a setting that needs one was
        saved, even unchanged), the server is marked as needing a restart."""
        namespace = kind.namespace(user_id)
        changes = self.changes(kind, writes, stored, user_id, replaced=not read)
        entries: dict[str, dict[str, str]] = {namespace: dict(writes)} if writes else {}
        if restart:
            entries.setdefault(GLOBAL.namespace(None), {})["SERVER_RESTART_REQUIRED"] = "True"
        expect = {namespace: {key: stored.get(key) for key in read}}
        if not entries:
            return 0, 0
        log = self.history.log(changes, actor, source)
        index = self.store.commit(entries, expect=expect, log=log)
        self.history.committed(index, len(log))
        return None if index is None else (index, len(log))

    def changes(
        self,
        kind: Kind,
        writes: Mapping[str, str],
        stored: Mapping[str, str],
        user_id: int | None,
        *,
        replaced: bool = False,
    ) -> list[Change]:
        """What writing ``writes`` (key -> string) over ``stored`` changes, as the history
        records it: values as served (defaults where nothing was stored, ``"***"`` for
        protected settings). With ``replaced``, ``stored`` is not consulted: each ``old`` is a
        :class:`~backends.base.Replaced` for the store to fill in as it writes (which leaves
        the entry out when the value stays)."""
        namespace = kind.namespace(user_id)
        changes = []
        for key, text in writes.items():
            definition = self._definitions[kind][key]
            if replaced:
                shown = "***" if definition.protected else None
                old: Any = Replaced(namespace, key, definition.wire_default, shown)
                changed = True
            else:
                old = self._value(kind, definition, stored, user_id)
                changed = old != text
                if definition.protected:
                    old = "***"
            if definition.protected:
                text = "***"
            changes.append(Change(kind.name, key, user_id, old, text, changed))
        return changes

    def _stands_alone(self, definition: SettingDefinition) -> bool:
        """Whether a write of ``definition`` can be checked without reading the store (no
        other setting's value matters) and its default is fixed (not made on first read)."""
        return not definition.related_keys and definition.default_factory is None

    def validate(
        self, kind: Kind, key: str, value: Any, stored: Mapping[str, str], user_id: int | None = None
    ) -> str:
        """The string :meth:`update` would store for ``value``, given the namespace's other
        stored values (``stored``, for choices and cross-setting checks); writes nothing.

        Raises :class:`SettingNotFound` or :class:`marshmallow.ValidationError` (whose
        ``messages`` are the 400 body).
        """
        definition = self._definition(kind, key)
        context = Context(
            related={
                k: self._value(kind, self._definitions[kind].get(k, _ORPHAN), stored, user_id)
                for k in definition.related_keys
            },
            currencies=self.registry.currencies,
            choices=[c["value"] for c in self._choices(kind, definition, stored, user_id)]
            if definition.choices_from
            else (),
        )
        return load_value(definition.value_field, value, context)

    # -- internals -------------------------------------------------------------------------

    def _definition(self, kind: Kind, key: str) -> SettingDefinition:
        definition = self._definitions[kind].get(str(key).upper())
        if definition is None:
            raise SettingNotFound(key)
        return definition

    def _reads(
        self, kind: Kind, definition: SettingDefinition, user_id: int | None
    ) -> dict[str, list[str]]:
        """What reading ``definition`` (its value and the settings its value depends on) or
        checking a write of it reads: ``{namespace: keys}``."""
        return {kind.namespace(user_id): [definition.key, *definition.related_keys]}

    def _read(self, kind: Kind, definition: SettingDefinition, user_id: int | None) -> dict:
        reads = self._reads(kind, definition, user_id)
        return {k: v for ns, keys in reads.items() for k, v in self.store.get_many(ns, keys).items()}

    def _value(self, kind: Kind, definition: SettingDefinition, stored: Mapping, user_id) -> str:
        if kind is GLOBAL and definition.key in self._pinned:
            return self._pinned[definition.key]
        value = stored.get(definition.key)
        if value is not None:
            return value
        if definition.default_factory == "uuid4":
            return self._generated(kind, definition, user_id)
        return definition.wire_default

    def _generated(self, kind: Kind, definition: SettingDefinition, user_id) -> str:
        namespace = kind.namespace(user_id)
        self.store.compare_and_set(namespace, definition.key, None, str(uuid.uuid4()))
        return self.store.get(namespace, definition.key)  # ours, or a concurrent winner's

    def _choices(self, kind: Kind, definition, stored: Mapping, user_id) -> list[dict[str, str]]:
        if definition.choices_from != "currencies":
            return self._static_choices.get(definition.key, [])
        codes = self._currency_override
        if codes is None:
            codes = self._value(kind, self._definitions[kind]["CURRENCY_CODES"], stored, user_id)
        choices, seen = [], set()
        for part in codes.split(","):
            code = part.strip().upper()
            if code in self.registry.currencies and code not in seen:
                seen.add(code)
                choices.append({"value": code, "display_name": self.registry.currencies[code]})
        return choices

    def _row(self, kind, definition, ordinal, stored, user_id, key=None) -> Row:
        key = key or definition.key
        template = self._templates[kind].get(key)
        if template is None:
            template = RowTemplate(self._fields(kind, definition, key))
            if definition is not _ORPHAN:
                self._templates[kind][key] = template
        pk = user_id * PK_STRIDE + ordinal if kind.per_user else ordinal
        value = stored[key] if definition is _ORPHAN else self._value(kind, definition, stored, user_id)
        slots = {"pk": str(pk), "value": encode_string(value), "user": str(user_id)}
        if definition.choices_from:
            slots["choices"] = compact(self._choices(kind, definition, stored, user_id))
        return Row(pk, key, definition.name, template.render(slots))

    def _detail(self, kind: Kind, definition: SettingDefinition, stored: Mapping, user_id) -> Detail:
        ordinal = self._ordinals_for(kind)[definition.key]
        source = (
            "override" if self.pinned(kind, definition.key)
            else "stored" if definition.key in stored
            else "default"
        )
        return Detail(
            self._row(kind, definition, ordinal, stored, user_id),
            self._etag(kind, definition, stored, user_id),
            source,
        )

    def _fields(self, kind: Kind, definition: SettingDefinition, key: str) -> dict[str, Any]:
        """A served setting's fields in wire order (:data:`ROW_FIELDS`), slots where they
        vary."""
        static = self._static_choices.get(key, [])
        return {
            field.name: field.content(kind, definition, key, static)
            for field in ROW_FIELDS
            if kind.name in field.kinds
        }

    def _ordinals_for(self, kind: Kind) -> dict[str, int]:
        """key -> ordinal, allocating ordinals for keys seen for the first time.

        Ordinals never change once stored, so each process keeps them after the first read.
        Concurrent first allocations are settled by compare-and-set: one value wins.
        """
        known = self._ordinals.get(kind)
        if known is not None:
            return known
        with self._lock:
            namespace = f"pk/{kind.name}"
            known = {k: int(v) for k, v in self.store.get_all(namespace).items()}
            for key in self._definitions[kind]:
                if key in known:
                    continue
                ordinal = self.store.incr(namespace)
                if kind.per_user and ordinal >= PK_STRIDE:
                    raise RuntimeError(f"more than {PK_STRIDE - 1} {kind.name} settings")
                if not self.store.compare_and_set(namespace, key, None, ordinal):
                    ordinal = int(self.store.get(namespace, key))
                known[key] = ordinal
            self._keys_by_ordinal[kind] = {ordinal: key for key, ordinal in known.items()}
            self._ordinals[kind] = known
            return known
