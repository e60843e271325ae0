"""Authentication and permissions for everything under ``/api/`` (docs/contract.md §3, §4).

:func:`authenticate` (called by the API layer for every request under ``/api/``, after content
negotiation) leaves the result in ``flask.g.user`` (a :class:`~settings_server.users.User` or
``None``) and the scheme that succeeded in ``flask.g.auth_scheme`` (``"token"``, ``"basic"``,
``"session"`` or ``None``). Schemes are tried in DRF's order:

1. ``Authorization: Token <key>`` (keyword case-insensitive);
2. ``Authorization: Basic base64(user:password)``;
3. the signed ``sessionid`` cookie, with CSRF checks for unsafe methods (§3.3).

Invalid Token or Basic credentials end the request with 401 and ``WWW-Authenticate: Token``;
they never fall back to anonymous access. Any other ``Authorization`` scheme (``Bearer``) counts
as no credentials. A session cookie that is expired, forged, or made before the user's password
changed counts as no session, as in Django.

Views call :func:`current_user`, :func:`require_user`, :func:`require_staff` or
:func:`require_superuser`.

Nothing here touches the store at import time or in ``init_app``: the secret key and the admin
bootstrap are loaded on the first request that needs them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple, NoReturn

from flask import Flask, Request, Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from backends import KeyValueStore

from . import security
from .errors import NOT_AUTHENTICATED, PERMISSION_DENIED, fail_detail
from .tokens import TokenRejected, TokenStore, token_digest
from .users import DuplicateUser, User, UserDirectory

WWW_AUTHENTICATE = {"WWW-Authenticate": "Token"}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Never authenticated, credentials ignored: the health check must not depend on the store.
UNAUTHENTICATED_PATHS = frozenset({"/api/health/"})

SESSION_COOKIE = "sessionid"
SESSION_MAX_AGE = 1_209_600  # two weeks, Django's default
CSRF_COOKIE = "csrftoken"
CSRF_HEADER = "X-CSRFToken"
CSRF_MAX_AGE = 31_449_600  # one year, Django's default

#: Where the generated secret key is kept when ``SETTINGS_SECRET_KEY`` is not set.
SECRET_NAMESPACE = "server"
SECRET_ENTRY = "secret_key"

# The whitespace DRF splits the Authorization header on (bytes.split()).
_HEADER_SPACE = re.compile(r"[ \t\n\r\x0b\x0c]+")


class Authenticator:
    """Per-app authentication state: directories, the lazily loaded secret key and the
    once-per-process admin bootstrap."""

    def __init__(self, store: KeyValueStore, config: Mapping[str, Any]) -> None:
        """``config`` supplies ``SETTINGS_SECRET_KEY``, ``SETTINGS_ADMIN_USER``,
        ``SETTINGS_ADMIN_PASSWORD`` and ``SETTINGS_TRUSTED_ORIGINS``. Does not touch ``store``."""
        self.store = store
        self.users = UserDirectory(store)
        self.tokens = TokenStore(store, self.users)
        self._configured_secret: str | None = config.get("SETTINGS_SECRET_KEY") or None
        self._secret: str | None = None
        self._admin = (
            config.get("SETTINGS_ADMIN_USER") or None,
            config.get("SETTINGS_ADMIN_PASSWORD") or None,
        )
        self._bootstrapped = False
        self._lock = threading.Lock()
        self.trusted_origins = frozenset(
            origin.strip().rstrip("/").lower()
            for origin in (config.get("SETTINGS_TRUSTED_ORIGINS") or "").split(",")
            if origin.strip()
        )

    # -- secret key ------------------------------------------------------------------------

    @property
    def secret_key(self) -> str:
        """``SETTINGS_SECRET_KEY``, else the key kept in the store, created there once (set if
        absent) so that every worker and every restart signs with the same key."""
        if self._configured_secret:
            return self._configured_secret
        if self._secret is None:
            candidate = secrets.token_urlsafe(48)
            self.store.compare_and_set(SECRET_NAMESPACE, SECRET_ENTRY, None, candidate)
            self._secret = self.store.get(SECRET_NAMESPACE, SECRET_ENTRY)
        return self._secret

    # -- admin bootstrap -------------------------------------------------------------------

    def bootstrap_admin(self) -> User | None:
        """Create ``SETTINGS_ADMIN_USER`` (superuser and staff) with ``SETTINGS_ADMIN_PASSWORD``
        when both are set and the store has no users; the created user, else ``None``. Safe to
        race from several processes: only one creation of the name can succeed."""
        username, password = self._admin
        if not username or not password or self.users.exists_any():
            return None
        try:
            return self.users.create(username, password, is_staff=True, is_superuser=True)
        except DuplicateUser:
            return None

    def bootstrap_once(self) -> None:
        """:meth:`bootstrap_admin` on the first call in this process (retried if it failed)."""
        if self._bootstrapped:
            return
        with self._lock:
            if not self._bootstrapped:
                self.bootstrap_admin()
                self._bootstrapped = True

    # -- sessions --------------------------------------------------------------------------

    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret_key, salt="settings-server.session")

    def _password_fingerprint(self, user: User) -> str:
        """Ties a session to the password it was made with, without revealing the hash."""
        key = self.secret_key.encode()
        return hmac.new(key, user.password_hash.encode(), hashlib.sha256).hexdigest()[:32]

    def session_cookie(self, user: User) -> str:
        """A signed ``sessionid`` value for ``user``."""
        return self._serializer().dumps({"u": user.id, "p": self._password_fingerprint(user)})

    def user_from_session(self, cookie: str) -> User | None:
        """The active user a session cookie belongs to, or ``None`` for a forged, expired or
        outdated (password changed since) cookie."""
        try:
            payload = self._serializer().loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("u"), int):
            return None
        user = self.users.get(payload["u"])
        if user is None or not user.is_active:
            return None
        if not hmac.compare_digest(str(payload.get("p")), self._password_fingerprint(user)):
            return None
        return user

    def log_out(self, response: Response) -> None:
        """Delete the session cookie (sessions are signed, not stored: nothing else to end)."""
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="Lax", secure=request.is_secure)

    def log_in(self, response: Response, user: User) -> None:
        """Set ``sessionid`` and a fresh ``csrftoken`` on ``response``."""
        secure = request.is_secure
        response.set_cookie(
            SESSION_COOKIE,
            self.session_cookie(user),
            max_age=SESSION_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=secure,
        )
        response.set_cookie(
            CSRF_COOKIE,
            secrets.token_urlsafe(24),
            max_age=CSRF_MAX_AGE,
            samesite="Lax",
            secure=secure,
        )

    # -- CSRF ------------------------------------------------------------------------------

    def check_csrf(self, submitted: str | None = None) -> None:
        """403 unless the unsafe, session-authenticated request passes Django's checks in
        Django's order: Origin, then the cookie, then the header matching it (or ``submitted``,
        a form's hidden field, when given)."""
        origin = request.headers.get("Origin")
        if origin is not None:
            own = f"{request.scheme}://{request.host}".lower()
            if origin.rstrip("/").lower() not in self.trusted_origins | {own}:
                _csrf_failed(
                    f"Origin checking failed - {origin} does not match any trusted origins."
                )
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie:
            _csrf_failed("CSRF cookie not set.")
        header = submitted if submitted is not None else request.headers.get(CSRF_HEADER)
        if not header:
            _csrf_failed("CSRF token missing.")
        if not hmac.compare_digest(header.encode(), cookie.encode()):
            _csrf_failed("CSRF token from the 'X-Csrftoken' HTTP header incorrect.")


def _csrf_failed(reason: str) -> NoReturn:
    fail_detail(403, f"CSRF Failed: {reason}")


def _unauthorized(detail: str) -> NoReturn:
    fail_detail(401, detail, WWW_AUTHENTICATE)


def authenticator(app: Flask | None = None) -> Authenticator:
    """The app's :class:`Authenticator` (the current app by default)."""
    return (app or current_app).extensions["settings_auth"]


def init_app(app: Flask) -> None:
    """Attach an :class:`Authenticator` (no store access)."""
    app.extensions["settings_auth"] = Authenticator(app.extensions["settings_store"], app.config)


class Credentials(NamedTuple):
    """A request's ``Authorization`` header as DRF splits it, read once for both planning
    the request's reads and authenticating it."""

    parts: list[str]
    keyword: str  # the first part, lower case ("" without a header)
    #: for ``Token <key>``, the digest the key is stored under (None if not token-shaped)
    token_digest: str | None


def credentials(current: Request) -> Credentials:
    """The current request's :class:`Credentials`."""
    parts = _credentials(current.environ.get("HTTP_AUTHORIZATION", ""))
    keyword = parts[0].lower() if parts else ""
    shaped = keyword == "token" and len(parts) == 2
    return Credentials(parts, keyword, token_digest(parts[1]) if shaped else None)


def authenticate(
    current: Request | None = None,
    app: Flask | None = None,
    state: Any = None,
    given: Credentials | None = None,
) -> None:
    """Authenticate the current ``/api/`` request into ``g.user`` and ``g.auth_scheme``; 401
    for invalid credentials. The request, app, ``g`` and :func:`credentials` may be passed
    when the caller has them."""
    if current is None:
        current = request._get_current_object()  # type: ignore[attr-defined]
    if state is None:
        state = g._get_current_object()  # type: ignore[attr-defined]
    state.user = None
    state.auth_scheme = None
    if current.path in UNAUTHENTICATED_PATHS:
        return
    auth = authenticator(app)
    auth.bootstrap_once()
    given = given or credentials(current)
    keyword = given.keyword
    if keyword == "token":
        state.user, state.auth_scheme = _token_user(auth, given), "token"
    elif keyword == "basic":
        state.user, state.auth_scheme = _basic_user(auth, given.parts), "basic"
    else:
        cookie = current.cookies.get(SESSION_COOKIE) if "HTTP_COOKIE" in current.environ else None
        user = auth.user_from_session(cookie) if cookie else None
        if user is not None:
            state.user, state.auth_scheme = user, "session"
            if current.method not in SAFE_METHODS:
                auth.check_csrf()


def _credentials(header: str) -> list[str]:
    """An ``Authorization`` header split into its keyword and credentials."""
    return _HEADER_SPACE.split(header.strip(" \t\n\r\x0b\x0c")) if header.strip() else []


def planned_reads(
    current: Request, app: Flask, given: Credentials
) -> tuple[int | None, dict[str, list[str]]]:
    """What authenticating this request will read (to fetch it in one round trip with the
    request's other reads), and the user's id when known without reading."""
    if current.path in UNAUTHENTICATED_PATHS or given.token_digest is None:
        return None, {}
    return authenticator(app).tokens.planned_reads(given.token_digest)


def _token_user(auth: Authenticator, given: Credentials) -> User:
    parts = given.parts
    if len(parts) == 1:
        _unauthorized("Invalid token header. No credentials provided.")
    if len(parts) > 2:
        _unauthorized("Invalid token header. Token string should not contain spaces.")
    try:
        user, _ = auth.tokens.authenticate_digest(given.token_digest)
    except TokenRejected as exc:
        _unauthorized(str(exc))
    return user


def _basic_user(auth: Authenticator, parts: list[str]) -> User:
    if len(parts) == 1:
        _unauthorized("Invalid basic header. No credentials provided.")
    if len(parts) > 2:
        _unauthorized("Invalid basic header. Credentials string should not contain spaces.")
    try:
        raw = base64.b64decode(parts[1])
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            decoded = raw.decode("latin-1")
        username, password = decoded.split(":", 1)
    except (ValueError, binascii.Error):
        _unauthorized("Invalid basic header. Credentials not correctly base64 encoded.")
    try:
        user = password_user(auth, username, password)
    except Throttled as exc:
        fail_detail(429, str(exc), {"Retry-After": str(exc.wait)})
    if user is None:
        _unauthorized("Invalid username/password.")
    return user


class Throttled(Exception):
    """Too many failed logins from this address or for this username: the message is the 429
    ``detail``, ``wait`` the seconds until the next try."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"Request was throttled. Expected available in {wait} seconds.")
        self.wait = wait


def password_user(auth: Authenticator, username: str, password: str) -> User | None:
    """The active user with this username and password, else ``None`` (the failure counted by
    the login throttle). Raises :class:`Throttled` before the password costs a hash when the
    throttle refuses. Basic auth and the settings page's sign-in form both log in here."""
    throttle = security.throttle()
    address = request.remote_addr or ""
    wait = throttle.retry_after(address, username)
    if wait is not None:
        raise Throttled(wait)
    user = auth.users.authenticate(username, password)
    if user is None:
        throttle.failed(address, username)
    return user


def current_user(state: Any = None) -> User | None:
    """The authenticated user of this request, or ``None`` (``state``: the request's
    ``flask.g``, when the caller has it)."""
    return (g if state is None else state).get("user")


def require_user() -> User:
    """The authenticated user; 401 "Authentication credentials were not provided." with
    ``WWW-Authenticate: Token`` for anonymous callers."""
    user = current_user()
    if user is None:
        fail_detail(401, NOT_AUTHENTICATED, WWW_AUTHENTICATE)
    return user


def require_staff() -> User:
    """As :func:`require_user`, then 403 for users who are not staff (global setting writes)."""
    user = require_user()
    if not user.is_staff:
        fail_detail(403, PERMISSION_DENIED)
    return user


def require_superuser() -> User:
    """As :func:`require_user`, then 403 for non-superusers (the §4 rule for POST on list
    views, where only superusers get as far as 405)."""
    user = require_user()
    if not user.is_superuser:
        fail_detail(403, PERMISSION_DENIED)
    return user


def request_metadata() -> dict[str, Any]:
    """What is recorded on a token issued by this request (§11.2)."""
    return {
        "user_agent": request.headers.get("User-Agent", ""),
        "remote_addr": request.remote_addr or "",
    }
