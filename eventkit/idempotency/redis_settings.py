"""``RedisSettings``: where the Redis idempotency store lives and how its client behaves (R1).

``RedisSettings.from_url("redis://[USER:PASSWORD@]HOST:PORT/DB?option=value")`` reads a URL
(``rediss://`` for TLS); ``client()`` builds the ``redis.asyncio.Redis`` client with eventkit's
choices set, not inherited: short socket timeouts and no client-side retries. The password is
never part of a ``repr`` or of an error message.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit, urlunsplit

from eventkit.errors import ConfigurationError
from eventkit.idempotency.memory import DEFAULT_ATTEMPTS_TTL

if TYPE_CHECKING:
    from redis.asyncio import Redis

SCHEMES = ("redis", "rediss")
MAX_PORT = 65535

#: Query options of a Redis URL and their types; the rest of the settings are URL parts.
_OPTIONS: dict[str, type] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "allow_eviction": bool,
    "attempts_ttl_seconds": float,
    "tls_ca_certs": str,
    "client_name": str,
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Connection and client options of the Redis idempotency store.

    - ``host``, ``port``, ``db``, ``username``, ``password`` and ``tls`` (``rediss://``) come
      from the URL; ``tls_ca_certs`` names a CA bundle for servers with a private CA.
    - ``socket_timeout`` bounds every call on a stalled server (it then fails as
      ``StoreUnavailableError`` and the worker defers the record), ``socket_connect_timeout``
      every connection attempt.
    - ``allow_eviction`` turns the start-up refusal of a ``maxmemory_policy`` other than
      ``noeviction`` into a warning: an evicted key lets a handled event run again.
    - ``attempts_ttl_seconds``: how long a free key keeps its handler-start count.
    - ``client_name`` is what ``CLIENT LIST`` shows for eventkit's connections.

    Invalid values raise ``ConfigurationError`` naming the field.
    """

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_certs: str | None = None
    socket_timeout: float = 2.0
    socket_connect_timeout: float = 2.0
    allow_eviction: bool = False
    attempts_ttl_seconds: float = DEFAULT_ATTEMPTS_TTL
    client_name: str = "eventkit"

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ConfigurationError("RedisSettings.host must not be empty")
        if not 1 <= self.port <= MAX_PORT:
            raise ConfigurationError(
                f"RedisSettings.port must be between 1 and {MAX_PORT}, not {self.port}"
            )
        if self.db < 0:
            raise ConfigurationError(f"RedisSettings.db must not be negative, not {self.db}")
        for name in ("socket_timeout", "socket_connect_timeout", "attempts_ttl_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"RedisSettings.{name} must be positive, not {value}")
        if self.tls_ca_certs is not None and not self.tls:
            raise ConfigurationError("RedisSettings.tls_ca_certs needs TLS (a rediss:// URL)")
        if not self.client_name or any(c.isspace() for c in self.client_name):
            raise ConfigurationError("RedisSettings.client_name must be one word")

    @property
    def address(self) -> str:
        """``HOST:PORT``, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisSettings:
        """Settings from ``redis://[USER:PASSWORD@]HOST[:PORT][/DB][?option=value&...]``.

        ``rediss://`` turns TLS on. User and password are percent-decoded. Query options
        are ``socket_timeout``, ``socket_connect_timeout``, ``allow_eviction``,
        ``attempts_ttl_seconds``, ``tls_ca_certs`` and ``client_name``; keyword
        ``overrides`` (any field) win over the URL. An unknown option or a bad value is a
        ``ConfigurationError`` naming it; messages show the URL without its password.
        """
        shown = redact(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # a malformed host, such as an unclosed IPv6 bracket
            raise ConfigurationError(f"not a Redis URL: {shown!r} ({exc})") from None
        if parts.scheme not in SCHEMES or not parts.netloc:
            raise ConfigurationError(
                f"not a Redis URL: {shown!r} (use redis://HOST:PORT/DB or rediss://...)"
            )
        if parts.fragment:
            raise ConfigurationError(f"a Redis URL takes no #fragment: {shown!r}")
        options: dict[str, Any] = _url_parts(parts, shown)
        options["tls"] = parts.scheme == "rediss"
        query = parse_qsl(parts.query, keep_blank_values=True)
        unknown = sorted({name for name, _ in query} - set(_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown Redis URL options {unknown} in {shown!r}; known: {sorted(_OPTIONS)}"
            )
        for name, raw in query:
            if name in options:
                raise ConfigurationError(f"Redis URL option {name!r} is given twice in {shown!r}")
            options[name] = _coerce(name, raw, shown)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(f"unknown Redis settings {unknown}")
        options.update(overrides)
        return cls(**options)

    def client(self) -> Redis:
        """A ``redis.asyncio.Redis`` client with these settings and no client-side retries.

        A script that timed out may have run on the server; sending it again would, for
        example, count one handler start twice. So the client never re-sends a command:
        the call fails as ``StoreUnavailableError`` and the worker's fail-closed back-off
        tries the record again, claim first.
        """
        # imported here: redis is loaded only by processes that connect to it
        from redis.asyncio import Redis  # noqa: PLC0415
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415

        return Redis(
            host=self.host,
            port=self.port,
            db=self.db,
            username=self.username,
            password=self.password,
            ssl=self.tls,
            ssl_ca_certs=self.tls_ca_certs,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_connect_timeout,
            client_name=self.client_name,
            # no re-sends: a timed-out script may have run, a second run would count twice
            retry=Retry(NoBackoff(), 0),
        )


#: ``user:password@`` after the scheme, for URLs too malformed to split
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: safe for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # too malformed to split: mask whatever stands between "user:" and "@"
        return _PASSWORD.sub(r"\1***@", url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _url_parts(parts: SplitResult, shown: str) -> dict[str, Any]:
    """Host, port, database and credentials of a split Redis URL."""
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"the port of {shown!r} is not a number in range") from None
    if not parts.hostname:
        raise ConfigurationError(f"the Redis URL {shown!r} names no host")
    options: dict[str, Any] = {"host": parts.hostname, "port": 6379 if port is None else port}
    database = parts.path.strip("/")
    if database:
        if not database.isdigit():
            raise ConfigurationError(
                f"the database of {shown!r} must be a number (redis://HOST:PORT/0)"
            )
        options["db"] = int(database)
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    return options


def _coerce(name: str, raw: str, shown: str) -> Any:
    kind = _OPTIONS[name]
    if kind is bool:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigurationError(f"Redis URL option {name}={raw!r} in {shown!r} is not a boolean")
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigurationError(
                f"Redis URL option {name}={raw!r} in {shown!r} is not a number"
            ) from None
    if not raw:
        raise ConfigurationError(f"Redis URL option {name} in {shown!r} is empty")
    return raw


__all__ = ["RedisSettings", "redact"]
