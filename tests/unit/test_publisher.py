"""``EventPublisher`` over the in-memory broker: envelope bytes, headers, keys and ids."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from eventkit import (
    ConfigurationError,
    EventEnvelope,
    EventPublisher,
    OutgoingEvent,
    PublisherNotStartedError,
)
from eventkit.transports.memory import MemoryBroker, StoredRecord
from tests.unit.payloads import OrderData, OrderModel, OrderStruct

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TOPIC = "orders"
SERVICE = "orders-svc"


@pytest.fixture
def broker() -> MemoryBroker:
    """One partition per topic, so reading a topic back is in publish order."""
    return MemoryBroker(default_partitions=1)


@pytest.fixture
async def publisher(broker: MemoryBroker) -> AsyncIterator[EventPublisher]:
    """A started publisher on the broker, stopped afterwards."""
    transport = broker.publisher()
    await transport.start()
    yield EventPublisher(transport, source_service=SERVICE)
    await transport.stop()


def only_record(broker: MemoryBroker, topic: str = TOPIC) -> StoredRecord:
    """The single record on ``topic``."""
    records = broker.records(topic)
    assert len(records) == 1
    return records[0]


def body(record: StoredRecord) -> dict[str, Any]:
    """The JSON body of a record, decoded."""
    assert record.value is not None
    decoded: dict[str, Any] = msgspec.json.decode(record.value)
    return decoded


async def test_publish_sets_eventkit_headers(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """event_type, event_id, correlation_id and content-type headers are set; no causation_id."""
    sent = await publisher.publish(TOPIC, "order.created", {"order_id": "o-1"})
    assert only_record(broker).headers == (
        ("event_type", b"order.created"),
        ("event_id", sent.event_id.encode()),
        ("correlation_id", sent.correlation_id.encode()),
        ("content-type", b"application/json"),
    )


async def test_publish_adds_causation_header_only_when_given(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """``causation_id`` becomes a header and a metadata entry when passed."""
    sent = await publisher.publish(TOPIC, "order.created", {"order_id": "o-1"}, causation_id="c-9")
    record = only_record(broker)
    assert record.headers[-1] == ("causation_id", b"c-9")
    assert [name for name, _ in record.headers].count("causation_id") == 1
    assert sent.metadata == {"causation_id": "c-9"}
    assert body(record)["metadata"] == {"causation_id": "c-9"}


async def test_extra_headers_follow_eventkit_headers(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """Caller headers are sent after eventkit's own."""
    await publisher.publish(TOPIC, "order.created", {}, headers=[("tenant", b"acme")])
    headers = only_record(broker).headers
    assert headers[0][0] == "event_type"
    assert headers[-1] == ("tenant", b"acme")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("order-1", b"order-1"),
        ("zażółć", "zażółć".encode()),
        (b"\x00raw", b"\x00raw"),
        (None, None),
    ],
)
async def test_publish_key_is_sent_as_bytes(
    broker: MemoryBroker, publisher: EventPublisher, key: str | bytes | None, expected: bytes | None
) -> None:
    """A str key is UTF-8 encoded, bytes are kept, ``None`` stays keyless."""
    await publisher.publish(TOPIC, "order.created", {}, key=key)
    assert only_record(broker).key == expected


async def test_body_decodes_back_to_envelope_fields(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """The JSON body holds every envelope field the returned envelope has."""
    sent = await publisher.publish(TOPIC, "order.created", {"order_id": "o-1", "total": 2.5})
    decoded = body(only_record(broker))
    assert decoded["event_type"] == "order.created"
    assert decoded["event_id"] == sent.event_id
    assert decoded["correlation_id"] == sent.correlation_id
    assert decoded["source_service"] == SERVICE
    assert decoded["schema_version"] == 1
    assert decoded["metadata"] is None
    assert decoded["data"] == {"order_id": "o-1", "total": 2.5}
    assert datetime.fromisoformat(decoded["event_timestamp"]) == sent.event_timestamp
    assert sent.event_timestamp.utcoffset() is not None
    assert sent.event_id != sent.correlation_id


@pytest.mark.parametrize(
    "payload",
    [
        OrderModel(order_id="o-1", total=2.5),
        OrderStruct(order_id="o-1", total=2.5),
        OrderData(order_id="o-1", total=2.5),
        {"order_id": "o-1", "total": 2.5},
    ],
    ids=["pydantic", "msgspec", "dataclass", "dict"],
)
async def test_payload_types_encode_as_json_objects(
    broker: MemoryBroker, publisher: EventPublisher, payload: object
) -> None:
    """pydantic models, Structs, dataclasses and dicts all encode to the same JSON data."""
    await publisher.publish(TOPIC, "order.created", payload)
    assert body(only_record(broker))["data"] == {"order_id": "o-1", "total": 2.5}


async def test_envelope_payload_is_sent_as_is(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """A ready ``EventEnvelope`` keeps its event_id, correlation_id and source on republish."""
    original: EventEnvelope[dict[str, str]] = EventEnvelope(
        event_type="order.created",
        data={"order_id": "o-1"},
        source_service="upstream-svc",
        event_id="evt-42",
        correlation_id="corr-7",
    )
    sent = await publisher.publish(TOPIC, "order.created", original, correlation_id="other")
    assert sent is original
    record = only_record(broker)
    decoded = body(record)
    assert decoded["event_id"] == "evt-42"
    assert decoded["correlation_id"] == "corr-7"
    assert decoded["source_service"] == "upstream-svc"
    assert ("event_id", b"evt-42") in record.headers


async def test_republishing_same_envelope_keeps_event_id(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """Publishing one envelope twice sends the same event_id twice (so consumers dedupe it)."""
    original: EventEnvelope[dict[str, str]] = EventEnvelope(
        event_type="order.created", data={"order_id": "o-1"}
    )
    await publisher.publish(TOPIC, "order.created", original)
    await publisher.publish(TOPIC, "order.created", original)
    assert [body(record)["event_id"] for record in broker.records(TOPIC)] == [
        original.event_id,
        original.event_id,
    ]


async def test_envelope_sent_as_is_keeps_header_and_body_causation_in_agreement(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """A ready envelope's causation_id header is the one in its own metadata, as in its body."""
    original: EventEnvelope[dict[str, str]] = EventEnvelope(
        event_type="order.created", data={}, metadata={"causation_id": "evt-parent"}
    )
    await publisher.publish(TOPIC, "order.created", original, causation_id="evt-other")
    record = only_record(broker)
    assert body(record)["metadata"] == {"causation_id": "evt-parent"}
    assert [value for name, value in record.headers if name == "causation_id"] == [b"evt-parent"]


async def test_envelope_with_other_event_type_raises(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """An envelope published under another event type is refused and nothing is sent."""
    original: EventEnvelope[dict[str, str]] = EventEnvelope(event_type="order.created", data={})
    with pytest.raises(ConfigurationError, match=r"'order\.created'.*'order\.paid'"):
        await publisher.publish(TOPIC, "order.paid", original)
    assert TOPIC not in broker.topics()


async def test_correlation_id_is_kept_and_causation_lands_in_metadata(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """A given correlation_id is used as is; causation_id joins the caller's metadata."""
    sent = await publisher.publish(
        TOPIC,
        "order.created",
        {},
        correlation_id="corr-1",
        causation_id="evt-0",
        metadata={"tenant": "acme"},
    )
    record = only_record(broker)
    assert sent.correlation_id == "corr-1"
    assert ("correlation_id", b"corr-1") in record.headers
    assert ("causation_id", b"evt-0") in record.headers
    assert body(record)["metadata"] == {"tenant": "acme", "causation_id": "evt-0"}


async def test_causation_id_in_metadata_alone_becomes_a_header(
    broker: MemoryBroker, publisher: EventPublisher
) -> None:
    """A string causation_id given only in metadata is sent as the header too."""
    await publisher.publish(TOPIC, "order.created", {}, metadata={"causation_id": "evt-0"})
    assert ("causation_id", b"evt-0") in only_record(broker).headers


async def test_publish_before_start_raises(broker: MemoryBroker) -> None:
    """Publishing on an unstarted transport raises ``PublisherNotStartedError``."""
    publisher = EventPublisher(broker.publisher(), source_service=SERVICE)
    with pytest.raises(PublisherNotStartedError):
        await publisher.publish(TOPIC, "order.created", {})
    assert TOPIC not in broker.topics()


async def test_publish_after_stop_raises(broker: MemoryBroker) -> None:
    """Publishing after the transport stopped raises ``PublisherNotStartedError``."""
    publisher = EventPublisher(broker.publisher(), source_service=SERVICE)
    await publisher.transport.start()
    await publisher.publish(TOPIC, "order.created", {})
    await publisher.transport.stop()
    with pytest.raises(PublisherNotStartedError):
        await publisher.publish(TOPIC, "order.created", {})
    assert len(broker.records(TOPIC)) == 1


class Unencodable:
    """A payload type JSON encoding knows nothing about."""


def self_referencing() -> list[object]:
    """A list that contains itself."""
    loop: list[object] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    "payload",
    [Unencodable(), {"when": object()}, {(1, 2): "tuple key"}, self_referencing()],
    ids=["unknown-class", "nested-object", "tuple-key", "self-referencing"],
)
async def test_unencodable_payload_raises_configuration_error(
    broker: MemoryBroker, publisher: EventPublisher, payload: object
) -> None:
    """A payload that cannot be JSON-encoded raises ``ConfigurationError`` and sends nothing."""
    with pytest.raises(ConfigurationError, match=r"cannot encode payload of order\.created"):
        await publisher.publish(TOPIC, "order.created", payload)
    assert TOPIC not in broker.topics()


async def test_publish_many_keeps_order(broker: MemoryBroker, publisher: EventPublisher) -> None:
    """``publish_many`` sends events in the given order and returns their envelopes in order."""
    events = [
        OutgoingEvent(TOPIC, "order.created", {"n": n}, key="same-key" if n % 2 else None)
        for n in range(5)
    ]
    sent = await publisher.publish_many(events)
    records = broker.records(TOPIC)
    assert [body(record)["data"] for record in records] == [{"n": n} for n in range(5)]
    assert [body(record)["event_id"] for record in records] == [env.event_id for env in sent]
    assert [record.key for record in records] == [None, b"same-key", None, b"same-key", None]
    assert len({env.event_id for env in sent}) == 5
