"""/api/settings/{global,user,notification}/: lists and details.

Inputs are declared: a list's query arguments load through :class:`~.schemas.ListQuery` and
:class:`~.drf.LimitOffset` (``@blp.arguments``, ``@blp.paginate``), a write body through the
kind's setting schema (``@blp.arguments(..., location="body")``), and the value then through
the setting's own schema (:mod:`settings_server.fields`). Who may ask, and for which setting,
is settled before any of them is read (:meth:`SettingDetail.locate`): 401/403, then 404, then
the body's errors, as InvenTree answers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

from flask import Response, current_app, g, request
from flask.views import MethodView
from werkzeug.http import quote_etag
from werkzeug.routing import BaseConverter

from .. import auth
from ..errors import fail_detail, not_found
from ..rendering import Row, raw_json_response
from ..service import (
    GLOBAL,
    MISSING,
    NOTIFICATION,
    USER,
    Detail,
    Kind,
    PreconditionFailed,
    SettingNotFound,
    SettingsService,
)
from . import feed, schemas
from .drf import BODY, Blueprint, RowPage

blp = Blueprint("settings", __name__, url_prefix="/api/settings", description="Settings")


class WordConverter(BaseConverter):
    """``\\w+``: a key with other characters matches no route."""

    regex = r"\w+"


def service() -> SettingsService:
    return current_app.extensions["settings_service"]


# -- conditional requests (extensions: ETag, If-None-Match, If-Match) ------------------------

STALE = "The setting has changed since it was read: its ETag no longer matches If-Match."


def unchanged(tag: str) -> Response | None:
    """304 with no body when the request's ``If-None-Match`` names ``tag``."""
    current = request._get_current_object()  # type: ignore[attr-defined]
    if "HTTP_IF_NONE_MATCH" not in current.environ:
        return None  # (werkzeug parses an absent header into an empty set first)
    if current.if_none_match and current.if_none_match.contains_weak(tag):
        response = Response(status=304)
        response.set_etag(tag)
        return response
    return None


def if_match() -> Any:
    """What :meth:`SettingsService.update` asks whether an ETag is still the caller's, or
    ``None`` without ``If-Match`` (``*`` always matches; weak tags never do)."""
    if "If-Match" not in request.headers:
        return None
    tags = request.if_match
    return lambda tag: tags.star_tag or tags.contains(tag)


def detail_response(detail: Detail) -> Response:
    response = raw_json_response(detail.row.json)
    # added, not set: a new response has neither (``set`` scans the headers for the name)
    response.headers.add("ETag", quote_etag(detail.etag))
    response.headers.add("X-Setting-Source", detail.source)
    return response


# -- views ---------------------------------------------------------------------------------


def caller_first(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run the view class's ``locate`` (authentication, permission, 404) before the
    arguments and body below are read, and pass the view what it found."""

    @functools.wraps(view)
    def located(self: Any, **path: Any) -> Any:
        return view(self, **self.locate(writing=request.method in ("PUT", "PATCH"), **path))

    return located


class SettingsList(MethodView):
    """A kind's settings, searched, ordered and paginated (see :func:`list_view`)."""

    kind: ClassVar[Kind]
    unsupported_methods_need = "superuser"

    def locate(self, writing: bool) -> dict[str, Any]:
        user = auth.require_user()
        return {"user_id": user.id if self.kind.per_user else None}

    @classmethod
    def planned_reads(
        cls, user_id: int | None, path: dict[str, Any], method: str
    ) -> dict[str, list[str] | None]:
        """What :meth:`get` will read (see :mod:`settings_server.speedups`)."""
        if cls.kind.per_user and user_id is None:
            return {}
        return service().planned_reads(cls.kind, None, user_id)


def list_view(kind: Kind, class_name: str, summary: str) -> type[SettingsList]:
    """The list view of ``kind`` (OPTIONS answers ``class_name``); ``summary`` is its OpenAPI
    summary."""

    @blp.arguments(schemas.ListQuery(), location="query")
    @blp.paginate(RowPage)
    @blp.doc(responses=schemas.list_responses(schemas.NAMES[kind.name]))
    def rows(self: SettingsList, select: schemas.RowSelection, listed: list[Row]) -> list[Row]:
        return select(listed)

    @caller_first
    @functools.wraps(rows)
    def get(self: SettingsList, user_id: int | None) -> Response:
        listed = service().list(kind, user_id)
        response = unchanged(listed.version) or rows(self, listed=listed)
        response.set_etag(listed.version)
        return response

    get.__doc__ = summary
    return type(class_name, (SettingsList,), {"kind": kind, "get": get})


class SettingDetail(MethodView):
    """One setting by key: read, replaced (PUT) or changed (PATCH) (see
    :func:`detail_view`)."""

    kind: ClassVar[Kind]
    unsupported_methods_need: ClassVar[str | None] = None

    def locate(self, writing: bool, key: str) -> dict[str, Any]:
        """Who asks for which setting: 401 for anonymous callers, 403 for a global write by
        non-staff, then 404 for a key the kind does not serve."""
        user = auth.require_staff() if writing and not self.kind.per_user else auth.require_user()
        if str(key).upper() not in service().definitions(self.kind):
            not_found()
        return {"key": key, "user_id": user.id if self.kind.per_user else None}

    @classmethod
    def planned_reads(
        cls, user_id: int | None, path: dict[str, Any], method: str
    ) -> dict[str, list[str] | None]:
        """What reading or (PUT, PATCH) writing the setting will read (see
        :mod:`settings_server.speedups`)."""
        if cls.kind.per_user and user_id is None:
            return {}
        key = cls.planned_key(user_id, **path)
        if key is None:
            return {}
        unchecked = method in ("PUT", "PATCH") and if_match() is None
        return service().planned_reads(cls.kind, key, user_id, unchecked=unchecked)

    @classmethod
    def planned_key(cls, user_id: int | None, key: str) -> str | None:
        return key


class NotificationSettingDetail(SettingDetail):
    def locate(self, writing: bool, pk: int) -> dict[str, Any]:
        """In InvenTree's order: a pk that names nobody's setting is 404 even for anonymous
        callers; then 401; another user's pk is 404 too."""
        try:
            owner, key = service().locate(NOTIFICATION, pk)
        except SettingNotFound:
            not_found()
        if auth.current_user() is None and auth.authenticator().users.get(owner) is None:
            not_found()
        user = auth.require_user()
        if owner != user.id:
            not_found()
        return {"key": key, "user_id": user.id}

    @classmethod
    def planned_key(cls, user_id: int | None, pk: int) -> str | None:
        try:
            owner, key = service().locate(NOTIFICATION, pk)
        except SettingNotFound:
            return None
        return key if owner == user_id else None


def detail_view(
    kind: Kind,
    class_name: str,
    summaries: tuple[str, str, str],
    base: type[SettingDetail] = SettingDetail,
    **attributes: Any,
) -> type[SettingDetail]:
    """The detail view of ``kind``: GET, PUT and PATCH with one implementation for every
    kind (OPTIONS answers ``class_name``); ``summaries`` are their OpenAPI summaries."""
    name = schemas.NAMES[kind.name]
    put_body, patch_body = schemas.SETTING_SCHEMAS[kind.name]

    @caller_first
    @blp.doc(responses=schemas.detail_responses(name))
    def get(self: SettingDetail, key: str, user_id: int | None):
        detail = service().get(kind, key, user_id)
        return unchanged(detail.etag) or detail_response(detail)

    def write(body: Any, body_name: str) -> Callable[..., Any]:
        @caller_first
        @blp.arguments(body, location=BODY, required=False)
        @blp.doc(requestBody=schemas.body(body_name),
                 responses=schemas.detail_responses(name, write=True))
        def method(self: SettingDetail, loaded: dict[str, Any], key: str, user_id: int | None):
            value = loaded.get("value", MISSING)
            try:
                detail = service().update(
                    kind, key, value, user_id, actor=auth.current_user(), if_match=if_match()
                )
            except PreconditionFailed:
                fail_detail(412, STALE)
            feed.note_written(g, detail.made_on)
            return detail_response(detail)

        return method

    methods = {"get": get, "put": write(put_body, name), "patch": write(patch_body, f"Patched{name}")}
    for (method_name, method), summary in zip(methods.items(), summaries, strict=True):
        method.__doc__ = summary
    return type(class_name, (base,), {"kind": kind, **methods, **attributes})


blp.route("/global/")(list_view(
    GLOBAL, "GlobalSettingsList", "All global settings (bare array without a positive ``limit``)."
))
blp.route("/global/<global_key:key>/")(detail_view(
    GLOBAL, "GlobalSettingsDetail",
    ("One global setting by key (case-insensitive).",
     "Replace a global setting's value (staff only).",
     "Change a global setting's value (staff only)."),
    unsupported_methods_need="staff",
))
blp.route("/user/")(list_view(USER, "UserSettingsList", "The caller's own user settings."))
blp.route("/user/<user_key:key>/")(detail_view(
    USER, "UserSettingsDetail",
    ("One of the caller's user settings by key.",
     "Replace one of the caller's user settings.",
     "Change one of the caller's user settings."),
))
blp.route("/notification/")(list_view(
    NOTIFICATION, "NotificationSettingsList",
    "The caller's notification settings, one per setting a method declares.",
))
blp.route("/notification/<int:pk>/")(detail_view(
    NOTIFICATION, "NotificationSettingsDetail",
    ("One of the caller's notification settings by id; others' ids are 404.",
     "Replace one of the caller's notification settings.",
     "Change one of the caller's notification settings."),
    base=NotificationSettingDetail,
))
