"""HTTP layer: flask-smorest blueprints under /api/."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from .. import __version__


def init_app(app: Flask) -> None:
    app.config.setdefault("API_TITLE", "settings-server")
    app.config.setdefault("API_VERSION", "327")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/api")
    app.config.setdefault("OPENAPI_JSON_PATH", "schema/")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "docs/")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", "https://cdn.jsdelivr.net/npm/swagger-ui-dist/")
    app.config.setdefault(
        "API_SPEC_OPTIONS",
        {"info": {"description": f"settings-server {__version__}: InvenTree Settings API 327"}},
    )
    api = Api(app)
    from . import root, users

    api.register_blueprint(root.blp)
    api.register_blueprint(users.blp)
    app.extensions["settings_api"] = api
