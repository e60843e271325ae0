"""The official InvenTree python client against the real server under gunicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(env: dict[str, str], *argv: str) -> None:
    result = subprocess.run(
        [str(BIN / "settings-server"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn (two workers) on a SQLite store with a staff user and a plain user; the URL."""
    tmp = tmp_path_factory.mktemp("official-client")
    env = {
        **os.environ,
        "SETTINGS_BACKEND": f"sqlite:///{tmp}/s.db",
        "PYTHONPATH": str(ROOT),
    }
    for name in ("SETTINGS_ADMIN_USER", "SETTINGS_ADMIN_PASSWORD", "SETTINGS_SECRET_KEY"):
        env.pop(name, None)
    cli(env, "user", "create", "staffer", "--password", "staff-pw", "--staff")
    cli(env, "user", "create", "plain", "--password", "plain-pw")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start: {process.stderr.read()}")
                time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGQUIT)  # at once: SIGTERM waits out idle keep-alives
        process.wait(timeout=30)


def connect(url: str, username: str, password: str):
    from inventree.api import InvenTreeAPI

    api = InvenTreeAPI(url, username=username, password=password, timeout=10)
    assert api.connected and api.token and api.token.startswith("inv-")
    return api


def test_staff_reads_and_writes_global_settings(server):
    api = connect(server, "staffer", "staff-pw")
    settings = api.get("settings/global/")
    assert any(row["key"] == "INVENTREE_INSTANCE" for row in settings)
    written = api.patch("settings/global/INVENTREE_INSTANCE/", {"value": "From the client"})
    assert written["value"] == "From the client"
    assert api.get("settings/global/INVENTREE_INSTANCE/")["value"] == "From the client"


def test_plain_user_reads_but_cannot_write(server):
    api = connect(server, "plain", "plain-pw")
    assert api.get("settings/global/INVENTREE_INSTANCE/")["key"] == "INVENTREE_INSTANCE"
    with pytest.raises(requests.exceptions.HTTPError) as exc:
        api.patch("settings/global/INVENTREE_INSTANCE/", {"value": "Nope"})
    assert exc.value.args[0]["status_code"] == 403


def test_wrong_password_is_refused(server):
    from inventree.api import InvenTreeAPI

    with pytest.raises(ConnectionError):
        InvenTreeAPI(server, username="plain", password="wrong", timeout=10)
