"""Transport URLs: ``memory://NAME`` (an in-process broker) or ``kafka://HOST:PORT?options``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eventkit.errors import ConfigurationError
from eventkit.transports.memory import MemoryBroker

if TYPE_CHECKING:
    from eventkit.ports import Consumer, Publisher, TopicAdmin

_brokers: dict[str, MemoryBroker] = {}


@dataclass(frozen=True, slots=True)
class Transport:
    """A consumer of one group, a publisher and the topic check, on the same broker."""

    consumer: Consumer
    publisher: Publisher
    admin: TopicAdmin


def memory_broker(name: str = "") -> MemoryBroker:
    """The in-process broker called ``name``, created on first use and kept for the process."""
    broker = _brokers.get(name)
    if broker is None:
        broker = _brokers[name] = MemoryBroker()
    return broker


def connect(url: str, *, group_id: str, **kafka_options: Any) -> Transport:
    """The consumer, publisher and topic admin a transport URL names.

    - ``memory://`` (or ``memory://NAME``): the embedded in-memory broker; every connection
      to the same name in one process shares its topics, groups and committed offsets.
    - ``kafka://HOST:PORT[,HOST:PORT][?option=value...]``: Kafka through aiokafka; options
      are fields of ``KafkaSettings``, and ``kafka_options`` override them.
    Other schemes raise ``ConfigurationError`` naming the URL.
    """
    parts = urlsplit(url)
    if parts.scheme == "kafka":
        return _kafka(url, group_id, kafka_options)
    if parts.scheme != "memory":
        raise ConfigurationError(
            f"unsupported transport URL {url!r}: use kafka://HOST:PORT or memory://NAME"
        )
    if kafka_options:
        raise ConfigurationError(f"Kafka options {sorted(kafka_options)} given for {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(f"a memory:// URL takes only a name, not {url!r}")
    broker = memory_broker(parts.netloc)
    return Transport(consumer=broker.consumer(group_id), publisher=broker.publisher(), admin=broker)


def _kafka(url: str, group_id: str, options: dict[str, Any]) -> Transport:
    # imported here: aiokafka is loaded only by processes that use Kafka
    from eventkit.transports.kafka import KafkaConsumer, check_client_options  # noqa: PLC0415
    from eventkit.transports.kafka_admin import KafkaTopicAdmin  # noqa: PLC0415
    from eventkit.transports.kafka_publisher import KafkaPublisher  # noqa: PLC0415
    from eventkit.transports.kafka_settings import KafkaSettings  # noqa: PLC0415

    settings = KafkaSettings.from_url(url, **options)
    check_client_options(settings)
    return Transport(
        consumer=KafkaConsumer(settings, group_id),
        publisher=KafkaPublisher(settings),
        admin=KafkaTopicAdmin(settings),
    )
