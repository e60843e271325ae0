"""OpenAPI components for the settings endpoints, named as in InvenTree's schema.

Responses are rendered by the service (their field order is part of the wire contract); these
marshmallow schemas describe them, and the key path parameters list the registry's keys.
"""

from __future__ import annotations

from typing import Any

from flask_smorest import Api
from marshmallow import Schema, fields

from ..registry import SettingsRegistry


def _setting_fields(kind: str) -> dict[str, fields.Field]:
    """The fields of one setting object, in wire order (SPEC §2.1)."""
    ro = {"dump_only": True}
    spec: dict[str, fields.Field] = {
        "pk": fields.Integer(**ro),
        "key": fields.String(**ro),
        "value": fields.String(allow_none=True, metadata={"description": "Always a string"}),
        "name": fields.String(**ro),
        "description": fields.String(**ro),
    }
    if kind == "user":
        spec["user"] = fields.Integer(**ro)
    spec["type"] = fields.String(**ro, metadata={"enum": ["boolean", "integer", "string"]})
    if kind != "notification":
        spec["units"] = fields.String(**ro)
    spec["choices"] = fields.List(fields.Dict(), **ro)
    spec["model_name"] = fields.String(allow_none=True, **ro)
    if kind == "notification":
        spec["model_filters"] = fields.Dict(allow_none=True, **ro)
    spec["api_url"] = fields.String(allow_none=True, **ro)
    spec["typ"] = fields.String(**ro)
    if kind == "notification":
        spec["required"] = fields.Boolean(**ro)
        spec["method"] = fields.String(**ro)
    return spec


# DRF-shaped error: ``detail`` (and ``url`` for unrouted paths), or fields -> messages.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "url": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}


NAMES = {"global": "GlobalSettings", "user": "UserSettings", "notification": "NotificationUserSetting"}


def register(api: Api, registry: SettingsRegistry) -> None:
    """Add the setting schemas and key converters' parameter schemas to ``api``'s document."""
    for kind, name in NAMES.items():
        setting = Schema.from_dict(_setting_fields(kind), name=name)
        api.spec.components.schema(name, schema=setting)
        patched = Schema.from_dict(_setting_fields(kind), name=f"Patched{name}")
        api.spec.components.schema(f"Patched{name}", schema=patched, partial=True)
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


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref("ApiError")}}}


AUTH_ERRORS = {"401": _error("Not authenticated"), "406": _error("Unacceptable Accept header")}


def list_responses(name: str) -> dict[str, Any]:
    array = {"type": "array", "items": ref(name)}
    schema = {"oneOf": [array, ref(f"Paginated{name}List")]}
    return {
        "200": {
            "description": "A bare array without a positive `limit`, else one page",
            "content": {"application/json": {"schema": schema}},
        },
        "400": _error("Invalid search expression"),
        **AUTH_ERRORS,
    }


def detail_responses(name: str, write: bool = False) -> dict[str, Any]:
    responses = {
        "200": {"description": name, "content": {"application/json": {"schema": ref(name)}}},
        "404": _error("No such setting"),
        **AUTH_ERRORS,
    }
    if write:
        responses["400"] = _error("Invalid value or body")
        responses["403"] = _error("Permission denied or CSRF failure")
        responses["415"] = _error("Unsupported body type")
    return responses


def body(name: str) -> dict[str, Any]:
    types = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
    return {"content": {t: {"schema": ref(name)} for t in types}}


LIST_PARAMETERS = [
    {"in": "query", "name": "limit", "schema": {"type": "integer"},
     "description": "Page size; without a positive limit the whole list is a bare array."},
    {"in": "query", "name": "offset", "schema": {"type": "integer"},
     "description": "Index of the first row of the page."},
    {"in": "query", "name": "ordering", "schema": {"type": "string"},
     "description": "Comma-separated pk, key, name; prefix - for descending."},
    {"in": "query", "name": "search", "schema": {"type": "string"},
     "description": "Terms (split on spaces and commas) that must all occur in the key."},
    {"in": "query", "name": "search_regex", "schema": {"type": "string"},
     "description": "Truthy: each search term is a regular expression."},
    {"in": "query", "name": "search_whole", "schema": {"type": "string"},
     "description": "Truthy: whole words only (with search_regex)."},
]
