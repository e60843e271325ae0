"""Configuration read from the environment when the app is created."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

DEFAULT_BACKEND = "sqlite:///settings.db"

#: Environment variable -> default. One place for every variable we read; each is also a
#: config key of the same name.
ENVIRONMENT = {
    "SETTINGS_BACKEND": DEFAULT_BACKEND,
    "SETTINGS_REGISTRY_FILE": None,
    "SETTINGS_SECRET_KEY": None,
    "SETTINGS_ADMIN_USER": None,
    "SETTINGS_ADMIN_PASSWORD": None,
    "SETTINGS_TRUSTED_ORIGINS": "",
    "SETTINGS_STORAGE_TIMEOUT": "2.0",
    "INVENTREE_CURRENCY_CODES": None,
    # Change control (settings_server/history.py, settings_server/pinned.py).
    "SETTINGS_HISTORY_LIMIT": "100",
    "SETTINGS_OVERRIDES": None,
    "SETTINGS_OVERRIDES_FILE": None,
    # Limits that protect the server (settings_server/security.py, settings_server/serving.py).
    "SETTINGS_MAX_BODY_BYTES": "1048576",
    "SETTINGS_LOGIN_LIMIT_PER_ADDRESS": "10/minute",
    "SETTINGS_LOGIN_LIMIT_PER_USERNAME": "5/5 minutes",
    "SETTINGS_TRUSTED_PROXIES": "",
    "SETTINGS_HEADER_TIMEOUT": "5",
    "SETTINGS_BODY_TIMEOUT": "10",
    "SETTINGS_WORKER_CONNECTIONS": "1000",
    # Serving (settings-server run / settings_server/gunicorn_conf.py) and logs.
    "SETTINGS_BIND": "127.0.0.1:8000",
    "WEB_CONCURRENCY": None,  # gunicorn workers; None: 2 x cores + 1 (at most 8), 1 for memory://
    "SETTINGS_GRACEFUL_TIMEOUT": "30",
    "SETTINGS_LOG_LEVEL": "info",
    # Metrics (settings_server/metrics.py): a bearer token that may read /metrics.
    "SETTINGS_METRICS_TOKEN": None,
    # The change feed (settings_server/api/feed.py): seconds between an event stream's heartbeats.
    "SETTINGS_FEED_HEARTBEAT": "15",
}


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings-server configuration found in ``environ`` (default: ``os.environ``)."""
    environ = os.environ if environ is None else environ
    return {name: environ.get(name, default) for name, default in ENVIRONMENT.items()}


def history_limit(config: Mapping[str, Any]) -> int:
    """``SETTINGS_HISTORY_LIMIT``: history entries kept per setting, 0 for none."""
    raw = config["SETTINGS_HISTORY_LIMIT"]
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        limit = -1
    if limit < 0:
        raise ValueError(f"SETTINGS_HISTORY_LIMIT must be a whole number, 0 or more; got {raw!r}")
    return limit
