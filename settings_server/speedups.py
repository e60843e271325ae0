"""The speed-up protocol of an API request, in one place: reads ahead, writes deferred.

* **Read-ahead.** Authentication reads a token and its user, the view some settings: one after
  the other, a round trip each. When the request says what they will be, they are fetched in
  one :meth:`~backends.readahead.ReadAheadStore.read_ahead` call first; the real reads are
  then answered from that batch. Each prediction (*planner*) is built from the same key
  computation as the read it predicts (:meth:`TokenStore.planned_reads` beside
  :meth:`TokenStore.authenticate`, :meth:`UserDirectory.planned_reads` beside
  :meth:`UserDirectory.get`, :meth:`SettingsService.planned_reads` beside its reads), so the
  two cannot drift apart; a read the batch does not cover goes to the store, so a wrong
  prediction costs a round trip, never a stale answer. Views declare theirs as a class method
  ``planned_reads(user_id, view_args, method)``.
* **Deferred writes.** With a store that implements :class:`backends.DefersWrites` (Redis),
  an unsafe request's writes are sent at once and their answers read while the response is
  rendered, before it leaves (503 if one failed).

:func:`init_app` wraps the store. The steps are called by :mod:`settings_server.pipeline`:
:func:`begin_request` by the API's before-request step after content negotiation and before
authentication, where DRF's order puts the first read; :func:`settle_writes` first after the
view; :func:`end_request` at teardown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, current_app, request

from backends import DefersWrites, StorageUnavailable
from backends.readahead import ReadAheadStore

from . import auth
from .errors import storage_unavailable

LOGGER = logging.getLogger("settings_server.speedups")
EXTENSION = "settings_speedups"
#: A view class's ``planned_reads(user_id, view_args, method)``: namespace -> keys (``None``:
#: all of them)
Planner = Callable[[Any, dict[str, Any], str], dict[str, Any]]


class Speedups:
    """The app's read-ahead wrapper and, if its store defers writes, that store."""

    def __init__(self, store: ReadAheadStore) -> None:
        self.store = store
        self.deferring = store.store if isinstance(store.store, DefersWrites) else None
        #: What every request may read besides authentication and its view (see
        #: :func:`also_read`).
        self.planners: list[Callable[[Request], dict[str, list[str]]]] = []
        self._view_planners: dict[str, Planner | None] = {}  # endpoint -> its view's planner

    def planner(self, app: Flask, endpoint: str) -> Planner | None:
        """The ``planned_reads`` of the view class behind ``endpoint``, if it has one."""
        try:
            return self._view_planners[endpoint]
        except KeyError:
            view_class = getattr(app.view_functions[endpoint], "view_class", None)
            planner = self._view_planners[endpoint] = getattr(view_class, "planned_reads", None)
            return planner


def init_app(app: Flask) -> None:
    """Wrap ``app.extensions["settings_store"]`` for read-ahead (call before anything takes
    the store) and register the end-of-request hooks. The settling hook is registered before
    the API's own ``after_request`` hooks, so it runs after them: the writes' answers have
    that much longer to arrive."""
    store = ReadAheadStore(app.extensions["settings_store"])
    app.extensions["settings_store"] = store
    app.extensions[EXTENSION] = Speedups(store)


def also_read(app: Flask, planner: Callable[[Request], dict[str, list[str]]]) -> None:
    """Add ``planner`` (``(request) -> {namespace: keys}``) to what every request's
    read-ahead fetches: for a hook that reads, as ``X-Settings-Index`` does."""
    app.extensions[EXTENSION].planners.append(planner)


def _speedups() -> Speedups:
    return current_app.extensions[EXTENSION]


def begin_request(current: Request, app: Flask, credentials: auth.Credentials) -> None:
    """Fetch what authentication and the view will read, in one round trip, and start
    deferring an unsafe request's writes."""
    speedups: Speedups = app.extensions[EXTENSION]
    rule = current.url_rule
    if rule is not None:
        user_id, reads = auth.planned_reads(current, app, credentials)
        planner = speedups.planner(app, rule.endpoint)
        if planner is not None:
            reads.update(planner(user_id, current.view_args or {}, current.method))
        for also in speedups.planners:
            for namespace, keys in also(current).items():
                held = reads.get(namespace, [])
                reads[namespace] = None if held is None else [*held, *keys]
        if reads:
            speedups.store.read_ahead(reads)
    if speedups.deferring is not None and current.method not in auth.SAFE_METHODS:
        speedups.deferring.defer_writes()


def settle_writes(response: Response, current: Request, app: Flask) -> Response:
    """Wait for the answers to the request's deferred writes before the response leaves:
    503 if one failed. The first after-request step, so that the others (headers, metrics,
    log) see the status the client gets."""
    deferring = app.extensions[EXTENSION].deferring
    if deferring is not None and current.method not in auth.SAFE_METHODS:
        try:
            deferring.settle()
        except StorageUnavailable as exc:
            return storage_unavailable(exc)
    return response


def forget_reads() -> None:
    """End the read-ahead batch early: a request that waits (the change feed) reads what it
    waited for from the store, not from the batch fetched when it began."""
    _speedups().store.forget()


def end_request(_exc: BaseException | None = None) -> None:
    """End the read-ahead batch; settle writes :func:`settle_writes` did not (a request that
    failed), so that the next request owes nothing."""
    speedups = _speedups()
    speedups.store.forget()
    if speedups.deferring is not None and request.method not in auth.SAFE_METHODS:
        try:
            speedups.deferring.settle()
        except StorageUnavailable:
            LOGGER.warning("a write of a failed request has no answer either", exc_info=True)
