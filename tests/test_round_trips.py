"""A list costs one storage read, whatever its length (issue 3); counted on the real store."""

from __future__ import annotations

import pytest
from recording import Recorder

READS = ("get", "get_many", "get_all")


@pytest.fixture
def reads(app, monkeypatch):
    """Counts storage reads made while serving requests."""
    store = app.extensions["settings_store"]
    counted = []
    for name in READS:
        method = getattr(store, name)

        def counting(*args, _method=method, _name=name, **kwargs):
            counted.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(store, name, counting)
    return counted


@pytest.mark.parametrize("kind", ["global", "user"])
def test_list_reads_as_often_as_a_detail(client, make_user, auth_headers, reads, kind):
    headers = auth_headers(make_user())
    key = {"global": "INVENTREE_INSTANCE", "user": "DATE_DISPLAY_FORMAT"}[kind]
    client.get(f"/api/settings/{kind}/", headers=headers)  # first request allocates pks
    client.get("/api/settings/global/INVENTREE_INSTANCE_ID/", headers=headers)  # and the UUID

    reads.clear()
    assert client.get(f"/api/settings/{kind}/{key}/", headers=headers).status_code == 200
    detail = len(reads)
    reads.clear()
    rows = client.get(f"/api/settings/{kind}/", headers=headers).get_json()
    assert len(rows) > 30
    assert len(reads) == detail
    assert reads.count("get_all") == 1


@pytest.fixture
def store_calls(app, monkeypatch):
    """Names of the calls that reach the real store behind the read-ahead."""
    wrapper = app.extensions["settings_store"]
    calls = []
    monkeypatch.setattr(wrapper, "store", Recorder(wrapper.store, calls))
    return calls


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/api/settings/global/INVENTREE_DEFAULT_CURRENCY/", None),
        ("get", "/api/settings/global/", None),
        ("get", "/api/settings/global/?limit=25&search=part", None),
        ("get", "/api/settings/user/DATE_DISPLAY_FORMAT/", None),
        ("get", "/api/settings/user/", None),
        ("get", "/api/settings/notification/", None),
        ("patch", "/api/settings/global/INVENTREE_INSTANCE/", [{"value": "X"}, {"value": "Y"}]),
        ("patch", "/api/settings/user/DATE_DISPLAY_FORMAT/",
         [{"value": "DD/MM/YYYY"}, {"value": "YYYY-MM-DD"}]),
    ],
)  # fmt: skip
def test_token_request_reads_the_store_once(client, make_user, auth_headers, store_calls, method, path, body):
    """Token, user and settings come in one round trip; a write that changes a value adds only
    itself (one commit: the value and its history entry; its ``X-Settings-Index`` is the index
    the commit was made on)."""
    headers = auth_headers(make_user(staff=True))
    bodies = body or [None]
    for n in range(2):  # the first request learns the token's owner and allocates pks
        getattr(client, method)(path, headers=headers, json=bodies[n % len(bodies)])
    store_calls.clear()
    response = getattr(client, method)(path, headers=headers, json=bodies[0])
    assert response.status_code == 200
    assert store_calls == (["get_each"] if method == "get" else ["get_each", "commit"])
    assert "X-Settings-Index" in response.headers
