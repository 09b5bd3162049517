"""``KafkaSettings``: every Kafka client option eventkit relies on, set explicitly (R1).

Nothing is inherited from the client library's defaults where the reliability contract depends
on it: auto-commit is off, the reset policy is earliest, records stay raw bytes, fetch sizes and
all timeouts are bounded, and the producer waits for every in-sync replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from eventkit.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

# client options eventkit owns: passing them through ``client_options`` would bend the contract
_RESERVED = frozenset(
    {
        "bootstrap_servers",
        "group_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "key_deserializer",
        "value_deserializer",
        "key_serializer",
        "value_serializer",
        "acks",
        "enable_idempotence",
    }
)


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Connection, consumer and producer options.

    - Group timeouts: a member that misses heartbeats for ``session_timeout_ms`` is evicted;
      ``rebalance_timeout_ms`` bounds the revoke drain of every member (the worker's
      ``revoke_drain_timeout`` must be shorter).
    - ``enable_idempotence`` is on by default; brokers that refuse ``InitProducerId`` (the
      Tansu test broker) need it off.
    - ``create_topics`` lets start-up create missing source and dead-letter topics with
      ``topic_partitions`` and ``topic_replication``; otherwise a missing topic is an error.
    - ``client_options`` go to aiokafka unchanged (security: ``security_protocol``,
      ``sasl_mechanism``, ``ssl_context`` ...), except the options eventkit owns.
    """

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "eventkit"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    rebalance_timeout_ms: int = 60_000
    max_poll_interval_ms: int = 300_000
    request_timeout_ms: int = 40_000
    fetch_max_wait_ms: int = 100
    fetch_max_bytes: int = 50 * 1024 * 1024
    max_partition_fetch_bytes: int = 1024 * 1024
    enable_idempotence: bool = True
    linger_ms: int = 5
    max_request_size: int = 1024 * 1024
    producer_request_timeout_ms: int = 30_000
    create_topics: bool = False
    topic_partitions: int = 3
    topic_replication: int = 1
    client_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigurationError("KafkaSettings.bootstrap_servers must not be empty")
        for name in (
            "session_timeout_ms",
            "heartbeat_interval_ms",
            "rebalance_timeout_ms",
            "max_poll_interval_ms",
            "request_timeout_ms",
            "fetch_max_bytes",
            "max_partition_fetch_bytes",
            "max_request_size",
            "producer_request_timeout_ms",
            "topic_partitions",
            "topic_replication",
        ):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"KafkaSettings.{name} must be at least 1")
        for name in ("fetch_max_wait_ms", "linger_ms"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"KafkaSettings.{name} must not be negative")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigurationError(
                "KafkaSettings.heartbeat_interval_ms must be below session_timeout_ms"
            )
        reserved = sorted(_RESERVED & set(self.client_options))
        if reserved:
            raise ConfigurationError(
                f"KafkaSettings.client_options may not set {reserved}: eventkit sets them itself"
            )

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> KafkaSettings:
        """Settings from ``kafka://HOST:PORT[,HOST:PORT...][?option=value&...]``.

        Query options name fields of this class (``?create_topics=true&linger_ms=0``);
        keyword ``overrides`` win over the URL.
        """
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ConfigurationError(f"not a Kafka URL: {url!r} (use kafka://HOST:PORT)")
        if parts.path not in ("", "/") or parts.fragment:
            raise ConfigurationError(f"a kafka:// URL takes hosts and options only, not {url!r}")
        options: dict[str, Any] = {"bootstrap_servers": parts.netloc}
        for name, raw in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            options[name] = _coerce(name, raw, url)
        unknown = sorted(set(overrides) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigurationError(f"unknown Kafka settings {unknown}")
        options.update(overrides)
        return cls(**options)

    def with_options(self, **changes: Any) -> KafkaSettings:
        return replace(self, **changes)


def _coerce(name: str, raw: str, url: str) -> Any:
    fields = KafkaSettings.__dataclass_fields__
    if name not in fields or name == "client_options":
        raise ConfigurationError(f"unknown Kafka option {name!r} in {url!r}")
    default = fields[name].default
    if isinstance(default, bool):
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"Kafka option {name}={raw!r} in {url!r} is not a boolean")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(
                f"Kafka option {name}={raw!r} in {url!r} is not an integer"
            ) from None
    return raw
