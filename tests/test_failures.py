"""What the server does when its store fails (issue 6, item 3), under gunicorn.

* Redis: a private redis-server that the test stops (SIGSTOP: it hangs), kills (SIGKILL) and
  restarts. Every request that needs it answers 503 JSON with ``Retry-After`` within the
  storage timeout, never a hang, a 500 or HTML, and the server recovers by itself.
* SQLite: a worker SIGKILLed in the middle of a burst of writes, then the whole server: every
  write that was answered 200 is in the file afterwards, and the file passes
  ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import threading
import time
from typing import Self

import pytest
import requests

from settings_server import create_app
from settings_server.auth import authenticator

pytestmark = pytest.mark.slow

TIMEOUT = 0.5  # seconds: the storage timeout the Redis servers run with
SLACK = 0.75  # seconds on top of it for the HTTP round trip on a busy machine
GLOBAL = "/api/settings/global/INVENTREE_INSTANCE/"


def staff_token(backend: str) -> str:
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": backend})
    auth = authenticator(app)
    key = auth.tokens.issue(auth.users.create("ops", "pw-ops", is_staff=True), "ops").key
    app.extensions["settings_store"].close()
    return key


def timed(method: str, url: str, **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.request(method, url, timeout=10, **kwargs)
    return response, time.monotonic() - started


def assert_unavailable(base: str, headers: dict[str, str], within: float) -> float:
    """Health, a list, a write and the caller's account, twice (both workers): each 503 JSON
    with Retry-After in ``within`` seconds. Returns the slowest answer."""
    slowest = 0.0
    for _ in range(2):
        for method, path, body in (
            ("GET", "/api/health/", None),
            ("GET", "/api/settings/global/", None),
            ("PATCH", GLOBAL, {"value": "kept"}),
            ("GET", "/api/user/me/", None),
        ):
            response, took = timed(method, base + path, headers=headers, json=body)
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.headers["Content-Type"] == "application/json"
            assert response.headers["Retry-After"] == "5"
            assert response.json()["detail"] == "Storage unavailable."  # no host or error text
            assert took < within, (path, took)
            slowest = max(slowest, took)
    return slowest


def wait_recovered(base: str, headers: dict[str, str], limit: float = 10.0) -> float:
    """Seconds until health and an authenticated read answer 200 again (no restart)."""
    started = time.monotonic()
    while True:
        health, _ = timed("GET", base + "/api/health/")
        if health.status_code == 200:
            read, _ = timed("GET", base + GLOBAL, headers=headers)
            if read.status_code == 200:
                assert read.json()["value"] == "kept"
                return time.monotonic() - started
        assert health.status_code == 503, health.text
        assert time.monotonic() - started < limit, "did not recover"
        time.sleep(0.05)


@pytest.mark.redis
def test_redis_outage_is_503_within_the_timeout_then_recovers(private_redis, servers, capsys):
    backend = f"{private_redis.url}?prefix=outage:&timeout={TIMEOUT}"
    headers = {"Authorization": f"Token {staff_token(backend)}"}
    server = servers.start(backend, "--workers", "2")
    written = requests.patch(server.url + GLOBAL, json={"value": "kept"}, headers=headers, timeout=5)
    assert written.status_code == 200

    private_redis.signal(signal.SIGSTOP)  # hangs: connections open, nothing answers
    try:
        hung = assert_unavailable(server.url, headers, within=TIMEOUT + SLACK)
    finally:
        private_redis.signal(signal.SIGCONT)
    after_hang = wait_recovered(server.url, headers)

    private_redis.kill()  # crashes: connections refused
    down = assert_unavailable(server.url, headers, within=SLACK)
    private_redis.start()  # same port, data back from its append-only file
    after_restart = wait_recovered(server.url, headers)

    assert "Traceback" not in server.stderr()
    with capsys.disabled():
        print(f"\n[redis outage] timeout {TIMEOUT}s: slowest 503 while hung {hung:.3f}s, "
              f"while down {down:.3f}s; recovered {after_hang:.3f}s after SIGCONT, "
              f"{after_restart:.3f}s after restart")


WRITERS = {  # global settings, each written by one thread only
    "INVENTREE_INSTANCE": "global",
    "INVENTREE_COMPANY_NAME": "global",
    "INVENTREE_DOWNLOAD_FROM_URL_USER_AGENT": "global",
    "LAST_USED_PRINTING_MACHINES": "user",
}


class Burst:
    """Threads that write as fast as the server lets them and note what was acknowledged."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.headers = base, headers
        self.stop = threading.Event()
        self.attempted: dict[str, list[str]] = {key: [] for key in WRITERS}  # in order
        self.acknowledged: dict[str, list[str]] = {key: [] for key in WRITERS}
        self.tokens: list[str] = []
        self.failed = 0
        self.threads = [
            threading.Thread(target=self._write_setting, args=(key,)) for key in WRITERS
        ] + [threading.Thread(target=self._issue_tokens)]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _request(self, method: str, path: str, **kwargs) -> requests.Response | None:
        try:
            response = requests.request(
                method, self.base + path, headers=self.headers, timeout=10, **kwargs
            )
        except requests.RequestException:
            response = None
        if response is None or response.status_code != 200:
            self.failed += 1
            time.sleep(0.01)
            return None
        return response

    def _write_setting(self, key: str) -> None:
        path = f"/api/settings/{WRITERS[key]}/{key}/"
        for n in itertools.count():
            if self.stop.is_set():
                return
            value = f"{key.lower()}-{n}"
            self.attempted[key].append(value)
            response = self._request("PATCH", path, json={"value": value})
            if response is not None and response.json()["value"] == value:
                self.acknowledged[key].append(value)

    def _issue_tokens(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            response = self._request("GET", "/api/user/token/", params={"name": f"burst-{n}"})
            if response is not None:
                self.tokens.append(response.json()["token"])


def test_sqlite_worker_killed_mid_burst_loses_no_acknowledged_write(servers, tmp_path, capsys):
    database = tmp_path / "burst.db"
    backend = f"sqlite:///{database}"
    headers = {"Authorization": f"Token {staff_token(backend)}"}
    server = servers.start(backend, "--workers", "2")
    with Burst(server.url, headers) as burst:
        time.sleep(1.0)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while victim in server.workers() or len(server.workers()) < 2:  # replaced by gunicorn
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.05)
        time.sleep(1.0)
        workers = server.workers()
        server.process.kill()  # then the whole server, mid-burst, with no clean shutdown
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        server.process.wait(timeout=10)

    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    app = create_app({"TESTING": True, "SETTINGS_BACKEND": backend})  # a restart
    client = app.test_client()
    for key, kind in WRITERS.items():
        acknowledged = burst.acknowledged[key]
        assert acknowledged, f"no write to {key} was acknowledged"
        stored = client.get(f"/api/settings/{kind}/{key}/", headers=headers).get_json()["value"]
        # The last acknowledged value, or a later write cut off after it had committed.
        attempted = burst.attempted[key]
        assert stored in attempted[attempted.index(acknowledged[-1]) :], (key, stored)
    tokens = authenticator(app).tokens
    for key in burst.tokens:
        tokens.authenticate(key)  # raises if an acknowledged token was lost
    app.extensions["settings_store"].close()

    written = sum(len(values) for values in burst.acknowledged.values())
    with capsys.disabled():
        print(f"\n[sqlite SIGKILL] {written} acknowledged setting writes and "
              f"{len(burst.tokens)} acknowledged tokens all present; {burst.failed} requests "
              "cut off or refused by the kills; integrity_check ok")
