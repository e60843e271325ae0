"""The storage contract (backends/base.py), run once against every backend.

The ``store`` fixture (conftest.py) is parametrized over memory, sqlite and redis; the Redis
cases need a server (``SETTINGS_TEST_REDIS_URL``) and are marked ``redis``.
"""

from __future__ import annotations

import inspect
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

import backends
from backends import (
    ACCEPTED_FORMS,
    COUNTERS,
    ConfigurationError,
    DefersWrites,
    KeyValueStore,
    StorageUnavailable,
    store_from_url,
)
from backends.base import CHANGES, Replaced, encode

# --- the contract ---------------------------------------------------------------------------


def test_missing_entries_read_as_absent(store):
    assert store.get("global", "missing") is None
    assert store.get_many("global", ["missing", "also-missing"]) == {}
    assert store.get_many("global", []) == {}
    assert store.get_all("empty") == {}


def test_set_then_get_and_overwrite(store):
    store.set("global", "colour", "red")
    assert store.get("global", "colour") == "red"
    store.set("global", "colour", "blue")
    assert store.get("global", "colour") == "blue"
    assert store.get_all("global") == {"colour": "blue"}


@pytest.mark.parametrize(
    "value",
    [
        0,
        -7,
        3.25,
        True,
        False,
        "",
        "grüße 設定 🙂",
        [],
        {},
        [1, "two", None, {"three": [4.5, False]}],
        {"nested": {"deeper": {"list": [1, 2, {"k": "v"}]}}, "unicode": "ключ"},
    ],
)
def test_json_values_round_trip(store, value):
    store.set("global", "value", value)
    assert store.get("global", "value") == value
    assert store.get_all("global") == {"value": value}
    assert store.get_many("global", ["value"]) == {"value": value}


def test_unicode_namespaces_and_keys(store):
    store.set("user:ü/設定", "ключ", "значение")
    assert store.get("user:ü/設定", "ключ") == "значение"
    assert store.get_all("user:ü/設定") == {"ключ": "значение"}
    assert "user:ü/設定" in set(store.namespaces())


def test_namespaces_are_isolated(store):
    # Names that share prefixes with each other, and a key that looks like a namespace.
    names = ["user:1", "user:1/settings", "user:10", "user:1/settings/x", "global"]
    for name in names:
        store.set(name, "key", name)
        store.set(name, f"only-{name}", True)
    for name in names:
        assert store.get(name, "key") == name
        assert store.get_all(name) == {"key": name, f"only-{name}": True}
        assert store.get_many(name, ["key", f"only-{names[0]}"]) == (
            {"key": name, f"only-{names[0]}": True} if name == names[0] else {"key": name}
        )
    assert store.delete("user:1", "key")
    assert store.get("user:10", "key") == "user:10"
    assert store.get("user:1/settings", "key") == "user:1/settings"


def test_get_many_returns_only_existing_keys(store):
    store.set_many({"global": {"a": 1, "b": [2], "c": {"three": 3}}})
    assert store.get_many("global", ["a", "c", "missing"]) == {"a": 1, "c": {"three": 3}}
    assert store.get_many("global", iter(["b"])) == {"b": [2]}


def test_get_each_reads_keys_and_whole_namespaces_at_once(store):
    store.set_many({"a": {"x": 1, "y": 2}, "b": {"z": [3]}, "a-b": {"x": "other"}})
    found = store.get_each({"a": ["x", "missing"], "b": None, "empty": None, "none": []})
    assert found == {"a": {"x": 1}, "b": {"z": [3]}, "empty": {}, "none": {}}
    assert store.get_each({}) == {}
    assert store.get_each({"a": None, "a-b": ["x"]}) == {"a": {"x": 1, "y": 2}, "a-b": {"x": "other"}}


def test_delete_reports_whether_the_entry_existed(store):
    store.set("global", "doomed", 1)
    assert store.delete("global", "doomed") is True
    assert store.get("global", "doomed") is None
    assert store.delete("global", "doomed") is False
    assert store.delete("never-used", "doomed") is False


def test_delete_many_reports_how_many_existed(store):
    store.set_many({"global": {"a": 1, "b": 2, "c": 3}})
    assert store.delete_many("global", ["a", "c", "missing"]) == 2
    assert store.get_all("global") == {"b": 2}
    assert store.delete_many("global", []) == 0
    assert store.delete_many("never-used", ["a"]) == 0


def test_compare_and_set(store):
    assert store.compare_and_set("global", "version", None, 1) is True  # absent -> written
    assert store.compare_and_set("global", "version", None, 2) is False  # present now
    assert store.compare_and_set("global", "version", 5, 6) is False  # wrong expectation
    assert store.get("global", "version") == 1
    assert store.compare_and_set("global", "version", 1, {"v": 2}) is True
    assert store.get("global", "version") == {"v": 2}
    assert store.compare_and_set("other", "version", {"v": 2}, 3) is False  # absent elsewhere


def test_compare_and_set_compares_canonical_json(store):
    store.set("global", "record", {"b": 1, "a": [1, {"y": 2, "x": 1}]})
    assert store.compare_and_set("global", "record", {"a": [1, {"x": 1, "y": 2}], "b": 1}, "new")
    assert store.get("global", "record") == "new"


def test_incr_counts_from_zero_and_is_readable(store):
    assert store.incr("hits") == 1
    assert store.incr("hits", 10) == 11
    assert store.incr("hits", -3) == 8
    assert store.incr("other") == 1
    assert store.get(COUNTERS, "hits") == 8
    assert store.get_all(COUNTERS) == {"hits": 8, "other": 1}


def test_set_many_writes_across_namespaces(store):
    store.set("user:1/settings", "kept", "old")
    store.set_many(
        {
            "global": {"a": 1, "b": "two"},
            "user:1/settings": {"theme": "dark", "kept": "new"},
            "empty": {},
        }
    )
    assert store.get_all("global") == {"a": 1, "b": "two"}
    assert store.get_all("user:1/settings") == {"theme": "dark", "kept": "new"}
    assert store.get_all("empty") == {}
    store.set_many({})


def test_commit_writes_and_logs_with_increasing_change_indexes(store):
    assert store.commit({"global": {"A": "1"}}, log=[("global/history", {"new": "1"})]) == 1
    index = store.commit(
        {"global": {"A": "2", "B": "x"}},
        expect={"global": {"A": "1", "C": None}},
        log=[("global/history", {"new": "2"}), ("user:3/history", {"new": "x"})],
    )
    assert index == 3
    assert store.get_all("global") == {"A": "2", "B": "x"}
    assert store.get_all("global/history") == {"000000000001": {"new": "1"}, "000000000002": {"new": "2"}}
    assert store.get_all("user:3/history") == {"000000000003": {"new": "x"}}
    assert store.get(COUNTERS, CHANGES) == 3
    assert store.commit({"global": {"A": "3"}}) == 0  # nothing logged: no index taken
    assert store.get(COUNTERS, CHANGES) == 3


@pytest.mark.parametrize(
    "expect",
    [{"global": {"A": "other"}}, {"global": {"A": None}}, {"global": {"missing": "1"}}],
    ids=["changed", "expected-absent", "expected-present"],
)
def test_commit_writes_nothing_when_an_expectation_fails(store, expect):
    store.set("global", "A", "1")
    assert store.commit(
        {"global": {"A": "2"}}, expect=expect, log=[("global/history", {"new": "2"})]
    ) is None
    assert store.get_all("global") == {"A": "1"}
    assert store.get_all("global/history") == {}
    assert store.get(COUNTERS, CHANGES) is None
    assert store.commit({}, expect={"global": {"A": "1"}}) == 0
    assert store.commit({}, expect=expect) is None


def test_commit_writes_nothing_when_a_value_cannot_be_stored(store):
    with pytest.raises(TypeError):
        store.commit({"global": {"A": "1"}}, log=[("global/history", {"bad": object()})])
    assert store.get_all("global") == {} and store.get_all("global/history") == {}


def test_commit_of_racing_threads_with_one_expectation_lets_exactly_one_win(store):
    store.set("global", "A", "0")
    barrier = threading.Barrier(8)

    def attempt(n: int) -> int | None:
        barrier.wait()
        return store.commit(
            {"global": {"A": f"w{n}"}}, expect={"global": {"A": "0"}},
            log=[("global/history", {"by": n})],
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    winners = [n for n, result in enumerate(results) if result is not None]
    assert len(winners) == 1
    assert store.get("global", "A") == f"w{winners[0]}"
    assert store.get_all("global/history") == {"000000000001": {"by": winners[0]}}


def test_commit_fills_replaced_fields_with_what_its_writes_replace(store):
    def entry(key: str, new: str, shown: str | None = None) -> tuple[str, dict]:
        old = Replaced("global", key, absent="default", shown=shown)
        return ("global/history", {"key": key, "old": old, "new": new})

    assert store.commit({"global": {"A": "x"}}, log=[entry("A", "x")]) == 1
    assert store.commit({"global": {"A": "x"}}, log=[entry("A", "x")]) == 0  # the same value
    assert store.commit({"global": {"B": "default"}}, log=[entry("B", "default")]) == 0
    index = store.commit(
        {"global": {"A": "y", "B": "secret", "C": "default"}},
        log=[entry("A", "y"), entry("C", "default"), entry("B", "***", shown="***"),
             ("user:3/history", {"plain": 1})],
    )  # fmt: skip
    assert index == 4  # the entry of C (left as it was) takes no index
    assert store.get(COUNTERS, CHANGES) == 4
    assert store.get_all("global") == {"A": "y", "B": "secret", "C": "default"}
    assert store.get_all("global/history") == {
        "000000000001": {"key": "A", "old": "default", "new": "x"},
        "000000000002": {"key": "A", "old": "x", "new": "y"},
        "000000000003": {"key": "B", "old": "***", "new": "***"},
    }
    assert store.get_all("user:3/history") == {"000000000004": {"plain": 1}}
    assert store.commit(
        {"global": {"A": "z"}}, expect={"global": {"A": "x"}}, log=[entry("A", "z")]
    ) is None
    with pytest.raises(ValueError, match="does not write"):
        store.commit({"global": {"A": "z"}}, log=[entry("B", "z")])
    assert store.get("global", "A") == "y" and store.get(COUNTERS, CHANGES) == 4


def test_commit_of_racing_writers_logs_a_chain_of_what_each_replaced(store):
    """Writers of one key that check nothing all win, and each entry's ``old`` is the value
    the entry before it wrote: the history never skips or repeats a value."""
    barrier = threading.Barrier(8)

    def write(n: int) -> None:
        barrier.wait()
        for round_ in range(10):
            value = f"w{n}.{round_}"
            old = Replaced("global", "A", absent="start")
            assert store.commit(
                {"global": {"A": value}}, log=[("global/history", {"old": old, "new": value})]
            ) is not None

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    entries = [v for _, v in sorted(store.get_all("global/history").items())]
    assert len(entries) == 80 and store.get(COUNTERS, CHANGES) == 80
    assert [e["old"] for e in entries] == ["start"] + [e["new"] for e in entries[:-1]]
    assert store.get("global", "A") == entries[-1]["new"]


def test_sqlite_commit_undoes_every_row_when_the_store_fails_partway(tmp_path):
    """A trigger aborts the second row a commit inserts: the first row, the log entries and
    the counter must not be left behind (one statement is one transaction)."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 'abort.db'}"
    store = store_from_url(url)
    store.set("global", "A", "0")
    with sqlite3.connect(tmp_path / "abort.db") as connection:
        connection.execute(
            "CREATE TRIGGER abort_second AFTER INSERT ON entries"
            " WHEN (SELECT count(*) FROM entries WHERE key LIKE 'global' || char(31) || '%') >= 3"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    with pytest.raises(StorageUnavailable, match="disk on fire"):
        store.commit(
            {"global": {"B": "1", "C": "2"}},
            log=[("global/history", {"key": "B"}), ("global/history", {"key": "C"})],
        )
    with pytest.raises(StorageUnavailable, match="disk on fire"):
        store.set_many({"global": {"B": "1", "C": "2"}})
    assert store_from_url(url).get_all("global") == {"A": "0"}
    assert store_from_url(url).get_all("global/history") == {}
    assert store_from_url(url).get(COUNTERS, CHANGES) is None
    store.close()


def test_set_many_writes_nothing_when_a_value_cannot_be_stored(store):
    with pytest.raises(TypeError):
        store.set_many({"global": {"fine": 1}, "user:1/settings": {"bad": object()}})
    assert store.get_all("global") == {}
    assert store.get_all("user:1/settings") == {}


def test_namespaces_lists_those_holding_entries(store):
    assert set(store.namespaces()) == set()
    store.set("global", "a", 1)
    store.set_many({"user:1/settings": {"a": 1}, "user:1/tokens": {"t": 1}})
    store.incr("ids")
    assert set(store.namespaces()) == {"global", "user:1/settings", "user:1/tokens", COUNTERS}
    store.delete("user:1/tokens", "t")
    assert set(store.namespaces()) == {"global", "user:1/settings", COUNTERS}


def test_ping_answers(store):
    assert store.ping() is None


def test_threads_share_one_store(store):
    """Writers to their own keys lose nothing; incr and compare-and-set loops never lose an
    update when many threads race on the same entry."""
    threads, rounds = 8, 25

    def work(worker: int) -> None:
        for i in range(rounds):
            store.set("shared", f"t{worker}-{i}", i)
            store.incr("races")
            while True:  # optimistic increment of one shared entry
                current = store.get("shared", "cas")
                if store.compare_and_set("shared", "cas", current, (current or 0) + 1):
                    break

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))

    entries = store.get_all("shared")
    assert entries.pop("cas") == threads * rounds
    assert entries == {f"t{w}-{i}": i for w in range(threads) for i in range(rounds)}
    assert store.get(COUNTERS, "races") == threads * rounds


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_write_is_seen_at_once_by_another_store_on_the_same_data(request, tmp_path, backend):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("redis_url")
    writer, reader = store_from_url(url), store_from_url(url)
    try:
        for i in range(20):
            writer.set("global", "n", i)
            assert reader.get("global", "n") == i
            assert reader.incr("n") == writer.incr("n") - 1
    finally:
        writer.close()
        reader.close()


# --- every backend implements the whole interface ---------------------------------------------


def _backend_classes() -> dict[str, type[KeyValueStore]]:
    return {
        scheme: getattr(__import__(module, fromlist=[name]), name)
        for scheme, (module, name) in backends._BACKENDS.items()
    }


@pytest.mark.parametrize("store_class", sorted(set(_backend_classes().values()), key=str))
def test_backend_implements_the_whole_interface(store_class):
    assert issubclass(store_class, KeyValueStore)
    assert not inspect.isabstract(store_class), store_class.__abstractmethods__
    assert store_class.schemes
    registered = _backend_classes()
    for scheme in store_class.schemes:
        assert registered[scheme] is store_class, f"{scheme}:// is not mapped to {store_class}"
    for name in KeyValueStore.__abstractmethods__:
        assert getattr(store_class, name) is not getattr(KeyValueStore, name), name


def test_every_registered_scheme_is_declared_by_its_class():
    for scheme, store_class in _backend_classes().items():
        assert scheme in store_class.schemes


# --- store_from_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "settings.db",
        "ftp://example.com/x",
        "postgres://localhost/settings",
        "memory://somewhere",
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite:////",
        "sqlite://host/settings.db",
        "sqlite:///settings.db?mode=ro",
        "redis://",
        "redis://localhost:port/0",
        "redis://localhost/not-a-db",
        "redis://localhost/0?timeout=0",
        "redis://localhost/0?timeout=soon",
        "redis://localhost/0?prefix={braces}",
        "redis+sentinel://localhost:26379",
        "redis+sentinel://localhost:26379/mymaster/db",
        "redis+sentinel://localhost:port/mymaster",
        "redis+sentinel://localhost:26379,/mymaster",
        "redis+cluster://localhost:7000/1",
        "redis+cluster://localhost:7000?ssl=true",
        "redis+cluster://localhost:7000?prefix={braces}",
    ],
)
def test_store_from_url_rejects_bad_urls_naming_the_accepted_forms(url):
    with pytest.raises(ConfigurationError) as raised:
        store_from_url(url)
    message = str(raised.value)
    assert any(form in message for form in ("sqlite:///", "redis://", "memory://")), message


def test_unknown_scheme_lists_every_form():
    with pytest.raises(ConfigurationError, match="use one of") as raised:
        store_from_url("mongodb://localhost/settings")
    assert ACCEPTED_FORMS in str(raised.value)


def test_sqlite_urls_relative_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = store_from_url("sqlite:///data/settings.db")
    absolute = store_from_url(f"sqlite:///{tmp_path / 'abs.db'}")
    assert relative.path == str(tmp_path / "data" / "settings.db")
    assert absolute.path == str(tmp_path / "abs.db")
    assert not (tmp_path / "abs.db").exists()  # from_url opens nothing
    absolute.set("global", "a", 1)
    assert (tmp_path / "abs.db").exists()
    absolute.close()


def test_sqlite_missing_directory_fails_at_first_use(tmp_path):
    store = store_from_url(f"sqlite:///{tmp_path / 'missing' / 'settings.db'}")
    with pytest.raises(StorageUnavailable, match="does not exist"):
        store.get("global", "a")
    with pytest.raises(StorageUnavailable):  # and keeps failing cleanly
        store.set("global", "a", 1)


def test_sqlite_unopenable_file_fails_at_first_use(tmp_path):
    store = store_from_url(f"sqlite:///{tmp_path}")  # a directory, not a file
    with pytest.raises(StorageUnavailable, match="unable to open"):
        store.ping()


def test_sqlite_refuses_namespaces_containing_its_row_key_separator(tmp_path):
    store = store_from_url(f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(ValueError, match="x1f"):
        store.set("user:1\x1fsettings", "a", 1)
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2secret@127.0.0.1:1/0?timeout=0.5",
        "redis+sentinel://:hunter2secret@127.0.0.1:1,127.0.0.1:2/mymaster?timeout=0.5",
        "redis+cluster://:hunter2secret@127.0.0.1:1,127.0.0.1:2?timeout=0.5",
    ],
)
def test_redis_unreachable_fails_fast_without_the_password(url):
    store = store_from_url(url)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        store.get("global", "a")
    assert time.monotonic() - started < 2
    assert "hunter2secret" not in str(raised.value)
    assert "127.0.0.1:1" in str(raised.value)
    store.close()


def test_redis_timeout_is_an_option_the_url_may_override(monkeypatch):
    monkeypatch.setenv("SETTINGS_STORAGE_TIMEOUT", "0.75")  # read by the app, not the backend
    assert store_from_url("redis://localhost/0").timeout == 2.0
    assert store_from_url("redis://localhost/0", timeout="0.75").timeout == 0.75
    assert store_from_url("redis://localhost/0?timeout=3", timeout=0.75).timeout == 3.0
    with pytest.raises(ConfigurationError, match="positive number of seconds"):
        store_from_url("redis://localhost/0", timeout="soon")


def test_the_app_passes_its_storage_timeout_to_the_store(monkeypatch):
    from settings_server import create_app

    def backend_of(app):  # under the app's wrappers (read-ahead, metrics' timer)
        store = app.extensions["settings_store"]
        while not hasattr(store, "timeout"):
            store = store.store
        return store

    monkeypatch.setenv("SETTINGS_STORAGE_TIMEOUT", "0.75")
    app = create_app({"SETTINGS_BACKEND": "redis://localhost/0", "SETTINGS_STORAGE_TIMEOUT": "7"})
    assert backend_of(app).timeout == 7.0
    assert backend_of(create_app({"SETTINGS_BACKEND": "redis://localhost/0"})).timeout == 0.75


@pytest.mark.redis
def test_redis_key_layout_keeps_a_group_in_one_hash_slot(redis_url):
    store = store_from_url(redis_url)
    store.set_many({"user:17/settings": {"a": 1}, "user:17/tokens": {"t": 2}, "global": {"g": 3}})
    store.incr("ids")
    with redis.Redis.from_url(redis_url.split("?")[0], decode_responses=True) as client:
        keys = set(client.scan_iter(match=f"{store.prefix}*"))
        assert keys == {
            f"{store.prefix}{{user:17}}/settings",
            f"{store.prefix}{{user:17}}/tokens",
            f"{store.prefix}{{global}}",
            f"{store.prefix}{{{COUNTERS}}}",
        }
        assert client.hgetall(f"{store.prefix}{{user:17}}/settings") == {"a": encode(1)}
    store.close()


@pytest.mark.redis
@pytest.mark.parametrize("options", ["", "&prefix=p:&timeout=1", "&prefix=p:&cache=on"])
def test_redis_over_a_unix_socket(private_redis, options):
    store = store_from_url(private_redis.socket_url + options)
    other = store_from_url(private_redis.url + "?" + options.lstrip("&"))
    try:
        store.set("global", "K", "by socket")
        assert other.get("global", "K") == "by socket"
        other.set("global", "K", "by TCP")
        time.sleep(0.002)  # the announcement's way to a cached store in this very process
        assert store.get("global", "K") == "by TCP"
        assert str(private_redis.socket) in repr(store)
    finally:
        store.close()
        other.close()


def test_only_stores_with_a_round_trip_to_save_defer_writes(store):
    assert isinstance(store, DefersWrites) == type(store).__name__.startswith("Redis")


def test_deferred_writes_are_seen_by_every_later_call(store):
    if not isinstance(store, DefersWrites):
        pytest.skip(f"{type(store).__name__} answers every write at once")
    store.defer_writes()
    store.set("global", "K", "deferred")
    assert store.get("global", "K") == "deferred"
    store.set("global", "K", "again")
    store.set("global", "L", 1)
    store.settle()
    assert store.get_all("global") == {"K": "again", "L": 1}
    store.set("global", "K", "settled")  # no longer deferred
    assert store.get("global", "K") == "settled"


@pytest.fixture
def private(private_redis):
    """``(open, raw)`` on a private Redis: ``open("&timeout=0.2")`` is a store on it (prefix
    ``p:``), closed afterwards; ``raw`` a redis-py client."""
    opened = []
    raw = redis.Redis.from_url(private_redis.url)

    def open_store(options: str = ""):
        opened.append(store_from_url(f"{private_redis.url}?prefix=p:{options}"))
        return opened[-1]

    yield open_store, raw
    for store in opened:
        store.close()
    raw.close()


def unanswered_writes(raw) -> None:
    """Hold every write (scripts included) for 0.6 s, longer than a 0.2 s timeout."""
    raw.client_pause(600, all=False)


@pytest.mark.redis
@pytest.mark.parametrize("cache", ["off", "on"])
def test_a_deferred_redis_write_that_fails_is_reported_by_settle(private, cache):
    open_store, raw = private
    store = open_store(f"&timeout=0.2&cache={cache}")
    store.set("global", "K", "before")
    store.get("global", "K")  # with the cache on: subscribed, and a copy kept
    store.get("global", "K")
    store.defer_writes()
    unanswered_writes(raw)
    store.set("global", "K", "unanswered")  # sent; returns without waiting
    with pytest.raises(StorageUnavailable):
        store.settle()
    time.sleep(0.7)
    store.settle()  # owes nothing more
    # Not acknowledged, so it may or may not have been applied: nothing claims either.
    assert store.get("global", "K") in ("before", "unanswered")
    store.set("global", "K", "after")
    assert store.get("global", "K") == "after"


@pytest.mark.redis
def test_a_deferred_redis_write_that_fails_fails_the_next_call(private):
    open_store, raw = private
    store = open_store("&timeout=0.2")
    store.defer_writes()
    unanswered_writes(raw)
    store.set("global", "K", "unanswered")
    with pytest.raises(StorageUnavailable):
        store.get("global", "K")  # a read may not pass a write it cannot vouch for
    store.settle()


@pytest.mark.redis
def test_redis_writes_go_on_after_the_server_forgets_its_scripts(private):
    open_store, raw = private
    store = open_store()
    store.set("global", "K", 1)
    assert store.compare_and_set("global", "K", 1, 2)
    raw.script_flush()
    store.set("global", "K", 3)
    assert store.compare_and_set("global", "K", 3, 4)
    assert store.get("global", "K") == 4


@pytest.mark.redis
def test_a_redis_write_that_timed_out_leaves_no_reply_for_the_next(private):
    """The answer to a write that timed out arrives late; it must not be taken as the next
    write's, nor the next read's."""
    open_store, raw = private
    store = open_store("&timeout=0.2")
    store.set("global", "K", "before")
    unanswered_writes(raw)
    with pytest.raises(StorageUnavailable):
        store.set("global", "K", "timed out")
    time.sleep(0.7)
    store.set("global", "L", "after")
    assert store.get_all("global")["L"] == "after"
    assert store.get("global", "K") in ("before", "timed out")


@pytest.mark.redis
def test_a_redis_write_refused_as_it_runs_fails(private):
    open_store, raw = private
    store = open_store()
    raw.set("p:{global}", "not a hash")
    with pytest.raises(StorageUnavailable, match="WRONGTYPE"):
        store.set("global", "K", "v")


@pytest.mark.redis
def test_redis_writes_go_on_after_the_server_dropped_the_connections(private):
    open_store, raw = private
    store = open_store()
    store.set("global", "K", 1)
    raw.client_kill_filter(_type="normal", skipme=True)  # as after an idle timeout
    store.set("global", "K", 2)
    assert store.get("global", "K") == 2


@pytest.mark.redis
def test_redis_writes_from_many_threads_reuse_connections(private):
    open_store, raw = private
    store = open_store("&max_connections=4")
    for n in range(40):  # one short-lived thread per write, as a threaded server makes
        worker = threading.Thread(target=store.set, args=("global", f"K{n}", n))
        worker.start()
        worker.join()
    assert len(store.get_all("global")) == 40
    assert len(raw.client_list()) <= 5  # ours (at most 4) and raw


# --- several processes at once ----------------------------------------------------------------

PROCESSES, ROUNDS = 4, 500


def _hammer(url: str, worker: int, start: object, results: object) -> None:
    """One process: each round writes its own key, the shared key, and increments one counter."""
    store = store_from_url(url)
    done = {"own": 0, "shared": 0, "incr": 0}
    error = None
    start.wait()
    began = time.time()
    try:
        for i in range(ROUNDS):
            store.set("hammer", f"w{worker}-{i}", {"worker": worker, "round": i})
            done["own"] += 1
            store.set("hammer", "shared", f"w{worker}-{i}")
            done["shared"] += 1
            store.incr("hammer")
            done["incr"] += 1
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        error = repr(exc)
    finally:
        ended = time.time()
        store.close()
    results.put((worker, done, error, began, ended))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_processes_writing_at_once_lose_nothing(request, tmp_path, backend):
    url = (
        f"sqlite:///{tmp_path / 'hammer.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=_hammer, args=(url, worker, start, results))
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0

    assert [error for _, _, error, _, _ in reports if error] == []
    done = {worker: counts for worker, counts, _, _, _ in reports}
    store = store_from_url(url)
    entries = store.get_all("hammer")
    shared = entries.pop("shared")
    assert entries == {
        f"w{worker}-{i}": {"worker": worker, "round": i}
        for worker, counts in done.items()
        for i in range(counts["own"])
    }
    assert shared in {f"w{w}-{i}" for w, counts in done.items() for i in range(counts["shared"])}
    assert store.get(COUNTERS, "hammer") == sum(c["incr"] for c in done.values())
    store.close()

    writes = sum(sum(counts.values()) for counts in done.values())
    seconds = max(ended for *_, ended in reports) - min(began for *_, began, _ in reports)
    print(
        f"\n{backend}: {PROCESSES} processes, {writes} writes (set own key, set shared key, incr)"
        f" in {seconds:.2f} s = {writes / seconds:.0f} writes/s"
    )
