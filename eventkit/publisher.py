"""``EventPublisher``: encodes envelopes, sets eventkit's headers and sends them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import pydantic

from eventkit.envelope import EventEnvelope
from eventkit.errors import ConfigurationError
from eventkit.ports import OutgoingRecord

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventkit.ports import Publisher

CONTENT_TYPE_JSON = b"application/json"


def _encode_extra(value: Any) -> Any:
    # pydantic models are not msgspec types; their JSON mode dump is
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    raise NotImplementedError(f"cannot encode {type(value).__name__} as JSON")


_encoder = msgspec.json.Encoder(enc_hook=_encode_extra)


def encode_envelope(envelope: EventEnvelope[Any]) -> bytes:
    """The JSON bytes of an envelope; payloads may be pydantic models, Structs, dataclasses."""
    try:
        return _encoder.encode(envelope)
    except (NotImplementedError, TypeError, RecursionError) as exc:
        raise ConfigurationError(f"cannot encode payload of {envelope.event_type}: {exc}") from exc


def envelope_headers(
    envelope: EventEnvelope[Any], causation_id: str | None
) -> list[tuple[str, bytes]]:
    """The Kafka headers eventkit sets on every event it publishes."""
    headers = [
        ("event_type", envelope.event_type.encode()),
        ("event_id", envelope.event_id.encode()),
        ("correlation_id", envelope.correlation_id.encode()),
        ("content-type", CONTENT_TYPE_JSON),
    ]
    if causation_id is not None:
        headers.append(("causation_id", causation_id.encode()))
    return headers


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """One event for ``publish_many``."""

    topic: str
    event_type: str
    payload: Any
    key: bytes | str | None = None


class EventPublisher:
    """Publishes events in the eventkit envelope through a transport ``Publisher``.

    ``publish`` returns after the broker acknowledged the event (``acks=all`` on Kafka);
    before the transport started or after it stopped it raises ``PublisherNotStartedError``.
    """

    def __init__(self, transport: Publisher, *, source_service: str) -> None:
        self._transport = transport
        self._source_service = source_service

    @property
    def transport(self) -> Publisher:
        return self._transport

    def build(
        self,
        event_type: str,
        payload: Any,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> EventEnvelope[Any]:
        """The envelope ``publish`` would send (a given envelope is kept as it is)."""
        if isinstance(payload, EventEnvelope):
            if payload.event_type != event_type:
                raise ConfigurationError(
                    f"envelope of type {payload.event_type!r} published as {event_type!r}"
                )
            return payload
        merged: dict[str, Any] | None = dict(metadata) if metadata else None
        if causation_id is not None:
            merged = merged or {}
            merged["causation_id"] = causation_id
        if correlation_id is None:
            return EventEnvelope(
                event_type=event_type,
                data=payload,
                source_service=self._source_service,
                metadata=merged,
            )
        return EventEnvelope(
            event_type=event_type,
            data=payload,
            source_service=self._source_service,
            correlation_id=correlation_id,
            metadata=merged,
        )

    async def publish(
        self,
        topic: str,
        event_type: str,
        payload: Any,
        *,
        key: bytes | str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> EventEnvelope[Any]:
        """Publish one event (a payload, or a ready ``EventEnvelope``) and return its envelope."""
        envelope, record = self.record(
            topic,
            event_type,
            payload,
            key=key,
            correlation_id=correlation_id,
            causation_id=causation_id,
            metadata=metadata,
            headers=headers,
        )
        await self._transport.send(
            record.topic, record.value, key=record.key, headers=record.headers
        )
        return envelope

    def record(
        self,
        topic: str,
        event_type: str,
        payload: Any,
        *,
        key: bytes | str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[EventEnvelope[Any], OutgoingRecord]:
        """The envelope and the raw record ``publish`` would send."""
        envelope = self.build(
            event_type,
            payload,
            correlation_id=correlation_id,
            causation_id=causation_id,
            metadata=metadata,
        )
        # the header always repeats the body: an envelope sent as-is keeps its own causation
        causation = envelope.metadata_str("causation_id")
        record = OutgoingRecord(
            topic,
            encode_envelope(envelope),
            key.encode() if isinstance(key, str) else key,
            [*envelope_headers(envelope, causation), *headers],
        )
        return envelope, record

    async def publish_many(self, events: Sequence[OutgoingEvent]) -> list[EventEnvelope[Any]]:
        """Publish several events as one pipelined batch; return once all are acknowledged.

        Events for one partition keep the given order. If any is not acknowledged the call
        raises ``PublishError`` (others of the batch may have been delivered).
        """
        built = [
            self.record(event.topic, event.event_type, event.payload, key=event.key)
            for event in events
        ]
        await self._transport.send_many([record for _, record in built])
        return [envelope for envelope, _ in built]
