"""HTTP layer: flask-smorest blueprints under /api/."""

from __future__ import annotations

import functools
from typing import Any

from flask import Flask, Request, current_app, request
from flask_smorest import Api
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from .. import __version__, auth, speedups
from ..errors import PERMISSION_DENIED, fail_detail
from ..rendering import allow_header, json_response
from . import docs, feed, settings

JSON_TYPES = ("application/json", "application/*", "*/*")


def init_app(app: Flask) -> None:
    app.config.setdefault("API_TITLE", "settings-server")
    app.config.setdefault("API_VERSION", "327")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/api")
    app.config.setdefault("OPENAPI_JSON_PATH", "schema/")
    docs.init_app(app)  # /api/docs/: Swagger UI from the installed package, no CDN
    app.config.setdefault(
        "API_SPEC_OPTIONS",
        {
            "info": {"description": f"settings-server {__version__}: InvenTree Settings API 327"},
            "components": {
                "securitySchemes": {
                    "tokenAuth": {"type": "apiKey", "in": "header", "name": "Authorization",
                                  "description": 'Token authentication: "Token <key>"'},
                    "basicAuth": {"type": "http", "scheme": "basic"},
                    "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
                }
            },
            "security": [{"tokenAuth": []}, {"basicAuth": []}, {"cookieAuth": []}],
        },
    )
    api = Api(app)
    registry = app.extensions["settings_registry"]

    from . import changes, health, root, schemas, tokens, users

    for name, definitions in (
        ("global_key", registry.global_settings),
        ("user_key", registry.user_settings),
    ):
        converter = type(f"{name}_converter", (settings.WordConverter,), {})
        app.url_map.converters[name] = converter
        keys = [key for key in definitions if not key.startswith("_")]
        api.register_converter(
            converter, lambda _c, keys=keys: {"type": "string", "pattern": r"^\w+$", "enum": keys}
        )
    schemas.register(api, registry)
    api.register_blueprint(root.blp)
    api.register_blueprint(health.blp)
    api.register_blueprint(settings.blp)
    api.register_blueprint(changes.blp)
    api.spec.components.schema("HistoryEntry", schema=changes.HistoryEntry)
    api.register_blueprint(users.blp)
    api.register_blueprint(tokens.blp)
    feed.register(api)
    app.extensions["settings_api"] = api
    feed.init_app(app)


def before_api_request(current: Request, app: Flask, state: Any):
    """Every ``/api`` request, in DRF's order: content negotiation, authentication (its reads
    and the view's fetched ahead in one round trip), then the routing checks. ``state`` is
    the request's ``flask.g``."""
    if not current.path.startswith("/api"):
        return None
    negotiate(current)
    credentials = auth.credentials(current)
    speedups.begin_request(current, app, credentials)
    auth.authenticate(current, app, state, credentials)
    return check_route(current)


def negotiate(current: Request) -> None:
    """DRF content negotiation, which runs before authentication (docs/contract.md §1)."""
    if current.query_string and current.args.get("format", "json") != "json":
        fail_detail(404, "Not found.")
    accept = current.environ.get("HTTP_ACCEPT")
    if accept in (None, "", "*/*", "application/json"):
        return
    served = JSON_TYPES + _media_types(current)
    accepted = [value for value, _quality in current.accept_mimetypes]
    if accepted and not any(value in served for value in accepted):
        fail_detail(406, "Could not satisfy the request Accept header.")


def _media_types(current: Request) -> tuple[str, ...]:
    """What the routed view serves beside JSON (its ``media_types``: the event stream)."""
    if current.url_rule is None:
        return ()
    view = current_app.view_functions.get(current.url_rule.endpoint)
    return getattr(getattr(view, "view_class", None), "media_types", ())


def check_route(current: Request):
    """What InvenTree decides after authentication and before the view runs.

    * A missing trailing slash is not redirected: the path is unrouted (docs/contract.md §1).
    * OPTIONS answers the view's metadata to authenticated callers.
    * A method a route lacks: permission errors first, then 405 (docs/contract.md §4.1). Views declare
      ``unsupported_methods_need``: who gets the 405 rather than 403 (``"superuser"``,
      ``"staff"``, or ``None`` for everybody, anonymous included).
    """
    routing_exception = current.routing_exception
    if routing_exception is None:
        return _metadata() if current.method == "OPTIONS" else None
    if isinstance(routing_exception, RequestRedirect):
        raise NotFound()
    if not isinstance(routing_exception, MethodNotAllowed):
        return None
    adapter = current_app.url_map.bind_to_environ(current.environ)
    endpoint, _ = adapter.match(method="GET")
    view = current_app.view_functions[endpoint]
    need = getattr(getattr(view, "view_class", None), "unsupported_methods_need", None)
    if need is None:
        return
    user = auth.require_user()
    if not (user.is_superuser if need == "superuser" else user.is_staff):
        fail_detail(403, PERMISSION_DENIED)
    return None


def _metadata():
    if request.path.startswith("/api/settings/"):
        auth.require_user()
    view = current_app.view_functions[request.url_rule.endpoint]
    view_class = getattr(view, "view_class", None)
    return json_response(
        {
            "name": view_class.__name__ if view_class else request.url_rule.endpoint,
            "description": (view_class.__doc__ or "").strip() if view_class else "",
            "renders": ["application/json"],
            "parses": ["application/json", "application/x-www-form-urlencoded", "multipart/form-data"],
        }
    )


def add_allow_header(response, current: Request) -> None:
    """``Allow`` on every routed settings response, in DRF's order."""
    rule = current.url_rule
    if rule is not None and rule.endpoint.startswith(("settings.", "changes.")):
        response.headers["Allow"] = _allow(frozenset(rule.methods))


@functools.cache
def _allow(methods: frozenset[str]) -> str:
    return allow_header(methods)
