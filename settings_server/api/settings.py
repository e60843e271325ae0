"""/api/settings/{global,user,notification}/: lists and details (SPEC §1, §5, §6, §14)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import re2
from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.routing import BaseConverter

from .. import auth
from ..errors import fail, fail_detail, not_found, raw_json_response
from ..rendering import Row, compact
from ..service import GLOBAL, MISSING, NOTIFICATION, USER, Kind, SettingNotFound, SettingsService
from ..validators import ValidationFailed
from . import schemas

blp = Blueprint("settings", __name__, url_prefix="/api/settings", description="Settings")

TRUTHY = frozenset({"1", "y", "yes", "t", "true", "ok", "on"})
ORDERING_FIELDS = ("pk", "key", "name")
MAX_SEARCH_PATTERN = 256
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.log_errors = False  # a refused pattern is the caller's 400, not a server log line
_RE2_OPTIONS.max_mem = 1 << 20  # a pattern whose automaton needs more is refused, not built
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class WordConverter(BaseConverter):
    """``\\w+``: a key with other characters matches no route (SPEC §1)."""

    regex = r"\w+"


def service() -> SettingsService:
    return current_app.extensions["settings_service"]


# -- lists ---------------------------------------------------------------------------------


def list_response(rows: list[Row]):
    """Search, order and paginate ``rows`` from the query string (SPEC §6)."""
    if not request.query_string:
        return raw_json_response(_array(rows))
    args = request.args
    rows = _search(rows, args.get("search", ""), args.get("search_regex"), args.get("search_whole"))
    rows = _order(rows, args.get("ordering", ""))
    limit = _positive_int(args.get("limit"))
    if limit is None:
        return raw_json_response(_array(rows))
    offset = _positive_int(args.get("offset")) or 0
    count = len(rows)
    page = compact({
        "count": count,
        "next": _page_url(limit, offset + limit) if offset + limit < count else None,
        "previous": _page_url(limit, offset - limit) if offset > 0 else None,
    })
    return raw_json_response(f'{page[:-1]},"results":{_array(rows[offset : offset + limit])}}}')


def _array(rows: list[Row]) -> str:
    return f"[{','.join([row.json for row in rows])}]"


def _positive_int(text: str | None) -> int | None:
    try:
        number = int((text or "").strip())
    except ValueError:
        return None
    return number if number > 0 else None


def _search(rows, text: str, regex: str | None, whole: str | None):
    terms = [term for term in re.split(r"[\s,]+", text) if term]
    if not terms:
        return rows
    regex = (regex or "").lower() in TRUTHY
    whole = (whole or "").lower() in TRUTHY
    if whole and not regex:
        return []  # InvenTree searches for a literal "\y...\y", which no key contains
    if regex:
        patterns = [_compile_search(rf"\b{t}\b" if whole else t) for t in terms]
        return [r for r in rows if all(p.search(r.key) for p in patterns)]
    terms = [term.upper() for term in terms]
    return [r for r in rows if all(term in r.key.upper() for term in terms)]


def _compile_search(pattern: str):
    """A user's search pattern on RE2, whose matching time is linear in the key's length: no
    pattern can hold a worker (Python's ``re`` backtracks: ``(\\w+)+!`` took 30 s). Patterns
    RE2 refuses (backreferences, look-arounds) or longer than :data:`MAX_SEARCH_PATTERN` are
    400."""
    if len(pattern) > MAX_SEARCH_PATTERN:
        fail(400, {"search": [
            f"Invalid regular expression: longer than {MAX_SEARCH_PATTERN} characters"
        ]})
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args else "not understood"
        fail(400, {"search": [f"Invalid regular expression: {reason}"]})


def _order(rows, ordering: str):
    fields = []
    for name in ordering.split(","):
        name = name.strip()
        if name.lstrip("-") in ORDERING_FIELDS:
            fields.append(name)
    for name in reversed(fields):  # stable sorts, least significant first
        field = name.lstrip("-")
        rows = sorted(rows, key=lambda row: getattr(row, field), reverse=name.startswith("-"))
    return rows


def _page_url(limit: int, offset: int) -> str:
    """The request URL with ``limit`` and ``offset`` replaced; DRF sorts the parameters."""
    params = [(k, v) for k, v in parse_qsl(request.query_string.decode(), keep_blank_values=True)
              if k not in ("limit", "offset")]
    params.append(("limit", str(limit)))
    if offset > 0:
        params.append(("offset", str(offset)))
    params.sort(key=lambda kv: kv[0])
    return f"{request.host_url}{request.path.lstrip('/')}?{urlencode(params)}"


# -- writes --------------------------------------------------------------------------------


def read_value() -> Any:
    """The ``value`` of a JSON, form or multipart body, or ``MISSING`` (SPEC §5.3, §14)."""
    body = request.get_data(cache=True)
    mimetype = request.mimetype
    if mimetype in FORM_TYPES:
        return request.form.get("value", MISSING)
    if not body and not mimetype:
        return MISSING
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        fail_detail(415, f'Unsupported media type "{request.content_type}" in request.')
    if not body:
        return MISSING
    try:
        data = json.loads(body)
    except ValueError as exc:
        fail_detail(400, f"JSON parse error - {exc}")
    except RecursionError:
        fail_detail(400, "JSON parse error - nested too deeply")
    if not isinstance(data, dict):
        fail(400, {"non_field_errors": [
            f"Invalid data. Expected a dictionary, but got {type(data).__name__}."
        ]})
    return data.get("value", MISSING)


def write(kind: Kind, key: str, user_id: int | None):
    value = read_value()
    if value is MISSING and request.method == "PUT":
        fail(400, {"value": ["This field is required."]})
    try:
        return raw_json_response(service().update(kind, key, value, user_id).json)
    except ValidationFailed as exc:
        fail(400, exc.body)


def lookup(kind: Kind, key: str) -> None:
    """404 ``Not found.`` before the body is read (SPEC §4 evaluation order)."""
    if str(key).upper() not in service().definitions(kind):
        not_found()


def planned_reads(user_id: int | None) -> dict[str, list[str] | None]:
    """The settings this request's view will read (see :meth:`SettingsService.planned_reads`)."""
    view_class = getattr(current_app.view_functions[request.url_rule.endpoint], "view_class", None)
    kind = getattr(view_class, "kind", None)
    if kind is None or (kind.per_user and user_id is None):
        return {}
    args = request.view_args or {}
    key = args.get("key")
    if "pk" in args:
        try:
            owner, key = service().locate(kind, args["pk"])
        except SettingNotFound:
            return {}
        if owner != user_id:
            return {}
    writing = request.method in ("PUT", "PATCH")
    return service().planned_reads(kind, key, user_id, writing=writing)


# -- views ---------------------------------------------------------------------------------

LIST_DOC = {"parameters": schemas.LIST_PARAMETERS}


@blp.route("/global/")
class GlobalSettingsList(MethodView):
    kind = GLOBAL
    unsupported_methods_need = "superuser"

    @blp.doc(**LIST_DOC, responses=schemas.list_responses("GlobalSettings"))
    def get(self):
        """All global settings (bare array without a positive ``limit``)."""
        auth.require_user()
        return list_response(service().list(GLOBAL))


@blp.route("/global/<global_key:key>/")
class GlobalSettingsDetail(MethodView):
    kind = GLOBAL
    unsupported_methods_need = "staff"

    @blp.doc(responses=schemas.detail_responses("GlobalSettings"))
    def get(self, key):
        """One global setting by key (case-insensitive)."""
        auth.require_user()
        try:
            return raw_json_response(service().get(GLOBAL, key).json)
        except SettingNotFound:
            not_found()

    @blp.doc(requestBody=schemas.body("GlobalSettings"), responses=schemas.detail_responses("GlobalSettings", write=True))
    def put(self, key):
        """Replace a global setting's value (staff only)."""
        auth.require_staff()
        lookup(GLOBAL, key)
        return write(GLOBAL, key, None)

    @blp.doc(requestBody=schemas.body("PatchedGlobalSettings"), responses=schemas.detail_responses("GlobalSettings", write=True))
    def patch(self, key):
        """Change a global setting's value (staff only)."""
        auth.require_staff()
        lookup(GLOBAL, key)
        return write(GLOBAL, key, None)


@blp.route("/user/")
class UserSettingsList(MethodView):
    kind = USER
    unsupported_methods_need = "superuser"

    @blp.doc(**LIST_DOC, responses=schemas.list_responses("UserSettings"))
    def get(self):
        """The caller's own user settings."""
        user = auth.require_user()
        return list_response(service().list(USER, user.id))


@blp.route("/user/<user_key:key>/")
class UserSettingsDetail(MethodView):
    kind = USER
    unsupported_methods_need = None

    @blp.doc(responses=schemas.detail_responses("UserSettings"))
    def get(self, key):
        """One of the caller's user settings by key."""
        user = auth.require_user()
        try:
            return raw_json_response(service().get(USER, key, user.id).json)
        except SettingNotFound:
            not_found()

    @blp.doc(requestBody=schemas.body("UserSettings"), responses=schemas.detail_responses("UserSettings", write=True))
    def put(self, key):
        """Replace one of the caller's user settings."""
        user = auth.require_user()
        lookup(USER, key)
        return write(USER, key, user.id)

    @blp.doc(requestBody=schemas.body("PatchedUserSettings"), responses=schemas.detail_responses("UserSettings", write=True))
    def patch(self, key):
        """Change one of the caller's user settings."""
        user = auth.require_user()
        lookup(USER, key)
        return write(USER, key, user.id)


@blp.route("/notification/")
class NotificationSettingsList(MethodView):
    kind = NOTIFICATION
    unsupported_methods_need = "superuser"

    @blp.doc(**LIST_DOC, responses=schemas.list_responses("NotificationUserSetting"))
    def get(self):
        """The caller's notification settings, one per setting a method declares."""
        user = auth.require_user()
        return list_response(service().list(NOTIFICATION, user.id))


@blp.route("/notification/<int:pk>/")
class NotificationSettingsDetail(MethodView):
    kind = NOTIFICATION
    unsupported_methods_need = None

    def _locate(self, pk: int) -> tuple[Any, str]:
        """The caller and the key of ``pk``, in InvenTree's order: a pk that names nobody's
        setting is 404 even for anonymous callers; then 401; another user's pk is 404 too."""
        try:
            owner, key = service().locate(NOTIFICATION, pk)
        except SettingNotFound:
            not_found()
        user = auth.current_user()
        if user is None and auth.authenticator().users.get(owner) is None:
            not_found()
        user = auth.require_user()
        if owner != user.id:
            not_found()
        return user, key

    @blp.doc(responses=schemas.detail_responses("NotificationUserSetting"))
    def get(self, pk):
        """One of the caller's notification settings by id; others' ids are 404."""
        user, key = self._locate(pk)
        return raw_json_response(service().get(NOTIFICATION, key, user.id).json)

    @blp.doc(requestBody=schemas.body("NotificationUserSetting"), responses=schemas.detail_responses("NotificationUserSetting", write=True))
    def put(self, pk):
        """Replace one of the caller's notification settings."""
        user, key = self._locate(pk)
        return write(NOTIFICATION, key, user.id)

    @blp.doc(requestBody=schemas.body("PatchedNotificationUserSetting"), responses=schemas.detail_responses("NotificationUserSetting", write=True))
    def patch(self, pk):
        """Change one of the caller's notification settings."""
        user, key = self._locate(pk)
        return write(NOTIFICATION, key, user.id)
