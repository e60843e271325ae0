"""A list costs one storage read, whatever its length (issue 3); counted on the real store."""

from __future__ import annotations

import pytest

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
