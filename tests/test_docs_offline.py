"""``/api/docs/`` renders the whole OpenAPI document with no access to other hosts (issue 16):
the Swagger UI files come from the installed package, not from a CDN.

The browser test drives Debian's ``chromium`` through Playwright; it is skipped, with the reason,
when ``chromium`` is not installed, unless ``SETTINGS_REQUIRE_BROWSER=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from browser import chromium_path

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def test_page_names_only_its_own_files(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    for name in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        assert f'"swagger-ui/{name}"' in html
        asset = client.get(f"/api/docs/swagger-ui/{name}")
        assert asset.status_code == 200 and len(asset.data) > 10_000
    assert client.get("/api/docs/swagger-ui/missing.js").status_code == 404
    assert client.get("/api/docs/swagger-ui/../../schema/").status_code == 404


def test_assets_are_not_in_the_openapi_document(client):
    assert not [path for path in client.get("/api/schema/").json["paths"] if "docs" in path]


@pytest.mark.slow
def test_docs_render_in_chromium_without_other_hosts(servers, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    server = servers.start(f"sqlite:///{tmp_path}/docs.db", "--workers", "1")
    document = requests.get(f"{server.url}/api/schema/", timeout=10).json()
    operations = sorted(
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )
    assert len(operations) > 10

    attempted: list[str] = []  # every request for another host, each refused

    def only_this_server(route):
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https") and url.hostname != "127.0.0.1":
            attempted.append(route.request.url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            # and below the page: no host name resolves but this one
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.goto(f"{server.url}/api/docs/", wait_until="networkidle")
            page.wait_for_selector(".opblock", timeout=20_000)
            blocks = page.locator(".opblock")
            rendered = sorted(
                (
                    block.locator(".opblock-summary-path").get_attribute("data-path"),
                    block.locator(".opblock-summary-method").inner_text().lower(),
                )
                for block in blocks.all()
            )
            visible_paths = {
                text.replace("\u200b", "")
                for text in page.locator(".opblock-summary-path").all_inner_texts()
            }
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()

    assert attempted == [] and failed == []
    assert rendered == operations
    assert {
        "/api/settings/global/",
        "/api/settings/global/{key}/",
        "/api/settings/user/{key}/",
        "/api/settings/notification/{pk}/",
        "/api/user/token/",
    } <= visible_paths
    assert title.startswith("settings-server")
