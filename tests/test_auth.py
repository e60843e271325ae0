"""Authentication, sessions, CSRF, tokens and the /api/user/ endpoints (docs/contract.md §3, §11.2, §11.3)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from settings_server import create_app
from settings_server.auth import authenticator, require_staff, require_superuser, require_user
from settings_server.rendering import json_response
from settings_server.users import DuplicateUser, InvalidUsername

TOKEN_FORMAT = re.compile(r"inv-[0-9a-f]{40}-\d{8}")
ME = "/api/user/me/"
TOKEN = "/api/user/token/"


def basic(username: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def body(response) -> dict:
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.data)


def assert_401(response, detail: str) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    assert response.data == json.dumps({"detail": detail}, separators=(",", ":")).encode()


def set_clock(app, moment: datetime) -> None:
    authenticator(app).tokens.now = lambda: moment


def cookie(response, name: str) -> str:
    """The full Set-Cookie header for ``name``."""
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]
    return header


# -- §3.1: every 401 ----------------------------------------------------------------------------


def test_no_credentials(client):
    assert_401(client.get(ME), "Authentication credentials were not provided.")


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Token inv-" + "0" * 40 + "-20250101", "Invalid token."),
        ("Token not-a-token", "Invalid token."),
        ("Token", "Invalid token header. No credentials provided."),
        ("Token a b", "Invalid token header. Token string should not contain spaces."),
        ("Basic", "Invalid basic header. No credentials provided."),
        ("Basic a b", "Invalid basic header. Credentials string should not contain spaces."),
        ("Basic !!!", "Invalid basic header. Credentials not correctly base64 encoded."),
        (
            "Basic " + base64.b64encode(b"no-colon").decode(),
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
        ("Bearer abc", "Authentication credentials were not provided."),
    ],
)
def test_malformed_or_unknown_credentials(client, alice, header, detail):
    assert_401(client.get(ME, headers={"Authorization": header}), detail)


def test_wrong_basic_password_and_unknown_user(client, alice):
    assert_401(client.get(ME, headers=basic("alice", "wrong")), "Invalid username/password.")
    assert_401(client.get(ME, headers=basic("nobody", "pw")), "Invalid username/password.")


@pytest.mark.parametrize("keyword", ["Token", "token", "TOKEN", "tOkEn"])
def test_token_keyword_is_case_insensitive(client, alice, auth_headers, keyword):
    key = auth_headers(alice)["Authorization"].split()[1]
    response = client.get(ME, headers={"Authorization": f"{keyword} {key}"})
    assert response.status_code == 200
    assert body(response)["username"] == "alice"


def test_basic_authentication(client, alice):
    response = client.get(ME, headers=basic("alice", "pw-alice"))
    assert response.status_code == 200
    assert body(response)["pk"] == alice.id


def test_invalid_credentials_never_fall_back_to_anonymous(client, alice):
    """Even where anonymous access is fine (GET /api/, unrouted paths), bad credentials give 401."""
    bad = {"Authorization": "Token inv-" + "1" * 40 + "-20250101"}
    assert_401(client.get("/api/", headers=bad), "Invalid token.")
    assert_401(client.get("/api/no/such/path/", headers=bad), "Invalid token.")
    assert_401(client.get("/api/", headers=basic("alice", "wrong")), "Invalid username/password.")


def test_paths_outside_api_are_not_authenticated(client):
    response = client.get("/elsewhere", headers={"Authorization": "Token bogus"})
    assert response.status_code == 404


def test_inactive_user_is_refused_everywhere(app, client, alice, auth_headers):
    headers = auth_headers(alice)
    login = client.get(TOKEN, headers=basic("alice", "pw-alice"))
    assert login.status_code == 200
    authenticator(app).users.deactivate(alice.id)
    assert_401(client.get(ME, headers=headers), "User inactive or deleted.")
    assert_401(client.get(ME, headers=basic("alice", "pw-alice")), "Invalid username/password.")
    # The session cookie from the login is still in the client's jar.
    assert_401(client.get(ME), "Authentication credentials were not provided.")


def test_deleted_user_token_is_invalid(app, client, alice, auth_headers):
    headers = auth_headers(alice)
    auth = authenticator(app)
    auth.tokens.purge_user(alice.id)
    auth.users.delete(alice.id)
    assert_401(client.get(ME, headers=headers), "Invalid token.")


# -- tokens -------------------------------------------------------------------------------------


def test_token_endpoint_issues_a_token(app, client, alice):
    moment = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    set_clock(app, moment)
    response = client.get(
        TOKEN, query_string={"name": "  my client\t"}, headers=basic("alice", "pw-alice")
    )
    assert response.status_code == 200
    data = body(response)
    assert list(data) == ["token", "name", "expiry"]
    assert TOKEN_FORMAT.fullmatch(data["token"]) and data["token"].endswith("-20261129")
    assert data["name"] == "my-client"
    assert data["expiry"] == "2027-11-29"
    assert response.data.startswith(b'{"token":"inv-')  # compact JSON
    me = client.get(ME, headers={"Authorization": f"Token {data['token']}"})
    assert me.status_code == 200


def test_token_name_defaults_to_empty_and_is_truncated(client, alice):
    assert body(client.get(TOKEN, headers=basic("alice", "pw-alice")))["name"] == ""
    long = body(
        client.get(TOKEN, query_string={"name": "x" * 150}, headers=basic("alice", "pw-alice"))
    )
    assert long["name"] == "x" * 100


def test_token_name_with_html_is_rejected(client, alice):
    response = client.get(
        TOKEN, query_string={"name": "<b>x</b>"}, headers=basic("alice", "pw-alice")
    )
    assert response.status_code == 400
    assert response.data == b'{"non_field_errors":["Remove HTML tags from this value"]}'


def test_token_endpoint_needs_authentication_and_only_gets(client, alice, auth_headers):
    assert_401(client.get(TOKEN), "Authentication credentials were not provided.")
    assert client.post(TOKEN, headers=auth_headers(alice)).status_code == 405
    assert client.post(ME, headers=auth_headers(alice)).status_code == 405


def test_reissue_by_name_revokes_only_that_name(client, alice):
    def issue(name):
        response = client.get(
            TOKEN, query_string={"name": name}, headers=basic("alice", "pw-alice")
        )
        return {"Authorization": f"Token {body(response)['token']}"}

    first, other = issue("laptop"), issue("phone")
    second = issue("laptop")
    assert first != second
    assert_401(client.get(ME, headers=first), "Token has been revoked")
    assert client.get(ME, headers=second).status_code == 200
    assert client.get(ME, headers=other).status_code == 200


def test_revoke_by_name_and_by_id(app, client, alice, auth_headers):
    tokens = authenticator(app).tokens
    by_name, by_id = auth_headers(alice, "a"), auth_headers(alice, "b")
    assert [t.name for t in tokens.revoke(alice.id, name="a")] == ["a"]
    (b_token,) = [t for t in tokens.list_for_user(alice.id) if t.name == "b"]
    assert [t.id for t in tokens.revoke(alice.id, token_id=b_token.id)] == [b_token.id]
    assert tokens.revoke(alice.id, token_id=b_token.id) == []  # already revoked
    assert_401(client.get(ME, headers=by_name), "Token has been revoked")
    assert_401(client.get(ME, headers=by_id), "Token has been revoked")


def test_token_expires_after_365_days(app, client, alice, auth_headers):
    created = datetime(2026, 1, 10, 23, 59, tzinfo=UTC)
    set_clock(app, created)
    headers = auth_headers(alice)
    set_clock(app, datetime(2027, 1, 10, 23, 0, tzinfo=UTC))  # the expiry date: still valid
    assert client.get(ME, headers=headers).status_code == 200
    set_clock(app, datetime(2027, 1, 11, 0, 1, tzinfo=UTC))
    assert_401(client.get(ME, headers=headers), "Token has expired")


def test_tokens_are_stored_only_as_hashes(app, client, alice):
    response = client.get(
        TOKEN,
        query_string={"name": "n"},
        headers=basic("alice", "pw-alice"),
        environ_base={"HTTP_USER_AGENT": "pytest-agent", "REMOTE_ADDR": "10.1.2.3"},
    )
    key = body(response)["token"]
    store = app.extensions["settings_store"]
    dump = json.dumps({ns: store.get_all(ns) for ns in store.namespaces()})
    assert key not in dump
    assert key[4:44] not in dump
    record = store.get("tokens", hashlib.sha256(key.encode()).hexdigest())
    assert record["user"] == alice.id and record["name"] == "n"
    assert record["user_agent"] == "pytest-agent" and record["remote_addr"] == "10.1.2.3"
    assert key not in repr(authenticator(app).tokens.list_for_user(alice.id))


def test_token_authentication_costs_two_store_reads(app, client, alice, auth_headers):
    headers = auth_headers(alice)
    client.get(ME, headers=headers)  # warm-up: per-process bootstrap
    store = app.extensions["settings_store"]
    calls = []
    for method in ("get", "get_many", "get_all", "set", "set_many", "compare_and_set", "incr"):
        original = getattr(store, method)

        def spy(*args, _original=original, _method=method, **kwargs):
            calls.append(_method)
            return _original(*args, **kwargs)

        setattr(store, method, spy)
    assert client.get(ME, headers=headers).status_code == 200
    assert calls == ["get", "get"]


# -- /api/user/me/ ------------------------------------------------------------------------------


def test_me_body(client, make_user, auth_headers):
    boss = make_user("boss", superuser=True)
    response = client.get(ME, headers=auth_headers(boss))
    assert response.headers["Content-Type"] == "application/json"
    data = json.loads(response.data)
    assert list(data) == [
        "pk",
        "username",
        "first_name",
        "last_name",
        "email",
        "groups",
        "is_staff",
        "is_superuser",
        "is_active",
        "profile",
    ]
    assert data["pk"] == boss.id and data["groups"] == []
    assert (data["is_staff"], data["is_superuser"], data["is_active"]) == (True, True, True)
    assert list(data["profile"]) == [
        "language",
        "theme",
        "widgets",
        "displayname",
        "position",
        "status",
        "location",
        "active",
        "contact",
        "type",
        "organisation",
        "primary_group",
    ]
    assert b", " not in response.data and b'": ' not in response.data


# -- sessions -----------------------------------------------------------------------------------


def test_login_sets_session_and_csrf_cookies(client, alice):
    response = client.get(TOKEN, headers=basic("alice", "pw-alice"))
    session = cookie(response, "sessionid")
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Max-Age=1209600" in session
    assert "Path=/" in session
    csrf = cookie(response, "csrftoken")
    assert "HttpOnly" not in csrf and "SameSite=Lax" in csrf
    assert client.get(ME).status_code == 200  # the cookie jar now authenticates


def test_forged_session_cookie_is_anonymous(client, alice):
    client.set_cookie("sessionid", "eyJ1IjoxfQ.forged.signature")
    assert_401(client.get(ME), "Authentication credentials were not provided.")


def test_password_change_ends_basic_and_session(app, client, alice):
    client.get(TOKEN, headers=basic("alice", "pw-alice"))
    assert client.get(ME).status_code == 200
    authenticator(app).users.set_password(alice.id, "new-secret")
    assert_401(client.get(ME), "Authentication credentials were not provided.")
    assert_401(client.get(ME, headers=basic("alice", "pw-alice")), "Invalid username/password.")
    assert client.get(ME, headers=basic("alice", "new-secret")).status_code == 200


def test_secret_key_is_shared_through_the_store(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    first = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    second = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    authenticator(first).users.create("alice", "pw-alice")
    login = first.test_client().get(TOKEN, headers=basic("alice", "pw-alice"))
    session = cookie(login, "sessionid").split(";")[0].split("=", 1)[1]
    other = second.test_client()
    other.set_cookie("sessionid", session)
    assert other.get(ME).status_code == 200
    assert authenticator(first).secret_key == authenticator(second).secret_key
    restarted = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    assert authenticator(restarted).secret_key == authenticator(first).secret_key


def test_configured_secret_key_is_not_stored():
    app = create_app(
        {"TESTING": True, "SETTINGS_BACKEND": "memory://", "SETTINGS_SECRET_KEY": "configured"}
    )
    assert authenticator(app).secret_key == "configured"
    assert list(app.extensions["settings_store"].namespaces()) == []


def test_create_app_does_not_touch_the_store(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "s.db"
    app = create_app(
        {
            "TESTING": True,
            "SETTINGS_BACKEND": f"sqlite:///{missing}",
            "SETTINGS_ADMIN_USER": "admin",
            "SETTINGS_ADMIN_PASSWORD": "pw",
        }
    )
    assert not missing.parent.exists()
    assert app.extensions["settings_auth"] is authenticator(app)


# -- CSRF (§3.3) --------------------------------------------------------------------------------


@pytest.fixture
def session_client(client, alice):
    """A client logged in through /api/user/token/; returns (client, csrf token)."""
    response = client.get(TOKEN, headers=basic("alice", "pw-alice"))
    csrf = cookie(response, "csrftoken").split(";")[0].split("=", 1)[1]
    return client, csrf


def csrf_detail(reason: str) -> bytes:
    return json.dumps({"detail": f"CSRF Failed: {reason}"}, separators=(",", ":")).encode()


def test_csrf_missing_wrong_right(session_client):
    client, csrf = session_client
    missing = client.post(ME)
    assert missing.status_code == 403 and missing.data == csrf_detail("CSRF token missing.")
    wrong = client.post(ME, headers={"X-CSRFToken": "nope"})
    assert wrong.status_code == 403
    assert wrong.data == csrf_detail("CSRF token from the 'X-Csrftoken' HTTP header incorrect.")
    right = client.post(ME, headers={"X-CSRFToken": csrf})
    assert right.status_code == 405  # past authentication and CSRF


def test_csrf_cookie_not_set(session_client):
    client, csrf = session_client
    client.delete_cookie("csrftoken")
    response = client.patch(ME, headers={"X-CSRFToken": csrf})
    assert response.status_code == 403 and response.data == csrf_detail("CSRF cookie not set.")


def test_safe_methods_need_no_csrf(session_client):
    client, _ = session_client
    assert client.get(ME).status_code == 200


def test_csrf_origin_check(session_client):
    client, csrf = session_client
    foreign = client.put(ME, headers={"X-CSRFToken": csrf, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert foreign.data == csrf_detail(
        "Origin checking failed - http://evil.example does not match any trusted origins."
    )
    own = client.put(ME, headers={"X-CSRFToken": csrf, "Origin": "http://localhost"})
    assert own.status_code == 405


def test_csrf_trusted_origins():
    app = create_app(
        {
            "TESTING": True,
            "SETTINGS_BACKEND": "memory://",
            "SETTINGS_TRUSTED_ORIGINS": "https://a.example, https://b.example:8443",
        }
    )
    authenticator(app).users.create("alice", "pw-alice")
    client = app.test_client()
    client.get(TOKEN, headers=basic("alice", "pw-alice"))
    csrf = client.get_cookie("csrftoken").value
    for origin, status in (("https://b.example:8443", 405), ("https://c.example", 403)):
        response = client.delete(ME, headers={"X-CSRFToken": csrf, "Origin": origin})
        assert response.status_code == status


@pytest.mark.parametrize("origin", ["http://localhost", "https://a.example"])
def test_csrf_token_is_checked_after_an_allowed_origin(origin):
    """An allowed Origin (the request's own, or a trusted one) is not enough: a session write
    without the CSRF token, or with a wrong one, is refused and changes nothing."""
    app = create_app(
        {
            "TESTING": True,
            "SETTINGS_BACKEND": "memory://",
            "SETTINGS_TRUSTED_ORIGINS": "https://a.example",
        }
    )
    authenticator(app).users.create("alice", "pw-alice")
    client = app.test_client()
    assert client.get(TOKEN, headers=basic("alice", "pw-alice")).status_code == 200
    csrf = client.get_cookie("csrftoken").value
    path = "/api/settings/user/LAST_USED_PRINTING_MACHINES/"
    assert client.get(path).get_json()["value"] == ""
    missing = client.patch(path, json={"value": "forged"}, headers={"Origin": origin})
    assert missing.status_code == 403
    assert missing.data == csrf_detail("CSRF token missing.")
    incorrect = csrf_detail("CSRF token from the 'X-Csrftoken' HTTP header incorrect.")
    for wrong in ("nope", csrf[:-1] + ("A" if csrf[-1] != "A" else "B"), csrf + "x"):
        response = client.patch(
            path, json={"value": "forged"}, headers={"Origin": origin, "X-CSRFToken": wrong}
        )
        assert response.status_code == 403
        assert response.data == incorrect
    assert client.get(path).get_json()["value"] == ""
    right = client.patch(
        path, json={"value": "mine"}, headers={"Origin": origin, "X-CSRFToken": csrf}
    )
    assert right.status_code == 200 and right.get_json()["value"] == "mine"
    assert client.get(path).get_json()["value"] == "mine"


@pytest.mark.parametrize("path", ["/api/settings/user/", "/api/settings/notification/"])
@pytest.mark.parametrize(
    "query", ["", "?limit=2&offset=1", "?search=DATE&ordering=-key", "?search_regex=1&search=("]
)
def test_anonymous_list_of_own_settings_is_401(client, alice, path, query):
    """Whatever the query (a bad pattern included), authentication answers first."""
    response = client.get(path + query)
    assert response.status_code == 401
    assert response.data == b'{"detail":"Authentication credentials were not provided."}'
    assert response.headers["WWW-Authenticate"] == "Token"


def test_token_and_basic_are_never_csrf_checked(session_client, auth_headers, alice):
    client, _ = session_client
    evil = {"Origin": "http://evil.example"}
    assert client.post(ME, headers={**auth_headers(alice), **evil}).status_code == 405
    assert client.post(ME, headers={**basic("alice", "pw-alice"), **evil}).status_code == 405


# -- permission helpers (§4) --------------------------------------------------------------------


@pytest.fixture
def guarded(app):
    for name, check in (
        ("user", require_user),
        ("staff", require_staff),
        ("super", require_superuser),
    ):
        app.add_url_rule(
            f"/api/test-guard/{name}/",
            f"guard_{name}",
            lambda check=check: json_response({"pk": check().id}),
        )
    return app.test_client()


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (None, {"user": 401, "staff": 401, "super": 401}),
        ("plain", {"user": 200, "staff": 403, "super": 403}),
        ("staff", {"user": 200, "staff": 200, "super": 403}),
        ("super", {"user": 200, "staff": 200, "super": 200}),
    ],
)
def test_permission_helpers(guarded, make_user, auth_headers, role, expected):
    headers = {}
    if role is not None:
        user = make_user(role, staff=role == "staff", superuser=role == "super")
        headers = auth_headers(user)
    for name, status in expected.items():
        response = guarded.get(f"/api/test-guard/{name}/", headers=headers)
        assert response.status_code == status, name
        if status == 403:
            assert body(response) == {
                "detail": "You do not have permission to perform this action."
            }
        if status == 401:
            assert response.headers["WWW-Authenticate"] == "Token"


# -- admin bootstrap ----------------------------------------------------------------------------


ADMIN = {"SETTINGS_ADMIN_USER": "admin", "SETTINGS_ADMIN_PASSWORD": "admin-pw"}


def test_admin_bootstrap_on_first_request():
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://", **ADMIN})
    assert list(app.extensions["settings_store"].namespaces()) == []
    data = body(app.test_client().get(ME, headers=basic("admin", "admin-pw")))
    assert (data["username"], data["is_staff"], data["is_superuser"]) == ("admin", True, True)


def test_admin_bootstrap_skipped_when_users_exist():
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://", **ADMIN})
    authenticator(app).users.create("someone", "pw")
    assert app.test_client().get(ME, headers=basic("admin", "admin-pw")).status_code == 401


def test_admin_bootstrap_races_create_one_user(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    apps = [create_app({"TESTING": True, "SETTINGS_BACKEND": url, **ADMIN}) for _ in range(3)]
    created = [authenticator(a).bootstrap_admin() for a in apps]
    assert sum(user is not None for user in created) == 1
    assert [u.username for u in authenticator(apps[0]).users.list()] == ["admin"]


# -- users --------------------------------------------------------------------------------------


def test_user_directory(app):
    users = authenticator(app).users
    alice = users.create("alice", "pw", email="a@example.com")
    assert "password_hash" not in repr(alice) and alice.password_hash not in repr(alice)
    assert alice.password_hash.startswith("scrypt:")
    with pytest.raises(DuplicateUser):
        users.create("alice", "other")
    with pytest.raises(InvalidUsername):
        users.create("no spaces allowed", "pw")
    bob = users.create("bob")
    assert bob.id > alice.id
    assert users.authenticate("bob", "") is None  # no password: no password login
    assert users.get_by_username("alice") == alice == users.get(alice.id)
    assert users.update(alice.id, is_staff=True).is_staff
    assert [u.username for u in users.list()] == ["alice", "bob"]
    assert users.delete(alice.id) and not users.delete(alice.id)
    assert users.get_by_username("alice") is None
    assert users.create("alice", "pw").id > bob.id  # the name is free again, ids are not reused


def test_unknown_user_check_costs_what_a_real_hash_costs(app, shipped_password_hashes):
    """The hash checked for an unknown user is written out (making it at import would cost
    every worker 32 MiB at its peak); it must use the method and parameters of the hashes that
    ``generate_password_hash`` makes today, or a login for an unknown name answers faster.
    (As shipped: elsewhere the test process hashes cheaply, see conftest.py.)"""
    from settings_server.users import _DUMMY_HASH

    alice = authenticator(app).users.create("alice", "pw")
    assert _DUMMY_HASH.split("$")[0] == alice.password_hash.split("$")[0]


# -- the same core flows on every backend -------------------------------------------------------


def test_core_flow_on_backend(store_url):
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": store_url, **ADMIN})
    client = app.test_client()
    issued = body(client.get(TOKEN, query_string={"name": "c"}, headers=basic("admin", "admin-pw")))
    token = {"Authorization": f"Token {issued['token']}"}
    assert body(client.get(ME, headers=token))["is_superuser"] is True
    again = body(client.get(TOKEN, query_string={"name": "c"}, headers=token))
    assert_401(client.get(ME, headers=token), "Token has been revoked")
    assert client.get(ME, headers={"Authorization": f"Token {again['token']}"}).status_code == 200
    assert client.get(ME).status_code == 200  # session from the token request


# -- secrets never leak ---------------------------------------------------------------------------


def test_no_secret_in_logs_or_error_bodies(app, client, alice, caplog):
    """Passwords, tokens, session and CSRF cookies, query values and setting values appear
    neither in any log record (the request lines included) nor in an error body."""
    caplog.set_level(logging.DEBUG)
    secrets_seen = ["pw-alice", "wrong-password-123", "query-secret-456", "value-secret-789"]
    login = client.get(TOKEN, query_string={"name": "x"}, headers=basic("alice", "pw-alice"))
    issued = body(login)
    session = cookie(login, "sessionid").split(";")[0].split("=", 1)[1]
    csrf = cookie(login, "csrftoken").split(";")[0].split("=", 1)[1]
    secrets_seen += [issued["token"], authenticator(app).secret_key, session, csrf]
    responses = [
        client.get(ME, headers=basic("alice", "wrong-password-123")),
        client.get(ME, headers={"Authorization": f"Token {issued['token']}x"}),
        client.get(ME, headers={"Authorization": f"Token {issued['token']} extra"}),
        client.get(
            TOKEN, query_string={"name": "<i>pw-alice</i>"}, headers=basic("alice", "pw-alice")
        ),
        client.post(ME, headers={"Authorization": f"Token {issued['token']}"}),
        client.post(ME, headers={"X-CSRFToken": "pw-alice"}),
    ]
    # The unrouted 404 echoes the caller's own URL (docs/contract.md §1); it must not reach the log.
    unrouted = client.get(f"/api/user/?{issued['token']}&password=query-secret-456")
    written = client.patch(  # by session, with the CSRF token
        "/api/settings/user/LAST_USED_PRINTING_MACHINES/",
        json={"value": "value-secret-789"},
        headers={"X-CSRFToken": csrf},
    )
    client.get(
        TOKEN, query_string={"name": "x"}, headers={"Authorization": f"Token {issued['token']}"}
    )
    assert [r.status_code for r in responses] == [401, 401, 401, 400, 405, 403]
    assert unrouted.status_code == 404
    assert written.status_code == 200 and written.get_json()["value"] == "value-secret-789"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    requests_logged = [r for r in caplog.records if r.name == "settings_server.access"]
    assert len(requests_logged) == 1 + len(responses) + 3  # one line per request
    assert json.loads(requests_logged[-2].getMessage())["user"] == alice.id
    for secret in secrets_seen:
        assert secret not in logged
        for response in responses:
            assert secret.encode() not in response.data


def test_expiry_is_a_date(app, alice):
    set_clock(app, datetime(2024, 2, 29, tzinfo=UTC))
    token = authenticator(app).tokens.issue(alice, "leap").token
    assert token.expiry == date(2024, 2, 29) + timedelta(days=365) == date(2025, 2, 28)
