"""``EventEnvelope[T]``: the default wire format, compatible with the seed services' envelope."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")


def new_event_id() -> str:
    """A fresh, globally unique event id (a UUID4 string, as the seed services send)."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    """The current time in UTC, timezone-aware."""
    return datetime.now(UTC)


class EventEnvelope(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One event on the wire: identity, provenance and the typed payload in ``data``.

    JSON fields: ``event_id`` (unique, at most 128 visible ASCII characters), ``event_type``,
    ``event_timestamp`` (RFC 3339, UTC), ``source_service``, ``correlation_id``,
    ``schema_version``, ``metadata`` (an object or null; eventkit writes strings there) and
    ``data``. Fields left out when constructing get fresh values, so publishing code only
    names the type, the source and the payload.
    """

    event_type: str
    data: T
    source_service: str = ""
    event_id: str = msgspec.field(default_factory=new_event_id)
    event_timestamp: datetime = msgspec.field(default_factory=utc_now)
    correlation_id: str = msgspec.field(default_factory=new_event_id)
    schema_version: int = 1
    metadata: dict[str, Any] | None = None

    def metadata_str(self, name: str) -> str | None:
        """A metadata value if it is a string; other types are ignored, never trusted."""
        if self.metadata is None:
            return None
        value = self.metadata.get(name)
        return value if isinstance(value, str) else None
