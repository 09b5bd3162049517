"""``EventContext``: what a handler may know about the record it handles, and how to publish."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventkit.errors import PublisherNotStartedError

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.envelope import EventEnvelope
    from eventkit.ports import Headers
    from eventkit.publisher import EventPublisher


class EventContext:
    """The record's coordinates, identity and attempt, and ``publish`` that carries them on.

    Created only for handlers that declare an ``EventContext`` parameter. Events published
    through ``publish`` keep this event's ``correlation_id`` and name its ``event_id`` as their
    ``causation_id``.
    """

    __slots__ = ("_delivery", "_publisher")

    def __init__(self, delivery: Delivery, publisher: EventPublisher | None) -> None:
        self._delivery = delivery
        self._publisher = publisher

    @property
    def topic(self) -> str:
        return self._delivery.record.topic

    @property
    def partition(self) -> int:
        return self._delivery.record.partition

    @property
    def offset(self) -> int:
        return self._delivery.record.offset

    @property
    def key(self) -> bytes | None:
        return self._delivery.record.key

    @property
    def headers(self) -> Headers:
        return self._delivery.record.headers

    @property
    def timestamp_ms(self) -> int:
        """The broker's timestamp of the record, in milliseconds since the epoch."""
        return self._delivery.record.timestamp

    @property
    def attempt(self) -> int:
        """This attempt's number within the current delivery, starting at 1."""
        return self._delivery.attempt

    @property
    def event_type(self) -> str:
        event = self._delivery.event
        assert event is not None, "the context exists only after decoding"
        return event.event_type

    @property
    def event_id(self) -> str:
        event = self._delivery.event
        assert event is not None, "the context exists only after decoding"
        return event.event_id

    @property
    def correlation_id(self) -> str:
        event = self._delivery.event
        assert event is not None, "the context exists only after decoding"
        return event.correlation_id

    @property
    def source_service(self) -> str:
        event = self._delivery.event
        assert event is not None, "the context exists only after decoding"
        return event.source_service

    async def publish(
        self,
        topic: str,
        event_type: str,
        payload: Any,
        *,
        key: bytes | str | None = None,
    ) -> EventEnvelope[Any]:
        """Publish an event caused by this one; returns the envelope that was sent."""
        if self._publisher is None:
            raise PublisherNotStartedError("this app has no publisher configured")
        event = self._delivery.event
        assert event is not None, "the context exists only after decoding"
        return await self._publisher.publish(
            topic,
            event_type,
            payload,
            key=key,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
