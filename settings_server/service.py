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

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import fields as ma_fields

from backends import KeyValueStore

from .fields import WireValue, load_value
from .registry import SettingDefinition, SettingsRegistry
from .rendering import Row, RowTemplate, compact, encode_string, slot
from .validators import Context

PK_STRIDE = 10_000  # room for this many keys per kind; ordinals beyond it are refused
MISSING = object()  # a write body without a ``value``


class SettingNotFound(LookupError):
    """No such setting for this caller (answered 404 ``Not found.``)."""


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
    ) -> None:
        self.store = store
        self.registry = registry
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
        self._keys_by_ordinal: dict[Kind, dict[int, str]] = {}
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------

    def definitions(self, kind: Kind) -> Mapping[str, SettingDefinition]:
        return self._definitions[kind]

    def list(self, kind: Kind, user_id: int | None = None) -> list[Row]:
        """Every served setting of ``kind`` (for ``user_id``), in pk order, in one read."""
        ordinals = self._ordinals_for(kind)
        (namespace,) = self.planned_reads(kind, None, user_id)
        stored = self.store.get_all(namespace)
        last = self._last_list.get(kind)
        if last is not None and last[0] == user_id and last[1] == stored:
            return last[2]  # the same stored values render to the same rows
        definitions = self._definitions[kind]
        rows = [
            self._row(kind, definition, ordinals[key], stored, user_id)
            for key, definition in definitions.items()
        ]
        for key in stored.keys() - definitions.keys():
            if key in ordinals and not key.startswith("_"):
                rows.append(self._row(kind, _ORPHAN, ordinals[key], stored, user_id, key=key))
        rows.sort(key=lambda row: row.pk)
        self._last_list[kind] = (user_id, stored, rows)
        return rows

    def get(self, kind: Kind, key: str, user_id: int | None = None) -> Row:
        """One setting by key (case-insensitive); :class:`SettingNotFound` if not served."""
        definition = self._definition(kind, key)
        ordinal = self._ordinals_for(kind)[definition.key]
        stored = self._read(kind, definition, user_id)
        return self._row(kind, definition, ordinal, stored, user_id)

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
        self, kind: Kind, key: str | None, user_id: int | None = None, writing: bool = False
    ) -> dict[str, list[str] | None]:
        """What :meth:`list` (``key`` None), :meth:`get` or (``writing``) :meth:`update` of
        ``key`` with a value will read, as ``{namespace: keys or None for all}``, to fetch it
        ahead in one round trip. Computed by the same helpers as those reads."""
        if key is None:
            return {kind.namespace(user_id): None}
        definition = self._definitions[kind].get(str(key).upper())
        if definition is None:
            return {}
        return self._reads(kind, definition, user_id, writing)

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
        self, kind: Kind, key: str, value: Any = MISSING, user_id: int | None = None
    ) -> Row:
        """Validate and store ``value`` (docs/contract.md §5.3); ``MISSING`` re-saves the current value.

        Raises :class:`SettingNotFound` or :class:`marshmallow.ValidationError` (whose
        ``messages`` are the 400 body).
        """
        definition = self._definition(kind, key)
        ordinal = self._ordinals_for(kind)[definition.key]
        # With a value, only what checking it needs (nothing, if it depends on nothing stored).
        stored = self._read(kind, definition, user_id, writing=value is not MISSING)
        if value is not MISSING:
            stored = {**stored, definition.key: self.validate(kind, key, value, stored, user_id)}
            self.store.set(kind.namespace(user_id), definition.key, stored[definition.key])
        if definition.requires_restart:
            self.store.set(GLOBAL.namespace(None), "SERVER_RESTART_REQUIRED", "True")
        return self._row(kind, definition, ordinal, stored, user_id)

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
        self, kind: Kind, definition: SettingDefinition, user_id: int | None, writing: bool
    ) -> dict[str, list[str]]:
        """What reading ``definition`` (its value and the settings its value depends on) or
        checking a write of it (``writing``: only the latter) reads: ``{namespace: keys}``."""
        keys = [*definition.related_keys] if writing else [definition.key, *definition.related_keys]
        return {kind.namespace(user_id): keys} if keys else {}

    def _read(
        self, kind: Kind, definition: SettingDefinition, user_id: int | None, writing: bool = False
    ) -> dict:
        reads = self._reads(kind, definition, user_id, writing)
        return {k: v for ns, keys in reads.items() for k, v in self.store.get_many(ns, keys).items()}

    def _value(self, kind: Kind, definition: SettingDefinition, stored: Mapping, user_id) -> str:
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
        value = stored.get(key)
        if value is None:
            value = self._value(kind, definition, stored, user_id)
        slots = {"pk": str(pk), "value": encode_string(value), "user": str(user_id)}
        if definition.choices_from:
            slots["choices"] = compact(self._choices(kind, definition, stored, user_id))
        return Row(pk, key, definition.name, template.render(slots))

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
