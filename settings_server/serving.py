"""How ``settings-server run`` serves: gunicorn's gevent worker, with its own errors as JSON.

Why gevent (gunicorn's design and deploy pages): a sync worker serves one connection at a time,
so a few clients that send their headers slowly (slowloris) hold every worker, which is why
gunicorn asks for a buffering proxy in front of sync workers. A gevent worker holds each
connection in a greenlet (a few KiB), up to ``worker_connections`` per worker, and bounds the
time a client has to send a request's headers by ``keepalive``: slow and idle clients cannot
starve the others, and hundreds of long-lived connections (the change feed's watchers) cost
memory, not workers. The app's blocking calls (sockets to Redis, sqlitedict's queue) cooperate
through gevent's monkey-patching, done by the worker before the app is imported. What does not
cooperate is CPU: a password hash is handed to a real thread (``users._off_the_loop``).
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

from .security import SECURITY_HEADERS


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
    """gunicorn's gevent worker whose own error answers are JSON."""

    def init_process(self) -> None:
        util.write_error = write_json_error  # read by gunicorn's handle_error at call time
        super().init_process()
