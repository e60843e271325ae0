"""Prometheus metrics at /metrics (issue 16): who may read them, what is counted, and the counts
of a two-worker gunicorn server added up in one scrape."""

from __future__ import annotations

import http.client
import os
import signal
import time

import pytest
import requests
from credentials import basic
from prometheus_client.parser import text_string_to_metric_families

from settings_server import create_app
from settings_server.auth import authenticator

METRICS_TOKEN = "scrape-token-for-tests"
GLOBAL_DETAIL = "/api/settings/global/<global_key:key>/"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, frozenset(labels.items())): value}`` of an exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def app():
    return create_app(
        {"TESTING": True, "SETTINGS_BACKEND": "memory://", "SETTINGS_METRICS_TOKEN": METRICS_TOKEN}
    )


@pytest.fixture
def scrape(client):
    def get() -> dict:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain; version=")
        return samples(response.get_data(as_text=True))

    return get


def test_who_may_read(client, make_user, auth_headers):
    staff = make_user("staff", staff=True)
    plain = make_user("plain")
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json == {"detail": "Authentication credentials were not provided."}
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers=basic("staff", "wrong")).status_code == 401
    assert client.get("/metrics", headers=auth_headers(plain)).status_code == 403
    assert client.get("/metrics", headers=basic("plain", "pw-plain")).status_code == 403
    for headers in (
        auth_headers(staff),
        basic("staff", "pw-staff"),
        {"Authorization": f"bearer  {METRICS_TOKEN}"},
    ):
        assert client.get("/metrics", headers=headers).status_code == 200
    client.get("/api/user/token/", headers=basic("staff", "pw-staff"))  # a session cookie
    assert client.get("/metrics").status_code == 200


def test_no_bearer_token_unless_configured(make_user):
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://"})
    client = app.test_client()
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 401


def test_requests_by_route_template_method_and_status(client, scrape, alice, auth_headers):
    headers = auth_headers(alice)
    for _ in range(3):
        client.get("/api/settings/global/INVENTREE_INSTANCE/", headers=headers)
    client.get("/api/settings/global/NO_SUCH_KEY/", headers=headers)
    client.get("/api/nowhere/", headers=headers)
    client.patch("/api/settings/user/DATE_DISPLAY_FORMAT/", json={"value": "DD-MM-YYYY"},
                 headers=headers)
    client.put("/api/settings/global/INVENTREE_INSTANCE/", json={"value": "x"}, headers=headers)
    found = scrape()
    assert value(found, "settings_server_requests_total", route=GLOBAL_DETAIL, method="GET",
                 status="200") == 3
    assert value(found, "settings_server_requests_total", route=GLOBAL_DETAIL, method="GET",
                 status="404") == 1
    assert value(found, "settings_server_requests_total", route="unrouted", method="GET",
                 status="404") == 1
    assert value(found, "settings_server_requests_total",
                 route="/api/settings/user/<user_key:key>/", method="PATCH", status="200") == 1
    assert value(found, "settings_server_requests_total", route=GLOBAL_DETAIL, method="PUT",
                 status="403") == 1
    assert value(found, "settings_server_request_duration_seconds_count", route=GLOBAL_DETAIL,
                 method="GET") == 4  # the 200s and the 404
    assert value(found, "settings_server_request_duration_seconds_sum", route=GLOBAL_DETAIL,
                 method="GET") > 0
    assert value(found, "settings_server_store_duration_seconds_count") >= 6


def test_no_path_secret_or_value_in_the_exposition(client, alice, auth_headers):
    headers = auth_headers(alice)
    key = headers["Authorization"].split()[1]
    client.get("/api/settings/user/DATE_DISPLAY_FORMAT/?token=query-secret", headers=headers)
    client.patch("/api/settings/user/DATE_DISPLAY_FORMAT/", json={"value": "DD-MM-YYYY"},
                 headers=headers)
    client.get("/api/user/me/", headers=basic("alice", "a-wrong-password"))
    client.get("/api/nothing/here/by-this-name/", headers=headers)
    text = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).get_data(
        as_text=True
    )
    for secret in (key, "query-secret", "DD-MM-YYYY", "a-wrong-password", "alice",
                   "DATE_DISPLAY_FORMAT", "by-this-name", METRICS_TOKEN):
        assert secret not in text
    routes = {
        dict(labels).get("route")
        for name, labels in samples(text)
        if name == "settings_server_requests_total"
    }
    assert routes == {"/api/settings/user/<user_key:key>/", "/api/user/me/", "unrouted"}


def test_failed_logins_and_throttled_requests(app, client, scrape, alice):
    # the login limits: 5 failures a username in 5 minutes
    for _ in range(5):
        assert client.get("/api/user/me/", headers=basic("alice", "wrong")).status_code == 401
    wrong_token = {"Authorization": "Token inv-nope"}
    assert client.get("/api/user/me/", headers=wrong_token).status_code == 401
    assert client.get("/api/user/me/").status_code == 401  # no credentials: not a failed login
    assert client.get("/api/user/me/", headers=basic("alice", "wrong")).status_code == 429
    found = scrape()
    assert value(found, "settings_server_login_failures_total", scheme="basic") == 5
    assert value(found, "settings_server_login_failures_total", scheme="token") == 1
    assert value(found, "settings_server_throttled_requests_total") == 1


def test_store_errors(alice):
    app = create_app(
        {
            "TESTING": True,
            "SETTINGS_BACKEND": "redis://127.0.0.1:1/0?timeout=0.2",
            "SETTINGS_METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    client = app.test_client()
    assert client.get("/api/health/").status_code == 503
    assert client.get("/api/settings/global/").status_code == 503
    text = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    found = samples(text.get_data(as_text=True))
    assert value(found, "settings_server_store_errors_total", operation="ping") == 1
    errors = [v for (name, _), v in found.items() if name == "settings_server_store_errors_total"]
    assert sum(errors) == 2
    assert value(found, "settings_server_requests_total", route="/api/health/", method="GET",
                 status="503") == 1
    assert "127.0.0.1:1" not in text.get_data(as_text=True)


def test_openmetrics_on_request(client):
    response = client.get(
        "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}",
                 "Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_metrics_are_not_in_the_openapi_document(client):
    assert "/metrics" not in client.get("/api/schema/").json["paths"]


# -- under gunicorn, two workers --------------------------------------------------------------


def _get_on_a_new_connection(port: int, path: str, headers: dict[str, str]) -> int:
    """One request on its own connection: the kernel hands it to either worker."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _scrape(url: str) -> dict:
    response = requests.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return samples(response.text)


@pytest.mark.slow
def test_two_workers_add_up(servers, tmp_path):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    url = f"sqlite:///{tmp_path}/metrics.db"
    store = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    user = authenticator(store).users.create("reader", "pw")
    headers = {"Authorization": f"Token {authenticator(store).tokens.issue(user, 'm').key}"}
    server = servers.start(
        url, "--workers", "2", SETTINGS_METRICS_TOKEN=METRICS_TOKEN, TMPDIR=str(private_tmp)
    )
    port = int(server.url.rsplit(":", 1)[1])
    (metrics_dir,) = private_tmp.glob("settings-server-metrics-*")  # made by the master

    made = 0
    while True:
        assert _get_on_a_new_connection(
            port, "/api/settings/global/INVENTREE_INSTANCE/", headers
        ) == 200
        made += 1
        lines = [
            line for line in server.request_lines() if line["path"].startswith("/api/settings")
        ]
        if (made >= 20 and len({line["pid"] for line in lines}) == 2) or made == 400:
            break
    assert len({line["pid"] for line in lines}) == 2, "one worker answered every request"
    assert _get_on_a_new_connection(port, "/not/routed", headers) == 404
    time.sleep(0.2)  # the last request line may trail its response

    found = _scrape(server.url)
    assert value(found, "settings_server_requests_total", route=GLOBAL_DETAIL, method="GET",
                 status="200") == made
    assert value(found, "settings_server_requests_total", route="unrouted", method="GET",
                 status="404") == 1
    assert value(found, "settings_server_request_duration_seconds_count", route=GLOBAL_DETAIL,
                 method="GET") == made
    files = {path.name for path in metrics_dir.iterdir()}
    assert {f"counter_{pid}.db" for pid in server.workers()} <= files

    # A worker killed and replaced: what it counted stays in the scrape.
    os.kill(server.workers()[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while len(server.workers()) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    found = _scrape(server.url)
    assert value(found, "settings_server_requests_total", route=GLOBAL_DETAIL, method="GET",
                 status="200") == made

    server.wait_workers_listening(2)  # a replacement still booting would miss the SIGTERM
    assert server.stop() == 0
    assert not metrics_dir.exists()  # the master removes the directory it made


@pytest.mark.slow
def test_an_operator_directory_is_used_and_emptied_at_start(servers, tmp_path):
    operator_dir = tmp_path / "prometheus"
    operator_dir.mkdir()
    (operator_dir / "counter_999999.db").write_bytes(b"stale")
    server = servers.start(
        f"sqlite:///{tmp_path}/metrics.db",
        "--workers",
        "2",
        SETTINGS_METRICS_TOKEN=METRICS_TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(operator_dir),
    )
    found = _scrape(server.url)
    assert value(found, "settings_server_requests_total", route="/api/health/", method="GET",
                 status="200") >= 1
    assert not (operator_dir / "counter_999999.db").exists()
    assert server.stop() == 0
    assert operator_dir.exists()  # the operator's: kept
