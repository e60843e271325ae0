"""Backup and move: ``settings-server export``, ``import``, ``migrate`` (backup.py)."""

from __future__ import annotations

import json
from base64 import b64encode

import pytest

from backends import store_from_url
from settings_server import create_app
from settings_server.auth import authenticator
from settings_server.backup import (
    BackupError,
    apply_import,
    export_document,
    plan_import,
)
from settings_server.cli import main
from settings_server.registry import load_registry

REGISTRY = load_registry()


def populate(app, make_user, auth_headers) -> dict[str, dict[str, str]]:
    """Two users with global, user and notification settings and a token each; returns the
    token headers by username."""
    alice, bob = make_user("alice", staff=True), make_user("bob")
    make_user("carol")  # no settings of her own
    headers = {"alice": auth_headers(alice), "bob": auth_headers(bob)}
    client = app.test_client()
    writes = [
        ("alice", "global/INVENTREE_COMPANY_NAME", "ACME & Sons — 設定"),
        ("alice", "global/CURRENCY_CODES", "EUR,USD,GBP"),
        ("alice", "global/INVENTREE_DEFAULT_CURRENCY", "GBP"),
        ("alice", "global/PRICING_DECIMAL_PLACES", 4),
        ("alice", "user/LABEL_INLINE", False),
        ("bob", "user/SEARCH_PREVIEW_SHOW_CATEGORIES", "yes"),
        ("bob", f"notification/{bob.id * 10_000 + 1}", True),
    ]
    for who, path, value in writes:
        answer = client.patch(f"/api/settings/{path}/", json={"value": value}, headers=headers[who])
        assert answer.status_code == 200, (path, answer.json)
    return headers


def without_time(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "exported_at"}


def run(capsys, monkeypatch, backend: str | None, *argv: str) -> tuple[int, str, str]:
    if backend is not None:
        monkeypatch.setenv("SETTINGS_BACKEND", backend)
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(autouse=True)
def _no_admin(monkeypatch):
    for name in (
        "SETTINGS_ADMIN_USER",
        "SETTINGS_ADMIN_PASSWORD",
        "SETTINGS_SECRET_KEY",
        "SETTINGS_REGISTRY_FILE",
        "INVENTREE_CURRENCY_CODES",
    ):
        monkeypatch.delenv(name, raising=False)


# --- export and import ------------------------------------------------------------------------


def test_round_trip_into_a_fresh_store(app, make_user, auth_headers, store):
    populate(app, make_user, auth_headers)
    source = app.extensions["settings_store"]
    document = json.loads(json.dumps(export_document(source, REGISTRY, quiet=True)))
    assert document["global"]["INVENTREE_DEFAULT_CURRENCY"] == "GBP"
    assert document["user_settings"] == {
        "alice": {"LABEL_INLINE": "False"},
        "bob": {"SEARCH_PREVIEW_SHOW_CATEGORIES": "True"},
    }
    assert document["notification_settings"] == {
        "bob": {"mail": {"NOTIFICATION_METHOD_MAIL": "True"}}
    }
    assert list(document["users"]) == ["alice", "bob", "carol"]

    calls = []
    real_commit = store.commit
    store.commit = lambda entries, **options: calls.append(entries) or real_commit(entries, **options)
    plan = plan_import(store, REGISTRY, document)
    assert plan.without_password == ["alice", "bob", "carol"]
    apply_import(store, plan)
    assert len(calls) == 1  # everything in one commit

    again = export_document(store, REGISTRY, quiet=True)
    assert without_time(again) == without_time(document)  # ids kept in a fresh store
    # A second import changes nothing.
    assert plan_import(store, REGISTRY, document).changes == []


def test_import_maps_users_by_name_onto_existing_ids(app, make_user, auth_headers, tmp_path):
    populate(app, make_user, auth_headers)
    document = export_document(app.extensions["settings_store"], REGISTRY, quiet=True)
    target = create_app({"TESTING": True, "SETTINGS_BACKEND": f"sqlite:///{tmp_path / 't.db'}"})
    users = authenticator(target).users
    for name in ("zed", "yan", "bob"):  # bob is id 3 here, alice and carol will be 4 and 5
        users.create(name, f"pw-{name}")
    store = target.extensions["settings_store"]
    apply_import(store, plan_import(store, REGISTRY, document))

    assert {u.username: u.id for u in users.list()} == {
        "zed": 1,
        "yan": 2,
        "bob": 3,
        "alice": 4,
        "carol": 5,
    }
    assert users.authenticate("bob", "pw-bob") is not None  # existing password kept
    assert store.get_all("user:3/user") == {"SEARCH_PREVIEW_SHOW_CATEGORIES": "True"}
    assert store.get_all("user:4/user") == {"LABEL_INLINE": "False"}
    assert store.get_all("user:3/notification") == {"NOTIFICATION_METHOD_MAIL": "True"}
    token = authenticator(target).tokens.issue(users.get_by_username("alice")).key
    answer = target.test_client().get(
        "/api/settings/user/LABEL_INLINE/", headers={"Authorization": f"Token {token}"}
    )
    assert answer.json["value"] == "False" and answer.json["pk"] // 10_000 == 4


def test_cli_export_and_import_with_and_without_secrets(
    app, make_user, auth_headers, tmp_path, capsys, monkeypatch
):
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    source = create_app({"TESTING": True, "SETTINGS_BACKEND": source_url})
    alice = authenticator(source).users.create("alice", "pw-alice", is_staff=True)
    token = authenticator(source).tokens.issue(alice, "laptop").key
    secret_key = authenticator(source).secret_key  # made and stored on first need
    source.test_client().patch(
        "/api/settings/user/LABEL_INLINE/",
        json={"value": False},
        headers={"Authorization": f"Token {token}"},
    )

    status, out, err = run(capsys, monkeypatch, source_url, "export")
    assert status == 0 and "export: users: 1/1 (100%)" in err
    plain = json.loads(out)
    assert plain["includes_secrets"] is False
    assert "password_hash" not in plain["users"]["alice"]
    assert "tokens" not in plain and "server" not in plain
    assert "pbkdf2" not in out and "scrypt" not in out

    path = tmp_path / "backup.json"
    status, out, err = run(
        capsys, monkeypatch, None, "export", str(path), "--include-secrets", "--quiet"
    )
    assert (status, out, err) == (0, "", "")
    assert path.stat().st_mode & 0o777 == 0o600
    full = json.loads(path.read_text())
    assert full["users"]["alice"]["password_hash"].startswith("scrypt")
    assert [t["name"] for t in full["tokens"]["alice"]] == ["laptop"]
    assert full["server"]["secret_key"] == secret_key

    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    status, out, _ = run(capsys, monkeypatch, target_url, "import", str(path))
    assert status == 0 and "Imported: " in out
    target = create_app({"TESTING": True, "SETTINGS_BACKEND": target_url})
    client = target.test_client()
    answer = client.get(
        "/api/settings/user/LABEL_INLINE/", headers={"Authorization": f"Token {token}"}
    )
    assert answer.status_code == 200 and answer.json["value"] == "False"
    assert authenticator(target).users.authenticate("alice", "pw-alice") is not None
    assert authenticator(target).secret_key == secret_key


def test_a_bad_entry_anywhere_writes_nothing_and_every_problem_is_named(
    app, make_user, auth_headers, tmp_path, capsys, monkeypatch
):
    populate(app, make_user, auth_headers)
    document = export_document(app.extensions["settings_store"], REGISTRY, quiet=True)
    for number in range(20):  # many good users around the bad ones
        document["users"][f"user{number:02}"] = {"id": 100 + number, "email": f"u{number}@x"}
        document["user_settings"][f"user{number:02}"] = {"LABEL_INLINE": "True"}
    document["user_settings"]["user10"]["LABEL_INLINE"] = "perhaps"
    document["user_settings"]["user11"]["NO_SUCH_SETTING"] = "1"
    document["notification_settings"]["user12"] = {"pigeon": {"X": "True"}}
    document["user_settings"]["mallory"] = {"LABEL_INLINE": "True"}
    document["global"]["INVENTREE_DEFAULT_CURRENCY"] = "XYZ"
    document["users"]["user13"]["is_staff"] = "yes"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    target_url = f"sqlite:///{tmp_path / 'target.db'}"

    status, out, err = run(capsys, monkeypatch, target_url, "import", str(path))
    assert status == 1 and out == ""
    assert "nothing imported: 6 problem(s)" in err
    for expected in (
        "user_settings.user10.LABEL_INLINE: 'perhaps': Value must be a boolean",
        "user_settings.user11: unknown setting 'NO_SUCH_SETTING'",
        "notification_settings.user12: unknown notification method 'pigeon'",
        "user_settings: unknown user 'mallory'",
        "global.INVENTREE_DEFAULT_CURRENCY: 'XYZ': Chosen value is not a valid option",
        "users.user13.is_staff: must be a bool",
    ):
        assert expected in err, err
    store = store_from_url(target_url)
    assert list(store.namespaces()) == []
    store.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ("[]", "the top level must be a JSON object"),
        ('{"format": "something-else", "version": 1}', "not a settings-server export"),
        ('{"format": "settings-server-export", "version": 9}', "version 9 is not supported"),
        (
            '{"format": "settings-server-export", "version": 1, "global": []}',
            "global: must be a JSON object",
        ),
        (
            '{"format": "settings-server-export", "version": 1, "extra": {}}',
            "unknown section 'extra'",
        ),
        (
            '{"format": "settings-server-export", "version": 1, "global": {"LABEL_INLINE": "1"}}',
            "global: unknown setting 'LABEL_INLINE'",
        ),
        (
            (
                '{"format": "settings-server-export", "version": 1, '
                '"global": {"INVENTREE_COMPANY_NAME": 5}}'
            ),
            "values are strings as exported, got int",
        ),
    ],
)
def test_malformed_documents_are_refused(tmp_path, capsys, monkeypatch, content, message):
    path = tmp_path / "doc.json"
    path.write_text(content)
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    status, _, err = run(capsys, monkeypatch, target_url, "import", str(path))
    assert status == 1 and message in err, err
    store = store_from_url(target_url)
    assert list(store.namespaces()) == []
    store.close()


def test_dry_run_reports_changes_and_writes_nothing(
    app, make_user, auth_headers, tmp_path, capsys, monkeypatch
):
    populate(app, make_user, auth_headers)
    path = tmp_path / "doc.json"
    path.write_text(
        json.dumps(export_document(app.extensions["settings_store"], REGISTRY, quiet=True))
    )
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    status, out, _ = run(capsys, monkeypatch, target_url, "import", str(path), "--dry-run")
    assert status == 0
    assert "global: INVENTREE_DEFAULT_CURRENCY = 'GBP'" in out
    assert "users: carol: new user" in out
    assert "user_settings: alice: LABEL_INLINE = 'False'" in out
    assert "nothing written" in out
    store = store_from_url(target_url)
    assert list(store.namespaces()) == []
    store.close()


def test_import_of_a_document_of_settings_only_into_existing_users(tmp_path):
    store = store_from_url(f"sqlite:///{tmp_path / 's.db'}")
    from settings_server.users import UserDirectory

    UserDirectory(store).create("dora", "pw")
    document = {
        "format": "settings-server-export",
        "version": 1,
        "user_settings": {"dora": {"LABEL_INLINE": " no "}},
    }
    plan = plan_import(store, REGISTRY, document)
    assert plan.changes == ["user_settings: dora: LABEL_INLINE = 'False'"]  # normalised
    apply_import(store, plan)
    assert store.get_all("user:1/user") == {"LABEL_INLINE": "False"}
    with pytest.raises(BackupError, match="unknown user 'erin'"):
        plan_import(store, REGISTRY, {**document, "user_settings": {"erin": {}}})
    store.close()


def test_cli_import_records_history_and_refuses_to_change_pinned_settings(
    tmp_path, capsys, monkeypatch
):
    backend = f"sqlite:///{tmp_path / 's.db'}"
    store = store_from_url(backend)
    from settings_server.users import UserDirectory

    UserDirectory(store).create("dora", "pw")
    store.close()
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({
        "format": "settings-server-export",
        "version": 1,
        "global": {"INVENTREE_INSTANCE": "Imported", "INVENTREE_COMPANY_NAME": "My company name"},
        "user_settings": {"dora": {"LABEL_INLINE": "False"}},
    }))
    assert run(capsys, monkeypatch, backend, "import", "--quiet", str(path))[0] == 0
    status, out, _ = run(capsys, monkeypatch, backend, "history")
    assert status == 0
    lines = out.splitlines()[1:]
    assert len(lines) == 2  # the company name was the default already: no change, no entry
    assert "user" in lines[0] and "LABEL_INLINE" in lines[0] and '"True" -> "False"' in lines[0]
    assert "INVENTREE_INSTANCE" in lines[1] and '"InvenTree" -> "Imported"' in lines[1]
    assert all("(cli)" in line and "import" in line for line in lines)
    assert run(capsys, monkeypatch, backend, "history", "--kind", "global")[1].count("\n") == 2
    status, out, _ = run(capsys, monkeypatch, backend, "history", "--key", "label_inline", "--limit", "1")
    assert out.count("\n") == 2 and "LABEL_INLINE" in out

    monkeypatch.setenv("SETTINGS_OVERRIDES", json.dumps({"INVENTREE_INSTANCE": "Pinned"}))
    path.write_text(json.dumps({
        "format": "settings-server-export", "version": 1,
        "global": {"INVENTREE_INSTANCE": "Changed", "INVENTREE_COMPANY_NAME": "Co"},
    }))
    status, _, err = run(capsys, monkeypatch, backend, "import", "--quiet", str(path))
    assert status == 1
    assert "global.INVENTREE_INSTANCE: This setting is fixed by the server configuration." in err
    assert store_from_url(backend).get_all("global") == {
        "INVENTREE_INSTANCE": "Imported", "INVENTREE_COMPANY_NAME": "My company name"
    }


# --- migrate ----------------------------------------------------------------------------------


@pytest.mark.redis
def test_migrate_sqlite_to_redis_to_sqlite_keeps_ids_pks_tokens(
    tmp_path, redis_url, capsys, monkeypatch
):
    first, last = f"sqlite:///{tmp_path / 'first.db'}", f"sqlite:///{tmp_path / 'last.db'}"
    source = create_app({"TESTING": True, "SETTINGS_BACKEND": first})
    users = authenticator(source).users
    users.create("gone", "pw")
    users.delete(users.require("gone").id)  # ids now start at 2: a fresh store would differ
    alice = users.create("alice", "pw-alice", is_staff=True)
    key = authenticator(source).tokens.issue(alice, "before").key
    headers = {"Authorization": f"Token {key}"}
    client = source.test_client()
    client.patch("/api/settings/user/LABEL_INLINE/", json={"value": False}, headers=headers)
    client.patch(
        "/api/settings/global/INVENTREE_COMPANY_NAME/", json={"value": "ACME"}, headers=headers
    )
    listing = client.get("/api/settings/user/", headers=headers).json
    login = client.get(
        "/api/user/token/",
        headers={"Authorization": "Basic " + b64encode(b"alice:pw-alice").decode()},
    )
    (session,) = [
        h.split(";")[0].split("=", 1)[1]
        for h in login.headers.getlist("Set-Cookie")
        if h.startswith("sessionid=")
    ]

    status, out, err = run(capsys, monkeypatch, None, "migrate", "--from", first, "--to", redis_url)
    assert status == 0, err
    assert "Copied and verified" in out and "migrate: read namespaces" in err
    status, _, err = run(capsys, monkeypatch, None, "migrate", "--from", first, "--to", redis_url)
    assert status == 1 and "target store is not empty" in err and "--force" in err
    status, _, _ = run(
        capsys,
        monkeypatch,
        None,
        "migrate",
        "--from",
        first,
        "--to",
        redis_url,
        "--force",
        "--quiet",
    )
    assert status == 0
    status, _, err = run(
        capsys, monkeypatch, None, "migrate", "--from", redis_url, "--to", last, "--quiet"
    )
    assert (status, err) == (0, "")

    for url in (redis_url, last):
        moved = create_app({"TESTING": True, "SETTINGS_BACKEND": url}).test_client()
        assert moved.get("/api/settings/user/", headers=headers).json == listing
        moved.set_cookie("sessionid", session)
        me = moved.get("/api/user/me/")
        assert me.status_code == 200 and me.json["pk"] == alice.id == 2  # session key moved
    target = create_app({"TESTING": True, "SETTINGS_BACKEND": last})
    assert authenticator(target).users.create("next", "pw").id == 3  # counters moved


def test_migrate_refuses_a_nonempty_target_and_forced_copy_keeps_counters_up(tmp_path):
    source = store_from_url(f"sqlite:///{tmp_path / 'a.db'}")
    target = store_from_url(f"sqlite:///{tmp_path / 'b.db'}")
    source.set("global", "A", "1")
    source.incr("user_id", 3)
    target.incr("user_id", 7)
    from settings_server.backup import migrate

    with pytest.raises(BackupError, match="not empty"):
        migrate(source, target, quiet=True)
    report = migrate(source, target, force=True, quiet=True)
    assert (report.namespaces, report.entries) == (2, 2)
    assert target.get("counters", "user_id") == 7
    assert target.get("global", "A") == "1"
    source.close()
    target.close()
