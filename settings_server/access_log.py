"""One JSON line per request on the ``settings_server.access`` logger, and the log level.

A line holds what an operator needs and nothing a caller could have meant to keep secret::

    {"time": "2024-05-01T12:00:00.123Z", "event": "request", "method": "PATCH",
     "path": "/api/settings/user/DATE_DISPLAY_FORMAT/", "status": 200, "duration_ms": 3.2,
     "user": 7, "auth": "token", "remote": "127.0.0.1", "pid": 4242}

``user`` is the authenticated user's id (``null`` when anonymous or refused), ``auth`` the
scheme that succeeded, ``pid`` the worker that answered. The query string (even its parameter
names: ``?<token>`` would be one), headers, cookies and bodies are never logged, so neither
passwords, tokens, session cookies nor setting values can appear.

:func:`configure_logging` sets the level of every ``settings_server`` logger
(``SETTINGS_LOG_LEVEL``). When nothing else has configured logging (no handler on the root
logger, as under gunicorn), request lines go to stdout and other messages to stderr;
otherwise everything propagates to the handlers already there (pytest's, or the operator's
logging configuration).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Request, Response

LOGGER = logging.getLogger("settings_server.access")
LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_PATH = 300  # characters of the path kept in a line


class _StdoutHandler(logging.StreamHandler):
    """Request lines on stdout, the message alone (it is the JSON line)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))


class _StderrHandler(logging.StreamHandler):
    """Every other ``settings_server`` message on stderr, formatted like gunicorn's."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(
            logging.Formatter(
                "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                "%Y-%m-%d %H:%M:%S %z",
            )
        )


def configure_logging(level: str) -> None:
    """Set the level of the ``settings_server`` loggers; when logging is not configured
    otherwise, send request lines to stdout and other messages (warnings such as a failed
    health check, errors) to stderr. Raises ``ValueError`` for an unknown level."""
    name = str(level).strip().lower()
    if name not in LEVELS:
        raise ValueError(f"SETTINGS_LOG_LEVEL must be one of {', '.join(LEVELS)}, got {level!r}")
    package = logging.getLogger("settings_server")  # also Flask's app.logger
    package.setLevel(name.upper())
    if logging.getLogger().handlers:
        return
    for logger, handler_class in ((LOGGER, _StdoutHandler), (package, _StderrHandler)):
        if not any(type(handler) is handler_class for handler in logger.handlers):
            logger.addHandler(handler_class())
    LOGGER.propagate = False  # request lines on stdout only


def init_app(app: Flask) -> None:
    """Set the log level of ``app``'s loggers; :func:`log_request` is the last step of every
    request (:mod:`.pipeline`): it logs the response the others leave."""
    configure_logging(app.config.get("SETTINGS_LOG_LEVEL") or "info")


def log_request(response: Response, seconds: float | None, current: Request, state: Any) -> None:
    """Log the request ``current`` (``state``: its ``flask.g``), answered with ``response``
    ``seconds`` after it began."""
    if not LOGGER.isEnabledFor(logging.INFO):
        return
    user = state.get("user")
    line = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": "request",
        "method": current.method,
        "path": current.path[:MAX_PATH],
        "status": response.status_code,
        "duration_ms": round(seconds * 1000, 2) if seconds is not None else None,
        "user": user.id if user is not None else None,
        "auth": state.get("auth_scheme"),
        "remote": current.remote_addr,
        "pid": os.getpid(),
    }
    LOGGER.info(json.dumps(line, ensure_ascii=True))
