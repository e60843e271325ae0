"""The change feed (issue 14): the stores' change watches, the per-process waiting room, the
``X-Settings-Index`` header, ``/api/settings/changes/`` and ``/api/settings/events/``, and
wake-ups across real servers."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import socket
import threading
import time

import pytest
import requests

from backends import CHANGES, COUNTERS, store_from_url
from settings_server.feed import ChangeFeed

# -- the stores' change watches ----------------------------------------------------------------


def _writer_for(store_url, store):
    """A second handle on the same store (another process's, as far as the store can tell),
    except for memory://, which lives in one process."""
    return store if store_url == "memory://" else store_from_url(store_url)


def _in_background(call):
    """Run ``call`` in a thread; returns a function that joins it and gives its result and
    the seconds it took."""
    result = {}

    def run():
        started = time.monotonic()
        result["value"] = call()
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()

    def join():
        thread.join(10)
        assert not thread.is_alive()
        return result["value"], result["seconds"]

    return join


def test_a_watch_on_an_empty_store_times_out_at_index_zero(store):
    watch = store.change_watch()
    try:
        started = time.monotonic()
        assert watch.next_index(0, 0.3) == 0
        assert 0.25 <= time.monotonic() - started < 2
    finally:
        watch.close()


def test_a_watch_wakes_within_a_second_of_a_logged_write_by_another_client(store_url, store):
    writer = _writer_for(store_url, store)
    watch = store.change_watch()
    try:
        assert watch.next_index(0, 0.05) == 0  # connected (subscribed) before the write
        join = _in_background(lambda: watch.next_index(0, 10))
        time.sleep(0.3)
        written_at = time.monotonic()
        index = writer.commit({"global": {"A": "1"}}, log=[("history", {"key": "A"})])
        value, _ = join()
        assert (value, index) == (1, 1)
        assert time.monotonic() - written_at < 1.0
        assert store.get(COUNTERS, CHANGES) == 1
    finally:
        watch.close()
        if writer is not store:
            writer.close()


def test_a_watch_answers_at_once_when_the_index_is_already_above(store):
    store.commit({}, log=[("history", {"n": 1}), ("history", {"n": 2})])
    watch = store.change_watch()
    try:
        started = time.monotonic()
        assert watch.next_index(1, 10) == 2
        assert time.monotonic() - started < 1
    finally:
        watch.close()


def test_writes_that_log_nothing_do_not_end_a_watch_early(store_url, store):
    writer = _writer_for(store_url, store)
    watch = store.change_watch()
    try:
        join = _in_background(lambda: watch.next_index(0, 1.0))
        time.sleep(0.2)
        writer.set("global", "A", "1")
        writer.incr("other")
        value, seconds = join()
        assert value == 0 and seconds >= 0.9
    finally:
        watch.close()
        if writer is not store:
            writer.close()


def test_the_default_watch_polls_the_counter():
    """What stores without a signal of their own get (Redis Cluster, which publishes
    nothing)."""
    from backends.base import POLL_INTERVAL, PollingChangeWatch

    store = store_from_url("memory://")
    watch = PollingChangeWatch(store)
    assert watch.next_index(0, 0.1) == 0
    join = _in_background(lambda: watch.next_index(0, 10))
    time.sleep(0.3)
    written_at = time.monotonic()
    store.commit({}, log=[("history", {"n": 1})])
    assert join()[0] == 1
    assert time.monotonic() - written_at < POLL_INTERVAL + 0.3


# -- the per-process waiting room --------------------------------------------------------------


def test_every_waiter_of_a_process_wakes_on_one_change():
    store = store_from_url("memory://")
    feed = ChangeFeed(store)
    try:
        joins = [_in_background(lambda: feed.wait(0, 10)) for _ in range(20)]
        time.sleep(0.3)
        store.commit({}, log=[("history", {"n": 1})])
        results = [join() for join in joins]
        assert {value for value, _ in results} == {1}
        assert max(seconds for _, seconds in results) < 1.3
    finally:
        feed.end()


def test_a_wait_times_out_with_the_index_it_knows():
    store = store_from_url("memory://")
    store.commit({}, log=[("history", {"n": 1})])
    feed = ChangeFeed(store)
    try:
        feed.wait(0, 5)  # learns index 1
        started = time.monotonic()
        assert feed.wait(1, 0.3) == 1
        assert 0.25 <= time.monotonic() - started < 1.5
    finally:
        feed.end()


def test_ending_the_feed_releases_its_waiters_at_once():
    feed = ChangeFeed(store_from_url("memory://"))
    joins = [_in_background(lambda: feed.wait(0, 30)) for _ in range(5)]
    time.sleep(0.2)
    feed.end()
    assert all(seconds < 1 for _, seconds in (join() for join in joins))


class _Client:
    """A client that hangs up when told; ``notified`` tells it how it may wake the wait
    (as the gevent worker's client does), else the wait looks now and then."""

    def __init__(self, notified):
        self.left = threading.Event()
        self.notified = notified
        self.wake = None

    def gone(self):
        return self.left.is_set()

    def notify(self, wake):
        if not self.notified:
            return None
        self.wake = wake
        return lambda: None

    def hang_up(self):
        self.left.set()
        if self.wake is not None:
            self.wake.set()


@pytest.mark.parametrize(("notified", "within"), [(True, 0.3), (False, 1.3)])
def test_a_client_that_hangs_up_stops_waiting(notified, within):
    feed = ChangeFeed(store_from_url("memory://"))
    client = _Client(notified)
    try:
        join = _in_background(lambda: feed.wait(0, 30, client))
        time.sleep(0.2)
        client.hang_up()
        _, seconds = join()
        assert 0.2 <= seconds < 0.2 + within
    finally:
        feed.end()


# -- the API (Flask test client, memory://) ----------------------------------------------------

INSTANCE = "/api/settings/global/INVENTREE_INSTANCE/"


@pytest.fixture
def feed_app(app):
    yield app
    app.extensions["settings_feed"].end()


@pytest.fixture
def feed_client(feed_app):
    return feed_app.test_client()


def change(app, key, value, user=None):
    """Write ``key`` (global, or ``user``'s user setting) as the API does, which logs the
    change; the store's change index afterwards."""
    from settings_server.service import GLOBAL, USER

    service = app.extensions["settings_service"]
    if user is None:
        service.update(GLOBAL, key, value)
    else:
        service.update(USER, key, value, user.id, actor=user)
    return app.extensions["settings_history"].index()


def test_settings_answers_carry_the_change_index(feed_app, feed_client, alice, auth_headers):
    headers = auth_headers(alice)
    assert feed_client.get("/api/settings/global/", headers=headers).headers["X-Settings-Index"] == "0"
    change(feed_app, "INVENTREE_INSTANCE", "one")
    change(feed_app, "INVENTREE_INSTANCE", "two")
    for path in ("/api/settings/global/", "/api/settings/global/INVENTREE_INSTANCE/",
                 "/api/settings/user/", "/api/settings/notification/?limit=2"):
        response = feed_client.get(path, headers=headers)
        assert response.status_code == 200
        assert response.headers["X-Settings-Index"] == "2"


def test_the_change_index_is_not_shown_to_anonymous_callers(feed_client):
    response = feed_client.get("/api/settings/global/")
    assert response.status_code == 401
    assert "X-Settings-Index" not in response.headers


def test_the_change_index_costs_no_read_of_its_own(feed_app, feed_client, alice, auth_headers):
    """It comes in the request's read-ahead batch: the backend sees one read for a detail GET,
    as before."""
    headers = auth_headers(alice)
    backend = feed_app.extensions["settings_store"].store  # what reaches past the read-ahead
    feed_client.get("/api/settings/global/INVENTREE_INSTANCE/", headers=headers)  # warm
    calls = []
    for name in ("get", "get_many", "get_all", "get_each"):
        original = getattr(backend, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        setattr(backend, name, counted)
    response = feed_client.get("/api/settings/global/INVENTREE_INSTANCE/", headers=headers)
    assert response.status_code == 200 and "X-Settings-Index" in response.headers
    assert calls == ["get_each"]


def test_changes_after_an_index_come_at_once_oldest_first(feed_app, feed_client, alice, auth_headers):
    for value in ("a", "b", "c"):
        change(feed_app, "INVENTREE_INSTANCE", value)
    started = time.monotonic()
    response = feed_client.get("/api/settings/changes/?since=1", headers=auth_headers(alice))
    assert time.monotonic() - started < 1
    assert response.status_code == 200
    body = response.get_json()
    assert body["index"] == 3 and body["complete"] is True
    assert [(c["id"], c["new"]) for c in body["changes"]] == [(2, "b"), (3, "c")]
    assert response.headers["X-Settings-Index"] == "3"


def test_a_long_poll_times_out_with_the_current_index(feed_app, feed_client, alice, auth_headers):
    change(feed_app, "INVENTREE_INSTANCE", "a")
    started = time.monotonic()
    response = feed_client.get("/api/settings/changes/?since=1&wait=0.5", headers=auth_headers(alice))
    assert 0.5 <= time.monotonic() - started < 2
    assert response.get_json() == {"index": 1, "complete": True, "changes": []}


def test_a_long_poll_wakes_within_a_second_of_a_change(feed_app, feed_client, alice, auth_headers):
    headers = auth_headers(alice)
    join = _in_background(
        lambda: feed_client.get("/api/settings/changes/?since=0&wait=10", headers=headers)
    )
    time.sleep(0.5)
    changed_at = time.monotonic()
    change(feed_app, "INVENTREE_INSTANCE", "new")
    response, _ = join()
    assert time.monotonic() - changed_at < 1
    body = response.get_json()
    assert body["index"] == 1 and [c["new"] for c in body["changes"]] == ["new"]


def test_waiters_of_one_user_share_one_read_per_change(feed_app, feed_client, alice, auth_headers):
    history = feed_app.extensions["settings_history"]
    original, reads = history.after, []

    def after(*args, **kwargs):
        reads.append(args[0])
        return original(*args, **kwargs)

    history.after = after
    try:
        headers = auth_headers(alice)
        joins = [
            _in_background(
                lambda: feed_client.get("/api/settings/changes/?since=0&wait=10", headers=headers)
            )
            for _ in range(10)
        ]
        time.sleep(0.5)
        change(feed_app, "INVENTREE_INSTANCE", "new")
        bodies = [response.get_json() for (response, _) in (join() for join in joins)]
    finally:
        del history.after
    assert all([c["new"] for c in body["changes"]] == ["new"] for body in bodies)
    assert reads == [0, 0]  # once while nothing had changed, once after the change


def test_nobody_sees_another_users_changes(feed_app, feed_client, alice, bob, auth_headers):
    change(feed_app, "LAST_USED_PRINTING_MACHINES", "alice's", user=alice)
    change(feed_app, "INVENTREE_INSTANCE", "everybody's")
    change(feed_app, "LAST_USED_PRINTING_MACHINES", "bob's", user=bob)
    seen = {
        user.username: [
            c["new"] for c in feed_client.get(
                "/api/settings/changes/?since=0", headers=auth_headers(user)
            ).get_json()["changes"]
        ]
        for user in (alice, bob)
    }
    assert seen == {"alice": ["alice's", "everybody's"], "bob": ["everybody's", "bob's"]}


def test_another_users_change_does_not_end_a_wait(feed_app, feed_client, alice, bob, auth_headers):
    headers = auth_headers(bob)
    join = _in_background(
        lambda: feed_client.get("/api/settings/changes/?since=0&wait=1.5", headers=headers)
    )
    time.sleep(0.3)
    change(feed_app, "LAST_USED_PRINTING_MACHINES", "alice's", user=alice)
    response, seconds = join()
    assert seconds >= 1.4
    assert response.get_json() == {"index": 1, "complete": True, "changes": []}


def test_filters_by_kind_and_key(feed_app, feed_client, alice, auth_headers):
    change(feed_app, "INVENTREE_INSTANCE", "a")
    change(feed_app, "LAST_USED_PRINTING_MACHINES", "b", user=alice)
    change(feed_app, "INVENTREE_COMPANY_NAME", "c")
    headers = auth_headers(alice)

    def news(query):
        response = feed_client.get(f"/api/settings/changes/?since=0&wait=0&{query}", headers=headers)
        return [c["new"] for c in response.get_json()["changes"]]

    assert news("kind=user") == ["b"]
    assert news("key=inventree_company_name") == ["c"]
    assert news("kind=global&key=INVENTREE_INSTANCE") == ["a"]


def test_complete_is_false_once_retention_dropped_changes_after_since():
    from settings_server import create_app
    from settings_server.auth import authenticator

    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://", "SETTINGS_HISTORY_LIMIT": "2"})
    client = app.test_client()
    user = authenticator(app).users.create("carol", "pw-carol")
    headers = {"Authorization": f"Token {authenticator(app).tokens.issue(user, 't').key}"}
    try:
        for value in ("1", "2", "3", "4", "5"):
            change(app, "INVENTREE_INSTANCE", value)

        def answer(since):
            return client.get(f"/api/settings/changes/?since={since}&wait=0", headers=headers).get_json()

        dropped = answer(0)
        assert dropped["complete"] is False and dropped["index"] == 5
        assert [c["new"] for c in dropped["changes"]] == ["4", "5"]
        kept = answer(3)
        assert kept["complete"] is True and [c["id"] for c in kept["changes"]] == [4, 5]
        events = open_events(client, headers, last_event_id=1)
        assert events.next()["id"] == "1"
        got = [events.next(), events.next(), events.next()]
        assert [(e["event"], e["id"]) for e in got] == [
            ("change", "4"), ("change", "5"), ("incomplete", "5")
        ]
        assert json.loads(got[2]["data"]) == {"index": 5}
    finally:
        app.extensions["settings_feed"].end()


def test_a_write_through_the_api_wakes_a_long_poll_with_who_made_it(
    feed_client, make_user, auth_headers
):
    staff = make_user("root", staff=True)
    headers = auth_headers(staff)
    index = int(feed_client.get(INSTANCE, headers=headers).headers["X-Settings-Index"])
    join = _in_background(
        lambda: feed_client.get(f"/api/settings/changes/?since={index}&wait=10", headers=headers)
    )
    time.sleep(0.3)
    written = feed_client.patch(INSTANCE, json={"value": "Patched"}, headers=headers)
    assert written.status_code == 200
    assert written.headers["X-Settings-Index"] == str(index)  # read before it wrote
    response, seconds = join()
    (entry,) = response.get_json()["changes"]
    assert entry["id"] == index + 1 and seconds < 1.5
    assert (entry["key"], entry["new"], entry["actor_name"], entry["source"]) == (
        "INVENTREE_INSTANCE", "Patched", "root", "api"
    )
    assert feed_client.get(INSTANCE, headers=headers).headers["X-Settings-Index"] == str(index + 1)


@pytest.mark.parametrize("if_match", [None, "*"], ids=["unchecked", "checked"])
def test_every_write_answer_carries_the_index_it_was_made_on(
    feed_client, make_user, auth_headers, if_match
):
    """A write that changes a value answers the index just before its own entry; one that
    changes nothing, or is refused, answers the index as it stands."""
    headers = auth_headers(make_user("root", staff=True))
    if if_match is not None:
        headers["If-Match"] = if_match
    feed_client.patch(INSTANCE, json={"value": "A"}, headers=headers)
    index = int(feed_client.get(INSTANCE, headers=headers).headers["X-Settings-Index"])
    answers = [
        feed_client.patch(INSTANCE, json={"value": "B"}, headers=headers),  # index + 1
        feed_client.put(INSTANCE, json={"value": "B"}, headers=headers),  # unchanged
        feed_client.patch(
            INSTANCE, json={"value": "D"}, headers={**headers, "If-Match": '"stale"'}
        ),  # refused: 412
        feed_client.patch(
            "/api/settings/bulk/global/", json={"INVENTREE_INSTANCE": "C"}, headers=headers
        ),  # index + 2
    ]
    assert [a.status_code for a in answers] == [200, 200, 412, 200]
    assert [a.headers["X-Settings-Index"] for a in answers] == [
        str(index), str(index + 1), str(index + 1), str(index + 1)
    ]  # fmt: skip


def test_a_client_ahead_of_the_store_is_told_to_start_again(feed_client, alice, auth_headers):
    body = feed_client.get("/api/settings/changes/?since=50&wait=10", headers=auth_headers(alice))
    assert body.get_json() == {"index": 0, "complete": False, "changes": []}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "since"),
        ("since=", "since"),
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("since=1.5", "since"),
        ("since=0&wait=301", "wait"),
        ("since=0&wait=-1", "wait"),
        ("since=0&wait=soon", "wait"),
        ("since=0&wait=nan", "wait"),
        ("since=0&kind=other", "kind"),
    ],
)
def test_bad_arguments_are_400_naming_the_field(feed_client, alice, auth_headers, query, field):
    response = feed_client.get(f"/api/settings/changes/?{query}", headers=auth_headers(alice))
    assert response.status_code == 400
    body = response.get_json()
    assert list(body) == [field] and isinstance(body[field], list) and body[field][0]


def test_wait_takes_consuls_units(feed_client, alice, auth_headers):
    started = time.monotonic()
    response = feed_client.get("/api/settings/changes/?since=0&wait=0s", headers=auth_headers(alice))
    assert response.status_code == 200 and time.monotonic() - started < 1
    assert feed_client.get(
        "/api/settings/changes/?since=0&wait=6m", headers=auth_headers(alice)
    ).get_json() == {"wait": ["Ensure this value is between 0 and 300 seconds."]}


@pytest.mark.parametrize("path", ["/api/settings/changes/?since=0", "/api/settings/events/"])
def test_anonymous_and_bad_credentials_are_401(feed_client, path):
    anonymous = feed_client.get(path)
    assert anonymous.status_code == 401
    assert anonymous.get_json() == {"detail": "Authentication credentials were not provided."}
    bad = feed_client.get(path, headers={"Authorization": "Token inv-nope"})
    assert bad.status_code == 401 and "detail" in bad.get_json()


def test_anonymous_callers_are_401_before_their_arguments_are_checked(feed_client):
    assert feed_client.get("/api/settings/changes/?since=abc").status_code == 401


def test_the_feed_is_in_the_openapi_document(feed_client):
    document = feed_client.get("/api/schema/").get_json()
    changes = document["paths"]["/api/settings/changes/"]["get"]
    assert {p["name"] for p in changes["parameters"]} >= {"since", "wait", "kind", "key"}
    assert "text/event-stream" in document["paths"]["/api/settings/events/"]["get"]["responses"]["200"]["content"]
    assert "Changes" in document["components"]["schemas"]
    detail = document["paths"]["/api/settings/global/{key}/"]["get"]["responses"]["200"]
    assert "X-Settings-Index" in detail["headers"]


# -- events through the test client ------------------------------------------------------------


class EventReader:
    """Reads a streamed ``text/event-stream`` answer event by event, in one thread of its own
    (the stream's request context lives there)."""

    def __init__(self, request):
        self._blocks = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(request,), daemon=True)
        self._thread.start()
        self.response = self._blocks.get(timeout=5)

    def _pump(self, request):
        self.response = request()
        self._blocks.put(self.response)
        buffer = ""
        try:
            for chunk in self.response.response:
                buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    self._blocks.put(_fields(block))
                if self._stop.is_set():
                    break
        finally:
            self.response.close()
            self._blocks.put(None)  # the stream ended

    def next(self, timeout=5.0):
        """The next event or comment as a dict of its fields (``None``: the stream ended)."""
        return self._blocks.get(timeout=timeout)

    def close(self):
        """Stop reading at the next block (a heartbeat at the latest)."""
        self._stop.set()


def _fields(block):
    fields = {}
    for line in block.split("\n"):
        name, _, value = line.partition(":")
        fields[name or "comment"] = value.strip()
    return fields


def open_events(client, headers, query="", last_event_id=None):
    if last_event_id is not None:
        headers = {**headers, "Last-Event-ID": str(last_event_id)}
    reader = EventReader(
        lambda: client.get(f"/api/settings/events/{query}", headers=headers, buffered=False)
    )
    assert reader.response.status_code == 200
    assert reader.response.mimetype == "text/event-stream"
    return reader


def test_events_resume_after_last_event_id_without_loss_or_repeat(
    feed_app, feed_client, alice, auth_headers
):
    headers = {**auth_headers(alice), "Accept": "text/event-stream"}
    for value in ("1", "2", "3"):
        change(feed_app, "INVENTREE_INSTANCE", value)
    events = open_events(feed_client, headers, last_event_id=1)
    assert events.next() == {"retry": "1000", "id": "1"}
    got = [events.next(), events.next()]
    assert [(e["id"], e["event"]) for e in got] == [("2", "change"), ("3", "change")]
    assert json.loads(got[0]["data"])["new"] == "2"
    change(feed_app, "INVENTREE_INSTANCE", "4")
    assert events.next()["id"] == "4"
    events.close()

    change(feed_app, "INVENTREE_INSTANCE", "5")  # while disconnected
    events = open_events(feed_client, headers, last_event_id=4)
    assert events.next()["id"] == "4"
    fifth = events.next()
    assert fifth["id"] == "5" and json.loads(fifth["data"])["new"] == "5"
    change(feed_app, "INVENTREE_INSTANCE", "6")
    assert events.next()["id"] == "6"
    events.close()


def test_events_start_from_now_or_from_since(feed_app, feed_client, alice, auth_headers):
    headers = auth_headers(alice)
    change(feed_app, "INVENTREE_INSTANCE", "old")
    events = open_events(feed_client, headers)
    assert events.next()["id"] == "1"
    change(feed_app, "INVENTREE_INSTANCE", "new")
    assert json.loads(events.next()["data"])["new"] == "new"
    events.close()
    events = open_events(feed_client, headers, "?since=0")
    events.next()
    assert json.loads(events.next()["data"])["new"] == "old"
    events.close()


def test_events_send_a_heartbeat(feed_app, feed_client, alice, auth_headers):
    feed_app.config["SETTINGS_FEED_HEARTBEAT"] = "0.3"
    events = open_events(feed_client, auth_headers(alice))
    events.next()
    started = time.monotonic()
    assert events.next() == {"comment": "heartbeat"}
    assert 0.2 < time.monotonic() - started < 1.5
    events.close()


def test_events_show_only_what_the_caller_may_see(feed_app, feed_client, alice, bob, auth_headers):
    events = open_events(feed_client, auth_headers(bob))
    events.next()
    change(feed_app, "LAST_USED_PRINTING_MACHINES", "alice's", user=alice)
    change(feed_app, "INVENTREE_INSTANCE", "everybody's")
    shown = events.next()
    assert shown["id"] == "2" and json.loads(shown["data"])["new"] == "everybody's"
    events.close()


def test_events_bad_last_event_id_is_400(feed_client, alice, auth_headers):
    response = feed_client.get(
        "/api/settings/events/", headers={**auth_headers(alice), "Last-Event-ID": "x"}
    )
    assert response.status_code == 400
    assert list(response.get_json()) == ["Last-Event-ID"]


# -- real servers ------------------------------------------------------------------------------

WAKE_LIMIT = 1.0  # seconds from a write's answer to every watcher's news of it


class Accounts:
    """A staff user and a token made directly in the servers' store, from the test process."""

    def __init__(self, backend):
        from settings_server import create_app
        from settings_server.auth import authenticator

        self.app = create_app({"TESTING": True, "SETTINGS_BACKEND": backend})
        users = authenticator(self.app)
        self.staff = users.users.create("staff", "pw-staff", is_staff=True)
        self.headers = {"Authorization": f"Token {users.tokens.issue(self.staff, 'feed').key}"}

    def close(self):
        self.app.extensions["settings_store"].close()


class StreamWatcher:
    """An event stream read by a thread of its own: (arrival time, event) pairs."""

    def __init__(self, url, headers, last_event_id):
        self.events = []
        self.ended = threading.Event()
        self.response = requests.get(
            f"{url}/api/settings/events/",
            headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": str(last_event_id)},
            stream=True, timeout=30,
        )
        assert self.response.status_code == 200
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        block = []
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line:
                    block.append(line)
                    continue
                fields = _fields("\n".join(block))
                block = []
                if fields.get("event") == "change":
                    self.events.append((time.monotonic(), fields))
        except (requests.RequestException, AttributeError):
            pass
        finally:
            self.ended.set()

    def changes(self):
        return [(at, int(f["id"]), json.loads(f["data"])) for at, f in self.events]

    def close(self):
        """Hang up now (closing the response alone waits for the reader's next bytes)."""
        sock = getattr(self.response.raw.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
        self.ended.wait(5)


def _long_poll(url, headers, since, wait=20):
    def call():
        response = requests.get(
            f"{url}/api/settings/changes/", params={"since": since, "wait": wait},
            headers=headers, timeout=wait + 10,
        )
        return time.monotonic(), response

    return _in_background(call)


def check_wake_up(writer_url, watcher_url, headers, polls=4, streams=2):
    """Long-polls and event streams on ``watcher_url`` all learn of a write through
    ``writer_url`` within :data:`WAKE_LIMIT` seconds; the pids that answered the polls."""
    since = int(requests.get(watcher_url + INSTANCE, headers=headers, timeout=10)
                .headers["X-Settings-Index"])
    joins = [_long_poll(watcher_url, headers, since) for _ in range(polls)]
    watchers = [StreamWatcher(watcher_url, headers, since) for _ in range(streams)]
    try:
        time.sleep(1.0)  # every watcher is waiting
        value = f"feed-{time.monotonic_ns()}"
        written = requests.patch(writer_url + INSTANCE, json={"value": value}, headers=headers,
                                 timeout=10)
        written_at = time.monotonic()
        assert written.status_code == 200
        for join in joins:
            (answered_at, response), _ = join()
            body = response.json()
            assert [c["new"] for c in body["changes"]] == [value]
            assert body["index"] == body["changes"][0]["id"] > since
            assert answered_at - written_at < WAKE_LIMIT
        deadline = time.monotonic() + 5
        while any(not w.events for w in watchers) and time.monotonic() < deadline:
            time.sleep(0.02)
        for watcher in watchers:
            ((arrived_at, _id, entry),) = watcher.changes()
            assert entry["new"] == value
            assert arrived_at - written_at < WAKE_LIMIT
    finally:
        for watcher in watchers:
            watcher.close()


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("cache", ["off", "on"], ids=["no-cache", "cache"])
def test_a_write_through_one_server_wakes_the_watchers_of_another_on_one_redis(
    servers, redis_url, cache
):
    accounts = Accounts(redis_url)
    backend = f"{redis_url}&cache={cache}"
    try:
        first = servers.start(backend, "--workers", "2")
        second = servers.start(backend, "--workers", "2")
        check_wake_up(first.url, second.url, accounts.headers)
        check_wake_up(second.url, first.url, accounts.headers)
    finally:
        accounts.close()


@pytest.mark.slow
def test_a_write_through_one_worker_wakes_the_watchers_of_another_on_one_sqlite_file(
    servers, tmp_path
):
    backend = f"sqlite:///{tmp_path}/feed.db"
    accounts = Accounts(backend)
    try:
        server = servers.start(backend, "--workers", "2")
        # Which worker accepts a connection is the kernel's choice: an idle worker may take
        # them all. Every round must wake every watcher; some round must show a poll answered
        # by a worker other than the one that wrote.
        seen = 0
        for _round in range(5):
            check_wake_up(server.url, server.url, accounts.headers, polls=6)
            lines = server.request_lines()[seen:]
            seen += len(lines)
            writer = next(line["pid"] for line in lines if line["method"] == "PATCH")
            polled = {line["pid"] for line in lines if line["path"] == "/api/settings/changes/"}
            if polled - {writer}:
                break
        else:
            pytest.fail("in 5 rounds no long-poll was answered by the worker that did not write")
    finally:
        accounts.close()


@pytest.mark.slow
@pytest.mark.redis
def test_an_event_stream_resumes_on_another_server_without_loss_or_repeat(servers, redis_url):
    accounts = Accounts(redis_url)
    headers = accounts.headers
    try:
        first = servers.start(redis_url, "--workers", "1")
        second = servers.start(redis_url, "--workers", "1")
        since = int(requests.get(first.url + INSTANCE, headers=headers, timeout=10)
                    .headers["X-Settings-Index"])
        watcher = StreamWatcher(first.url, headers, since)
        time.sleep(0.5)
        requests.patch(second.url + INSTANCE, json={"value": "one"}, headers=headers, timeout=10)
        deadline = time.monotonic() + 5
        while not watcher.events and time.monotonic() < deadline:
            time.sleep(0.02)
        watcher.close()
        ((_, last_id, entry),) = watcher.changes()
        assert entry["new"] == "one"
        for value in ("two", "three"):  # while the client is away
            requests.patch(first.url + INSTANCE, json={"value": value}, headers=headers, timeout=10)
        watcher = StreamWatcher(second.url, headers, last_id)
        deadline = time.monotonic() + 5
        while len(watcher.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # nothing more comes
        watcher.close()
        assert [entry["new"] for _, _, entry in watcher.changes()] == ["two", "three"]
        assert [i for _, i, _ in watcher.changes()] == [last_id + 1, last_id + 2]
    finally:
        accounts.close()


@pytest.mark.slow
def test_sigterm_ends_streams_and_long_polls_well_within_the_graceful_timeout(servers, tmp_path):
    backend = f"sqlite:///{tmp_path}/term.db"
    accounts = Accounts(backend)
    try:
        server = servers.start(backend, "--workers", "1", SETTINGS_GRACEFUL_TIMEOUT="30")
        index = int(requests.get(server.url + INSTANCE, headers=accounts.headers, timeout=10)
                    .headers["X-Settings-Index"])
        join = _long_poll(server.url, accounts.headers, index, wait=120)
        watcher = StreamWatcher(server.url, accounts.headers, index)
        time.sleep(1.0)
        stopped_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=15)
        assert time.monotonic() - stopped_at < 5
        assert watcher.ended.wait(5)
        (_, response), _ = join()
        assert response.status_code == 200
        assert response.json() == {"index": index, "complete": True, "changes": []}
    finally:
        accounts.close()


@pytest.mark.slow
def test_a_client_that_disconnects_frees_its_connection_at_once(servers, tmp_path):
    """With room for three connections, three event streams fill the worker; closing them
    lets the next request in at once."""
    backend = f"sqlite:///{tmp_path}/slots.db"
    accounts = Accounts(backend)
    try:
        server = servers.start(backend, "--workers", "1", SETTINGS_WORKER_CONNECTIONS="3")
        watchers = [StreamWatcher(server.url, accounts.headers, 0) for _ in range(3)]
        time.sleep(0.5)
        with pytest.raises(requests.Timeout):
            requests.get(server.url + INSTANCE, headers=accounts.headers, timeout=1)
        for watcher in watchers:
            watcher.close()
        closed_at = time.monotonic()
        response = requests.get(server.url + INSTANCE, headers=accounts.headers, timeout=5)
        assert response.status_code == 200
        assert time.monotonic() - closed_at < 0.9  # the wait's own look would take 1 s
    finally:
        accounts.close()


def test_waiting_clients_are_counted_in_the_metrics(feed_app, feed_client, make_user, auth_headers):
    from prometheus_client.parser import text_string_to_metric_families

    staff = auth_headers(make_user("staff", staff=True))

    def watchers():
        text = feed_client.get("/metrics", headers=staff).get_data(as_text=True)
        return {
            sample.labels["form"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "settings_server_feed_watchers"
        }

    join = _in_background(
        lambda: feed_client.get("/api/settings/changes/?since=0&wait=1", headers=staff)
    )
    events = open_events(feed_client, staff)
    events.next()
    time.sleep(0.3)
    assert watchers() == {"long-poll": 1.0, "stream": 1.0}
    join()
    assert watchers()["long-poll"] == 0.0
    feed_app.extensions["settings_feed"].end()  # the stream ends
    assert events.next() is None
    assert watchers()["stream"] == 0.0
