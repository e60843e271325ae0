"""The ``settings-server`` command behaves like the command lines people know (issue 16):
``--version``, ``--help``, shell completion, and output that ends quietly in a pipe."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys

import pytest

from settings_server import __version__
from settings_server.cli import main

SCRIPT = os.path.join(os.path.dirname(sys.executable), "settings-server")


def command(*argv: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, *argv],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"settings-server {__version__}\n"
    ran = command("--version")
    assert ran.returncode == 0 and ran.stdout == f"settings-server {__version__}\n"


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("user", "token", "run", "export", "import", "migrate"):
        assert f"  {name} " in out
    assert main(["token", "revoke", "-h"]) == 0
    out = capsys.readouterr().out
    assert "--name TEXT" in out and "--id INTEGER" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["token", "revoke", "x", "--name", "a", "--id", "1"], "exactly one of (--name | --id)"),
        (["token", "revoke", "x", "--id", "one"], "'one' is not a valid integer"),
        (["migrate", "--from", "memory://"], "Missing option '--to'"),
    ],
)
def test_usage_errors_name_the_problem(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Usage: settings-server" in err


def test_bash_completion():
    script = command(env={"_SETTINGS_SERVER_COMPLETE": "bash_source"})
    assert script.returncode == 0
    assert "complete -o nosort -F _settings_server_completion settings-server" in script.stdout

    def complete(words: str) -> list[str]:
        env = {
            "_SETTINGS_SERVER_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        ran = command(env=env)
        assert ran.returncode == 0, ran.stderr
        return [line.split(",", 1)[1] for line in ran.stdout.splitlines()]

    assert complete("settings-server to") == ["token"]
    assert complete("settings-server token re") == ["revoke"]
    assert complete("settings-server migrate --f") == ["--from", "--force"]


def test_zsh_and_fish_completion_scripts():
    for shell in ("zsh", "fish"):
        ran = command(env={"_SETTINGS_SERVER_COMPLETE": f"{shell}_source"})
        assert ran.returncode == 0 and "_SETTINGS_SERVER_COMPLETE" in ran.stdout


def _store_with_many_tokens(url: str, count: int) -> None:
    """One user, ``admin``, with ``count`` tokens, written in one import (issuing them one by
    one would take a minute on SQLite)."""
    from backends import store_from_url
    from settings_server.backup import FORMAT, VERSION, apply_import, plan_import
    from settings_server.registry import load_registry

    tokens = [
        {
            "id": number,
            "name": f"token-{number}",
            "created": "2026-01-01T00:00:00+00:00",
            "expiry": "2027-01-01",
            "revoked": False,
            "user_agent": "",
            "remote_addr": "",
            "digest": hashlib.sha256(f"key-{number}".encode()).hexdigest(),
        }
        for number in range(1, count + 1)
    ]
    document = {
        "format": FORMAT,
        "version": VERSION,
        "users": {"admin": {"id": 1, "is_staff": True, "password_hash": "x"}},
        "tokens": {"admin": tokens},
    }
    store = store_from_url(url)
    try:
        apply_import(store, plan_import(store, load_registry(), document))
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("argv", ["token list admin", "export --include-secrets --quiet"])
def test_output_piped_into_head_ends_quietly(tmp_path, argv):
    """More output than a pipe holds: the command meets a closed pipe after ``head`` exits."""
    url = f"sqlite:///{tmp_path}/pipe.db"
    _store_with_many_tokens(url, 2000)
    piped = subprocess.run(
        f"{shlex.quote(SCRIPT)} {argv} | head -1",
        shell=True,
        env={**os.environ, "SETTINGS_BACKEND": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0
    assert piped.stderr == ""
    assert len(piped.stdout.splitlines()) == 1
