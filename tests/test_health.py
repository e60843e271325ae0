"""GET /api/health/ and the 503 of an unreachable store, through the test client (issue 6)."""

from __future__ import annotations

import json
import logging
import time

from servers import free_port

from settings_server import create_app

HEALTH = "/api/health/"


def test_healthy_without_authentication(client):
    for headers in ({}, {"Authorization": "Token inv-wrong"}, {"Authorization": "Basic !!"}):
        response = client.get(HEALTH, headers=headers)
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok", "storage": "ok"}
        assert response.mimetype == "application/json"


def test_documented_without_security(client):
    operation = client.get("/api/schema/").get_json()["paths"][HEALTH]["get"]
    assert operation["security"] == [{}]
    assert {"200", "503"} <= set(operation["responses"])


def test_unreachable_store_is_503_without_secrets(caplog):
    """A Redis that refuses connections: health and API answer 503 JSON with Retry-After at
    once, and neither the bodies nor the log hold the password or the URL."""
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there
    app = create_app({
        "TESTING": True,
        "SETTINGS_BACKEND": f"redis://:hunter2-secret@127.0.0.1:{port}/0?timeout=0.5",
    })
    client = app.test_client()
    started = time.monotonic()
    health = client.get(HEALTH)
    token = f"inv-{'ab' * 20}-20250101"  # well formed: its check needs the store
    api = client.get("/api/settings/global/", headers={"Authorization": f"Token {token}"})
    assert time.monotonic() - started < 2
    assert health.status_code == 503 and health.headers["Retry-After"] == "5"
    assert health.get_json() == {
        "status": "unavailable", "storage": "unavailable", "detail": "Storage unavailable."
    }
    assert str(port) not in health.get_data(as_text=True)
    assert api.status_code == 503 and api.headers["Retry-After"] == "5"
    assert api.get_json() == {"detail": "Storage unavailable."}  # no host, path or error text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "health check: " in logged  # the reason is in the server's log
    for text in (logged, health.get_data(as_text=True), api.get_data(as_text=True)):
        assert "hunter2-secret" not in text


def test_request_lines_and_level(caplog):
    caplog.set_level(logging.DEBUG)
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://"})
    app.test_client().get(HEALTH + "?token=abc")
    (record,) = [r for r in caplog.records if r.name == "settings_server.access"]
    line = json.loads(record.getMessage())
    assert set(line) == {"time", "event", "method", "path", "status", "duration_ms", "user",
                         "auth", "remote", "pid"}
    assert (line["method"], line["path"], line["status"]) == ("GET", HEALTH, 200)
    assert line["duration_ms"] >= 0 and line["user"] is None

    caplog.clear()
    quiet = create_app(
        {"TESTING": True, "SETTINGS_BACKEND": "memory://", "SETTINGS_LOG_LEVEL": "warning"}
    )
    quiet.test_client().get(HEALTH)
    assert not [r for r in caplog.records if r.name == "settings_server.access"]
    create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://"})  # back to info
