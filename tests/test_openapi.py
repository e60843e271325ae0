"""The served OpenAPI document describes the API, and the API keeps to it (schemathesis)."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from settings_server import create_app
from settings_server.auth import authenticator

app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://"})
_staff = authenticator(app).users.create("schema-staff", "pw-schema", is_staff=True)
HEADERS = {"Authorization": f"Token {authenticator(app).tokens.issue(_staff, 'schema').key}"}

# The change feed waits (up to 300 s) or streams without end by design: tests/test_feed.py
# checks its answers, arguments and errors instead.
schema = schemathesis.openapi.from_wsgi("/api/schema/", app).exclude(
    path_regex="^/api/settings/(changes|events)/$"
)


@schema.parametrize()
@settings(max_examples=int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25")), deadline=None, suppress_health_check=list(HealthCheck))
def test_api_keeps_to_its_schema(case):
    """No server error, no undocumented status, no response outside its schema.

    ``SCHEMATHESIS_EXAMPLES`` sets the examples per operation (25; try 300 before a release).
    Negative-data rejection is not checked: like InvenTree, the lists ignore a ``limit`` or
    ``offset`` that is not a positive integer instead of rejecting it (docs/contract.md §6.2).
    """
    case.call_and_validate(
        headers=HEADERS,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
    )


def test_document_uses_inventree_schema_names(client):
    components = client.get("/api/schema/").get_json()["components"]["schemas"]
    for name in ("GlobalSettings", "UserSettings", "NotificationUserSetting",
                 "PaginatedGlobalSettingsList", "PaginatedUserSettingsList",
                 "PaginatedNotificationUserSettingList", "PatchedGlobalSettings",
                 "PatchedUserSettings", "PatchedNotificationUserSetting"):
        assert name in components


def test_key_parameters_list_the_registry(client, app):
    paths = client.get("/api/schema/").get_json()["paths"]
    registry = app.extensions["settings_registry"]
    (param,) = [p for p in paths["/api/settings/global/{key}/"]["parameters"] if p["name"] == "key"]
    assert param["schema"]["enum"] == [k for k in registry.global_settings if not k.startswith("_")]
    assert len(param["schema"]["enum"]) == 136
    (param,) = [p for p in paths["/api/settings/user/{key}/"]["parameters"] if p["name"] == "key"]
    assert param["schema"]["enum"] == list(registry.user_settings)


def test_interactive_documentation_is_served(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"/api/schema/" in response.data
