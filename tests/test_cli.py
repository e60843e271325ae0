"""The ``settings-server`` command: user and token management on the configured store."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys

import pytest

from settings_server import create_app
from settings_server.cli import main

TOKEN_FORMAT = re.compile(r"inv-[0-9a-f]{40}-\d{8}")


@pytest.fixture
def backend(tmp_path, monkeypatch):
    """SETTINGS_BACKEND pointing at a fresh SQLite file; returns the URL."""
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("SETTINGS_BACKEND", url)
    for name in ("SETTINGS_ADMIN_USER", "SETTINGS_ADMIN_PASSWORD", "SETTINGS_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    return url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def me(url: str, headers: dict[str, str]) -> int:
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    return app.test_client().get("/api/user/me/", headers=headers).status_code


def basic(username: str, password: str) -> dict[str, str]:
    return {
        "Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    }


def test_user_lifecycle(backend, capsys):
    assert run(capsys, "user", "create", "carol", "--password", "pw-1", "--staff")[0] == 0
    assert run(capsys, "user", "create", "dave", "--password", "pw-2")[0] == 0
    status, out, _ = run(capsys, "user", "list")
    assert status == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows == [["1", "carol", "yes", "no", "yes"], ["2", "dave", "no", "no", "yes"]]
    assert me(backend, basic("carol", "pw-1")) == 200

    assert run(capsys, "user", "set-password", "carol", "--password", "pw-new")[0] == 0
    assert me(backend, basic("carol", "pw-1")) == 401
    assert me(backend, basic("carol", "pw-new")) == 200

    assert run(capsys, "user", "deactivate", "carol")[0] == 0
    assert me(backend, basic("carol", "pw-new")) == 401
    assert run(capsys, "user", "delete", "dave")[0] == 0
    assert [line.split()[1] for line in run(capsys, "user", "list")[1].splitlines()[1:]] == [
        "carol"
    ]


def test_password_prompt(backend, capsys, monkeypatch):
    answers = iter(["typed-pw", "typed-pw"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert run(capsys, "user", "create", "erin")[0] == 0
    assert me(backend, basic("erin", "typed-pw")) == 200

    answers = iter(["one", "two"])
    status, _, err = run(capsys, "user", "set-password", "erin")
    assert status == 1 and "do not match" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("user", "delete", "nobody"), "no user named 'nobody'"),
        (("user", "set-password", "nobody", "--password", "x"), "no user named 'nobody'"),
        (("token", "create", "nobody"), "no user named 'nobody'"),
        (("user", "create", "bad name", "--password", "x"), "invalid username"),
        (("user", "create", "empty", "--password", ""), "must not be empty"),
    ],
)
def test_errors_exit_1(backend, capsys, argv, message):
    status, _, err = run(capsys, *argv)
    assert status == 1
    assert message in err


def test_duplicate_user(backend, capsys):
    run(capsys, "user", "create", "frank", "--password", "x")
    status, _, err = run(capsys, "user", "create", "frank", "--password", "y")
    assert status == 1 and "already exists" in err


def test_bad_backend_url(monkeypatch, capsys):
    monkeypatch.setenv("SETTINGS_BACKEND", "postgres://db/settings")
    status, _, err = run(capsys, "user", "list")
    assert status == 1 and "unknown storage URL" in err and "sqlite:///" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["user"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["token", "revoke", "x"])  # needs --name or --id
    assert exc.value.code == 2


def test_token_commands(backend, capsys):
    run(capsys, "user", "create", "gina", "--password", "pw")
    status, out, err = run(capsys, "token", "create", "gina", "--name", "ci bot")
    assert status == 0
    key = out.strip()
    assert TOKEN_FORMAT.fullmatch(key) and "shown only now" in err
    assert me(backend, {"Authorization": f"Token {key}"}) == 200

    second = run(capsys, "token", "create", "gina", "--name", "ci bot")[1].strip()
    status, listing, _ = run(capsys, "token", "list", "gina")
    assert status == 0 and key not in listing and second not in listing
    assert [line.split()[1::3] for line in listing.splitlines()[1:]] == [
        ["ci-bot", "revoked"],
        ["ci-bot", "live"],
    ]
    assert me(backend, {"Authorization": f"Token {key}"}) == 401

    token_id = listing.splitlines()[2].split()[0]
    assert run(capsys, "token", "revoke", "gina", "--id", token_id)[0] == 0
    assert me(backend, {"Authorization": f"Token {second}"}) == 401
    status, _, err = run(capsys, "token", "revoke", "gina", "--name", "ci bot")
    assert status == 1 and "no live token" in err

    status, _, err = run(capsys, "token", "create", "gina", "--name", "<b>x</b>")
    assert status == 1 and "Remove HTML tags" in err


def test_admin_bootstrap_from_cli(backend, capsys, monkeypatch):
    monkeypatch.setenv("SETTINGS_ADMIN_USER", "root")
    monkeypatch.setenv("SETTINGS_ADMIN_PASSWORD", "root-pw")
    status, out, err = run(capsys, "user", "list")
    assert status == 0 and "Created admin user 'root'" in err
    assert out.splitlines()[1].split() == ["1", "root", "yes", "yes", "yes"]
    assert "Created admin" not in run(capsys, "user", "list")[2]


def test_console_script_in_a_subprocess(backend):
    env = {**os.environ, "SETTINGS_BACKEND": backend}
    script = os.path.join(os.path.dirname(sys.executable), "settings-server")
    created = subprocess.run(
        [script, "user", "create", "hank", "--password", "pw", "--superuser"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    missing = subprocess.run(
        [script, "user", "delete", "nobody"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1 and "no user named 'nobody'" in missing.stderr
    assert me(backend, basic("hank", "pw")) == 200
