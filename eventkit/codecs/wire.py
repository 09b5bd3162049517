"""``WireEvent``: an incoming event as decoded before its payload, whatever its format."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from msgspec import Meta

#: The longest ``event_id`` the decoder accepts; ``DecodeLimits`` may set a shorter one.
MAX_EVENT_ID_LENGTH = 128

EventId = Annotated[str, Meta(min_length=1, max_length=MAX_EVENT_ID_LENGTH)]
EventType = Annotated[str, Meta(min_length=1, max_length=255)]
UtcTimestamp = Annotated[datetime, Meta(tz=True)]

T = TypeVar("T")

#: Separates CloudEvents ``source`` and ``id`` in an identity; never valid in either.
IDENTITY_SEPARATOR = "\x1f"


class WireEvent(msgspec.Struct, kw_only=True, gc=False):
    """The eventkit JSON envelope with ``data`` kept raw; CloudEvents are mapped onto it.

    ``specversion`` is only ever set by a CloudEvent: an eventkit body that carries one is
    re-read as a structured CloudEvent. ``data`` stays undecoded until a handler's payload
    decoder reads it. Instances hold no cycles, so the garbage collector need not track them.
    """

    event_id: EventId
    event_type: EventType
    event_timestamp: UtcTimestamp
    source_service: str
    correlation_id: str
    data: msgspec.Raw
    schema_version: int = 1
    metadata: dict[str, Any] | None = None
    specversion: str | None = None
    datacontenttype: str | None = None

    @property
    def identity(self) -> str:
        """What makes the event unique: ``event_id``, or ``source`` + ``id`` for CloudEvents."""
        if self.specversion is None:
            return self.event_id
        return f"{self.source_service}{IDENTITY_SEPARATOR}{self.event_id}"

    def metadata_str(self, name: str) -> str | None:
        """A metadata value if it is a string; values of other types are ignored."""
        if self.metadata is None:
            return None
        value = self.metadata.get(name)
        return value if isinstance(value, str) else None


class TypedWireEvent(WireEvent, Generic[T], kw_only=True, gc=False):
    """A ``WireEvent`` whose ``data`` was decoded in the same pass, to the handler's type.

    Built once per handler whose payload type msgspec decodes natively; it saves decoding
    ``data`` twice. Anything it rejects is read again field by field, so errors are the same.
    """

    data: T  # type: ignore[assignment]  # the point of the subclass: data already typed
