"""Prometheus metrics at ``/metrics``, correct across gunicorn workers.

What is counted (metric names as scraped)::

    settings_server_requests_total{route, method, status}
    settings_server_request_duration_seconds{route, method}    histogram
    settings_server_store_duration_seconds                      histogram: a request's store calls
    settings_server_store_errors_total{operation}               store calls that failed (503)
    settings_server_login_failures_total{scheme}                401 for Basic or Token credentials
    settings_server_throttled_requests_total                    429 from the login throttle

``route`` is the URL rule's template (``/api/settings/global/<global_key:key>/``), ``unrouted``
when no rule matched; ``method`` is one of the HTTP methods (``other`` for anything else). No
label ever holds a path, a query string, a user name, a credential or a setting value.

Across workers: under gunicorn the master gives every worker one directory,
``PROMETHEUS_MULTIPROC_DIR`` (see :mod:`settings_server.metrics_dir`, used by
``settings_server/gunicorn_conf.py`` before any worker starts), where prometheus_client's
multiprocess mode keeps each worker's values in its own memory-mapped files; a scrape of any
worker adds up every worker's, the dead ones' included, so counters never go backwards when a
worker is replaced. Without that variable (the Flask test client, a single process) the app
keeps its values in its own registry.

Who may read them: staff accounts through any of the API's schemes (token, Basic, session), and,
when ``SETTINGS_METRICS_TOKEN`` is set, ``Authorization: Bearer <that token>``, which is what a
Prometheus scrape configuration sends. Anonymous callers get 401, other users 403.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from flask import Flask, Request, Response, current_app, request

from backends import ChangeWatch, KeyValueStore, StorageError
from backends.readahead import ReadAheadStore

from . import auth
from .metrics_dir import MULTIPROCESS_DIR

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
STORE_OPERATIONS = (
    "get", "get_many", "get_all", "get_each", "set", "set_many", "delete", "delete_many", "compare_and_set",
    "commit", "incr", "namespaces", "ping",
)  # fmt: skip
CREDENTIAL_SCHEMES = {"basic": "basic", "token": "token"}


class Metrics:
    """The app's metrics (one per app: tests build many apps in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "settings_server_requests",
            "HTTP requests answered, by route template, method and status",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "settings_server_request_duration_seconds",
            "Time from the request's first hook to its response, by route template and method",
            ("route", "method"),
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "settings_server_store_duration_seconds",
            "Time a request spent in calls to the store (all of its calls together), for the "
            "requests that called it",
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "settings_server_store_errors",
            "Store calls that failed (the request answers 503), by operation",
            ("operation",),
            registry=self.registry,
        )
        self.login_failures = Counter(
            "settings_server_login_failures",
            "Requests refused with 401 for wrong Basic (username/password) or Token credentials",
            ("scheme",),
            registry=self.registry,
        )
        self.throttled = Counter(
            "settings_server_throttled_requests",
            "Login attempts refused with 429 by the login throttle",
            registry=self.registry,
        )
        self.feed_watchers = Gauge(
            "settings_server_feed_watchers",
            "Clients waiting on the change feed now, by form (long-poll, stream)",
            ("form",),
            multiprocess_mode="livesum",  # the live workers' waiters added up
            registry=self.registry,
        )
        # Bound label children by (route, method, status): labels() costs a lock and a lookup.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.timed_store: TimedStore | None = None  # the app's store, timed (init_app)

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, store_seconds: float
    ) -> None:
        """Count one answered request (``store_seconds``: its time in store calls, 0 if none).

        Each observation is a write to a memory-mapped file in multiprocess mode (a few µs),
        which is why the store's time is observed once a request, not once a call."""
        if store_seconds:
            self.store_seconds.observe(store_seconds)
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """Every worker's values (multiprocess mode) or this app's, in the format ``accept``
        asks for (Prometheus text by default, OpenMetrics on request)."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        registry = self.registry
        if os.environ.get(MULTIPROCESS_DIR):
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        encode, content_type = choose_encoder(accept)
        return encode(registry), content_type


def init_app(app: Flask) -> None:
    """Count ``app``'s requests (:func:`count_response`, a step of :mod:`.pipeline`) and store
    calls, and serve ``/metrics``."""
    metrics = Metrics()
    app.extensions["settings_metrics"] = metrics
    store: ReadAheadStore = app.extensions["settings_store"]  # as create_app builds it
    metrics.timed_store = store.store = TimedStore(store.store, metrics)  # what reaches the backend
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


def count_response(
    response: Response, seconds: float | None, current: Request, app: Flask
) -> None:
    """Count the current request, answered with ``response`` ``seconds`` after it began."""
    metrics: Metrics = app.extensions["settings_metrics"]
    rule = current.url_rule
    method = current.method
    status = response.status_code
    metrics.observe_request(
        rule.rule if rule is not None else "unrouted",
        method if method in METHODS else "other",
        status,
        seconds or 0.0,
        metrics.timed_store.take_spent(),
    )
    if status == 401:
        keyword = current.headers.get("Authorization", "").strip().partition(" ")[0]
        scheme = CREDENTIAL_SCHEMES.get(keyword.lower())
        if scheme is not None:
            metrics.login_failures.labels(scheme).inc()
    elif status == 429:
        metrics.throttled.inc()


def metrics_view() -> Response:
    """``GET /metrics``: the Prometheus text exposition, for staff or the metrics token."""
    if not _bearer_matches(current_app.config.get("SETTINGS_METRICS_TOKEN")):
        auth.authenticate()  # 401 for wrong credentials, throttled as anywhere else
        auth.require_staff()  # 401 anonymous, 403 not staff
    body, content_type = current_app.extensions["settings_metrics"].exposition(
        request.headers.get("Accept", "")
    )
    return Response(body, content_type=content_type)


def _bearer_matches(token: str | None) -> bool:
    if not token:
        return False
    keyword, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    return keyword.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


class TimedStore(KeyValueStore):
    """Wraps a store: the time of every call is added up for the current request (see
    :meth:`take_spent`) and every :class:`~backends.StorageError` counted in
    ``store_errors_total``; otherwise the wrapped store's own behaviour, promises included."""

    def __init__(self, store: KeyValueStore, metrics: Metrics) -> None:
        self.store = store
        self._spent: ContextVar[float] = ContextVar(f"store_spent_{id(self)}", default=0.0)
        self._errors = {op: metrics.store_errors.labels(op) for op in STORE_OPERATIONS}

    def take_spent(self) -> float:
        """Seconds spent in store calls by the current context (request) since the last
        call, which starts the count again."""
        spent = self._spent.get()
        if spent:
            self._spent.set(0.0)
        return spent

    @classmethod
    def from_url(cls, url: str) -> KeyValueStore:
        raise TypeError("TimedStore wraps a store: TimedStore(store_from_url(url), metrics)")

    def __repr__(self) -> str:
        return f"TimedStore({self.store!r})"

    def _timed(self, operation: str, call: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args)
        except StorageError:
            self._errors[operation].inc()
            raise
        finally:
            self._spent.set(self._spent.get() + time.perf_counter() - started)

    def get(self, namespace: str, key: str) -> Any | None:
        return self._timed("get", self.store.get, namespace, key)

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        return self._timed("get_many", self.store.get_many, namespace, keys)

    def get_all(self, namespace: str) -> dict[str, Any]:
        return self._timed("get_all", self.store.get_all, namespace)

    def get_each(self, requests: Mapping[str, Iterable[str] | None]) -> dict[str, dict[str, Any]]:
        return self._timed("get_each", self.store.get_each, requests)

    def set(self, namespace: str, key: str, value: Any) -> None:
        self._timed("set", self.store.set, namespace, key, value)

    def set_many(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self._timed("set_many", self.store.set_many, entries)

    def delete(self, namespace: str, key: str) -> bool:
        return self._timed("delete", self.store.delete, namespace, key)

    def delete_many(self, namespace: str, keys: Iterable[str]) -> int:
        return self._timed("delete_many", self.store.delete_many, namespace, keys)

    def commit(self, writes, *, expect=None, log=()) -> int | None:
        return self._timed(
            "commit", lambda: self.store.commit(writes, expect=expect, log=log)
        )

    def compare_and_set(self, namespace: str, key: str, expected: Any | None, value: Any) -> bool:
        return self._timed(
            "compare_and_set", self.store.compare_and_set, namespace, key, expected, value
        )

    def incr(self, counter: str, amount: int = 1) -> int:
        return self._timed("incr", self.store.incr, counter, amount)

    @property
    def atomic_across_groups(self) -> bool:  # type: ignore[override]
        return self.store.atomic_across_groups

    def namespaces(self) -> Iterator[str]:
        return self._timed("namespaces", self.store.namespaces)

    def change_watch(self) -> ChangeWatch:
        return self.store.change_watch()  # not a request's time: its waits are not timed

    def ping(self) -> None:
        self._timed("ping", self.store.ping)

    def close(self) -> None:
        self.store.close()
