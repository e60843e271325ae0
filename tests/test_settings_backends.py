"""The core settings flows on every backend, and what must survive a restart (issues 3, 5)."""

from __future__ import annotations

import time

import pytest

from settings_server import create_app
from settings_server.auth import authenticator


def start(url):
    """A new app (as after a restart) on the store at ``url``."""
    return create_app({"TESTING": True, "SETTINGS_BACKEND": url})


def sign_in(app, username, staff=False):
    accounts = authenticator(app)
    user = accounts.users.get_by_username(username) or accounts.users.create(
        username, f"pw-{username}", is_staff=staff
    )
    return {"Authorization": f"Token {accounts.tokens.issue(user, 'tests').key}"}


def test_read_write_flow(store_url):
    app = start(store_url)
    client = app.test_client()
    staff, alice, bob = sign_in(app, "staff", staff=True), sign_in(app, "alice"), sign_in(app, "bob")

    rows = client.get("/api/settings/global/", headers=alice).get_json()
    assert len(rows) == 136 and [r["pk"] for r in rows] == sorted(r["pk"] for r in rows)

    response = client.patch("/api/settings/global/INVENTREE_INSTANCE/", json={"value": " Lab "}, headers=staff)
    assert response.get_json()["value"] == "Lab"
    assert client.get("/api/settings/global/inventree_instance/", headers=bob).get_json()["value"] == "Lab"
    assert client.patch("/api/settings/global/INVENTREE_INSTANCE/", json={"value": "x"}, headers=alice).status_code == 403

    response = client.put("/api/settings/user/DATE_DISPLAY_FORMAT/", json={"value": "DD/MM/YYYY"}, headers=alice)
    assert response.status_code == 200
    assert client.get("/api/settings/user/DATE_DISPLAY_FORMAT/", headers=alice).get_json()["value"] == "DD/MM/YYYY"
    assert client.get("/api/settings/user/DATE_DISPLAY_FORMAT/", headers=bob).get_json()["value"] == "YYYY-MM-DD"

    page = client.get("/api/settings/user/?limit=5&search=date", headers=alice).get_json()
    assert [r["key"] for r in page["results"]] == ["DATE_DISPLAY_FORMAT"]
    assert page["results"][0]["value"] == "DD/MM/YYYY"

    (mail,) = client.get("/api/settings/notification/", headers=alice).get_json()
    response = client.patch(f"/api/settings/notification/{mail['pk']}/", json={"value": "off"}, headers=alice)
    assert response.get_json()["value"] == "False"
    assert client.get(f"/api/settings/notification/{mail['pk']}/", headers=bob).status_code == 404
    (bobs,) = client.get("/api/settings/notification/", headers=bob).get_json()
    assert bobs["value"] == "True" and bobs["pk"] != mail["pk"]

    response = client.patch("/api/settings/global/INVENTREE_BACKUP_DAYS/", json={"value": "0"}, headers=staff)
    assert response.get_json() == {"non_field_errors": ["Ensure this value is greater than or equal to 1."]}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def durable_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("redis_url")


def test_pks_ids_and_values_survive_a_restart(durable_url, tmp_path):
    first = start(durable_url)
    alice = sign_in(first, "alice")
    client = first.test_client()
    before = {
        kind: {r["key"]: (r["pk"], r["value"]) for r in client.get(f"/api/settings/{kind}/", headers=alice).get_json()}
        for kind in ("global", "user", "notification")
    }
    (mail,) = client.get("/api/settings/notification/", headers=alice).get_json()
    client.patch(f"/api/settings/notification/{mail['pk']}/", json={"value": False}, headers=alice)
    before["notification"]["NOTIFICATION_METHOD_MAIL"] = (mail["pk"], "False")
    first.extensions["settings_store"].close()

    extra = tmp_path / "more.json"
    extra.write_text('{"global": [{"key": "A_NEW_SETTING", "type": "bool", "default": true}]}')
    second = create_app({"TESTING": True, "SETTINGS_BACKEND": durable_url, "SETTINGS_REGISTRY_FILE": str(extra)})
    client = second.test_client()
    alice = sign_in(second, "alice")
    after = {
        kind: {r["key"]: (r["pk"], r["value"]) for r in client.get(f"/api/settings/{kind}/", headers=alice).get_json()}
        for kind in ("global", "user", "notification")
    }
    new_pk, _ = after["global"].pop("A_NEW_SETTING")
    assert after == before
    assert new_pk > max(pk for pk, _ in before["global"].values())
    assert client.get(f"/api/settings/notification/{mail['pk']}/", headers=alice).get_json()["value"] == "False"


def test_pks_unique_across_users_and_kinds(store_url):
    app = start(store_url)
    client = app.test_client()
    seen = {"user": set(), "notification": set()}
    for name in ("u1", "u2", "u3"):
        headers = sign_in(app, name)
        for kind, earlier in seen.items():
            pks = {r["pk"] for r in client.get(f"/api/settings/{kind}/", headers=headers).get_json()}
            assert not pks & earlier
            earlier |= pks
    assert len(seen["user"]) == 3 * 34 and len(seen["notification"]) == 3


@pytest.mark.redis
@pytest.mark.parametrize("cache", ["off", "on"])
def test_a_write_redis_never_acknowledges_answers_503_not_200(private_redis, cache):
    """The response to a write is rendered while Redis applies it; it leaves only once Redis
    has answered, and as a 503 when it has not in time."""
    import redis

    app = start(f"{private_redis.url}?prefix=p:&timeout=0.3&cache={cache}")
    client, staff = app.test_client(), sign_in(app, "staff", staff=True)
    path = "/api/settings/global/INVENTREE_INSTANCE/"
    assert client.patch(path, json={"value": "Before"}, headers=staff).status_code == 200
    with redis.Redis.from_url(private_redis.url) as raw:
        raw.client_pause(900, all=False)  # writes wait 0.9 s; reads go on
        response = client.patch(path, json={"value": "Unanswered"}, headers=staff)
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json() == {"detail": "Storage unavailable."}
        assert response.headers["Retry-After"]
        time.sleep(1.0)
    # The next requests owe nothing to the failed one.
    assert client.get(path, headers=staff).get_json()["value"] in ("Before", "Unanswered")
    response = client.patch(path, json={"value": "After"}, headers=staff)
    assert response.status_code == 200 and response.get_json()["value"] == "After"
    assert client.get(path, headers=staff).get_json()["value"] == "After"
    app.extensions["settings_store"].close()
