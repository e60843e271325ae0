"""Progress of export, import and migrate (issue 16): a bar on a terminal, a line about every
tenth elsewhere, nothing with --quiet."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys

import pytest

from settings_server.progress import Progress

SCRIPT = os.path.join(os.path.dirname(sys.executable), "settings-server")
BAR = "━"  # rich's bar
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_when_not_on_a_terminal():
    stream = io.StringIO()
    progress = Progress("export: users", 25, stream=stream)
    for _ in range(25):
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "export: users: 3/25 (12%)"
    assert lines[-1] == "export: users: 25/25 (100%)"
    assert len(lines) == 9  # every 3rd of 25, and the last
    assert "\x1b" not in stream.getvalue()


def test_a_bar_on_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream = FakeTerminal()
    progress = Progress("export: users", 200, stream=stream)
    for _ in range(200):
        progress.advance()
    shown = stream.getvalue()
    assert BAR in shown and "200/200" in shown and "100%" in shown
    assert shown.count(HIDE_CURSOR) == 1 and shown.rstrip().endswith(SHOW_CURSOR)
    assert "export: users" in shown


def test_quiet_shows_nothing():
    for stream in (io.StringIO(), FakeTerminal()):
        progress = Progress("export: users", 10, quiet=True, stream=stream)
        for _ in range(10):
            progress.advance()
        assert stream.getvalue() == ""


# -- the commands ------------------------------------------------------------------------------


@pytest.fixture
def populated(tmp_path):
    """A SQLite store with 40 users (each with a user setting); its URL."""
    from backends import store_from_url
    from settings_server.backup import FORMAT, VERSION, apply_import, plan_import
    from settings_server.registry import load_registry

    url = f"sqlite:///{tmp_path}/source.db"
    names = [f"user{number:02}" for number in range(40)]
    document = {
        "format": FORMAT,
        "version": VERSION,
        "users": {
            name: {"id": n + 1, "password_hash": "x", "first_name": "", "last_name": "",
                   "email": "", "is_staff": False, "is_superuser": False, "is_active": True}
            for n, name in enumerate(names)
        },
        "user_settings": {name: {"DATE_DISPLAY_FORMAT": "DD-MM-YYYY"} for name in names},
    }
    store = store_from_url(url)
    try:
        apply_import(store, plan_import(store, load_registry(), document, quiet=True))
    finally:
        store.close()
    return url


def _environment(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_")}
    return {**env, "SETTINGS_BACKEND": url, "TERM": "xterm-256color", "COLUMNS": "100"}


def run_on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the command with stderr on a pseudo-terminal; its status and what it drew there."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [SCRIPT, *argv], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return process.wait(timeout=60), shown.decode(errors="replace")


def run_in_a_pipe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
def test_export_import_migrate_on_a_terminal(populated, tmp_path):
    env = _environment(populated)
    exported = tmp_path / "export.json"
    status, shown = run_on_a_terminal(["export", str(exported)], env)
    assert status == 0, shown
    assert BAR in shown and "export: users" in shown and "40/40" in shown
    assert SHOW_CURSOR in shown and "Exported 40 user(s)" in shown

    env_target = _environment(f"sqlite:///{tmp_path}/target.db")
    status, shown = run_on_a_terminal(["import", str(exported)], env_target)
    assert status == 0, shown
    assert BAR in shown and "import: check users" in shown and "40/40" in shown

    status, shown = run_on_a_terminal(
        ["migrate", "--from", populated, "--to", f"sqlite:///{tmp_path}/copy.db"], env
    )
    assert status == 0, shown
    assert "migrate: read namespaces" in shown and "migrate: verify namespaces" in shown
    assert shown.count(BAR) >= 2

    status, shown = run_on_a_terminal(["export", str(exported), "--quiet"], env)
    assert status == 0 and shown == ""


@pytest.mark.slow
def test_export_import_migrate_in_a_pipe(populated, tmp_path):
    env = _environment(populated)
    exported = run_in_a_pipe(["export"], env)
    assert exported.returncode == 0
    assert json.loads(exported.stdout)["users"]["user39"]["id"] == 40
    assert exported.stderr.splitlines() == [
        f"export: users: {n}/40 ({n * 100 // 40}%)" for n in range(4, 41, 4)
    ]
    path = tmp_path / "export.json"
    path.write_text(exported.stdout)

    imported = run_in_a_pipe(["import", str(path)], _environment(f"sqlite:///{tmp_path}/t.db"))
    assert imported.returncode == 0, imported.stderr
    lines = imported.stderr.splitlines()
    assert lines[0] == "import: check users: 4/40 (10%)"
    assert "import: check users: 40/40 (100%)" in lines
    assert "import: writing 80 change(s) in one transaction" in lines
    assert "\x1b" not in imported.stderr

    migrated = run_in_a_pipe(
        ["migrate", "--from", populated, "--to", f"sqlite:///{tmp_path}/copy.db"], env
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "\x1b" not in migrated.stderr and BAR not in migrated.stderr
    assert any(line.startswith("migrate: verify namespaces:") for line in
               migrated.stderr.splitlines())

    for argv in (["export", "--quiet"], ["import", str(path), "--quiet"]):
        quiet = run_in_a_pipe(argv, _environment(f"sqlite:///{tmp_path}/q.db"))
        assert quiet.returncode == 0
        assert "export:" not in quiet.stderr and "import:" not in quiet.stderr  # warnings stay
