"""``/api/user/tokens/``: the caller lists, creates and revokes their own tokens (the settings
page's Tokens panel; an extension beside InvenTree's ``/api/user/token/``)."""

from __future__ import annotations

import pytest
from credentials import basic

from settings_server import create_app
from settings_server.auth import authenticator


def test_create_shows_the_secret_once_and_it_works(client, alice, auth_headers):
    headers = auth_headers(alice)
    created = client.post("/api/user/tokens/", json={"name": "ci runner"}, headers=headers)
    assert created.status_code == 201
    body = created.get_json()
    assert list(body) == ["id", "token", "name", "expiry"]
    assert body["name"] == "ci-runner" and body["token"].startswith("inv-")
    me = client.get("/api/user/me/", headers={"Authorization": f"Token {body['token']}"})
    assert me.status_code == 200 and me.get_json()["username"] == "alice"
    listed = client.get("/api/user/tokens/", headers=headers)
    assert listed.status_code == 200
    assert body["token"] not in listed.get_data(as_text=True)
    assert [(t["name"], t["status"]) for t in listed.get_json()] == [
        ("tests", "live"), ("ci-runner", "live")]
    assert set(listed.get_json()[1]) == {"id", "name", "created", "expiry", "status"}


def test_form_bodies_are_read_like_the_settings_writes(client, alice, auth_headers):
    created = client.post("/api/user/tokens/", data={"name": "laptop"}, headers=auth_headers(alice))
    assert created.status_code == 201 and created.get_json()["name"] == "laptop"


def test_a_new_token_revokes_the_live_one_of_the_same_name(client, alice, auth_headers):
    headers = auth_headers(alice)
    first = client.post("/api/user/tokens/", json={"name": "laptop"}, headers=headers).get_json()
    client.post("/api/user/tokens/", json={"name": "laptop"}, headers=headers)
    statuses = [t["status"] for t in client.get("/api/user/tokens/", headers=headers).get_json()]
    assert statuses == ["live", "revoked", "live"]
    assert client.get("/api/user/me/", headers={"Authorization": f"Token {first['token']}"}).status_code == 401


def test_revoke_ends_the_token(client, alice, auth_headers):
    headers = auth_headers(alice)
    made = client.post("/api/user/tokens/", json={"name": "old"}, headers=headers).get_json()
    assert client.delete(f"/api/user/tokens/{made['id']}/", headers=headers).status_code == 204
    refused = client.get("/api/user/me/", headers={"Authorization": f"Token {made['token']}"})
    assert refused.status_code == 401 and refused.get_json() == {"detail": "Token has been revoked"}
    assert client.delete(f"/api/user/tokens/{made['id']}/", headers=headers).status_code == 204
    assert [t["status"] for t in client.get("/api/user/tokens/", headers=headers).get_json()] == [
        "live", "revoked"]


@pytest.mark.parametrize(
    "body, errors",
    [
        ({"name": ""}, {"name": ["Give the token a name of 1 to 100 characters."]}),
        ({"name": " \t "}, {"name": ["Give the token a name of 1 to 100 characters."]}),
        ({"name": "x" * 101}, {"name": ["Give the token a name of 1 to 100 characters."]}),
        ({"name": "<b>mine</b>"}, {"name": ["Remove HTML tags from this value"]}),
        ({}, {"name": ["Missing data for required field."]}),
        ({"name": 7}, {"name": ["Not a valid string."]}),
    ],
)
def test_bad_names_are_400_and_create_nothing(client, alice, auth_headers, body, errors):
    headers = auth_headers(alice)
    answer = client.post("/api/user/tokens/", json=body, headers=headers)
    assert (answer.status_code, answer.get_json()) == (400, errors)
    assert len(client.get("/api/user/tokens/", headers=headers).get_json()) == 1


def test_bodies_that_are_not_json_or_forms_are_refused(client, alice, auth_headers):
    headers = auth_headers(alice)
    text = client.post("/api/user/tokens/", data="name=x", content_type="text/plain", headers=headers)
    assert text.status_code == 415
    broken = client.post("/api/user/tokens/", data="{", content_type="application/json", headers=headers)
    assert broken.status_code == 400 and "JSON parse error" in broken.get_json()["detail"]


def test_anonymous_callers_get_401_before_the_body_is_read(client, alice, auth_headers):
    mine = client.post("/api/user/tokens/", json={"name": "x"}, headers=auth_headers(alice)).get_json()
    for method, url, body in (
        ("get", "/api/user/tokens/", None),
        ("post", "/api/user/tokens/", {"name": ""}),
        ("delete", f"/api/user/tokens/{mine['id']}/", None),
    ):
        answer = getattr(client, method)(url, json=body)
        assert answer.status_code == 401, (method, url)
        assert answer.get_json() == {"detail": "Authentication credentials were not provided."}
    listed = client.get("/api/user/tokens/", headers=auth_headers(alice, "again")).get_json()
    assert [t["status"] for t in listed][:2] == ["live", "live"]


def test_nobody_sees_or_revokes_another_users_tokens(client, alice, bob, auth_headers):
    alices = client.post("/api/user/tokens/", json={"name": "a"}, headers=auth_headers(alice)).get_json()
    bob_headers = auth_headers(bob)
    assert [t["name"] for t in client.get("/api/user/tokens/", headers=bob_headers).get_json()] == ["tests"]
    refused = client.delete(f"/api/user/tokens/{alices['id']}/", headers=bob_headers)
    assert (refused.status_code, refused.get_json()) == (404, {"detail": "Not found."})
    assert client.get("/api/user/me/", headers={"Authorization": f"Token {alices['token']}"}).status_code == 200
    assert client.delete("/api/user/tokens/999/", headers=bob_headers).status_code == 404


def test_methods_that_do_not_exist_are_405(client, alice, auth_headers):
    headers = auth_headers(alice)
    assert client.put("/api/user/tokens/", json={}, headers=headers).status_code == 405
    assert client.get("/api/user/tokens/1/", headers=headers).status_code == 405


def test_session_writes_need_the_csrf_header(client, alice):
    login = client.get("/api/user/token/?name=web", headers=basic("alice", "pw-alice"))
    assert login.status_code == 200
    refused = client.post("/api/user/tokens/", json={"name": "x"})
    assert refused.status_code == 403
    assert refused.get_json() == {"detail": "CSRF Failed: CSRF token missing."}
    csrf = client.get_cookie("csrftoken").value
    made = client.post("/api/user/tokens/", json={"name": "x"}, headers={"X-CSRFToken": csrf})
    assert made.status_code == 201


def test_documented_in_the_openapi_document(client):
    paths = client.get("/api/schema/").get_json()["paths"]
    assert set(paths["/api/user/tokens/"]) >= {"get", "post"}
    assert "delete" in paths["/api/user/tokens/{token_id}/"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_tokens_on_every_persistent_store(request, tmp_path, backend):
    url = f"sqlite:///{tmp_path}/t.db" if backend == "sqlite" else request.getfixturevalue("redis_url")
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    user = authenticator(app).users.create("carol", "pw-carol")
    headers = {"Authorization": f"Token {authenticator(app).tokens.issue(user, 't').key}"}
    client = app.test_client()
    made = client.post("/api/user/tokens/", json={"name": "n"}, headers=headers).get_json()
    assert client.delete(f"/api/user/tokens/{made['id']}/", headers=headers).status_code == 204
    assert [t["status"] for t in client.get("/api/user/tokens/", headers=headers).get_json()] == [
        "live", "revoked"]
