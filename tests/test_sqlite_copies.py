"""SQLite keeps per-process copies only while the file's change counter holds: a write by
any connection, in any process, is seen by the very next read (no delay, no exceptions)."""

from __future__ import annotations

import multiprocessing

from backends import store_from_url


def write_in_another_process(url: str, value: str) -> None:
    store = store_from_url(url)
    store.set("global", "K", value)
    store.close()


def test_writes_by_other_connections_are_seen_by_the_next_read(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    reader, writer = store_from_url(url), store_from_url(url)
    try:
        for n in range(200):
            reader.get_each({"global": None, "users": ["1"]})  # copies are kept...
            writer.set_many({"global": {"K": n}, "users": {"1": n}})
            assert reader.get("global", "K") == n  # ...and never read once stale
            assert reader.get_all("global") == {"K": n}
            assert reader.get_many("users", ["1", "2"]) == {"1": n}
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=write_in_another_process, args=(url, "from afar"))
        process.start()
        process.join(30)
        assert process.exitcode == 0
        assert reader.get("global", "K") == "from afar"
    finally:
        reader.close(), writer.close()


def test_own_writes_are_seen_and_unchanged_reads_come_from_copies(tmp_path, monkeypatch):
    store = store_from_url(f"sqlite:///{tmp_path / 's.db'}")
    try:
        store.set("global", "K", 1)
        assert store.get("global", "K") == 1
        queries = []
        original = store._query
        monkeypatch.setattr(store, "_query", lambda *a: queries.append(a) or original(*a))
        for _ in range(10):
            assert store.get_all("global") == {"K": 1}
        assert len(queries) == 1  # the first read fetched; the file did not change since
        store.set("global", "K", 2)
        assert store.get("global", "K") == 2
    finally:
        store.close()
