"""ReadAheadStore: reads gathered into one round trip, never stale within or across batches."""

from __future__ import annotations

import pytest
from recording import Recorder

from backends import store_from_url
from backends.readahead import ReadAheadStore


@pytest.fixture
def counted(store):
    """(wrapper, calls): every read the wrapper makes of the store is recorded."""
    calls = []
    return ReadAheadStore(Recorder(store, calls)), calls


def test_reads_covered_by_the_batch_cost_nothing_more(counted):
    wrapper, calls = counted
    wrapper.set_many({"tokens": {"t": {"user": 1}}, "users": {"1": "alice"}, "global": {"K": "v"}})
    calls.clear()
    wrapper.read_ahead({"tokens": ["t"], "users": ["1", "2"], "global": None})
    assert calls == ["get_each"]
    assert wrapper.get("tokens", "t") == {"user": 1}
    assert wrapper.get("users", "2") is None
    assert wrapper.get_many("users", ["1", "2"]) == {"1": "alice"}
    assert wrapper.get_all("global") == {"K": "v"}
    assert wrapper.get_many("global", ["K", "L"]) == {"K": "v"}
    assert calls == ["get_each"]
    assert wrapper.get("tokens", "other") is None  # not in the batch: asked of the store
    assert wrapper.get_all("users") == {"1": "alice"}
    assert calls == ["get_each", "get", "get_all"]


def test_a_write_drops_its_namespace_from_the_batch(counted):
    wrapper, _ = counted
    wrapper.set("global", "K", "old")
    wrapper.read_ahead({"global": None, "users": ["1"]})
    wrapper.set("global", "K", "new")
    assert wrapper.get("global", "K") == "new"
    wrapper.read_ahead({"counters": None})
    wrapper.incr("ids")
    assert wrapper.get_all("counters") == {"ids": 1}
    wrapper.read_ahead({"users": ["1"]})
    assert wrapper.compare_and_set("users", "1", None, "bob")
    assert wrapper.get("users", "1") == "bob"
    wrapper.read_ahead({"users": ["1"]})
    wrapper.delete("users", "1")
    assert wrapper.get("users", "1") is None


def test_forget_ends_the_batch_and_a_new_batch_reads_fresh(store):
    wrapper = ReadAheadStore(store)
    store.set("global", "K", "one")
    wrapper.read_ahead({"global": ["K"]})
    store.set("global", "K", "two")  # another process writes
    assert wrapper.get("global", "K") == "one"  # the batch is this request's snapshot
    wrapper.forget()
    assert wrapper.get("global", "K") == "two"
    wrapper.read_ahead({"global": ["K"]})
    assert wrapper.get("global", "K") == "two"


def test_batches_belong_to_their_thread(store):
    import threading

    wrapper = ReadAheadStore(store)
    store.set("global", "K", "one")
    wrapper.read_ahead({"global": ["K"]})
    store.set("global", "K", "two")
    seen = []
    thread = threading.Thread(target=lambda: seen.append(wrapper.get("global", "K")))
    thread.start()
    thread.join()
    assert seen == ["two"] and wrapper.get("global", "K") == "one"


def test_from_url_wraps_the_named_store():
    wrapper = ReadAheadStore.from_url("memory://")
    assert type(wrapper.store) is type(store_from_url("memory://"))
