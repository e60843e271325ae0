"""Every process that serves one store answers from the store, not from memory of its own
(issue 6, item 2): a write through one server or worker is what the very next read through
another returns.

Two gunicorn servers share one Redis (a prefix of the test's own); one gunicorn with two
workers serves one SQLite file. Per-process state in the app is either immutable (pk ordinals,
rendered templates, the secret key once stored) or keyed by what it depends on (verified
passwords are remembered per stored password hash): the password and deactivation rounds
below prove that a change made elsewhere is seen by every worker at once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import requests
from credentials import basic

from settings_server import create_app
from settings_server.auth import authenticator

pytestmark = pytest.mark.slow

ROUNDS = 20
GLOBAL = "/api/settings/global/INVENTREE_INSTANCE/"
USER = "/api/settings/user/LAST_USED_PRINTING_MACHINES/"
TOKEN = "/api/user/token/"
ME = "/api/user/me/"
# The rounds send an old password again and again on purpose: not the login throttle's case.
UNTHROTTLED = {
    "SETTINGS_LOGIN_LIMIT_PER_ADDRESS": "10000/minute",
    "SETTINGS_LOGIN_LIMIT_PER_USERNAME": "10000/minute",
}


def token(key: str) -> dict[str, str]:
    return {"Authorization": f"Token {key}"}


class Accounts:
    """Users and tokens made directly in the servers' store, from the test process."""

    def __init__(self, backend: str) -> None:
        self.app = create_app({"TESTING": True, "SETTINGS_BACKEND": backend})
        self.auth = authenticator(self.app)
        self.staff = self.auth.users.create("staff", "pw-staff-1", is_staff=True)
        self.key = self.auth.tokens.issue(self.staff, "main").key

    def close(self) -> None:
        self.app.extensions["settings_store"].close()


def call(method: str, url: str, headers: dict[str, str], **kwargs) -> requests.Response:
    return requests.request(method, url, headers=headers, timeout=10, **kwargs)


def alternate(urls: list[str]) -> Iterator[tuple[str, str]]:
    """(writer, reader) pairs, switching roles every round."""
    n = 0
    while True:
        yield urls[n % len(urls)], urls[(n + 1) % len(urls)]
        n += 1


def value_at(url: str, headers: dict[str, str]) -> str:
    return call("GET", url, headers).json()["value"]


def user_setting(url: str, headers: dict[str, str]) -> tuple[str, str]:
    """LAST_USED_PRINTING_MACHINES as its detail and the user list give it."""
    listed = call("GET", url + "/api/settings/user/", headers).json()
    row = next(row for row in listed if row["key"] == "LAST_USED_PRINTING_MACHINES")
    return value_at(url + USER, headers), row["value"]


def statuses(url: str, *headers: dict[str, str]) -> list[int]:
    return [call("GET", url + ME, h).status_code for h in headers]


def check_rounds(urls: list[str], accounts: Accounts, patience: float = 0.0) -> None:
    """Settings, tokens, sessions, passwords and deactivation, written through one URL and
    read at once through the other (the same URL for several workers behind one port).

    ``patience``: seconds a read after a write may be repeated until it agrees. Redis with
    ``cache=on`` needs a little: on a loaded machine an announcement can reach another worker
    a few milliseconds after the writer's answer (seen: 2 ms), and that worker answers from
    its copy meanwhile. A copy that is never dropped still fails."""

    def agrees(read: Callable[[], Any], expected: Any) -> None:
        deadline = time.monotonic() + patience
        while (got := read()) != expected and time.monotonic() < deadline:
            time.sleep(0.002)
        assert got == expected

    main = token(accounts.key)
    pairs = alternate(urls)
    previous_key = None
    for n in range(ROUNDS):
        writer, reader = next(pairs)
        value = f"user value {n}"
        assert call("PATCH", writer + USER, main, json={"value": value}).json()["value"] == value
        agrees(partial(user_setting, reader, main), (value, value))

        writer, reader = next(pairs)
        value = f"Instance {n}"
        assert call("PATCH", writer + GLOBAL, main, json={"value": value}).status_code == 200
        agrees(partial(value_at, reader + GLOBAL, main), value)

        # Re-issuing the token named "round" revokes the previous one everywhere.
        issued = call("GET", writer + TOKEN, main, params={"name": "round"}).json()["token"]
        agrees(partial(statuses, reader, token(issued)), [200])
        if previous_key is not None:
            for url in urls:
                revoked = partial(call, "GET", url + ME, token(previous_key))
                agrees(lambda revoked=revoked: revoked().json(), {"detail": "Token has been revoked"})
        previous_key = issued

    # A session made by one process is honoured by the others (one shared secret key).
    writer, reader = next(pairs)
    login = call("GET", writer + TOKEN, basic("staff", "pw-staff-1"))
    session = {"Cookie": f"sessionid={login.cookies['sessionid']}"}
    assert call("GET", reader + ME, session).json()["username"] == "staff"

    # Every worker has verified (and remembered) the password; a change made elsewhere
    # takes effect in all of them at once: the old one refused, the new one taken, sessions
    # ended too.
    for _ in range(4):
        for url in urls:
            assert statuses(url, basic("staff", "pw-staff-1")) == [200]
    accounts.auth.users.set_password(accounts.staff.id, "pw-staff-2")
    for _ in range(4):
        for url in urls:
            agrees(
                partial(statuses, url, basic("staff", "pw-staff-1"), basic("staff", "pw-staff-2"), session),
                [401, 200, 401],
            )

    accounts.auth.users.deactivate(accounts.staff.id)
    for _ in range(4):
        for url in urls:
            refused = partial(call, "GET", url + ME, main)
            agrees(lambda refused=refused: refused().json(), {"detail": "User inactive or deleted."})
            assert statuses(url, basic("staff", "pw-staff-2")) == [401]


@pytest.mark.redis
@pytest.mark.parametrize("cache", ["off", "on"], ids=["no-cache", "cache"])
def test_two_servers_on_one_redis(servers, redis_url, cache):
    """With ``cache=on`` every worker keeps copies of what it reads: every round below also
    proves that a write through one server drops the copies of all the others."""
    accounts = Accounts(redis_url)
    backend = f"{redis_url}&cache={cache}"
    try:
        first = servers.start(backend, "--workers", "2", **UNTHROTTLED)
        second = servers.start(backend, "--workers", "2", **UNTHROTTLED)
        check_rounds([first.url, second.url], accounts, patience=0.1 if cache == "on" else 0.0)
    finally:
        accounts.close()


def crossings(lines: list[dict]) -> int:
    """Reads answered by another worker than the write just before them."""
    return sum(
        1 for write, read in itertools.pairwise(lines)
        if write["method"] == "PATCH" and read["method"] == "GET" and write["pid"] != read["pid"]
    )


def test_two_workers_on_one_sqlite_file(servers, tmp_path):
    backend = f"sqlite:///{tmp_path}/shared.db"
    accounts = Accounts(backend)
    try:
        server = servers.start(backend, "--workers", "2", **UNTHROTTLED)
        check_rounds([server.url], accounts)
        # Which worker accepts a request is the kernel's choice: write and read on until at
        # least three reads were answered by the worker that had not made the write.
        crosser = accounts.auth.users.create("crosser", "pw-crosser", is_staff=True)
        main = token(accounts.auth.tokens.issue(crosser, "crossing").key)
        for n in range(400):
            if n % 20 == 0 and crossings(server.request_lines()) >= 3:
                break
            value = f"crossing {n}"
            assert call("PATCH", server.url + GLOBAL, main, json={"value": value}).status_code == 200
            assert call("GET", server.url + GLOBAL, main).json()["value"] == value
    finally:
        accounts.close()
    lines = server.request_lines()
    assert {line["pid"] for line in lines} == set(server.workers())
    assert crossings(lines) >= 3, lines
