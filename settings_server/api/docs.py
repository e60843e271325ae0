"""The interactive page of the API, ``/api/docs/``, that works without internet.

flask-smorest renders the page (Swagger UI, its ``swagger_ui.html``); the scripts and styles it
names come from the app itself, ``/api/docs/swagger-ui/…``, out of the Swagger UI build that the
flask-swagger-ui package ships (``flask_swagger_ui/dist``, kept in step with Swagger UI's
releases). Nothing is fetched from a CDN: the page renders inside a network with no way out.
"""

from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, Flask, current_app, send_from_directory

#: Where the Swagger UI files are served, relative to the page (``/api/docs/``).
ASSETS_PATH = "swagger-ui/"
#: Swagger UI options (``SwaggerUIBundle(config)``): no validator badge (it would ask
#: validator.swagger.io about the document), operations listed with their paths.
SWAGGER_UI_CONFIG = {"validatorUrl": None, "displayOperationId": False, "tryItOutEnabled": False}
#: Browsers may keep the files a day: they change only with the installed package.
ASSETS_MAX_AGE = 86_400

blp = Blueprint("docs_assets", __name__)


def init_app(app: Flask) -> None:
    """Configure flask-smorest's Swagger UI page at ``/api/docs/`` and serve its files; call
    before ``Api(app)``."""
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "docs/")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", ASSETS_PATH)
    app.config.setdefault("OPENAPI_SWAGGER_UI_CONFIG", SWAGGER_UI_CONFIG)
    app.extensions["settings_docs_assets"] = str(files("flask_swagger_ui") / "dist")
    app.register_blueprint(blp)


@blp.get(f"/api/docs/{ASSETS_PATH}<path:filename>")
def swagger_ui_asset(filename: str):
    """One file of the Swagger UI build (404 for anything else)."""
    return send_from_directory(
        current_app.extensions["settings_docs_assets"], filename, max_age=ASSETS_MAX_AGE
    )
