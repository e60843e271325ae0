"""A store proxy that records which of its methods are called."""

from __future__ import annotations

READS = ("get", "get_many", "get_all", "get_each")
WRITES = ("set", "set_many", "commit", "delete", "delete_many", "compare_and_set", "incr")


class Recorder:
    """Passes every call to ``store``, appending the names of reads and writes to ``calls``.
    Calls a backend makes of itself are not recorded."""

    def __init__(self, store, calls: list[str]) -> None:
        self._store, self._calls = store, calls

    def __getattr__(self, name):
        if name in READS or name in WRITES:
            self._calls.append(name)
        return getattr(self._store, name)
