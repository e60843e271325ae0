"""The settings page: ``/settings/``, a server-rendered page over the same JSON API.

``GET /`` redirects here. Signing in with the form makes the same session the API uses (the
``sessionid`` and ``csrftoken`` cookies, see :mod:`settings_server.auth`), through the same login
throttle as Basic auth; signing out deletes the session cookie. The page is rendered from the
registry and the store (every setting a person may see, with its source and default) and a
little JavaScript (``static/settings.js``) writes through the API with ``If-Match``, opens
history and listens to the change feed. Everything it loads ships in this package: the
``Content-Security-Policy`` of its answers lets the browser reach no other host.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import auth
from ..registry import SettingDefinition
from ..service import GLOBAL, NOTIFICATION, USER, Kind, SettingsService
from ..users import User

blp = Blueprint(
    "page", __name__, url_prefix="/settings", template_folder="templates", static_folder="static"
)

#: InvenTree's panels, in its order; operators' own categories follow, in registry order.
PANELS = (
    "Server", "Login", "Barcodes", "Notifications", "Pricing", "Labels", "Reporting", "Parts",
    "Stock", "Build orders", "Purchase orders", "Sales orders", "Return orders",
)
#: Nothing the page loads comes from elsewhere; the form posts only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CSRF_FIELD = "csrfmiddlewaretoken"  # Django's name for a form's CSRF field


@dataclass(frozen=True)
class PageRow:
    """One setting as the page shows it."""

    kind: str
    key: str
    url: str  # the API detail URL the page reads and writes
    name: str
    description: str
    units: str
    type: str  # the registry's: bool, int, float, str, choice
    value: str  # the served value ("" for a protected one: it is never sent to the page)
    default: str
    source: str  # "default" (never written), "stored" or "pinned" (by the configuration)
    differs: bool  # the value is not the default
    writable: bool
    protected: bool
    choices: list[dict[str, str]] = field(default_factory=list)
    min: int | float | None = None
    max: int | float | None = None

    @property
    def dom_id(self) -> str:
        return f"{self.kind}-{self.key}"


def init_app(app: Flask) -> None:
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True  # 170 rows: no blank lines
    app.register_blueprint(blp)
    app.add_url_rule("/", "root_redirect", lambda: redirect(url_for("page.settings"), 302))


def add_content_security_policy(response: Response, current: Request) -> Response:
    """The page's answers let the browser load and reach nothing but this server (a step of
    :mod:`settings_server.pipeline`)."""
    if current.blueprint == "page":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def _service() -> SettingsService:
    return current_app.extensions["settings_service"]


def signed_in_user() -> User | None:
    """The user of the request's session cookie, or ``None`` (also left in ``g`` for the
    request log, as the API's authentication does)."""
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    user = auth.authenticator().user_from_session(cookie) if cookie else None
    g.user, g.auth_scheme = user, "session" if user is not None else None
    return user


@blp.get("/")
def settings() -> Response:
    """The page for a signed-in user, else the sign-in form."""
    auth.authenticator().bootstrap_once()
    user = signed_in_user()
    if user is None:
        return _sign_in_form()
    tokens = auth.authenticator().tokens
    today = tokens.now().date()
    csrf_token = request.cookies.get(auth.CSRF_COOKIE) or secrets.token_urlsafe(24)
    body = render_template(
        "settings.html",
        user=user,
        categories=global_categories(user),
        user_rows=rows(USER, user),
        notification_rows=rows(NOTIFICATION, user),
        tokens=[(token, token.status(today)) for token in tokens.list_for_user(user.id)],
        csrf_field=CSRF_FIELD,
        csrf_token=csrf_token,
    )
    return _with_csrf_cookie(Response(body), csrf_token)


@blp.post("/login/")
def log_in() -> Response:
    """Sign in with the form: the same session as the API's, the same throttle as Basic."""
    authenticator = auth.authenticator()
    authenticator.check_csrf(submitted=request.form.get(CSRF_FIELD, ""))
    authenticator.bootstrap_once()
    username = request.form.get("username", "")
    try:
        user = auth.password_user(authenticator, username, request.form.get("password", ""))
    except auth.Throttled as exc:
        return _sign_in_form(str(exc), username, 429, {"Retry-After": str(exc.wait)})
    if user is None:
        return _sign_in_form("Invalid username/password.", username, 401)
    response = redirect(url_for("page.settings"), 303)
    authenticator.log_in(response, user)
    return response


@blp.post("/logout/")
def log_out() -> Response:
    """Sign out: the session cookie is deleted (a CSRF-checked form, so no other site can)."""
    authenticator = auth.authenticator()
    if signed_in_user() is not None:
        authenticator.check_csrf(submitted=request.form.get(CSRF_FIELD, ""))
    response = redirect(url_for("page.settings"), 303)
    authenticator.log_out(response)
    return response


def _sign_in_form(
    error: str = "", username: str = "", status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The sign-in form, with a CSRF cookie (made now when the browser has none)."""
    token = request.cookies.get(auth.CSRF_COOKIE) or secrets.token_urlsafe(24)
    body = render_template(
        "sign_in.html", error=error, username=username, csrf_field=CSRF_FIELD, csrf_token=token
    )
    return _with_csrf_cookie(Response(body, status, headers), token)


def _with_csrf_cookie(response: Response, token: str) -> Response:
    """``response``, setting the ``csrftoken`` cookie to ``token`` if the browser lacks it
    (the form's field and the page's script send it back)."""
    if request.cookies.get(auth.CSRF_COOKIE) != token:
        response.set_cookie(
            auth.CSRF_COOKIE, token, max_age=auth.CSRF_MAX_AGE, samesite="Lax",
            secure=request.is_secure,
        )
    return response


# -- what the page shows --------------------------------------------------------------------


def rows(kind: Kind, user: User) -> list[PageRow]:
    """The settings of ``kind`` a person sees (served and not hidden), for ``user``, in
    registry order."""
    service = _service()
    user_id = user.id if kind.per_user else None
    definitions = service.definitions(kind)
    stored = service.stored(kind, user_id)
    may_write = kind.per_user or user.is_staff
    shown = []
    for row in service.list(kind, user_id):
        definition = definitions.get(row.key)
        if definition is None or definition.hidden:  # no longer in the registry, or hidden
            continue
        served = json.loads(row.json)
        if service.pinned(kind, row.key):
            source = "pinned"
        else:
            source = "default" if stored.get(row.key) is None else "stored"
        shown.append(_page_row(kind, definition, served, stored.get(row.key), source, may_write))
    return shown


def _page_row(
    kind: Kind, definition: SettingDefinition, served: dict[str, Any], stored: str | None,
    source: str, may_write: bool,
) -> PageRow:
    detail = served["pk"] if kind is NOTIFICATION else definition.key
    value = served["value"]
    if definition.protected:  # served as ***: the page learns only whether it is the default
        value = definition.wire_default if stored is None else stored
    return PageRow(
        kind=kind.name,
        key=definition.key,
        url=f"/api/settings/{kind.name}/{detail}/",
        name=definition.name or definition.key,
        description=definition.description,
        units=definition.units,
        type=definition.type,
        value="" if definition.protected else served["value"],
        default="" if definition.protected else definition.wire_default,
        source=source,
        differs=value != definition.wire_default,
        writable=may_write and source != "pinned",
        protected=definition.protected,
        choices=[
            {"value": c["value"], "label": c.get("display_name", c["value"])}
            for c in served.get("choices") or ()
        ],
        min=definition.min,
        max=definition.max,
    )


def global_categories(user: User) -> list[tuple[str, list[PageRow]]]:
    """The global settings by category: InvenTree's panels first, then operators' own."""
    definitions = _service().definitions(GLOBAL)
    grouped: dict[str, list[PageRow]] = {}
    for row in rows(GLOBAL, user):
        grouped.setdefault(definitions[row.key].category, []).append(row)
    order = {name: i for i, name in enumerate(PANELS)}
    return sorted(grouped.items(), key=lambda item: order.get(item[0], len(PANELS)))
