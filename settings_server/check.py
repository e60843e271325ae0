"""``settings-server check``: is this configuration one the server can run with?

It reads the environment as the server does, then takes the server's start-up steps one by one
and reports each: the storage URL, the registry (with the operator's file), the app as
``create_app`` builds it, the gunicorn settings of ``settings-server run``, the store answering,
and whether anybody can sign in. A failed step says how to fix it; steps that depend on it are
skipped. For a container's start-up (exit status 0 or 1) and for support (the report names no
password).
"""

from __future__ import annotations

import importlib.util
import runpy
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from backends import KeyValueStore, StorageError, store_from_url

from .config import from_environment
from .registry import RegistryError, SettingsRegistry, load_registry

OK, WARN, FAIL, SKIPPED = "OK", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Finding:
    """One step's outcome: ``status`` is OK, WARN (works, but look), FAIL or SKIP (an earlier
    step failed); ``fix`` says what to do when it is not OK."""

    step: str
    status: str
    detail: str
    fix: str = ""


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    return url.replace(f":{password}@", ":***@", 1)


class _Checks:
    """The steps, in order, sharing what the earlier ones built."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.backend = str(config["SETTINGS_BACKEND"])
        self.failed: set[str] = set()
        self.store: KeyValueStore | None = None

    def run(self) -> Iterator[Finding]:
        steps: list[tuple[str, Callable[[], Finding], tuple[str, ...]]] = [
            ("storage URL", self.storage_url, ()),
            ("registry", self.registry, ()),
            ("app", self.app, ("storage URL", "registry")),
            ("serving", self.serving, ("storage URL",)),
            ("store", self.connection, ("app",)),
            ("accounts", self.accounts, ("store",)),
        ]
        try:
            for step, check, needs in steps:
                blocked = [need for need in needs if need in self.failed]
                if blocked:
                    finding = Finding(step, SKIPPED, f"needs {' and '.join(blocked)}")
                else:
                    finding = check()
                if finding.status in (FAIL, SKIPPED):
                    self.failed.add(step)
                yield finding
        finally:
            if self.store is not None:
                self.store.close()

    def storage_url(self) -> Finding:
        try:
            store = store_from_url(self.backend)
        except StorageError as exc:
            return Finding(
                "storage URL",
                FAIL,
                str(exc).replace(self.backend, masked(self.backend)),
                "set SETTINGS_BACKEND to one of the forms above (README: Storage backends)",
            )
        store.close()
        return Finding("storage URL", OK, f"SETTINGS_BACKEND={masked(self.backend)}")

    def registry(self) -> Finding:
        extra = self.config.get("SETTINGS_REGISTRY_FILE")
        try:
            registry = load_registry(extra)
        except RegistryError as exc:
            return Finding(
                "registry",
                FAIL,
                str(exc),
                "correct the definition named above in SETTINGS_REGISTRY_FILE's file, or unset "
                "SETTINGS_REGISTRY_FILE (README: The registry)",
            )
        detail = _registry_summary(registry)
        if extra:
            detail += f"; {_added(load_registry(None), registry)} from {extra}"
        else:
            detail += " (no SETTINGS_REGISTRY_FILE)"
        return Finding("registry", OK, detail)

    def app(self) -> Finding:
        from . import create_app

        try:
            app = create_app(dict(self.config))
        except (StorageError, RegistryError, ValueError) as exc:
            return Finding(
                "app",
                FAIL,
                str(exc),
                "correct the variable named above (README: Configuration)",
            )
        self.store = app.extensions["settings_store"]
        level = app.config["SETTINGS_LOG_LEVEL"]
        return Finding("app", OK, f"built as the server builds it (log level {level})")

    def serving(self) -> Finding:
        spec = importlib.util.find_spec("settings_server.gunicorn_conf")
        try:  # run afresh: the file reads the environment when it is loaded
            conf = runpy.run_path(spec.origin)
        except (ValueError, TypeError) as exc:
            return Finding(
                "serving",
                FAIL,
                f"the gunicorn settings do not load: {exc}",
                "WEB_CONCURRENCY, SETTINGS_GRACEFUL_TIMEOUT, SETTINGS_HEADER_TIMEOUT and "
                "SETTINGS_WORKER_CONNECTIONS must be whole numbers",
            )
        refusal = conf["memory_refusal"](self.backend, conf["workers"])
        if refusal:
            return Finding("serving", FAIL, refusal.split(";")[0], refusal.split("; ", 1)[1])
        if not conf["bind"]:
            return Finding("serving", FAIL, "SETTINGS_BIND names no address",
                           "set SETTINGS_BIND, e.g. 127.0.0.1:8000")
        return Finding(
            "serving",
            OK,
            f"settings-server run: {conf['workers']} worker(s) on {', '.join(conf['bind'])}",
        )

    def connection(self) -> Finding:
        assert self.store is not None
        started = time.perf_counter()
        try:
            self.store.ping()
            namespaces = sum(1 for _ in self.store.namespaces())
        except StorageError as exc:
            return Finding("store", FAIL, str(exc), self._store_fix())
        took = (time.perf_counter() - started) * 1000
        return Finding(
            "store",
            OK,
            f"{_scheme(self.backend)} answered in {took:.1f} ms ({namespaces} namespace(s) stored)",
        )

    def _store_fix(self) -> str:
        scheme = _scheme(self.backend)
        if scheme == "sqlite":
            return ("the SQLite file's directory must exist and be writable by this user; "
                    "correct SETTINGS_BACKEND or create the directory")
        if scheme.startswith(("redis", "rediss", "unix")):
            return ("start Redis or correct the host, port, password or database in "
                    "SETTINGS_BACKEND; a slow network may need a larger SETTINGS_STORAGE_TIMEOUT")
        return "correct SETTINGS_BACKEND"

    def accounts(self) -> Finding:
        from .users import UserDirectory

        assert self.store is not None
        try:
            has_users = UserDirectory(self.store).exists_any()
        except StorageError as exc:
            return Finding("accounts", FAIL, str(exc), self._store_fix())
        if has_users:
            return Finding("accounts", OK, "the store has users")
        if self.config.get("SETTINGS_ADMIN_USER") and self.config.get("SETTINGS_ADMIN_PASSWORD"):
            return Finding(
                "accounts",
                OK,
                f"no users yet: {self.config['SETTINGS_ADMIN_USER']!r} (SETTINGS_ADMIN_USER) "
                "is created on the first request",
            )
        return Finding(
            "accounts",
            WARN,
            "the store has no users and no admin is configured: nobody can sign in",
            "settings-server user create NAME --superuser, or set SETTINGS_ADMIN_USER and "
            "SETTINGS_ADMIN_PASSWORD",
        )


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower() or "?"


def _registry_summary(registry: SettingsRegistry) -> str:
    return (
        f"{len(registry.global_settings)} global, {len(registry.user_settings)} user and "
        f"{len(registry.notification_settings)} notification setting(s)"
    )


def _added(base: SettingsRegistry, registry: SettingsRegistry) -> str:
    return (
        f"{len(registry.global_settings) - len(base.global_settings)} global, "
        f"{len(registry.user_settings) - len(base.user_settings)} user and "
        f"{len(registry.notification_settings) - len(base.notification_settings)} "
        "notification setting(s)"
    )


def run_checks(config: Mapping[str, Any] | None = None) -> Iterator[Finding]:
    """Each step's :class:`Finding`, in order, as it is done (``config``: the environment's
    configuration by default)."""
    return _Checks(from_environment() if config is None else config).run()
