"""``settings-server check`` on a good and on broken configurations (issue 16)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from settings_server.cli import main

SCRIPT = os.path.join(os.path.dirname(sys.executable), "settings-server")


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """A clean environment of settings-server variables; ``environment(NAME=value, ...)``."""
    for name in list(os.environ):
        if name.startswith("SETTINGS_") or name in ("WEB_CONCURRENCY", "INVENTREE_CURRENCY_CODES"):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def check(capsys) -> tuple[int, dict[str, str], str]:
    """Exit status, each step's status line (``{"store": "OK  store: ..."}``), whole output."""
    status = main(["check"])
    out = capsys.readouterr().out
    steps = {}
    for line in out.splitlines():
        found = re.match(r"(OK|WARN|FAIL|SKIP) +([^:]+):", line)
        if found:
            steps[found[2]] = found[1]
    return status, steps, out


def test_good_configuration(environment, capsys, tmp_path):
    registry = tmp_path / "extra.yaml"
    registry.write_text("global:\n  - {key: SITE_BANNER, type: str, default: ''}\n")
    environment(
        SETTINGS_BACKEND=f"sqlite:///{tmp_path}/good.db",
        SETTINGS_REGISTRY_FILE=str(registry),
        SETTINGS_ADMIN_USER="root",
        SETTINGS_ADMIN_PASSWORD="pw",
        WEB_CONCURRENCY="3",
    )
    status, steps, out = check(capsys)
    assert status == 0, out
    assert steps == {
        "storage URL": "OK",
        "registry": "OK",
        "app": "OK",
        "serving": "OK",
        "store": "OK",
        "accounts": "OK",
    }
    assert f"1 global, 0 user and 0 notification setting(s) from {registry}" in out
    assert "3 worker(s) on 127.0.0.1:8000" in out
    assert "'root' (SETTINGS_ADMIN_USER) is created on the first request" in out
    assert "fix:" not in out


def test_no_accounts_is_a_warning(environment, capsys, tmp_path):
    environment(SETTINGS_BACKEND=f"sqlite:///{tmp_path}/empty.db")
    status, steps, out = check(capsys)
    assert status == 0 and steps["accounts"] == "WARN"
    assert "fix: settings-server user create NAME --superuser" in out


def test_bad_url_and_registry_file(environment, capsys, tmp_path):
    registry = tmp_path / "extra.yaml"
    registry.write_text("global:\n  - {key: lower_case, type: str, default: ''}\n")
    environment(
        SETTINGS_BACKEND="postgres://admin:s3cret@db/settings",
        SETTINGS_REGISTRY_FILE=str(registry),
    )
    status, steps, out = check(capsys)
    assert status == 1
    assert steps == {
        "storage URL": "FAIL",
        "registry": "FAIL",
        "app": "SKIP",
        "serving": "SKIP",
        "store": "SKIP",
        "accounts": "SKIP",
    }
    assert "unknown storage URL 'postgres://admin:***@db/settings'" in out
    assert "s3cret" not in out
    assert str(registry) in out and "lower_case" in out
    assert "fix: set SETTINGS_BACKEND to one of the forms above" in out
    assert "fix: correct the definition named above" in out


def test_unreachable_redis(environment, capsys):
    environment(
        SETTINGS_BACKEND="redis://:s3cret@127.0.0.1:1/0?timeout=0.5", SETTINGS_ADMIN_USER="root"
    )
    status, steps, out = check(capsys)
    assert status == 1
    assert steps["app"] == "OK" and steps["store"] == "FAIL" and steps["accounts"] == "SKIP"
    assert "fix: start Redis or correct the host" in out and "s3cret" not in out


def test_missing_sqlite_directory(environment, capsys, tmp_path):
    environment(SETTINGS_BACKEND=f"sqlite:///{tmp_path}/missing/dir/x.db")
    status, steps, out = check(capsys)
    assert status == 1 and steps["store"] == "FAIL"
    assert "does not exist" in out and "create the directory" in out


@pytest.mark.parametrize(
    ("variables", "step", "message"),
    [
        ({"SETTINGS_LOG_LEVEL": "loud"}, "app", "SETTINGS_LOG_LEVEL must be one of"),
        ({"SETTINGS_MAX_BODY_BYTES": "lots"}, "app", "SETTINGS_MAX_BODY_BYTES"),
        ({"WEB_CONCURRENCY": "many"}, "serving", "must be whole numbers"),
        (
            {"SETTINGS_BACKEND": "memory://", "WEB_CONCURRENCY": "2"},
            "serving",
            "fix: run with WEB_CONCURRENCY=1",
        ),
    ],
)
def test_bad_server_settings(environment, capsys, tmp_path, variables, step, message):
    environment(SETTINGS_BACKEND=f"sqlite:///{tmp_path}/x.db")
    environment(**variables)
    status, steps, out = check(capsys)
    assert status == 1 and steps[step] == "FAIL" and message in out


def test_exit_status_of_the_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_")}
    good = subprocess.run(
        [SCRIPT, "check"],
        env={**env, "SETTINGS_BACKEND": f"sqlite:///{tmp_path}/x.db"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "\x1b[" not in good.stdout  # no colours when not on a terminal
    bad = subprocess.run(
        [SCRIPT, "check"],
        env={**env, "SETTINGS_BACKEND": "nowhere"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert bad.returncode == 1 and "FAIL  storage URL" in bad.stdout
