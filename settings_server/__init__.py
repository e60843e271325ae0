"""settings-server: InvenTree's Settings API (version 327) as a small Flask service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

__version__ = "0.1.0"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the WSGI app: read the environment, then ``config`` on top, build the registry and
    the store (without connecting), register the blueprints.

    Raises :class:`backends.ConfigurationError` or :class:`settings_server.registry.RegistryError`
    (or ``ValueError`` for a bad ``SETTINGS_LOG_LEVEL``) when the configuration cannot work, so
    a bad deployment stops at start-up. Sets the level of the ``settings_server`` loggers.
    """
    from backends import store_from_url

    from . import access_log, api, auth, errors, metrics, pinned, pipeline, security, speedups, web
    from .config import from_environment, history_limit
    from .history import History
    from .registry import load_registry
    from .service import SettingsService

    app = pipeline.SettingsApp(__name__)
    app.config.update(from_environment())
    app.config.update(config or {})
    app.json.sort_keys = False  # keep field order for anything rendered through Flask

    app.extensions["settings_store"] = store_from_url(
        app.config["SETTINGS_BACKEND"], timeout=app.config["SETTINGS_STORAGE_TIMEOUT"]
    )
    speedups.init_app(app)  # wraps the store: before anything takes it
    store = app.extensions["settings_store"]
    registry = load_registry(app.config.get("SETTINGS_REGISTRY_FILE"))
    app.extensions["settings_registry"] = registry
    history = History(store, history_limit(app.config))
    app.extensions["settings_history"] = history
    service = SettingsService(
        store,
        registry,
        currency_codes_override=app.config.get("INVENTREE_CURRENCY_CODES"),
        history=history,
        etag_secret=lambda: auth.authenticator(app).secret_key,
    )
    try:
        service.pin(pinned.read(app.config))
    except ValueError as exc:
        raise pinned.PinnedSettingsError(f"pinned settings: {exc}") from None
    app.extensions["settings_service"] = service

    auth.init_app(app)
    metrics.init_app(app)
    security.init_app(app)
    api.init_app(app)
    web.init_app(app)  # the settings page, /settings/, and / redirecting to it
    errors.init_app(app)  # after flask-smorest, whose own error handler it replaces
    access_log.init_app(app)
    pipeline.init_app(app)  # the hooks around every view, in their order
    return app
