"""Transport URLs: ``memory://NAME`` names an in-process broker shared by everyone using it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from eventkit.errors import ConfigurationError
from eventkit.transports.memory import MemoryBroker

if TYPE_CHECKING:
    from eventkit.ports import Consumer, Publisher

_brokers: dict[str, MemoryBroker] = {}


@dataclass(frozen=True, slots=True)
class Transport:
    """A consumer of one group and a publisher, on the same broker."""

    consumer: Consumer
    publisher: Publisher


def memory_broker(name: str = "") -> MemoryBroker:
    """The in-process broker called ``name``, created on first use and kept for the process."""
    broker = _brokers.get(name)
    if broker is None:
        broker = _brokers[name] = MemoryBroker()
    return broker


def connect(url: str, *, group_id: str) -> Transport:
    """The consumer and publisher a transport URL names.

    ``memory://`` (or ``memory://NAME``) is the embedded in-memory broker: every connection to
    the same name in one process shares its topics, groups and committed offsets. Other
    schemes raise ``ConfigurationError`` naming the URL.
    """
    parts = urlsplit(url)
    if parts.scheme != "memory":
        raise ConfigurationError(f"unsupported transport URL {url!r}: use memory://NAME")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(f"a memory:// URL takes only a name, not {url!r}")
    broker = memory_broker(parts.netloc)
    return Transport(consumer=broker.consumer(group_id), publisher=broker.publisher())
