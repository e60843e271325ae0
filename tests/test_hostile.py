"""Safe to expose (issue 11) against ``settings-server run`` as shipped, over real sockets:
catastrophic regular expressions, slowloris connections, oversized bodies, password guessing
across workers and servers, security headers, and gunicorn's own errors as JSON.

Every loop is bounded in count and in time; every socket is closed."""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import select
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid
from urllib.parse import urlencode

import pytest
import requests
from credentials import basic
from servers import BIN, Server, free_port, server_env

from settings_server import create_app
from settings_server.auth import authenticator

pytestmark = pytest.mark.slow

ME = "/api/user/me/"
USER_SETTING = "/api/settings/user/LAST_USED_PRINTING_MACHINES/"
GLOBAL_LIST = "/api/settings/global/"
CATASTROPHIC = "/api/settings/global/?search_regex=1&search=(%5Cw%2B)%2B!"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}



@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request, tmp_path):
    """A fresh store URL: a SQLite file, or the test Redis under a private prefix."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hostile.db'}"
    return request.getfixturevalue("redis_url")


class Shipped:
    """A server started as shipped (``settings-server run``, only the backend set) and the
    token headers of its user alice (password ``pw-alice``)."""

    def __init__(self, server, token: dict[str, str]) -> None:
        self.server = server
        self.url = server.url
        self.token = token


@pytest.fixture(scope="module")
def shipped_servers(tmp_path_factory):
    """``get(kind)``: the module's shipped server on ``"sqlite"`` or ``"redis"`` (a private
    prefix of the test Redis), started on first use, stopped (and the prefix deleted) at the
    end of the module. Started once for the tests that neither count failed logins nor change
    what others read."""
    started: dict[str, Shipped] = {}
    prefixes = []

    def get(kind: str, redis_server_url: str | None = None) -> Shipped:
        if kind not in started:
            if kind == "sqlite":
                url = f"sqlite:///{tmp_path_factory.mktemp('shipped') / 'shipped.db'}"
            else:
                prefix = f"test-{uuid.uuid4().hex}:"
                prefixes.append((redis_server_url, prefix))
                separator = "&" if "?" in redis_server_url else "?"
                url = f"{redis_server_url}{separator}{urlencode({'prefix': prefix})}"
            token = seed(url)
            port = free_port()
            workdir = tmp_path_factory.mktemp("servers")
            argv = [str(BIN / "settings-server"), "run", "--bind", f"127.0.0.1:{port}"]
            started[kind] = Shipped(Server(argv, server_env(url), workdir, port).wait_ready(),
                                    token)
        return started[kind]

    yield get
    for shipped in started.values():  # quick stops, all at once: nothing more to answer
        shipped.server.process.send_signal(signal.SIGQUIT)
    for shipped in started.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            shipped.server.process.wait(timeout=10)
        shipped.server.stop()
    for url, prefix in prefixes:
        import redis

        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shipped(request, shipped_servers) -> Shipped:
    """The module's shipped server on SQLite, then on Redis."""
    if request.param == "sqlite":
        return shipped_servers("sqlite")
    return shipped_servers("redis", request.getfixturevalue("redis_server_url"))


def seed(backend: str) -> dict[str, str]:
    """alice (password ``pw-alice``) in ``backend``; her token headers."""
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": backend})
    try:
        auth = authenticator(app)
        alice = auth.users.create("alice", "pw-alice")
        return {"Authorization": f"Token {auth.tokens.issue(alice, 'hostile').key}"}
    finally:
        app.extensions["settings_store"].close()


def token_get_latencies(
    url: str, token: dict[str, str], seconds: float, pause: float
) -> list[float]:
    """Seconds each of a normal client's token GETs took, one every ``pause`` s for
    ``seconds`` s; every one must be answered 200."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        response = requests.get(url + USER_SETTING, headers=token, timeout=5)
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200
        time.sleep(pause)
    return latencies


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def connect(server, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(server)), timeout=timeout)


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response read off ``sock``: status, headers (lower-case names), body (by
    Content-Length, else until the server closes)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    else:
        while chunk := sock.recv(65536):
            body += chunk
    return status, headers, body


def exchange(server, data: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    with contextlib.closing(connect(server, timeout)) as sock:
        sock.sendall(data)
        return read_response(sock, timeout)


def assert_json_detail(headers: dict[str, str], body: bytes) -> str:
    assert headers.get("content-type") == "application/json", headers
    parsed = json.loads(body)
    assert list(parsed) == ["detail"] and isinstance(parsed["detail"], str), parsed
    return parsed["detail"]


def assert_security_headers(headers, credentials: bool | None = None) -> None:
    lowered = {name.lower(): value for name, value in headers.items()}
    for name, value in SECURITY_HEADERS.items():
        assert lowered.get(name) == value, (name, lowered)
    if credentials is True:
        assert lowered.get("cache-control") == "no-store", lowered
    elif credentials is False:
        assert "cache-control" not in lowered, lowered


# -- (a) catastrophic regular expressions --------------------------------------------------------


def test_catastrophic_regex_is_answered_at_once(shipped):
    token, url = shipped.token, shipped.url
    took = []
    for _ in range(5):  # backtracking (Python's re) took 30 s for one of these
        started = time.monotonic()
        response = requests.get(url + CATASTROPHIC, headers=token, timeout=10)
        took.append(time.monotonic() - started)
        assert response.status_code == 200, response.text
        assert response.json() == []
    assert statistics.median(took) < 0.5 and max(took) < 2.0, took
    # Attackers searching with it over and over do not keep others waiting.
    stop = threading.Event()
    answered = []

    def attack():
        with requests.Session() as session:
            while not stop.is_set():
                answered.append(session.get(url + CATASTROPHIC, headers=token, timeout=10)
                                .status_code)

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for thread in threads:
        thread.start()
    latencies = []
    try:
        latencies += token_get_latencies(url, token, seconds=2, pause=0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert len(answered) >= 8 and set(answered) == {200}, answered[:10]
    assert max(latencies) < 3.0 and statistics.median(latencies) < 0.5, latencies


# -- (b) slowloris ---------------------------------------------------------------------------------


PARTIAL = b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-"


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has ended ``sock`` (closed or reset it; an answer, which none of
    these half-sent requests should get, fails the test)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        data = sock.recv(4096)
    except OSError:
        return True
    assert data == b"", f"an answer to a request never finished: {data[:200]!r}"
    return True


def test_slowloris_connections_do_not_starve_others(shipped_servers):
    """80 connections that send a request's headers a byte at a time (reopened when the
    server drops them, as an attacker would) while a signed-in client asks every 0.4 s for
    8 s: each of its requests is answered in under 3 s."""
    shipped = shipped_servers("sqlite")
    server, token = shipped.server, shipped.token
    slow: list[socket.socket] = []
    latencies, reopened, open_counts = [], 0, []

    def open_slow() -> socket.socket:
        sock = connect(server, timeout=2)
        sock.sendall(PARTIAL)
        return sock

    try:
        slow.extend(open_slow() for _ in range(80))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for i, sock in enumerate(slow):
                if closed_by_server(sock):
                    sock.close()
                    slow[i] = open_slow()
                    reopened += 1
                    continue
                with contextlib.suppress(OSError):
                    sock.send(b"a")  # one more byte of an endless header name
            open_counts.append(sum(not closed_by_server(sock) for sock in slow))
            started = time.monotonic()
            response = requests.get(server.url + ME, headers=token, timeout=3)
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200
            time.sleep(max(0.0, 0.4 - (time.monotonic() - started)))
    finally:
        for sock in slow:
            sock.close()
    assert len(latencies) >= 10
    assert max(latencies) < 3.0, latencies
    assert min(open_counts) >= 64, open_counts


def test_slow_headers_are_cut_off_after_the_header_timeout(servers, tmp_path):
    """SETTINGS_HEADER_TIMEOUT=2: a client still sending its headers (a byte every 0.3 s) is
    disconnected after about 2 s, without an answer; so is one that sends nothing."""
    server = servers.start(f"sqlite:///{tmp_path / 'timeout.db'}", "--workers", "1",
                           SETTINGS_HEADER_TIMEOUT="2")
    trickling, idle = connect(server), connect(server)
    try:
        trickling.sendall(PARTIAL)
        started = time.monotonic()
        closed_after = {}
        while len(closed_after) < 2 and time.monotonic() - started < 8:
            for name, sock in (("trickling", trickling), ("idle", idle)):
                if name not in closed_after and closed_by_server(sock):
                    closed_after[name] = time.monotonic() - started
            with contextlib.suppress(OSError):
                if "trickling" not in closed_after:
                    trickling.send(b"a")
            time.sleep(0.3)
        assert set(closed_after) == {"trickling", "idle"}, closed_after
        for name, after in closed_after.items():
            assert 1.5 <= after <= 4.0, (name, after)
    finally:
        trickling.close()
        idle.close()
    # A complete request is still answered at once.
    assert requests.get(server.url + "/api/health/", timeout=3).status_code == 200
    server.stop(signal.SIGQUIT)


# -- (c) oversized bodies ---------------------------------------------------------------------------


def test_8_mib_body_is_413_without_being_read(shipped):
    server, token = shipped.server, shipped.token
    declared = 8 * 1024 * 1024
    for headers in (token, {}):
        head = (
            f"PATCH {USER_SETTING} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        with contextlib.closing(connect(server)) as sock:
            sock.sendall(head + b'{"value": "' + b"x" * 65536)
            started = time.monotonic()
            status, response_headers, body = read_response(sock, timeout=5)
            assert time.monotonic() - started < 2.0
        assert status == 413
        assert_json_detail(response_headers, body)
        assert json.loads(body) == {
            "detail": "Request body too large: the limit is 1048576 bytes."
        }
        assert_security_headers(response_headers, credentials=bool(headers))
    assert requests.get(server.url + USER_SETTING, headers=token, timeout=5).json()["value"] == ""


def test_chunked_body_past_the_limit_is_413(shipped):
    server, token = shipped.server, shipped.token
    head = (
        f"PATCH {USER_SETTING} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {token['Authorization']}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b" " * 65536
    with contextlib.closing(connect(server)) as sock:
        sock.sendall(head + b'b\r\n{"value": "\r\n')

        def send_chunks():  # 2 MiB, or until the server stops listening
            with contextlib.suppress(OSError):
                for _ in range(32):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))

        sender = threading.Thread(target=send_chunks, daemon=True)
        sender.start()
        status, headers, body = read_response(sock, timeout=10)
        sender.join(timeout=10)
    assert status == 413, body
    assert json.loads(body) == {"detail": "Request body too large: the limit is 1048576 bytes."}
    assert_json_detail(headers, body)
    assert requests.get(server.url + USER_SETTING, headers=token, timeout=5).json()["value"] == ""


# -- (d) password guessing across workers and servers ------------------------------------------------


def connections_on_two_workers(server, within: float = 20.0) -> list[http.client.HTTPConnection]:
    """Two kept-alive connections answered by two different workers of ``server``. Which
    worker accepts a connection is the kernel's choice (and the second may still be booting):
    open connections until two differ, for at most ``within`` seconds."""
    by_pid: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + within
    while len(by_pid) < 2 and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=5)
        conn.request("GET", "/api/health/")
        conn.getresponse().read()
        pid = server.request_lines()[-1]["pid"]
        if pid in by_pid:
            conn.close()
            time.sleep(0.05)
        else:
            by_pid[pid] = conn
    if len(by_pid) < 2:
        for conn in by_pid.values():
            conn.close()
        raise AssertionError(f"for {within} s, every connection went to one worker")
    return list(by_pid.values())


def get(conn: http.client.HTTPConnection, path: str, headers: dict) -> tuple[int, dict, bytes]:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def assert_429(status: int, headers: dict, body: bytes, window: int) -> None:
    assert status == 429, body
    wait = int(headers["Retry-After"])
    assert 1 <= wait <= window
    assert json.loads(body) == {
        "detail": f"Request was throttled. Expected available in {wait} seconds."
    }
    assert_security_headers(headers, credentials=True)


def test_failed_logins_are_counted_across_workers_and_servers(servers, backend):
    """Ten wrong guesses (each for another name) alternate between the two workers of one
    server: neither worker saw ten itself, yet the next login on each is 429, the right
    password too, and so it is on a second server on the same store, which saw none."""
    token = seed(backend)
    server = servers.start(backend, "--workers", "2")
    other = servers.start(backend, "--workers", "1")
    conns = connections_on_two_workers(server)
    try:
        for i in range(10):
            status, _, body = get(conns[i % 2], ME, basic(f"guess{i}", "wrong"))
            assert status == 401, body
        guesses = [line for line in server.request_lines() if line["status"] == 401]
        assert len(guesses) == 10 and len({line["pid"] for line in guesses}) == 2
        for conn in conns:
            assert_429(*get(conn, ME, basic("alice", "pw-alice")), window=60)
            status, _, _ = get(conn, ME, token)
            assert status == 200  # tokens are never throttled
        throttled = [line for line in server.request_lines() if line["status"] == 429]
        assert len({line["pid"] for line in throttled}) == 2
    finally:
        for conn in conns:
            conn.close()
    response = requests.get(other.url + ME, headers=basic("alice", "pw-alice"), timeout=10)
    assert_429(response.status_code, response.headers, response.content, window=60)
    assert requests.get(other.url + ME, headers=token, timeout=10).status_code == 200
    assert [line["status"] for line in other.request_lines() if line["path"] == ME] == [429, 200]
    server.stop(signal.SIGQUIT)
    other.stop(signal.SIGQUIT)


# -- (e) guessing does not slow others down -----------------------------------------------------------


ATTACKERS = 6  # more than the 5 default workers of a 2-core machine


def test_password_guessing_does_not_slow_down_other_clients(servers, tmp_path):
    """Attackers behind a trusted proxy, each guess from another address for another name
    (the throttle never stops them, so every guess costs a password hash), in 6 parallel
    streams for 5 s, each guess on a new connection: another client's token requests, each
    on a new connection too, keep a median under 100 ms. (A hash that held its worker's
    event loop would stall whatever else that worker holds: ~0.5 s a request.)"""
    backend = f"sqlite:///{tmp_path / 'guessing.db'}"
    token = seed(backend)
    server = servers.start(backend, SETTINGS_TRUSTED_PROXIES="127.0.0.1")
    stop = threading.Event()
    outcomes: list[int] = []

    def guess(seed_value: int):
        rng = random.Random(seed_value)
        while not stop.is_set():  # a new connection each time: any worker may get it
            address = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            headers = {**basic(f"user{rng.randrange(10**9)}", "guess"),
                       "X-Forwarded-For": address}
            outcomes.append(requests.get(server.url + ME, headers=headers, timeout=10)
                            .status_code)

    attackers = [threading.Thread(target=guess, args=(n,)) for n in range(ATTACKERS)]
    for thread in attackers:
        thread.start()
    latencies = []
    try:
        time.sleep(0.3)
        latencies += token_get_latencies(server.url, token, seconds=5, pause=0.02)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=15)
    assert len(latencies) >= 20
    assert statistics.median(latencies) < 0.1, (len(outcomes), sorted(latencies))
    # The guesses were made, each answered 401 after a password hash (none was throttled).
    assert len(outcomes) >= 8 and set(outcomes) == {401}, outcomes
    server.stop(signal.SIGQUIT)


# -- (f) security headers ------------------------------------------------------------------------------


def test_security_headers_on_real_responses(shipped):
    url, token = shipped.url, shipped.token
    cases = [
        (requests.get(url + ME, headers=token, timeout=5), 200, True),
        (requests.get(url + ME, timeout=5), 401, False),
        (requests.get(url + "/api/no/such/", timeout=5), 404, False),
        (requests.get(url + "/api/schema/", timeout=5), 200, False),
        (requests.get(url + "/api/schema/", headers=token, timeout=5), 200, True),
        (requests.get(url + "/api/health/", timeout=5), 200, False),
        (requests.get(url + ME, headers=basic("alice", "wrong"), timeout=5), 401, True),
    ]
    for response, status, credentials in cases:
        assert response.status_code == status, response.url
        assert_security_headers(response.headers, credentials)


# -- (g) gunicorn's own errors as JSON ---------------------------------------------------------------


def test_gunicorn_errors_are_json(shipped):
    server = shipped.server
    host = b"Host: 127.0.0.1\r\n"
    cases = {
        "request line over 4094 bytes": (
            b"GET /api/health/?" + b"a" * 5000 + b" HTTP/1.1\r\n" + host + b"\r\n", {414}),
        "header field over 8190 bytes": (
            b"GET /api/health/ HTTP/1.1\r\n" + host + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n",
            {431, 400}),
        "more than 100 header fields": (
            b"GET /api/health/ HTTP/1.1\r\n" + host
            + b"".join(b"X-F%d: v\r\n" % i for i in range(120)) + b"\r\n", {431, 400}),
        "garbage request line": (b"\x16\x03\x01 hello there\r\n\r\n", {400}),
        "no HTTP version": (b"GET\r\n\r\n", {400}),
        "bad method": (b"G(T / HTTP/1.1\r\n" + host + b"\r\n", {400}),
        "bad HTTP version": (b"GET / HTTP/9.9\r\n" + host + b"\r\n", {400}),
    }
    for name, (data, statuses) in cases.items():
        status, headers, body = exchange(server, data)
        assert status in statuses, (name, status, body)
        assert_json_detail(headers, body)
        assert_security_headers(headers)
    # The server is still there for everybody else.
    assert requests.get(server.url + "/api/health/", timeout=5).status_code == 200


# -- slow bodies --------------------------------------------------------------------------------------


def test_anonymous_slow_chunked_bodies_are_cut_off(servers, tmp_path):
    """A worker that holds at most 20 connections (SETTINGS_WORKER_CONNECTIONS=20, one
    worker, SETTINGS_BODY_TIMEOUT=2) and 20 anonymous clients that send a chunked PATCH
    body a byte a second: within 10 s the server has ended them all (a body is owed within
    the body time-out), and a normal request is answered."""
    server = servers.start(f"sqlite:///{tmp_path / 'slowbody.db'}", "--workers", "1",
                           SETTINGS_WORKER_CONNECTIONS="20", SETTINGS_HEADER_TIMEOUT="2",
                           SETTINGS_BODY_TIMEOUT="2")
    head = (f"PATCH {USER_SETTING} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
    slow = []
    try:
        for _ in range(20):
            sock = connect(server)
            sock.sendall(head.encode())
            slow.append(sock)
        ended = set()
        started = time.monotonic()
        while len(ended) < len(slow) and time.monotonic() - started < 10:
            for i, sock in enumerate(slow):
                if i in ended:
                    continue
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    ended.add(i)  # closed, or answered (a 408 or 413 would do)
                    continue
                with contextlib.suppress(OSError):
                    sock.send(b"1\r\n \r\n")
            time.sleep(1)
        assert len(ended) == len(slow), f"{len(slow) - len(ended)} still held after 10 s"
        assert requests.get(server.url + "/api/health/", timeout=3).status_code == 200
    finally:
        for sock in slow:
            sock.close()
    server.stop(signal.SIGQUIT)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_not_sent_in_time_is_408_json(servers, tmp_path, framing):
    """A signed-in client that stops sending its body halfway gets 408 JSON once the body
    time-out has passed (SETTINGS_BODY_TIMEOUT=2), whether the body was announced by its
    length (read by the view, after authentication) or chunked (read ahead, before it); the
    value is unchanged."""
    backend = f"sqlite:///{tmp_path / 'slowbody.db'}"
    token = seed(backend)
    server = servers.start(backend, "--workers", "1", SETTINGS_BODY_TIMEOUT="2")
    body = b'{"value":"never finished"}'
    framing_header = (f"Content-Length: {len(body)}" if framing == "content-length"
                      else "Transfer-Encoding: chunked")
    head = (f"PATCH {USER_SETTING} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {token['Authorization']}\r\nContent-Type: application/json\r\n"
            f"{framing_header}\r\n\r\n")
    first_part = body[:10] if framing == "content-length" else b"a\r\n" + body[:10] + b"\r\n"
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + first_part)
        status, headers, answer = read_response(sock, timeout=10)
        waited = time.monotonic() - started
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert json.loads(answer) == {"detail": "Request body not received within 2 seconds."}
    assert 1.5 < waited < 6, waited
    value = requests.get(server.url + USER_SETTING, headers=token, timeout=5).json()["value"]
    assert value != "never finished"
