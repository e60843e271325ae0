"""The change feed (extensions): ``X-Settings-Index``, a long-poll and Server-Sent Events.

* Every answer under ``/api/settings/`` to a signed-in caller carries ``X-Settings-Index: N``,
  the store's newest change index when the request read it (a write's answer: before it
  wrote). Fetched in the request's read-ahead batch (:mod:`settings_server.speedups`), so it
  costs no round trip of its own.
* ``GET /api/settings/changes/?since=N&wait=S``: the changes after ``N`` the caller may see
  (as for history), oldest first, at once if there are any, else as soon as one is made or
  after ``S`` seconds (plus up to 1/16 of jitter): ``{"index", "complete", "changes"}``.
* ``GET /api/settings/events/``: the same changes as a ``text/event-stream``, resumed from
  ``Last-Event-ID`` or ``?since=``.

The answer's ``index`` is read before the changes are, and only changes up to it are sent:
every change up to ``index`` that the caller may see has been delivered, so ``since=index``
next time neither loses nor repeats one. Waiting happens in :mod:`settings_server.feed`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Request, Response, current_app, request, stream_with_context
from flask.views import MethodView
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from backends import CHANGES, COUNTERS, StorageError

from .. import auth, speedups
from ..feed import ChangeFeed, Client
from ..history import History, served
from ..rendering import compact, raw_json_response
from ..service import KINDS
from . import schemas
from .drf import Blueprint

LOGGER = logging.getLogger("settings_server.feed")
blp = Blueprint(
    "feed", __name__, url_prefix="/api/settings", description="Change feed (extension)"
)

INDEX_HEADER = "X-Settings-Index"
INDEXED_PATHS = "/api/settings/"
DEFAULT_WAIT = 60.0  # seconds
MAX_WAIT = 300.0
JITTER = 1 / 16  # of the wait, at most, added at random (as Consul does)
MAX_CHANGES = 500  # in one answer; the rest follow from ``since=index``
EVENT_STREAM = "text/event-stream"
RETRY_MS = 1000  # what an event source waits before it reconnects


def init_app(app: Flask) -> None:
    """The feed of this app; :func:`note_index` (after authentication) and
    :func:`add_index_header` are steps of :mod:`settings_server.pipeline`."""
    app.extensions["settings_feed"] = ChangeFeed(app.extensions["settings_store"])
    speedups.also_read(app, planned_reads)


def feed() -> ChangeFeed:
    return current_app.extensions["settings_feed"]


def history(app: Flask | None = None) -> History:
    return (app or current_app).extensions["settings_history"]


def _indexed(current: Request, state: Any) -> bool:
    """Whether the answer carries ``X-Settings-Index``: a signed-in caller's settings request
    only (the index is nobody else's business)."""
    return current.path.startswith(INDEXED_PATHS) and auth.current_user(state) is not None


def _noted_by_the_view(current: Request) -> bool:
    """Whether the request is a write of one setting (PUT or PATCH of a detail, the only
    writes naming a setting in their path), whose view notes the index its commit was made
    on (:func:`note_written`): reading the index first would cost a round trip whenever any
    other process had written, as the index moves with every write."""
    return current.method in ("PUT", "PATCH") and bool(current.view_args)


def planned_reads(current: Request) -> dict[str, list[str]]:
    """What :func:`note_index` reads, for the request's read-ahead batch."""
    indexed = current.path.startswith(INDEXED_PATHS) and not _noted_by_the_view(current)
    return {COUNTERS: [CHANGES]} if indexed else {}


def note_index(current: Request, app: Flask, state: Any) -> None:
    """Remember the change index for ``X-Settings-Index`` in ``state`` (the request's
    ``flask.g``), unless the view will (see :func:`_noted_by_the_view`)."""
    if not _noted_by_the_view(current) and _indexed(current, state):
        state.settings_index = history(app).index()


def note_written(state: Any, made_on: int | None) -> None:
    """A setting write's view: the change index its write was made on, when the store's
    answer tells it (else the index is read as the answer leaves)."""
    if made_on is not None:
        state.settings_index = made_on


def add_index_header(response: Response, current: Request, app: Flask, state: Any) -> Response:
    index = state.get("settings_index")
    if index is None and _noted_by_the_view(current) and _indexed(current, state):
        with contextlib.suppress(StorageError):  # the answer goes out without it
            index = history(app).index()
    if index is not None and INDEX_HEADER not in response.headers:
        response.headers.add(INDEX_HEADER, str(index))  # (``set`` would look for it again)
    return response


# -- arguments -----------------------------------------------------------------------------

INTEGER = "A valid integer is required."
REQUIRED = "This field is required."


class Seconds(fields.Float):
    """Seconds as a number, or Consul's ``"30s"``/``"5m"``."""

    _FORM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*$")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        match = self._FORM.match(str(value))
        if match is None:
            raise ValidationError("A valid number of seconds is required (30, 30s or 5m).")
        seconds = float(match[1])
        return seconds * 60 if match[2] == "m" else seconds


def _index_field(**options: Any) -> fields.Integer:
    return fields.Integer(
        strict=False,
        validate=validate.Range(min=0, error="Ensure this value is greater than or equal to 0."),
        error_messages={"invalid": INTEGER, "required": REQUIRED},
        **options,
    )


class _Filters(Schema):
    """Which changes: as the history's filters."""

    class Meta:
        unknown = EXCLUDE

    kind = fields.String(
        load_default=None,
        validate=validate.OneOf(list(KINDS), error='"{input}" is not a valid choice.'),
        metadata={"description": "Only changes of this kind of setting."},
    )
    key = fields.String(
        load_default=None, metadata={"description": "Only changes of this key (any case)."}
    )


class ChangesQuery(_Filters):
    """``/api/settings/changes/``: from which index, how long to wait, which changes."""

    since = _index_field(required=True, metadata={
        "description": "The index the caller has seen everything up to: the `index` of the "
        "previous answer, or `X-Settings-Index` of any settings answer."
    })
    wait = Seconds(
        load_default=DEFAULT_WAIT,
        validate=validate.Range(
            min=0, max=MAX_WAIT, error=f"Ensure this value is between 0 and {MAX_WAIT:g} seconds."
        ),
        metadata={"description": f"Seconds to wait for a change (default {DEFAULT_WAIT:g}, "
                  f"at most {MAX_WAIT:g}; `30s` and `5m` too)."},
    )


class EventsQuery(_Filters):
    """``/api/settings/events/``: where to start, which changes."""

    since = _index_field(load_default=None, metadata={
        "description": "Start after this index (without it and without `Last-Event-ID`: "
        "only changes from now on)."
    })


class EventsHeaders(Schema):
    class Meta:
        unknown = EXCLUDE

    last_event_id = _index_field(load_default=None, data_key="Last-Event-ID", metadata={
        "description": "Resume after this event (sent by an event source that reconnects)."
    })


# -- the document --------------------------------------------------------------------------

CHANGES_SCHEMA = {
    "type": "object",
    "required": ["index", "complete", "changes"],
    "properties": {
        "index": {"type": "integer", "description": "Pass as `since` next time"},
        "complete": {
            "type": "boolean",
            "description": "false: retention dropped changes after `since`; re-read the lists",
        },
        "changes": {"type": "array", "items": schemas.ref("HistoryEntry")},
    },
}


def register(api: Any) -> None:
    api.spec.components.schema("Changes", CHANGES_SCHEMA)
    api.register_blueprint(blp)


def _errors() -> dict[str, Any]:
    return {"400": schemas.error("Invalid argument"), **schemas.AUTH_ERRORS}


# -- views ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _watching(form: str) -> Iterator[None]:
    """Count a waiting client in ``settings_server_feed_watchers`` while it waits."""
    gauge = current_app.extensions["settings_metrics"].feed_watchers.labels(form)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def _signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 for anonymous callers before any argument is read (as the API answers)."""

    @functools.wraps(view)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        return view(self, *args, viewer=auth.require_user(), **kwargs)

    return checked


def _changes_after(
    since: int, viewer: Any, kind: str | None, key: str | None, index: int | None = None
) -> tuple[int, list[dict[str, Any]], bool]:
    """``(index, changes, complete)``: the visible changes after ``since`` up to ``index``
    (read first, unless the caller has it from the feed), at most :data:`MAX_CHANGES`: then
    ``index`` is the last one's. Waiters asking the same share one read (see
    :meth:`~settings_server.feed.ChangeFeed.answer`)."""
    if index is None:
        index = history().index()

    def read() -> tuple[list[dict[str, Any]], bool]:
        changes, complete = history().after(since, viewer, kind=kind, key=key)
        return [change for change in changes if change["id"] <= index], complete

    question = (since, viewer.id, viewer.is_superuser, kind, key and key.upper())
    changes, complete = feed().answer(index, question, read)
    if len(changes) > MAX_CHANGES:
        changes = changes[:MAX_CHANGES]
        index = changes[-1]["id"]
    return index, changes, complete and since <= index


@blp.route("/changes/")
class Changes(MethodView):
    """Changes after an index, waiting for one if there is none yet (long-poll)."""

    @_signed_in
    @blp.arguments(ChangesQuery, location="query")
    @blp.doc(responses={
        "200": {
            "description": "The changes after `since` (none if the wait ended first)",
            "headers": schemas.INDEX,
            "content": {"application/json": {"schema": schemas.ref("Changes")}},
        },
        **_errors(),
    })
    def get(self, query: dict[str, Any], viewer: Any) -> Response:
        """Changes after `since` the caller may see, oldest first; waits up to `wait` seconds
        for one when there is none."""
        speedups.forget_reads()  # what a wait is for is read fresh
        wait = query["wait"] * (1 + random.uniform(0, JITTER))
        deadline = time.monotonic() + wait
        client = Client(request.environ)
        since, kind, key = query["since"], query["kind"], query["key"]
        index, changes, complete = _changes_after(since, viewer, kind, key)
        with _watching("long-poll"):
            while not changes and complete:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or feed().ended or client.gone():
                    break
                since = index  # nothing the caller may see up to here
                heard = feed().wait(index, remaining, client)
                index, changes, complete = _changes_after(
                    since, viewer, kind, key, max(heard, index)
                )
        response = raw_json_response(compact(
            {"index": index, "complete": complete, "changes": [served(c) for c in changes]}
        ))
        response.headers[INDEX_HEADER] = str(index)
        response.headers["Cache-Control"] = "no-store"
        return response


@blp.route("/events/")
class Events(MethodView):
    """Changes as Server-Sent Events, as they are made."""

    media_types = (EVENT_STREAM,)  # accepted beside JSON by content negotiation

    @_signed_in
    @blp.arguments(EventsQuery, location="query")
    @blp.arguments(EventsHeaders, location="headers")
    @blp.doc(responses={
        "200": {
            "description": "An event stream: `event: change` with `id:` the change index and "
            "`data:` the change (a `HistoryEntry`) for each visible change; `event: incomplete` "
            "when retention dropped changes after the resume point; a `: heartbeat` comment "
            "every 15 seconds",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        },
        **_errors(),
    })
    def get(self, query: dict[str, Any], headers: dict[str, Any], viewer: Any) -> Response:
        """A stream of the changes the caller may see, resumed after `Last-Event-ID` or
        `since` without loss or repetition."""
        speedups.forget_reads()
        start = headers["last_event_id"]
        if start is None:
            start = query["since"]
        if start is None:
            start = history().index()
        heartbeat = float(current_app.config["SETTINGS_FEED_HEARTBEAT"])
        stream = _events(
            start, viewer, query["kind"], query["key"], heartbeat, Client(request.environ)
        )
        response = Response(stream_with_context(stream), mimetype=EVENT_STREAM)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        return response


def _events(
    last: int,
    viewer: Any,
    kind: str | None,
    key: str | None,
    heartbeat: float,
    client: Client,
) -> Iterator[str]:
    """The event stream after ``last``: ends when the client leaves, the process shuts down
    or the store fails (the client reconnects with ``Last-Event-ID``, to this server or
    another)."""
    with _watching("stream"):
        # An id without data sets the event source's resume point without an event.
        yield f"retry: {RETRY_MS}\nid: {last}\n\n"
        index = None  # read, the first time
        while True:
            try:
                index, changes, complete = _changes_after(last, viewer, kind, key, index)
            except StorageError as exc:
                LOGGER.warning("event stream ended: %s", exc)
                return
            for change in changes:
                yield f"id: {change['id']}\nevent: change\ndata: {compact(served(change))}\n\n"
            if not complete:
                yield f"id: {index}\nevent: incomplete\ndata: {compact({'index': index})}\n\n"
            last = index
            beat_at = time.monotonic() + heartbeat
            while (heard := feed().wait(index, beat_at - time.monotonic(), client)) <= index:
                if feed().ended or client.gone():
                    return
                if time.monotonic() >= beat_at:
                    yield ": heartbeat\n\n"
                    beat_at = time.monotonic() + heartbeat
            index = heard
