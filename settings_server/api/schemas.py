"""The settings endpoints' schemas, named as in InvenTree's schema.

The setting schemas (``GlobalSettings``, ``PatchedGlobalSettings``, ...) are made from
:data:`~settings_server.service.ROW_FIELDS`, the one list of a served setting's fields: they
load write bodies (only ``value`` is writable; other fields are ignored) and describe the
pre-rendered responses. :class:`ListQuery` loads a list's search and ordering arguments.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from flask_smorest import Api
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load

from ..fields import TRUTHY
from ..registry import SettingsRegistry
from ..rendering import Row
from ..service import KINDS, ROW_FIELDS

NAMES = {"global": "GlobalSettings", "user": "UserSettings", "notification": "NotificationUserSetting"}


class _SettingSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # fields other than ``value`` are ignored, not checked


def _setting_schema(kind: str, name: str) -> type[Schema]:
    """The schema of a setting of ``kind``, its fields in wire order."""
    return _SettingSchema.from_dict(
        {field.name: field.schema_field() for field in ROW_FIELDS if kind in field.kinds},
        name=name,
    )


#: kind name -> (the setting, as a PUT body loads and a response is described; as a PATCH body
#: loads, ``value`` optional)
SETTING_SCHEMAS: dict[str, tuple[Schema, Schema]] = {
    kind: (_setting_schema(kind, name)(), _setting_schema(kind, f"Patched{name}")(partial=True))
    for kind, name in NAMES.items()
}
assert set(SETTING_SCHEMAS) == set(KINDS)


# -- list arguments ------------------------------------------------------------------------

ORDERING_FIELDS = ("pk", "key", "name")
MAX_SEARCH_PATTERN = 256


class Flag(fields.Boolean):
    """InvenTree's lenient flag: one of :data:`~settings_server.fields.TRUTHY` (any case) is
    true, anything else false, never an error."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(truthy=TRUTHY, load_default=False, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        return str(value).lower() in self.truthy


class Ordering(fields.String):
    """Comma-separated ``pk``, ``key``, ``name`` (``-`` for descending); other names are
    ignored, as DRF's ``OrderingFilter`` does."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple:
        names = (name.strip() for name in super()._deserialize(value, attr, data, **kwargs).split(","))
        return tuple(name for name in names if name.lstrip("-") in ORDERING_FIELDS)


class RowSelection:
    """What a list's arguments select: rows whose key matches every search term, in order."""

    def __init__(self, terms: Sequence[str], patterns: Sequence[Any] | None,
                 ordering: Sequence[str], nothing: bool = False) -> None:
        self.terms = [term.upper() for term in terms]
        self.patterns = patterns
        self.ordering = ordering
        self.nothing = nothing

    def __call__(self, rows: list[Row]) -> list[Row]:
        if self.nothing:
            return []  # InvenTree searches for a literal "\y...\y", which no key contains
        if self.patterns is not None:
            rows = [r for r in rows if all(p.search(r.key) for p in self.patterns)]
        elif self.terms:
            rows = [r for r in rows if all(term in r.key.upper() for term in self.terms)]
        for name in reversed(self.ordering):  # stable sorts, least significant first
            field = name.lstrip("-")
            rows = sorted(rows, key=lambda row: getattr(row, field), reverse=name.startswith("-"))
        return rows


class ListQuery(Schema):
    """A list's search and ordering (``limit``/``offset``: :class:`~.drf.LimitOffset`).

    Loads a :class:`RowSelection`. Regular expressions run on RE2 (see
    :func:`compile_search`); a pattern it refuses is 400 naming ``search``.
    """

    class Meta:
        unknown = EXCLUDE

    search = fields.String(load_default="", metadata={
        "description": "Terms (split on spaces and commas) that must all occur in the key."
    })
    search_regex = Flag(metadata={"description": "Truthy: each search term is a regular expression."})
    search_whole = Flag(metadata={"description": "Truthy: whole words only (with search_regex)."})
    ordering = Ordering(load_default=(), metadata={
        "doc_default": "",
        "description": "Comma-separated pk, key, name; prefix - for descending."
    })

    @post_load
    def selection(self, data: dict[str, Any], **_: Any) -> RowSelection:
        terms = [term for term in re.split(r"[\s,]+", data["search"]) if term]
        regex, whole = data["search_regex"], data["search_whole"]
        if not terms:
            return RowSelection((), None, data["ordering"])
        if whole and not regex:
            return RowSelection((), None, (), nothing=True)
        patterns = None
        if regex:
            patterns = [compile_search(rf"\b{t}\b" if whole else t) for t in terms]
        return RowSelection(terms, patterns, data["ordering"])


def compile_search(pattern: str) -> Any:
    """A user's search pattern on RE2, whose matching time is linear in the key's length: no
    pattern can hold a worker (Python's ``re`` backtracks: ``(\\w+)+!`` took 30 s). Patterns
    RE2 refuses (backreferences, look-arounds) or longer than :data:`MAX_SEARCH_PATTERN` are
    400."""
    if len(pattern) > MAX_SEARCH_PATTERN:
        raise ValidationError({"search": [
            f"Invalid regular expression: longer than {MAX_SEARCH_PATTERN} characters"
        ]})
    re2, options = _re2()
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args else "not understood"
        raise ValidationError({"search": [f"Invalid regular expression: {reason}"]}) from None


@functools.cache
def _re2() -> tuple[Any, Any]:
    """RE2 and the options of every pattern, imported by the first regular expression search:
    only those need it, and it costs every worker 1.4 MB."""
    import re2

    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # a refused pattern is the caller's 400, not a server log line
    options.max_mem = 1 << 20  # a pattern whose automaton needs more is refused, not built
    return re2, options


# -- the document ----------------------------------------------------------------------------

# DRF-shaped error: ``detail`` (and ``url`` for unrouted paths), or fields -> messages.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "url": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}


NAMES = {"global": "GlobalSettings", "user": "UserSettings", "notification": "NotificationUserSetting"}


def register(api: Api, registry: SettingsRegistry) -> None:
    """Add the setting schemas, their pages and the error shape to ``api``'s document."""
    for kind, name in NAMES.items():
        setting, patched = SETTING_SCHEMAS[kind]
        api.spec.components.schema(name, schema=setting)
        api.spec.components.schema(f"Patched{name}", schema=patched)
        api.spec.components.schema(
            f"Paginated{name}List",
            {
                "type": "object",
                "required": ["count", "results"],
                "properties": {
                    "count": {"type": "integer"},
                    "next": {"type": "string", "nullable": True, "format": "uri"},
                    "previous": {"type": "string", "nullable": True, "format": "uri"},
                    "results": {"type": "array", "items": ref(name)},
                },
            },
        )
    api.spec.components.schema("ApiError", ERROR_SCHEMA)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref("ApiError")}}}


AUTH_ERRORS = {"401": error("Not authenticated"), "406": error("Unacceptable Accept header")}


#: Extension headers of the settings answers (change control).
ETAG = {"ETag": {
    "description": "Strong tag of what is served; send it as If-Match or If-None-Match",
    "schema": {"type": "string"},
}}
SOURCE = {"X-Setting-Source": {
    "description": "Where the value comes from", "schema": {"enum": ["default", "stored", "override"]},
}}
INDEX = {"X-Settings-Index": {
    "description": "The store's change index when the request read it (see the change feed)",
    "schema": {"type": "integer"},
}}
NOT_MODIFIED = {"304": {"description": "Unchanged since the If-None-Match tag (no body)"}}


def list_responses(name: str) -> dict[str, Any]:
    array = {"type": "array", "items": ref(name)}
    schema = {"oneOf": [array, ref(f"Paginated{name}List")]}
    return {
        "200": {
            "description": "A bare array without a positive `limit`, else one page",
            "content": {"application/json": {"schema": schema}},
            "headers": {**ETAG, **INDEX},
        },
        **NOT_MODIFIED,
        "400": error("Invalid search expression"),
        **AUTH_ERRORS,
    }


def detail_responses(name: str, write: bool = False) -> dict[str, Any]:
    responses = {
        "200": {
            "description": name,
            "content": {"application/json": {"schema": ref(name)}},
            "headers": {**ETAG, **SOURCE, **INDEX},
        },
        "404": error("No such setting"),
        **AUTH_ERRORS,
    }
    if write:
        responses["400"] = error("Invalid value or body, or a pinned setting")
        responses["403"] = error("Permission denied or CSRF failure")
        responses["412"] = error("If-Match no longer matches: nothing written")
        responses["415"] = error("Unsupported body type")
    else:
        responses.update(NOT_MODIFIED)
    return responses


def body(name: str) -> dict[str, Any]:
    """The body's other content types (``@blp.arguments`` documents the JSON one)."""
    types = ("application/x-www-form-urlencoded", "multipart/form-data")
    return {"content": {t: {"schema": ref(name)} for t in types}}
