"""settings-server run: gunicorn with the shipped configuration (issue 6, item 1)."""

from __future__ import annotations

import runpy
import signal
import subprocess
import time

import pytest
import requests
from servers import BIN, ROOT, server_env

from settings_server import cli, gunicorn_conf

CONF = ROOT / "settings_server" / "gunicorn_conf.py"


def load_conf(monkeypatch, **env) -> dict:
    for name in ("SETTINGS_BIND", "WEB_CONCURRENCY", "SETTINGS_GRACEFUL_TIMEOUT",
                 "SETTINGS_LOG_LEVEL", "SETTINGS_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def test_configuration_defaults(monkeypatch):
    conf = load_conf(monkeypatch)
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["workers"] == min(2 * gunicorn_conf._cores() + 1, 8)
    assert conf["wsgi_app"] == "settings_server.wsgi:app"
    assert conf["accesslog"] is None  # the app's JSON request lines are the access log
    assert conf["graceful_timeout"] == 30
    assert conf["loglevel"] == "info"


def test_configuration_from_the_environment(monkeypatch):
    conf = load_conf(
        monkeypatch, SETTINGS_BIND="0.0.0.0:9000, unix:/tmp/s.sock", WEB_CONCURRENCY="3",
        SETTINGS_GRACEFUL_TIMEOUT="5", SETTINGS_LOG_LEVEL="WARNING",
    )
    assert conf["bind"] == ["0.0.0.0:9000", "unix:/tmp/s.sock"]
    assert conf["workers"] == 3
    assert conf["graceful_timeout"] == 5
    assert conf["loglevel"] == "warning"


def test_memory_backend_defaults_to_one_worker(monkeypatch):
    assert load_conf(monkeypatch, SETTINGS_BACKEND="memory://")["workers"] == 1
    assert gunicorn_conf.memory_refusal("memory://", 1) is None
    assert gunicorn_conf.memory_refusal("sqlite:///s.db", 4) is None
    assert "WEB_CONCURRENCY=1" in gunicorn_conf.memory_refusal("memory://", 2)


def test_run_refuses_a_bad_configuration(monkeypatch, capsys):
    monkeypatch.setenv("SETTINGS_BACKEND", "postgres://db/settings")
    assert cli.main(["run"]) == 1
    assert "cannot start: unknown storage URL" in capsys.readouterr().err
    monkeypatch.setenv("SETTINGS_BACKEND", "memory://")
    monkeypatch.setenv("SETTINGS_LOG_LEVEL", "loud")
    assert cli.main(["run"]) == 1
    assert "SETTINGS_LOG_LEVEL must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_run_serves_says_where_and_stops_gracefully(servers, tmp_path):
    server = servers.start(f"sqlite:///{tmp_path}/s.db", "--workers", "2")
    health = requests.get(f"{server.url}/api/health/", timeout=5)
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "storage": "ok"}
    assert f"listening on {server.url} (2 worker(s), storage sqlite)" in server.stdout()
    assert len(server.workers()) == 2
    (line,) = server.request_lines()[-1:]
    assert line["path"] == "/api/health/" and line["status"] == 200
    assert server.stop(signal.SIGTERM) == 0
    assert "Shutting down" in server.stderr()


@pytest.mark.slow
def test_memory_backend_refuses_several_workers(tmp_path):
    """Both ways in: ``settings-server run`` and plain ``gunicorn -w N wsgi:app`` from the
    checkout (its gunicorn.conf.py loads the shipped configuration)."""
    for argv in (
        [str(BIN / "settings-server"), "run", "--workers", "2"],
        [str(BIN / "gunicorn"), "-w", "3", "wsgi:app"],
    ):
        result = subprocess.run(
            argv, cwd=ROOT, env=server_env("memory://", SETTINGS_BIND="127.0.0.1:1"),
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert result.returncode == 1, result.stderr
        assert "memory:// keeps data inside one process" in result.stderr
        assert "WEB_CONCURRENCY=1" in result.stderr


@pytest.mark.slow
def test_memory_backend_runs_with_one_worker(servers):
    server = servers.start("memory://")
    assert "(1 worker(s), storage memory)" in server.stdout()
    assert requests.get(f"{server.url}/api/health/", timeout=5).status_code == 200
    server.process.send_signal(signal.SIGTTIN)  # gunicorn's "one more worker"
    deadline = time.monotonic() + 5
    while "ignoring the request for more workers" not in server.stderr():
        assert time.monotonic() < deadline, server.stderr()
        time.sleep(0.05)
    time.sleep(0.5)  # a worker gunicorn were to add would be forked by now
    assert len(server.workers()) == 1
