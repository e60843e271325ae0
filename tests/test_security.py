"""Safe to expose (issue 11), in process: the body limit (413), the login throttle (429 and
Retry-After, counted in the store), the client address behind trusted proxies, the security
headers and the configuration errors. Real sockets and gunicorn: tests/test_hostile.py."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time

import pytest
from credentials import basic

from settings_server import create_app
from settings_server.auth import authenticator

ME = "/api/user/me/"
TOKEN = "/api/user/token/"
USER_SETTING = "/api/settings/user/LAST_USED_PRINTING_MACHINES/"
THROTTLED = re.compile(r"Request was throttled\. Expected available in (\d+) seconds\.")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}



def peer(address: str, forwarded_for: str | None = None) -> dict:
    """``environ_base`` of a request from ``address`` (optionally with X-Forwarded-For)."""
    environ = {"REMOTE_ADDR": address}
    if forwarded_for is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return environ


def make_app(backend: str = "memory://", **config) -> object:
    return create_app({"TESTING": True, "SETTINGS_BACKEND": backend, **config})


def token_of(app, user) -> dict[str, str]:
    return {"Authorization": f"Token {authenticator(app).tokens.issue(user, 't').key}"}


def assert_throttled(response, window: int) -> int:
    """A 429 as DRF's throttle writes it; returns its Retry-After."""
    assert response.status_code == 429, response.data
    assert response.headers["Content-Type"] == "application/json"
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= window
    detail = json.loads(response.data)["detail"]
    match = THROTTLED.fullmatch(detail)
    assert match and int(match.group(1)) == wait, detail
    assert list(json.loads(response.data)) == ["detail"]
    return wait


def assert_401(response) -> None:
    assert response.status_code == 401, response.data
    assert response.data == b'{"detail":"Invalid username/password."}'


# -- the body limit (413) ----------------------------------------------------------------------


def too_large(limit: int) -> bytes:
    return json.dumps({"detail": f"Request body too large: the limit is {limit} bytes."},
                      separators=(",", ":")).encode()


class CountingStream(io.RawIOBase):
    """A request body of ``size`` bytes that records how much of it was read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # werkzeug's test client measures the stream by seeking
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: 0, 1: self.position, 2: self.size}[whence] + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.position))
        buffer[:n] = b" " * n
        self.position += n
        self.read_bytes += n
        return n


def test_default_limit_is_one_mebibyte_by_content_length(client, alice, auth_headers):
    headers = {**auth_headers(alice), "Content-Type": "application/json"}
    pad = b'{"value":"big"}'
    at_limit = pad + b" " * (1048576 - len(pad))
    response = client.patch(USER_SETTING, data=at_limit, headers=headers)
    assert response.status_code == 200, response.data
    assert response.get_json()["value"] == "big"
    response = client.patch(USER_SETTING, data=at_limit + b" ", headers=headers)
    assert response.status_code == 413
    assert response.data == too_large(1048576)
    assert response.headers["Content-Type"] == "application/json"
    assert client.get(USER_SETTING, headers=headers).get_json()["value"] == "big"


@pytest.fixture
def small():
    """An app whose body limit is 1000 bytes, with alice and her token headers."""
    app = make_app(SETTINGS_MAX_BODY_BYTES="1000")
    alice = authenticator(app).users.create("alice", "pw-alice")
    return app, token_of(app, alice)


def test_patch_past_the_limit_is_413_and_changes_nothing(small):
    app, token = small
    client = app.test_client()
    headers = {**token, "Content-Type": "application/json"}
    body = b'{"value":"' + b"x" * 989 + b'"}'
    assert len(body) == 1001
    response = client.patch(USER_SETTING, data=body, headers=headers)
    assert response.status_code == 413
    assert response.data == too_large(1000)
    assert client.get(USER_SETTING, headers=token).get_json()["value"] == ""
    # One byte less is a body like any other.
    response = client.patch(USER_SETTING, data=body.replace(b'x"', b'"'), headers=headers)
    assert response.status_code == 200
    assert response.get_json()["value"] == "x" * 988


def test_413_comes_before_authentication_and_for_any_method(small):
    """The limit is checked before anything else looks at the request: anonymous callers,
    bad credentials and a GET with a body all get 413, not 401."""
    app, token = small
    client = app.test_client()
    body = b"{" + b" " * 1000 + b"}"
    for response in (
        client.get(USER_SETTING, data=body, headers=token),
        client.get("/api/settings/global/", data=body),
        client.patch(USER_SETTING, data=body, content_type="application/json"),
        client.patch(USER_SETTING, data=body, headers=basic("alice", "wrong"),
                     content_type="application/json"),
        client.post("/api/user/token/", data=body),
    ):
        assert response.status_code == 413, response.request.method
        assert response.data == too_large(1000)


def test_413_by_content_length_does_not_read_the_body(small):
    app, token = small
    client = app.test_client()
    stream = CountingStream(8 * 1024 * 1024)
    response = client.patch(
        USER_SETTING,
        input_stream=stream,
        headers={**token, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.data == too_large(1000)
    assert stream.read_bytes == 0


class Pieces(io.RawIOBase):
    """A body that arrives as a socket delivers it: at most ``piece`` bytes per read."""

    def __init__(self, body: bytes, piece: int = 100) -> None:
        self.body = io.BytesIO(body)
        self.piece = piece

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # werkzeug's test client measures the stream by seeking
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.body.seek(offset, whence)

    def tell(self) -> int:
        return self.body.tell()

    def readinto(self, buffer) -> int:
        data = self.body.read(min(len(buffer), self.piece))
        buffer[: len(data)] = data
        return len(data)


def chunked(client, path: str, body: bytes, headers: dict, *, encoding: bool, pieces: bool):
    """A request whose body has no Content-Length, as a chunked body reaches the app (with
    ``Transfer-Encoding: chunked``, as gunicorn passes it on, or without), read at once or in
    pieces."""
    extra = {"Transfer-Encoding": "chunked"} if encoding else {}
    return client.patch(
        path,
        input_stream=Pieces(body) if pieces else io.BytesIO(body),
        headers={**headers, **extra, "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize(
    ("encoding", "pieces"), [(True, True), (True, False), (False, False)]
)
def test_chunked_body_past_the_limit_is_413(small, encoding, pieces):
    app, token = small
    client = app.test_client()
    pad = b'{"value":"chunked"}'
    for size in (1001, 5000):
        response = chunked(client, USER_SETTING, pad + b" " * (size - len(pad)), token,
                           encoding=encoding, pieces=pieces)
        assert response.status_code == 413, response.data
        assert response.data == too_large(1000)
    assert client.get(USER_SETTING, headers=token).get_json()["value"] == ""
    response = chunked(client, USER_SETTING, pad + b" " * (1000 - len(pad)), token,
                       encoding=encoding, pieces=pieces)
    assert response.status_code == 200, response.data
    assert response.get_json()["value"] == "chunked"


# -- the login throttle (429) ------------------------------------------------------------------


def test_per_address_limit_is_ten_failures_a_minute(app, client, alice, auth_headers):
    """Ten failures from one address (each for another name, so no name reaches its own
    limit) are answered 401; from then on every Basic login from there is 429, even alice's
    right password, while another address and alice's token still work."""
    token = auth_headers(alice)
    here = peer("198.51.100.7")
    for i in range(10):
        assert_401(client.get(ME, headers=basic(f"guess{i}", "pw"), environ_base=here))
    assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"), environ_base=here), 60)
    assert_throttled(client.get(TOKEN, headers=basic("bob", "x"), environ_base=here), 60)
    assert client.get(ME, headers=token, environ_base=here).status_code == 200
    assert client.get(ME, headers=basic("alice", "pw-alice"),
                      environ_base=peer("198.51.100.8")).status_code == 200


def test_ipv6_addresses_count_by_their_64_network(client, alice):
    """Ten failures from ten addresses of one IPv6 /64 throttle the whole /64 (a subscriber
    holds all of it), not its neighbour /64; an IPv4-mapped address counts as its IPv4."""
    for i in range(1, 11):
        assert_401(client.get(ME, headers=basic(f"guess{i}", "pw"),
                              environ_base=peer(f"2001:db8:0:1::{i:x}")))
    assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"),
                                environ_base=peer("2001:db8:0:1:ffff::1")), 60)
    assert client.get(ME, headers=basic("alice", "pw-alice"),
                      environ_base=peer("2001:db8:0:2::1")).status_code == 200
    for i in range(10):
        assert_401(client.get(ME, headers=basic(f"other{i}", "pw"),
                              environ_base=peer("::ffff:198.51.100.9")))
    assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"),
                                environ_base=peer("198.51.100.9")), 60)


def test_per_username_limit_is_five_failures_from_any_addresses(client, alice, bob):
    for i in range(5):
        assert_401(client.get(ME, headers=basic("alice", "no"), environ_base=peer(f"10.9.0.{i}")))
    elsewhere = peer("10.9.1.1")
    wait = assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"),
                                       environ_base=elsewhere), 300)
    assert wait > 60  # the name's window (5 minutes) is the one that holds
    # The name is throttled, not the addresses or other names.
    assert client.get(ME, headers=basic("bob", "pw-bob"), environ_base=elsewhere).status_code == 200
    assert client.get(ME, headers=basic("bob", "pw-bob"),
                      environ_base=peer("10.9.0.0")).status_code == 200


def test_retry_after_is_the_longest_wait(client, alice):
    """Both limits reached: the answer names the later of the two (the name's 5 minutes),
    not the address's minute."""
    here = peer("192.0.2.40")
    for _ in range(5):
        assert_401(client.get(ME, headers=basic("alice", "wrong"), environ_base=here))
    for i in range(5):
        assert_401(client.get(ME, headers=basic(f"n{i}", "x"), environ_base=here))
    assert assert_throttled(client.get(ME, headers=basic("n9", "x"), environ_base=here), 60)
    wait = assert_throttled(client.get(ME, headers=basic("alice", "x"), environ_base=here), 300)
    assert wait > 60


def test_right_password_is_refused_while_throttled_and_not_checked(app, client, alice):
    """While throttled, a login costs no password check: the user directory is not asked."""
    here = peer("192.0.2.50")
    for _ in range(5):
        assert_401(client.get(ME, headers=basic("alice", "wrong"), environ_base=here))
    users = authenticator(app).users
    asked = []
    original = users.authenticate
    users.authenticate = lambda *a: asked.append(a) or original(*a)
    assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"), environ_base=here), 300)
    assert asked == []


def test_successful_logins_are_never_counted(client, alice):
    here = peer("192.0.2.60")
    for _ in range(12):  # more than either limit
        assert client.get(ME, headers=basic("alice", "pw-alice"), environ_base=here).status_code == 200
    for _ in range(5):
        assert_401(client.get(ME, headers=basic("alice", "wrong"), environ_base=here))
    assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"), environ_base=here), 300)
    for i in range(5):  # the address has 5 failures: 5 more are allowed
        assert_401(client.get(ME, headers=basic(f"other{i}", "x"), environ_base=here))
    assert_throttled(client.get(ME, headers=basic("other9", "x"), environ_base=here), 60)


def test_tokens_and_sessions_are_never_throttled(client, alice, auth_headers):
    here = peer("192.0.2.70")
    login = client.get(TOKEN, headers=basic("alice", "pw-alice"), environ_base=here)
    assert login.status_code == 200  # leaves a session cookie in the client
    issued = {"Authorization": f"Token {login.get_json()['token']}"}
    for i in range(10):
        assert_401(client.get(ME, headers=basic(f"x{i}", "x"), environ_base=here))
    assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"), environ_base=here), 60)
    for _ in range(3):
        assert client.get(ME, headers=issued, environ_base=here).status_code == 200
        assert client.get(ME, headers=auth_headers(alice), environ_base=here).status_code == 200
        assert client.get(ME, environ_base=here).status_code == 200  # the session cookie
    # A new token by token: the token endpoint itself does not throttle token callers.
    again = client.get(TOKEN, query_string={"name": "n"}, headers=issued, environ_base=here)
    assert again.status_code == 200
    # Invalid tokens are 401, not counted and not throttled.
    bad = {"Authorization": "Token inv-" + "0" * 40 + "-20250101"}
    for _ in range(3):
        assert client.get(ME, headers=bad, environ_base=peer("192.0.2.71")).status_code == 401
    for i in range(10):
        assert_401(client.get(ME, headers=basic(f"y{i}", "x"), environ_base=peer("192.0.2.71")))


def test_throttle_window_ends():
    app = make_app(SETTINGS_LOGIN_LIMIT_PER_ADDRESS="2/second")
    authenticator(app).users.create("alice", "pw-alice")
    client = app.test_client()
    here = peer("192.0.2.80")
    for i in range(2):
        assert_401(client.get(ME, headers=basic(f"n{i}", "x"), environ_base=here))
    wait = assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"), environ_base=here), 1)
    time.sleep(wait + 0.1)
    assert client.get(ME, headers=basic("alice", "pw-alice"), environ_base=here).status_code == 200


def test_configured_limits():
    app = make_app(SETTINGS_LOGIN_LIMIT_PER_ADDRESS="3/hour",
                   SETTINGS_LOGIN_LIMIT_PER_USERNAME="2 per 10 minutes")
    authenticator(app).users.create("alice", "pw-alice")
    client = app.test_client()
    for i in range(2):
        assert_401(client.get(ME, headers=basic("alice", "x"), environ_base=peer(f"10.1.0.{i}")))
    wait = assert_throttled(client.get(ME, headers=basic("alice", "x"),
                                       environ_base=peer("10.1.0.9")), 600)
    assert wait > 300
    here = peer("10.2.0.1")
    for i in range(3):
        assert_401(client.get(ME, headers=basic(f"n{i}", "x"), environ_base=here))
    assert assert_throttled(client.get(ME, headers=basic("n9", "x"), environ_base=here),
                            3600) > 600


def test_counts_live_in_the_store_shared_by_every_app(store_url):
    """Counts are kept in the configured store, so every worker and server on it shares them:
    failures made through one app throttle logins through another on the same store (for
    memory://, which no two processes share, another client of the same app). What is kept
    names neither the username nor the password."""
    first = make_app(store_url)
    authenticator(first).users.create("alice", "pw-alice")
    second = first if store_url == "memory://" else make_app(store_url)
    one, two = first.test_client(), second.test_client()
    for i in range(3):
        assert_401(one.get(ME, headers=basic("alice", "secret-guess"),
                           environ_base=peer(f"10.5.0.{i}")))
    for i in range(2):
        assert_401(two.get(ME, headers=basic("alice", "secret-guess"),
                           environ_base=peer(f"10.5.1.{i}")))
    assert_throttled(one.get(ME, headers=basic("alice", "pw-alice"),
                             environ_base=peer("10.5.2.1")), 300)
    assert_throttled(two.get(ME, headers=basic("alice", "pw-alice"),
                             environ_base=peer("10.5.2.2")), 300)
    stored = first.extensions["settings_store"].get_all("login_failures")
    assert stored, "no failure counted in the store"
    dump = json.dumps(stored)
    assert "alice" not in dump and "secret-guess" not in dump
    if store_url != "memory://":
        restarted = make_app(store_url)  # a new process on the same store
        assert_throttled(restarted.test_client().get(
            ME, headers=basic("alice", "pw-alice"), environ_base=peer("10.5.3.1")), 300)


def test_unknown_names_and_malformed_basic_headers(client, alice):
    """Unknown names count like wrong passwords; a header that is not Basic credentials at all
    is 401 before any counting."""
    here = peer("192.0.2.90")
    for i in range(10):
        response = client.get(ME, headers={"Authorization": "Basic !!!"}, environ_base=here)
        assert response.status_code == 401
    assert client.get(ME, headers=basic("alice", "pw-alice"), environ_base=here).status_code == 200
    for _ in range(5):
        assert_401(client.get(ME, headers=basic("ghost", "x"), environ_base=here))
    assert_throttled(client.get(ME, headers=basic("ghost", "x"), environ_base=here), 300)
    long_name = "n" * 5000  # any length is counted by a fixed-size key
    for _ in range(5):
        assert_401(client.get(ME, headers=basic(long_name, "x"), environ_base=peer("192.0.2.91")))
    assert_throttled(client.get(ME, headers=basic(long_name, "x"),
                                environ_base=peer("192.0.2.92")), 300)


# -- the client address ------------------------------------------------------------------------


def recorded_address(app, environ: dict) -> str:
    """The address recorded on a token issued by a request with ``environ``."""
    client = app.test_client()
    response = client.get(TOKEN, query_string={"name": "n"}, headers=basic("alice", "pw-alice"),
                          environ_base=environ)
    assert response.status_code == 200, response.data
    digest = hashlib.sha256(response.get_json()["token"].encode()).hexdigest()
    return app.extensions["settings_store"].get("tokens", digest)["remote_addr"]


@pytest.fixture
def behind_proxy():
    app = make_app(SETTINGS_TRUSTED_PROXIES="10.0.0.1, 172.16.0.0/12, ::1")
    authenticator(app).users.create("alice", "pw-alice")
    return app


def test_forwarded_for_is_ignored_without_trusted_proxies(client, alice, app):
    assert recorded_address(app, peer("10.0.0.1", "203.0.113.5")) == "10.0.0.1"
    # A client cannot escape the per-address limit by naming other addresses.
    for i in range(10):
        assert_401(client.get(ME, headers=basic(f"g{i}", "x"),
                              environ_base=peer("192.0.2.1", f"203.0.113.{i}")))
    assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"),
                                environ_base=peer("192.0.2.1", "203.0.113.200")), 60)


@pytest.mark.parametrize(
    ("environ", "address"),
    [
        (peer("10.0.0.1", "203.0.113.5"), "203.0.113.5"),
        (peer("::1", "2001:db8::7"), "2001:db8::7"),
        # Hops added by trusted proxies are skipped: the right-most untrusted one counts.
        (peer("10.0.0.1", "203.0.113.5, 172.16.4.4, 172.20.0.9"), "203.0.113.5"),
        # What the client wrote itself (left of the first untrusted hop) does not count.
        (peer("10.0.0.1", "127.0.0.1, 10.0.0.1, 203.0.113.5"), "203.0.113.5"),
        (peer("10.0.0.1", "1.2.3.4,203.0.113.5"), "203.0.113.5"),
        (peer("10.0.0.1", "not-an-address, 203.0.113.5"), "203.0.113.5"),
        # Junk at the right: nothing behind the proxy is known, the proxy counts.
        (peer("10.0.0.1", "203.0.113.5, junk"), "10.0.0.1"),
        (peer("10.0.0.1", "<script>"), "10.0.0.1"),
        (peer("10.0.0.1", ""), "10.0.0.1"),
        # Only trusted hops: the left-most of them.
        (peer("10.0.0.1", "172.16.0.1"), "172.16.0.1"),
        # An untrusted peer's header is ignored, whatever it says.
        (peer("192.0.2.9", "203.0.113.5"), "192.0.2.9"),
        (peer("10.0.0.2", "203.0.113.5"), "10.0.0.2"),
    ],
)
def test_client_address_behind_trusted_proxies(behind_proxy, environ, address):
    assert recorded_address(behind_proxy, environ) == address


def test_throttle_and_access_log_use_the_forwarded_address(behind_proxy, caplog):
    caplog.set_level(logging.INFO, logger="settings_server.access")
    client = behind_proxy.test_client()
    for i in range(10):  # left-most hops chosen by the client change every time
        assert_401(client.get(ME, headers=basic(f"g{i}", "x"),
                              environ_base=peer("10.0.0.1", f"198.18.0.{i}, 203.0.113.5")))
    assert_throttled(client.get(ME, headers=basic("alice", "pw-alice"),
                                environ_base=peer("10.0.0.1", "203.0.113.5")), 60)
    # Another client behind the same proxy is not throttled.
    assert client.get(ME, headers=basic("alice", "pw-alice"),
                      environ_base=peer("10.0.0.1", "203.0.113.6")).status_code == 200
    remotes = [json.loads(r.getMessage())["remote"] for r in caplog.records
               if r.name == "settings_server.access"]
    assert remotes == ["203.0.113.5"] * 11 + ["203.0.113.6"]


# -- security headers --------------------------------------------------------------------------


def assert_security_headers(response, credentials: bool) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    if credentials:
        assert response.headers.get("Cache-Control") == "no-store", response.status_code
    else:
        assert "Cache-Control" not in response.headers, response.status_code


def test_security_headers_on_every_kind_of_response(small):
    app, token = small
    client = app.test_client()
    anonymous = {
        200: client.get("/api/schema/"),
        401: client.get(ME),
        404: client.get("/api/no/such/"),
        413: client.get(ME, data=b"x" * 1001),
    }
    outside = client.get("/not-api")
    assert outside.status_code == 404
    anonymous["outside"] = outside
    health = client.get("/api/health/")
    anonymous[health.status_code] = health
    for status, response in anonymous.items():
        if isinstance(status, int):
            assert response.status_code == status
        assert_security_headers(response, credentials=False)
    with_credentials = {
        200: client.get(USER_SETTING, headers=token),
        401: client.get(ME, headers={"Authorization": "Token nope"}),
        404: client.get("/api/settings/user/NO_SUCH/", headers=token),
        405: client.post(ME, headers=token),
        413: client.get(ME, data=b"x" * 1001, headers=token),
    }
    for i in range(10):
        client.get(ME, headers=basic(f"g{i}", "x"))
    with_credentials[429] = client.get(ME, headers=basic("alice", "pw-alice"))
    with_credentials["schema"] = client.get("/api/schema/", headers=token)
    for status, response in with_credentials.items():
        if isinstance(status, int):
            assert response.status_code == status
        assert_security_headers(response, credentials=True)


class FailingDeferredWrites:
    """A store's deferred writes whose answers never come (Redis gone after the send)."""

    def defer_writes(self) -> None:
        pass

    def settle(self) -> None:
        from backends import StorageUnavailable

        raise StorageUnavailable("connection lost")


def test_a_write_whose_deferred_answer_fails_is_503_with_the_headers_and_counted(small):
    """The 503 made after the view (a deferred write failed) is what every later step sees:
    it carries the security headers and is the status the metrics count."""
    app, token = small
    app.extensions["settings_speedups"].deferring = FailingDeferredWrites()
    client = app.test_client()
    response = client.patch(USER_SETTING, json={"value": "x"}, headers=token)
    assert response.status_code == 503
    assert response.get_json() == {"detail": "Storage unavailable."}
    assert response.headers["Retry-After"] == "5"
    assert_security_headers(response, credentials=True)
    counted = app.extensions["settings_metrics"].requests.labels(
        "/api/settings/user/<user_key:key>/", "PATCH", "503"
    )._value.get()
    assert counted == 1


def test_session_cookie_means_no_store(client, alice):
    login = client.get(TOKEN, headers=basic("alice", "pw-alice"))
    assert_security_headers(login, credentials=True)
    response = client.get(ME)  # the session cookie alone
    assert response.status_code == 200
    assert_security_headers(response, credentials=True)
    anonymous = app_client_without_cookies(client)
    assert_security_headers(anonymous.get("/api/schema/"), credentials=False)


def app_client_without_cookies(client):
    return client.application.test_client()


# -- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SETTINGS_MAX_BODY_BYTES", "0"),
        ("SETTINGS_MAX_BODY_BYTES", "-5"),
        ("SETTINGS_MAX_BODY_BYTES", "1MB"),
        ("SETTINGS_MAX_BODY_BYTES", "1.5"),
        ("SETTINGS_LOGIN_LIMIT_PER_ADDRESS", "lots"),
        ("SETTINGS_LOGIN_LIMIT_PER_ADDRESS", "10/fortnight"),
        ("SETTINGS_LOGIN_LIMIT_PER_USERNAME", "five"),
        ("SETTINGS_TRUSTED_PROXIES", "proxy.example"),
        ("SETTINGS_TRUSTED_PROXIES", "10.0.0.1, 10.0.0.0/33"),
    ],
)
def test_bad_configuration_names_the_variable(name, value, monkeypatch, capsys):
    with pytest.raises(ValueError, match=name):
        make_app(**{name: value})
    # From the environment, `settings-server run` refuses to start and says why.
    from settings_server import cli

    monkeypatch.setenv("SETTINGS_BACKEND", "memory://")
    monkeypatch.setenv(name, value)
    assert cli.main(["run"]) == 1
    assert name in capsys.readouterr().err
