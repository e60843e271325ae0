"""Shared fixtures. Sections are owned by the feature they serve; keep edits local."""

from __future__ import annotations

import os
import signal
import uuid
from urllib.parse import urlencode

import pytest

from settings_server import create_app

# --- password hashes in the test process --------------------------------------------------------


_SHIPPED_HASHING: dict = {}  # what pytest_configure replaced in settings_server.users


def pytest_configure(config):
    """Passwords hashed in the test process use scrypt with N=2**10 instead of werkzeug's
    default N=2**15: the same algorithm, salting and ``scrypt:`` format (and
    ``check_password_hash`` reads the cost from the hash), ~10 ms instead of ~0.4 s a hash
    and a check. Most tests create users (``make_user``), so this was minutes of a run.
    Patched here, before test modules are imported, as some create users at import.
    Servers and commands the tests start as processes hash as shipped (the guessing and
    event-loop tests of test_hostile.py measure that cost there)."""
    from functools import partial

    from werkzeug.security import generate_password_hash

    from settings_server import users

    cheap = partial(generate_password_hash, method="scrypt:1024:8:1")
    _SHIPPED_HASHING.update(generate_password_hash=users.generate_password_hash,
                            _DUMMY_HASH=users._DUMMY_HASH)
    patch = pytest.MonkeyPatch()
    patch.setattr(users, "generate_password_hash", cheap)
    patch.setattr(users, "_DUMMY_HASH", cheap("settings-server: no such user"))
    config.add_cleanup(patch.undo)


@pytest.fixture
def shipped_password_hashes(monkeypatch):
    """For tests of the hashes themselves: ``settings_server.users`` hashes as shipped (its
    own ``generate_password_hash`` and ``_DUMMY_HASH``), not as patched above."""
    from settings_server import users

    for name, value in _SHIPPED_HASHING.items():
        monkeypatch.setattr(users, name, value)


@pytest.fixture
def app():
    """The app on a fresh in-memory store."""
    return create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://"})


@pytest.fixture
def client(app):
    return app.test_client()


# --- users and tokens (issue 4) -------------------------------------------------------------


@pytest.fixture
def make_user(app):
    """``make_user(username="alice", *, staff=False, superuser=False, password=None)`` creates
    an active user in the ``app`` store; the password defaults to ``"pw-<username>"``."""
    from settings_server.auth import authenticator

    def make(username="alice", *, staff=False, superuser=False, password=None):
        return authenticator(app).users.create(
            username,
            f"pw-{username}" if password is None else password,
            is_staff=staff or superuser,
            is_superuser=superuser,
        )

    return make


@pytest.fixture
def alice(make_user):
    """A plain user, alice (password ``pw-alice``)."""
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    """Another plain user, bob (password ``pw-bob``)."""
    return make_user("bob")


@pytest.fixture
def auth_headers(app):
    """``auth_headers(user)`` -> ``{"Authorization": "Token inv-..."}`` with a freshly issued
    token of ``user``."""
    from settings_server.auth import authenticator

    def headers(user, name="tests"):
        return {"Authorization": f"Token {authenticator(app).tokens.issue(user, name).key}"}

    return headers


# --- storage backends (issue 2) -------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server_url():
    """The test Redis (env ``SETTINGS_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``).

    Skips the test when it does not answer, or fails it when ``SETTINGS_REQUIRE_REDIS=1`` (CI).
    Use :func:`redis_url` in tests: it isolates each test under a prefix of its own.
    """
    import redis

    url = os.environ.get("SETTINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except (redis.RedisError, ValueError) as exc:
        message = f"Redis not reachable at {url}: {exc}; set SETTINGS_TEST_REDIS_URL"
        if os.environ.get("SETTINGS_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def redis_url(redis_server_url):
    """The test Redis URL with ``?prefix=test-<uuid>:``; every key under the prefix is deleted
    after the test."""
    import redis

    prefix = f"test-{uuid.uuid4().hex}:"
    separator = "&" if "?" in redis_server_url else "?"
    yield f"{redis_server_url}{separator}{urlencode({'prefix': prefix})}"
    with redis.Redis.from_url(redis_server_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cache", marks=pytest.mark.redis),
    ]
)
def store_url(request, tmp_path):
    """The URL of a fresh, empty store of each backend: memory, sqlite (a file in tmp_path),
    redis (under a private prefix, see :func:`redis_url`) and redis with ``cache=on``."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url = request.getfixturevalue("redis_url")
    return f"{url}&cache=on" if request.param == "redis-cache" else url


@pytest.fixture
def store(store_url):
    """A fresh, empty store of each backend (see :func:`store_url`), closed afterwards."""
    from backends import store_from_url

    opened = store_from_url(store_url)
    yield opened
    opened.close()


# --- servers under gunicorn, private Redis (issue 6) ----------------------------------------


@pytest.fixture
def servers(tmp_path):
    """``servers.start(backend, *args, command="run"|"gunicorn", **env)`` starts a server
    on a free port and returns a :class:`servers.Server` once it answers; every one still
    running is stopped after the test, at once (SIGQUIT, then SIGKILL): a graceful SIGTERM
    would wait out the keep-alive of any idle connection a client left open (5 s). Tests of
    the graceful stop send SIGTERM themselves. ``command="run"`` is ``settings-server run``,
    else plain ``gunicorn wsgi:app`` from the checkout."""
    from servers import BIN, Server, free_port, server_env

    started: list[Server] = []

    class Servers:
        def start(self, backend, *args, command="run", wait=True, **env):
            port = free_port()
            bind = f"127.0.0.1:{port}"
            if command == "run":
                argv = [str(BIN / "settings-server"), "run", "--bind", bind, *args]
            else:
                argv = [str(BIN / "gunicorn"), "wsgi:app", "--bind", bind, *args]
            server = Server(argv, server_env(backend, **env), tmp_path / "servers", port)
            started.append(server)
            return server.wait_ready() if wait else server

    yield Servers()
    for server in started:
        server.stop(signal.SIGQUIT)


@pytest.fixture
def private_redis(tmp_path):
    """A started private redis-server (see :class:`servers.RedisServer`), killed afterwards.
    Skips without ``redis-server``, or fails when ``SETTINGS_REQUIRE_REDIS=1``."""
    import shutil

    from servers import RedisServer

    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (needed for a private Redis to kill)"
        if os.environ.get("SETTINGS_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.kill()
