"""Redis with ``cache=on``: reads come from memory, and no process ever reads a copy that a
write through settings-server has made stale (issue 6 item 2, issue 7)."""

from __future__ import annotations

import contextlib
import time

import pytest
import redis

from backends import store_from_url

pytestmark = pytest.mark.redis


@pytest.fixture
def stores(redis_url):
    """(reader, cached writer, plain writer, raw client, prefix) on one private prefix."""
    reader = store_from_url(f"{redis_url}&cache=on")
    cached_writer = store_from_url(f"{redis_url}&cache=on")
    plain_writer = store_from_url(redis_url)
    prefix = redis_url.rpartition("prefix=")[2].replace("%3A", ":")
    raw = redis.Redis.from_url(redis_url.partition("?")[0], decode_responses=True)
    yield reader, cached_writer, plain_writer, raw, prefix
    for store in (reader, cached_writer, plain_writer):
        store.close()
    raw.close()


def warm(reader):
    """Read twice: the first read subscribes, the second keeps copies."""
    for _ in range(2):
        reader.get_each({"global": None, "users": ["1", "2"], "counters": ["ids"]})


@pytest.mark.parametrize("writer_index", [1, 2], ids=["cached-writer", "plain-writer"])
def test_every_write_drops_the_copies_of_other_processes(stores, writer_index):
    reader, writer = stores[0], stores[writer_index]
    writes = [
        (lambda n: writer.set("global", "K", n), lambda n: reader.get("global", "K") == n),
        (lambda n: writer.set_many({"users": {"1": n}, "global": {"L": n}}),
         lambda n: reader.get_all("global")["L"] == n and reader.get("users", "1") == n),
        (lambda n: writer.compare_and_set("users", "2", reader.get("users", "2"), n),
         lambda n: reader.get_many("users", ["2"]) == {"2": n}),
        (lambda n: writer.delete("global", "K"), lambda n: reader.get("global", "K") is None),
        (lambda n: writer.incr("ids"), lambda n: reader.get_all("counters")["ids"] >= 1),
        (lambda n: writer.commit({"users": {"1": f"c{n}"}, "global": {"L": f"c{n}"}},
                                 log=[("global", {"n": n})]),
         lambda n: reader.get_all("global")["L"] == f"c{n}" and reader.get("users", "1") == f"c{n}"
         and reader.get_all("counters")["changes"] == n + 1),
        (lambda n: writer.delete_many("global", ["L"]), lambda n: "L" not in reader.get_all("global")),
    ]
    for n in range(20):
        for write, seen in writes:
            warm(reader)
            write(n)
            # Redis answers the write and hands the announcement to subscribers in the same
            # step, microseconds apart; a request to another process comes at least a network
            # round trip later. A store in this very process is sooner: wait that long.
            time.sleep(0.002)
            assert seen(n), (n, write)


def test_copies_are_read_until_a_write_announces_a_change(stores):
    reader, writer, _, raw, prefix = stores
    writer.set("global", "K", "one")
    warm(reader)
    assert reader.get("global", "K") == "one"
    # Written around settings-server, so nobody announced it: the copy stays (hence the rule
    # that every writer goes through settings-server, as the README says).
    raw.hset(f"{prefix}{{global}}", "K", '"sneaked"')
    assert reader.get("global", "K") == "one"
    writer.set("global", "other", 1)  # any announced write to the namespace drops the copy
    time.sleep(0.002)
    assert reader.get("global", "K") == "sneaked"


def test_a_lost_subscription_drops_every_copy(private_redis):
    url = f"{private_redis.url}?prefix=p:"
    reader, writer = store_from_url(f"{url}&cache=on"), store_from_url(url)
    raw = redis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        writer.set("global", "K", "one")
        warm(reader)
        raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # a private server: ours alone
        raw.hset("p:{global}", "K", '"after the loss"')  # and no one hears of this write
        assert reader.get("global", "K") == "after the loss"
        warm(reader)  # subscribed again: copies are kept and dropped as before
        writer.set("global", "K", "two")
        time.sleep(0.002)  # as a request through another process would be (see above)
        assert reader.get("global", "K") == "two"
    finally:
        reader.close(), writer.close(), raw.close()


def test_cache_is_refused_on_a_cluster():
    from backends import ConfigurationError

    with pytest.raises(ConfigurationError, match="cache option needs one Redis server"):
        store_from_url("redis+cluster://127.0.0.1:7000?cache=on")
    with pytest.raises(ConfigurationError, match="cache option is on or off"):
        store_from_url("redis://127.0.0.1:6379/0?cache=yes")


def test_no_copy_is_read_once_redis_is_gone(private_redis):
    """A killed Redis closes the subscription: copies are dropped and reads fail (503)."""
    from backends import StorageUnavailable

    store = store_from_url(f"{private_redis.url}?prefix=p:&timeout=0.5&cache=on")
    try:
        store.set("global", "K", "one")
        warm(store)
        assert store.get("global", "K") == "one"
        private_redis.kill()
        with pytest.raises(StorageUnavailable):
            store.get("global", "K")
    finally:
        with contextlib.suppress(StorageUnavailable):
            store.close()


def test_an_announcement_behind_a_burst_of_others_is_not_missed(stores):
    """More announcements than a socket buffer holds arrive while a worker is idle; the one
    for the last write may still sit in Redis's output buffer when the worker next reads."""
    reader, _, writer, _, _ = stores
    writer.set("global", "K", "old")
    warm(reader)
    reader.get("global", "K")
    for batch in range(8):  # 8,000 announcements of about 250 bytes each
        writer.set_many({f"burst/{batch}-{n:04d}-{'x' * 200}": {"K": n} for n in range(1000)})
    writer.set("global", "K", "new")
    time.sleep(0.05)
    assert reader.get("global", "K") == "new"  # the keys go with the test's prefix


def test_processes_forked_from_one_store_announce_to_each_other(redis_url):
    """gunicorn --preload: the workers share the store object made before the fork."""
    import multiprocessing

    store = store_from_url(f"{redis_url}&cache=on")
    store.set("global", "K", 0)
    context = multiprocessing.get_context("fork")
    copied, written, answer = context.Event(), context.Event(), context.Queue()

    def keeps_a_copy():
        warm(store)
        store.get("global", "K")
        copied.set()
        written.wait(10)
        time.sleep(0.01)
        answer.put(store.get("global", "K"))

    def writes():
        store.set("global", "K", 99)

    reader = context.Process(target=keeps_a_copy)
    reader.start()
    copied.wait(10)
    writer = context.Process(target=writes)
    writer.start()
    writer.join(10)
    written.set()
    assert answer.get(timeout=10) == 99
    reader.join(10)
    store.close()


def test_a_failing_subscription_is_logged_once_and_retried_with_back_off(monkeypatch, caplog):
    """Reads meanwhile go to Redis (nothing is cached), without paying for a new subscription
    attempt each time."""
    from backends import rediscache

    attempts = []

    def refuse():
        attempts.append(time.monotonic())
        raise redis.ConnectionError("refused")

    cache = rediscache.NamespaceCache(refuse, "p:invalidations", 0.5, "writer")
    fetched = []

    def fetch(requests):
        fetched.append(requests)
        return {namespace: {} for namespace in requests}

    monkeypatch.setattr(rediscache, "RETRY_FIRST", 0.05)
    with caplog.at_level("WARNING", logger="backends.rediscache"):
        for _ in range(20):
            assert cache.read({"global": None}, fetch) == {"global": {}}
        time.sleep(0.06)
        cache.read({"global": None}, fetch)
        time.sleep(0.03)
        cache.read({"global": None}, fetch)  # inside the doubled back-off: not tried
    assert len(fetched) == 22
    assert len(attempts) == 2
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1


def test_a_copy_that_own_writes_grow_past_the_bound_is_dropped(stores, monkeypatch):
    """A history namespace grows with every write: the copy following this process's own
    writes is bounded as a copy read whole is (``backends.copies.MAX_KEYS``)."""
    monkeypatch.setattr("backends.copies.MAX_KEYS", 4)
    writer = stores[1]
    writer.get_all("global/history")  # subscribes
    writer.get_all("global/history")  # keeps a copy (empty)
    copies = writer._cache._copies._copies
    for n in range(6):
        writer.commit({"global": {"K": n}}, log=[("global/history", {"n": n})])
        assert ("global/history" in copies) == (n < 4)
    assert len(writer.get_all("global/history")) == 6  # from Redis
