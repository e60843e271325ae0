"""Shared fixtures. Sections are owned by the feature they serve; keep edits local."""

from __future__ import annotations

import pytest

from settings_server import create_app


@pytest.fixture
def app():
    """The app on a fresh in-memory store."""
    return create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://"})


@pytest.fixture
def client(app):
    return app.test_client()


# --- users and tokens (issue 4) -------------------------------------------------------------


@pytest.fixture
def make_user(app):
    """``make_user(username="alice", *, staff=False, superuser=False, password=None)`` creates
    an active user in the ``app`` store; the password defaults to ``"pw-<username>"``."""
    from settings_server.auth import authenticator

    def make(username="alice", *, staff=False, superuser=False, password=None):
        return authenticator(app).users.create(
            username,
            f"pw-{username}" if password is None else password,
            is_staff=staff or superuser,
            is_superuser=superuser,
        )

    return make


@pytest.fixture
def auth_headers(app):
    """``auth_headers(user)`` -> ``{"Authorization": "Token inv-..."}`` with a freshly issued
    token of ``user``."""
    from settings_server.auth import authenticator

    def headers(user, name="tests"):
        return {"Authorization": f"Token {authenticator(app).tokens.issue(user, name).key}"}

    return headers
