"""The settings page in a real browser: Debian's ``chromium`` driven by Playwright against
``settings-server run`` (gunicorn, one worker), with every other host blocked.

Skipped, with the reason, when ``chromium`` is not installed, unless
``SETTINGS_REQUIRE_BROWSER=1`` (CI) makes that a failure. ``SETTINGS_UPDATE_SCREENSHOT=1``
writes the README's screenshot, ``docs/settings-page.png``, from the sign-in test's browser.

History and live updates come from the change-control (``/api/settings/history/``) and
change-feed (``/api/settings/events/``) endpoints. Their tests against the real server are
skipped, naming the endpoint, on a server without them; the ``*_contract`` tests check the
page against the documented answers of those endpoints, served to the browser by Playwright.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from browser import chromium_path

from settings_server import create_app
from settings_server.auth import authenticator
from settings_server.registry import load_registry

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMEOUT = 10_000  # ms for anything the page should do at once


@dataclass
class Site:
    """A running server with its users: ``admin`` and ``carol`` (staff), ``bob`` (not)."""

    url: str
    tokens: dict[str, str]
    attempted: list[str] = field(default_factory=list)  # requests for other hosts, refused
    errors: list[str] = field(default_factory=list)  # uncaught script errors

    def api(self, method: str, path: str, user: str = "admin", **kwargs) -> requests.Response:
        headers = {"Authorization": f"Token {self.tokens[user]}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def value(self, key: str, user: str = "admin", kind: str = "global") -> str:
        answer = self.api("GET", f"/api/settings/{kind}/{key}/", user)
        assert answer.status_code == 200
        return answer.json()["value"]


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    """One chromium for the module (a launch takes a second or more); tests get it through
    :func:`browser`."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            # below the page too: no host name resolves but this one
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser(chromium, servers) -> Iterator:
    """The module's chromium; every page a test opens (each in a context of its own: no
    cookies or storage shared) is closed after the test, before its servers stop (which then
    have no event stream left to end)."""
    yield chromium
    for context in chromium.contexts:
        context.close()


def start_site(servers, backend: str, **env: str) -> Site:
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": backend})
    directory = authenticator(app)
    tokens = {}
    for name, staff in (("admin", True), ("carol", True), ("bob", False)):
        user = directory.users.create(name, f"pw-{name}", is_staff=staff, is_superuser=name == "admin")
        tokens[name] = directory.tokens.issue(user, "tests").key
    app.extensions["settings_store"].close()
    server = servers.start(backend, "--workers", "1", **env)
    return Site(server.url, tokens)


@pytest.fixture
def site(servers, tmp_path) -> Site:
    return start_site(servers, f"sqlite:///{tmp_path}/page.db")


def open_page(browser, site: Site, user: str | None = "admin"):
    """A new page with other hosts refused (and recorded), signed in as ``user``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT)

    def only_this_server(route):
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https") and url.hostname != "127.0.0.1":
            site.attempted.append(route.request.url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    page.route("**/*", only_this_server)
    page.on("pageerror", lambda error: site.errors.append(str(error)))
    if user is not None:
        sign_in(page, site, user)
    return page


def sign_in(page, site: Site, user: str) -> None:
    page.goto(f"{site.url}/")
    page.get_by_label("Username", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(f"pw-{user}")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#search")


def row(page, key: str, kind: str = "global"):
    return page.locator(f"li.setting#{kind}-{key}")


def save_instance_label(page, value: str):
    """Type ``value`` as the instance label and press Enter; the label's input and its row's
    error line."""
    name = page.get_by_label("Instance label", exact=True)
    name.fill(value)
    name.press("Enter")
    return name, row(page, "INVENTREE_INSTANCE").locator(".error")


def expect_status(page, key: str, text: str, kind: str = "global") -> None:
    from playwright.sync_api import expect

    expect(row(page, key, kind).locator(".status")).to_contain_text(text)


# -- signing in, searching, writing ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_sign_in_search_toggle_and_reset(browser, servers, tmp_path, request, backend):
    from playwright.sync_api import expect

    url = f"sqlite:///{tmp_path}/page.db" if backend == "sqlite" else request.getfixturevalue("redis_url")
    site = start_site(servers, url)
    page = open_page(browser, site, user=None)
    page.goto(f"{site.url}/")
    assert page.url == f"{site.url}/settings/"
    sign_in(page, site, "admin")
    expect(page.get_by_text("Signed in as")).to_contain_text("admin")

    page.get_by_label("Search settings", exact=True).fill("camera scanning")
    expect(page.locator("#global li.setting:visible")).to_have_count(1)
    expect(row(page, "BARCODE_WEBCAM_SUPPORT")).to_be_visible()
    expect(page.locator("#search-count")).to_have_text("1 setting(s) match.")
    expect(page.get_by_role("heading", name="Barcodes")).to_be_visible()
    expect(page.get_by_role("heading", name="Login")).to_be_hidden()
    page.get_by_label("Search settings", exact=True).fill("SALESORDER_")  # by key
    expect(page.locator("#global li.setting:visible")).to_have_count(5)
    page.get_by_label("Search settings", exact=True).fill("browser camera")  # by description
    expect(page.locator("#global li.setting:visible")).to_have_count(1)

    switch = page.get_by_role("switch", name="Camera scanning")
    assert site.value("BARCODE_WEBCAM_SUPPORT") == "True"  # its default
    expect(switch).to_be_checked()
    switch.click()
    expect_status(page, "BARCODE_WEBCAM_SUPPORT", "Saved.")
    assert site.value("BARCODE_WEBCAM_SUPPORT") == "False"
    the_row = row(page, "BARCODE_WEBCAM_SUPPORT")
    expect(the_row.locator(".source")).to_have_text("stored")
    expect(the_row.locator(".modified")).to_be_visible()

    the_row.get_by_role("button", name="Reset Camera scanning to default").click()
    expect(switch).to_be_checked()
    expect(the_row.locator(".modified")).to_be_hidden()
    assert site.value("BARCODE_WEBCAM_SUPPORT") == "True"

    page.get_by_label("Search settings", exact=True).fill("")
    shown = [d for k, d in load_registry().global_settings.items()
             if not d.hidden and not k.startswith("_")]
    expect(page.locator("#global li.setting:visible")).to_have_count(len(shown))
    if backend == "sqlite":
        page.get_by_label("Organisation name", exact=True).fill("Acme Labs")
        page.get_by_label("Organisation name", exact=True).press("Enter")
        expect_status(page, "INVENTREE_COMPANY_NAME", "Saved.")
        page.evaluate("window.scrollTo(0, 0)")
        path = DOCS / "settings-page.png" if os.environ.get("SETTINGS_UPDATE_SCREENSHOT") == "1" \
            else tmp_path / "settings-page.png"
        page.screenshot(path=path)
    assert site.attempted == [] and site.errors == []


def test_a_refused_value_shows_the_apis_message(browser, site):
    from playwright.sync_api import expect

    page = open_page(browser, site)
    days = page.get_by_label("Backup period", exact=True)
    days.fill("0")
    days.press("Enter")
    error = row(page, "INVENTREE_BACKUP_DAYS").locator(".error")
    expect(error).to_have_text("Ensure this value is greater than or equal to 1.")
    expect(days).to_have_attribute("aria-invalid", "true")
    days.fill("2.5")
    days.press("Enter")
    expect(error).to_have_text("Value must be an integer")
    assert site.value("INVENTREE_BACKUP_DAYS") == "1"
    days.fill("7")
    days.press("Enter")
    expect_status(page, "INVENTREE_BACKUP_DAYS", "Saved.")
    expect(error).to_have_text("")
    assert site.value("INVENTREE_BACKUP_DAYS") == "7"
    assert site.attempted == [] and site.errors == []


def test_a_stale_page_is_told_and_shown_the_fresh_value(browser, site):
    from playwright.sync_api import expect

    page = open_page(browser, site)
    page.route("**/api/settings/events/**", lambda route: route.abort())  # no live update
    page.reload()
    changed = site.api("PATCH", "/api/settings/global/INVENTREE_INSTANCE/", "carol",
                       json={"value": "Carol's lab"})
    assert changed.status_code == 200
    name, error = save_instance_label(page, "Admin's lab")
    expect(error).to_contain_text("Changed by someone else meanwhile; your change was not saved.")
    expect(error).to_contain_text("Carol's lab")
    expect(name).to_have_value("Carol's lab")
    assert site.value("INVENTREE_INSTANCE") == "Carol's lab"
    name.fill("Admin's lab")  # now up to date: saved
    name.press("Enter")
    expect_status(page, "INVENTREE_INSTANCE", "Saved.")
    assert site.value("INVENTREE_INSTANCE") == "Admin's lab"


def test_writes_carry_if_match_and_a_412_shows_the_fresh_value(browser, site):
    """With the ETag of its re-read (change control), a write that loses the race is refused
    with 412: the page says so and shows what won."""
    from playwright.sync_api import expect

    sent: list[str | None] = []

    def tagged(route):  # the detail GET, with an ETag as change control adds it
        if route.request.method != "GET":
            sent.append(route.request.headers.get("if-match"))
            site.api("PATCH", "/api/settings/global/INVENTREE_INSTANCE/", "carol",
                     json={"value": "Carol won"})  # lands between the re-read and the write
            route.fulfill(status=412, content_type="application/json",
                          body='{"detail":"Precondition failed."}')
            return
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "etag": '"v1"'})

    page = open_page(browser, site)
    page.route("**/api/settings/events/**", lambda route: route.abort())
    page.reload()
    page.route("**/api/settings/global/INVENTREE_INSTANCE/", tagged)
    name, error = save_instance_label(page, "Admin's lab")
    expect(error).to_contain_text("Changed by someone else meanwhile")
    expect(name).to_have_value("Carol won")
    assert sent == ['"v1"']
    assert site.value("INVENTREE_INSTANCE") == "Carol won"


def test_non_staff_cannot_edit_globals_but_can_edit_their_own(browser, site):
    from playwright.sync_api import expect

    page = open_page(browser, site, "bob")
    expect(page.get_by_text("only staff can change them")).to_be_visible()
    switch = page.get_by_role("switch", name="Camera scanning")
    expect(switch).to_be_disabled()
    switch.click(force=True)
    text = page.get_by_label("Instance label", exact=True)
    expect(text).not_to_be_editable()
    assert row(page, "BARCODE_WEBCAM_SUPPORT").get_by_role("button", name=re.compile("Reset")).count() == 0
    assert site.value("BARCODE_WEBCAM_SUPPORT") == "True"

    mine = page.get_by_role("switch", name="Open labels in browser")
    mine.click()
    expect_status(page, "LABEL_INLINE", "Saved.", kind="user")
    assert site.value("LABEL_INLINE", "bob", kind="user") == "False"
    assert site.value("LABEL_INLINE", "admin", kind="user") == "True"
    mail = page.get_by_role("switch", name="Email notifications")
    mail.click()
    expect_status(page, "NOTIFICATION_METHOD_MAIL", "Saved.", kind="notification")
    rows = site.api("GET", "/api/settings/notification/", "bob").json()
    assert rows[0]["value"] == "False"
    assert site.attempted == [] and site.errors == []


def test_pinned_settings_are_read_only_even_for_staff(browser, servers, tmp_path):
    from playwright.sync_api import expect

    site = start_site(servers, f"sqlite:///{tmp_path}/page.db",
                      SETTINGS_OVERRIDES='{"BARCODE_WEBCAM_SUPPORT": "False"}')
    page = open_page(browser, site)
    switch = page.get_by_role("switch", name="Camera scanning")
    expect(switch).to_be_disabled()
    expect(switch).not_to_be_checked()
    the_row = row(page, "BARCODE_WEBCAM_SUPPORT")
    expect(the_row.locator(".source")).to_have_text("pinned")
    expect(the_row).to_contain_text("fixed by the server configuration")
    switch.click(force=True)
    assert site.value("BARCODE_WEBCAM_SUPPORT") == "False"
    expect(page.get_by_role("switch", name="Barcode features")).to_be_enabled()


def test_tokens_are_created_shown_once_and_revoked(browser, site):
    from playwright.sync_api import expect

    page = open_page(browser, site, "bob")
    page.get_by_label("Name of a new token", exact=True).fill("build server")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label("Secret", exact=True)
    expect(secret).to_have_value(re.compile(r"^inv-"))
    key = secret.input_value()
    me = requests.get(f"{site.url}/api/user/me/", headers={"Authorization": f"Token {key}"}, timeout=10)
    assert me.status_code == 200 and me.json()["username"] == "bob"
    page.reload()
    assert key not in page.content()
    line = page.locator("#token-table tbody tr", has_text="build-server")
    line.get_by_role("button", name="Revoke token build-server").click()
    expect(line.locator(".token-status")).to_have_text("revoked")
    refused = requests.get(f"{site.url}/api/user/me/", headers={"Authorization": f"Token {key}"},
                           timeout=10)
    assert refused.status_code == 401
    page.get_by_label("Name of a new token", exact=True).fill("<b>x</b>")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-error")).to_have_text("Remove HTML tags from this value")


def test_sign_out(browser, site):
    page = open_page(browser, site, "bob")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector("#username")
    assert page.context.cookies() and all(c["name"] != "sessionid" for c in page.context.cookies())
    assert page.evaluate("fetch('/api/user/me/').then(r => r.status)") == 401


def test_keyboard_alone_works_and_every_control_is_labelled(browser, site):
    page = open_page(browser, site)
    unlabelled = page.evaluate("""() => [...document.querySelectorAll(
        'input:not([type=hidden]), select, button')].filter(el =>
            !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
            && !el.textContent.trim()).map(el => el.outerHTML)""")
    assert unlabelled == []
    page.get_by_label("Search settings", exact=True).fill("expose installation")
    page.keyboard.press("Tab")  # from the search box to the only row's switch
    focused = page.evaluate("""() => { const el = document.activeElement;
        const style = getComputedStyle(el);
        return [el.id, style.outlineStyle, style.outlineWidth]; }""")
    assert focused == ["control-global-INVENTREE_ANNOUNCE_ID", "solid", "3px"]
    page.keyboard.press("Space")
    expect_status(page, "INVENTREE_ANNOUNCE_ID", "Saved.")
    assert site.value("INVENTREE_ANNOUNCE_ID") == "True"
    page.keyboard.press("Tab")  # the reset button, now shown
    assert page.evaluate("document.activeElement.textContent") == "Reset to default"
    page.keyboard.press("Enter")
    expect_status(page, "INVENTREE_ANNOUNCE_ID", "Saved.")
    assert site.value("INVENTREE_ANNOUNCE_ID") == "False"


# -- history and live updates ---------------------------------------------------------------


def _require(site: Site, path: str, issue: str) -> None:
    answer = site.api("GET", path, headers={"Accept": "*/*"}, stream=True)
    answer.close()
    if answer.status_code == 404:
        pytest.skip(f"this server has no {path} ({issue} not merged)")


def test_restore_from_history(browser, site):
    from playwright.sync_api import expect

    _require(site, "/api/settings/history/", "change control")
    site.api("PATCH", "/api/settings/global/INVENTREE_INSTANCE/", "carol", json={"value": "Lab"})
    page = open_page(browser, site)
    the_row = row(page, "INVENTREE_INSTANCE")
    the_row.get_by_role("button", name="History of Instance label").click()
    entry = the_row.locator(".history tbody tr").first
    expect(entry).to_contain_text("carol")
    expect(entry).to_contain_text("InvenTree → Lab")
    entry.get_by_role("button", name=re.compile("Restore")).click()
    expect(page.get_by_label("Instance label", exact=True)).to_have_value("InvenTree")
    assert site.value("INVENTREE_INSTANCE") == "InvenTree"
    expect(the_row.locator(".history tbody tr").first).to_contain_text("restore")


def test_a_row_changes_live_after_another_users_write(browser, site):
    from playwright.sync_api import expect

    _require(site, "/api/settings/events/", "change feed")
    page = open_page(browser, site)
    expect(page.locator("#live-status")).to_have_text("Live updates: on.")
    site.api("PATCH", "/api/settings/global/INVENTREE_INSTANCE/", "carol", json={"value": "Live"})
    expect(page.get_by_label("Instance label", exact=True)).to_have_value("Live", timeout=1_500)
    expect_status(page, "INVENTREE_INSTANCE", "Changed by carol")
    site.api("PATCH", "/api/settings/user/LABEL_INLINE/", "bob", json={"value": False})
    site.api("PATCH", "/api/settings/user/LABEL_INLINE/", "admin", json={"value": False})
    expect(page.get_by_role("switch", name="Open labels in browser")).not_to_be_checked()


def _entry(**fields) -> dict:
    entry = {"id": 7, "kind": "global", "key": "INVENTREE_INSTANCE", "user": None,
             "old": "InvenTree", "new": "Lab", "actor": 2, "actor_name": "carol",
             "source": "api", "timestamp": "2026-05-01T12:00:00.000Z"}
    return {**entry, **fields}


def test_history_and_restore_contract(browser, site):
    """The page against the documented history answers (change control)."""
    from playwright.sync_api import expect

    site.api("PATCH", "/api/settings/global/INVENTREE_INSTANCE/", "carol", json={"value": "Lab"})
    asked: list[str] = []

    def history(route):
        asked.append(route.request.url)
        page_body = {"count": 1, "next": None, "previous": None, "results": [_entry()]}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(page_body))

    def restore(route):  # what the server does: write the entry's old value back
        asked.append(f"{route.request.method} {route.request.url}")
        assert route.request.headers["x-csrftoken"]
        answer = site.api("PATCH", "/api/settings/global/INVENTREE_INSTANCE/", json={"value": "InvenTree"})
        route.fulfill(status=200, content_type="application/json", body=answer.text)

    page = open_page(browser, site)
    page.route(re.compile(r".*/api/settings/history/\?.*"), history)
    page.route("**/api/settings/history/7/restore/", restore)
    the_row = row(page, "INVENTREE_INSTANCE")
    button = the_row.get_by_role("button", name="History of Instance label")
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    entry = the_row.locator(".history tbody tr")
    expect(entry).to_contain_text("carol")
    expect(entry).to_contain_text("InvenTree → Lab")
    expect(entry).to_contain_text("api")
    assert "kind=global&key=INVENTREE_INSTANCE" in asked[0]
    entry.get_by_role("button", name=re.compile("Restore")).click()
    expect(page.get_by_label("Instance label", exact=True)).to_have_value("InvenTree")
    expect_status(page, "INVENTREE_INSTANCE", "Restored")
    assert asked[1] == f"POST {site.url}/api/settings/history/7/restore/"
    assert site.value("INVENTREE_INSTANCE") == "InvenTree"


def test_history_on_a_server_without_it_says_so(browser, site):
    from playwright.sync_api import expect

    page = open_page(browser, site)
    page.route(re.compile(r".*/api/settings/history/\?.*"), lambda route: route.fulfill(
        status=404, content_type="application/json", body='{"detail":"API endpoint not found"}'))
    the_row = row(page, "INVENTREE_INSTANCE")
    the_row.get_by_role("button", name="History of Instance label").click()
    expect(the_row.locator(".history")).to_have_text("This server keeps no history of settings.")


def test_live_updates_contract(browser, site):
    """The page against the documented change feed: one ``change`` event per visible change."""
    from playwright.sync_api import expect

    events = [
        _entry(id=8, new="Live"),
        _entry(id=9, kind="user", key="LABEL_INLINE", user=3, old="True", new="False",
               actor=3, actor_name="bob"),  # someone else's: not this page's row
        _entry(id=10, kind="user", key="LABEL_INLINE", user=1, old="True", new="False",
               actor=2, actor_name="carol"),
    ]
    stream = "retry: 600000\n\n" + "".join(
        f"id: {e['id']}\nevent: change\ndata: {json.dumps(e)}\n\n" for e in events)
    page = open_page(browser, site, user=None)
    page.route("**/api/settings/events/", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=stream))
    sign_in(page, site, "admin")
    expect(page.get_by_label("Instance label", exact=True)).to_have_value("Live")
    expect_status(page, "INVENTREE_INSTANCE", "Changed by carol just now.")
    expect(row(page, "INVENTREE_INSTANCE").locator(".source")).to_have_text("stored")
    expect(page.get_by_role("switch", name="Open labels in browser")).not_to_be_checked()
    expect_status(page, "LABEL_INLINE", "Changed by carol", kind="user")


def test_live_updates_unavailable_are_said(browser, site):
    from playwright.sync_api import expect

    page = open_page(browser, site, user=None)
    page.route("**/api/settings/events/", lambda route: route.fulfill(
        status=404, content_type="application/json", body='{"detail":"API endpoint not found"}'))
    sign_in(page, site, "admin")
    expect(page.locator("#live-status")).to_contain_text("not available from this server")
