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
