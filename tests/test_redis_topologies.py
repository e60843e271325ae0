"""RedisStore beyond one server: a private Sentinel setup and a private 3-node Redis Cluster.

Each topology is started once per module from ``redis-server`` on free ports in a temporary
directory (bounded start-up, processes and directory always removed afterwards), then the
storage contract of test_backends.py runs against it, plus what only these topologies have.
Skipped with the reason when ``redis-server``/``redis-cli`` is missing, failed when
``SETTINGS_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
from redis.crc import key_slot

# The storage contract, collected again here against the `store` fixture of this module.
from test_backends import (  # noqa: F401
    test_compare_and_set,
    test_compare_and_set_compares_canonical_json,
    test_delete_reports_whether_the_entry_existed,
    test_get_many_returns_only_existing_keys,
    test_incr_counts_from_zero_and_is_readable,
    test_json_values_round_trip,
    test_missing_entries_read_as_absent,
    test_namespaces_are_isolated,
    test_namespaces_lists_those_holding_entries,
    test_ping_answers,
    test_set_many_writes_across_namespaces,
    test_set_many_writes_nothing_when_a_value_cannot_be_stored,
    test_set_then_get_and_overwrite,
    test_threads_share_one_store,
    test_unicode_namespaces_and_keys,
)

from backends import Replaced, store_from_url
from settings_server import create_app

pytestmark = pytest.mark.slow

STARTUP_DEADLINE = 20.0  # seconds for a whole topology to answer
SERVICE = "settings-test"


def _require_binaries() -> None:
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        message = f"{' and '.join(missing)} not found on PATH: cannot start private Redis servers"
        if os.environ.get("SETTINGS_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _free_ports(count: int, *, bus: bool = False) -> list[int]:
    """``count`` ports free now on 127.0.0.1 (with ``bus``: port + 10000 free too, as the
    cluster bus needs)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port in ports or (bus and (port > 55535 or not _is_free(port + 10000))):
            continue
        ports.append(port)
    return ports


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_until(check: Callable[[], bool], deadline: float, what: str) -> None:
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {STARTUP_DEADLINE:.0f} s")


@contextmanager
def _servers() -> Iterator[tuple[Path, Callable[..., subprocess.Popen]]]:
    """A temporary directory and a ``start(*args)`` for redis-server processes; every process
    is stopped and the directory removed on exit, whatever happened."""
    _require_binaries()
    directory = Path(tempfile.mkdtemp(prefix="settings-redis-"))
    processes: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        log = open(directory / f"server-{len(processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            ["redis-server", *args], cwd=directory, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        processes.append(process)
        return process

    try:
        yield directory, start
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _common(port: int) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


@pytest.fixture(scope="module")
def sentinel_url() -> Iterator[str]:
    """``redis+sentinel://`` of one master watched by one sentinel (quorum 1)."""
    with _servers() as (directory, start):
        master, sentinel = _free_ports(2)
        deadline = time.monotonic() + STARTUP_DEADLINE
        start(*_common(master))
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {sentinel}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
        )
        start(str(config), "--sentinel")
        with redis.Redis(port=sentinel, socket_timeout=1, decode_responses=True) as client:
            _wait_until(
                lambda: client.sentinel_get_master_addr_by_name(SERVICE) == ("127.0.0.1", master),
                deadline,
                "sentinel",
            )
        with redis.Redis(port=master, socket_timeout=1) as client:
            _wait_until(client.ping, deadline, "master")
        yield f"redis+sentinel://127.0.0.1:{sentinel}/{SERVICE}"


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """``redis+cluster://`` of three masters (no replicas) sharing the 16384 slots."""
    with _servers() as (_, start):
        ports = _free_ports(3, bus=True)
        deadline = time.monotonic() + STARTUP_DEADLINE
        for port in ports:
            start(
                *_common(port),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
            )
        for port in ports:
            with redis.Redis(port=port, socket_timeout=1) as client:
                _wait_until(client.ping, deadline, f"cluster node {port}")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=max(1.0, deadline - time.monotonic()),
        )
        for port in ports:
            with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as client:
                _wait_until(
                    lambda c=client: c.cluster("info")["cluster_state"] == "ok",
                    deadline,
                    f"cluster state on {port}",
                )
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


def _with_prefix(url: str) -> str:
    return f"{url}?{urlencode({'prefix': f'test-{uuid.uuid4().hex}:'})}"


@pytest.fixture(params=["sentinel", "cluster"])
def store(request):
    """A fresh, empty store (a prefix of its own) on each topology; the servers are private
    and thrown away with the module, so nothing needs deleting."""
    opened = store_from_url(_with_prefix(request.getfixturevalue(f"{request.param}_url")))
    yield opened
    opened.close()


# --- what only these topologies have ---------------------------------------------------------


def test_sentinel_store_writes_to_the_master_the_sentinel_names(sentinel_url):
    store = store_from_url(_with_prefix(sentinel_url))
    store.set("user:3/user", "THEME", "dark")
    sentinel_port = int(sentinel_url.rsplit(":", 1)[1].split("/")[0])
    with redis.Redis(port=sentinel_port) as sentinel:
        host, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
    with redis.Redis(host=host, port=port, decode_responses=True) as master:
        assert master.hget(f"{store.prefix}{{user:3}}/user", "THEME") == '"dark"'
    assert store.atomic_across_groups
    store.close()


def test_cluster_keeps_a_group_in_one_slot_and_spreads_groups(cluster_url):
    store = store_from_url(_with_prefix(cluster_url))
    assert not store.atomic_across_groups
    entries = {f"user:{i}/{kind}": {"K": f"{i}-{kind}"} for i in range(60) for kind in ("a", "b")}
    store.set_many(entries)  # 60 groups: one transaction per slot, across all three nodes
    assert {ns: store.get_all(ns) for ns in entries} == entries
    assert set(store.namespaces()) == set(entries)
    slots = {key_slot(store._key(ns).encode()) for ns in entries}
    assert len(slots) == 60
    assert key_slot(store._key("user:7/a").encode()) == key_slot(store._key("user:7/b").encode())
    with redis.RedisCluster.from_url("redis://" + cluster_url.split("//")[1].split(",")[0]) as c:
        owners = {c.get_node_from_key(store._key(ns)).name for ns in entries}
    assert len(owners) == 3
    store.close()


def test_cluster_set_many_within_one_group_is_one_transaction(cluster_url):
    store = store_from_url(_with_prefix(cluster_url))
    store.set_many({"user:5/user": {"A": "1"}, "user:5/notification": {"B": "2"}})
    assert store.get_all("user:5/user") == {"A": "1"}
    assert store.get_all("user:5/notification") == {"B": "2"}
    store.close()


def test_cluster_commit_is_atomic_per_group_with_store_wide_indexes(cluster_url):
    store = store_from_url(_with_prefix(cluster_url))
    assert store.commit(
        {"global": {"A": "1"}, "user:5/user": {"B": "2"}},
        log=[("global/history", {"key": "A"}), ("user:5/history", {"key": "B"})],
    ) in (1, 2)
    assert store.get_all("global/history") == {"000000000001": {"key": "A"}}
    assert store.get_all("user:5/history") == {"000000000002": {"key": "B"}}
    assert store.commit(
        {"user:5/user": {"B": "3"}}, expect={"user:5/user": {"B": "1"}},
        log=[("user:5/history", {"key": "B"})],
    ) is None
    assert store.get_all("user:5/user") == {"B": "2"}
    store.close()


def test_cluster_commit_fills_replaced_fields_in_each_group(cluster_url):
    store = store_from_url(_with_prefix(cluster_url))

    def entry(namespace: str, key: str, new: str) -> tuple[str, dict]:
        old = Replaced(namespace, key, absent="d")
        return (namespace.split("/")[0] + "/history", {"key": key, "old": old, "new": new})

    writes = {"global": {"A": "1"}, "user:5/user": {"B": "d"}}
    assert store.commit(writes, log=[entry("global", "A", "1"), entry("user:5/user", "B", "d")])
    assert store.get_all("global/history") == {"000000000001": {"key": "A", "old": "d", "new": "1"}}
    assert store.get_all("user:5/history") == {}  # B stayed at its default: no entry
    assert store.commit({"global": {"A": "2"}}, log=[entry("global", "A", "2")]) == 3
    assert store.get_all("global/history")["000000000003"] == {"key": "A", "old": "1", "new": "2"}
    with pytest.raises(ValueError, match="group"):
        store.commit({"global": {"A": "3"}}, log=[("user:5/history", entry("global", "A", "3")[1])])
    store.close()


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_the_api_runs_on_the_topology(request, topology):
    url = _with_prefix(request.getfixturevalue(f"{topology}_url"))
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": url})
    from settings_server.auth import authenticator

    user = authenticator(app).users.create("alice", "pw-alice", is_staff=True)
    headers = {"Authorization": f"Token {authenticator(app).tokens.issue(user).key}"}
    client = app.test_client()
    answer = client.patch(
        "/api/settings/user/DATE_DISPLAY_FORMAT/", json={"value": "MMM DD YYYY"}, headers=headers
    )
    assert answer.status_code == 200, answer.json
    assert client.get("/api/settings/user/DATE_DISPLAY_FORMAT/", headers=headers).json["value"] == (
        "MMM DD YYYY"
    )
    app.extensions["settings_store"].close()


def test_migrate_into_the_cluster_and_back(tmp_path, cluster_url):
    """Many groups written by one set_many on a cluster (one transaction per slot), verified."""
    from settings_server.backup import migrate

    source = store_from_url(f"sqlite:///{tmp_path / 'source.db'}")
    source.set_many({f"user:{i}/user": {"LABEL_INLINE": "False"} for i in range(1, 200)})
    source.incr("user_id", 199)
    cluster = store_from_url(_with_prefix(cluster_url))
    back = store_from_url(f"sqlite:///{tmp_path / 'back.db'}")
    assert migrate(source, cluster, quiet=True).namespaces == 200
    assert migrate(cluster, back, quiet=True).entries == 200
    assert {ns: back.get_all(ns) for ns in back.namespaces()} == {
        ns: source.get_all(ns) for ns in source.namespaces()
    }
    for store in (source, cluster, back):
        store.close()
