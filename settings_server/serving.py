"""How ``settings-server run`` serves: gunicorn's gevent worker, with its own errors as JSON.

Why gevent (gunicorn's design and deploy pages): a sync worker serves one connection at a time,
so a few clients that send their headers slowly (slowloris) hold every worker, which is why
gunicorn asks for a buffering proxy in front of sync workers. A gevent worker holds each
connection in a greenlet (a few KiB), up to ``worker_connections`` per worker, and bounds the
time a client has to send a request's headers by ``keepalive``: slow and idle clients cannot
starve the others, and hundreds of long-lived connections (the change feed's watchers,
:mod:`settings_server.feed`) cost memory, not workers. The app's blocking calls (sockets to
Redis, sqlitedict's queue) cooperate through gevent's monkey-patching, done by the worker
before the app is imported. A request's
body is owed within ``SETTINGS_BODY_TIMEOUT`` seconds of its headers (:class:`BodyDeadline`), so
a body sent a byte at a time holds its connection no longer than a slow header does. What does not
cooperate is CPU: a password hash is handed to a real thread (``users._off_the_loop``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import gevent
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

from . import feed
from .config import from_environment
from .security import SECURITY_HEADERS, body_timeout


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's error answer (bad request line, 414, 431, ...) as DRF-shaped JSON instead of
    HTML; the connection is closed after it, as gunicorn does."""
    body = json.dumps({"detail": mesg or reason}, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status_int} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


class Worker(GeventWorker):
    """gunicorn's gevent worker whose own error answers are JSON and whose request bodies are
    owed within ``SETTINGS_BODY_TIMEOUT`` seconds."""

    def init_process(self) -> None:
        util.write_error = write_json_error  # read by gunicorn's handle_error at call time
        super().init_process()

    def handle_exit(self, sig, frame) -> None:
        """SIGTERM: stop accepting, and end the change feed's waits (long-polls answer at
        once, event streams end) so that they do not hold the worker for the whole graceful
        timeout; other requests in progress finish as before."""
        super().handle_exit(sig, frame)
        gevent.spawn(feed.end_all_waits)  # out of the signal handler, as gunicorn does

    def handle_request(self, listener_name, req, sock, addr):
        """Serve one request, then let the worker's other connections run before reading this
        connection's next one: a kept-alive client that sends its next request at once would
        otherwise be served again and again while others wait (with 4 connections on 2 workers
        a bare Flask app's 90th percentile went from ~10 ms to ~2 ms, throughput unchanged).

        Once the worker is stopping, the connection is closed after its request, even one that
        began before (an event stream): kept alive, it would hold the worker for the header
        time-out waiting for a next request that is not going to be served."""
        try:
            result = super().handle_request(listener_name, req, sock, addr)
        finally:
            gevent.sleep(0)
        if not self.alive:
            raise StopIteration("the worker is stopping")  # gunicorn's way to close it
        return result

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = BodyDeadline(self.wsgi, float(from_environment()["SETTINGS_BODY_TIMEOUT"]))


class BodyDeadline:
    """WSGI middleware: every read of a request's body must end within ``seconds`` of the
    request's start, else it raises werkzeug's ``RequestTimeout`` (408, see
    :func:`settings_server.security.body_timeout`)."""

    def __init__(self, app: Callable[..., Any], seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("CONTENT_LENGTH", "0") != "0" or environ.get("HTTP_TRANSFER_ENCODING"):
            environ["wsgi.input"] = _DeadlineStream(
                environ["wsgi.input"], time.monotonic() + self.seconds, self.seconds
            )
        return self.app(environ, start_response)


class _DeadlineStream:
    def __init__(self, stream: Any, deadline: float, seconds: float) -> None:
        self._stream = stream
        self._deadline = deadline
        self._seconds = seconds

    def _within(self, read: Callable[..., Any], *args: Any) -> Any:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise body_timeout(self._seconds)
        with gevent.Timeout(remaining, body_timeout(self._seconds)):
            return read(*args)

    def read(self, size: int = -1) -> bytes:
        return self._within(self._stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._within(self._stream.readline, size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def __iter__(self):
        return iter(self.readline, b"")
