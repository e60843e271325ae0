"""Change control, beyond InvenTree 327: the history of changes with restore, and bulk writes.

* ``GET /api/settings/history/``: the entries the caller may see, newest first, always paged
  (``limit`` 50 by default, at most 500); ``GET /api/settings/history/{id}/``: one of them.
* ``POST /api/settings/history/{id}/restore/``: write an entry's ``old`` value back, with the
  permissions and validation of a write of that setting.
* ``PATCH /api/settings/bulk/global/`` (staff) and ``/bulk/user/`` (the caller's own):
  ``{"KEY": value, ...}`` validated whole, then written at once, or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from flask import current_app
from flask.views import MethodView
from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from .. import auth
from ..errors import PERMISSION_DENIED, fail_detail, not_found
from ..history import History, parse_timestamp
from ..rendering import json_array, raw_json_response
from ..service import GLOBAL, KINDS, USER, Kind, SettingNotFound
from . import schemas
from .drf import BODY, Blueprint, RowPage
from .settings import caller_first, detail_response, service

blp = Blueprint(
    "changes", __name__, url_prefix="/api/settings",
    description="Change control (extensions): history, restore, bulk writes",
)

HISTORY_PAGE = 50
HISTORY_MAX_PAGE = 500
MAX_BULK = 128
PROTECTED = "A protected setting's value is not kept in its history and cannot be restored."


def history() -> History:
    return current_app.extensions["settings_history"]


class Timestamp(fields.Field):
    """An ISO 8601 moment (``Z``, an offset, or none for UTC)."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Enter a valid ISO 8601 date/time."
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return parse_timestamp(str(value))
        except ValueError:
            raise self.make_error("invalid") from None


class HistoryQuery(Schema):
    """The history's filters (``limit``/``offset``: :class:`~.drf.LimitOffset`)."""

    class Meta:
        unknown = EXCLUDE

    kind = fields.String(
        load_default=None, validate=validate.OneOf(list(KINDS)),
        metadata={"description": "Only entries of this kind of setting."},
    )
    key = fields.String(load_default=None, metadata={"description": "Only this setting (any case)."})
    since = Timestamp(load_default=None, metadata={
        "description": "Only entries after this moment (ISO 8601, exclusive)."
    })
    user = fields.Integer(load_default=None, strict=False, metadata={
        "description": "Superusers: the per-user entries of this user instead."
    })


class HistoryEntry(Schema):
    """One change of a stored setting (describes the answer; entries are served as stored)."""

    id = fields.Integer(metadata={"description": "The change index: store-wide, increasing."})
    kind = fields.String(metadata={"enum": list(KINDS)})
    key = fields.String()
    user = fields.Integer(allow_none=True, metadata={"description": "Owner of a per-user setting."})
    old = fields.String(metadata={"description": 'The value before, as served ("***" if protected).'})
    new = fields.String(metadata={"description": "The value after, as served."})
    actor = fields.Integer(allow_none=True, metadata={"description": "Who wrote it (null: CLI)."})
    actor_name = fields.String(allow_none=True)
    source = fields.String(metadata={"enum": ["api", "bulk", "import", "restore"]})
    timestamp = fields.String(metadata={"description": "ISO 8601 UTC with milliseconds."})


class Rendered(NamedTuple):
    """An entry as JSON text, for the pager."""

    json: str


class Entries(Sequence[Rendered]):
    """Entries rendered only when the pager takes its page of them (a history holds many)."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [Rendered(history().text(entry)) for entry in self._entries[index]]
        return Rendered(history().text(self._entries[index]))


class BulkWrite(Schema):
    """``{"KEY": value, ...}``: 1 to 128 settings of one kind (checked by the service)."""

    class Meta:
        unknown = INCLUDE

    @validates_schema(pass_original=True)
    def sized(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        if not 1 <= len(data) <= MAX_BULK:
            raise ValidationError(
                {"non_field_errors": [f"Send an object of 1 to {MAX_BULK} settings."]}
            )

    @post_load(pass_original=True)
    def in_request_order(self, data: dict[str, Any], original: Any, **_: Any) -> dict[str, Any]:
        """The settings in the order the request sent them (marshmallow collects unknown
        fields through a set): the answer's rows follow it."""
        return {key: data[key] for key in original if key in data}


@blp.route("/history/")
class HistoryList(MethodView):
    """The history of changes the caller may see, newest first."""

    @blp.arguments(HistoryQuery(), location="query")
    @blp.paginate(RowPage, default_limit=HISTORY_PAGE, max_limit=HISTORY_MAX_PAGE)
    @blp.doc(responses={
        "200": {"description": "One page of entries", "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {
                "count": {"type": "integer"},
                "next": {"type": "string", "nullable": True},
                "previous": {"type": "string", "nullable": True},
                "results": {"type": "array", "items": schemas.ref("HistoryEntry")},
            },
        }}}},
        "400": schemas.error("Invalid filter"),
        "403": schemas.error("Another user's entries, asked by a non-superuser"),
        **schemas.AUTH_ERRORS,
    })
    def get(self, query: dict[str, Any]) -> Entries:
        """Changes of global settings and of the caller's own settings, newest first."""
        viewer = auth.require_user()
        user = query["user"]
        if user is not None and user != viewer.id and not viewer.is_superuser:
            fail_detail(403, PERMISSION_DENIED)
        entries = history().entries(
            viewer, kind=query["kind"], key=query["key"], since=query["since"],
            user=None if user == viewer.id else user,
        )
        return Entries(entries)


def _visible_entry(entry_id: int) -> dict[str, Any]:
    entry = history().get(entry_id, auth.require_user())
    if entry is None:
        not_found()
    return entry


@blp.route("/history/<int:entry_id>/")
class HistoryDetail(MethodView):
    @blp.doc(responses={
        "200": {"description": "The entry", "content": {"application/json": {
            "schema": schemas.ref("HistoryEntry")}}},
        "404": schemas.error("No such entry, or not yours"),
        **schemas.AUTH_ERRORS,
    })
    def get(self, entry_id: int):
        """One history entry (404 when the caller may not see it)."""
        return raw_json_response(history().text(_visible_entry(entry_id)))


@blp.route("/history/<int:entry_id>/restore/")
class HistoryRestore(MethodView):
    @blp.doc(responses={
        "200": {"description": "The setting as restored"},
        "400": schemas.error("The old value is refused now, pinned or protected"),
        "403": schemas.error("Not staff (global settings) or CSRF failure"),
        "404": schemas.error("No such entry, or not yours"),
        **schemas.AUTH_ERRORS,
    })
    def post(self, entry_id: int):
        """Write an entry's old value back (recorded as a ``restore``)."""
        entry = _visible_entry(entry_id)
        kind = KINDS[entry["kind"]]
        user = auth.require_user() if kind.per_user else auth.require_staff()
        definition = service().definitions(kind).get(entry["key"])
        if definition is not None and definition.protected:
            fail_detail(400, PROTECTED)
        try:
            detail = service().update(
                kind, entry["key"], entry["old"], entry["user"], actor=user, source="restore"
            )
        except SettingNotFound:
            not_found()
        return detail_response(detail)


class BulkView(MethodView):
    kind: ClassVar[Kind]

    def locate(self, writing: bool) -> dict[str, Any]:
        """Who writes: 401, then 403 for global settings and non-staff, before the body."""
        return {"user": auth.require_user() if self.kind.per_user else auth.require_staff()}


def bulk_view(kind: Kind, class_name: str, summary: str) -> type[BulkView]:
    name = schemas.NAMES[kind.name]

    @caller_first
    @blp.arguments(BulkWrite(), location=BODY)
    @blp.doc(responses={
        "200": {"description": "The updated settings, in request order", "content": {
            "application/json": {"schema": {"type": "array", "items": schemas.ref(name)}}}},
        "400": schemas.error("Every failing key with its messages; nothing written"),
        "403": schemas.error("Permission denied or CSRF failure"),
        **schemas.AUTH_ERRORS,
    })
    def patch(self: BulkView, values: dict[str, Any], user: Any):
        details = service().update_many(
            kind, values, user.id if kind.per_user else None, actor=user
        )
        return raw_json_response(json_array([detail.row for detail in details]))

    patch.__doc__ = summary
    return type(class_name, (BulkView,), {"kind": kind, "patch": patch})


blp.route("/bulk/global/")(bulk_view(
    GLOBAL, "GlobalSettingsBulk", "Change several global settings at once, or none (staff)."
))
blp.route("/bulk/user/")(bulk_view(
    USER, "UserSettingsBulk", "Change several of the caller's user settings at once, or none."
))
