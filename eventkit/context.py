"""``EventContext``: what a handler may know about the record it handles, and how to publish."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import msgspec

from eventkit.envelope import EventEnvelope
from eventkit.errors import PublisherNotStartedError

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.ports import Headers
    from eventkit.publisher import EventPublisher


#: The UUIDv5 namespace of the event ids an atomic-effect handler's publishes get.
CHILD_ID_NAMESPACE = uuid.UUID("5b0c2f43-6f1e-4d7a-9a55-2b1e9f4c8d10")


def child_event_id(parent: str, event_type: str, index: int) -> str:
    """The deterministic id of the ``index``-th event of ``event_type`` published while
    handling ``parent`` (its idempotency key): the same on every attempt and redelivery."""
    # the separator is a control character, never part of a type or key
    return str(uuid.uuid5(CHILD_ID_NAMESPACE, f"{parent}\x1f{event_type}\x1f{index}"))


class EventContext:
    """The record's coordinates, identity and attempt, and ``publish`` that carries them on.

    Created only for handlers that declare an ``EventContext`` parameter, once per attempt.
    Events published through ``publish`` keep this event's ``correlation_id`` and name its
    ``event_id`` as their ``causation_id``. For an atomic-effect handler
    (``deterministic_ids``) each published event gets ``child_event_id`` of this event, its
    type and how many of that type this attempt published before it, so a retried or
    redelivered handler publishes the same ids again and consumers dedup them.
    """

    __slots__ = ("_delivery", "_published", "_publisher")

    def __init__(
        self,
        delivery: Delivery,
        publisher: EventPublisher | None,
        *,
        deterministic_ids: bool = False,
    ) -> None:
        self._delivery = delivery
        self._publisher = publisher
        # events published so far in this attempt, per type; None: ids are random
        self._published: dict[str, int] | None = {} if deterministic_ids else None

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
        """Publish an event caused by this one; returns the envelope that was sent.

        A ready ``EventEnvelope`` as ``payload`` is sent as it is, its own id included.
        """
        if self._publisher is None:
            raise PublisherNotStartedError("this app has no publisher configured")
        event = self._delivery.event
        assert event is not None, "the context exists only after decoding"
        published = self._published
        if published is not None and not isinstance(payload, EventEnvelope):
            index = published.get(event_type, 0)
            published[event_type] = index + 1
            parent = self._delivery.idempotency_key or event.event_id
            replay_id = self._delivery.replay_id
            if replay_id is not None:
                # a replay after a fix may publish other children: they must not dedup away
                parent = f"{parent}\x1freplay\x1f{replay_id}"
            envelope = self._publisher.build(
                event_type,
                payload,
                correlation_id=event.correlation_id,
                causation_id=event.event_id,
            )
            payload = msgspec.structs.replace(
                envelope, event_id=child_event_id(parent, event_type, index)
            )
        return await self._publisher.publish(
            topic,
            event_type,
            payload,
            key=key,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
