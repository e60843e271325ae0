"""Authentication: Token, then Basic, then session cookie (SPEC §3).

INTERFACE (used by the settings API; the auth work fills in the implementation):

* ``init_app(app)`` registers a ``before_request`` hook that authenticates every request under
  ``/api/`` and leaves the result in ``flask.g.user`` (a :class:`settings_server.users.User` or
  ``None``). Invalid credentials end the request with 401 right there.
* ``current_user()`` -> ``User | None``
* ``require_user()`` -> ``User``: 401 "Authentication credentials were not provided." (with
  ``WWW-Authenticate: Token``) for anonymous callers.
* ``require_staff()`` -> ``User``: as ``require_user``, then 403 for non-staff users.
"""

from __future__ import annotations

from flask import Flask, g

from .errors import NOT_AUTHENTICATED, PERMISSION_DENIED, fail_detail

WWW_AUTHENTICATE = {"WWW-Authenticate": "Token"}


def init_app(app: Flask) -> None:
    app.before_request(_authenticate)


def _authenticate() -> None:
    g.user = None  # placeholder until authentication lands


def current_user():
    return g.get("user")


def require_user():
    user = current_user()
    if user is None:
        fail_detail(401, NOT_AUTHENTICATED, WWW_AUTHENTICATE)
    return user


def require_staff():
    user = require_user()
    if not user.is_staff:
        fail_detail(403, PERMISSION_DENIED)
    return user
