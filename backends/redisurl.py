"""What a Redis URL names and how to connect to it, apart from the store that uses it.

:func:`parse_url` reads a URL (one server, Sentinel or Cluster, with our options ``prefix``,
``timeout`` and ``cache``) into a :class:`RedisTarget`, refusing a malformed one with a
:class:`~backends.base.ConfigurationError` that names the accepted forms; :func:`connector`
gives what makes its redis-py client (nothing connects before that is called).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis

from .base import ConfigurationError

DEFAULT_PREFIX = "settings:"
DEFAULT_TIMEOUT = 2.0
ACCEPTED_FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path/to/redis.sock, "
    "redis+sentinel://host:port[,host:port]/service[/db], redis+cluster://host:port[,host:port] "
    "(options: ?prefix=settings:&timeout=2.0&cache=off)"
)
SENTINEL, CLUSTER = "redis+sentinel", "redis+cluster"
SCHEMES = ("redis", "rediss", "unix", SENTINEL)  # one server (or Sentinel's master)
DEFAULT_PORTS = {SENTINEL: 26379, CLUSTER: 6379}
CLUSTER_ATTEMPTS = 3  # redis-py retries a failed cluster call (re-reading the slot map) this often
OPTIONS = ("prefix", "timeout", "cache")


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: ``url`` is redis-py's (our options removed), the rest ours."""

    url: str
    scheme: str
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT
    cache: bool = False
    secrets: tuple[str, ...] = field(default=(), repr=False)  # the password, as written and decoded

    def hide_password(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    @property
    def where(self) -> str:
        """The URL without options or password, for messages."""
        return self.hide_password(self.url.partition("?")[0])


def parse_url(url: str, *, timeout: float | str | None = None) -> RedisTarget:
    """The target ``url`` names; ``timeout`` applies unless the URL's ``?timeout=`` says
    otherwise (default :data:`DEFAULT_TIMEOUT`)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in (*SCHEMES, CLUSTER):
        raise ConfigurationError(f"not a Redis URL: {parts.scheme}://...; use {ACCEPTED_FORMS}")
    if scheme not in ("unix", SENTINEL, CLUSTER):  # several nodes: see _nodes
        if not parts.hostname:
            raise ConfigurationError(f"no host in the Redis URL; use {ACCEPTED_FORMS}")
        if not (parts.path.strip("/") or "0").isdigit():
            raise ConfigurationError(
                f"the path of a Redis URL is the database number, got {parts.path!r}; "
                f"use {ACCEPTED_FORMS}"
            )
    options = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in options if name in OPTIONS}
    theirs = [(name, value) for name, value in options if name not in ours]
    if theirs and scheme in (SENTINEL, CLUSTER):
        raise ConfigurationError(
            f"{parts.scheme}:// URLs take only the options prefix, timeout and cache, got "
            f"{', '.join(sorted({name for name, _ in theirs}))}; use {ACCEPTED_FORMS}"
        )
    prefix = ours.get("prefix", DEFAULT_PREFIX)
    if "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"the Redis key prefix may not contain braces, got {prefix!r}; use {ACCEPTED_FORMS}"
        )
    timeout_text = ours.get("timeout") or timeout or DEFAULT_TIMEOUT
    try:
        seconds = float(timeout_text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ConfigurationError(
            f"the Redis timeout must be a positive number of seconds, got {timeout_text!r} "
            f"(URL option ?timeout= or the storage timeout); use {ACCEPTED_FORMS}"
        )
    cache = ours.get("cache", "off").lower()
    if cache not in ("on", "off"):
        raise ConfigurationError(f"the cache option is on or off, got {cache!r}")
    if cache == "on" and scheme == CLUSTER:
        raise ConfigurationError("the cache option needs one Redis server or Sentinel, "
                                 "not a cluster")
    password = url.rpartition("@")[0].partition("://")[2].partition(":")[2]
    return RedisTarget(
        # not urlunsplit, which writes unix:///path as unix:/path
        url=url.partition("?")[0] + (f"?{urlencode(theirs)}" if theirs else ""),
        scheme=scheme,
        prefix=prefix,
        timeout=seconds,
        cache=cache == "on",
        secrets=tuple(text for text in {password, unquote(password)} if text),
    )


def connector(target: RedisTarget) -> Callable[[], redis.Redis | redis.RedisCluster]:
    """What makes ``target``'s client: called once, on first use (a cluster client connects
    as it is made). Raises :class:`ConfigurationError` for a malformed sentinel or cluster URL,
    its password masked."""
    make = {SENTINEL: _sentinel_client, CLUSTER: _cluster_client}.get(target.scheme, _plain_client)
    try:
        return make(target.url, target.timeout)
    except ConfigurationError as exc:
        raise ConfigurationError(target.hide_password(str(exc))) from None


def _nodes(url: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """``(username, password, [(host, port), ...])`` of a sentinel or cluster URL."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = item, str(DEFAULT_PORTS[parts.scheme.lower()])
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"bad node {item!r} in the Redis URL; give host:port[,host:port], "
                f"use {ACCEPTED_FORMS}"
            )
        nodes.append((host, int(port)))
    return unquote(username) or None, unquote(password) or None, nodes


def _plain_client(url: str, timeout: float) -> Callable[[], redis.Redis]:
    try:
        pool = redis.ConnectionPool.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, decode_responses=True
        )
    except ValueError as exc:
        raise ConfigurationError(f"malformed Redis URL: {exc}; use {ACCEPTED_FORMS}") from exc
    client = redis.Redis(connection_pool=pool)
    return lambda: client


def _sentinel_client(url: str, timeout: float) -> Callable[[], redis.Redis]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    username, password, nodes = _nodes(url)
    service, _, db = urlsplit(url).path.strip("/").partition("/")
    if not service or not (db or "0").isdigit():
        raise ConfigurationError(
            f"a Sentinel URL's path is /service_name[/db], got {urlsplit(url).path!r}; "
            f"use {ACCEPTED_FORMS}"
        )
    timeouts = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    # One attempt per sentinel: the master's own connection retries, as plain clients do.
    once = {**timeouts, "retry": Retry(NoBackoff(), 0)}
    sentinel = Sentinel(nodes, sentinel_kwargs=once, **timeouts)
    client = sentinel.master_for(
        service, db=int(db or 0), username=username, password=password, decode_responses=True
    )
    return lambda: client


def _cluster_client(url: str, timeout: float) -> Callable[[], redis.RedisCluster]:
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    username, password, nodes = _nodes(url)
    if urlsplit(url).path.strip("/"):
        raise ConfigurationError(
            f"a Redis Cluster has only database 0: no path in redis+cluster:// URLs; "
            f"use {ACCEPTED_FORMS}"
        )

    def connect() -> redis.RedisCluster:  # RedisCluster reads the slot map as it is built
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            username=username,
            password=password,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), CLUSTER_ATTEMPTS - 1),
            decode_responses=True,
        )

    return connect

