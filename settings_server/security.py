"""What makes the server safe to expose, in one place: the client address behind trusted
proxies, the request-body limit, the login throttle and the security headers.

* ``SETTINGS_TRUSTED_PROXIES`` (addresses or networks, comma-separated; none by default): a
  request from one of them is taken to come from the right-most address of
  ``X-Forwarded-For`` that is not itself a trusted proxy. That address is ``REMOTE_ADDR`` for
  the whole app: the login throttle, the request log and token records. Without it the peer
  address counts and ``X-Forwarded-For`` is ignored, so no client can choose its address.
* ``SETTINGS_MAX_BODY_BYTES`` (default 1 MiB): a larger body is 413 ``{"detail": ...}``, refused
  from its ``Content-Length`` before any of it is read, or as soon as a chunked body passes it
  (a chunked body is read ahead, up to the limit, before the app sees it: werkzeug's own limit
  would cut it short silently).
* Every response carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
  ``Referrer-Policy: same-origin``; every response to a request with credentials carries
  ``Cache-Control: no-store``.
"""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Request, Response, current_app
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from .rendering import json_response
from .throttle import LoginThrottle

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_HEADERS = tuple(SECURITY_HEADERS.items())
SESSION_COOKIE = "sessionid"
#: environ keys set by ChunkedBodyLimit for refuse_unread_body
TOO_LARGE = "settings_server.body_too_large"
TOO_SLOW = "settings_server.body_too_slow"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def init_app(app: Flask) -> None:
    """Install the limits and headers; ``ValueError`` naming the variable for a bad value."""
    limit = _positive(app.config, "SETTINGS_MAX_BODY_BYTES", int)
    for name in ("SETTINGS_HEADER_TIMEOUT", "SETTINGS_WORKER_CONNECTIONS"):  # gunicorn's
        _positive(app.config, name, int)
    _positive(app.config, "SETTINGS_BODY_TIMEOUT", float)  # the shipped worker's
    app.config["MAX_CONTENT_LENGTH"] = limit
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, limit)
    proxies = trusted_networks(str(app.config.get("SETTINGS_TRUSTED_PROXIES") or ""))
    if proxies:
        app.wsgi_app = ForwardedFor(app.wsgi_app, proxies)
    app.extensions["settings_throttle"] = LoginThrottle(
        app.extensions["settings_store"], app.config
    )
    app.register_error_handler(RequestEntityTooLarge, _too_large)


def throttle() -> LoginThrottle:
    return current_app.extensions["settings_throttle"]


def refuse_unread_body(current: Request, app: Flask) -> Response | None:
    """413 for a body over the limit, 408 for a chunked body that was not sent in time."""
    environ = current.environ
    if TOO_LARGE in environ:
        return _too_large()
    if TOO_SLOW in environ:
        return json_response({"detail": environ[TOO_SLOW].description}, 408)
    if environ.get("CONTENT_LENGTH") and (current.content_length or 0) > app.config[
        "MAX_CONTENT_LENGTH"
    ]:
        return _too_large()
    return None


def body_timeout(seconds: float) -> RequestTimeout:
    """What a body read raises when the body is not all there ``seconds`` after the request's
    start (the shipped worker's ``SETTINGS_BODY_TIMEOUT``, :mod:`settings_server.serving`):
    answered with 408 like any werkzeug error."""
    return RequestTimeout(f"Request body not received within {seconds:g} seconds.")


def _too_large(_exc: Exception | None = None) -> Response:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return json_response({"detail": f"Request body too large: the limit is {limit} bytes."}, 413)


def add_security_headers(response: Response, current: Request) -> None:
    """:data:`SECURITY_HEADERS` (added, not set: no view sets them itself, and ``set`` scans
    the headers for each name), and ``Cache-Control: no-store`` for a request with
    credentials (set: static files come with a ``Cache-Control`` of their own)."""
    headers = response.headers
    for name, value in _HEADERS:
        headers.add(name, value)
    environ = current.environ
    if "HTTP_AUTHORIZATION" in environ or (
        "HTTP_COOKIE" in environ and SESSION_COOKIE in current.cookies
    ):
        headers["Cache-Control"] = "no-store"


class ChunkedBodyLimit:
    """WSGI middleware: a body without ``Content-Length`` (chunked) is read here, up to one
    byte past ``limit``. Within the limit the app gets it as an ordinary body with its length;
    past it, no body and ``environ[TOO_LARGE]``, which :func:`refuse_unread_body` answers with
    413; not all sent in time (``RequestTimeout`` from the stream), ``environ[TOO_SLOW]``
    and 408. The rest of such a body is never read by the app (gunicorn discards it,
    bounded)."""

    def __init__(self, app: Callable[..., Any], limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self.app(environ, start_response)
        stream, chunks, size = environ["wsgi.input"], [], 0
        try:
            while size <= self.limit and (chunk := stream.read(self.limit + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
        except RequestTimeout as exc:
            environ[TOO_SLOW] = exc
            chunks = []
        if size > self.limit:
            environ[TOO_LARGE] = True
            chunks = []
        body = b"".join(chunks)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


# -- the client address --------------------------------------------------------------------


def trusted_networks(text: str) -> tuple[Network, ...]:
    """``SETTINGS_TRUSTED_PROXIES`` parsed; ``ValueError`` naming the bad entry."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"SETTINGS_TRUSTED_PROXIES: {entry!r} is not an address or network "
                "(e.g. 10.0.0.5, 10.0.0.0/8, ::1)"
            ) from None
    return tuple(networks)


def client_address(peer: str, forwarded_for: str | None, proxies: Iterable[Network]) -> str:
    """The address a request counts as coming from: ``peer`` unless ``peer`` is a trusted
    proxy, then the right-most ``X-Forwarded-For`` hop that is not (the left-most hop when all
    are trusted). Entries that are not addresses end the walk: nothing left of them is known."""
    proxies = tuple(proxies)
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    address = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not _is_address(hop):
            break
        address = hop
        if not _trusted(hop, proxies):
            break
    return address


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


class ForwardedFor:
    """WSGI middleware: ``REMOTE_ADDR`` becomes :func:`client_address`."""

    def __init__(self, app: Callable[..., Any], proxies: tuple[Network, ...]) -> None:
        self.app = app
        self.proxies = proxies

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["REMOTE_ADDR"] = client_address(
            environ.get("REMOTE_ADDR", ""), environ.get("HTTP_X_FORWARDED_FOR"), self.proxies
        )
        return self.app(environ, start_response)


def _positive(config: Any, name: str, kind: type[int | float]) -> Any:
    text = str(config.get(name))
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        what = "whole number" if kind is int else "number"
        raise ValueError(f"{name}={text!r} must be a positive {what}")
    return value
