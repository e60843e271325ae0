"""GET /api/health/: is this worker up and can it reach its store? For load balancers and
orchestrators; no authentication, and credentials sent anyway are ignored."""

from __future__ import annotations

import logging

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from backends import StorageUnavailable

from ..errors import RETRY_AFTER, STORAGE_UNAVAILABLE
from ..rendering import json_response

blp = Blueprint("health", __name__, url_prefix="/api", description="Health check")

LOGGER = logging.getLogger("settings_server.health")


class HealthSchema(Schema):
    """The server's health. Anonymous callers may read it, so it names no host, URL or error
    text; the reason for a failure is in the server's log."""

    status = fields.String(
        required=True, metadata={"enum": ["ok", "unavailable"], "description": "Overall"}
    )
    storage = fields.String(
        required=True,
        metadata={"enum": ["ok", "unavailable"], "description": "Whether the store answered"},
    )
    detail = fields.String(metadata={"description": "Only when unavailable"})


@blp.route("/health/")
class Health(MethodView):
    @blp.doc(
        security=[{}],
        responses={
            "503": {
                "description": "The store did not answer within the storage timeout; retry "
                "after `Retry-After` seconds",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": HealthSchema}},
            }
        },
    )
    @blp.response(200, HealthSchema, description="The store answered")
    def get(self):
        """Health check: 200 when the store answers a ping, else 503 (no authentication)."""
        try:
            current_app.extensions["settings_store"].ping()
        except StorageUnavailable as exc:
            LOGGER.warning("health check: %s", exc)
            response = json_response(
                {"status": "unavailable", "storage": "unavailable",
                 "detail": STORAGE_UNAVAILABLE},
                503,
            )
            response.headers["Retry-After"] = RETRY_AFTER
            return response
        return json_response({"status": "ok", "storage": "ok"})
