"""One JSON error shape for every response under /api/, shaped like DRF's (responses are
rendered by :mod:`settings_server.rendering`)."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from flask import Flask, Response, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from backends import StorageUnavailable

from .rendering import allow_header, json_response

NOT_FOUND = "Not found."
PERMISSION_DENIED = "You do not have permission to perform this action."
NOT_AUTHENTICATED = "Authentication credentials were not provided."
STORAGE_UNAVAILABLE = "Storage unavailable."
LOGGER = logging.getLogger("settings_server.errors")
RETRY_AFTER = "5"  # seconds, on every 503 for an unavailable store


class ApiError(HTTPException):
    """An error whose JSON body is given whole, e.g. ``{"value": ["..."]}``."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.code = status
        self.body = body
        self.extra_headers = headers or {}

    def get_response(self, environ=None, scope=None) -> Response:
        response = json_response(self.body, self.code)
        response.headers.update(self.extra_headers)
        return response


def fail(status: int, body: Any, headers: dict[str, str] | None = None) -> NoReturn:
    raise ApiError(status, body, headers)


def fail_detail(status: int, detail: str, headers: dict[str, str] | None = None) -> NoReturn:
    raise ApiError(status, {"detail": detail}, headers)


def not_found() -> NoReturn:
    fail_detail(404, NOT_FOUND)


def _handle_http_exception(exc: HTTPException) -> Response:
    if isinstance(exc, ApiError):
        return exc.get_response()
    if exc.code == 404 and request.url_rule is None:
        # No route matched: InvenTree's catch-all answers with Django's spaced JSON.
        return json_response(
            {"detail": "API endpoint not found", "url": request.url}, 404, spaced=True
        )
    if exc.code == 405:
        response = json_response({"detail": f'Method "{request.method}" not allowed.'}, 405)
        if getattr(exc, "valid_methods", None):
            response.headers["Allow"] = allow_header(exc.valid_methods)
        return response
    detail = exc.description if exc.code and exc.code < 500 else "A server error occurred."
    return json_response({"detail": detail}, exc.code or 500)


def storage_unavailable(exc: StorageUnavailable) -> Response:
    # The reason (host, path, driver error) is for the operator's log, not for any caller.
    LOGGER.warning("storage unavailable: %s", exc)
    response = json_response({"detail": STORAGE_UNAVAILABLE}, 503)
    response.headers["Retry-After"] = RETRY_AFTER
    return response


def invalid_input(exc: ValidationError) -> Response:
    """400 for every marshmallow or webargs validation error: the schemas shape ``messages``
    as DRF's body (``{"value": [...]}``, ``{"non_field_errors": [...]}``, ``{"search": [...]}``)."""
    return json_response(exc.messages, 400)


def _handle_unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _handle_http_exception(exc)
    LOGGER.exception("unhandled error")
    return json_response({"detail": "A server error occurred."}, 500)


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(StorageUnavailable, storage_unavailable)
    app.register_error_handler(ValidationError, invalid_input)
    if not app.testing:
        app.register_error_handler(Exception, _handle_unexpected)
