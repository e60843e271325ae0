"""Change control (issue 13), as a user sees it through HTTP: the history of changes with
restore, ETag / If-Match / If-None-Match, atomic bulk writes and pinned settings.

The tests marked "every backend" run on memory, SQLite and Redis (plain and ``cache=on``);
the multi-process ones are in tests/test_change_control_processes.py.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from credentials import basic
from flask import Flask
from flask.testing import FlaskClient

from settings_server import create_app
from settings_server.auth import authenticator
from settings_server.pinned import PinnedSettingsError

HISTORY = "/api/settings/history/"
GLOBAL = "/api/settings/global/"
USER = "/api/settings/user/"
NOTIFICATION = "/api/settings/notification/"
BULK_GLOBAL = "/api/settings/bulk/global/"
BULK_USER = "/api/settings/bulk/user/"

PINNED = {"value": ["This setting is fixed by the server configuration."]}
NOT_FOUND = {"detail": "Not found."}
NOT_AUTHENTICATED = {"detail": "Authentication credentials were not provided."}
PERMISSION_DENIED = {"detail": "You do not have permission to perform this action."}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
STRONG_ETAG = re.compile(r'^"[^"]+"$')

#: Settings only these tests know: a protected global one and a bounded per-user one.
EXTRA_REGISTRY = {
    "global": [
        {"key": "SITE_SECRET", "name": "Site secret", "description": "A protected value.",
         "type": "str", "default": "s0", "protected": True},
    ],
    "user": [
        {"key": "FAVOURITE_NUMBER", "name": "Favourite", "description": "Bounded.",
         "type": "int", "default": 7, "min": 1, "max": 9},
    ],
}


@dataclass
class Site:
    """An app on one store with four users: ``staff``, ``root`` (superuser), ``alice`` and
    ``bob`` (plain), each with a token (``headers[name]``)."""

    app: Flask
    client: FlaskClient
    users: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def history(self, who: str = "staff", **query: Any) -> dict[str, Any]:
        response = self.client.get(HISTORY, query_string=query, headers=self.headers[who])
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def entries(self, who: str = "staff", **query: Any) -> list[dict[str, Any]]:
        return self.history(who, limit=500, **query)["results"]

    def patch(self, path: str, value: Any, who: str = "staff", **headers: str):
        return self.client.patch(path, json={"value": value}, headers={**self.headers[who], **headers})

    def put(self, path: str, value: Any, who: str = "staff", **headers: str):
        return self.client.put(path, json={"value": value}, headers={**self.headers[who], **headers})

    def get(self, path: str, who: str = "staff", **headers: str):
        return self.client.get(path, headers={**self.headers[who], **headers})

    def value(self, path: str, who: str = "staff") -> str:
        return self.get(path, who).get_json()["value"]

    def notification_pk(self, who: str) -> int:
        return self.get(NOTIFICATION, who).get_json()[0]["pk"]


def registry_file(tmp_path: Path, registry: dict[str, Any] | None = None) -> str:
    path = tmp_path / "extra-registry.json"
    path.write_text(json.dumps(registry or EXTRA_REGISTRY), encoding="utf-8")
    return str(path)


def open_site(url: str, tmp_path: Path, *, users: bool = True, **config: Any) -> Site:
    app = create_app({
        "TESTING": True,
        "SETTINGS_BACKEND": url,
        "SETTINGS_REGISTRY_FILE": registry_file(tmp_path),
        **config,
    })
    site = Site(app, app.test_client())
    if users:
        people = authenticator(app).users
        tokens = authenticator(app).tokens
        for name, staff, superuser in (
            ("staff", True, False), ("root", True, True), ("alice", False, False),
            ("bob", False, False),
        ):
            user = people.create(name, f"pw-{name}", is_staff=staff, is_superuser=superuser)
            site.users[name] = user
            site.headers[name] = {"Authorization": f"Token {tokens.issue(user, 't').key}"}
    return site


@pytest.fixture
def site(store_url, tmp_path) -> Site:
    """A :class:`Site` on every backend."""
    return open_site(store_url, tmp_path)


@pytest.fixture
def memory_site(tmp_path) -> Site:
    """A :class:`Site` on the memory store (for what does not depend on the backend)."""
    return open_site("memory://", tmp_path)


# -- 1. history ------------------------------------------------------------------------------


def test_every_write_appends_one_entry_with_every_field(site):
    """Every backend: PATCH and PUT of each kind append one entry each, as the user sees it."""
    instance = f"{GLOBAL}INVENTREE_INSTANCE/"
    assert site.patch(instance, "Ours").status_code == 200
    (first,) = site.entries()
    assert set(first) == {"id", "kind", "key", "user", "old", "new", "actor", "actor_name",
                          "source", "timestamp"}
    assert isinstance(first["id"], int) and first["id"] > 0
    assert {k: v for k, v in first.items() if k not in ("id", "timestamp")} == {
        "kind": "global", "key": "INVENTREE_INSTANCE", "user": None,
        "old": "InvenTree",  # the default: never stored before
        "new": "Ours", "actor": site.users["staff"].id, "actor_name": "staff", "source": "api",
    }
    assert TIMESTAMP.match(first["timestamp"])

    assert site.put(instance, "Theirs").status_code == 200
    latest = site.entries()[0]
    assert (latest["old"], latest["new"], latest["source"]) == ("Ours", "Theirs", "api")
    assert latest["id"] > first["id"]

    assert site.patch(f"{USER}LABEL_INLINE/", False, who="alice").status_code == 200
    (user_entry,) = site.entries("alice", kind="user")
    assert {k: user_entry[k] for k in ("kind", "key", "user", "old", "new", "actor", "actor_name")} == {
        "kind": "user", "key": "LABEL_INLINE", "user": site.users["alice"].id,
        "old": "True", "new": "False", "actor": site.users["alice"].id, "actor_name": "alice",
    }
    assert user_entry["id"] > latest["id"]  # one index across the whole store

    pk = site.notification_pk("bob")
    assert site.patch(f"{NOTIFICATION}{pk}/", False, who="bob").status_code == 200
    (note,) = site.entries("bob", kind="notification")
    assert {k: note[k] for k in ("kind", "user", "old", "new", "actor", "source")} == {
        "kind": "notification", "user": site.users["bob"].id, "old": "True", "new": "False",
        "actor": site.users["bob"].id, "source": "api",
    }
    assert note["id"] > user_entry["id"]
    # the detail answers the same entry as the list
    assert site.get(f"{HISTORY}{note['id']}/", "bob").get_json() == note


def test_an_unchanged_write_adds_no_entry(site):
    """Every backend: re-saving the current value (or the default) logs nothing."""
    instance = f"{GLOBAL}INVENTREE_INSTANCE/"
    assert site.patch(instance, "InvenTree").status_code == 200  # the default, never stored
    assert site.entries() == []
    assert site.patch(instance, "Ours").status_code == 200
    assert site.put(instance, "Ours").status_code == 200
    assert site.client.patch(instance, json={}, headers=site.headers["staff"]).status_code == 200
    assert [e["new"] for e in site.entries()] == ["Ours"]


def test_a_protected_setting_is_logged_masked(memory_site):
    secret = f"{GLOBAL}SITE_SECRET/"
    assert memory_site.patch(secret, "hunter2").status_code == 200
    entries = memory_site.entries(key="SITE_SECRET")
    assert [(e["old"], e["new"]) for e in entries] == [("***", "***")]


def test_a_protected_value_never_appears_in_the_history(memory_site):
    assert memory_site.patch(f"{GLOBAL}SITE_SECRET/", "hunter2").status_code == 200
    assert "hunter2" not in memory_site.client.get(
        HISTORY, headers=memory_site.headers["staff"]).get_data(as_text=True)


def test_bulk_and_restore_entries_name_their_source(memory_site):
    site = memory_site
    answer = site.client.patch(BULK_GLOBAL, json={"INVENTREE_INSTANCE": "Bulk"},
                               headers=site.headers["staff"])
    assert answer.status_code == 200
    (bulk,) = site.entries()
    assert (bulk["source"], bulk["old"], bulk["new"]) == ("bulk", "InvenTree", "Bulk")
    restored = site.client.post(f"{HISTORY}{bulk['id']}/restore/", headers=site.headers["staff"])
    assert restored.status_code == 200
    assert restored.get_json()["value"] == "InvenTree"
    latest = site.entries()[0]
    assert (latest["source"], latest["old"], latest["new"], latest["actor_name"]) == (
        "restore", "Bulk", "InvenTree", "staff")


def test_history_off_with_a_limit_of_zero(store_url, tmp_path):
    """Every backend: SETTINGS_HISTORY_LIMIT=0 writes values and no entry."""
    site = open_site(store_url, tmp_path, SETTINGS_HISTORY_LIMIT="0")
    assert site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Ours").status_code == 200
    assert site.value(f"{GLOBAL}INVENTREE_INSTANCE/") == "Ours"
    assert site.history() == {"count": 0, "next": None, "previous": None, "results": []}
    store = site.app.extensions["settings_store"]
    assert store.get_all("global/history") == {}


def test_retention_keeps_the_newest_entries_of_each_setting(store_url, tmp_path, monkeypatch):
    """Every backend: with a limit of 3, each setting shows its newest 3 entries; the dropped
    ones answer 404 and are eventually deleted from the store."""
    monkeypatch.setattr("settings_server.history.TRIM_EVERY", 16)
    site = open_site(store_url, tmp_path, SETTINGS_HISTORY_LIMIT="3")
    company = f"{GLOBAL}INVENTREE_COMPANY_NAME/"
    assert site.patch(company, "only").status_code == 200
    ids = []
    for n in range(40):  # past two trims
        assert site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", f"v{n}").status_code == 200
        ids.append(site.entries(key="INVENTREE_INSTANCE")[0]["id"])
    kept = site.entries(key="INVENTREE_INSTANCE")
    assert [e["new"] for e in kept] == ["v39", "v38", "v37"]
    assert [e["new"] for e in site.entries(key="INVENTREE_COMPANY_NAME")] == ["only"]
    assert site.get(f"{HISTORY}{ids[0]}/").status_code == 404
    assert site.get(f"{HISTORY}{ids[-1]}/").status_code == 200
    stored = site.app.extensions["settings_store"].get_all("global/history")
    assert len(stored) < 20  # the trims deleted what no reader sees any more


def test_filters(memory_site):
    site = memory_site
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "one")
    time.sleep(0.005)
    site.patch(f"{USER}LABEL_INLINE/", False, who="staff")
    time.sleep(0.005)
    site.patch(f"{GLOBAL}INVENTREE_COMPANY_NAME/", "two")
    time.sleep(0.005)
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "three")
    everything = site.entries()
    assert [e["new"] for e in everything] == ["three", "two", "False", "one"]
    assert [e["new"] for e in site.entries(kind="global")] == ["three", "two", "one"]
    assert [e["new"] for e in site.entries(kind="user")] == ["False"]
    assert site.entries(kind="notification") == []
    assert [e["new"] for e in site.entries(key="inventree_instance")] == ["three", "one"]
    assert [e["new"] for e in site.entries(key="Inventree_Instance", kind="global")] == [
        "three", "one"]
    # since is exclusive: the entry at that moment is not included
    since = everything[2]["timestamp"]
    assert [e["new"] for e in site.entries(since=since)] == ["three", "two"]
    assert [e["new"] for e in site.entries(since=everything[0]["timestamp"])] == []
    assert len(site.entries(since="2000-01-01T00:00:00Z")) == 4
    assert len(site.entries(since="2000-01-01T00:00:00+02:00")) == 4


def test_paging(memory_site):
    site = memory_site
    keys = [r["key"] for r in site.get(GLOBAL).get_json() if r["type"] == "string"][:3]
    for n in range(20):  # 60 entries
        answer = site.client.patch(BULK_GLOBAL, json={k: f"p{n}" for k in keys},
                                   headers=site.headers["staff"])
        assert answer.status_code == 200, answer.get_json()
    page = site.history()
    assert page["count"] == 60 and len(page["results"]) == 50  # always paged: 50 by default
    assert page["previous"] is None
    assert page["next"] == "http://localhost/api/settings/history/?limit=50&offset=50"
    ids = [e["id"] for e in page["results"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    second = site.history(offset=50)
    assert len(second["results"]) == 10 and second["next"] is None
    assert second["previous"] == "http://localhost/api/settings/history/?limit=50"
    assert [e["id"] for e in second["results"]] == sorted(
        {e["id"] for e in site.entries()} - set(ids), reverse=True)
    small = site.history(limit=7, offset=7, kind="global")
    assert len(small["results"]) == 7
    assert small["next"] == "http://localhost/api/settings/history/?kind=global&limit=7&offset=14"
    assert small["previous"] == "http://localhost/api/settings/history/?kind=global&limit=7"


def test_paging_is_capped_at_500(memory_site):
    site = memory_site
    keys = [r["key"] for r in site.get(GLOBAL).get_json() if r["type"] == "boolean"][:128]
    assert len(keys) >= 40
    for n in range(-(-520 // len(keys))):  # every round flips every key
        answer = site.client.patch(BULK_GLOBAL, json={k: n % 2 == 0 for k in keys},
                                   headers=site.headers["staff"])
        assert answer.status_code == 200, answer.get_json()
    page = site.history(limit=100000)
    assert page["count"] > 500
    assert len(page["results"]) == 500
    assert page["next"] == "http://localhost/api/settings/history/?limit=500&offset=500"
    rest = site.history(limit=500, offset=500)
    assert len(rest["results"]) == page["count"] - 500


@pytest.mark.parametrize(
    ("query", "field_name"),
    [({"kind": "bogus"}, "kind"), ({"since": "yesterday"}, "since"),
     ({"since": "2026-13-01T00:00:00Z"}, "since"), ({"user": "x"}, "user")],
)
def test_bad_filters_are_400(memory_site, query, field_name):
    response = memory_site.client.get(HISTORY, query_string=query,
                                      headers=memory_site.headers["alice"])
    assert response.status_code == 400
    body = response.get_json()
    assert list(body) == [field_name] and isinstance(body[field_name], list)


def test_history_needs_authentication(memory_site):
    site = memory_site
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Ours")
    entry_id = site.entries()[0]["id"]
    for response in (
        site.client.get(HISTORY),
        site.client.get(f"{HISTORY}{entry_id}/"),
        site.client.post(f"{HISTORY}{entry_id}/restore/"),
        site.client.patch(BULK_GLOBAL, json={"INVENTREE_INSTANCE": "x"}),
        site.client.patch(BULK_USER, json={"LABEL_INLINE": False}),
    ):
        assert response.status_code == 401
        assert response.get_json() == NOT_AUTHENTICATED
    assert site.value(f"{GLOBAL}INVENTREE_INSTANCE/") == "Ours"


def test_unknown_entry_is_404(memory_site):
    assert memory_site.get(f"{HISTORY}999999/").get_json() == NOT_FOUND
    assert memory_site.get(f"{HISTORY}999999/").status_code == 404
    response = memory_site.client.post(f"{HISTORY}999999/restore/",
                                       headers=memory_site.headers["staff"])
    assert (response.status_code, response.get_json()) == (404, NOT_FOUND)


# -- 2. visibility ---------------------------------------------------------------------------


def test_visibility(site):
    """Every backend: global entries to everyone signed in, per-user ones to their owner."""
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Ours")
    site.patch(f"{USER}LABEL_INLINE/", False, who="alice")
    site.patch(f"{NOTIFICATION}{site.notification_pk('alice')}/", False, who="alice")
    site.patch(f"{USER}LABEL_INLINE/", False, who="bob")
    mine = {e["kind"]: e for e in site.entries("alice")}
    assert set(mine) == {"global", "user", "notification"}
    assert all(e["user"] in (None, site.users["alice"].id) for e in site.entries("alice"))
    bobs = site.entries("bob")
    assert [e["kind"] for e in bobs] == ["user", "global"]
    assert bobs[0]["user"] == site.users["bob"].id
    assert [e["kind"] for e in site.entries("staff")] == ["global"]  # staff: no one else's
    for kind in ("user", "notification"):
        entry_id = mine[kind]["id"]
        assert site.get(f"{HISTORY}{entry_id}/", "alice").status_code == 200
        for other in ("bob", "staff", "root"):
            assert site.get(f"{HISTORY}{entry_id}/", other).get_json() == NOT_FOUND
            response = site.client.post(f"{HISTORY}{entry_id}/restore/",
                                        headers=site.headers[other])
            assert (response.status_code, response.get_json()) == (404, NOT_FOUND)
    assert site.value(f"{USER}LABEL_INLINE/", "alice") == "False"
    assert site.get(f"{HISTORY}{mine['global']['id']}/", "bob").get_json() == mine["global"]


def test_user_filter_is_for_superusers(memory_site):
    site = memory_site
    site.patch(f"{USER}LABEL_INLINE/", False, who="alice")
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Ours")
    alice_id = site.users["alice"].id
    as_root = site.entries("root", user=alice_id)
    assert [(e["kind"], e["user"]) for e in as_root] == [("user", alice_id)]
    assert [e["kind"] for e in site.entries("alice", user=alice_id)] == ["global", "user"]
    for who in ("bob", "staff"):
        response = site.client.get(HISTORY, query_string={"user": alice_id},
                                   headers=site.headers[who])
        assert (response.status_code, response.get_json()) == (403, PERMISSION_DENIED)


# -- 3. restore ------------------------------------------------------------------------------


def test_restore_writes_the_old_value_back(site):
    """Every backend: restore answers the row and records a restore entry."""
    instance = f"{GLOBAL}INVENTREE_INSTANCE/"
    site.patch(instance, "first")
    site.patch(instance, "second")
    entry = site.entries(key="INVENTREE_INSTANCE")[0]
    assert (entry["old"], entry["new"]) == ("first", "second")
    response = site.client.post(f"{HISTORY}{entry['id']}/restore/", headers=site.headers["staff"])
    assert response.status_code == 200
    assert response.get_json() == site.get(instance).get_json()
    assert response.get_json()["value"] == "first"
    assert response.headers["ETag"] == site.get(instance).headers["ETag"]
    latest = site.entries(key="INVENTREE_INSTANCE")[0]
    assert (latest["source"], latest["old"], latest["new"]) == ("restore", "second", "first")


def test_restore_of_a_global_entry_is_for_staff(memory_site):
    site = memory_site
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Ours")
    entry_id = site.entries()[0]["id"]
    response = site.client.post(f"{HISTORY}{entry_id}/restore/", headers=site.headers["alice"])
    assert (response.status_code, response.get_json()) == (403, PERMISSION_DENIED)
    assert site.value(f"{GLOBAL}INVENTREE_INSTANCE/") == "Ours"
    assert len(site.entries()) == 1


def test_restore_of_a_user_entry_is_for_its_owner(memory_site):
    site = memory_site
    site.patch(f"{USER}LABEL_INLINE/", False, who="alice")
    entry_id = site.entries("alice", kind="user")[0]["id"]
    response = site.client.post(f"{HISTORY}{entry_id}/restore/", headers=site.headers["alice"])
    assert response.status_code == 200
    assert response.get_json()["value"] == "True"
    assert response.get_json()["user"] == site.users["alice"].id
    assert site.value(f"{USER}LABEL_INLINE/", "alice") == "True"
    assert site.value(f"{USER}LABEL_INLINE/", "bob") == "True"
    pk = site.notification_pk("alice")
    site.patch(f"{NOTIFICATION}{pk}/", False, who="alice")
    note = site.entries("alice", kind="notification")[0]
    response = site.client.post(f"{HISTORY}{note['id']}/restore/", headers=site.headers["alice"])
    assert response.status_code == 200
    assert response.get_json() == site.get(f"{NOTIFICATION}{pk}/", "alice").get_json()
    assert response.get_json()["value"] == "True"
    assert site.entries("alice", kind="notification")[0]["source"] == "restore"


def test_restore_of_a_protected_setting_is_400(memory_site):
    site = memory_site
    site.patch(f"{GLOBAL}SITE_SECRET/", "one")
    site.patch(f"{GLOBAL}SITE_SECRET/", "two")
    entry = site.entries(key="SITE_SECRET")[0]
    response = site.client.post(f"{HISTORY}{entry['id']}/restore/", headers=site.headers["staff"])
    assert response.status_code == 400
    assert list(response.get_json()) == ["detail"]
    assert site.app.extensions["settings_store"].get("global", "SITE_SECRET") == "two"


def test_restore_validates_the_old_value_as_a_write(tmp_path):
    """The old value goes through today's validation: a registry that narrowed the bounds
    since refuses it with the usual 400, and nothing is written."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    site = open_site(url, tmp_path)
    number = f"{USER}FAVOURITE_NUMBER/"
    site.patch(number, 2, who="alice")
    site.patch(number, 8, who="alice")
    entry = site.entries("alice", key="FAVOURITE_NUMBER")[0]
    assert (entry["old"], entry["new"]) == ("2", "8")
    narrowed = json.loads(json.dumps(EXTRA_REGISTRY))
    narrowed["user"][0]["min"] = 3
    (tmp_path / "narrow").mkdir()
    later = create_app({"TESTING": True, "SETTINGS_BACKEND": url,
                        "SETTINGS_REGISTRY_FILE": registry_file(tmp_path / "narrow", narrowed)})
    client = later.test_client()
    response = client.post(f"{HISTORY}{entry['id']}/restore/", headers=site.headers["alice"])
    assert response.status_code == 400
    assert response.get_json() == {
        "non_field_errors": ["Ensure this value is greater than or equal to 3."]}
    assert client.get(number, headers=site.headers["alice"]).get_json()["value"] == "8"
    assert len(site.entries("alice", key="FAVOURITE_NUMBER")) == 2


def test_restore_of_a_pinned_setting_is_400(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    site = open_site(url, tmp_path)
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Ours")
    entry_id = site.entries()[0]["id"]
    pinned = open_site(url, tmp_path, users=False,
                       SETTINGS_OVERRIDES='{"INVENTREE_INSTANCE": "Fixed"}')
    client = pinned.app.test_client()
    response = client.post(f"{HISTORY}{entry_id}/restore/", headers=site.headers["staff"])
    assert (response.status_code, response.get_json()) == (400, PINNED)
    assert len(site.entries()) == 1
    assert site.app.extensions["settings_store"].get("global", "INVENTREE_INSTANCE") == "Ours"


def test_restore_with_a_session_needs_csrf(memory_site):
    site = memory_site
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Ours")
    entry_id = site.entries()[0]["id"]
    client = site.app.test_client()
    login = client.get("/api/user/token/", headers=basic("staff", "pw-staff"))
    assert login.status_code == 200
    csrf = client.get_cookie("csrftoken").value
    refused = client.post(f"{HISTORY}{entry_id}/restore/")
    assert refused.status_code == 403
    assert refused.get_json() == {"detail": "CSRF Failed: CSRF token missing."}
    assert site.value(f"{GLOBAL}INVENTREE_INSTANCE/") == "Ours"
    bulk = client.patch(BULK_GLOBAL, json={"INVENTREE_INSTANCE": "x"})
    assert bulk.status_code == 403 and bulk.get_json()["detail"].startswith("CSRF Failed")
    accepted = client.post(f"{HISTORY}{entry_id}/restore/", headers={"X-CSRFToken": csrf})
    assert accepted.status_code == 200 and accepted.get_json()["value"] == "InvenTree"


# -- 4. ETag ---------------------------------------------------------------------------------


def test_etag_changes_exactly_when_the_value_does(site):
    """Every backend."""
    instance = f"{GLOBAL}INVENTREE_INSTANCE/"
    first = site.get(instance)
    tag = first.headers["ETag"]
    assert STRONG_ETAG.match(tag)
    assert first.headers["X-Setting-Source"] == "default"
    unchanged = site.patch(instance, "InvenTree")
    assert unchanged.headers["ETag"] == tag
    changed = site.patch(instance, "Ours")
    assert changed.headers["ETag"] != tag and STRONG_ETAG.match(changed.headers["ETag"])
    assert changed.headers["X-Setting-Source"] == "stored"
    assert site.get(instance).headers["ETag"] == changed.headers["ETag"]
    assert site.put(instance, "Ours").headers["ETag"] == changed.headers["ETag"]
    back = site.put(instance, "InvenTree")
    assert back.headers["ETag"] == tag  # the same value: the same tag
    assert site.get(f"{USER}LABEL_INLINE/", "alice").headers["ETag"]
    assert site.get(f"{NOTIFICATION}{site.notification_pk('alice')}/", "alice").headers["ETag"]


def test_if_match(site):
    """Every backend: a stale tag is 412 and writes nothing; ``*`` and the current tag match;
    a weak tag never does."""
    instance = f"{GLOBAL}INVENTREE_INSTANCE/"
    stale = site.get(instance).headers["ETag"]
    current = site.patch(instance, "Ours").headers["ETag"]
    before = len(site.entries())
    for method in (site.patch, site.put):
        refused = method(instance, "Theirs", **{"If-Match": stale})
        assert refused.status_code == 412
        body = refused.get_json()
        assert list(body) == ["detail"] and isinstance(body["detail"], str)
    weak = site.patch(instance, "Theirs", **{"If-Match": f"W/{current}"})
    assert weak.status_code == 412
    assert site.value(instance) == "Ours"
    assert len(site.entries()) == before
    assert site.patch(instance, "Theirs", **{"If-Match": f'"nope", {current}'}).status_code == 200
    star = site.put(instance, "Star", **{"If-Match": "*"})
    assert star.status_code == 200 and star.get_json()["value"] == "Star"
    assert [e["new"] for e in site.entries()][:2] == ["Star", "Theirs"]
    user_tag = site.get(f"{USER}LABEL_INLINE/", "alice").headers["ETag"]
    assert site.patch(f"{USER}LABEL_INLINE/", False, "alice", **{"If-Match": user_tag}).status_code == 200
    assert site.patch(f"{USER}LABEL_INLINE/", True, "alice", **{"If-Match": user_tag}).status_code == 412


def test_if_match_is_checked_before_validation_writes_nothing(memory_site):
    """A stale If-Match with a bad value: either answer, but never a write."""
    site = memory_site
    number = f"{GLOBAL}INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE/"
    stale = site.get(number).headers["ETag"]
    site.patch(number, 5)
    assert site.patch(number, 99, **{"If-Match": stale}).status_code in (400, 412)
    assert site.value(number) == "5"


def test_a_list_etag_is_stable_while_nothing_changes(memory_site):
    """The first read of the global list fixes a generated default (INVENTREE_INSTANCE_ID):
    the answer is the same before and after, so must be its ETag."""
    first = memory_site.get(GLOBAL)
    second = memory_site.get(GLOBAL)
    assert first.data == second.data
    assert first.headers["ETag"] == second.headers["ETag"]
    assert memory_site.get(GLOBAL, **{"If-None-Match": first.headers["ETag"]}).status_code == 304


def test_if_none_match(site):
    """Every backend: 304 with no body while unchanged (detail and list), 200 after."""
    instance = f"{GLOBAL}INVENTREE_INSTANCE/"
    detail = site.get(instance)
    tag = detail.headers["ETag"]
    not_modified = site.get(instance, **{"If-None-Match": tag})
    assert not_modified.status_code == 304 and not_modified.data == b""
    assert not_modified.headers["ETag"] == tag
    listing = site.get(GLOBAL)
    list_tag = listing.headers["ETag"]
    cached = site.get(GLOBAL, **{"If-None-Match": list_tag})
    assert cached.status_code == 304 and cached.data == b""
    user_list = site.get(USER, "alice")
    assert site.get(USER, "alice", **{"If-None-Match": user_list.headers["ETag"]}).status_code == 304
    site.patch(instance, "Ours")
    fresh = site.get(instance, **{"If-None-Match": tag})
    assert fresh.status_code == 200 and fresh.get_json()["value"] == "Ours"
    fresh_list = site.get(GLOBAL, **{"If-None-Match": list_tag})
    assert fresh_list.status_code == 200
    assert fresh_list.headers["ETag"] != list_tag
    # another user's write changes neither of alice's
    site.patch(f"{USER}LABEL_INLINE/", False, "bob")
    assert site.get(USER, "alice", **{"If-None-Match": user_list.headers["ETag"]}).status_code == 304


def test_if_none_match_never_answers_304_for_a_changed_body(memory_site):
    """INVENTREE_DEFAULT_CURRENCY's row carries choices made from CURRENCY_CODES: its ETag
    changes with them, though its value does not."""
    site = memory_site
    currency = f"{GLOBAL}INVENTREE_DEFAULT_CURRENCY/"
    before = site.get(currency)
    assert site.patch(f"{GLOBAL}CURRENCY_CODES/", "USD,EUR").status_code == 200
    after = site.get(currency)
    assert after.data != before.data  # the choices changed with CURRENCY_CODES
    conditional = site.get(currency, **{"If-None-Match": before.headers["ETag"]})
    assert conditional.status_code == 200
    assert conditional.data == after.data


def test_conditional_headers_leave_the_327_bodies_alone(memory_site):
    site = memory_site
    site.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Ours")
    for path, who in ((f"{GLOBAL}INVENTREE_INSTANCE/", "staff"), (GLOBAL, "staff"),
                      (f"{GLOBAL}?limit=3&offset=2", "staff"), (USER, "alice"),
                      (f"{USER}LABEL_INLINE/", "alice"), (NOTIFICATION, "alice")):
        plain = site.get(path, who)
        tagged = site.get(path, who, **{"If-None-Match": '"something-else"'})
        assert tagged.status_code == plain.status_code == 200
        assert tagged.data == plain.data
        assert tagged.headers["Content-Type"] == plain.headers["Content-Type"]
    instance = f"{GLOBAL}INVENTREE_INSTANCE/"
    plain = site.patch(instance, "Next")
    tag = plain.headers["ETag"]
    matched = site.patch(instance, "Next", **{"If-Match": tag})
    assert matched.data == plain.data


# -- 5. bulk ---------------------------------------------------------------------------------


def test_bulk_is_all_or_nothing(site):
    """Every backend: one bad value among good ones: 400 naming each failing key."""
    body = {
        "INVENTREE_INSTANCE": "Good",
        "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE": 99,
        "INVENTREE_COMPANY_NAME": "Also good",
        "NO_SUCH_SETTING": "x",
        "BARCODE_ENABLE": "maybe",
    }
    response = site.client.patch(BULK_GLOBAL, json=body, headers=site.headers["staff"])
    assert response.status_code == 400
    errors = response.get_json()
    assert set(errors) == {"INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE", "NO_SUCH_SETTING", "BARCODE_ENABLE"}
    assert all(isinstance(m, list) and m and all(isinstance(s, str) for s in m)
               for m in errors.values())
    assert site.value(f"{GLOBAL}INVENTREE_INSTANCE/") == "InvenTree"
    assert site.value(f"{GLOBAL}INVENTREE_COMPANY_NAME/") == "My company name"
    assert site.entries() == []
    good = site.client.patch(BULK_GLOBAL, data=json.dumps({
        "INVENTREE_COMPANY_NAME": "Co", "inventree_instance": "Inst",
        "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE": 5}), content_type="application/json",
        headers=site.headers["staff"])
    assert good.status_code == 200
    rows = good.get_json()
    assert [r["key"] for r in rows] == [
        "INVENTREE_COMPANY_NAME", "INVENTREE_INSTANCE", "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE"]
    assert [r["value"] for r in rows] == ["Co", "Inst", "5"]
    assert rows[1] == site.get(f"{GLOBAL}INVENTREE_INSTANCE/").get_json()
    entries = site.entries()
    assert sorted(e["key"] for e in entries) == sorted(r["key"] for r in rows)
    assert {e["source"] for e in entries} == {"bulk"}
    assert {e["actor_name"] for e in entries} == {"staff"}


@pytest.mark.parametrize("size", [0, 129])
def test_bulk_size_limits(memory_site, size):
    site = memory_site
    keys = [r["key"] for r in site.get(GLOBAL).get_json() if r["type"] == "string"]
    body = {key: "x" for key in keys[:size]}
    body.update({f"EXTRA_{n}": "x" for n in range(size - len(body))})
    response = site.client.patch(BULK_GLOBAL, json=body, headers=site.headers["staff"])
    assert response.status_code == 400
    assert isinstance(response.get_json(), dict)
    assert site.entries() == []


def test_bulk_of_128_is_accepted(memory_site):
    site = memory_site
    rows = site.get(GLOBAL).get_json()
    body = {row["key"]: row["value"] for row in rows if row["key"] != "SITE_SECRET"}
    body = dict(list(body.items())[:128])
    assert len(body) == 128
    response = site.client.patch(BULK_GLOBAL, data=json.dumps(body),
                                 content_type="application/json", headers=site.headers["staff"])
    assert response.status_code == 200, response.get_json()
    assert [r["key"] for r in response.get_json()] == list(body)  # request order
    assert site.entries() == []  # nothing changed


def test_bulk_refuses_a_setting_given_twice_in_any_case(memory_site):
    site = memory_site
    body = {"INVENTREE_INSTANCE": "a", "inventree_instance": "b", "INVENTREE_COMPANY_NAME": "c"}
    response = site.client.patch(BULK_GLOBAL, data=json.dumps(body),
                                 content_type="application/json", headers=site.headers["staff"])
    assert response.status_code == 400
    assert response.get_json() == {
        "inventree_instance": ["This setting is given more than once (keys are case-insensitive)."]
    }
    assert site.entries() == []


@pytest.mark.parametrize("body", [[], "x", None, [{"INVENTREE_INSTANCE": "x"}]])
def test_bulk_body_must_be_an_object(memory_site, body):
    response = memory_site.client.patch(BULK_GLOBAL, data=json.dumps(body),
                                        content_type="application/json",
                                        headers=memory_site.headers["staff"])
    assert response.status_code == 400
    assert memory_site.entries() == []


def test_bulk_permissions(memory_site):
    site = memory_site
    refused = site.client.patch(BULK_GLOBAL, json={"INVENTREE_INSTANCE": "x"},
                                headers=site.headers["alice"])
    assert (refused.status_code, refused.get_json()) == (403, PERMISSION_DENIED)
    assert site.value(f"{GLOBAL}INVENTREE_INSTANCE/") == "InvenTree"
    mine = site.client.patch(BULK_USER, data='{"LABEL_INLINE": false, "FAVOURITE_NUMBER": 3}',
                             content_type="application/json", headers=site.headers["alice"])
    assert mine.status_code == 200
    assert [(r["key"], r["value"], r["user"]) for r in mine.get_json()] == [
        ("LABEL_INLINE", "False", site.users["alice"].id),
        ("FAVOURITE_NUMBER", "3", site.users["alice"].id)]
    assert site.value(f"{USER}LABEL_INLINE/", "alice") == "False"
    assert site.value(f"{USER}LABEL_INLINE/", "bob") == "True"
    assert site.value(f"{USER}FAVOURITE_NUMBER/", "bob") == "7"
    assert {(e["kind"], e["user"], e["source"]) for e in site.entries("alice", kind="user")} == {
        ("user", site.users["alice"].id, "bulk")}
    bad = site.client.patch(BULK_USER, json={"LABEL_INLINE": True, "FAVOURITE_NUMBER": 10},
                            headers=site.headers["alice"])
    assert bad.status_code == 400 and list(bad.get_json()) == ["FAVOURITE_NUMBER"]
    assert site.value(f"{USER}LABEL_INLINE/", "alice") == "False"
    global_key = site.client.patch(BULK_USER, json={"INVENTREE_INSTANCE": "x"},
                                   headers=site.headers["alice"])
    assert global_key.status_code == 400 and list(global_key.get_json()) == ["INVENTREE_INSTANCE"]


# -- 6. pinned settings ----------------------------------------------------------------------

PIN_SECRET = "Pinned-9f3c2e-instance"


def pinned_file(tmp_path: Path, form: str) -> Path:
    path = tmp_path / f"overrides.{form}"
    if form == "json":
        path.write_text(json.dumps({"INVENTREE_INSTANCE": PIN_SECRET,
                                    "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE": 4}))
    elif form == "toml":
        path.write_text(f'INVENTREE_INSTANCE = "{PIN_SECRET}"\nINVENTREE_DOWNLOAD_IMAGE_MAX_SIZE = 4\n')
    else:
        path.write_text(f"INVENTREE_INSTANCE: {PIN_SECRET}\nINVENTREE_DOWNLOAD_IMAGE_MAX_SIZE: 4\n")
    return path


@pytest.fixture(params=["variable", "json", "toml", "yaml"])
def pinned_config(request, tmp_path) -> dict[str, str]:
    if request.param == "variable":
        return {"SETTINGS_OVERRIDES": json.dumps(
            {"INVENTREE_INSTANCE": PIN_SECRET, "inventree_download_image_max_size": "4"})}
    return {"SETTINGS_OVERRIDES_FILE": str(pinned_file(tmp_path, request.param))}


def test_pinned_values_are_served(pinned_config, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    site = open_site("memory://", tmp_path, **pinned_config)
    for key, value in (("INVENTREE_INSTANCE", PIN_SECRET), ("INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE", "4")):
        detail = site.get(f"{GLOBAL}{key}/", "alice")
        assert detail.get_json()["value"] == value
        assert detail.headers["X-Setting-Source"] == "override"
        rows = {r["key"]: r for r in site.get(GLOBAL, "alice").get_json()}
        assert rows[key] == detail.get_json()
    assert site.get(f"{GLOBAL}INVENTREE_COMPANY_NAME/").headers["X-Setting-Source"] == "default"
    assert PIN_SECRET not in caplog.text


def test_every_write_to_a_pinned_setting_is_refused(tmp_path, caplog):
    """Every write path answers the same 400 and writes nothing (no value, no entry)."""
    caplog.set_level(logging.DEBUG)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    before = open_site(url, tmp_path)
    before.patch(f"{GLOBAL}INVENTREE_INSTANCE/", "Stored")
    entry_id = before.entries()[0]["id"]
    site = open_site(url, tmp_path, users=False,
                     SETTINGS_OVERRIDES=json.dumps({"INVENTREE_INSTANCE": PIN_SECRET}))
    site.users, site.headers = before.users, before.headers
    instance = f"{GLOBAL}INVENTREE_INSTANCE/"
    tag = site.get(instance).headers["ETag"]
    for response in (
        site.patch(instance, "x"),
        site.put(instance, "x"),
        site.patch(instance, PIN_SECRET),
        site.patch("/api/settings/global/inventree_instance/", "x", **{"If-Match": tag}),
        site.client.post(f"{HISTORY}{entry_id}/restore/", headers=site.headers["staff"]),
    ):
        assert (response.status_code, response.get_json()) == (400, PINNED)
    bulk = site.client.patch(BULK_GLOBAL, json={"INVENTREE_COMPANY_NAME": "ok",
                                                "INVENTREE_INSTANCE": "x"},
                             headers=site.headers["staff"])
    assert bulk.status_code == 400
    assert bulk.get_json() == {"INVENTREE_INSTANCE": PINNED["value"]}
    store = site.app.extensions["settings_store"]
    assert store.get("global", "INVENTREE_INSTANCE") == "Stored"
    assert store.get("global", "INVENTREE_COMPANY_NAME") is None
    assert len(site.entries()) == 1
    assert site.value(instance) == PIN_SECRET
    assert PIN_SECRET not in caplog.text


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ('{"NO_SUCH_SETTING": "x"}', "NO_SUCH_SETTING"),
        ('{"INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE": 99}', "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE"),
        ('{"BARCODE_ENABLE": "perhaps"}', "BARCODE_ENABLE"),
        ('{"INVENTREE_INSTANCE": "x",', "SETTINGS_OVERRIDES"),
        ('["INVENTREE_INSTANCE"]', "SETTINGS_OVERRIDES"),
    ],
)
def test_a_bad_pin_stops_the_start(overrides, named):
    with pytest.raises(PinnedSettingsError, match=named):
        create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                    "SETTINGS_OVERRIDES": overrides})


@pytest.mark.parametrize("form", ["json", "toml", "yaml"])
def test_a_bad_pin_file_stops_the_start(tmp_path, form):
    path = tmp_path / f"bad.{form}"
    path.write_text({"json": '{"BARCODE_RESULTS_MAX_NUM": "lots"}',
                     "toml": 'BARCODE_RESULTS_MAX_NUM = "lots"\n',
                     "yaml": "BARCODE_RESULTS_MAX_NUM: lots\n"}[form])
    with pytest.raises(PinnedSettingsError, match="BARCODE_RESULTS_MAX_NUM"):
        create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                    "SETTINGS_OVERRIDES_FILE": str(path)})
    broken = tmp_path / f"broken.{form}"
    broken.write_text("{{{ not [ valid")
    with pytest.raises(PinnedSettingsError, match=re.escape(str(broken))):
        create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                    "SETTINGS_OVERRIDES_FILE": str(broken)})


def test_pinned_values_with_a_secret_shape_never_reach_the_log(tmp_path, caplog):
    """Even a refused pin does not put its value into the error or the log."""
    caplog.set_level(logging.DEBUG)
    secret = "Zq-very-secret-88"
    with pytest.raises(PinnedSettingsError) as raised:
        create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                    "SETTINGS_OVERRIDES": json.dumps({"INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE": secret})})
    assert "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE" in str(raised.value)
    assert secret not in caplog.text


# -- 7(c). a store that fails partway through a bulk write -----------------------------------


def test_sqlite_failing_at_the_second_row_of_a_bulk_write_writes_nothing(tmp_path):
    """A trigger aborts the second row the bulk write inserts: 503, and neither value nor
    any history entry nor the change counter is left behind."""
    db = tmp_path / "store.db"
    site = open_site(f"sqlite:///{db}", tmp_path)
    store = site.app.extensions["settings_store"]
    assert store.get_all("global") == {}
    with sqlite3.connect(db) as connection:
        connection.execute(
            "CREATE TRIGGER abort_second AFTER INSERT ON entries"
            " WHEN (SELECT count(*) FROM entries WHERE key LIKE 'global' || char(31) || '%') >= 2"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    response = site.client.patch(BULK_GLOBAL, json={
        "INVENTREE_INSTANCE": "one", "INVENTREE_COMPANY_NAME": "two"},
        headers=site.headers["staff"])
    assert response.status_code == 503
    assert response.get_json() == {"detail": "Storage unavailable."}
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TRIGGER abort_second")
    assert site.value(f"{GLOBAL}INVENTREE_INSTANCE/") == "InvenTree"
    assert site.value(f"{GLOBAL}INVENTREE_COMPANY_NAME/") == "My company name"
    assert site.entries() == []
    assert store.get_all("global") == {} and store.get_all("global/history") == {}
    assert store.get("counters", "changes") is None
    # the store works again once the trigger is gone
    again = site.client.patch(BULK_GLOBAL, json={
        "INVENTREE_INSTANCE": "one", "INVENTREE_COMPANY_NAME": "two"},
        headers=site.headers["staff"])
    assert again.status_code == 200
    assert sorted(e["new"] for e in site.entries()) == ["one", "two"]


# -- the OpenAPI document ---------------------------------------------------------------------


def test_every_change_control_operation_is_documented(memory_site):
    paths = memory_site.client.get("/api/schema/").get_json()["paths"]
    expected = {
        "/api/settings/history/": {"get"},
        "/api/settings/history/{entry_id}/": {"get"},
        "/api/settings/history/{entry_id}/restore/": {"post"},
        "/api/settings/bulk/global/": {"patch"},
        "/api/settings/bulk/user/": {"patch"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
        for method in methods:
            responses = paths[path][method]["responses"]
            assert "200" in responses and "401" in responses, (path, method)
    assert "412" in paths["/api/settings/global/{key}/"]["patch"]["responses"]
