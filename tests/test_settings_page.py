"""The settings page, through the Flask test client: where it is, signing in and out, and what it
shows to whom. ``test_settings_page_browser.py`` drives it in Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from credentials import basic

from settings_server import create_app
from settings_server.auth import authenticator

STATIC = Path(__file__).resolve().parent.parent / "settings_server" / "web" / "static"


def sign_in(client, username: str, password: str, **extra):
    """Post the sign-in form as a browser does: the CSRF cookie from the form page, its field."""
    client.get("/settings/")
    token = client.get_cookie("csrftoken").value
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    return client.post("/settings/login/", data=form, **extra)


def page_html(client) -> str:
    answer = client.get("/settings/")
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


def row(html: str, kind: str, key: str) -> str:
    match = re.search(rf'<li class="setting[^"]*" id="{kind}-{key}".*?</li>', html, re.DOTALL)
    assert match, f"{kind} {key} not on the page"
    return match.group(0)


def test_root_redirects_to_the_page(client):
    answer = client.get("/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings/"


def test_anonymous_visitors_get_the_sign_in_form_with_a_csrf_cookie(client):
    answer = client.get("/settings/")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    assert '<label for="username">' in html and '<label for="password">' in html
    token = client.get_cookie("csrftoken").value
    assert f'name="csrfmiddlewaretoken" value="{token}"' in html
    assert "Global settings" not in html


def test_sign_in_makes_the_api_session(client, alice):
    answer = sign_in(client, "alice", "pw-alice")
    assert answer.status_code == 303 and answer.headers["Location"] == "/settings/"
    assert client.get_cookie("sessionid") is not None
    me = client.get("/api/user/me/")
    assert me.status_code == 200 and me.get_json()["username"] == "alice"
    csrf = client.get_cookie("csrftoken").value
    write = client.patch("/api/settings/user/LABEL_INLINE/", json={"value": False},
                         headers={"X-CSRFToken": csrf})
    assert write.status_code == 200 and write.get_json()["value"] == "False"
    assert "Signed in as <strong>alice</strong>" in page_html(client)


def test_wrong_password_is_refused_on_the_form(client, alice):
    answer = sign_in(client, "alice", "nope")
    assert answer.status_code == 401
    assert "Invalid username/password." in answer.get_data(as_text=True)
    assert client.get_cookie("sessionid") is None
    assert client.get("/api/user/me/").status_code == 401


def test_sign_in_without_the_csrf_field_or_from_another_origin_is_403(client, alice):
    client.get("/settings/")
    missing = client.post("/settings/login/", data={"username": "alice", "password": "pw-alice"})
    assert missing.status_code == 403
    assert missing.get_json() == {"detail": "CSRF Failed: CSRF token missing."}
    foreign = sign_in(client, "alice", "pw-alice", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "Origin checking failed" in foreign.get_json()["detail"]
    assert client.get_cookie("sessionid") is None


def test_the_form_is_throttled_with_basic_auth():
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                      "SETTINGS_LOGIN_LIMIT_PER_USERNAME": "3/hour"})
    authenticator(app).users.create("alice", "pw-alice")
    client = app.test_client()
    assert client.get("/api/user/me/", headers=basic("alice", "x")).status_code == 401
    assert sign_in(client, "alice", "y").status_code == 401
    assert sign_in(client, "alice", "z").status_code == 401
    refused = sign_in(client, "alice", "pw-alice")  # right, but only after the window
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Request was throttled." in refused.get_data(as_text=True)
    assert client.get("/api/user/me/", headers=basic("alice", "pw-alice")).status_code == 429
    assert client.get_cookie("sessionid") is None


def test_a_session_without_its_csrf_cookie_gets_one_for_the_script(client, alice):
    sign_in(client, "alice", "pw-alice")
    client.delete_cookie("csrftoken")
    html = page_html(client)
    token = client.get_cookie("csrftoken").value
    assert f'value="{token}"' in html
    write = client.patch("/api/settings/user/LABEL_INLINE/", json={"value": False},
                         headers={"X-CSRFToken": token})
    assert write.status_code == 200


def test_sign_out_ends_the_pages_session(client, alice):
    sign_in(client, "alice", "pw-alice")
    csrf = client.get_cookie("csrftoken").value
    refused = client.post("/settings/logout/", data={})
    assert refused.status_code == 403 and client.get_cookie("sessionid") is not None
    answer = client.post("/settings/logout/", data={"csrfmiddlewaretoken": csrf})
    assert answer.status_code == 303 and answer.headers["Location"] == "/settings/"
    assert client.get_cookie("sessionid") is None
    assert "Sign in" in page_html(client) and client.get("/api/user/me/").status_code == 401


def test_global_settings_in_inventrees_panels_then_operators(tmp_path, make_user):
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"global": [
        {"key": "SITE_BANNER", "name": "Banner", "type": "str", "category": "Front page"},
        {"key": "SITE_FOOTER", "name": "Footer", "type": "str"},
    ]}))
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                      "SETTINGS_REGISTRY_FILE": str(extra)})
    authenticator(app).users.create("admin", "pw-admin", is_staff=True)
    client = app.test_client()
    sign_in(client, "admin", "pw-admin")
    html = page_html(client)
    headings = re.findall(r'<h3 id="category-\d+">([^<]+)</h3>', html)
    assert headings == ["Server", "Login", "Barcodes", "Pricing", "Labels", "Reporting", "Parts",
                        "Stock", "Build orders", "Purchase orders", "Sales orders",
                        "Return orders", "Front page", "Other"]
    assert 'id="global-SITE_BANNER"' in html.split("Front page")[1].split("Other")[0]
    assert 'id="global-SERVER_RESTART_REQUIRED"' not in html  # hidden settings are not shown
    assert "_PENDING_MIGRATIONS" not in html


def test_each_setting_has_a_labelled_control_for_its_type(client, make_user):
    make_user("admin", staff=True)
    sign_in(client, "admin", "pw-admin")
    html = page_html(client)
    boolean = row(html, "global", "BARCODE_ENABLE")
    assert 'type="checkbox" role="switch"' in boolean and "checked" in boolean
    assert '<label for="control-global-BARCODE_ENABLE"' in boolean
    integer = row(html, "global", "INVENTREE_BACKUP_DAYS")
    assert 'type="number"' in integer and 'min="1"' in integer and 'step="1"' in integer
    choice = row(html, "global", "INVENTREE_DEFAULT_CURRENCY")
    assert "<select" in choice and '<option value="USD" selected>' in choice
    text = row(html, "global", "INVENTREE_INSTANCE")
    assert 'type="text"' in text and 'value="InvenTree"' in text
    units = row(html, "global", "INVENTREE_BACKUP_DAYS")
    assert '<span class="units">days</span>' in units
    controls = re.findall(r'class="control" id="([^"]+)"', html)
    assert len(controls) > 150
    assert all(f'<label for="{control}"' in html for control in controls)


def test_source_and_difference_from_the_default(client, make_user, auth_headers):
    admin = make_user("admin", staff=True)
    headers = auth_headers(admin)
    client.patch("/api/settings/global/INVENTREE_INSTANCE/", json={"value": "Lab"}, headers=headers)
    client.patch("/api/settings/global/BARCODE_ENABLE/", json={"value": True}, headers=headers)
    sign_in(client, "admin", "pw-admin")
    html = page_html(client)
    changed = row(html, "global", "INVENTREE_INSTANCE")
    assert 'data-source="stored"' in changed and 'class="setting differs"' in changed
    assert "differs from default (InvenTree)" in changed
    same = row(html, "global", "BARCODE_ENABLE")  # stored, and equal to its default
    assert 'data-source="stored"' in same and 'class="setting"' in same
    untouched = row(html, "global", "INVENTREE_COMPANY_NAME")
    assert 'data-source="default"' in untouched and "differs" not in untouched.split(">")[0]


def test_pinned_settings_are_read_only_with_the_reason(make_user):
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                      "SETTINGS_OVERRIDES": '{"INVENTREE_INSTANCE": "Pinned lab"}'})
    authenticator(app).users.create("admin", "pw-admin", is_staff=True, is_superuser=True)
    client = app.test_client()
    sign_in(client, "admin", "pw-admin")
    html = page_html(client)
    pinned = row(html, "global", "INVENTREE_INSTANCE")
    assert 'data-source="pinned"' in pinned and 'value="Pinned lab"' in pinned
    assert re.search(r"\sreadonly\b", pinned) and 'data-writable="false"' in pinned
    assert "fixed by the server configuration" in pinned and "Reset to default" not in pinned
    assert 'data-writable="true"' in row(html, "global", "INVENTREE_COMPANY_NAME")


def test_protected_values_never_reach_the_page(tmp_path):
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"global": [
        {"key": "SMTP_PASSWORD", "name": "Mail password", "type": "str", "protected": True},
    ]}))
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                      "SETTINGS_REGISTRY_FILE": str(extra)})
    admin = authenticator(app).users.create("admin", "pw-admin", is_staff=True)
    client = app.test_client()
    token = authenticator(app).tokens.issue(admin, "t").key
    client.patch("/api/settings/global/SMTP_PASSWORD/", json={"value": "hunter2-secret"},
                 headers={"Authorization": f"Token {token}"})
    sign_in(client, "admin", "pw-admin")
    html = page_html(client)
    assert "hunter2-secret" not in html
    secret = row(html, "global", "SMTP_PASSWORD")
    assert 'type="password"' in secret and 'placeholder="set (hidden)"' in secret
    assert 'data-source="stored"' in secret


def test_non_staff_see_globals_read_only_and_their_own_settings_writable(client, alice):
    sign_in(client, "alice", "pw-alice")
    html = page_html(client)
    assert "only staff can change them" in html
    boolean = row(html, "global", "BARCODE_ENABLE")
    assert 'data-writable="false"' in boolean and re.search(r"\sdisabled\b", boolean)
    assert "Reset to default" not in boolean
    text = row(html, "global", "INVENTREE_INSTANCE")
    assert re.search(r"\sreadonly\b", text)
    mine = row(html, "user", "LABEL_INLINE")
    assert 'data-writable="true"' in mine and "disabled" not in mine
    assert 'data-url="/api/settings/user/LABEL_INLINE/"' in mine
    mail = row(html, "notification", "NOTIFICATION_METHOD_MAIL")
    pk = client.get("/api/settings/notification/").get_json()[0]["pk"]
    assert f'data-url="/api/settings/notification/{pk}/"' in mail


def test_staff_can_edit_every_global_setting_shown(client, make_user):
    make_user("admin", staff=True)
    sign_in(client, "admin", "pw-admin")
    html = page_html(client)
    assert 'data-writable="false"' not in html and "only staff can change them" not in html


def test_tokens_panel_lists_names_never_secrets(client, alice):
    issued = authenticator(client.application).tokens.issue(alice, "laptop")
    sign_in(client, "alice", "pw-alice")
    html = page_html(client)
    assert f'<tr data-token-id="{issued.token.id}">' in html and "<td>laptop</td>" in html
    assert issued.key not in html and issued.token.digest not in html


def test_page_and_assets_name_no_other_host(client, alice):
    sign_in(client, "alice", "pw-alice")
    answer = client.get("/settings/")
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    links = re.findall(r'(?:src|href|action)="([^"]*)"', answer.get_data(as_text=True))
    assert links and all(link.startswith(("/", "#", "data:")) for link in links)
    for name in ("settings.js", "settings.css"):
        asset = client.get(f"/settings/static/{name}")
        assert asset.status_code == 200
        assert not re.search(r"https?://|url\(|@import", asset.get_data(as_text=True))


def test_page_requests_are_logged_with_the_user_and_never_the_password(client, alice, caplog):
    caplog.set_level("INFO", logger="settings_server.access")
    sign_in(client, "alice", "pw-alice")
    client.get("/settings/")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "settings_server.access"]
    assert [(line["path"], line["user"], line["auth"]) for line in lines][-1] == (
        "/settings/", alice.id, "session")
    assert "pw-alice" not in caplog.text


def test_page_answers_are_not_cached_with_credentials(client, alice):
    sign_in(client, "alice", "pw-alice")
    assert client.get("/settings/").headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_page_on_every_persistent_store(request, tmp_path, backend):
    url = f"sqlite:///{tmp_path}/p.db" if backend == "sqlite" else request.getfixturevalue("redis_url")
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    admin = authenticator(app).users.create("admin", "pw-admin", is_staff=True)
    token = authenticator(app).tokens.issue(admin, "t").key
    client = app.test_client()
    client.patch("/api/settings/global/INVENTREE_INSTANCE/", json={"value": "Lab"},
                 headers={"Authorization": f"Token {token}"})
    assert sign_in(client, "admin", "pw-admin").status_code == 303
    changed = row(page_html(client), "global", "INVENTREE_INSTANCE")
    assert 'data-source="stored"' in changed and 'value="Lab"' in changed


def test_static_files_are_the_packaged_ones(client):
    for name in ("settings.js", "settings.css"):
        assert client.get(f"/settings/static/{name}").data == (STATIC / name).read_bytes()
    assert client.get("/settings/static/../__init__.py").status_code == 404
