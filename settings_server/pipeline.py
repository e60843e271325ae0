"""What runs around every view, in the order it runs: one Flask hook each for before-request,
after-request and teardown, each calling its steps in turn.

Flask calls every registered hook through ``ensure_sync`` (a coroutine check, ~0.7 µs) and
looks hooks up per blueprint; ten separate hooks cost that ten times a request, and their order
was spread over the ``init_app`` functions (``insert(0, ...)``, "call before X"). Here it is
declared once, with one clock for the metrics and the request log.

Before the view:

1. the clock starts;
2. a body over the limit is 413, a chunked body sent too slowly 408 (:mod:`.security`);
3. under ``/api``: content negotiation, read-ahead, authentication, routing checks
   (:func:`.api.before_api_request`);
4. the change index for ``X-Settings-Index`` is noted (:mod:`.api.feed`).

A step that returns a response ends the before-request steps (the view does not run), as in
Flask; the after-request steps still run on that response.

After the view (on every response, error responses included):

1. an unsafe request's deferred writes are settled (503 if one failed, :mod:`.speedups`), so
   that every step below sees the status the client gets;
2. ``Allow`` on settings responses (:mod:`.api`), ``X-Settings-Index`` (:mod:`.api.feed`);
3. the security headers (:mod:`.security`), and the settings page's
   ``Content-Security-Policy`` (:mod:`.web`);
4. the request is counted (:mod:`.metrics`) and logged (:mod:`.access_log`).

At teardown: the read-ahead batch ends (:mod:`.speedups`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, request

from . import access_log, api, metrics, security, speedups, web
from .api import feed

CLOCK = "settings_server.started"  # WSGI environ key: when the request's first step ran


class SettingsApp(Flask):
    """Flask, remembering which functions are plain ``def``.

    Flask passes every view and hook through :meth:`ensure_sync` on every request (the view
    alone through four layers: the app, ``MethodView``, flask-smorest's and webargs'
    wrappers), and each call asks ``inspect.iscoroutinefunction`` again (~0.7 µs). The answer
    is a property of the function, so it is kept (by the function under a bound method, whose
    instance is new each request); ``async def`` functions are still wrapped by Flask."""

    KEPT = 4096  # functions remembered, at most

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain: set[Callable[..., Any]] = set()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        key = getattr(func, "__func__", func)
        try:
            if key in self._plain:
                return func
        except TypeError:  # unhashable callable: ask every time
            return super().ensure_sync(func)
        synced = super().ensure_sync(func)
        if synced is func and len(self._plain) < self.KEPT:
            self._plain.add(key)
        return synced


def init_app(app: Flask) -> None:
    """Install the three hooks. Call after every module whose steps they run is set up."""
    app.before_request(before_request)
    app.after_request(after_request)
    app.teardown_request(teardown_request)


# Each hook looks up the request, the app and ``g`` once and hands them to its steps: a
# lookup through Flask's context proxies costs about as much as a small function call, and
# the steps made some thirty of them a request.


def before_request() -> Response | None:
    current = request._get_current_object()
    current.environ[CLOCK] = time.perf_counter()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    refused = security.refuse_unread_body(current, app)
    if refused is not None:
        return refused
    state = g._get_current_object()
    answered = api.before_api_request(current, app, state)
    if answered is not None:
        return answered
    feed.note_index(current, app, state)
    return None


def after_request(response: Response) -> Response:
    current = request._get_current_object()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = g._get_current_object()
    response = speedups.settle_writes(response, current, app)
    api.add_allow_header(response, current)
    feed.add_index_header(response, current, app, state)
    security.add_security_headers(response, current)
    web.add_content_security_policy(response, current)
    started = current.environ.get(CLOCK)
    seconds = time.perf_counter() - started if started is not None else None
    metrics.count_response(response, seconds, current, app)
    access_log.log_request(response, seconds, current, state)
    return response


def teardown_request(exc: BaseException | None = None) -> None:
    speedups.end_request(exc)
