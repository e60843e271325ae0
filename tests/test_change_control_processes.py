"""Change control across processes (issue 13): two real servers racing with one ETag, writers
killed mid-burst, and the start refused for a bad pinned setting. SQLite and Redis only: the
memory store lives in one process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from backends import store_from_url
from backends.base import CHANGES, COUNTERS
from settings_server import create_app
from settings_server.auth import authenticator

pytestmark = pytest.mark.slow

INSTANCE = "/api/settings/global/INVENTREE_INSTANCE/"
DEFAULTS = {"INVENTREE_INSTANCE": "InvenTree", "INVENTREE_COMPANY_NAME": "My company name"}
ROUNDS = 25
WRITERS_PER_SERVER = 2


@pytest.fixture(params=[
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cache", marks=pytest.mark.redis),
])
def shared_url(request, tmp_path) -> str:
    """One store that several processes open: a SQLite file, or the test Redis under a
    private prefix (also with ``cache=on``: each process keeps copies)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url = request.getfixturevalue("redis_url")
    return f"{url}&cache=on" if request.param == "redis-cache" else url


def staff_token(url: str) -> dict[str, str]:
    """A staff user in the store at ``url`` and its token header."""
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    auth = authenticator(app)
    user = auth.users.create("staff", "pw-staff", is_staff=True)
    return {"Authorization": f"Token {auth.tokens.issue(user, 'race').key}"}


def history(url: str) -> list[dict[str, Any]]:
    """Every stored global history entry, oldest first (straight from the store)."""
    stored = store_from_url(url).get_all("global/history")
    return [{"id": int(key), **value} for key, value in sorted(stored.items())]


def assert_each_value_has_its_entries(url: str, keys: list[str]) -> list[dict[str, Any]]:
    """Per setting, the entries chain from the default to the stored value (each ``old`` is
    the previous ``new``, the last ``new`` is what is stored): no value without its entry, no
    entry without its value. The ids are exactly 1..the change counter: none lost."""
    store = store_from_url(url)
    entries = history(url)
    for key in keys:
        mine = [e for e in entries if e["key"] == key]
        current = DEFAULTS[key]
        for entry in mine:
            assert entry["old"] == current, (key, entry)
            assert entry["new"] != entry["old"]
            current = entry["new"]
        stored = store.get("global", key)
        assert current == (DEFAULTS[key] if stored is None else stored), key
    assert [e["id"] for e in entries] == list(range(1, (store.get(COUNTERS, CHANGES) or 0) + 1))
    return entries


# -- (a) two servers, one ETag: exactly one write wins ---------------------------------------


def race(writers: list[tuple[Any, int]], sessions: list[requests.Session],
         headers: dict[str, str], tag: str, round_number: int) -> list[tuple[int, Any]]:
    """Every writer PATCHes at once (a barrier) with ``If-Match: tag``; their answers."""
    barrier = threading.Barrier(len(writers))

    def write(index: int) -> tuple[int, Any]:
        server, _ = writers[index]
        barrier.wait(timeout=10)
        response = sessions[index].patch(
            server.url + INSTANCE, json={"value": f"r{round_number}-w{index}"},
            headers={**headers, "If-Match": tag}, timeout=20,
        )
        return response.status_code, response.json()

    with ThreadPoolExecutor(len(writers)) as pool:
        return list(pool.map(write, range(len(writers))))


def test_of_writers_holding_one_etag_exactly_one_wins(servers, shared_url):
    headers = staff_token(shared_url)
    started = [servers.start(shared_url, "--workers", "2") for _ in range(2)]
    writers = [(server, n) for server in started for n in range(WRITERS_PER_SERVER)]
    sessions = [requests.Session() for _ in writers]
    deadline = time.monotonic() + 120
    winners = []
    for round_number in range(ROUNDS):
        assert time.monotonic() < deadline, "the race took too long"
        tag = requests.get(started[0].url + INSTANCE, headers=headers, timeout=10).headers["ETag"]
        answers = race(writers, sessions, headers, tag, round_number)
        statuses = [status for status, _ in answers]
        assert sorted(statuses) == [200] + [412] * (len(writers) - 1), (round_number, statuses)
        (winner,) = [body["value"] for status, body in answers if status == 200]
        assert all(set(body) == {"detail"} for status, body in answers if status == 412)
        winners.append(winner)
        served = requests.get(started[1].url + INSTANCE, headers=headers, timeout=10).json()
        assert served["value"] == winner
    entries = assert_each_value_has_its_entries(shared_url, ["INVENTREE_INSTANCE"])
    assert [e["new"] for e in entries] == winners  # one entry per round: the winner's


# -- (b) writers killed mid-burst ------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from backends import StorageUnavailable
    from settings_server import create_app
    from settings_server.service import GLOBAL

    app = create_app({"SETTINGS_BACKEND": sys.argv[1], "SETTINGS_HISTORY_LIMIT": "1000000"})
    service = app.extensions["settings_service"]
    name = sys.argv[2]
    n = 0
    while True:
        n += 1
        try:
            service.update(GLOBAL, "INVENTREE_INSTANCE", f"{name}-s{n}")
            service.update_many(
                GLOBAL,
                {"INVENTREE_COMPANY_NAME": f"{name}-m{n}", "INVENTREE_INSTANCE": f"{name}-m{n}"},
                actor=None,
            )
        except StorageUnavailable:  # outraced WRITE_ATTEMPTS times by the other writer
            pass
        if n == 5:
            print("writing", flush=True)
""")


def test_writers_killed_mid_burst_leave_no_value_without_its_entry(shared_url, tmp_path):
    staff_token(shared_url)  # the store's secret key and users exist before the writers
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env = {k: v for k, v in env.items() if not k.startswith("SETTINGS_")}
    for burst in range(3):
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, shared_url, f"b{burst}w{n}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
            for n in range(2)
        ]
        try:
            for writer in writers:
                line = writer.stdout.readline()
                assert line == "writing\n", writer.stderr.read()
            time.sleep(0.3 + 0.2 * burst)
        finally:
            for writer in writers:
                writer.send_signal(signal.SIGKILL)
            for writer in writers:
                writer.wait(timeout=10)
        entries = assert_each_value_has_its_entries(
            shared_url, ["INVENTREE_INSTANCE", "INVENTREE_COMPANY_NAME"])
        written = re.compile(r"^b\d+w\d+-[sm]\d+$")
        assert all(written.match(e["new"]) for e in entries)
        assert all(e["source"] in ("api", "bulk") for e in entries)
        assert len(entries) > 10 * (burst + 1)  # the writers did write before the kill


# -- pinned settings at the start of a real server -------------------------------------------


def run_command(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    from servers import BIN, server_env

    return subprocess.run([str(BIN / "settings-server"), *argv],
                          env=server_env("memory://", **env), capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [({"NO_SUCH_SETTING": "x"}, "NO_SUCH_SETTING"),
     ({"INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE": 99}, "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE")],
)
def test_run_refuses_a_bad_pin_naming_it(overrides, named):
    from servers import free_port

    ran = run_command("run", "--bind", f"127.0.0.1:{free_port()}",
                      env={"SETTINGS_OVERRIDES": json.dumps(overrides)})
    assert ran.returncode != 0
    assert named in ran.stderr


def test_run_refuses_a_bad_pin_file_naming_it(tmp_path):
    from servers import free_port

    path = tmp_path / "pins.toml"
    path.write_text('BARCODE_RESULTS_MAX_NUM = "lots"\n')
    ran = run_command("run", "--bind", f"127.0.0.1:{free_port()}",
                      env={"SETTINGS_OVERRIDES_FILE": str(path)})
    assert ran.returncode != 0
    assert "BARCODE_RESULTS_MAX_NUM" in ran.stderr


def test_a_server_never_logs_a_pinned_value(servers, tmp_path):
    url = f"sqlite:///{tmp_path / 'pins.db'}"
    headers = staff_token(url)
    secret = "Pinned-4d1e-never-logged"
    server = servers.start(url, "--workers", "1",
                           SETTINGS_OVERRIDES=json.dumps({"INVENTREE_INSTANCE": secret}),
                           SETTINGS_LOG_LEVEL="debug")
    detail = requests.get(server.url + INSTANCE, headers=headers, timeout=10)
    assert detail.json()["value"] == secret
    assert detail.headers["X-Setting-Source"] == "override"
    listed = requests.get(server.url + "/api/settings/global/", headers=headers, timeout=10)
    assert {r["key"]: r["value"] for r in listed.json()}["INVENTREE_INSTANCE"] == secret
    refused = requests.patch(server.url + INSTANCE, json={"value": secret}, headers=headers,
                             timeout=10)
    assert refused.status_code == 400
    assert refused.json() == {"value": ["This setting is fixed by the server configuration."]}
    server.stop()
    assert secret not in server.stdout() and secret not in server.stderr()
    assert store_from_url(url).get("global", "INVENTREE_INSTANCE") is None


def test_gunicorn_workers_killed_mid_burst_leave_no_value_without_its_entry(servers, shared_url):
    """The same through HTTP: clients write (PATCH and bulk) while a worker is SIGKILLed."""
    headers = staff_token(shared_url)
    server = servers.start(shared_url, "--workers", "2", SETTINGS_HISTORY_LIMIT="1000000")
    stop = threading.Event()
    sent = {"ok": 0}

    def client(name: str) -> None:
        session = requests.Session()
        n = 0
        try:
            while not stop.is_set():
                n += 1
                try:
                    session.patch(server.url + INSTANCE, json={"value": f"{name}-s{n}"},
                                  headers=headers, timeout=5)
                    answer = session.patch(server.url + "/api/settings/bulk/global/", json={
                        "INVENTREE_COMPANY_NAME": f"{name}-m{n}",
                        "INVENTREE_INSTANCE": f"{name}-m{n}",
                    }, headers=headers, timeout=5)
                    sent["ok"] += answer.status_code == 200
                except requests.RequestException:  # the worker died under this request
                    session.close()
                    session = requests.Session()
        finally:  # no idle kept-alive connection for the graceful stop below to wait out (5 s)
            session.close()

    with ThreadPoolExecutor(4) as pool:
        for n in range(4):
            pool.submit(client, f"c{n}")
        try:
            for _ in range(3):
                time.sleep(0.7)
                workers = server.workers()
                assert workers, "no worker to kill"
                os.kill(workers[0], signal.SIGKILL)
            deadline = time.monotonic() + 20  # a loaded machine: let the new workers write
            while sent["ok"] < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
    server.wait_workers_listening(2)  # a replacement still booting would miss the SIGTERM
    server.stop()  # a request a client gave up on may still be running: let it end
    assert sent["ok"] >= 20
    entries = assert_each_value_has_its_entries(
        shared_url, ["INVENTREE_INSTANCE", "INVENTREE_COMPANY_NAME"])
    assert all(re.match(r"^c\d-[sm]\d+$", e["new"]) for e in entries)
