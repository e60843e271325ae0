"""The history store (settings_server/history.py) on every backend: retention by setting, the
trim that deletes what readers no longer see, and ``after`` telling when entries are missing."""

from __future__ import annotations

from types import SimpleNamespace

from settings_server.history import Change, History

ALICE = SimpleNamespace(id=2, username="alice", is_superuser=False)
BOB = SimpleNamespace(id=3, username="bob", is_superuser=False)


def write(store, history: History, key: str, new: str, user: int | None = None) -> int:
    namespace = f"user:{user}/user" if user else "global"
    change = Change("user" if user else "global", key, user, "old", new, changed=True)
    return store.commit({namespace: {key: new}}, log=history.log([change], ALICE, "api"))


def test_readers_see_the_newest_entries_of_each_setting_and_trim_deletes_the_rest(store):
    history = History(store, limit=2)
    ids = [write(store, history, "A", f"a{n}") for n in range(4)]
    ids += [write(store, history, "B", "b0"), write(store, history, "A", "a4", user=ALICE.id)]
    seen = history.entries(ALICE)
    assert [(e["key"], e["new"]) for e in seen] == [("A", "a4"), ("B", "b0"), ("A", "a3"), ("A", "a2")]
    assert [e["id"] for e in history.entries(BOB)] == [ids[4], ids[3], ids[2]]  # not alice's
    assert history.get(ids[0], ALICE) is None and history.get(ids[2], ALICE)["new"] == "a2"
    assert history.get(ids[5], BOB) is None

    entries, complete = history.after(0, ALICE)
    assert [e["id"] for e in entries] == [ids[2], ids[3], ids[4], ids[5]] and not complete
    assert history.after(ids[1], ALICE) == (entries, True)

    assert history.trim() == 2
    assert sorted(store.get_all("global/history")) == [f"{i:012d}" for i in ids[2:5]]
    assert history.entries(ALICE) == seen
    assert history.after(ids[0], ALICE)[1] is False  # id 2 is gone for good
    assert history.after(ids[1], ALICE) == (entries, True)
    assert history.index() == ids[-1]


def test_history_off_logs_nothing(store):
    history = History(store, limit=0)
    assert not history.enabled
    assert write(store, history, "A", "a") == 0
    assert history.entries(ALICE) == [] and history.index() == 0


def test_unchanged_values_log_nothing(store):
    history = History(store, limit=5)
    same = Change("global", "A", None, "x", "x", changed=False)
    assert history.log([same], None, "import") == []
    protected = Change("global", "P", None, "***", "***", changed=True)
    ((namespace, entry),) = history.log([protected], None, "import")
    assert namespace == "global/history" and entry["actor"] is None and entry["old"] == "***"


def test_commits_of_many_entries_trim_when_they_pass_a_multiple_of_trim_every(store, monkeypatch):
    """Bulk writes move the change index by many at a time, past the multiples of
    ``TRIM_EVERY`` rather than onto them: the trim must still run."""
    monkeypatch.setattr("settings_server.history.TRIM_EVERY", 8)
    history = History(store, limit=1)
    for n in range(4):  # 3 entries a commit: indexes 3, 6, 9, 12; none lands on 8
        changes = [Change("global", key, None, "old", f"{key}{n}", changed=True) for key in "ABC"]
        log = history.log(changes, ALICE, "bulk")
        index = store.commit({"global": {key: f"{key}{n}" for key in "ABC"}}, log=log)
        history.committed(index, len(log))
        if n == 2:  # the commit that took 7, 8, 9 trimmed: one entry of each key is kept
            assert sorted(store.get_all("global/history")) == [f"{i:012d}" for i in (7, 8, 9)]
    assert len(store.get_all("global/history")) == 6  # 12 has not passed 16 yet
