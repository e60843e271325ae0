"""Password guessing is throttled before any password is hashed.

Failed logins are counted per client address (an IPv6 address by its /64) and per username, in the configured store, so
every worker of every server on that store shares the counts. Past either limit a login is
refused with 429 and ``Retry-After`` without checking the password (which costs ~200 ms of
scrypt); a successful login is never counted. Limits are `limits
<https://limits.readthedocs.io>`_ rate strings (``"10/minute"``, ``"5/5 minutes"``), counted in
fixed windows.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Mapping
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

from backends import KeyValueStore, StorageError, StorageUnavailable

#: Where the counters live: ``"<limit key>"`` -> ``{"n": count, "until": epoch seconds}``.
NAMESPACE = "login_failures"
_CAS_ATTEMPTS = 50
_PRUNE_EVERY = 60.0  # seconds: expired counters are deleted at most this often per process


class StoreCounters(Storage):
    """limits' storage contract on a :class:`~backends.KeyValueStore`: each counter is one
    entry changed by compare-and-set, so increments are atomic across processes on every
    backend. Expired entries are deleted now and then, so an attacker spraying addresses does
    not grow the store beyond one window's worth."""

    STORAGE_SCHEME = None  # built on a store, never from a URL

    def __init__(self, store: KeyValueStore) -> None:
        super().__init__()
        self.store = store
        self._next_prune = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return StorageError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        for _ in range(_CAS_ATTEMPTS):
            now = time.time()
            current = self.store.get(NAMESPACE, key)
            if _live(current, now):
                new = {"n": current["n"] + amount, "until": current["until"]}
            else:
                new = {"n": amount, "until": now + expiry}
            if self.store.compare_and_set(NAMESPACE, key, current, new):
                if new["n"] == amount:
                    self._prune(now)
                return new["n"]
        raise StorageUnavailable(f"counter {key!r} kept changing under {_CAS_ATTEMPTS} attempts")

    def get(self, key: str) -> int:
        current = self.store.get(NAMESPACE, key)
        return current["n"] if _live(current, time.time()) else 0

    def get_expiry(self, key: str) -> float:
        current = self.store.get(NAMESPACE, key)
        return current["until"] if _live(current, time.time()) else time.time()

    def check(self) -> bool:
        try:
            self.store.ping()
        except StorageError:
            return False
        return True

    def reset(self) -> int | None:
        return None  # not offered: the namespace is shared with other servers

    def clear(self, key: str) -> None:
        self.store.delete(NAMESPACE, key)

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY
        # A counter renewed between the read and its delete loses that one failure: harmless.
        for key, value in self.store.get_all(NAMESPACE).items():
            if not _live(value, now):
                self.store.delete(NAMESPACE, key)


def _live(entry: Any, now: float) -> bool:
    return isinstance(entry, dict) and entry.get("until", 0) > now


class LoginThrottle:
    """Per-address and per-username limits on failed logins."""

    def __init__(self, store: KeyValueStore, config: Mapping[str, Any]) -> None:
        """``config`` supplies ``SETTINGS_LOGIN_LIMIT_PER_ADDRESS`` and
        ``SETTINGS_LOGIN_LIMIT_PER_USERNAME``; a limit that does not parse raises
        ``ValueError`` naming the variable."""
        self.limiter = FixedWindowRateLimiter(StoreCounters(store))
        self.per_address = _limit(config, "SETTINGS_LOGIN_LIMIT_PER_ADDRESS")
        self.per_username = _limit(config, "SETTINGS_LOGIN_LIMIT_PER_USERNAME")

    def _checks(self, address: str, username: str) -> list[tuple[RateLimitItem, str, str]]:
        # The username is hashed: it comes from the client, of any length and content.
        name = hashlib.sha256(username.encode(errors="surrogateescape")).hexdigest()[:32]
        return [
            (self.per_address, "address", counted_address(address)),
            (self.per_username, "username", name),
        ]

    def retry_after(self, address: str, username: str) -> int | None:
        """Seconds until a login of ``username`` from ``address`` may be tried again, or
        ``None`` when it may be tried now."""
        waits = [
            self.limiter.get_window_stats(item, "login", scope, value).reset_time - time.time()
            for item, scope, value in self._checks(address, username)
            if not self.limiter.test(item, "login", scope, value)
        ]
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, address: str, username: str) -> None:
        """Count a failed login of ``username`` from ``address``."""
        for item, scope, value in self._checks(address, username):
            self.limiter.hit(item, "login", scope, value)


def counted_address(address: str) -> str:
    """What the per-address limit counts: an IPv4 address (IPv4-mapped IPv6 included) as it
    is, an IPv6 address by its /64 network, since one subscriber usually holds a whole /64 and
    could otherwise take a fresh address for every guess."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _limit(config: Mapping[str, Any], name: str) -> RateLimitItem:
    text = str(config.get(name) or "")
    try:
        return parse(text)
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not a rate limit; write it as '10/minute' or '5/5 minutes'"
        ) from None
