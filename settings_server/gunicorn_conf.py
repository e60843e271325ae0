"""gunicorn configuration shipped with settings-server.

``settings-server run`` starts ``gunicorn -c python:settings_server.gunicorn_conf
settings_server.wsgi:app``; the repository's ``gunicorn.conf.py`` loads this file too, so a plain
``gunicorn wsgi:app`` started from a checkout gets the same settings and checks. Every value
comes from the environment (see :mod:`settings_server.config`); gunicorn's own command-line
options (``--bind``, ``-w``) and ``GUNICORN_CMD_ARGS`` still override it.

* ``bind``: ``SETTINGS_BIND``, default ``127.0.0.1:8000`` (local only: put a proxy in front or
  set ``0.0.0.0:8000``); several addresses separated by commas; ``unix:/path`` for a socket.
* ``workers``: ``WEB_CONCURRENCY``, default 2 x cores + 1 (at most 8), 1 for ``memory://``.
* ``worker_class``: gunicorn's gevent worker whose own errors are JSON
  (:mod:`settings_server.serving` says why gevent): up to ``SETTINGS_WORKER_CONNECTIONS``
  (1000) connections per worker; a client has ``SETTINGS_HEADER_TIMEOUT`` (5) seconds to send
  a request's headers, and an idle kept-alive connection is closed after as long. Request line
  and header limits are gunicorn's defaults, stated here because we rely on them.
* Access log: the app writes one JSON line per request to stdout
  (:mod:`settings_server.access_log`); gunicorn's own access log stays off, because it would
  repeat each request without the user and with the query string.
* Shutdown: SIGTERM lets requests in progress finish for ``SETTINGS_GRACEFUL_TIMEOUT`` seconds.
* ``memory://`` keeps its data inside one process: gunicorn refuses to start it with more than
  one worker, and ignores ``TTIN`` signals that would add one.
* Metrics: every worker keeps its values in one directory, ``PROMETHEUS_MULTIPROC_DIR`` (the
  operator's, or a private one made at start and removed at exit), so that ``/metrics`` adds
  up all of them (:mod:`settings_server.metrics_dir`).
"""

from __future__ import annotations

import os

from settings_server import __version__, metrics_dir
from settings_server.config import from_environment

MAX_DEFAULT_WORKERS = 8


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _is_memory(backend: str) -> bool:
    return backend.strip().lower().startswith("memory:")


def default_workers(backend: str) -> int:
    """Workers when ``WEB_CONCURRENCY`` is not set: 1 for ``memory://``, else 2 x cores + 1,
    at most :data:`MAX_DEFAULT_WORKERS`."""
    if _is_memory(backend):
        return 1
    return min(2 * _cores() + 1, MAX_DEFAULT_WORKERS)


def memory_refusal(backend: str, workers: int) -> str | None:
    """Why ``backend`` cannot run under ``workers`` workers, or ``None`` if it can."""
    if not _is_memory(backend) or workers <= 1:
        return None
    return (
        f"SETTINGS_BACKEND=memory:// keeps data inside one process, but {workers} workers were "
        "asked for; run with WEB_CONCURRENCY=1 (or -w 1), or use sqlite:///settings.db or "
        "redis://host:6379/0"
    )


def _storage_kind(backend: str) -> str:
    """The scheme only: the URL may hold a password."""
    return backend.partition("://")[0] or "?"


_config = from_environment()
_backend = _config["SETTINGS_BACKEND"]

wsgi_app = "settings_server.wsgi:app"
bind = [address.strip() for address in _config["SETTINGS_BIND"].split(",") if address.strip()]
workers = int(_config["WEB_CONCURRENCY"] or default_workers(_backend))
graceful_timeout = int(_config["SETTINGS_GRACEFUL_TIMEOUT"])
worker_class = "settings_server.serving.Worker"
worker_connections = int(_config["SETTINGS_WORKER_CONNECTIONS"])
keepalive = int(_config["SETTINGS_HEADER_TIMEOUT"])  # gevent: also the header read time-out
limit_request_line = 4094  # bytes; longer: 414
limit_request_fields = 100  # more: 431
limit_request_field_size = 8190  # bytes; longer: 431
loglevel = _config["SETTINGS_LOG_LEVEL"].lower()
accesslog = None
errorlog = "-"
proc_name = "settings-server"
# gunicorn >= 25's runtime control socket: one fixed path per user, which two instances on one
# host would fight over, and a way to change workers behind the operator's back. Off.
control_socket_disable = True


def on_starting(server) -> None:
    """Refuse ``memory://`` under several workers before anything is bound or forked.

    gunicorn prints a ``RuntimeError`` raised here as ``Error: ...`` and exits with status 1.
    """
    reason = memory_refusal(_backend, server.cfg.workers)
    if reason:
        raise RuntimeError(reason)
    metrics_dir.prepare()  # before any worker imports prometheus_client


def child_exit(server, worker) -> None:
    """A worker is gone: tell the metrics (its counts stay in the scrape)."""
    metrics_dir.worker_exited(worker.pid)


def on_exit(server) -> None:
    """Remove the metrics directory the master made."""
    metrics_dir.remove()


def when_ready(server) -> None:
    """Say where the server listens (stdout), once the sockets are bound."""
    addresses = ", ".join(str(listener) for listener in server.LISTENERS)
    print(
        f"settings-server {__version__} listening on {addresses} "
        f"({server.num_workers} worker(s), storage {_storage_kind(_backend)})",
        flush=True,
    )


def nworkers_changed(server, new_value: int, old_value: int | None) -> None:
    """Keep ``memory://`` at one worker when ``TTIN`` asks for more."""
    reason = memory_refusal(_backend, new_value)
    if reason and old_value is not None:  # None: the start, which on_starting checks
        server.log.error("ignoring the request for more workers: %s", reason)
        server.num_workers = 1
